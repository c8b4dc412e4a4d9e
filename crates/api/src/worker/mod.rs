//! The worker service: machines' workers subscribe over gRPC, are pushed
//! their next action the moment there is one, and report each state.
//!
//! The rules (order, attempts, idempotence) live in `bellows-model`; this
//! module only finds out who must hear about a change and when a deadline
//! has passed. Every decision is re-read from the store, so a restarted
//! server picks up exactly where the stored workflows are.

mod assign;
mod reports;
pub(crate) mod service;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bellows_model::MacAddr;
use bellows_model::workflow::Transition;
use bellows_store::{ChangeKind, Store, WorkflowFilter, now_ms};
use tokio::sync::{Notify, broadcast};

pub use assign::{Next, next_for, spec_of};
pub use service::WorkerService;

/// Tunables of the worker service.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// How often an idle stream carries a keep-alive, so NAT and proxies
    /// between a worker and the server keep the connection. An assignment
    /// the worker has not started within this time is pushed again.
    pub keepalive: Duration,
    /// Extra time past an action's timeout before the server ends it
    /// itself; the worker normally reports first (its on-timeout command
    /// runs in this window).
    pub action_grace: Duration,
    /// How often deadlines are checked.
    pub deadline_tick: Duration,
    /// Registry logins every authenticated worker is given in its hello.
    pub registry_logins: Vec<bellows_model::registry::RegistryLogin>,
    /// Where finished actions' durations are recorded.
    pub metrics: crate::metrics::ApiMetrics,
    /// Where a worker's connection is noted in its machine's timeline.
    pub timeline: Option<Arc<dyn bellows_model::timeline::Recorder>>,
    /// Discovery, when the server runs it (`Discover` is refused without).
    pub discovery: Option<Arc<crate::discovery::DiscoverySettings>>,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            keepalive: Duration::from_secs(25),
            action_grace: Duration::from_secs(60),
            deadline_tick: Duration::from_secs(1),
            registry_logins: Vec::new(),
            metrics: crate::metrics::ApiMetrics::default(),
            timeline: None,
            discovery: None,
        }
    }
}

/// Connected workers and the wake-ups they are owed.
pub struct WorkerHub {
    store: Arc<dyn Store>,
    /// Workers' reports, written in groups (see `reports.rs`).
    reports: reports::ReportQueue,
    /// Workers' inventories, stored in groups in the background.
    inventories: reports::InventoryQueue,
    settings: HubSettings,
    workers: Mutex<HashMap<String, Connection>>,
    next_conn: AtomicU64,
    /// Wakes every stream when the server stops, so graceful shutdown is not
    /// held up by streams that would otherwise stay open for hours.
    stopping: Notify,
    stopped: std::sync::atomic::AtomicBool,
}

struct Connection {
    id: u64,
    wake: Arc<Notify>,
    /// Held by the machine itself (its per-boot credential), not by an
    /// operator token: an operator's stream may not displace it.
    machine: bool,
}

/// Most worker streams open at once: each costs a task and a little
/// memory, and a flood of invented ids must not grow the server.
pub const MAX_WORKERS: usize = 10_000;

/// Why a subscription is refused before it starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RegisterError {
    /// The machine's own worker holds the stream.
    #[error(
        "worker {0:?} is connected with its machine's credential; an operator token cannot replace it"
    )]
    HeldByMachine(String),
    /// [`MAX_WORKERS`] streams are open.
    #[error("{MAX_WORKERS} workers are connected; refusing more")]
    Full,
}

/// A worker's place in the hub; dropping it unregisters the worker.
pub(crate) struct Registration {
    hub: Arc<WorkerHub>,
    worker: String,
    id: u64,
    pub(crate) wake: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut workers) = self.hub.workers.lock()
            && workers.get(&self.worker).is_some_and(|c| c.id == self.id)
        {
            workers.remove(&self.worker);
        }
    }
}

