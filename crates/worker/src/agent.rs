//! The worker's main loop: keep a subscription to the server open, run what
//! it assigns, and make sure every report lands.
//!
//! The subscription and the running action are independent: when the server
//! goes away mid-action the action carries on, its reports wait and retry,
//! and the worker re-subscribes saying what it is still running, so the
//! server neither re-runs it nor loses it. A report is retried until the
//! server acknowledges it (the server treats a repeat as already done), and
//! a reboot happens only after the server has acknowledged the SUCCESS that
//! precedes it.
//!
//! Why one file of ~730 lines: the agent is one loop with one state
//! (connection, current action, unacknowledged reports); splitting it would
//! spread that state across modules. Runtimes, built-in actions and facts
//! live elsewhere.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bellows_rpc::WorkerClient;
use bellows_rpc::v1::{
    ActionRef, ActionReport, ActionState, Assignment, LogBatch, LogLine, SubscribeRequest,
    instruction,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::tls::{Dialer, ServerTrust};

use crate::container::RegistryCredentials;
use crate::runtime::{
    ActionSpec, AfterSuccess, LogSink, OutputLine, RunContext, RunOutcome, RunResult, Runtime,
    now_ms,
};

/// What to do when an action asks for a reboot or power-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerMode {
    /// `sync` then reboot(2)/poweroff (or `RB_KEXEC` into the kernel a
    /// `kexec` action loaded): the in-memory OS.
    Syscall,
    /// Run this program (`systemctl reboot`, `reboot`); a kexec runs
    /// `kexec -e` instead.
    Command(Vec<String>),
    /// Exit the worker with [`Exit::Reboot`]/[`Exit::PowerOff`]/
    /// [`Exit::Kexec`] and let the caller decide (tests, supervisors).
    Exit,
}

/// Why [`Agent::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (signal).
    Stopped,
    /// An action asked for a reboot (or discovery found the machine
    /// enrolled), in [`PowerMode::Exit`].
    Reboot,
    /// An action asked for a power-off, in [`PowerMode::Exit`].
    PowerOff,
    /// An action loaded a kernel to kexec into, in [`PowerMode::Exit`]
    /// (the caller runs `kexec -e`).
    Kexec,
}

/// How the worker is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server URLs, `https://host:port` (the HTTP boot listener or the
    /// API): one, or the replicas sharing one database, tried in turn.
    pub servers: Vec<String>,
    /// Worker id: by default the boot NIC's MAC.
    pub worker_id: String,
    /// Per-workflow directories (`<root>/<workflow id>`) live here.
    pub work_root: PathBuf,
    /// Reboot handling.
    pub power: PowerMode,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Report machine facts when subscribing.
    pub send_facts: bool,
    /// Sent as `authorization: Bearer` on every call: the machine's
    /// per-boot credential (`bellows.token=`), or an operator token for a
    /// worker on an ordinary host.
    pub token: Option<String>,
    /// How an `https://` server is checked: the pinned CA of
    /// `bellows.ca=` on the in-memory OS.
    pub trust: ServerTrust,
}

/// The client every call goes through: it adds the bearer credential.
pub(crate) type Client = WorkerClient<InterceptedService<Channel, Bearer>>;

/// The servers this worker may talk to, in order, and the one it talks to
/// now. Replicas sharing one database are interchangeable: when the
/// current one stops answering, the worker moves to the next and carries
/// on as after a reconnection (a report in flight is retried there).
///
/// Shared with discovery (`crate::discovery`), which talks to the same
/// servers with the same credential.
pub(crate) struct Servers {
    urls: Vec<String>,
    /// One lazily connected channel per server (tonic reconnects each).
    channels: Vec<Channel>,
    current: std::sync::atomic::AtomicUsize,
    bearer: Bearer,
}

