//! The gRPC face of the worker hub: request checking, mapping reports to
//! transitions, and the per-worker instruction stream.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ConnectInfo;
use bellows_model::workflow::{Outcome, Transition, TransitionError, clip};
use bellows_model::{State, Workflow};
use bellows_rpc::v1::{
    ActionRef, ActionReport, ActionState, Hello, Instruction, LogBatch, LogReply, RegistryLogin,
    ReportReply, SubscribeRequest, instruction,
};
use bellows_store::{ActionLogLine, InventoryRecord, StoreError, WorkflowFilter, now_ms};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{Next, RegisterError, Registration, WorkerHub, next_for, normalize_worker_id};
use crate::auth::{Authenticator, WorkerCaller};

/// Longest worker id accepted.
const MAX_WORKER_ID: usize = 200;
/// Most log lines in one batch.
const MAX_LOG_BATCH: usize = 2_000;
/// Longest log line kept; longer ones are cut.
const MAX_LOG_LINE: usize = 8 * 1024;

/// The tonic service; cheap to clone.
#[derive(Clone)]
pub struct WorkerService {
    hub: Arc<WorkerHub>,
    auth: Arc<Authenticator>,
}

impl WorkerService {
    /// A service over `hub`, checking every call with `auth`.
    pub fn new(hub: Arc<WorkerHub>, auth: Arc<Authenticator>) -> WorkerService {
        WorkerService { hub, auth }
    }

    /// Discovery's settings, when the server runs it.
    pub(crate) fn discovery_settings(&self) -> Option<Arc<crate::discovery::DiscoverySettings>> {
        self.hub.settings.discovery.clone()
    }

    /// The authenticator every call passes.
    pub(crate) fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// The store behind the hub.
    pub(crate) fn store(&self) -> &Arc<dyn bellows_store::Store> {
        self.hub.store()
    }

    /// Records how long the action that just ended ran, as the workflow
    /// now holds it (the server's clock, not the machine's), once: a
    /// repeated report (a worker retrying an unacknowledged one) changes
    /// nothing, and the action's end is then not this report's `at`.
    fn record_duration(&self, wf: &Workflow, task: &str, action: &str, outcome: Outcome, at: i64) {
        let duration_ms = wf
            .tasks
            .iter()
            .filter(|t| t.name == task)
            .flat_map(|t| t.actions.iter())
            .find(|a| a.name == action)
            .filter(|a| a.stopped_at == Some(at))
            .and_then(|a| a.duration_ms);
        if let Some(ms) = duration_ms {
            let outcome = match outcome {
                Outcome::Success => "success",
                Outcome::Failed => "failed",
                Outcome::Timeout => "timeout",
            };
            // Milliseconds to seconds, for Prometheus' base unit.
            #[allow(clippy::cast_precision_loss)]
            let seconds = ms.max(0) as f64 / 1000.0;
            self.hub.settings.metrics.action_finished(outcome, seconds);
        }
    }

    /// Who sent `request`, refused unless it may act as `worker`: a
    /// machine's credential proves exactly one worker id.
    async fn authorize<T>(
        &self,
        request: &Request<T>,
        worker: &str,
    ) -> Result<WorkerCaller, Status> {
        let headers = request.metadata().clone().into_headers();
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let caller = self.auth.worker(&headers, peer).await?;
        if let WorkerCaller::Machine(c) = &caller
            && normalize_worker_id(&c.worker) != worker
        {
            tracing::warn!(
                claimed = %worker,
                credential_for = %c.worker,
                peer = ?peer,
                "a machine's credential claimed another worker id"
            );
            return Err(Status::permission_denied(format!(
                "this credential is worker {:?}'s, not {worker:?}'s",
                c.worker
            )));
        }
        Ok(caller)
    }

    /// The axum router serving this service's gRPC paths, to merge into an
    /// HTTP listener (HTTP/2 is negotiated per connection).
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> axum::Router<S> {
        axum::Router::new().route_service(
            "/bellows.worker.v1.Worker/{*method}",
            bellows_rpc::WorkerServer::new(self),
        )
    }
}

