use super::*;
use crate::template::{Strictness, Template};

const TWO_TASKS: &str = r#"
version: "0.1"
name: install
global_timeout: 600
tasks:
  - name: disk
    worker: "aa:aa:aa:aa:aa:01"
    actions:
      - {name: wipe, image: wipe, timeout: 60}
      - {name: stream, image: image2disk, timeout: 600}
  - name: peer
    worker: "aa:aa:aa:aa:aa:02"
    actions:
      - {name: hello, image: hello-world}
"#;

fn wf() -> Workflow {
    let t = Template::parse(TWO_TASKS, Strictness::Rendered).unwrap();
    Workflow::new(
        "wf1".into(),
        "t1".into(),
        Default::default(),
        None,
        TWO_TASKS.into(),
        &t,
        1000,
    )
}

fn start(task: &str, action: &str, worker: &str, at: i64) -> Transition {
    Transition::ActionStarted {
        task: task.into(),
        action: action.into(),
        worker: worker.into(),
        attempt: 1,
        at,
    }
}

fn finish(task: &str, action: &str, worker: &str, outcome: Outcome, at: i64) -> Transition {
    Transition::ActionFinished {
        task: task.into(),
        action: action.into(),
        worker: worker.into(),
        attempt: 1,
        outcome,
        exit_code: None,
        message: Some(format!("{action} {outcome:?}")),
        output: None,
        at,
    }
}

const W1: &str = "aa:aa:aa:aa:aa:01";
const W2: &str = "aa:aa:aa:aa:aa:02";

fn run(w: &Workflow, steps: &[Transition]) -> Result<Workflow, TransitionError> {
    let mut w = w.clone();
    for s in steps {
        w = w.apply(s)?.0;
    }
    Ok(w)
}

#[test]
fn new_workflow_is_pending_with_all_actions_pending() {
    let w = wf();
    assert_eq!(w.state, State::Pending);
    assert!(
        w.tasks
            .iter()
            .flat_map(|t| &t.actions)
            .all(|a| a.state == State::Pending)
    );
    assert_eq!(w.next_action().unwrap().1.name, "wipe");
    assert!(matches!(w.created_event().kind, EventKind::Created { .. }));
}

#[test]
fn happy_path_runs_in_order_to_success() {
    let w = wf();
    let (w1, ev) = w.apply(&start("disk", "wipe", W1, 2000)).unwrap();
    assert_eq!(w1.state, State::Running);
    assert_eq!(w1.started_at, Some(2000));
    assert_eq!(ev.len(), 2, "action started + workflow running");
    let w2 = run(
        &w1,
        &[
            finish("disk", "wipe", W1, Outcome::Success, 2500),
            start("disk", "stream", W1, 2600),
            finish("disk", "stream", W1, Outcome::Success, 4600),
            start("peer", "hello", W2, 4700),
        ],
    )
    .unwrap();
    assert_eq!(w2.state, State::Running);
    let a = &w2.tasks[0].actions[1];
    assert_eq!(
        (a.started_at, a.stopped_at, a.duration_ms),
        (Some(2600), Some(4600), Some(2000))
    );
    let (done, ev) = w2
        .apply(&finish("peer", "hello", W2, Outcome::Success, 5000))
        .unwrap();
    assert_eq!(done.state, State::Success);
    assert_eq!(done.stopped_at, Some(5000));
    assert!(matches!(
        ev.last().unwrap().kind,
        EventKind::StateChanged {
            to: State::Success,
            ..
        }
    ));
}

