//! A machine's boot timeline: what the services saw it do, in order, so an
//! operator can tell where a boot stopped and how long each step took.
//! Recorded by the services themselves (DHCP, TFTP, HTTP, the worker
//! service, metadata); the workflow's own events (actions) are merged in
//! when the timeline is read.

use serde::{Deserialize, Serialize};

use crate::workflow::{Event, EventKind};

/// One step of a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// A DHCP OFFER went out (firmware or iPXE: see the detail).
    DhcpOffer,
    /// A DHCP ACK went out, with what it told the machine to boot.
    DhcpAck,
    /// A TFTP transfer ended (file, bytes, duration, outcome).
    Tftp,
    /// `auto.ipxe` was served, and which branch (in-memory OS, local boot).
    Script,
    /// A boot file (kernel, initramfs, iPXE binary) was fetched over HTTP.
    Download,
    /// The worker in the in-memory OS opened its stream.
    WorkerConnected,
    /// An action started (from the workflow's events).
    ActionStarted,
    /// An action ended (from the workflow's events).
    ActionFinished,
    /// The workflow ended (from its events).
    WorkflowFinished,
    /// The installed system asked for its instance metadata.
    Metadata,
}

impl Step {
    /// Every step, in the order a boot takes them.
    pub const ALL: [Step; 10] = [
        Step::DhcpOffer,
        Step::DhcpAck,
        Step::Tftp,
        Step::Script,
        Step::Download,
        Step::WorkerConnected,
        Step::ActionStarted,
        Step::ActionFinished,
        Step::WorkflowFinished,
        Step::Metadata,
    ];

    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::DhcpOffer => "dhcp_offer",
            Step::DhcpAck => "dhcp_ack",
            Step::Tftp => "tftp",
            Step::Script => "script",
            Step::Download => "download",
            Step::WorkerConnected => "worker_connected",
            Step::ActionStarted => "action_started",
            Step::ActionFinished => "action_finished",
            Step::WorkflowFinished => "workflow_finished",
            Step::Metadata => "metadata",
        }
    }

    /// The step [`as_str`](Self::as_str) spells, if any.
    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.as_str() == s)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootEvent {
    /// Unix milliseconds, the server's clock.
    pub at: i64,
    /// What happened.
    pub step: Step,
    /// The particulars: stage, file, branch, action.
    pub detail: String,
}

/// Longest detail kept, in bytes (file names and URLs come from clients).
pub const MAX_DETAIL: usize = 256;

/// Where services hand their steps: must return at once (a packet path
/// calls it) and never fail the caller.
pub trait Recorder: Send + Sync + std::fmt::Debug {
    /// Notes that the machine `hardware_id` took `step` at `at` (Unix
    /// milliseconds: a transfer is noted when it began, once it ends).
    fn record_at(&self, hardware_id: &str, at: i64, step: Step, detail: String);

    /// Notes that the machine `hardware_id` took `step` now.
    fn record(&self, hardware_id: &str, step: Step, detail: String) {
        self.record_at(hardware_id, crate::time::now_ms(), step, detail);
    }
}

/// The step a workflow event is in its machine's timeline: actions
/// starting and ending, and the workflow ending; None for the rest.
pub fn from_workflow_event(workflow_id: &str, event: &Event) -> Option<BootEvent> {
    let (step, detail) = match &event.kind {
        EventKind::ActionStarted {
            task,
            action,
            attempt,
            ..
        } => (
            Step::ActionStarted,
            format!("{workflow_id}: {task}/{action} (attempt {attempt})"),
        ),
        EventKind::ActionFinished {
            task,
            action,
            state,
            exit_code,
            ..
        } => (
            Step::ActionFinished,
            match exit_code {
                Some(code) => format!("{workflow_id}: {task}/{action} {state} (exit {code})"),
                None => format!("{workflow_id}: {task}/{action} {state}"),
            },
        ),
        EventKind::StateChanged { to, message, .. } if to.is_terminal() => (
            Step::WorkflowFinished,
            match message {
                Some(m) => format!("{workflow_id}: {to} ({m})"),
                None => format!("{workflow_id}: {to}"),
            },
        ),
        _ => return None,
    };
    Some(BootEvent {
        at: event.at,
        step,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_by_name() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.as_str()), Some(step));
            assert_eq!(
                serde_json::to_string(&step).unwrap(),
                format!("\"{}\"", step.as_str())
            );
        }
        assert_eq!(Step::parse("reboot"), None);
    }

    #[test]
    fn workflow_events_become_steps() {
        use crate::workflow::State;
        let started = Event {
            at: 5,
            kind: EventKind::ActionStarted {
                task: "os".into(),
                action: "disk".into(),
                worker: "m".into(),
                attempt: 1,
            },
        };
        let step = from_workflow_event("wf", &started).unwrap();
        assert_eq!((step.at, step.step), (5, Step::ActionStarted));
        assert_eq!(step.detail, "wf: os/disk (attempt 1)");
        let done = Event {
            at: 9,
            kind: EventKind::StateChanged {
                from: State::Running,
                to: State::Success,
                message: None,
            },
        };
        assert_eq!(
            from_workflow_event("wf", &done).unwrap().detail,
            "wf: SUCCESS"
        );
        let running = Event {
            at: 6,
            kind: EventKind::StateChanged {
                from: State::Pending,
                to: State::Running,
                message: None,
            },
        };
        assert_eq!(from_workflow_event("wf", &running), None);
    }
}
