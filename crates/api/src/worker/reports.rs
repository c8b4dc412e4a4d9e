//! Group commit for what workers send: reports (and inventories) that
//! arrive while the store is writing wait together and are written in one
//! transaction next, so a boot storm's thousands of RUNNING and SUCCESS
//! reports share a handful of disk flushes instead of one each. One that
//! arrives alone is written at once, alone: no added latency when the
//! server is quiet.

use std::sync::{Arc, OnceLock};

use bellows_model::{Transition, Workflow};
use bellows_store::{InventoryRecord, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Most reports written in one transaction: bounds the time a transaction
/// holds the write lock (and row locks on PostgreSQL).
const MAX_BATCH: usize = 256;
/// Reports waiting beyond the one being written; a sender waits for room.
const QUEUE: usize = 4096;

struct Pending {
    workflow: String,
    transition: Transition,
    reply: oneshot::Sender<Result<Workflow, StoreError>>,
}

/// The queue in front of [`Store::apply_transitions`].
pub(crate) struct ReportQueue {
    store: Arc<dyn Store>,
    sender: OnceLock<mpsc::Sender<Pending>>,
}

impl ReportQueue {
    pub(crate) fn new(store: Arc<dyn Store>) -> ReportQueue {
        ReportQueue {
            store,
            sender: OnceLock::new(),
        }
    }

    /// Applies `transition` to `workflow` with whatever else is waiting.
    pub(crate) async fn apply(
        &self,
        workflow: &str,
        transition: Transition,
    ) -> Result<Workflow, StoreError> {
        // The writer task starts with the first report (inside the runtime).
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(write_batches(self.store.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            workflow: workflow.to_string(),
            transition,
            reply,
        };
        let stopped = || StoreError::Batch {
            message: "the report writer stopped".into(),
            unavailable: true,
        };
        sender.send(pending).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Waits for the next item, then takes whatever else is waiting, up to
/// [`MAX_BATCH`]; None when every sender is gone.
async fn next_batch<T>(queue: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    let mut batch = vec![queue.recv().await?];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn write_batches(store: Arc<dyn Store>, mut queue: mpsc::Receiver<Pending>) {
    while let Some(batch) = next_batch(&mut queue).await {
        let items: Vec<(String, Transition)> = batch
            .iter()
            .map(|p| (p.workflow.clone(), p.transition.clone()))
            .collect();
        let results = store.apply_transitions(&items).await;
        if batch.len() > 1 {
            tracing::debug!(reports = batch.len(), "reports written in one transaction");
        }
        for (p, r) in batch.into_iter().zip(results) {
            // The caller may have gone (its worker disconnected): fine.
            let _ = p.reply.send(r);
        }
    }
}

/// Inventories waiting to be stored; a full queue drops the newest (an
/// inventory is sent again at the next connection).
const INVENTORY_QUEUE: usize = 4096;

/// Workers' inventories, stored in groups in the background: a worker's
/// stream does not wait for its inventory to reach the disk.
pub(crate) struct InventoryQueue {
    store: Arc<dyn Store>,
    sender: OnceLock<mpsc::Sender<InventoryRecord>>,
}

impl InventoryQueue {
    pub(crate) fn new(store: Arc<dyn Store>) -> InventoryQueue {
        InventoryQueue {
            store,
            sender: OnceLock::new(),
        }
    }

    /// Queues `record` to be stored soon.
    pub(crate) fn put(&self, record: InventoryRecord) {
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(INVENTORY_QUEUE);
            tokio::spawn(write_inventories(self.store.clone(), rx));
            tx
        });
        if sender.try_send(record).is_err() {
            tracing::debug!("inventory queue full; one inventory not stored");
        }
    }
}

async fn write_inventories(store: Arc<dyn Store>, mut queue: mpsc::Receiver<InventoryRecord>) {
    while let Some(batch) = next_batch(&mut queue).await {
        if let Err(e) = store.put_inventories(&batch).await {
            tracing::warn!(records = batch.len(), "cannot store inventories: {e}");
        }
    }
}
