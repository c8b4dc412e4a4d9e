//! Workflows: a rendered template bound to machines, and its state machine.
//!
//! All transitions are pure functions from a workflow and a report to a new
//! workflow plus the events to append. The store applies them inside one
//! transaction, so the same code decides legality for every backend, and
//! every illegal move is refused with a reason before anything is written.
//!
//! Reports are idempotent: a worker that did not hear the answer to a report
//! sends it again, and a report that matches what is already recorded returns
//! the workflow unchanged (the store then writes nothing). Every report names
//! the attempt it is about, so a late report about an earlier attempt of a
//! retried action can never be mistaken for news about the current one.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::template::Template;

/// Longest action output tail kept on the workflow; the full output lives in
/// the workflow's log.
pub const MAX_OUTPUT_TAIL: usize = 4096;

/// Longest message or progress text kept.
pub const MAX_MESSAGE: usize = 1024;

/// Workflow and action states, as Tinkerbell names them (without `STATE_`),
/// plus `CANCELLED` for a workflow an operator stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Not started.
    Pending,
    /// An action is running.
    Running,
    /// Every action succeeded.
    Success,
    /// An action failed.
    Failed,
    /// A per-action or the global timeout expired.
    Timeout,
    /// An operator cancelled it.
    Cancelled,
}

impl State {
    /// No further transition is possible.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Success | State::Failed | State::Timeout | State::Cancelled
        )
    }

    /// The wire/CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Running => "RUNNING",
            State::Success => "SUCCESS",
            State::Failed => "FAILED",
            State::Timeout => "TIMEOUT",
            State::Cancelled => "CANCELLED",
        }
    }

    /// Every state, in the order a listing shows them.
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Running,
        State::Success,
        State::Failed,
        State::Timeout,
        State::Cancelled,
    ];

    /// Parses the wire spelling (case-insensitive, `STATE_` prefix allowed).
    pub fn parse(s: &str) -> Option<State> {
        let s = s.trim();
        let s = s
            .strip_prefix("STATE_")
            .or_else(|| s.strip_prefix("state_"))
            .unwrap_or(s);
        State::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a finished action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// Exit status 0.
    Success,
    /// Non-zero exit or runtime error.
    Failed,
    /// Ran past its timeout.
    Timeout,
}

impl From<Outcome> for State {
    fn from(o: Outcome) -> State {
        match o {
            Outcome::Success => State::Success,
            Outcome::Failed => State::Failed,
            Outcome::Timeout => State::Timeout,
        }
    }
}

/// A workflow as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// Server-assigned id.
    pub id: String,
    /// The template it was rendered from (the template may since have changed).
    pub template_id: String,
    /// The template's name at creation.
    pub template_name: String,
    /// `device_1` → worker id, as given at creation.
    pub hardware_map: BTreeMap<String, String>,
    /// The hardware record exposed to the template as `.Hardware`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_id: Option<String>,
    /// The template text as rendered at creation; the source of truth for
    /// what runs.
    pub rendered: String,
    /// Seconds the workflow may run; zero for no limit.
    pub global_timeout: u64,
    /// Overall state.
    pub state: State,
    /// Why the workflow ended, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per-task, per-action progress.
    pub tasks: Vec<TaskStatus>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
    /// When the first action started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// When the workflow reached a terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
    /// How the machines get into and out of the workflow.
    #[serde(default, skip_serializing_if = "BootOptions::is_default")]
    pub boot_options: BootOptions,
    /// The operator token that created it, when the API knew one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// How a workflow starts and ends on its machines, as Tinkerbell's
/// `bootOptions`: turn network booting on for the install and off after it,
/// and have Bellows start the machine through its BMC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootOptions {
    /// Set `allow_pxe` on the machines' NICs when the workflow is created,
    /// and clear it when the workflow succeeds, so the next boot is from
    /// disk even before iPXE asks.
    #[serde(
        default,
        alias = "toggleAllowNetboot",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub toggle_allow_netboot: bool,
    /// `netboot`: power-cycle the machine into a network boot through its
    /// BMC as soon as the workflow exists.
    #[serde(default, alias = "bootMode", skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<BootMode>,
    /// With `boot_mode`: network-boot in UEFI mode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub efi: bool,
}

impl BootOptions {
    /// Nothing asked for.
    pub fn is_default(&self) -> bool {
        *self == BootOptions::default()
    }
}

/// How Bellows starts a workflow's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// Power off, next boot from the network once, power on.
    Netboot,
}

/// Progress of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Task name from the template.
    pub name: String,
    /// Rendered worker id.
    pub worker: String,
    /// Actions in run order.
    pub actions: Vec<ActionStatus>,
}

/// Progress of one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionStatus {
    /// Action name from the template.
    pub name: String,
    /// Image (or built-in action) it runs.
    pub image: String,
    /// Seconds allowed; zero for no limit.
    pub timeout: u64,
    /// Extra attempts allowed after a failure or timeout.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Attempts started so far (the current one included).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Current state.
    pub state: State,
    /// Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
    /// `stopped_at - started_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// The worker's last word on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Latest progress line while it runs (e.g. bytes written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Exit status of its process, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Last few KiB of its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Earlier attempts that ended, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptRecord>,
}

