//! Which action a worker should run next: a pure function of the workflows
//! that name it, so the rule is tested without a network or a store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bellows_model::template::{Strictness, Template};
use bellows_model::{State, Workflow};
use bellows_rpc::v1::{ActionRef, ActionSpec, Assignment};

/// What a connected worker should be doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Run (or, with `resume`, carry on with) this action.
    Run(Box<Assignment>),
    /// Nothing for now: wait to be told.
    Idle,
}

/// Picks the worker's next action from its unfinished workflows, oldest
/// first. A worker works on one workflow at a time: while its oldest
/// workflow waits on another worker's task, younger ones wait too, so two
/// workflows never write to the same machine at once.
pub fn next_for(worker: &str, workflows: &[Workflow]) -> Next {
    for wf in workflows {
        if wf.state.is_terminal() || !wf.workers().iter().any(|w| w == worker) {
            continue;
        }
        let Some((task, action)) = wf.next_action() else {
            continue;
        };
        if !task.worker.eq_ignore_ascii_case(worker) {
            return Next::Idle;
        }
        let (attempt, resume) = match action.state {
            State::Pending => (action.attempts + 1, false),
            State::Running => (action.attempts, true),
            _ => return Next::Idle,
        };
        let Some(spec) = spec_of(wf, &task.name, &action.name) else {
            return Next::Idle;
        };
        return Next::Run(Box::new(Assignment {
            r#ref: Some(ActionRef {
                workflow_id: wf.id.clone(),
                task: task.name.clone(),
                action: action.name.clone(),
                attempt,
            }),
            max_attempts: action.retries.saturating_add(1),
            resume,
            spec: Some(spec),
        }));
    }
    Next::Idle
}

