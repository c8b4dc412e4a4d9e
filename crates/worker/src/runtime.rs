//! What every way of running an action shares: the action as the worker sees
//! it, where its output goes, and how it ended.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// One action to run, as the server assigned it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionSpec {
    /// Workflow id.
    pub workflow_id: String,
    /// Task name.
    pub task: String,
    /// Action name.
    pub name: String,
    /// Container image, or a built-in action's image name.
    pub image: String,
    /// Command (entrypoint arguments); empty for the image's default.
    pub command: Vec<String>,
    /// Task environment merged with the action's.
    pub environment: BTreeMap<String, String>,
    /// `host:container[:ro]` binds, task volumes first.
    pub volumes: Vec<String>,
    /// `Some("host")` to share the host's PID namespace.
    pub pid: Option<String>,
    /// Time allowed; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Command to run (in the same image) after the final failed attempt.
    pub on_failure: Vec<String>,
    /// Command to run (in the same image) after the final timed-out attempt.
    pub on_timeout: Vec<String>,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// The worker was running this attempt before it lost the server or
    /// restarted: re-attach to it if it still exists.
    pub resume: bool,
}

impl ActionSpec {
    /// A name unique to this attempt, usable as a container name.
    pub fn instance_name(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        format!(
            "bellows-{}-{}-{}-{}",
            clean(&self.workflow_id),
            clean(&self.task),
            clean(&self.name),
            self.attempt
        )
    }

    /// True when no retry follows a failure of this attempt.
    pub fn is_final_attempt(&self) -> bool {
        self.attempt >= self.max_attempts.max(1)
    }
}

/// Where the output of a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// The worker's own notes about the run (pulling, progress, cleanup).
    Worker,
}

impl Stream {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Worker => "worker",
        }
    }
}

/// A line of output with the time it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// Which stream.
    pub stream: Stream,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The text, without its newline.
    pub line: String,
}

/// Bytes of output kept for the final report.
pub const TAIL_BYTES: usize = 4096;

/// Collects an action's output: forwards each line to the server (dropping
/// lines rather than blocking the action when the server is slow) and keeps
/// the tail for the final report. Progress goes through a separate latest-
/// value channel so it is never queued behind output.
#[derive(Clone)]
pub struct LogSink {
    lines: Option<mpsc::Sender<OutputLine>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    progress: Arc<watch::Sender<Option<String>>>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl LogSink {
    /// A sink forwarding to `lines`; read progress from the returned receiver.
    pub fn new(
        lines: Option<mpsc::Sender<OutputLine>>,
    ) -> (LogSink, watch::Receiver<Option<String>>) {
        let (tx, rx) = watch::channel(None);
        (
            LogSink {
                lines,
                tail: Arc::new(Mutex::new(VecDeque::new())),
                progress: Arc::new(tx),
                dropped: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// A sink that only keeps the tail (tests, tools).
    pub fn detached() -> LogSink {
        LogSink::new(None).0
    }

    /// Records one line of output.
    pub fn line(&self, stream: Stream, text: impl Into<String>) {
        let text: String = text.into();
        let text = text.trim_end_matches(['\n', '\r']).to_string();
        if let Ok(mut tail) = self.tail.lock() {
            tail.push_back(text.clone());
            let mut total: usize = tail.iter().map(|l| l.len() + 1).sum();
            while total > TAIL_BYTES && tail.len() > 1 {
                if let Some(old) = tail.pop_front() {
                    total -= old.len() + 1;
                }
            }
        }
        if let Some(tx) = &self.lines {
            let line = OutputLine {
                stream,
                at_ms: now_ms(),
                line: text,
            };
            if tx.try_send(line).is_err() {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// A worker note (shown in the log as stream `worker`).
    pub fn note(&self, text: impl Into<String>) {
        self.line(Stream::Worker, text);
    }

    /// Replaces the action's progress text (e.g. "412 MiB of 2.0 GiB, 20%").
    pub fn progress(&self, text: impl Into<String>) {
        let text = text.into();
        self.progress.send_replace(Some(text));
    }

    /// The last [`TAIL_BYTES`] of output.
    pub fn tail(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Lines that could not be forwarded because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the worker must do after reporting an action's success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSuccess {
    /// Nothing: ask for the next action.
    Continue,
    /// Reboot the machine (once the server has acknowledged the report).
    Reboot,
    /// Power the machine off (once acknowledged).
    PowerOff,
    /// Jump into the kernel the action loaded with `kexec_file_load`
    /// (`reboot(RB_KEXEC)`, `kexec -e`), once acknowledged: the provisioned
    /// OS boots without going through the firmware.
    Kexec,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Exit status 0.
    Success,
    /// Non-zero exit or an error before or while running.
    Failed,
    /// Stopped because its time ran out.
    TimedOut,
    /// Stopped because the workflow was cancelled.
    Cancelled,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// How it ended.
    pub outcome: RunOutcome,
    /// Process exit status, when there was a process.
    pub exit_code: Option<i64>,
    /// One line for the operator: why it failed, or what it did.
    pub message: String,
    /// What to do after a success.
    pub after: AfterSuccess,
}

impl RunResult {
    /// A failure with a message and no exit status.
    pub fn failed(message: impl Into<String>) -> RunResult {
        RunResult {
            outcome: RunOutcome::Failed,
            exit_code: None,
            message: message.into(),
            after: AfterSuccess::Continue,
        }
    }

    /// A success with a message.
    pub fn success(message: impl Into<String>) -> RunResult {
        RunResult {
            outcome: RunOutcome::Success,
            exit_code: Some(0),
            message: message.into(),
            after: AfterSuccess::Continue,
        }
    }
}

/// Everything a runtime gets besides the action.
#[derive(Clone)]
pub struct RunContext {
    /// Per-workflow directory, mounted at `/worker` in containers and shared
    /// by all of the workflow's actions.
    pub work_dir: PathBuf,
    /// Output and progress.
    pub logs: LogSink,
    /// Fires when the action must stop (timeout or cancellation); the
    /// runtime then stops what it started and returns promptly.
    pub cancel: CancellationToken,
}

/// A way of running actions: a container engine, or built-in code.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Short name for logs ("docker", "builtin").
    fn name(&self) -> &'static str;

    /// Whether this runtime runs `image`.
    fn handles(&self, image: &str) -> bool;

    /// Runs the action to its end. Errors of the runtime itself (engine
    /// unreachable, image missing) come back as a [`RunOutcome::Failed`]
    /// result with a message naming the cause, never as a panic. When
    /// `ctx.cancel` fires, stop and return [`RunOutcome::Cancelled`]; the
    /// caller decides whether that was a timeout.
    async fn run(&self, spec: &ActionSpec, ctx: &RunContext) -> RunResult;

    /// Registry logins the server handed this worker (host and
    /// credentials), replacing earlier ones; runtimes that pull use them.
    fn learn_registry_logins(&self, _logins: &[(String, crate::container::RegistryCredentials)]) {}
}

pub use bellows_model::time::now_ms;
