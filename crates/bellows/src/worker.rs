//! `bellows worker`: settings from flags, environment and the kernel command
//! line, the runtimes this machine has, and the agent loop.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bellows_worker::agent::{self, Agent, AgentConfig, Exit, Only, PowerMode};
use bellows_worker::docker::{DockerOptions, DockerRuntime, PullPolicy, RegistryCredentials};
use bellows_worker::tls::ServerTrust;
use bellows_worker::{BuiltinOptions, BuiltinRuntime, Runtime};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::error::CliError;

/// Exit status after an action asked for a reboot, with `--reboot exit`.
pub const EXIT_REBOOT: u8 = 10;
/// Exit status after an action asked for a power-off, with `--reboot exit`.
pub const EXIT_POWEROFF: u8 = 11;
/// Exit status after a `kexec` action loaded a kernel, with `--reboot exit`
/// (the supervisor runs `kexec -e`).
pub const EXIT_KEXEC: u8 = 12;

/// Runs the worker until a signal (or a reboot in `--reboot exit` mode).
pub async fn run(args: WorkerArgs) -> Result<ExitCode, CliError> {
    let filter = EnvFilter::try_new(&args.log)
        .map_err(|e| CliError::Usage(format!("--log {:?}: {e}", args.log)))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let booted_with = bellows_model::boot::KernelArgs::parse(&cmdline);
    let server = args.server.clone().or(booted_with.api).ok_or_else(|| {
        CliError::Usage(
            "no server: give --server https://HOST:PORT (or BELLOWS_SERVER, or bellows.api= on the kernel command line)"
                .into(),
        )
    })?;
    let worker_id = match args.worker_id.clone().or(booted_with.worker_id) {
        Some(id) => id,
        None => first_mac().ok_or_else(|| {
            CliError::Usage("no worker id: give --id (no network interface has a MAC)".into())
        })?,
    };
    let runtimes = runtimes(&args).await?;
    let power = match args.reboot {
        RebootArg::Syscall => PowerMode::Syscall,
        RebootArg::Command => PowerMode::Command(vec!["reboot".into()]),
        RebootArg::Exit => PowerMode::Exit,
    };
    let config = AgentConfig {
        server: server.clone(),
        worker_id: worker_id.clone(),
        work_root: args.work_dir.clone(),
        power,
        max_backoff: Duration::from_secs(args.max_backoff.max(1)),
        send_facts: true,
        token: args.worker_token.clone().or(booted_with.token),
        trust: server_trust(&args, booted_with.ca.as_deref())?,
    };
    let agent = Agent::new(config, runtimes).map_err(|e| CliError::Usage(e.to_string()))?;
    tracing::info!(server = %server, worker = %worker_id, "worker starting");
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| CliError::Server(format!("cannot handle SIGTERM: {e}")))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| CliError::Server(format!("cannot handle SIGINT: {e}")))?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signal: stopping (the running action is stopped)");
            stop.cancel();
        });
    }
    Ok(match agent.run(stop).await {
        Exit::Stopped => ExitCode::SUCCESS,
        Exit::Reboot => ExitCode::from(EXIT_REBOOT),
        Exit::PowerOff => ExitCode::from(EXIT_POWEROFF),
        Exit::Kexec => ExitCode::from(EXIT_KEXEC),
    })
}

/// How the server is checked over `https://`: `--ca-fingerprint`, else
/// `--server-ca`, else the pin on the kernel command line, else the system's
/// trust store.
fn server_trust(args: &WorkerArgs, booted_with: Option<&str>) -> Result<ServerTrust, CliError> {
    let usage = |e: bellows_worker::tls::TlsError| CliError::Usage(e.to_string());
    if let Some(fp) = &args.ca_fingerprint {
        return ServerTrust::pinned(fp).map_err(usage);
    }
    if let Some(file) = &args.server_ca {
        return ServerTrust::ca_file(file).map_err(usage);
    }
    match booted_with {
        Some(fp) => ServerTrust::pinned(fp).map_err(usage),
        None => Ok(ServerTrust::System),
    }
}

