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

impl Workflow {
    /// A new PENDING workflow from a rendered template.
    pub fn new(
        id: String,
        template_id: String,
        hardware_map: BTreeMap<String, String>,
        hardware_id: Option<String>,
        rendered: String,
        template: &Template,
        now: i64,
    ) -> Workflow {
        let tasks = template
            .tasks
            .iter()
            .map(|t| TaskStatus {
                name: t.name.clone(),
                worker: t.worker.clone(),
                actions: t
                    .actions
                    .iter()
                    .map(|a| ActionStatus {
                        name: a.name.clone(),
                        image: a.image.clone(),
                        timeout: a.timeout,
                        retries: a.retries,
                        attempts: 0,
                        state: State::Pending,
                        started_at: None,
                        stopped_at: None,
                        duration_ms: None,
                        message: None,
                        progress: None,
                        exit_code: None,
                        output: None,
                        history: Vec::new(),
                    })
                    .collect(),
            })
            .collect();
        Workflow {
            id,
            template_id,
            template_name: template.name.clone(),
            hardware_map,
            hardware_id,
            rendered,
            global_timeout: template.global_timeout,
            state: State::Pending,
            message: None,
            tasks,
            created_at: now,
            updated_at: now,
            started_at: None,
            stopped_at: None,
            boot_options: BootOptions::default(),
        }
    }

    /// Whether this transition result is the workflow's first success, when
    /// machines may stop network-booting.
    pub fn just_succeeded(before: &Workflow, after: &Workflow) -> bool {
        before.state != State::Success && after.state == State::Success
    }

    /// The creation event, first in every workflow's log.
    pub fn created_event(&self) -> Event {
        Event {
            at: self.created_at,
            kind: EventKind::Created {
                template_id: self.template_id.clone(),
            },
        }
    }

    /// The first action that has not succeeded: the one to run next (or the
    /// one running now).
    pub fn next_action(&self) -> Option<(&TaskStatus, &ActionStatus)> {
        self.tasks
            .iter()
            .flat_map(|t| t.actions.iter().map(move |a| (t, a)))
            .find(|(_, a)| a.state != State::Success)
    }

