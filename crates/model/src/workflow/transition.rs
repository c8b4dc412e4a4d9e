//! The workflow state machine: every report a worker or operator makes,
//! applied as a pure function from a workflow to a new workflow and the
//! events to append (see the module above for the rules it keeps).

use std::collections::BTreeMap;

use super::*;

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
            created_by: None,
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
                by: self.created_by.clone(),
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
            Transition::Cancelled { reason, by, at } => {
                next.stop_running_actions(State::Cancelled, "workflow cancelled", *at);
                let who = by
                    .as_deref()
                    .map(|b| format!(" by {}", clip(b, 64)))
                    .unwrap_or_default();
                let why = match reason {
                    Some(r) if !r.trim().is_empty() => {
                        format!("cancelled{who}: {}", clip(r.trim(), MAX_MESSAGE))
                    }
                    _ => format!("cancelled{who}"),
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