#[test]
fn failure_and_timeout_end_the_workflow() {
    let w = run(&wf(), &[start("disk", "wipe", W1, 1)]).unwrap();
    let failed = run(&w, &[finish("disk", "wipe", W1, Outcome::Failed, 2)]).unwrap();
    assert_eq!(failed.state, State::Failed);
    assert!(failed.message.as_deref().unwrap().contains("wipe"));
    assert_eq!(
        failed.tasks[0].actions[1].state,
        State::Pending,
        "later actions never ran"
    );
    let timed = run(&w, &[finish("disk", "wipe", W1, Outcome::Timeout, 2)]).unwrap();
    assert_eq!(timed.state, State::Timeout);
    let global = w.apply(&Transition::TimedOut { at: 9 }).unwrap().0;
    assert_eq!(global.state, State::Timeout);
    assert_eq!(global.tasks[0].actions[0].state, State::Timeout);
    let pending_timeout = wf().apply(&Transition::TimedOut { at: 9 }).unwrap().0;
    assert_eq!(pending_timeout.state, State::Timeout);
}

#[test]
fn every_illegal_transition_is_refused() {
    let w = wf();
    // Out of order: second action before the first.
    assert!(matches!(
        w.apply(&start("disk", "stream", W1, 1)),
        Err(TransitionError::OutOfOrder { .. })
    ));
    // Second task before the first task is done.
    assert!(matches!(
        w.apply(&start("peer", "hello", W2, 1)),
        Err(TransitionError::OutOfOrder { .. })
    ));
    // Wrong worker.
    assert!(matches!(
        w.apply(&start("disk", "wipe", W2, 1)),
        Err(TransitionError::WrongWorker { .. })
    ));
    // Unknown task / action.
    assert!(matches!(
        w.apply(&start("nope", "wipe", W1, 1)),
        Err(TransitionError::UnknownAction { .. })
    ));
    assert!(matches!(
        w.apply(&start("disk", "nope", W1, 1)),
        Err(TransitionError::UnknownAction { .. })
    ));
    // Finish before start.
    assert!(matches!(
        w.apply(&finish("disk", "wipe", W1, Outcome::Success, 1)),
        Err(TransitionError::BadActionState {
            state: State::Pending,
            ..
        })
    ));
    // A second attempt that was never assigned.
    let running = run(&w, &[start("disk", "wipe", W1, 1)]).unwrap();
    let mut second = start("disk", "wipe", W1, 2);
    if let Transition::ActionStarted { attempt, .. } = &mut second {
        *attempt = 2;
    }
    assert!(matches!(
        running.apply(&second),
        Err(TransitionError::BadActionState {
            state: State::Running,
            ..
        })
    ));
    // A finish that contradicts the recorded one.
    let one_done = run(&running, &[finish("disk", "wipe", W1, Outcome::Success, 2)]).unwrap();
    assert!(matches!(
        one_done.apply(&finish("disk", "wipe", W1, Outcome::Failed, 3)),
        Err(TransitionError::Contradicts {
            state: State::Success,
            ..
        })
    ));
    // Progress for an action that is not running.
    assert!(matches!(
        one_done.apply(&Transition::ActionProgress {
            task: "disk".into(),
            action: "wipe".into(),
            worker: W1.into(),
            attempt: 1,
            message: "50%".into(),
            at: 3,
        }),
        Err(TransitionError::BadActionState { .. })
    ));
    // Nothing at all once terminal, from every terminal state.
    let terminals = [
        run(&running, &[finish("disk", "wipe", W1, Outcome::Failed, 2)]).unwrap(),
        run(&running, &[finish("disk", "wipe", W1, Outcome::Timeout, 2)]).unwrap(),
        run(
            &one_done,
            &[
                start("disk", "stream", W1, 3),
                finish("disk", "stream", W1, Outcome::Success, 4),
                start("peer", "hello", W2, 5),
                finish("peer", "hello", W2, Outcome::Success, 6),
            ],
        )
        .unwrap(),
    ];
    for t in &terminals {
        assert!(t.state.is_terminal());
        for tr in [
            attempt(start("disk", "stream", W1, 9), 2),
            attempt(finish("disk", "stream", W1, Outcome::Success, 9), 2),
            Transition::TimedOut { at: 9 },
            Transition::Cancelled {
                reason: None,
                by: None,
                at: 9,
            },
        ] {
            assert_eq!(t.apply(&tr), Err(TransitionError::Finished(t.state)));
        }
    }
}