impl Servers {
    /// Lazy channels to every server of `config` (TLS checked by its
    /// trust) and its bearer credential; nothing is dialled yet.
    pub(crate) fn connect(config: &AgentConfig) -> Result<Servers, AgentError> {
        if config.servers.is_empty() {
            return Err(AgentError::BadServer {
                url: String::new(),
                message: "no server given".into(),
            });
        }
        let mut channels = Vec::new();
        for url in &config.servers {
            let bad = |e: &dyn std::fmt::Display| AgentError::BadServer {
                url: url.clone(),
                message: e.to_string(),
            };
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| bad(&e))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20))
                .keep_alive_while_idle(true);
            let dialer = Dialer::new(endpoint, &config.trust).map_err(|e| bad(&e))?;
            channels.push(dialer.lazy());
        }
        let bearer = match config.token.as_deref().map(str::trim) {
            None | Some("") => Bearer(None),
            Some(token) => Bearer(Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| AgentError::BadToken)?,
            )),
        };
        Ok(Servers {
            urls: config.servers.clone(),
            channels,
            current: Default::default(),
            bearer,
        })
    }

    fn index(&self) -> usize {
        self.current.load(std::sync::atomic::Ordering::Relaxed) % self.channels.len()
    }

    /// A client for the current server; every call (and every retry of
    /// one) asks again, so a retry after a fail-over goes to the new one.
    pub(crate) fn client(&self) -> Client {
        WorkerClient::with_interceptor(self.channels[self.index()].clone(), self.bearer.clone())
    }

    /// The current server's URL, for messages.
    pub(crate) fn url(&self) -> &str {
        &self.urls[self.index()]
    }

    /// Moves to the next server, when there is another.
    pub(crate) fn fail_over(&self) {
        if self.channels.len() > 1 {
            self.current
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(server = %self.url(), "trying the next server");
        }
    }
}

/// Adds `authorization: Bearer TOKEN` to each call, when there is a token.
#[derive(Clone)]
pub(crate) struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// Errors that stop the agent before it starts.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server URL cannot be used.
    #[error("server URL {url:?} is not usable: {message}")]
    BadServer {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// No runtime at all.
    #[error("no action runtime is available")]
    NoRuntime,
    /// The token cannot be sent in a header.
    #[error("the token has characters that cannot go in a header")]
    BadToken,
}

/// The worker agent.
pub struct Agent {
    config: AgentConfig,
    runtimes: Vec<Arc<dyn Runtime>>,
    servers: Arc<Servers>,
}

/// The action in hand, shared by the subscription loop and the action task.
#[derive(Default)]
struct Current {
    running: Option<(ActionRef, CancellationToken, Arc<Mutex<StopReason>>)>,
    /// The next assignment, when the server pushed it before this worker
    /// had finished with the previous action (the push can overtake the
    /// answer to the final report).
    queued: Option<Assignment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    None,
    Cancelled,
}

/// Per-call deadline for unary calls.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines per log batch, and how long a partial batch may wait.
const LOG_BATCH: usize = 500;
const LOG_FLUSH: Duration = Duration::from_millis(250);
/// Progress reports at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Time allowed for on-failure / on-timeout commands.
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

impl Agent {
    /// An agent running actions through `runtimes`, tried in order: the
    /// first whose [`Runtime::handles`] accepts the image runs it.
    pub fn new(config: AgentConfig, runtimes: Vec<Arc<dyn Runtime>>) -> Result<Agent, AgentError> {
        if runtimes.is_empty() {
            return Err(AgentError::NoRuntime);
        }
        Ok(Agent {
            servers: Arc::new(Servers::connect(&config)?),
            config,
            runtimes,
        })
    }

