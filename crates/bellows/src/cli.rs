//! Command-line grammar. Words follow the Tinkerbell CLI the seeds use
//! (`hardware push`, `template create -n -p`, `workflow create -t -r`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

// The nouns' arguments live next to their commands; naming them here is the
// one way `cli` refers to `commands`.
use crate::commands::{
    BmcCmd, BootDeviceArgs, DhcpConfigArgs, HardwareCmd, IpxeCmd, NetbootArgs, PowerArgs,
    TemplateCmd, WorkflowCmd,
};

/// Default API address: loopback, because the management API has no
/// authentication; bind it wider only on a trusted provisioning network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:42113";

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
        default_value = "http://127.0.0.1:42113"
    )]
    pub url: String,
    /// Output format for client commands.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
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
    /// Manage hardware records.
    #[command(subcommand)]
    Hardware(HardwareCmd),
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
    /// Print a configuration for the site's own DHCP server (dnsmasq, Kea,
    /// ISC dhcpd): a reservation per machine and the two-stage iPXE
    /// chainload to this Bellows server (seed 003).
    DhcpConfig(DhcpConfigArgs),
    /// iPXE helpers.
    #[command(subcommand)]
    Ipxe(IpxeCmd),
    /// The in-memory OS machines boot to run the worker.
    #[command(subcommand)]
    Image(crate::image::ImageCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// Shell to generate for.
        shell: clap_complete::Shell,
    },
}

/// Default HTTP boot listener (iPXE scripts, artifacts, metadata). An
/// unprivileged port, so the server starts as any user; boot URLs carry it.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";

/// A listener address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Service disabled.
    Off,
    /// Listen here.
    At(SocketAddr),
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Listen::Off);
        }
        s.parse()
            .map(Listen::At)
            .map_err(|_| format!("{s:?} is not an address (IP:PORT) or \"off\""))
    }
}

/// DHCP behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Answer only machines with a hardware record and a reserved IP.
    Reservation,
    /// ProxyDHCP: boot information only, beside the site's own DHCP.
    Proxy,
    /// No DHCP: the site's DHCP does everything (see `bellows dhcp-config`).
    Off,
}

/// `bellows server` options. Precedence: flag, then environment variable,
/// then the TOML file given by --config (same names, with `_`), then the
/// default. Every field is optional so the file and the flags merge.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerArgs {
    /// Directory holding the embedded database [default: ./bellows-data].
    #[arg(long, env = "BELLOWS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for the API (REST, and the worker gRPC service) [default:
    /// 127.0.0.1:42113].
    /// Use port 0 to pick a free port; the chosen one is logged.
    #[arg(long, env = "BELLOWS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the HTTP boot service: iPXE scripts and binaries, the
    /// in-memory OS, instance metadata, and the worker gRPC service that
    /// booted machines reach [default: 0.0.0.0:8080].
    #[arg(long, env = "BELLOWS_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Extra addresses serving only the metadata service, e.g.
    /// 169.254.169.254:80 for stock cloud images (comma-separated).
    #[arg(long, env = "BELLOWS_METADATA_LISTEN", value_delimiter = ',')]
    pub metadata_listen: Option<Vec<SocketAddr>>,
    /// Proxies whose X-Forwarded-For is believed when identifying a
    /// metadata caller (CIDRs, comma-separated). Nobody by default.
    #[arg(long, env = "BELLOWS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Network interface of the provisioning network. DHCP binds to it,
    /// and --public-ip defaults to its first IPv4 address.
    #[arg(long, env = "BELLOWS_INTERFACE")]
    pub interface: Option<String>,
    /// Address machines reach Bellows at: next-server, script and file
    /// URLs, syslog host [default: the interface's or the HTTP listener's
    /// address].
    #[arg(long, env = "BELLOWS_PUBLIC_IP")]
    pub public_ip: Option<std::net::IpAddr>,
    /// DHCP mode [default: reservation].
    #[arg(long, env = "BELLOWS_DHCP_MODE", value_enum)]
    pub dhcp_mode: Option<DhcpMode>,
    /// Send IPv6 router advertisements (no prefix, not a default router) on
    /// --interface, so iPXE stops waiting ~13 s for one at every stage
    /// [default: true with --interface in reservation mode].
    #[arg(long, env = "BELLOWS_IPV6_RA")]
    pub ipv6_ra: Option<bool>,
    /// DHCP server address [default: 0.0.0.0:67].
    #[arg(long, env = "BELLOWS_DHCP_LISTEN")]
    pub dhcp_listen: Option<SocketAddr>,
    /// TFTP server address, or `off` [default: 0.0.0.0:69].
    #[arg(long, env = "BELLOWS_TFTP_LISTEN")]
    pub tftp_listen: Option<Listen>,
    /// Syslog receiver address, or `off` [default: 0.0.0.0:514].
    #[arg(long, env = "BELLOWS_SYSLOG_LISTEN")]
    pub syslog_listen: Option<Listen>,
    /// Directory of iPXE binaries served over TFTP and HTTP /ipxe/
    /// [default: /usr/lib/ipxe, Debian's ipxe package].
    #[arg(long, env = "BELLOWS_IPXE_DIR")]
    pub ipxe_dir: Option<PathBuf>,
    /// Directory of in-memory OS files served at /osie/ [default: DATA_DIR/osie].
    #[arg(long, env = "BELLOWS_OSIE_DIR")]
    pub osie_dir: Option<PathBuf>,
    /// In-memory OS kernel: a file name in --osie-dir or a full URL [default: vmlinuz].
    #[arg(long, env = "BELLOWS_OSIE_KERNEL")]
    pub osie_kernel: Option<String>,
    /// In-memory OS initrd: a file name in --osie-dir or a full URL [default: initramfs].
    #[arg(long, env = "BELLOWS_OSIE_INITRD")]
    pub osie_initrd: Option<String>,
    /// Extra kernel command line for the in-memory OS.
    #[arg(long, env = "BELLOWS_KERNEL_ARGS")]
    pub kernel_args: Option<String>,
    /// What a machine with nothing to do boots: exit (`exit 1`: the
    /// firmware's next boot option), sanboot (the first BIOS disk), refind
    /// (rEFInd served by Bellows scans the disks on UEFI; BIOS sanboots),
    /// or chain:URL [default: exit].
    #[arg(long, env = "BELLOWS_LOCAL_BOOT")]
    pub local_boot: Option<String>,
    /// Directory of rEFInd's binaries (refind_x64.efi …) and, optionally,
    /// your refind.conf, served at /refind/ for --local-boot refind
    /// [default: /usr/share/refind/refind, Debian's refind package].
    #[arg(long, env = "BELLOWS_REFIND_DIR")]
    pub refind_dir: Option<PathBuf>,
    /// TOML file with any of these settings (same names, `_` for `-`).
    #[arg(long, env = "BELLOWS_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `bellows=debug` [default: info].
    #[arg(long, env = "BELLOWS_LOG")]
    pub log: Option<String>,
    /// Seconds past an action's timeout before the server ends it itself
    /// when its worker has gone silent [default: 60]. The worker normally
    /// reports the timeout first, after running the action's on-timeout
    /// command.
    #[arg(long, env = "BELLOWS_ACTION_GRACE")]
    pub action_grace: Option<u64>,
    /// Seconds between keep-alives on an idle worker stream [default: 25];
    /// an assignment its worker has not started by then is pushed again.
    #[arg(long, env = "BELLOWS_WORKER_KEEPALIVE", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub worker_keepalive: Option<u64>,
}