/// An attempt of an action that ended and was retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub attempt: u32,
    /// How it ended.
    pub state: State,
    /// Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// Unix milliseconds.
    pub stopped_at: i64,
    /// Exit status, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Something that happened to a workflow; the log is append-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The workflow was created from a template.
    Created {
        /// Template id.
        template_id: String,
        /// The operator token that created it, when the API knew one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A worker started an action.
    ActionStarted {
        /// Task name.
        task: String,
        /// Action name.
        action: String,
        /// Reporting worker.
        worker: String,
        /// 1-based attempt.
        #[serde(default = "one")]
        attempt: u32,
    },
    /// An action ended.
    ActionFinished {
        /// Task name.
        task: String,
        /// Action name.
        action: String,
        /// SUCCESS, FAILED or TIMEOUT.
        state: State,
        /// Worker's message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// 1-based attempt.
        #[serde(default = "one")]
        attempt: u32,
        /// Exit status, when there was one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
    },
    /// A failed or timed-out action will run again.
    ActionRetrying {
        /// Task name.
        task: String,
        /// Action name.
        action: String,
        /// The attempt that comes next.
        next_attempt: u32,
        /// Attempts allowed in all.
        of: u32,
    },
    /// Bellows asked a machine's BMC to network-boot it (boot_mode netboot).
    BootRequested {
        /// Hardware id.
        hardware: String,
        /// Whether the BMC job succeeded.
        ok: bool,
        /// What happened.
        message: String,
    },
    /// The workflow's overall state changed.
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

fn one() -> u32 {
    1
}

impl EventKind {
    /// The `type` the event has on the wire, which the CLI also prints.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Created { .. } => "created",
            EventKind::ActionStarted { .. } => "action_started",
            EventKind::ActionFinished { .. } => "action_finished",
            EventKind::ActionRetrying { .. } => "action_retrying",
            EventKind::BootRequested { .. } => "boot_requested",
            EventKind::StateChanged { .. } => "state_changed",
        }
    }
}

/// An event with its time; the store adds a sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix milliseconds.
    pub at: i64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// A report that may move a workflow forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Transition {
    /// `worker` has started `task`/`action`.
    ActionStarted {
        /// Task name.
        task: String,
        /// Action name.
        action: String,
        /// Reporting worker.
        worker: String,
        /// 1-based attempt, as the server assigned it.
        attempt: u32,
        /// Unix milliseconds.
        at: i64,
    },
    /// `worker` is still running `task`/`action` and says how far it got.
    ActionProgress {
        /// Task name.
        task: String,
        /// Action name.
        action: String,
        /// Reporting worker.
        worker: String,
        /// 1-based attempt.
        attempt: u32,
        /// Human-readable progress.
        message: String,
        /// Unix milliseconds.
        at: i64,
    },
    /// `worker` finished `task`/`action`.
    ActionFinished {
        /// Task name.
        task: String,
        /// Action name.
        action: String,
        /// Reporting worker.
        worker: String,
        /// 1-based attempt.
        attempt: u32,
        /// How it ended.
        outcome: Outcome,
        /// Exit status, when there was one.
        exit_code: Option<i64>,
        /// Worker's message.
        message: Option<String>,
        /// Last lines of output.
        output: Option<String>,
        /// Unix milliseconds.
        at: i64,
    },
    /// The server heard nothing about a running action within its timeout
    /// plus a grace period: the worker is gone or stuck.
    ActionExpired {
        /// Task name.
        task: String,
        /// Action name.
        action: String,
        /// The attempt that expired.
        attempt: u32,
        /// Unix milliseconds.
        at: i64,
    },
    /// The workflow's global timeout expired.
    TimedOut {
        /// Unix milliseconds.
        at: i64,
    },
    /// An operator cancelled the workflow.
    Cancelled {
        /// Why, if they said.
        reason: Option<String>,
        /// The operator token that cancelled it, when the API knew one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Unix milliseconds.
        at: i64,
    },
}

/// Why a transition was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The workflow already ended.
    #[error("workflow is already {0}; no further changes are accepted")]
    Finished(State),
    /// No such task or action in this workflow.
    #[error("workflow has no action {action:?} in task {task:?}")]
    UnknownAction {
        /// Task name given.
        task: String,
        /// Action name given.
        action: String,
    },
    /// The report came from a worker the task is not bound to.
    #[error("task {task:?} belongs to worker {expected:?}, not {got:?}")]
    WrongWorker {
        /// Task name.
        task: String,
        /// Bound worker.
        expected: String,
        /// Reporting worker.
        got: String,
    },
    /// The action is not the next one to run.
    #[error("action {action:?} cannot start: the next action to run is {next:?}")]
    OutOfOrder {
        /// Action given.
        action: String,
        /// The one that must run first.
        next: String,
    },
    /// The action is not in a state that allows this report.
    #[error("action {action:?} is {state}, so it cannot {verb}")]
    BadActionState {
        /// Action name.
        action: String,
        /// Its state.
        state: State,
        /// "start", "finish" or "report progress".
        verb: &'static str,
    },
    /// The report is about another attempt than the current one.
    #[error("action {action:?} is on attempt {current}, not {got}")]
    WrongAttempt {
        /// Action name.
        action: String,
        /// Attempt the server knows.
        current: u32,
        /// Attempt reported.
        got: u32,
    },
    /// The same attempt was already reported with another ending.
    #[error("attempt {attempt} of action {action:?} already ended {state}")]
    Contradicts {
        /// Action name.
        action: String,
        /// Attempt.
        attempt: u32,
        /// What was recorded.
        state: State,
    },
}

pub use transition::clip;

mod transition;

#[cfg(test)]
mod tests;