    /// Runs until `stop` is cancelled, or an action's reboot in
    /// [`PowerMode::Exit`]. Never returns because the server went away.
    pub async fn run(self, stop: CancellationToken) -> Exit {
        let agent = Arc::new(self);
        let current: Arc<Mutex<Current>> = Arc::default();
        let (exit_tx, mut exit_rx) = watch::channel::<Option<Exit>>(None);
        let mut backoff = Duration::from_millis(250);
        loop {
            if stop.is_cancelled() {
                return Exit::Stopped;
            }
            if let Some(exit) = *exit_rx.borrow() {
                return exit;
            }
            let session = agent.clone().session(current.clone(), exit_tx.clone());
            tokio::select! {
                _ = stop.cancelled() => {
                    if let Some((_, token, _)) = current.lock().ok().and_then(|c| c.running.clone()) {
                        token.cancel();
                    }
                    return Exit::Stopped;
                }
                changed = exit_rx.changed() => {
                    if changed.is_ok() && let Some(exit) = *exit_rx.borrow() {
                        return exit;
                    }
                }
                result = session => match result {
                    Ok(()) => {
                        tracing::info!("server closed the stream; reconnecting");
                        backoff = Duration::from_millis(250);
                    }
                    Err(status) if matches!(
                        status.code(),
                        Code::Unauthenticated | Code::PermissionDenied
                    ) => {
                        // Not a network fault: say so, the operator must act
                        // (a new boot, a token, the address binding).
                        tracing::warn!(
                            "server {} refused this worker's credential: {}; retrying in {:?}",
                            agent.servers.url(),
                            status.message(),
                            backoff
                        );
                        agent.servers.fail_over();
                    }
                    Err(status) => {
                        tracing::warn!(
                            "server {} unreachable ({}: {}); retrying in {:?}",
                            agent.servers.url(),
                            status.code(),
                            status.message(),
                            backoff
                        );
                        agent.servers.fail_over();
                    }
                },
            }
            tokio::select! {
                _ = stop.cancelled() => return Exit::Stopped,
                _ = tokio::time::sleep(jitter(backoff)) => {}
            }
            backoff = (backoff * 2).min(agent.config.max_backoff);
        }
    }

    /// One subscription: returns when the stream ends.
    async fn session(
        self: Arc<Self>,
        current: Arc<Mutex<Current>>,
        exit: watch::Sender<Option<Exit>>,
    ) -> Result<(), tonic::Status> {
        let mut client = self.servers.client();
        let running = current
            .lock()
            .ok()
            .and_then(|c| c.running.as_ref().map(|(r, _, _)| r.clone()));
        let facts = if self.config.send_facts {
            tokio::task::spawn_blocking(crate::facts::collect)
                .await
                .ok()
        } else {
            None
        };
        let request = SubscribeRequest {
            worker_id: self.config.worker_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            facts,
            running,
        };
        let mut stream = client.subscribe(request).await?.into_inner();
        tracing::info!(server = %self.servers.url(), worker = %self.config.worker_id, "subscribed");
        while let Some(msg) = stream.message().await? {
            match msg.kind {
                Some(instruction::Kind::Run(assignment)) => {
                    self.clone()
                        .accept(assignment, current.clone(), exit.clone());
                }
                Some(instruction::Kind::Cancel(r)) => {
                    if let Ok(c) = current.lock()
                        && let Some((cur, token, reason)) = &c.running
                        && *cur == r
                    {
                        tracing::info!(action = %r.action, workflow = %r.workflow_id, "server cancelled the action");
                        if let Ok(mut why) = reason.lock() {
                            *why = StopReason::Cancelled;
                        }
                        token.cancel();
                    }
                }
                Some(instruction::Kind::Hello(h)) => {
                    tracing::debug!(hardware = %h.hardware_id, "server hello");
                    let logins: Vec<(String, RegistryCredentials)> = h
                        .registries
                        .into_iter()
                        .map(|l| {
                            (
                                l.host,
                                RegistryCredentials {
                                    username: l.username,
                                    password: l.password,
                                },
                            )
                        })
                        .collect();
                    if !logins.is_empty() {
                        let hosts: Vec<&str> = logins.iter().map(|(h, _)| h.as_str()).collect();
                        tracing::info!("registry logins from the server for {}", hosts.join(", "));
                    }
                    for runtime in &self.runtimes {
                        runtime.learn_registry_logins(&logins);
                    }
                }
                None => {} // keep-alive
            }
        }
        Ok(())
    }

    /// Starts an assigned action unless it is the one already running.
    fn accept(
        self: Arc<Self>,
        assignment: Assignment,
        current: Arc<Mutex<Current>>,
        exit: watch::Sender<Option<Exit>>,
    ) {
        let Some(r) = assignment.r#ref.clone() else {
            tracing::warn!("assignment without a reference ignored");
            return;
        };
        let token = CancellationToken::new();
        let reason = Arc::new(Mutex::new(StopReason::None));
        {
            let Ok(mut c) = current.lock() else { return };
            if let Some((running, _, _)) = &c.running {
                if *running != r {
                    tracing::info!(
                        running = %running.action,
                        assigned = %r.action,
                        "assignment queued until the running action ends"
                    );
                    c.queued = Some(assignment);
                }
                return;
            }
            c.running = Some((r.clone(), token.clone(), reason.clone()));
        }
        tokio::spawn(async move {
            let after = self.execute(assignment, r.clone(), token, reason).await;
            let queued = match current.lock() {
                Ok(mut c) => {
                    if c.running.as_ref().is_some_and(|(cur, _, _)| *cur == r) {
                        c.running = None;
                    }
                    c.queued.take().filter(|q| q.r#ref.as_ref() != Some(&r))
                }
                Err(_) => None,
            };
            if let Some(after) = after {
                self.power(after, &exit).await;
            } else if let Some(next) = queued {
                self.accept(next, current, exit);
            }
        });
    }