#[test]
fn refused_transitions_change_nothing() {
    let w = run(&wf(), &[start("disk", "wipe", W1, 1)]).unwrap();
    let before = w.clone();
    let _ = w.apply(&start("disk", "stream", W1, 2));
    assert_eq!(w, before, "apply takes &self; a refusal leaves no trace");
}

#[test]
fn states_serialise_as_tinkerbell_names() {
    assert_eq!(
        serde_json::to_string(&State::Pending).unwrap(),
        "\"PENDING\""
    );
    assert_eq!(
        serde_json::to_string(&State::Timeout).unwrap(),
        "\"TIMEOUT\""
    );
    let e = Event {
        at: 5,
        kind: EventKind::StateChanged {
            from: State::Pending,
            to: State::Running,
            message: None,
        },
    };
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["type"], "state_changed");
    assert_eq!(v["to"], "RUNNING");
}

const RETRYING: &str = r#"
version: "0.1"
name: retry
global_timeout: 600
tasks:
  - name: disk
    worker: "aa:aa:aa:aa:aa:01"
    actions:
      - {name: flaky, image: flaky, timeout: 10, retries: 2}
      - {name: after, image: after}
"#;

fn retrying() -> Workflow {
    let t = Template::parse(RETRYING, Strictness::Rendered).unwrap();
    Workflow::new(
        "wf2".into(),
        "t2".into(),
        Default::default(),
        None,
        RETRYING.into(),
        &t,
        0,
    )
}

fn attempt(mut t: Transition, n: u32) -> Transition {
    match &mut t {
        Transition::ActionStarted { attempt, .. }
        | Transition::ActionFinished { attempt, .. }
        | Transition::ActionProgress { attempt, .. }
        | Transition::ActionExpired { attempt, .. } => *attempt = n,
        _ => {}
    }
    t
}

#[test]
fn repeated_reports_change_nothing() {
    let w = wf();
    let s = start("disk", "wipe", W1, 1);
    let (running, ev) = w.apply(&s).unwrap();
    assert!(!ev.is_empty());
    let (again, ev) = running.apply(&s).unwrap();
    assert_eq!((again, ev.len()), (running.clone(), 0));
    let f = finish("disk", "wipe", W1, Outcome::Success, 2);
    let (done, _) = running.apply(&f).unwrap();
    let (again, ev) = done.apply(&f).unwrap();
    assert_eq!((again, ev.len()), (done.clone(), 0));
    // Even after the workflow ended, the last report may be repeated.
    let w = run(&wf(), &[start("disk", "wipe", W1, 1)]).unwrap();
    let fail = finish("disk", "wipe", W1, Outcome::Failed, 2);
    let failed = run(&w, std::slice::from_ref(&fail)).unwrap();
    assert_eq!(failed.apply(&fail).unwrap().0, failed);
}

#[test]
fn failed_attempts_are_retried_then_fail_the_workflow() {
    let w = retrying();
    let mut cur = w.clone();
    for n in 1..=3u32 {
        cur = run(
            &cur,
            &[
                attempt(start("disk", "flaky", W1, n as i64 * 10), n),
                attempt(
                    finish("disk", "flaky", W1, Outcome::Failed, n as i64 * 10 + 1),
                    n,
                ),
            ],
        )
        .unwrap();
        let a = &cur.tasks[0].actions[0];
        assert_eq!(a.attempts, n);
        if n < 3 {
            assert_eq!((cur.state, a.state), (State::Running, State::Pending));
            assert_eq!(a.history.len() as u32, n);
            // A late repeat of the finished attempt changes nothing.
            let late = attempt(finish("disk", "flaky", W1, Outcome::Failed, 99), n);
            assert_eq!(cur.apply(&late).unwrap().0, cur);
            // The next attempt must carry the next number.
            assert!(matches!(
                cur.apply(&attempt(start("disk", "flaky", W1, 99), n + 2)),
                Err(TransitionError::WrongAttempt { .. })
            ));
        }
    }
    assert_eq!(cur.state, State::Failed);
    assert_eq!(cur.tasks[0].actions[1].state, State::Pending);
}

