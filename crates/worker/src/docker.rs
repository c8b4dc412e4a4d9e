//! Actions as Docker containers, through the Docker Engine API.
//!
//! The Tinkerbell action contract, so existing action images run unchanged:
//! each action is a container configured by environment variables, run
//! privileged on the host's network, with the volumes its template names and
//! a per-workflow directory shared by all of the workflow's actions. That
//! directory is mounted at `/worker` (Bellows' contract, [`WORK_DIR_TARGET`])
//! and at `/workflow` (where tink-worker mounts it,
//! [`TINKERBELL_WORK_DIR_TARGET`]), unless the template binds those paths
//! itself.
//!
//! One run is one container named [`ActionSpec::instance_name`], labelled with
//! the workflow, task, action and attempt ([`LABEL_WORKFLOW`] ...). Its
//! stdout and stderr go line by line to the run's [`LogSink`]; the run ends
//! when the container exits, and the container is removed afterwards
//! whatever happened. A run whose future is dropped (the worker died or was
//! restarted) leaves its container behind on purpose: the next run of the
//! same attempt with [`ActionSpec::resume`] set re-attaches to it instead of
//! starting the action a second time.
//!
//! On-failure and on-timeout commands: clone the spec, replace `command`, and
//! give `name` a suffix (e.g. `"disk-wipe.on-failure"`), then call
//! [`Runtime::run`] again. The suffix makes the instance (container) name
//! differ from the action's own, so the hook never collides with, or resumes,
//! the failed container; `.` is valid in container names.
//!
//! [`LogSink`]: crate::runtime::LogSink
//!
//! What it shares with the in-memory OS's runtime ([`crate::oci`]) lives in
//! [`crate::container`]: the `/worker` contract, pull policy, credentials.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, Mount, MountType,
};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, CreateImageOptions, KillContainerOptions,
    LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use tokio_stream::StreamExt;

use crate::container::exited;
pub use crate::container::{
    PullPolicy, RegistryCredentials, TINKERBELL_WORK_DIR_TARGET, WORK_DIR_TARGET,
};
use crate::lines::LineBuffer;
use crate::reference::ImageRef;
use crate::runtime::{
    ActionSpec, AfterSuccess, LogSink, RunContext, RunOutcome, RunResult, Runtime, Stream,
};

/// The engine's socket when neither the options nor `DOCKER_HOST` name one.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Container label holding the workflow id, to find a workflow's containers.
pub const LABEL_WORKFLOW: &str = "bellows.workflow";
/// Container label holding the task name.
pub const LABEL_TASK: &str = "bellows.task";
/// Container label holding the action name.
pub const LABEL_ACTION: &str = "bellows.action";
/// Container label holding the attempt number.
pub const LABEL_ATTEMPT: &str = "bellows.attempt";

/// A container's output as the engine streams it.
type Output =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<LogOutput, EngineError>> + Send>>;

/// Lines of a container's output replayed when resuming one that already
/// exited.
const RESUME_TAIL_LINES: &str = "200";

/// How long output may keep arriving after the container exited.
const LOG_DRAIN: Duration = Duration::from_secs(3);

/// How to reach the engine and where images come from.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// The engine's unix socket: a path or a `unix:///path` URL. `None`: the
    /// `DOCKER_HOST` environment variable, else [`DEFAULT_SOCKET`].
    pub host: Option<String>,
    /// A pull-through mirror of Docker Hub ("mirror.local:5000", optionally
    /// with a path prefix, "mirror.local:5000/hub"). Only Docker Hub images
    /// (no registry named, or `docker.io`) are rewritten to it, as Docker's
    /// own `registry-mirrors` setting does, falling back to Docker Hub when
    /// the mirror fails; images naming another registry are pulled from that
    /// registry.
    pub registry_mirror: Option<String>,
    /// Credentials by registry host ("quay.io", "mirror.local:5000";
    /// "docker.io" for Docker Hub), used for the registry an image is
    /// actually pulled from (the mirror's, for mirrored images).
    pub credentials: BTreeMap<String, RegistryCredentials>,
    /// When to pull.
    pub pull_policy: PullPolicy,
    /// How long a cancelled container gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            host: None,
            registry_mirror: None,
            credentials: BTreeMap::new(),
            pull_policy: PullPolicy::IfNotPresent,
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// Why the runtime could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The host is not a unix socket (TCP, SSH and TLS are not built in).
    #[error("docker host {0:?} is not supported: give a unix socket path or unix:///path")]
    UnsupportedHost(String),
    /// Nothing at the socket path: the engine is not running (yet).
    #[error("no docker engine socket at {}", .0.display())]
    SocketNotFound(PathBuf),
    /// The engine did not answer, or answered with an error.
    #[error("docker engine at {host}: {message}")]
    Engine {
        /// The socket path.
        host: String,
        /// The engine's or the connection's message.
        message: String,
        /// The underlying error.
        #[source]
        source: EngineError,
    },
}