    /// Runs one action through its reports; returns a power action to take
    /// once everything is acknowledged.
    async fn execute(
        &self,
        assignment: Assignment,
        r: ActionRef,
        token: CancellationToken,
        reason: Arc<Mutex<StopReason>>,
    ) -> Option<AfterSuccess> {
        let spec = spec_from(&assignment, &r);
        let servers = &self.servers;
        let report = |state: ActionState| ActionReport {
            worker_id: self.config.worker_id.clone(),
            r#ref: Some(r.clone()),
            state: state as i32,
            started_at_ms: now_ms(),
            ..Default::default()
        };
        // The start must be on record before anything runs.
        if let Err(status) = deliver(servers, report(ActionState::Running), &token).await {
            tracing::warn!(action = %r.action, "not starting: {}", status.message());
            return None;
        }
        let (log_tx, log_rx) = mpsc::channel::<OutputLine>(4096);
        let (sink, progress_rx) = LogSink::new(Some(log_tx));
        let forwarder = tokio::spawn(forward_logs(
            servers.clone(),
            self.config.worker_id.clone(),
            r.clone(),
            log_rx,
        ));
        let progress = tokio::spawn(forward_progress(
            servers.clone(),
            self.config.worker_id.clone(),
            r.clone(),
            progress_rx,
        ));
        let work_dir = self.config.work_root.join(sanitize(&r.workflow_id));
        if let Err(e) = tokio::fs::create_dir_all(&work_dir).await {
            sink.note(format!("cannot create {}: {e}", work_dir.display()));
        }
        let ctx = RunContext {
            work_dir,
            logs: sink.clone(),
            cancel: token.clone(),
        };
        let runtime = self.runtime_for(&spec.image);
        tracing::info!(
            workflow = %r.workflow_id,
            task = %r.task,
            action = %r.action,
            attempt = r.attempt,
            image = %spec.image,
            runtime = runtime.name(),
            "running action"
        );
        sink.note(format!(
            "running {} (image {}, attempt {} of {}) with the {} runtime",
            spec.name,
            spec.image,
            spec.attempt,
            spec.max_attempts,
            runtime.name()
        ));
        let started = std::time::Instant::now();
        let mut result = run_bounded(runtime.as_ref(), &spec, &ctx, spec.timeout).await;
        let cancelled = reason
            .lock()
            .map(|r| *r == StopReason::Cancelled)
            .unwrap_or(false);
        let hook = match result.outcome {
            RunOutcome::Failed if !spec.on_failure.is_empty() => {
                Some(("on-failure", spec.on_failure.clone()))
            }
            RunOutcome::TimedOut if !spec.on_timeout.is_empty() => {
                Some(("on-timeout", spec.on_timeout.clone()))
            }
            _ => None,
        };
        if let Some((label, command)) = hook.filter(|_| spec.is_final_attempt() && !cancelled) {
            sink.note(format!(
                "running the {label} command: {}",
                command.join(" ")
            ));
            let mut hook_spec = spec.clone();
            hook_spec.name = format!("{}.{label}", spec.name);
            hook_spec.command = command;
            hook_spec.resume = false;
            let hook_ctx = RunContext {
                cancel: CancellationToken::new(),
                ..ctx.clone()
            };
            let hook_result =
                run_bounded(runtime.as_ref(), &hook_spec, &hook_ctx, Some(HOOK_TIMEOUT)).await;
            sink.note(format!(
                "{label} command ended {:?}{}",
                hook_result.outcome,
                if hook_result.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", hook_result.message)
                }
            ));
            result.message = format!("{} ({label} command ran)", result.message);
        }
        sink.note(format!(
            "{} ended {:?} after {:.1} s{}",
            spec.name,
            result.outcome,
            started.elapsed().as_secs_f64(),
            if result.message.is_empty() {
                String::new()
            } else {
                format!(": {}", result.message)
            }
        ));
        progress.abort();
        // Let the output reach the server before the final report, so
        // `workflow logs` is complete when the workflow ends.
        drop(ctx);
        drop(sink.clone());
        let tail = sink.tail();
        drop(sink);
        let _ = tokio::time::timeout(Duration::from_secs(10), forwarder).await;
        if cancelled {
            return None;
        }
        let state = match result.outcome {
            RunOutcome::Success => ActionState::Success,
            RunOutcome::Failed | RunOutcome::Cancelled => ActionState::Failed,
            RunOutcome::TimedOut => ActionState::Timeout,
        };
        let final_report = ActionReport {
            stopped_at_ms: now_ms(),
            exit_code: result.exit_code,
            message: result.message.clone(),
            output_tail: tail,
            ..report(state)
        };
        // Never give up on a final report because of `token`: it is the
        // action's own token and may have fired for a timeout.
        match deliver(servers, final_report, &CancellationToken::new()).await {
            Ok(()) => {}
            Err(status) => {
                tracing::warn!(action = %r.action, "report refused: {}", status.message());
                return None;
            }
        }
        (result.outcome == RunOutcome::Success && result.after != AfterSuccess::Continue)
            .then_some(result.after)
    }

    fn runtime_for(&self, image: &str) -> Arc<dyn Runtime> {
        self.runtimes
            .iter()
            .find(|r| r.handles(image))
            .cloned()
            .unwrap_or_else(|| Arc::new(Unsupported))
    }

    async fn power(&self, after: AfterSuccess, exit: &watch::Sender<Option<Exit>>) {
        if after != AfterSuccess::Continue {
            tracing::info!("the server acknowledged; {} now", power_word(after));
        }
        if let Some(code) = take_power_action(&self.config.power, after).await {
            let _ = exit.send(Some(code));
        }
    }
}

