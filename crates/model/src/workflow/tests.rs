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
        at,
    }
}

fn finish(task: &str, action: &str, worker: &str, outcome: Outcome, at: i64) -> Transition {
    Transition::ActionFinished {
        task: task.into(),
        action: action.into(),
        worker: worker.into(),
        outcome,
        message: Some(format!("{action} {outcome:?}")),
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
    // Start twice.
    let running = run(&w, &[start("disk", "wipe", W1, 1)]).unwrap();
    assert!(matches!(
        running.apply(&start("disk", "wipe", W1, 2)),
        Err(TransitionError::BadActionState {
            state: State::Running,
            ..
        })
    ));
    // Finish twice.
    let one_done = run(&running, &[finish("disk", "wipe", W1, Outcome::Success, 2)]).unwrap();
    assert!(matches!(
        one_done.apply(&finish("disk", "wipe", W1, Outcome::Success, 3)),
        Err(TransitionError::BadActionState {
            state: State::Success,
            ..
        })
    ));
    // Restart a finished action.
    assert!(matches!(
        one_done.apply(&start("disk", "wipe", W1, 3)),
        Err(TransitionError::BadActionState {
            state: State::Success,
            ..
        })
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
            start("disk", "stream", W1, 9),
            finish("disk", "stream", W1, Outcome::Success, 9),
            Transition::TimedOut { at: 9 },
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