/// Built-in actions take `bellows/*` images; a reachable Docker engine
/// takes everything else; without one, built-ins also stand in for
/// Tinkerbell's own action images of the same names.
async fn runtimes(args: &WorkerArgs) -> Result<Vec<Arc<dyn Runtime>>, CliError> {
    let builtin: Arc<dyn Runtime> = Arc::new(BuiltinRuntime::new(BuiltinOptions::default()));
    let mut list: Vec<Arc<dyn Runtime>> = vec![Arc::new(Only::new(
        builtin.clone(),
        agent::is_bellows_image,
    ))];
    if !args.no_docker {
        let mut credentials = BTreeMap::new();
        if let Some(spec) = &args.registry_user {
            let (host, user) = spec.split_once('=').ok_or_else(|| {
                CliError::Usage(format!("--registry-user {spec:?}: write it as HOST=USER"))
            })?;
            let password = std::env::var("BELLOWS_REGISTRY_PASSWORD").map_err(|_| {
                CliError::Usage(
                    "--registry-user needs the password in BELLOWS_REGISTRY_PASSWORD".into(),
                )
            })?;
            credentials.insert(
                host.to_string(),
                RegistryCredentials {
                    username: user.to_string(),
                    password,
                },
            );
        }
        let options = DockerOptions {
            host: args.docker_host.clone(),
            registry_mirror: args.registry_mirror.clone(),
            credentials,
            pull_policy: match args.pull {
                PullPolicyArg::IfNotPresent => PullPolicy::IfNotPresent,
                PullPolicyArg::Always => PullPolicy::Always,
                PullPolicyArg::Never => PullPolicy::Never,
            },
            ..DockerOptions::default()
        };
        match DockerRuntime::connect(options) {
            Ok(docker) => match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
                Ok(Ok(version)) => {
                    tracing::info!("Docker Engine {version} at {}", docker.socket());
                    list.push(Arc::new(docker));
                }
                Ok(Err(e)) => tracing::warn!("no container engine ({e}); built-in actions only"),
                Err(_) => {
                    tracing::warn!("container engine did not answer in 5 s; built-in actions only")
                }
            },
            Err(e) => tracing::warn!("no container engine ({e}); built-in actions only"),
        }
    }
    list.push(builtin);
    Ok(list)
}

/// The MAC of the first interface (by name) that has one, lo excluded.
fn first_mac() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let mac = std::fs::read_to_string(format!("/sys/class/net/{n}/address")).ok()?;
        let mac = mac.trim().to_string();
        (mac.len() == 17 && mac != "00:00:00:00:00:00").then_some(mac)
    })
}

/// `bellows worker` settings.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Server URL: the boot listener, e.g. https://10.0.0.1:8080 [default:
    /// bellows.api= on the kernel command line].
    #[arg(long, env = "BELLOWS_SERVER")]
    pub server: Option<String>,
    /// Worker id [default: bellows.worker_id= on the kernel command line,
    /// else the MAC of the first network interface that has one].
    #[arg(long = "id", env = "BELLOWS_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Credential sent on every call: an operator token for a worker on an
    /// ordinary host [default: bellows.token= on the kernel command line,
    /// the machine's per-boot credential].
    #[arg(long, env = "BELLOWS_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// PEM file of the CA that signed the server's certificate, for an
    /// https:// server (`DATA_DIR/tls/ca.crt` of a server with its own CA).
    #[arg(long, env = "BELLOWS_SERVER_CA")]
    pub server_ca: Option<PathBuf>,
    /// Pin the server's CA by the hex SHA-256 of its certificate (the
    /// `ca_fingerprint` the server logs) [default: --server-ca if given,
    /// else bellows.ca= on the kernel command line, else the system's trust
    /// store].
    #[arg(long, env = "BELLOWS_CA_FINGERPRINT", conflicts_with = "server_ca")]
    pub ca_fingerprint: Option<String>,
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