fn worker_id(raw: &str) -> Result<String, Status> {
    let id = normalize_worker_id(raw);
    if id.is_empty() {
        return Err(Status::invalid_argument("worker_id is empty"));
    }
    if id.len() > MAX_WORKER_ID || id.chars().any(|c| c.is_control()) {
        return Err(Status::invalid_argument(format!(
            "worker_id must be at most {MAX_WORKER_ID} printable characters"
        )));
    }
    Ok(id)
}

fn action_ref(r: Option<&ActionRef>) -> Result<&ActionRef, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("ref is missing"))?;
    if r.workflow_id.is_empty() || r.task.is_empty() || r.action.is_empty() {
        return Err(Status::invalid_argument(
            "ref needs workflow_id, task and action",
        ));
    }
    if r.attempt == 0 {
        return Err(Status::invalid_argument("ref.attempt starts at 1"));
    }
    Ok(r)
}

fn status_of(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { kind, id } => Status::not_found(format!("no {kind} {id:?}")),
        StoreError::Transition(t) => match t {
            TransitionError::UnknownAction { .. } => Status::not_found(t.to_string()),
            TransitionError::WrongWorker { .. } => Status::permission_denied(t.to_string()),
            _ => Status::failed_precondition(t.to_string()),
        },
        other => Status::unavailable(format!("store: {other}")),
    }
}

/// What the stream's feeder hands the stream (see `subscribe`).
type Outgoing = Box<Result<Instruction, Status>>;

type InstructionStream = Pin<Box<dyn Stream<Item = Result<Instruction, Status>> + Send>>;