#[test]
fn a_retry_can_succeed() {
    let w = run(
        &retrying(),
        &[
            start("disk", "flaky", W1, 1),
            finish("disk", "flaky", W1, Outcome::Timeout, 2),
            attempt(start("disk", "flaky", W1, 3), 2),
            attempt(finish("disk", "flaky", W1, Outcome::Success, 4), 2),
            start("disk", "after", W1, 5),
            finish("disk", "after", W1, Outcome::Success, 6),
        ],
    )
    .unwrap();
    assert_eq!(w.state, State::Success);
    assert_eq!(w.tasks[0].actions[0].history[0].state, State::Timeout);
}

#[test]
fn expiry_and_cancel_and_progress() {
    let w = run(&wf(), &[start("disk", "wipe", W1, 1_000)]).unwrap();
    let (_, _, deadline) = w.action_deadline(5_000).unwrap();
    assert_eq!(deadline, 1_000 + 60_000 + 5_000);
    assert_eq!(w.global_deadline(), Some(1_000 + 600_000));
    let expired = w
        .apply(&Transition::ActionExpired {
            task: "disk".into(),
            action: "wipe".into(),
            attempt: 1,
            at: 70_000,
        })
        .unwrap()
        .0;
    assert_eq!(expired.state, State::Timeout);
    assert!(expired.message.unwrap().contains("no report from worker"));
    let progressed = w
        .apply(&Transition::ActionProgress {
            task: "disk".into(),
            action: "wipe".into(),
            worker: W1.into(),
            attempt: 1,
            message: "40%".into(),
            at: 2_000,
        })
        .unwrap();
    assert_eq!(
        progressed.0.tasks[0].actions[0].progress.as_deref(),
        Some("40%")
    );
    assert!(progressed.1.is_empty(), "progress is not an event");
    let cancelled = w
        .apply(&Transition::Cancelled {
            reason: Some("wrong disk".into()),
            by: None,
            at: 3_000,
        })
        .unwrap()
        .0;
    assert_eq!(cancelled.state, State::Cancelled);
    assert_eq!(cancelled.tasks[0].actions[0].state, State::Cancelled);
    assert!(matches!(
        cancelled.apply(&finish("disk", "wipe", W1, Outcome::Failed, 4_000)),
        Err(TransitionError::Finished(State::Cancelled))
    ));
    assert_eq!(State::parse("state_cancelled"), Some(State::Cancelled));
}

#[test]
fn event_names_are_the_wire_tags() {
    let kinds = [
        EventKind::Created {
            template_id: "t".into(),
            by: None,
        },
        EventKind::ActionStarted {
            task: "t".into(),
            action: "a".into(),
            worker: "w".into(),
            attempt: 1,
        },
        EventKind::ActionFinished {
            task: "t".into(),
            action: "a".into(),
            state: State::Success,
            message: None,
            attempt: 1,
            exit_code: None,
        },
        EventKind::ActionRetrying {
            task: "t".into(),
            action: "a".into(),
            next_attempt: 2,
            of: 3,
        },
        EventKind::BootRequested {
            hardware: "h".into(),
            ok: true,
            message: "m".into(),
        },
        EventKind::StateChanged {
            from: State::Pending,
            to: State::Running,
            message: None,
        },
    ];
    for kind in kinds {
        let v = serde_json::to_value(&kind).unwrap();
        assert_eq!(v["type"], kind.name());
    }
}
