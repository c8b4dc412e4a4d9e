//! `bellows-storm`: a boot storm against one Bellows server, for
//! `bench/storm.sh` and the storm test.
//!
//! Each simulated machine does, over real sockets, what firmware, iPXE and
//! the in-memory OS's worker do: DHCP as PXE firmware (BIOS arch 0 or UEFI
//! arch 7, with the options they send), TFTP of the boot file the answer
//! names (`blksize 1468`; UEFI adds `windowsize 4`, as OVMF does), DHCP
//! again as iPXE (user class `iPXE`), `GET` of the script the answer names,
//! the kernel and initrd the script names (whole for one machine in
//! `--whole-files-every`, else their first `--range-bytes` with a `Range`
//! request), then the worker: dial `bellows.api=` pinning `bellows.ca=`
//! with `bellows.token=`, subscribe, answer every action with RUNNING and
//! SUCCESS until `--actions` are done: the machine's call-back.
//!
//! A machine's sockets use its reserved address (the storm's namespace
//! routes the whole range to itself: `ip route add local RANGE dev lo`), so
//! the server sees one peer per machine, as in a rack.
//!
//! ```text
//! bellows-storm setup --api URL --token T [--ca FILE] --machines N --first-ip IP
//! bellows-storm run --machines N --interface IF --first-ip IP [--ramp-secs S]
//!                   [--server-pid PID] [--out DIR] [--verify DATA_DIR] …
//! ```
//!
//! `run` prints, last, one line:
//! `storm: N machines, F failures, T s to last call-back, p50/p99 per stage,
//! server peak RSS M MB, server CPU C s` and writes `machines.csv` (per
//! machine and stage), `completed.csv` and `storm.svg` (machines called
//! back over time) to `--out`.

mod dhcp;
mod http;
mod report;
mod setup;
mod tftp;
mod worker;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

/// What went wrong, in words: the storm reports failures per machine and
/// stage, it does not handle them.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn msg(m: impl Into<String>) -> Error {
        Error(m.into())
    }

    /// The same error, saying what was being done.
    pub fn context(self, what: &str) -> Error {
        Error(format!("{what}: {}", self.0))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error(e.to_string())
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Error {
        // reqwest's Display hides the cause (refused, reset, timed out).
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        Error(text)
    }
}

#[derive(Parser)]
#[command(
    name = "bellows-storm",
    about = "A boot storm against one Bellows server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pushes the machines, a three-action template and a workflow for each.
    Setup(setup::SetupArgs),
    /// Boots the machines.
    Run(RunArgs),
}

/// How the storm runs.
#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// How many machines.
    #[arg(long)]
    machines: usize,
    /// The interface the storm's namespace reaches the server by (DHCP
    /// broadcasts go out of it).
    #[arg(long)]
    interface: String,
    /// Machine i's reserved address is this plus i (as `setup` pushed).
    #[arg(long)]
    first_ip: Ipv4Addr,
    /// Arrivals spread evenly over this many seconds (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    ramp_secs: f64,
    /// Every K-th machine is UEFI (arch 7, TFTP windowsize 4); the others BIOS.
    #[arg(long, default_value_t = 2)]
    uefi_every: usize,
    /// Every K-th machine fetches the kernel and initrd whole; the others
    /// fetch their first --range-bytes (0: everyone fetches them whole).
    #[arg(long, default_value_t = 100)]
    whole_files_every: usize,
    /// Bytes of each file fetched by a Range request.
    #[arg(long, default_value_t = 65536)]
    range_bytes: u64,
    /// Actions in each machine's workflow; 0: no worker stage (a machine
    /// is done once it has its kernel and initrd), for servers that only
    /// boot machines (the peers: dnsmasq and nginx).
    #[arg(long, default_value_t = 3)]
    actions: usize,
    /// The server's processes, for their peak RSS and CPU (summed); may be
    /// given once per process.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Checks every byte: TFTP files against DATA_DIR/ipxe, whole HTTP
    /// files against DATA_DIR/osie, leases against the reservations.
    #[arg(long)]
    verify: Option<PathBuf>,
    /// Where machines.csv, completed.csv and storm.svg go.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// A machine that has not called back after this long has failed.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Receive buffer of the shared DHCP socket.
    #[arg(long, default_value_t = 8 << 20)]
    dhcp_rcvbuf: usize,
}

/// Machine `i`'s MAC (what `setup` pushed).
pub fn mac(i: usize) -> [u8; 6] {
    let n = i as u32;
    [
        0x02,
        0x5b,
        (n >> 24) as u8,
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ]
}

/// The MAC as text.
pub fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Machine `i`'s reserved address.
pub fn ip(first: Ipv4Addr, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(first).wrapping_add(i as u32))
}

/// Bytes moved by TFTP and by HTTP, over all machines.
pub static TFTP_BYTES: AtomicU64 = AtomicU64::new(0);
/// See [`TFTP_BYTES`].
pub static HTTP_BYTES: AtomicU64 = AtomicU64::new(0);

/// The stages of one boot, in order.
pub const STAGES: [&str; 7] = [
    "dhcp-firmware",
    "tftp",
    "dhcp-ipxe",
    "script",
    "kernel+initrd",
    "worker-hello",
    "actions",
];