impl WorkerHub {
    /// The store the hub reads and writes.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A hub over `store`.
    pub fn new(store: Arc<dyn Store>, settings: HubSettings) -> Arc<WorkerHub> {
        Arc::new(WorkerHub {
            reports: reports::ReportQueue::new(store.clone()),
            inventories: reports::InventoryQueue::new(store.clone()),
            store,
            settings,
            workers: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            stopping: Notify::new(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Workers connected now.
    pub fn connected(&self) -> usize {
        self.workers.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// The ids of the workers connected now, sorted: named in the log when
    /// a shutdown has to cut their streams.
    pub fn connected_workers(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .workers
            .lock()
            .map(|w| w.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Ends every stream; call when the server shuts down.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stopping.notify_waiters();
    }

    /// Whether the server is stopping (long-lived streams end).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Registers a worker. A second connection of the same worker replaces
    /// the first (whose stream then ends): a worker that lost its
    /// connection without the server noticing must get back in. Only the
    /// machine's credential holder can replace a stream that holds it.
    pub(crate) fn register(
        self: &Arc<Self>,
        worker: &str,
        machine: bool,
    ) -> Result<Registration, RegisterError> {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        let mut workers = self.workers.lock().map_err(|_| RegisterError::Full)?;
        match workers.get(worker) {
            Some(old) if old.machine && !machine => {
                return Err(RegisterError::HeldByMachine(worker.to_string()));
            }
            None if workers.len() >= MAX_WORKERS => return Err(RegisterError::Full),
            _ => {}
        }
        if let Some(old) = workers.insert(
            worker.to_string(),
            Connection {
                id,
                wake: wake.clone(),
                machine,
            },
        ) {
            // The replaced stream notices it is no longer registered.
            old.wake.notify_one();
        }
        drop(workers);
        Ok(Registration {
            hub: self.clone(),
            worker: worker.to_string(),
            id,
            wake,
        })
    }

    pub(crate) fn is_current(&self, reg: &Registration) -> bool {
        self.workers
            .lock()
            .map(|w| w.get(&reg.worker).is_some_and(|c| c.id == reg.id))
            .unwrap_or(false)
    }

    fn wake(&self, worker: &str) {
        if let Ok(workers) = self.workers.lock()
            && let Some(c) = workers.get(worker)
        {
            c.wake.notify_one();
        }
    }

    fn wake_all(&self) {
        if let Ok(workers) = self.workers.lock() {
            for c in workers.values() {
                c.wake.notify_one();
            }
        }
    }

    /// Follows store changes and wakes the workers a changed workflow names.
    /// Runs until the store's change feed closes.
    pub async fn follow_changes(self: Arc<Self>) {
        let mut changes = self.store.subscribe();
        loop {
            match changes.recv().await {
                // Nobody's next action changed (an action started).
                Ok(change) if change.quiet => {}
                // The change names the workers: no read needed.
                Ok(change) if change.kind == ChangeKind::Workflow && !change.workers.is_empty() => {
                    for w in &change.workers {
                        self.wake(w);
                    }
                }
                Ok(change) if change.kind == ChangeKind::Workflow => {
                    match self.store.workflow(&change.id).await {
                        Ok(Some(wf)) => {
                            for w in wf.workers() {
                                self.wake(&w);
                            }
                        }
                        // Deleted, or unreadable: let everyone re-check.
                        _ => self.wake_all(),
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => self.wake_all(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Ends actions and workflows whose time is up, even when no worker
    /// says anything. Runs until `stop` resolves.
    pub async fn enforce_deadlines(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut pause = self.settings.deadline_tick;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(pause) => {}
            }
            // One server of those sharing a database expires deadlines, so
            // a silent worker's action is ended once, not once per server.
            if !self.store.leads_timers() {
                continue;
            }
            let started = std::time::Instant::now();
            if let Err(e) = self.expire_due(now_ms()).await {
                tracing::warn!("checking workflow deadlines failed: {e}");
            }
            // A pass reads every unfinished workflow: with thousands of
            // them (a boot storm) it is spaced out so that it takes at most
            // a twentieth of the time. Deadlines are seconds to hours long.
            pause = self
                .settings
                .deadline_tick
                .max(started.elapsed().saturating_mul(20));
        }
    }

    /// One pass of deadline checks at time `now`.
    pub async fn expire_due(&self, now: i64) -> Result<(), bellows_store::StoreError> {
        let active = self
            .store
            .list_workflows(&WorkflowFilter {
                active: true,
                ..Default::default()
            })
            .await?;
        let grace = i64::try_from(self.settings.action_grace.as_millis()).unwrap_or(i64::MAX);
        for wf in active {
            let transition = if wf.global_deadline().is_some_and(|d| now >= d) {
                Transition::TimedOut { at: now }
            } else if let Some((t, a, deadline)) = wf.action_deadline(grace)
                && now >= deadline
            {
                Transition::ActionExpired {
                    task: t.name.clone(),
                    action: a.name.clone(),
                    attempt: a.attempts,
                    at: now,
                }
            } else {
                continue;
            };
            match self.store.apply_transition(&wf.id, &transition).await {
                Ok(after) => tracing::warn!(
                    workflow = %wf.id,
                    state = %after.state,
                    "deadline passed: {}",
                    after.message.as_deref().unwrap_or("action expired; retrying")
                ),
                // A report raced us; the next pass sees the new state.
                Err(bellows_store::StoreError::Transition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The canonical spelling of a worker id: a MAC in lower-case colon form,
/// anything else lowercased. Task `worker` fields compare the same way.
pub fn normalize_worker_id(id: &str) -> String {
    match id.trim().parse::<MacAddr>() {
        Ok(mac) => mac.to_string(),
        Err(_) => id.trim().to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn hub() -> (Arc<WorkerHub>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = bellows_store::SqlStore::open_sqlite(
            dir.path(),
            bellows_store::SecretKey::from_bytes(&[1; 32]),
        )
        .await
        .expect("open");
        (WorkerHub::new(Arc::new(store), HubSettings::default()), dir)
    }

    /// A flood of invented ids stops at the cap, and costs nothing once the
    /// streams are gone.
    #[tokio::test]
    async fn worker_streams_are_capped() {
        let (hub, _dir) = hub().await;
        let mut held = Vec::new();
        for i in 0..MAX_WORKERS {
            held.push(
                hub.register(&format!("w{i}"), false)
                    .expect("under the cap"),
            );
        }
        assert_eq!(
            hub.register("one-more", false).err(),
            Some(RegisterError::Full)
        );
        // A worker already connected may still reconnect at the cap.
        assert!(hub.register("w0", false).is_ok());
        drop(held);
        assert_eq!(hub.connected(), 0);
        assert!(hub.register("one-more", false).is_ok());
    }

    #[tokio::test]
    async fn an_operator_cannot_displace_a_machines_own_stream() {
        let (hub, _dir) = hub().await;
        let own = hub.register("m", true).expect("machine");
        assert_eq!(
            hub.register("m", false).err(),
            Some(RegisterError::HeldByMachine("m".into()))
        );
        assert!(hub.is_current(&own));
        // The machine itself (its worker reconnecting) may.
        let again = hub.register("m", true).expect("machine again");
        assert!(!hub.is_current(&own) && hub.is_current(&again));
    }
}