/// Runs actions as containers on a Docker Engine (see the module docs).
pub struct DockerRuntime {
    docker: Docker,
    socket: String,
    negotiated: tokio::sync::OnceCell<()>,
    mirror: Option<String>,
    credentials: crate::container::Credentials,
    pull_policy: PullPolicy,
    stop_grace: Duration,
}

impl fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("socket", &self.socket)
            .field("mirror", &self.mirror)
            .field("registries", &self.credentials.hosts())
            .field("pull_policy", &self.pull_policy)
            .field("stop_grace", &self.stop_grace)
            .finish()
    }
}

/// What a run does, once it knows what the engine already has.
enum Plan {
    /// Create and start a new container from this image reference.
    Fresh(String),
    /// An earlier run's container is running: follow it.
    Follow,
    /// An earlier run created the container but never started it.
    StartExisting,
    /// An earlier run's container has already exited with this status.
    Exited(Option<i64>),
}

impl DockerRuntime {
    /// Sets up a client for the engine at `options.host`. Makes no request:
    /// the API version is negotiated on first use, so an engine restarted
    /// later is still reached. Fails when the host is not a unix socket or
    /// nothing is at its path; call [`DockerRuntime::ping`] to check that the
    /// engine answers.
    pub fn connect(options: DockerOptions) -> Result<Self, DockerError> {
        let host = options
            .host
            .filter(|h| !h.trim().is_empty())
            .or_else(|| {
                std::env::var("DOCKER_HOST")
                    .ok()
                    .filter(|h| !h.trim().is_empty())
            })
            .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        let socket = socket_path(&host)?;
        if !Path::new(&socket).exists() {
            return Err(DockerError::SocketNotFound(PathBuf::from(socket)));
        }
        // Stopping a container waits out the grace period inside one request.
        let timeout = options.stop_grace.as_secs().saturating_add(60).max(120);
        let docker = Docker::connect_with_unix(&socket, timeout, bollard::API_DEFAULT_VERSION)
            .map_err(|source| DockerError::Engine {
                host: socket.clone(),
                message: engine_message(&source),
                source,
            })?;
        Ok(DockerRuntime {
            docker,
            socket,
            negotiated: tokio::sync::OnceCell::new(),
            mirror: options
                .registry_mirror
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty()),
            credentials: crate::container::Credentials::new(options.credentials),
            pull_policy: options.pull_policy,
            stop_grace: options.stop_grace,
        })
    }

    /// Checks that the engine answers (negotiating the API version) and
    /// returns its version, for start-up logs and health checks.
    pub async fn ping(&self) -> Result<String, DockerError> {
        let wrap = |source: EngineError| DockerError::Engine {
            host: self.socket.clone(),
            message: engine_message(&source),
            source,
        };
        self.negotiate().await.map_err(wrap)?;
        let version = self.docker.version().await.map_err(wrap)?;
        Ok(version.version.unwrap_or_else(|| "unknown".to_string()))
    }

    /// The engine client, for housekeeping the runtime does not cover (e.g.
    /// listing a workflow's containers by [`LABEL_WORKFLOW`]). Call
    /// [`DockerRuntime::ping`] first so the API version is negotiated.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The engine's socket path, for messages.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Lowers the client's API version to the engine's, once.
    async fn negotiate(&self) -> Result<(), EngineError> {
        self.negotiated
            .get_or_try_init(|| async { self.docker.clone().negotiate_version().await.map(|_| ()) })
            .await
            .map(|_| ())
    }

    /// Decides what to do from the engine's state: resume, or clear the way
    /// and get the image. `Err` is the failure message.
    async fn plan(&self, spec: &ActionSpec, ctx: &RunContext, name: &str) -> Result<Plan, String> {
        if spec.image.trim().is_empty() {
            return Err("the action names no image".to_string());
        }
        self.negotiate()
            .await
            .map_err(|e| format!("docker engine at {}: {}", self.socket, engine_message(&e)))?;
        match self.docker.inspect_container(name, None).await {
            Ok(existing) if spec.resume => {
                let state = existing.state.unwrap_or_default();
                return Ok(match state.status {
                    Some(
                        ContainerStateStatusEnum::RUNNING
                        | ContainerStateStatusEnum::PAUSED
                        | ContainerStateStatusEnum::RESTARTING,
                    ) => {
                        ctx.logs
                            .note(format!("re-attaching to running container {name}"));
                        Plan::Follow
                    }
                    Some(ContainerStateStatusEnum::CREATED) => {
                        ctx.logs.note(format!(
                            "starting container {name}, created by an earlier run"
                        ));
                        Plan::StartExisting
                    }
                    _ => Plan::Exited(state.exit_code),
                });
            }
            Ok(_) => {
                ctx.logs
                    .note(format!("removing container {name} left by an earlier run"));
                if let Err(e) = self
                    .docker
                    .remove_container(name, Some(force_remove()))
                    .await
                    && !is_not_found(&e)
                {
                    return Err(format!(
                        "removing leftover container {name}: {}",
                        engine_message(&e)
                    ));
                }
            }
            Err(e) if is_not_found(&e) => {
                if spec.resume {
                    ctx.logs.note(format!(
                        "no container {name} to re-attach to; starting anew"
                    ));
                }
            }
            Err(e) => {
                return Err(format!(
                    "inspecting container {name}: {}",
                    engine_message(&e)
                ));
            }
        }
        self.ensure_image(&spec.image, ctx).await.map(Plan::Fresh)
    }

    /// Makes the image available per the pull policy; returns the reference
    /// to create the container from.
    async fn ensure_image(&self, image: &str, ctx: &RunContext) -> Result<String, String> {
        let parsed = ImageRef::parse(image)
            .ok_or_else(|| format!("image reference {image:?} is not valid"))?;
        let target = match &self.mirror {
            Some(mirror) => parsed.mirrored(mirror),
            None => parsed.clone(),
        };
        let original = parsed.full();
        let wanted = target.full();
        if self.pull_policy != PullPolicy::Always {
            let mut candidates = vec![original.clone()];
            if wanted != original {
                candidates.push(wanted.clone());
            }
            for candidate in candidates {
                match self.docker.inspect_image(&candidate).await {
                    Ok(_) => return Ok(candidate),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        return Err(format!(
                            "inspecting image {candidate}: {}",
                            engine_message(&e)
                        ));
                    }
                }
            }
            if self.pull_policy == PullPolicy::Never {
                return Err(format!(
                    "image {original} is not present and the pull policy is Never"
                ));
            }
        }
        match self.pull(&target, ctx).await {
            Ok(()) => Ok(wanted),
            // Like Docker's own registry-mirrors: a failing mirror falls back
            // to Docker Hub.
            Err(mirror_failure) if wanted != original => {
                ctx.logs
                    .note(format!("{mirror_failure}; trying Docker Hub"));
                match self.pull(&parsed, ctx).await {
                    Ok(()) => Ok(original),
                    Err(hub_failure) => Err(format!("{mirror_failure}; {hub_failure}")),
                }
            }
            Err(failure) => Err(failure),
        }
    }

    /// Pulls `image`, noting the main steps and showing download progress.
    async fn pull(&self, image: &ImageRef, ctx: &RunContext) -> Result<(), String> {
        let reference = image.full();
        ctx.logs.note(format!("pulling image {reference}"));
        let registry = image.registry_host();
        let credentials = self.credentials.get(&registry).map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(registry.clone()),
            ..Default::default()
        });
        let options = CreateImageOptions {
            from_image: Some(image.name()),
            tag: Some(image.tag_or_digest()),
            ..Default::default()
        };
        let stream = self.docker.create_image(Some(options), None, credentials);
        tokio::pin!(stream);
        // Bytes downloaded and total, by layer.
        let mut layers: HashMap<String, (i64, i64)> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info =
                item.map_err(|e| format!("pulling image {reference}: {}", engine_message(&e)))?;
            let status = info.status.unwrap_or_default();
            match status.as_str() {
                "Downloading" => {
                    if let (Some(id), Some(detail)) = (info.id, info.progress_detail) {
                        layers.insert(id, (detail.current.unwrap_or(0), detail.total.unwrap_or(0)));
                        let (done, total) = layers
                            .values()
                            .fold((0, 0), |(d, t), (c, s)| (d + c, t + s));
                        ctx.logs.progress(format!(
                            "pulling {reference}: {} of {}",
                            mib(done),
                            mib(total)
                        ));
                    }
                }
                // Per-layer steps: too many to note.
                "" | "Waiting" | "Pulling fs layer" | "Verifying Checksum"
                | "Download complete" | "Extracting" | "Pull complete" | "Already exists" => {}
                _ => ctx.logs.note(status),
            }
        }
        ctx.logs.progress(format!("pulled {reference}"));
        Ok(())
    }

    /// Creates the container for a fresh run.
    async fn create(
        &self,
        spec: &ActionSpec,
        ctx: &RunContext,
        name: &str,
        image: &str,
    ) -> Result<(), String> {
        let work_dir = std::path::absolute(&ctx.work_dir)
            .map_err(|e| format!("work directory {}: {e}", ctx.work_dir.display()))?;
        tokio::fs::create_dir_all(&work_dir)
            .await
            .map_err(|e| format!("creating work directory {}: {e}", work_dir.display()))?;
        let source = work_dir
            .to_str()
            .ok_or_else(|| format!("work directory {} is not UTF-8", work_dir.display()))?
            .to_string();
        let mounts = crate::container::work_dir_targets(spec)
            .into_iter()
            .map(|target| Mount {
                target: Some(target.to_string()),
                source: Some(source.clone()),
                typ: Some(MountType::BIND),
                ..Default::default()
            })
            .collect();
        let labels = HashMap::from([
            (LABEL_WORKFLOW.to_string(), spec.workflow_id.clone()),
            (LABEL_TASK.to_string(), spec.task.clone()),
            (LABEL_ACTION.to_string(), spec.name.clone()),
            (LABEL_ATTEMPT.to_string(), spec.attempt.to_string()),
        ]);
        let pid_mode = spec
            .pid
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(
                spec.environment
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            labels: Some(labels),
            tty: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                privileged: Some(true),
                binds: Some(spec.volumes.clone()),
                mounts: Some(mounts),
                pid_mode,
                network_mode: Some("host".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        self.docker
            .create_container(Some(options), body)
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "creating container {name} from {image}: {}",
                    engine_message(&e)
                )
            })
    }

    /// Attaches to the container's output, starts it, then follows it to
    /// its end. Attaching first (as `docker run` does) gets every byte, the
    /// last partial line included, which following the log file can miss.
    async fn start_and_follow(&self, name: &str, ctx: &RunContext) -> RunResult {
        let output = match self.attach(name).await {
            Ok(output) => output,
            Err(message) => return RunResult::failed(message),
        };
        if let Err(e) = self.docker.start_container(name, None).await {
            return RunResult::failed(format!("starting container {name}: {}", engine_message(&e)));
        }
        self.follow(name, ctx, output).await
    }

    /// Attaches to a container that is running already: its output from
    /// now on.
    async fn reattach(&self, name: &str, ctx: &RunContext) -> RunResult {
        match self.attach(name).await {
            Ok(output) => self.follow(name, ctx, output).await,
            Err(message) => RunResult::failed(message),
        }
    }

    /// The container's stdout and stderr from now until it exits.
    async fn attach(&self, name: &str) -> Result<Output, String> {
        let options = AttachContainerOptions {
            stream: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        self.docker
            .attach_container(name, Some(options))
            .await
            .map(|attached| attached.output)
            .map_err(|e| format!("attaching to container {name}: {}", engine_message(&e)))
    }

    /// Forwards the container's `output` until it exits, or stops it when
    /// the run is cancelled.
    async fn follow(&self, name: &str, ctx: &RunContext, output: Output) -> RunResult {
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                self.stop(name, ctx).await;
                RunResult {
                    outcome: RunOutcome::Cancelled,
                    exit_code: None,
                    message: format!("stopped container {name}: the run was cancelled"),
                    after: AfterSuccess::Continue,
                }
            }
            result = self.watch(name, ctx, output) => result,
        }
    }

    /// Output and exit status of a running container.
    async fn watch(&self, name: &str, ctx: &RunContext, output: Output) -> RunResult {
        let logs = pump_output(output, &ctx.logs);
        let wait = wait_exit(&self.docker, name, &ctx.logs);
        tokio::pin!(logs, wait);
        let mut logs_done = false;
        let exit = loop {
            tokio::select! {
                read = &mut logs, if !logs_done => {
                    logs_done = true;
                    if let Err(e) = read {
                        ctx.logs.note(format!("reading the container's output failed: {}", engine_message(&e)));
                    }
                }
                exit = &mut wait => break exit,
            }
        };
        if !logs_done {
            match tokio::time::timeout(LOG_DRAIN, &mut logs).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => ctx.logs.note(format!(
                    "reading the container's output failed: {}",
                    engine_message(&e)
                )),
                Err(_) => ctx
                    .logs
                    .note("output still arriving after the container exited was not read"),
            }
        }
        match exit {
            Ok(code) => exited(code),
            Err(e) => RunResult::failed(format!(
                "waiting for container {name}: {}",
                engine_message(&e)
            )),
        }
    }

    /// Reports a container that exited while no run was watching it, with
    /// the end of its output.
    async fn report_exited(&self, name: &str, ctx: &RunContext, code: Option<i64>) -> RunResult {
        ctx.logs.note(format!(
            "container {name} already exited; its last output follows"
        ));
        let options = LogsOptions {
            follow: false,
            stdout: true,
            stderr: true,
            tail: RESUME_TAIL_LINES.to_string(),
            ..Default::default()
        };
        let output = self.docker.logs(name, Some(options));
        if let Err(e) = pump_output(output, &ctx.logs).await {
            ctx.logs.note(format!(
                "reading the container's output failed: {}",
                engine_message(&e)
            ));
        }
        match code {
            Some(code) => exited(code),
            None => RunResult::failed(format!("container {name} ended with no exit status")),
        }
    }

    /// Stops the container: SIGTERM, the grace period, then SIGKILL.
    async fn stop(&self, name: &str, ctx: &RunContext) {
        let grace = i32::try_from(self.stop_grace.as_secs()).unwrap_or(i32::MAX);
        ctx.logs.note(format!(
            "stopping container {name} ({grace} s grace period)"
        ));
        let options = StopContainerOptions {
            t: Some(grace),
            signal: None,
        };
        let bound = self.stop_grace + Duration::from_secs(30);
        let stopped =
            tokio::time::timeout(bound, self.docker.stop_container(name, Some(options))).await;
        let failure = match stopped {
            Ok(Ok(())) => return,
            Ok(Err(e)) if is_not_found(&e) => return,
            Ok(Err(e)) => engine_message(&e),
            Err(_) => format!("no answer in {} s", bound.as_secs()),
        };
        ctx.logs.note(format!(
            "stopping container {name} failed ({failure}); killing it"
        ));
        if let Err(e) = self
            .docker
            .kill_container(name, None::<KillContainerOptions>)
            .await
            && !is_not_found(&e)
        {
            ctx.logs.note(format!(
                "killing container {name} failed: {}",
                engine_message(&e)
            ));
        }
    }

    /// Removes the container and its anonymous volumes, best effort.
    async fn remove(&self, name: &str, ctx: &RunContext) {
        match self
            .docker
            .remove_container(name, Some(force_remove()))
            .await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                let message = engine_message(&e);
                tracing::warn!(container = name, error = %message, "removing container failed");
                ctx.logs
                    .note(format!("removing container {name} failed: {message}"));
            }
        }
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    /// Every image is a container image to this runtime.
    fn handles(&self, _image: &str) -> bool {
        true
    }

    fn learn_registry_logins(&self, logins: &[(String, RegistryCredentials)]) {
        self.credentials.learn(logins);
    }

    async fn run(&self, spec: &ActionSpec, ctx: &RunContext) -> RunResult {
        let name = spec.instance_name();
        let cancelled = || RunResult {
            outcome: RunOutcome::Cancelled,
            exit_code: None,
            message: "cancelled before the container started".to_string(),
            after: AfterSuccess::Continue,
        };
        if ctx.cancel.is_cancelled() {
            return cancelled();
        }
        // Nothing runs yet: a cancellation just abandons the preparation.
        let plan = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return cancelled(),
            plan = self.plan(spec, ctx, &name) => plan,
        };
        let result = match plan {
            Err(message) => return RunResult::failed(message),
            Ok(Plan::Fresh(image)) => match self.create(spec, ctx, &name, &image).await {
                Ok(()) => self.start_and_follow(&name, ctx).await,
                Err(message) => RunResult::failed(message),
            },
            Ok(Plan::StartExisting) => self.start_and_follow(&name, ctx).await,
            Ok(Plan::Follow) => self.reattach(&name, ctx).await,
            Ok(Plan::Exited(code)) => self.report_exited(&name, ctx, code).await,
        };
        self.remove(&name, ctx).await;
        result
    }
}