#[tonic::async_trait]
impl bellows_rpc::Worker for WorkerService {
    type SubscribeStream = InstructionStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let worker = worker_id(&request.get_ref().worker_id)?;
        let caller = self.authorize(&request, &worker).await?;
        let req = request.into_inner();
        if self.hub.is_stopped() {
            return Err(Status::unavailable("server is shutting down"));
        }
        // From the in-memory index (kept by every write, and on replicas by
        // the change feed): a boot storm subscribes thousands at once.
        let index = self.hub.store.index();
        let hardware = match (&caller, worker.parse::<bellows_model::MacAddr>()) {
            (WorkerCaller::Machine(c), _) => index.by_id(&c.hardware_id),
            (_, Ok(mac)) => index.by_mac(mac),
            (_, Err(_)) => index.by_id(&worker),
        };
        let machine = matches!(caller, WorkerCaller::Machine(_));
        let reg = self.hub.register(&worker, machine).map_err(|e| match e {
            RegisterError::HeldByMachine(_) => Status::already_exists(e.to_string()),
            RegisterError::Full => Status::resource_exhausted(e.to_string()),
        })?;
        if let (Some(hw), Some(facts)) = (&hardware, &req.facts) {
            let record = InventoryRecord {
                hardware_id: hw.id.clone(),
                worker: worker.clone(),
                facts: facts_json(facts),
                updated_at: now_ms(),
            };
            self.hub.inventories.put(record);
        }
        tracing::info!(
            worker = %worker,
            hardware = hardware.as_ref().map(|h| h.id.as_str()).unwrap_or("-"),
            version = %req.version,
            "worker connected"
        );
        if let (Some(hw), Some(timeline)) = (&hardware, &self.hub.settings.timeline) {
            let how = if machine {
                "its per-boot credential"
            } else {
                "an operator's token"
            };
            timeline.record(
                &hw.id,
                bellows_model::timeline::Step::WorkerConnected,
                format!("worker {worker} (version {}), with {how}", req.version),
            );
        }
        // Boxed: the channel allocates its slots 32 at a time, whatever its
        // bound, and an Instruction is ~300 bytes; with every machine of a
        // boot storm connected at once that was 10 KiB each.
        let (tx, rx) = mpsc::channel::<Outgoing>(4);
        let hello = Instruction {
            kind: Some(instruction::Kind::Hello(Hello {
                hardware_id: hardware.map(|h| h.id.clone()).unwrap_or_default(),
                keepalive_seconds: u32::try_from(self.hub.settings.keepalive.as_secs())
                    .unwrap_or(u32::MAX),
                registries: self
                    .hub
                    .settings
                    .registry_logins
                    .iter()
                    .map(|l| RegistryLogin {
                        host: l.host.clone(),
                        username: l.username.clone(),
                        password: l.password.clone(),
                    })
                    .collect(),
            })),
        };
        let _ = tx.try_send(Box::new(Ok(hello)));
        let hub = self.hub.clone();
        tokio::spawn(drive(hub, reg, worker, req.running, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(|m| *m))))
    }

    async fn report_action(
        &self,
        request: Request<ActionReport>,
    ) -> Result<Response<ReportReply>, Status> {
        let worker = worker_id(&request.get_ref().worker_id)?;
        self.authorize(&request, &worker).await?;
        let rep = request.into_inner();
        let r = action_ref(rep.r#ref.as_ref())?;
        // The server's clock orders events: a machine booted from an
        // in-memory OS may not have the right time.
        let at = now_ms();
        let outcome = |o| Transition::ActionFinished {
            task: r.task.clone(),
            action: r.action.clone(),
            worker: worker.clone(),
            attempt: r.attempt,
            outcome: o,
            exit_code: rep.exit_code,
            message: Some(rep.message.clone()).filter(|m| !m.is_empty()),
            output: Some(rep.output_tail.clone()).filter(|m| !m.is_empty()),
            at,
        };
        let transition = match ActionState::try_from(rep.state) {
            Ok(ActionState::Running) if rep.progress.is_empty() => Transition::ActionStarted {
                task: r.task.clone(),
                action: r.action.clone(),
                worker: worker.clone(),
                attempt: r.attempt,
                at,
            },
            Ok(ActionState::Running) => Transition::ActionProgress {
                task: r.task.clone(),
                action: r.action.clone(),
                worker: worker.clone(),
                attempt: r.attempt,
                message: rep.progress.clone(),
                at,
            },
            Ok(ActionState::Success) => outcome(Outcome::Success),
            Ok(ActionState::Failed) => outcome(Outcome::Failed),
            Ok(ActionState::Timeout) => outcome(Outcome::Timeout),
            Ok(ActionState::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "state {} is not RUNNING, SUCCESS, FAILED or TIMEOUT",
                    rep.state
                )));
            }
        };
        let wf = self
            .hub
            .reports
            .apply(&r.workflow_id, transition.clone())
            .await
            .map_err(status_of)?;
        if let Transition::ActionFinished { outcome, at, .. } = &transition {
            self.record_duration(&wf, &r.task, &r.action, *outcome, *at);
        }
        if !matches!(transition, Transition::ActionProgress { .. }) {
            tracing::info!(
                worker = %worker,
                workflow = %r.workflow_id,
                action = %r.action,
                attempt = r.attempt,
                report = ?ActionState::try_from(rep.state).unwrap_or(ActionState::Unspecified),
                workflow_state = %wf.state,
                "action report"
            );
        }
        Ok(Response::new(ReportReply {
            workflow_state: wf.state.as_str().to_string(),
        }))
    }

    async fn discover(
        &self,
        request: Request<bellows_rpc::v1::DiscoverRequest>,
    ) -> Result<Response<bellows_rpc::v1::DiscoverReply>, Status> {
        crate::discovery::report(self, request).await
    }

    async fn send_logs(&self, request: Request<LogBatch>) -> Result<Response<LogReply>, Status> {
        let worker = worker_id(&request.get_ref().worker_id)?;
        self.authorize(&request, &worker).await?;
        let batch = request.into_inner();
        if batch.lines.len() > MAX_LOG_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_LOG_BATCH} lines per batch"
            )));
        }
        // Only lines about this worker's own tasks are kept.
        let mut allowed: Vec<(String, Workflow)> = Vec::new();
        let mut lines = Vec::with_capacity(batch.lines.len());
        for l in &batch.lines {
            let r = action_ref(l.r#ref.as_ref())?;
            if !allowed.iter().any(|(id, _)| *id == r.workflow_id) {
                let wf = self
                    .hub
                    .store
                    .workflow(&r.workflow_id)
                    .await
                    .map_err(status_of)?
                    .ok_or_else(|| Status::not_found(format!("no workflow {:?}", r.workflow_id)))?;
                allowed.push((r.workflow_id.clone(), wf));
            }
            let Some((_, wf)) = allowed.iter().find(|(id, _)| *id == r.workflow_id) else {
                continue;
            };
            let owns = wf
                .tasks
                .iter()
                .any(|t| t.name == r.task && normalize_worker_id(&t.worker) == worker);
            if !owns {
                return Err(Status::permission_denied(format!(
                    "task {:?} of workflow {:?} is not worker {worker:?}'s",
                    r.task, r.workflow_id
                )));
            }
            let stream = match l.stream.as_str() {
                "stdout" | "stderr" | "worker" => l.stream.clone(),
                other => {
                    return Err(Status::invalid_argument(format!(
                        "stream {other:?} is not stdout, stderr or worker"
                    )));
                }
            };
            lines.push(ActionLogLine {
                workflow_id: r.workflow_id.clone(),
                task: r.task.clone(),
                action: r.action.clone(),
                attempt: r.attempt,
                stream,
                at: now_ms(),
                line: clip(&l.line, MAX_LOG_LINE),
            });
        }
        self.hub
            .store
            .append_action_logs(&lines)
            .await
            .map_err(status_of)?;
        Ok(Response::new(LogReply {
            accepted: u32::try_from(lines.len()).unwrap_or(u32::MAX),
        }))
    }
}

