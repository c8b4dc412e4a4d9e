//! Workflows: a rendered template bound to machines, and its state machine.
//!
//! All transitions are pure functions from a workflow and a report to a new
//! workflow plus the events to append. The store applies them inside one
//! transaction, so the same code decides legality for every backend, and
//! every illegal move is refused with a reason before anything is written.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::template::Template;

/// Workflow and action states, as Tinkerbell names them (without `STATE_`).
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
}

impl State {
    /// No further transition is possible.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Success | State::Failed | State::Timeout)
    }

    /// The wire/CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Running => "RUNNING",
            State::Success => "SUCCESS",
            State::Failed => "FAILED",
            State::Timeout => "TIMEOUT",
        }
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
        /// How it ended.
        outcome: Outcome,
        /// Worker's message.
        message: Option<String>,
        /// Unix milliseconds.
        at: i64,
    },
    /// The workflow's global timeout expired.
    TimedOut {
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
        /// "start" or "finish".
        verb: &'static str,
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
                        state: State::Pending,
                        started_at: None,
                        stopped_at: None,
                        duration_ms: None,
                        message: None,
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
        }
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

    /// The first action that has not succeeded: the one to run next.
    pub fn next_action(&self) -> Option<(&TaskStatus, &ActionStatus)> {
        self.tasks
            .iter()
            .flat_map(|t| t.actions.iter().map(move |a| (t, a)))
            .find(|(_, a)| a.state != State::Success)
    }

    /// Applies a report, returning the new workflow and the events to log.
    pub fn apply(
        &self,
        transition: &Transition,
    ) -> Result<(Workflow, Vec<Event>), TransitionError> {
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
                at,
            } => {
                let (ti, ai) = self.locate(task, action, worker)?;
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
                let a = &mut next.tasks[ti].actions[ai];
                a.state = State::Running;
                a.started_at = Some(*at);
                events.push(Event {
                    at: *at,
                    kind: EventKind::ActionStarted {
                        task: task.clone(),
                        action: action.clone(),
                        worker: worker.clone(),
                    },
                });
                if next.state == State::Pending {
                    next.state = State::Running;
                    next.started_at = Some(*at);
                    events.push(state_changed(*at, State::Pending, State::Running, None));
                }
                next.updated_at = *at;
            }
            Transition::ActionFinished {
                task,
                action,
                worker,
                outcome,
                message,
                at,
            } => {
                let (ti, ai) = self.locate(task, action, worker)?;
                let current = &self.tasks[ti].actions[ai];
                if current.state != State::Running {
                    return Err(TransitionError::BadActionState {
                        action: action.clone(),
                        state: current.state,
                        verb: "finish",
                    });
                }
                let a = &mut next.tasks[ti].actions[ai];
                a.state = (*outcome).into();
                a.stopped_at = Some(*at);
                a.duration_ms = a.started_at.map(|s| at.saturating_sub(s).max(0));
                a.message = message.clone();
                events.push(Event {
                    at: *at,
                    kind: EventKind::ActionFinished {
                        task: task.clone(),
                        action: action.clone(),
                        state: (*outcome).into(),
                        message: message.clone(),
                    },
                });
                let end = match outcome {
                    Outcome::Success if next.next_action().is_none() => Some(State::Success),
                    Outcome::Success => None,
                    Outcome::Failed => Some(State::Failed),
                    Outcome::Timeout => Some(State::Timeout),
                };
                if let Some(end) = end {
                    let why = match end {
                        State::Success => None,
                        _ => Some(format!(
                            "action {action:?} in task {task:?} ended {end}{}",
                            message
                                .as_deref()
                                .map(|m| format!(": {m}"))
                                .unwrap_or_default()
                        )),
                    };
                    next.finish(end, why, *at, &mut events);
                }
                next.updated_at = *at;
            }
            Transition::TimedOut { at } => {
                for a in next.tasks.iter_mut().flat_map(|t| t.actions.iter_mut()) {
                    if a.state == State::Running {
                        a.state = State::Timeout;
                        a.stopped_at = Some(*at);
                        a.duration_ms = a.started_at.map(|s| at.saturating_sub(s).max(0));
                        a.message = Some("workflow global timeout expired".into());
                    }
                }
                let why = format!("global timeout of {} s expired", self.global_timeout);
                next.finish(State::Timeout, Some(why), *at, &mut events);
                next.updated_at = *at;
            }
        }
        Ok((next, events))
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
        worker: &str,
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
        if !t.worker.eq_ignore_ascii_case(worker) {
            return Err(TransitionError::WrongWorker {
                task: task.to_string(),
                expected: t.worker.clone(),
                got: worker.to_string(),
            });
        }
        Ok((ti, ai))
    }
}

fn state_changed(at: i64, from: State, to: State, message: Option<String>) -> Event {
    Event {
        at,
        kind: EventKind::StateChanged { from, to, message },
    }
}

#[cfg(test)]
mod tests;