/// Forwards a container's output to `sink`, line by line, until the stream
/// ends.
async fn pump_output(
    output: impl tokio_stream::Stream<Item = Result<LogOutput, EngineError>>,
    sink: &LogSink,
) -> Result<(), EngineError> {
    tokio::pin!(output);
    let mut out = LineBuffer::default();
    let mut err = LineBuffer::default();
    let result = loop {
        match output.next().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                out.push(&message, |l| sink.line(Stream::Stdout, l));
            }
            Some(Ok(LogOutput::StdErr { message })) => {
                err.push(&message, |l| sink.line(Stream::Stderr, l));
            }
            Some(Ok(LogOutput::StdIn { .. })) => {}
        }
    };
    out.flush(|l| sink.line(Stream::Stdout, l));
    err.flush(|l| sink.line(Stream::Stderr, l));
    result
}

/// Waits for the container to stop; its exit status.
async fn wait_exit(docker: &Docker, name: &str, sink: &LogSink) -> Result<i64, EngineError> {
    let stream = docker.wait_container(name, None);
    tokio::pin!(stream);
    match stream.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        // bollard reports a non-zero status as an error.
        Some(Err(EngineError::DockerContainerWaitError { error, code })) => {
            if !error.is_empty() {
                sink.note(format!("the engine reported: {error}"));
            }
            Ok(code)
        }
        Some(Err(e)) => Err(e),
        None => Err(EngineError::DockerStreamError {
            error: "the engine ended the wait without an exit status".to_string(),
        }),
    }
}