/// What `after` is called in messages.
fn power_word(after: AfterSuccess) -> &'static str {
    match after {
        AfterSuccess::Continue => "continue",
        AfterSuccess::Reboot => "reboot",
        AfterSuccess::PowerOff => "power off",
        AfterSuccess::Kexec => "kexec",
    }
}

/// Reboots, powers off or kexecs the way `mode` says; shared with
/// discovery, which reboots once enrolled. Returns the exit for the caller
/// to return in [`PowerMode::Exit`]; otherwise `None`, once the command
/// ran or the system call failed (both logged).
pub(crate) async fn take_power_action(mode: &PowerMode, after: AfterSuccess) -> Option<Exit> {
    let what = power_word(after);
    let exit_code = match after {
        AfterSuccess::Continue => return None,
        AfterSuccess::Reboot => Exit::Reboot,
        AfterSuccess::PowerOff => Exit::PowerOff,
        AfterSuccess::Kexec => Exit::Kexec,
    };
    match mode {
        PowerMode::Exit => return Some(exit_code),
        PowerMode::Command(cmd) => {
            // The loaded kernel is started by kexec-tools, whatever
            // command reboots.
            let kexec = ["kexec".to_string(), "-e".to_string()];
            let cmd: &[String] = if after == AfterSuccess::Kexec {
                &kexec
            } else {
                cmd
            };
            let (prog, args) = cmd.split_first()?;
            match tokio::process::Command::new(prog).args(args).status().await {
                Ok(s) if s.success() => {}
                Ok(s) => tracing::error!("{what} command {cmd:?} exited {s}"),
                Err(e) => tracing::error!("{what} command {cmd:?} failed: {e}"),
            }
        }
        PowerMode::Syscall => {
            nix::unistd::sync();
            let mode = match after {
                AfterSuccess::PowerOff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
                AfterSuccess::Kexec => nix::sys::reboot::RebootMode::RB_KEXEC,
                _ => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
            };
            // Returns only on failure.
            let Err(e) = nix::sys::reboot::reboot(mode);
            tracing::error!("{what} failed: {e} (is the worker root?)");
        }
    }
    None
}