/// Feeds one worker's stream until it disconnects, is replaced, or the
/// server stops.
async fn drive(
    hub: Arc<WorkerHub>,
    reg: Registration,
    worker: String,
    running: Option<ActionRef>,
    tx: mpsc::Sender<Outgoing>,
) {
    // What the worker is doing, as far as this stream knows: what it said
    // it was running, then what we sent it.
    let mut current: Option<ActionRef> = running;
    // When `current` was last pushed; None when the worker named it itself.
    let mut pushed_at: Option<Instant> = None;
    let keepalive = hub.settings.keepalive;
    loop {
        // Arm the wake-ups before reading state, so a change between the
        // read and the wait is not missed.
        let woken = reg.wake.notified();
        let stopping = hub.stopping.notified();
        tokio::pin!(woken, stopping);
        woken.as_mut().enable();
        stopping.as_mut().enable();
        if hub.is_stopped() || !hub.is_current(&reg) {
            break;
        }
        let workflows = match hub
            .store
            .list_workflows(&WorkflowFilter {
                worker: Some(worker.clone()),
                active: true,
                ..Default::default()
            })
            .await
        {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(worker = %worker, "cannot read workflows: {e}");
                let _ = tx
                    .send(Box::new(Err(Status::unavailable(format!("store: {e}")))))
                    .await;
                break;
            }
        };
        let next = next_for(&worker, &workflows);
        // Tell the worker to stop what it runs when that is no longer what
        // the server expects (cancelled, timed out, expired and retried).
        if let Some(cur) = &current {
            let still = matches!(&next, Next::Run(a) if a.r#ref.as_ref() == Some(cur));
            if !still {
                let stop = match hub.store.workflow(&cur.workflow_id).await {
                    Ok(Some(wf)) => Some(ended_by_server(&wf, cur)),
                    Ok(None) => Some(true),
                    Err(_) => None,
                };
                if stop == Some(true) {
                    let cancel = Instruction {
                        kind: Some(instruction::Kind::Cancel(cur.clone())),
                    };
                    if tx.send(Box::new(Ok(cancel))).await.is_err() {
                        break;
                    }
                }
                // Done with it, one way or the other (unless the store could
                // not say: then ask again at the next wake-up).
                if stop.is_some() {
                    current = None;
                }
            }
        }
        if let Next::Run(assignment) = next {
            let r = assignment.r#ref.clone();
            // A safety net: an assignment still not started a keep-alive
            // after it was pushed was lost on the way (or dropped by the
            // worker), and is pushed again. A worker ignores a repeat of
            // what it runs or holds queued.
            let unstarted = r == current
                && !assignment.resume
                && pushed_at.is_some_and(|t| t.elapsed() >= keepalive);
            if unstarted {
                tracing::warn!(
                    worker = %worker,
                    action = r.as_ref().map(|r| r.action.as_str()).unwrap_or(""),
                    "assignment not started a keep-alive after it was pushed; pushing it again"
                );
            }
            if r != current || unstarted {
                tracing::info!(
                    worker = %worker,
                    workflow = r.as_ref().map(|r| r.workflow_id.as_str()).unwrap_or(""),
                    action = r.as_ref().map(|r| r.action.as_str()).unwrap_or(""),
                    attempt = r.as_ref().map(|r| r.attempt).unwrap_or(0),
                    resume = assignment.resume,
                    "assigning action"
                );
                let msg = Instruction {
                    kind: Some(instruction::Kind::Run(*assignment)),
                };
                if tx.send(Box::new(Ok(msg))).await.is_err() {
                    break;
                }
                current = r;
                pushed_at = Some(Instant::now());
            }
        }
        // Wait for a wake-up; keep-alives go out meanwhile without
        // re-reading the store (an idle rack must cost nothing).
        let go_on = loop {
            tokio::select! {
                _ = &mut woken => break true,
                _ = &mut stopping => break false,
                _ = tx.closed() => break false,
                _ = tokio::time::sleep(keepalive) => {
                    if !hub.is_current(&reg)
                        || tx.send(Box::new(Ok(Instruction { kind: None }))).await.is_err()
                    {
                        break false;
                    }
                    // Re-read only while an action is out: is it started?
                    if current.is_some() {
                        break true;
                    }
                }
            }
        };
        if !go_on {
            break;
        }
    }
    tracing::info!(worker = %worker, "worker stream closed");
}

