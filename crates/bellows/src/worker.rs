//! `bellows worker`: settings from flags, environment and the kernel command
//! line, the runtimes this machine has, and the agent loop; or, on a
//! machine booted for discovery (`bellows.discovery=1`, `--discovery`),
//! the discovery loop instead.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bellows_model::boot::ContainerArgs;
use bellows_worker::agent::{self, Agent, AgentConfig, Exit, Only, PowerMode};
use bellows_worker::discovery::Discovery;
use bellows_worker::docker::{DockerOptions, DockerRuntime, PullPolicy, RegistryCredentials};
use bellows_worker::oci::registry::RegistryOptions;
use bellows_worker::oci::{OciOptions, OciRuntime};
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
    // Several servers (replicas sharing one database), comma-separated:
    // tried in order, the next one when the current stops answering.
    let servers: Vec<String> = server
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if servers.is_empty() {
        return Err(CliError::Usage(format!("no server URL in {server:?}")));
    }
    let discovery = args.discovery || booted_with.discovery;
    // Discovery runs no action: no runtime to look for.
    let runtimes = if discovery {
        Vec::new()
    } else {
        runtimes(&args, &cmdline, &servers).await?
    };
    let power = match args.reboot {
        RebootArg::Syscall => PowerMode::Syscall,
        RebootArg::Command => PowerMode::Command(vec!["reboot".into()]),
        RebootArg::Exit => PowerMode::Exit,
    };
    let config = AgentConfig {
        servers,
        worker_id: worker_id.clone(),
        work_root: args.work_dir.clone(),
        power,
        max_backoff: Duration::from_secs(args.max_backoff.max(1)),
        send_facts: true,
        token: args.worker_token.clone().or(booted_with.token),
        trust: server_trust(&args, booted_with.ca.as_deref())?,
    };
    let stop = CancellationToken::new();
    let usage = |e: agent::AgentError| CliError::Usage(e.to_string());
    let worker: std::pin::Pin<Box<dyn Future<Output = Exit> + Send>> = if discovery {
        let discovery = Discovery::new(config).map_err(usage)?;
        tracing::info!(server = %server, worker = %worker_id, "worker starting in discovery mode");
        Box::pin(discovery.run(stop.clone()))
    } else {
        let agent = Agent::new(config, runtimes).map_err(usage)?;
        tracing::info!(server = %server, worker = %worker_id, "worker starting");
        Box::pin(agent.run(stop.clone()))
    };
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
            tracing::info!("signal: stopping (a running action is stopped)");
            stop.cancel();
        });
    }
    Ok(match worker.await {
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

/// Built-in actions take `bellows/*` images, and Tinkerbell's action
/// images that have a built-in unless `--tinkerbell-actions container`;
/// the container runtime (Docker when its engine answers, else crun on
/// images the worker pulls itself) takes everything else; without one,
/// built-ins also stand in for Tinkerbell's images.
async fn runtimes(
    args: &WorkerArgs,
    cmdline: &str,
    servers: &[String],
) -> Result<Vec<Arc<dyn Runtime>>, CliError> {
    let booted = ContainerArgs::parse(cmdline);
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
    let mut insecure = args.insecure_registry.clone();
    insecure.extend(booted.insecure_registries);
    let registry = RegistryOptions {
        credentials,
        insecure,
    };
    // oci2disk pulls from registries as the container runtime does.
    let builtin: Arc<dyn Runtime> = Arc::new(BuiltinRuntime::new(BuiltinOptions {
        registry: registry.clone(),
        // rootio reads the storage layout from the boot listener, which
        // serves metadata in plain HTTP beside TLS.
        metadata_servers: servers
            .iter()
            .map(|s| s.replacen("https://", "http://", 1))
            .collect(),
        ..BuiltinOptions::default()
    }));
    let tinkerbell = match &args.tinkerbell_actions {
        Some(mode) => *mode,
        None => match booted.tinkerbell_actions.as_deref() {
            None | Some("builtin") => TinkerbellActions::Builtin,
            Some("container") => TinkerbellActions::Container,
            Some(other) => {
                tracing::warn!(
                    "bellows.tinkerbell_actions={other:?} is neither builtin nor container; using builtin"
                );
                TinkerbellActions::Builtin
            }
        },
    };
    let accept: fn(&str) -> bool = match tinkerbell {
        TinkerbellActions::Builtin => agent::has_builtin,
        TinkerbellActions::Container => agent::is_bellows_image,
    };
    let mut list: Vec<Arc<dyn Runtime>> = vec![Arc::new(Only::new(builtin.clone(), accept))];
    let kind = if args.no_docker {
        ContainerRuntimeArg::None
    } else {
        args.container_runtime
    };
    if kind != ContainerRuntimeArg::None {
        let pull_policy = match args.pull {
            PullPolicyArg::IfNotPresent => PullPolicy::IfNotPresent,
            PullPolicyArg::Always => PullPolicy::Always,
            PullPolicyArg::Never => PullPolicy::Never,
        };
        let mirror = args.registry_mirror.clone().or(booted.registry_mirror);
        let mut found: Option<Arc<dyn Runtime>> = None;
        if matches!(
            kind,
            ContainerRuntimeArg::Auto | ContainerRuntimeArg::Docker
        ) {
            let options = DockerOptions {
                host: args.docker_host.clone(),
                registry_mirror: mirror.clone(),
                credentials: registry.credentials.clone(),
                pull_policy,
                ..DockerOptions::default()
            };
            let failure = match DockerRuntime::connect(options) {
                Ok(docker) => {
                    match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
                        Ok(Ok(version)) => {
                            tracing::info!("Docker Engine {version} at {}", docker.socket());
                            found = Some(Arc::new(docker));
                            None
                        }
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some("the engine did not answer in 5 s".to_string()),
                    }
                }
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = failure {
                if kind == ContainerRuntimeArg::Docker {
                    return Err(CliError::Usage(format!(
                        "--container-runtime docker: {why}"
                    )));
                }
                tracing::info!("no Docker engine ({why}); trying crun");
            }
        }
        if found.is_none() {
            let mut options = OciOptions::new(args.work_dir.join(".containers"));
            options.crun = args.crun.clone();
            options.registry = registry;
            options.mirror = mirror;
            options.pull_policy = pull_policy;
            match OciRuntime::new(options).await {
                Ok(oci) => {
                    tracing::info!("container actions run with {}", oci.version());
                    found = Some(Arc::new(oci));
                }
                Err(e) if kind == ContainerRuntimeArg::Crun => {
                    return Err(CliError::Usage(format!("--container-runtime crun: {e}")));
                }
                Err(e) => tracing::warn!("no container runtime ({e}); built-in actions only"),
            }
        }
        list.extend(found);
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
    /// Server URL: the boot listener, e.g. https://10.0.0.1:8080; several,
    /// comma-separated, for replicas sharing one database (tried in turn)
    /// [default: bellows.api= on the kernel command line].
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
    /// Run only built-in actions, even if a container runtime is present
    /// (the same as --container-runtime none).
    #[arg(long, env = "BELLOWS_NO_DOCKER")]
    pub no_docker: bool,
    /// What runs container actions: a Docker engine, crun on images the
    /// worker pulls itself (the in-memory OS), or nothing (built-in actions
    /// only); `auto` takes Docker if its engine answers, else crun if it
    /// runs.
    #[arg(long, value_enum, env = "BELLOWS_CONTAINER_RUNTIME", default_value_t = ContainerRuntimeArg::Auto)]
    pub container_runtime: ContainerRuntimeArg,
    /// The crun binary, for --container-runtime crun or auto.
    #[arg(long, env = "BELLOWS_CRUN", default_value = "crun")]
    pub crun: PathBuf,
    /// A registry (HOST:PORT) reached over plain HTTP by the crun runtime,
    /// e.g. a lab's docker-registry; repeatable [also
    /// bellows.insecure_registry= on the kernel command line]. Loopback
    /// registries always are.
    #[arg(long, env = "BELLOWS_INSECURE_REGISTRIES", value_delimiter = ',')]
    pub insecure_registry: Vec<String>,
    /// Tinkerbell's action images that have a built-in (image2disk,
    /// writefile, cexec, archive2disk, kexec, reboot under
    /// quay.io/tinkerbell/actions/ and the like) run as the built-in, or as
    /// the container they name [default: bellows.tinkerbell_actions= on the
    /// kernel command line, else builtin].
    #[arg(long, value_enum, env = "BELLOWS_TINKERBELL_ACTIONS")]
    pub tinkerbell_actions: Option<TinkerbellActions>,
    /// Pull-through mirror for Docker Hub images (host[:port][/prefix])
    /// [default: bellows.registry_mirror= on the kernel command line].
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
    /// Discovery instead of actions: report this machine's inventory
    /// (hardware, BMC address, LLDP neighbours) until the server enrols
    /// it, then reboot as --reboot says; with an operator token, to enrol
    /// an ordinary host by hand [default: bellows.discovery=1 on the
    /// kernel command line].
    #[arg(long, env = "BELLOWS_DISCOVERY")]
    pub discovery: bool,
    /// Log filter.
    #[arg(long, env = "BELLOWS_LOG", default_value = "info")]
    pub log: String,
}

/// `--container-runtime` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerRuntimeArg {
    /// Docker if its engine answers, else crun if it runs, else none.
    Auto,
    /// The Docker engine (fails to start without one).
    Docker,
    /// crun on images the worker pulls (fails to start without crun).
    Crun,
    /// Built-in actions only.
    None,
}

/// `--tinkerbell-actions` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TinkerbellActions {
    /// The built-in of the same name runs them.
    Builtin,
    /// The container runtime runs the image they name.
    Container,
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