/// One machine's outcome: when it started (since the storm began), how
/// long each stage took, and the failure, if any.
pub struct Outcome {
    /// Which machine (its MAC and address follow from it); `None` for a
    /// task that died before saying.
    pub machine: Option<usize>,
    /// Offset of its start.
    pub started: Duration,
    /// Stage durations, in [`STAGES`] order, as far as it got.
    pub stages: Vec<Duration>,
    /// Offset of its call-back (the last action's SUCCESS acknowledged).
    pub done: Option<Duration>,
    /// The stage and error it failed with.
    pub failure: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bellows-storm: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Setup(a) => setup::setup(a).await.map(|()| true),
            Command::Run(a) => run(a).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bellows-storm: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the storm; true when every machine called back.
async fn run(args: RunArgs) -> Result<bool, Error> {
    let dhcp = dhcp::Client::bind(&args.interface, args.dhcp_rcvbuf)
        .map_err(|e| e.context("bind the DHCP client socket (port 68)"))?;
    let verify = args.verify.clone().map(report::Verifier::new).map(Arc::new);
    let sampler = report::Sampler::start(args.server_pid.clone());
    let start = Instant::now();
    let args = Arc::new(args);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..args.machines {
        let at = if args.machines > 1 {
            Duration::from_secs_f64(args.ramp_secs * i as f64 / (args.machines - 1) as f64)
        } else {
            Duration::ZERO
        };
        let (dhcp, args, verify) = (dhcp.clone(), args.clone(), verify.clone());
        set.spawn(async move {
            tokio::time::sleep_until((start + at).into()).await;
            machine(i, start, &dhcp, &args, verify.as_deref()).await
        });
    }
    let mut outcomes = Vec::with_capacity(args.machines);
    let mut last_progress = Instant::now();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(o) => outcomes.push(o),
            Err(e) => outcomes.push(Outcome {
                machine: None,
                started: Duration::ZERO,
                stages: Vec::new(),
                done: None,
                failure: Some(format!("task: {e}")),
            }),
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!(
                "storm: {} of {} machines finished after {:.1} s",
                outcomes.len(),
                args.machines,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let server = sampler.stop().await;
    report::finish(&args, &outcomes, &server, start.elapsed())
}

/// One machine's boot, stage by stage.
async fn machine(
    i: usize,
    storm_start: Instant,
    dhcp: &dhcp::Client,
    args: &RunArgs,
    verify: Option<&report::Verifier>,
) -> Outcome {
    let started = storm_start.elapsed();
    let mut stages = Vec::with_capacity(STAGES.len());
    let deadline = Duration::from_secs(args.timeout_secs);
    let result = tokio::time::timeout(deadline, boot(i, dhcp, args, verify, &mut stages)).await;
    let failure = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!(
            "{}: {e}",
            STAGES.get(stages.len()).unwrap_or(&"after")
        )),
        Err(_) => Some(format!(
            "{}: not done after {deadline:?}",
            STAGES.get(stages.len()).unwrap_or(&"after")
        )),
    };
    Outcome {
        machine: Some(i),
        started,
        done: failure.is_none().then(|| storm_start.elapsed()),
        stages,
        failure,
    }
}

async fn boot(
    i: usize,
    dhcp: &dhcp::Client,
    args: &RunArgs,
    verify: Option<&report::Verifier>,
    stages: &mut Vec<Duration>,
) -> Result<(), Error> {
    let mac = mac(i);
    let my_ip = ip(args.first_ip, i);
    let uefi = args.uefi_every > 0 && i % args.uefi_every == args.uefi_every - 1;
    let firmware = if uefi {
        dhcp::Firmware::Uefi
    } else {
        dhcp::Firmware::Bios
    };
    let mut t = Instant::now();
    let mut lap = |stages: &mut Vec<Duration>| {
        stages.push(t.elapsed());
        t = Instant::now();
    };
    // Transaction ids: unique per machine and stage.
    let xid = (i as u32).wrapping_mul(2);
    let lease = dhcp
        .lease(mac, xid, dhcp::Stage::Firmware, firmware)
        .await?;
    if let Some(v) = verify {
        v.lease(&lease, my_ip)?;
    }
    lap(stages);
    let ask = tftp::Ask {
        blksize: Some(1468),
        windowsize: uefi.then_some(4),
    };
    let fetched = tftp::fetch(
        my_ip,
        lease.next_server,
        &lease.boot_file,
        ask,
        verify.is_some(),
    )
    .await?;
    TFTP_BYTES.fetch_add(fetched.bytes, Ordering::Relaxed);
    if let Some(v) = verify {
        v.tftp(&lease.boot_file, &fetched)?;
    }
    lap(stages);
    let lease = dhcp
        .lease(mac, xid.wrapping_add(1), dhcp::Stage::Ipxe, firmware)
        .await?;
    if let Some(v) = verify {
        v.lease(&lease, my_ip)?;
    }
    lap(stages);
    let web = http::client(my_ip, Duration::from_secs(args.timeout_secs))?;
    let boot = http::script(&web, &lease.boot_file).await?;
    lap(stages);
    let whole = args.whole_files_every == 0 || i.is_multiple_of(args.whole_files_every);
    let range = (!whole).then_some(args.range_bytes);
    for url in [&boot.kernel, &boot.initrd] {
        let got = http::file(&web, url, range, verify.is_some()).await?;
        HTTP_BYTES.fetch_add(got.bytes, Ordering::Relaxed);
        if let Some(v) = verify {
            v.http(url, &got)?;
        }
    }
    // The machine's HTTP connections close as the kernel boots.
    drop(web);
    lap(stages);
    if args.actions == 0 {
        return Ok(());
    }
    let run = worker::run(
        &boot.cmdline,
        my_ip,
        args.actions,
        Duration::from_secs(args.timeout_secs),
    )
    .await?;
    stages.push(run.hello.duration_since(t));
    stages.push(run.hello.elapsed());
    Ok(())
}