/// True when the server, not the worker, ended the attempt the worker is
/// running: a cancel, a global timeout, or an expiry (possibly already
/// followed by a retry). SUCCESS and FAILED only ever come from the worker's
/// own report, so the worker is done with the action and needs no word.
fn ended_by_server(wf: &Workflow, r: &ActionRef) -> bool {
    let Some(a) = wf
        .tasks
        .iter()
        .filter(|t| t.name == r.task)
        .flat_map(|t| t.actions.iter())
        .find(|a| a.name == r.action)
    else {
        return true;
    };
    if a.attempts > r.attempt {
        // Moved on to a later attempt: this one is over either way.
        return a
            .history
            .iter()
            .any(|h| h.attempt == r.attempt && h.state == State::Timeout);
    }
    match a.state {
        State::Running => false,
        State::Success | State::Failed => false,
        State::Pending => a
            .history
            .iter()
            .any(|h| h.attempt == r.attempt && h.state == State::Timeout),
        State::Timeout | State::Cancelled => true,
    }
}

/// The facts as stored JSON: the protobuf fields by name, in the shape
/// the CLI reads back ([`bellows_model::api::Facts`]).
fn facts_json(f: &bellows_rpc::v1::Facts) -> serde_json::Value {
    // Plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_value(facts_model(f)).unwrap_or_default()
}