    /// Every worker with a task in this workflow, lowercased, without repeats.
    pub fn workers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in &self.tasks {
            let w = t.worker.to_ascii_lowercase();
            if !out.contains(&w) {
                out.push(w);
            }
        }
        out
    }

    /// When the running action must have been reported on, given a grace
    /// period for the worker's own timeout handling; `None` without a limit.
    pub fn action_deadline(&self, grace_ms: i64) -> Option<(&TaskStatus, &ActionStatus, i64)> {
        let (t, a) = self.next_action()?;
        if a.state != State::Running || a.timeout == 0 {
            return None;
        }
        let started = a.started_at?;
        let limit = i64::try_from(a.timeout).unwrap_or(i64::MAX / 2);
        Some((
            t,
            a,
            started
                .saturating_add(limit.saturating_mul(1000))
                .saturating_add(grace_ms),
        ))
    }

    /// When the global timeout expires; `None` without a limit or before the
    /// first action started.
    pub fn global_deadline(&self) -> Option<i64> {
        if self.global_timeout == 0 || self.state != State::Running {
            return None;
        }
        let limit = i64::try_from(self.global_timeout).unwrap_or(i64::MAX / 2);
        Some(self.started_at?.saturating_add(limit.saturating_mul(1000)))
    }

    /// Applies a report, returning the new workflow and the events to log.
    ///
    /// A report that repeats what is already recorded returns the workflow
    /// unchanged and no events.
    pub fn apply(
        &self,
        transition: &Transition,
    ) -> Result<(Workflow, Vec<Event>), TransitionError> {
        if let Some(unchanged) = self.repeated(transition)? {
            return Ok((unchanged, Vec::new()));
        }
        if self.state.is_terminal() {
            return Err(TransitionError::Finished(self.state));
        }
        let mut next = self.clone();
        let mut events = Vec::new();
        match transition {
            Transition::ActionStarted {
                task,
                action,
                worker,
                attempt,
                at,
            } => {
                let (ti, ai) = self.locate(task, action, Some(worker))?;
                let current = &self.tasks[ti].actions[ai];
                if current.state != State::Pending {
                    return Err(TransitionError::BadActionState {
                        action: action.clone(),
                        state: current.state,
                        verb: "start",
                    });
                }
                if let Some((_, expected)) = self.next_action()
                    && !std::ptr::eq(expected, current)
                {
                    return Err(TransitionError::OutOfOrder {
                        action: action.clone(),
                        next: expected.name.clone(),
                    });
                }
                if *attempt != current.attempts + 1 {
                    return Err(TransitionError::WrongAttempt {
                        action: action.clone(),
                        current: current.attempts + 1,
                        got: *attempt,
                    });
                }
                let a = &mut next.tasks[ti].actions[ai];
                a.state = State::Running;
                a.attempts = *attempt;
                a.started_at = Some(*at);
                a.stopped_at = None;
                a.duration_ms = None;
                a.progress = None;
                a.exit_code = None;
                a.output = None;
                events.push(Event {
                    at: *at,
                    kind: EventKind::ActionStarted {
                        task: task.clone(),
                        action: action.clone(),
                        worker: worker.clone(),
                        attempt: *attempt,
                    },
                });
                if next.state == State::Pending {
                    next.state = State::Running;
                    next.started_at = Some(*at);
                    events.push(state_changed(*at, State::Pending, State::Running, None));
                }
                next.updated_at = *at;
            }
            Transition::ActionProgress {
                task,
                action,
                worker,
                attempt,
                message,
                at,
            } => {
                let (ti, ai) = self.locate(task, action, Some(worker))?;
                self.check_running(ti, ai, *attempt, "report progress")?;
                let a = &mut next.tasks[ti].actions[ai];
                a.progress = Some(clip(message, MAX_MESSAGE));
                next.updated_at = *at;
            }
            Transition::ActionFinished {
                task,
                action,
                worker,
                attempt,
                outcome,
                exit_code,
                message,
                output,
                at,
            } => {
                let (ti, ai) = self.locate(task, action, Some(worker))?;
                self.check_running(ti, ai, *attempt, "finish")?;
                next.end_action(
                    ti,
                    ai,
                    *outcome,
                    *exit_code,
                    message.as_deref().map(|m| clip(m, MAX_MESSAGE)),
                    output.as_deref().map(|o| tail(o, MAX_OUTPUT_TAIL)),
                    *at,
                    &mut events,
                );
            }
            Transition::ActionExpired {
                task,
                action,
                attempt,
                at,
            } => {
                let (ti, ai) = self.locate(task, action, None)?;
                self.check_running(ti, ai, *attempt, "expire")?;
                let why = format!(
                    "no report from worker {:?} within the action's timeout of {} s",
                    self.tasks[ti].worker, self.tasks[ti].actions[ai].timeout
                );
                next.end_action(
                    ti,
                    ai,
                    Outcome::Timeout,
                    None,
                    Some(why),
                    None,
                    *at,
                    &mut events,
                );
            }
            Transition::TimedOut { at } => {
                next.stop_running_actions(State::Timeout, "workflow global timeout expired", *at);
                let why = format!("global timeout of {} s expired", self.global_timeout);
                next.finish(State::Timeout, Some(why), *at, &mut events);
                next.updated_at = *at;
            }
            Transition::Cancelled { reason, at } => {
                next.stop_running_actions(State::Cancelled, "workflow cancelled", *at);
                let why = match reason {
                    Some(r) if !r.trim().is_empty() => {
                        format!("cancelled: {}", clip(r.trim(), MAX_MESSAGE))
                    }
                    _ => "cancelled".to_string(),
                };
                next.finish(State::Cancelled, Some(why), *at, &mut events);
                next.updated_at = *at;
            }
        }
        Ok((next, events))
    }

    /// `Some(self)` when the report repeats what is recorded already.
    fn repeated(&self, transition: &Transition) -> Result<Option<Workflow>, TransitionError> {
        let (task, action, attempt, wanted) = match transition {
            Transition::ActionStarted {
                task,
                action,
                attempt,
                ..
            } => (task, action, *attempt, None),
            Transition::ActionFinished {
                task,
                action,
                attempt,
                outcome,
                ..
            } => (task, action, *attempt, Some(State::from(*outcome))),
            _ => return Ok(None),
        };
        let worker = match transition {
            Transition::ActionStarted { worker, .. }
            | Transition::ActionFinished { worker, .. } => worker,
            _ => return Ok(None),
        };
        let Ok((ti, ai)) = self.locate(task, action, Some(worker)) else {
            return Ok(None);
        };
        let a = &self.tasks[ti].actions[ai];
        if attempt == 0 || attempt > a.attempts {
            return Ok(None);
        }
        let recorded = if attempt == a.attempts {
            Some(a.state).filter(|s| *s != State::Pending)
        } else {
            None
        }
        .or_else(|| {
            a.history
                .iter()
                .find(|h| h.attempt == attempt)
                .map(|h| h.state)
        });
        match (wanted, recorded) {
            // A start for an attempt that is known: it already happened.
            (None, Some(_)) => Ok(Some(self.clone())),
            (Some(w), Some(r)) if w == r => Ok(Some(self.clone())),
            (Some(_), Some(State::Running)) => Ok(None),
            (Some(_), Some(_)) if self.state.is_terminal() => {
                Err(TransitionError::Finished(self.state))
            }
            (Some(_), Some(r)) => Err(TransitionError::Contradicts {
                action: action.clone(),
                attempt,
                state: r,
            }),
            (_, None) => Ok(None),
        }
    }

    fn check_running(
        &self,
        ti: usize,
        ai: usize,
        attempt: u32,
        verb: &'static str,
    ) -> Result<(), TransitionError> {
        let a = &self.tasks[ti].actions[ai];
        if a.state != State::Running {
            return Err(TransitionError::BadActionState {
                action: a.name.clone(),
                state: a.state,
                verb,
            });
        }
        if attempt != a.attempts {
            return Err(TransitionError::WrongAttempt {
                action: a.name.clone(),
                current: a.attempts,
                got: attempt,
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn end_action(
        &mut self,
        ti: usize,
        ai: usize,
        outcome: Outcome,
        exit_code: Option<i64>,
        message: Option<String>,
        output: Option<String>,
        at: i64,
        events: &mut Vec<Event>,
    ) {
        let task = self.tasks[ti].name.clone();
        let a = &mut self.tasks[ti].actions[ai];
        let action = a.name.clone();
        let state = State::from(outcome);
        a.state = state;
        a.stopped_at = Some(at);
        a.duration_ms = a.started_at.map(|s| at.saturating_sub(s).max(0));
        a.message = message.clone();
        a.exit_code = exit_code;
        a.output = output;
        a.progress = None;
        events.push(Event {
            at,
            kind: EventKind::ActionFinished {
                task: task.clone(),
                action: action.clone(),
                state,
                message: message.clone(),
                attempt: a.attempts,
                exit_code,
            },
        });
        self.updated_at = at;
        if outcome != Outcome::Success && a.attempts <= a.retries {
            a.history.push(AttemptRecord {
                attempt: a.attempts,
                state,
                started_at: a.started_at,
                stopped_at: at,
                exit_code,
                message: message.clone(),
            });
            a.state = State::Pending;
            events.push(Event {
                at,
                kind: EventKind::ActionRetrying {
                    task,
                    action,
                    next_attempt: a.attempts + 1,
                    of: a.retries + 1,
                },
            });
            return;
        }
        let end = match outcome {
            Outcome::Success if self.next_action().is_none() => Some(State::Success),
            Outcome::Success => None,
            Outcome::Failed => Some(State::Failed),
            Outcome::Timeout => Some(State::Timeout),
        };
        if let Some(end) = end {
            let why = match end {
                State::Success => None,
                _ => Some(format!(
                    "action {action:?} in task {task:?} ended {end}{}",
                    message.map(|m| format!(": {m}")).unwrap_or_default()
                )),
            };
            self.finish(end, why, at, events);
        }
    }

    fn stop_running_actions(&mut self, to: State, why: &str, at: i64) {
        for a in self.tasks.iter_mut().flat_map(|t| t.actions.iter_mut()) {
            if a.state == State::Running {
                a.state = to;
                a.stopped_at = Some(at);
                a.duration_ms = a.started_at.map(|s| at.saturating_sub(s).max(0));
                a.message = Some(why.to_string());
                a.progress = None;
            }
        }
    }

    fn finish(&mut self, to: State, message: Option<String>, at: i64, events: &mut Vec<Event>) {
        events.push(state_changed(at, self.state, to, message.clone()));
        self.state = to;
        self.message = message;
        self.stopped_at = Some(at);
    }

    fn locate(
        &self,
        task: &str,
        action: &str,
        worker: Option<&str>,
    ) -> Result<(usize, usize), TransitionError> {
        let unknown = || TransitionError::UnknownAction {
            task: task.to_string(),
            action: action.to_string(),
        };
        let ti = self
            .tasks
            .iter()
            .position(|t| t.name == task)
            .ok_or_else(unknown)?;
        let t = &self.tasks[ti];
        let ai = t
            .actions
            .iter()
            .position(|a| a.name == action)
            .ok_or_else(unknown)?;
        if let Some(worker) = worker
            && !t.worker.eq_ignore_ascii_case(worker)
        {
            return Err(TransitionError::WrongWorker {
                task: task.to_string(),
                expected: t.worker.clone(),
                got: worker.to_string(),
            });
        }
        Ok((ti, ai))
    }
}

/// At most `max` bytes of `s`, cut at a character boundary: text from
/// workers is bounded before it is stored.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

fn state_changed(at: i64, from: State, to: State, message: Option<String>) -> Event {
    Event {
        at,
        kind: EventKind::StateChanged { from, to, message },
    }
}

#[cfg(test)]
mod tests;