/// Removal that also stops a running container and drops its anonymous
/// volumes.
fn force_remove() -> RemoveContainerOptions {
    RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    }
}

/// Whether the engine answered 404 (no such container or image).
fn is_not_found(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The engine's own message when it gave one, else the error's text.
fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError {
            message,
            status_code,
        } => {
            let message = message.trim();
            if message.is_empty() {
                format!("HTTP status {status_code}")
            } else {
                message.to_string()
            }
        }
        EngineError::DockerStreamError { error } => error.trim().to_string(),
        EngineError::RequestTimeoutError => "the engine did not answer in time".to_string(),
        EngineError::SocketNotFoundError(path) => format!("no engine socket at {path}"),
        other => other.to_string(),
    }
}

/// The socket path in a docker host setting.
fn socket_path(host: &str) -> Result<String, DockerError> {
    let host = host.trim();
    let path = match host.strip_prefix("unix://") {
        Some(path) => path,
        None if host.contains("://") => return Err(DockerError::UnsupportedHost(host.to_string())),
        None => host,
    };
    if path.is_empty() {
        return Err(DockerError::UnsupportedHost(host.to_string()));
    }
    Ok(path.to_string())
}

/// Bytes as MiB with one decimal.
fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths() {
        assert_eq!(
            socket_path("unix:///run/d.sock").ok().as_deref(),
            Some("/run/d.sock")
        );
        assert_eq!(
            socket_path("/run/d.sock").ok().as_deref(),
            Some("/run/d.sock")
        );
        assert!(matches!(
            socket_path("tcp://1.2.3.4:2375"),
            Err(DockerError::UnsupportedHost(_))
        ));
        assert!(matches!(
            socket_path("unix://"),
            Err(DockerError::UnsupportedHost(_))
        ));
    }

    #[test]
    fn connect_reports_a_missing_socket() {
        let options = DockerOptions {
            host: Some("unix:///nonexistent/bellows-docker.sock".to_string()),
            ..Default::default()
        };
        assert!(matches!(
            DockerRuntime::connect(options),
            Err(DockerError::SocketNotFound(_))
        ));
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(exited(0).outcome, RunOutcome::Success);
        let failed = exited(3);
        assert_eq!(failed.outcome, RunOutcome::Failed);
        assert_eq!(failed.exit_code, Some(3));
        assert_eq!(failed.message, "container exited with status 3");
    }

    #[test]
    fn credentials_are_not_printed() {
        let c = RegistryCredentials {
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