/// The action as the worker needs it, from the template text rendered when
/// the workflow was created: task environment and volumes first, the
/// action's own on top.
pub fn spec_of(wf: &Workflow, task: &str, action: &str) -> Option<ActionSpec> {
    let template = parsed(&wf.id, &wf.rendered)?;
    let t = template.tasks.iter().find(|t| t.name == task)?;
    let a = t.actions.iter().find(|a| a.name == action)?;
    let mut environment: BTreeMap<String, String> = t.environment.clone();
    environment.extend(a.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut volumes = t.volumes.clone();
    volumes.extend(a.volumes.iter().cloned());
    Some(ActionSpec {
        name: a.name.clone(),
        image: a.image.clone(),
        command: a.command.clone(),
        environment: environment.into_iter().collect(),
        volumes,
        pid: a.pid.clone().unwrap_or_default(),
        timeout_seconds: a.timeout,
        on_failure: a.on_failure.clone(),
        on_timeout: a.on_timeout.clone(),
    })
}

/// Parsed templates by workflow id, with a keyed hash of the text they were
/// parsed from (a workflow's rendered text does not change; the hash
/// guards anyway, and its random key makes it impossible to aim at):
/// every wake-up of a worker's stream asks for its next action, and
/// parsing the YAML each time was the largest user-space cost of a boot
/// storm's dispatch.
static PARSED: Mutex<Option<ParsedCache>> = Mutex::new(None);
/// Workflow id → (keyed hash of the text, the template parsed from it).
type ParsedCache = HashMap<String, (u64, Arc<Template>)>;
static HASH_KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
    std::sync::OnceLock::new();
/// Templates kept; the cache starts over when full (a workflow's text is
/// parsed again at most once per that many others).
const PARSED_KEEP: usize = 16_384;

fn parsed(id: &str, rendered: &str) -> Option<Arc<Template>> {
    let digest = {
        use std::hash::BuildHasher;
        HASH_KEY.get_or_init(Default::default).hash_one(rendered)
    };
    let lock = || {
        PARSED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some((d, t)) = lock().as_ref().and_then(|m| m.get(id))
        && *d == digest
    {
        return Some(Arc::clone(t));
    }
    let template = Arc::new(Template::parse(rendered, Strictness::Rendered).ok()?);
    let mut cache = lock();
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() >= PARSED_KEEP {
        map.clear();
    }
    map.insert(id.to_string(), (digest, Arc::clone(&template)));
    Some(template)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bellows_model::workflow::{Outcome, Transition};

    const T: &str = r#"
version: "0.1"
name: two
global_timeout: 600
tasks:
  - name: first
    worker: "aa:aa:aa:aa:aa:01"
    environment: {A: task, B: task}
    volumes: ["/dev:/dev"]
    actions:
      - name: one
        image: img1
        timeout: 60
        retries: 2
        environment: {B: action}
        volumes: ["/tmp:/tmp:ro"]
        pid: host
        on-failure: ["echo", "failed"]
  - name: second
    worker: "aa:aa:aa:aa:aa:02"
    actions:
      - {name: two, image: img2}
"#;
    const W1: &str = "aa:aa:aa:aa:aa:01";
    const W2: &str = "aa:aa:aa:aa:aa:02";

    fn wf(id: &str) -> Workflow {
        let t = Template::parse(T, Strictness::Rendered).unwrap();
        Workflow::new(
            id.into(),
            "t".into(),
            Default::default(),
            None,
            T.into(),
            &t,
            0,
        )
    }

    fn run_ref(n: &Next) -> (String, String, u32, bool) {
        match n {
            Next::Run(a) => {
                let r = a.r#ref.clone().unwrap();
                (r.workflow_id, r.action, r.attempt, a.resume)
            }
            Next::Idle => panic!("expected an assignment"),
        }
    }

    #[test]
    fn the_first_worker_gets_the_first_action_with_its_merged_spec() {
        let w = wf("w1");
        let n = next_for(W1, std::slice::from_ref(&w));
        assert_eq!(run_ref(&n), ("w1".into(), "one".into(), 1, false));
        let Next::Run(a) = n else { unreachable!() };
        let spec = a.spec.unwrap();
        assert_eq!(spec.environment.get("A").map(String::as_str), Some("task"));
        assert_eq!(
            spec.environment.get("B").map(String::as_str),
            Some("action")
        );
        assert_eq!(spec.volumes, ["/dev:/dev", "/tmp:/tmp:ro"]);
        assert_eq!((spec.pid.as_str(), spec.timeout_seconds), ("host", 60));
        assert_eq!(spec.on_failure, ["echo", "failed"]);
        assert_eq!(a.max_attempts, 3);
        assert_eq!(next_for(W2, &[w]), Next::Idle, "second task waits");
    }

    #[test]
    fn running_actions_are_resumed_and_tasks_hand_over_in_order() {
        let w = wf("w1");
        let start = Transition::ActionStarted {
            task: "first".into(),
            action: "one".into(),
            worker: W1.into(),
            attempt: 1,
            at: 1,
        };
        let running = w.apply(&start).unwrap().0;
        assert_eq!(
            run_ref(&next_for(W1, std::slice::from_ref(&running))),
            ("w1".into(), "one".into(), 1, true)
        );
        let done = running
            .apply(&Transition::ActionFinished {
                task: "first".into(),
                action: "one".into(),
                worker: W1.into(),
                attempt: 1,
                outcome: Outcome::Success,
                exit_code: Some(0),
                message: None,
                output: None,
                at: 2,
            })
            .unwrap()
            .0;
        assert_eq!(next_for(W1, std::slice::from_ref(&done)), Next::Idle);
        assert_eq!(
            run_ref(&next_for(W2, std::slice::from_ref(&done))),
            ("w1".into(), "two".into(), 1, false)
        );
    }

    #[test]
    fn oldest_workflow_first_and_one_at_a_time() {
        let older = wf("old");
        let younger = wf("young");
        assert_eq!(
            run_ref(&next_for(W1, &[older.clone(), younger.clone()])).0,
            "old"
        );
        let cancelled = older
            .apply(&Transition::Cancelled {
                reason: None,
                by: None,
                at: 1,
            })
            .unwrap()
            .0;
        assert_eq!(run_ref(&next_for(W1, &[cancelled, younger])).0, "young");
        assert_eq!(next_for("aa:aa:aa:aa:aa:09", &[wf("x")]), Next::Idle);
    }
}