/// The facts in the model's types (what discovery keeps in the record).
/// Extra JSON that does not parse, or is not an object, reads as none.
pub(crate) fn facts_model(f: &bellows_rpc::v1::Facts) -> bellows_model::api::Facts {
    use bellows_model::api::{CpuFacts, DiskFacts, Facts, LldpNeighbour, NicFacts};
    Facts {
        hostname: f.hostname.clone(),
        kernel: f.kernel.clone(),
        architecture: f.architecture.clone(),
        memory_bytes: f.memory_bytes,
        cpu: f.cpu.as_ref().map(|c| CpuFacts {
            model: c.model.clone(),
            threads: c.threads,
            sockets: c.sockets,
        }),
        disks: f
            .disks
            .iter()
            .map(|d| DiskFacts {
                name: d.name.clone(),
                size_bytes: d.size_bytes,
                model: d.model.clone(),
                serial: d.serial.clone(),
                rotational: d.rotational,
                removable: d.removable,
            })
            .collect(),
        nics: f
            .nics
            .iter()
            .map(|n| NicFacts {
                name: n.name.clone(),
                mac: n.mac.clone(),
                driver: n.driver.clone(),
                speed_mbps: n.speed_mbps,
                link_up: n.link_up,
                addresses: n.addresses.clone(),
                lldp: n.lldp.as_ref().map(|l| LldpNeighbour {
                    chassis_id: l.chassis_id.clone(),
                    port_id: l.port_id.clone(),
                    system_name: l.system_name.clone(),
                    port_description: l.port_description.clone(),
                }),
            })
            .collect(),
        extra: serde_json::from_str::<serde_json::Value>(&f.extra_json)
            .ok()
            .filter(serde_json::Value::is_object)
            .unwrap_or_default(),
        bmc_address: f.bmc_address.clone(),
    }
}

#[cfg(test)]
mod tests {
    use bellows_rpc::v1::{Cpu, Disk, Facts, Nic};

    /// The stored facts keep the field names and order they had when they
    /// were built with `json!`, `cpu` as `null` when absent included.
    #[test]
    fn facts_json_keeps_its_shape() {
        let mut f = Facts {
            cpu: Some(Cpu {
                model: "Xeon".into(),
                threads: 8,
                sockets: 1,
            }),
            memory_bytes: 1 << 30,
            disks: vec![Disk {
                name: "sda".into(),
                size_bytes: 10,
                model: "QEMU".into(),
                serial: "s1".into(),
                rotational: true,
                removable: false,
            }],
            nics: vec![Nic {
                name: "eth0".into(),
                mac: "52:54:00:00:00:01".into(),
                driver: "virtio_net".into(),
                speed_mbps: 1000,
                link_up: true,
                addresses: vec!["10.0.0.5/24".into()],
                lldp: None,
            }],
            hostname: "m0".into(),
            kernel: "6.1".into(),
            architecture: "x86_64".into(),
            extra_json: r#"{"vendor":"QEMU"}"#.into(),
            bmc_address: String::new(),
        };
        let expected = serde_json::json!({
            "hostname": "m0", "kernel": "6.1", "architecture": "x86_64",
            "memory_bytes": 1u64 << 30,
            "cpu": {"model": "Xeon", "threads": 8, "sockets": 1},
            "disks": [{"name": "sda", "size_bytes": 10, "model": "QEMU", "serial": "s1",
                       "rotational": true, "removable": false}],
            "nics": [{"name": "eth0", "mac": "52:54:00:00:00:01", "driver": "virtio_net",
                      "speed_mbps": 1000, "link_up": true, "addresses": ["10.0.0.5/24"]}],
            "extra": {"vendor": "QEMU"},
        });
        let got = super::facts_json(&f);
        assert_eq!(got.to_string(), expected.to_string());
        f.cpu = None;
        f.extra_json = "not json".into();
        let got = super::facts_json(&f);
        assert_eq!(got["cpu"], serde_json::Value::Null);
        assert_eq!(got["extra"], serde_json::Value::Null);
        assert!(got.as_object().unwrap().contains_key("cpu"));
    }
}
