//! `bellows worker`: settings from flags, environment and the kernel command
//! line, the runtimes this machine has, and the agent loop.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bellows_worker::agent::{self, Agent, AgentConfig, Exit, Only, PowerMode};
use bellows_worker::docker::{DockerOptions, DockerRuntime, PullPolicy, RegistryCredentials};
use bellows_worker::{BuiltinOptions, BuiltinRuntime, Runtime};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::cli::{PullPolicyArg, RebootArg, WorkerArgs};
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
            "no server: give --server http://HOST:PORT (or BELLOWS_SERVER, or bellows.api= on the kernel command line)"
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