/// Runs `spec` with its time limit: on expiry, cancels the runtime and waits
/// for it to clean up.
async fn run_bounded(
    runtime: &dyn Runtime,
    spec: &ActionSpec,
    ctx: &RunContext,
    limit: Option<Duration>,
) -> RunResult {
    let Some(limit) = limit else {
        return runtime.run(spec, ctx).await;
    };
    let run = runtime.run(spec, ctx);
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r,
        _ = tokio::time::sleep(limit) => {
            ctx.logs.note(format!("timeout of {} s reached; stopping", limit.as_secs()));
            ctx.cancel.cancel();
            let mut r = run.await;
            if r.outcome == RunOutcome::Cancelled || r.outcome == RunOutcome::Failed {
                r.outcome = RunOutcome::TimedOut;
                r.message = format!("timed out after {} s", limit.as_secs());
            }
            r
        }
    }
}

/// Sends a report until the server acknowledges it. Refusals that a retry
/// cannot change (the workflow ended, the action is not ours) end the
/// attempt with the server's status; so does `give_up`.
async fn deliver(
    servers: &Servers,
    report: ActionReport,
    give_up: &CancellationToken,
) -> Result<(), tonic::Status> {
    let mut wait = Duration::from_millis(200);
    loop {
        let mut c = servers.client();
        let mut req = tonic::Request::new(report.clone());
        req.set_timeout(CALL_TIMEOUT);
        match c.report_action(req).await {
            Ok(_) => return Ok(()),
            Err(s)
                if matches!(
                    s.code(),
                    Code::FailedPrecondition
                        | Code::NotFound
                        | Code::PermissionDenied
                        | Code::InvalidArgument
                ) =>
            {
                return Err(s);
            }
            Err(s) => {
                tracing::debug!("report not delivered yet ({}): retrying", s.message());
            }
        }
        tokio::select! {
            _ = give_up.cancelled() => return Err(tonic::Status::cancelled("stopped")),
            _ = tokio::time::sleep(jitter(wait)) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Batches output lines to the server. Lines are dropped (with a count)
/// only if the server refuses them or stays away for long.
async fn forward_logs(
    servers: Arc<Servers>,
    worker_id: String,
    r: ActionRef,
    mut rx: mpsc::Receiver<OutputLine>,
) {
    let mut batch: Vec<LogLine> = Vec::new();
    let mut open = true;
    while open || !batch.is_empty() {
        if open {
            let deadline = tokio::time::sleep(LOG_FLUSH);
            tokio::pin!(deadline);
            while batch.len() < LOG_BATCH {
                tokio::select! {
                    line = rx.recv() => match line {
                        Some(l) => batch.push(LogLine {
                            r#ref: Some(r.clone()),
                            stream: l.stream.as_str().to_string(),
                            at_ms: l.at_ms,
                            line: l.line,
                        }),
                        None => { open = false; break; }
                    },
                    _ = &mut deadline => break,
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let lines = std::mem::take(&mut batch);
        let mut sent = false;
        for attempt in 0..5u32 {
            let mut c = servers.client();
            let mut req = tonic::Request::new(LogBatch {
                worker_id: worker_id.clone(),
                lines: lines.clone(),
            });
            req.set_timeout(CALL_TIMEOUT);
            match c.send_logs(req).await {
                Ok(_) => {
                    sent = true;
                    break;
                }
                Err(s) if s.code() == Code::Unavailable || s.code() == Code::DeadlineExceeded => {
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                Err(s) => {
                    tracing::warn!("log lines refused: {}", s.message());
                    break;
                }
            }
        }
        if !sent {
            tracing::warn!("{} log lines could not be delivered", lines.len());
        }
    }
}

/// Sends the latest progress text at most once per [`PROGRESS_EVERY`].
async fn forward_progress(
    servers: Arc<Servers>,
    worker_id: String,
    r: ActionRef,
    mut rx: watch::Receiver<Option<String>>,
) {
    while rx.changed().await.is_ok() {
        let Some(text) = rx.borrow_and_update().clone() else {
            continue;
        };
        let mut c = servers.client();
        let mut req = tonic::Request::new(ActionReport {
            worker_id: worker_id.clone(),
            r#ref: Some(r.clone()),
            state: ActionState::Running as i32,
            progress: text,
            ..Default::default()
        });
        req.set_timeout(CALL_TIMEOUT);
        // Best effort: a lost progress line is replaced by the next one.
        let _ = c.report_action(req).await;
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
}

/// The runtime-independent action description from an assignment.
pub fn spec_from(a: &Assignment, r: &ActionRef) -> ActionSpec {
    let s = a.spec.clone().unwrap_or_default();
    ActionSpec {
        workflow_id: r.workflow_id.clone(),
        task: r.task.clone(),
        name: r.action.clone(),
        image: s.image,
        command: s.command,
        environment: s.environment.into_iter().collect(),
        volumes: s.volumes,
        pid: Some(s.pid).filter(|p| !p.is_empty()),
        timeout: (s.timeout_seconds > 0).then(|| Duration::from_secs(s.timeout_seconds)),
        on_failure: s.on_failure,
        on_timeout: s.on_timeout,
        attempt: r.attempt,
        max_attempts: a.max_attempts.max(1),
        resume: a.resume,
    }
}

/// Workflow ids become directory names: keep them to a safe alphabet.
fn sanitize(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

/// ±25 % so a rack of workers does not reconnect in lock-step.
pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(factor)
}

/// Stands in when no runtime accepts an image, so the failure is reported
/// with a reason instead of hanging.
struct Unsupported;

#[async_trait::async_trait]
impl Runtime for Unsupported {
    fn name(&self) -> &'static str {
        "none"
    }
    fn handles(&self, _image: &str) -> bool {
        true
    }
    async fn run(&self, spec: &ActionSpec, _ctx: &RunContext) -> RunResult {
        RunResult::failed(format!(
            "no runtime on this machine runs image {:?}: it has no container engine and the image is not a built-in action",
            spec.image
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_specs() {
        assert_eq!(sanitize("../etc"), "___etc");
        let a = Assignment {
            r#ref: None,
            max_attempts: 0,
            resume: true,
            spec: Some(bellows_rpc::v1::ActionSpec {
                image: "img".into(),
                timeout_seconds: 0,
                pid: String::new(),
                ..Default::default()
            }),
        };
        let r = ActionRef {
            workflow_id: "w".into(),
            task: "t".into(),
            action: "a".into(),
            attempt: 2,
        };
        let s = spec_from(&a, &r);
        assert_eq!(
            (s.timeout, s.pid.clone(), s.max_attempts, s.resume),
            (None, None, 1, true)
        );
        assert!(s.is_final_attempt());
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(4));
            assert!(j >= Duration::from_secs(3) && j <= Duration::from_secs(5));
        }
    }
}

/// A runtime limited to the images `accept` allows: lets built-in actions
/// take `bellows/*` images ahead of a container engine, while the engine
/// keeps Tinkerbell's own action images.
pub struct Only {
    inner: Arc<dyn Runtime>,
    accept: fn(&str) -> bool,
}

impl Only {
    /// `inner`, for images `accept` allows.
    pub fn new(inner: Arc<dyn Runtime>, accept: fn(&str) -> bool) -> Only {
        Only { inner, accept }
    }
}

#[async_trait::async_trait]
impl Runtime for Only {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn handles(&self, image: &str) -> bool {
        (self.accept)(image) && self.inner.handles(image)
    }
    async fn run(&self, spec: &ActionSpec, ctx: &RunContext) -> RunResult {
        self.inner.run(spec, ctx).await
    }
    fn learn_registry_logins(&self, logins: &[(String, RegistryCredentials)]) {
        self.inner.learn_registry_logins(logins);
    }
}

/// True for images a built-in runs: `bellows/...`, and Tinkerbell's
/// action images of a built-in's name ([`crate::builtin::builtin_for`]).
pub fn has_builtin(image: &str) -> bool {
    is_bellows_image(image) || crate::builtin::builtin_for(image).is_some()
}

/// True for images named `bellows/...`: always built-in.
pub fn is_bellows_image(image: &str) -> bool {
    image.trim().to_ascii_lowercase().starts_with("bellows/")
}

#[cfg(test)]
mod cmdline_tests {
    use super::*;

    #[test]
    fn bellows_images_are_built_in() {
        assert!(is_bellows_image("bellows/image2disk:latest"));
        assert!(!is_bellows_image("quay.io/tinkerbell/actions/image2disk"));
    }
}
