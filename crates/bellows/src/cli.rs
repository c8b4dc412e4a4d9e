//! Command-line grammar. Words follow the Tinkerbell CLI the seeds use
//! (`hardware push`, `template create -n -p`, `workflow create -t -r`).

use clap::{Parser, Subcommand};

// Every subcommand's arguments live next to its code; the grammar only
// names them. Nothing below imports `cli`.
use crate::commands::{
    BmcCmd, BootDeviceArgs, DhcpConfigArgs, HardwareCmd, IpxeCmd, NetbootArgs, PowerArgs, RuleCmd,
    StoreCmd, TemplateCmd, TokenCmd, WorkflowCmd,
};
use crate::image::ImageCmd;
use crate::server::ServerArgs;
use crate::server::doctor::DoctorArgs;
use crate::worker::WorkerArgs;

/// Bare-metal provisioning: network boot, workflows of container actions,
/// metadata and BMC control, in one program.
#[derive(Parser, Debug)]
#[command(name = "bellows", version, propagate_version = true)]
pub struct Cli {
    /// Bellows API URL for client commands.
    #[arg(
        long,
        global = true,
        env = "BELLOWS_URL",
        default_value = "https://127.0.0.1:42113"
    )]
    pub url: String,
    /// PEM file of the CA that signed the server's certificate (a server's
    /// own CA is DATA_DIR/tls/ca.crt). Without it, a CLI talking to a
    /// server on this machine (loopback URL) trusts that file in
    /// BELLOWS_DATA_DIR (default ./bellows-data); others use the system's
    /// trust store.
    #[arg(long, global = true, env = "BELLOWS_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// API token for client commands. Without one, a CLI talking to a
    /// server on this machine (loopback URL) reads the server's
    /// admin.token from BELLOWS_DATA_DIR (default ./bellows-data).
    #[arg(long, global = true, env = "BELLOWS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format for client commands.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    // A doc comment here would change `--help`; the enum documents itself.
    #[allow(missing_docs)]
    #[command(subcommand)]
    pub command: Command,
}

/// How client commands print results (`-o`); defined with the printing,
/// so that `output` stays a leaf module.
pub use crate::output::Format;

/// Every subcommand: the server, the worker, and the client nouns.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the Bellows server (API and state) in the foreground.
    Server(Box<ServerArgs>),
    /// Check what the server would use (same flags, environment and config
    /// file): ports, the interface and its IPv6, other DHCP servers on the
    /// segment, boot files, disk, clock, BMCs; each problem with its
    /// remedy. Exits 1 if a check fails.
    Doctor(Box<DoctorArgs>),
    /// Manage hardware records.
    #[command(subcommand)]
    Hardware(HardwareCmd),
    /// Enrolment rules: what discovered machines become (match on the
    /// inventory, set metadata, create a workflow); workflow sets.
    #[command(subcommand)]
    Rule(RuleCmd),
    /// Manage workflow templates.
    #[command(subcommand)]
    Template(TemplateCmd),
    /// Manage workflows.
    #[command(subcommand)]
    Workflow(WorkflowCmd),
    /// Run the worker on a machine being provisioned: receive its actions
    /// from the server, run them, report each state.
    Worker(Box<WorkerArgs>),
    /// Power a machine on/off/soft-off/cycle/reset through its BMC, or read
    /// its power state.
    Power(PowerArgs),
    /// Set a machine's next boot device through its BMC.
    BootDevice(BootDeviceArgs),
    /// Power off, boot from the network once, power on: reinstall a machine
    /// with no hands on it.
    Netboot(NetbootArgs),
    /// Manage how Bellows reaches machines' BMCs (power and boot device).
    #[command(subcommand)]
    Bmc(BmcCmd),
    /// Manage API tokens (admin), and read the audit log.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Print a configuration for the site's own DHCP server (dnsmasq, Kea,
    /// ISC dhcpd): a reservation per machine and the two-stage iPXE
    /// chainload to this Bellows server (seed 003).
    DhcpConfig(DhcpConfigArgs),
    /// iPXE helpers.
    #[command(subcommand)]
    Ipxe(IpxeCmd),
    /// The in-memory OS machines boot to run the worker.
    #[command(subcommand)]
    Image(ImageCmd),
    /// The store itself: move a site's state to another (sqlite: to
    /// postgres://, for several servers).
    #[command(subcommand)]
    Store(StoreCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// Shell to generate for.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (`bellows.1`, `bellows-server.1`, …) into a
    /// directory; the packages ship them.
    #[command(hide = true)]
    Manpages {
        /// Where to write them (created if missing).
        dir: std::path::PathBuf,
    },
}