/// `bellows worker` settings.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Server URL, e.g. http://10.0.0.1:8080 [default: bellows.api= on the
    /// kernel command line].
    #[arg(long, env = "BELLOWS_SERVER")]
    pub server: Option<String>,
    /// Worker id [default: bellows.worker_id= on the kernel command line,
    /// else the MAC of the first network interface that has one].
    #[arg(long = "id", env = "BELLOWS_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Directory for per-workflow data shared between actions (/worker).
    #[arg(
        long,
        env = "BELLOWS_WORK_DIR",
        default_value = "/var/lib/bellows-worker"
    )]
    pub work_dir: PathBuf,
    /// Docker Engine socket [default: DOCKER_HOST, else /var/run/docker.sock].
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// Run only built-in actions, even if a container engine is present.
    #[arg(long, env = "BELLOWS_NO_DOCKER")]
    pub no_docker: bool,
    /// Pull-through mirror for Docker Hub images (host[:port][/prefix]).
    #[arg(long, env = "BELLOWS_REGISTRY_MIRROR")]
    pub registry_mirror: Option<String>,
    /// Registry credentials as HOST=USER; the password is read from the
    /// environment variable BELLOWS_REGISTRY_PASSWORD (never argv).
    #[arg(long, env = "BELLOWS_REGISTRY_USER")]
    pub registry_user: Option<String>,
    /// When to pull images.
    #[arg(long, value_enum, default_value_t = PullPolicyArg::IfNotPresent)]
    pub pull: PullPolicyArg,
    /// How to reboot when an action asks: the reboot system call (the
    /// in-memory OS), the `reboot` command (`kexec -e` after a kexec
    /// action), or exit with status 10 (reboot) / 11 (power off) / 12
    /// (kexec into the loaded kernel) for a supervisor to act on.
    #[arg(long, value_enum, env = "BELLOWS_REBOOT", default_value_t = RebootArg::Syscall)]
    pub reboot: RebootArg,
    /// Longest wait between reconnection attempts, in seconds.
    #[arg(long, default_value_t = 10)]
    pub max_backoff: u64,
    /// Log filter.
    #[arg(long, env = "BELLOWS_LOG", default_value = "info")]
    pub log: String,
}

/// `--pull` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicyArg {
    /// Pull when the engine lacks the image.
    IfNotPresent,
    /// Pull before every action.
    Always,
    /// Never pull.
    Never,
}

/// `--reboot` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebootArg {
    /// reboot(2) after sync (RB_KEXEC after a kexec action).
    Syscall,
    /// The `reboot` / `poweroff` command (`kexec -e` after a kexec action).
    Command,
    /// Exit 10 (reboot), 11 (power off) or 12 (kexec).
    Exit,
}
