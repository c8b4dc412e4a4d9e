//! Workers' writes in groups: reports through [`GroupCommit`] (thousands of
//! RUNNING and SUCCESS reports in a boot storm share a handful of
//! transactions), inventories in the background.

use std::sync::{Arc, OnceLock};

use bellows_model::{Transition, Workflow};
use bellows_store::group::{GroupCommit, next_batch, spawn_writer};
use bellows_store::{InventoryRecord, Store, StoreError};
use tokio::sync::mpsc;

/// The queue in front of [`Store::apply_transitions`].
pub(crate) struct ReportQueue(GroupCommit<(String, Transition), Result<Workflow, StoreError>>);

impl ReportQueue {
    pub(crate) fn new(store: Arc<dyn Store>) -> ReportQueue {
        ReportQueue(GroupCommit::new(Arc::new(move |batch| {
            let store = store.clone();
            Box::pin(async move { store.apply_transitions(&batch).await })
        })))
    }

    /// Applies `transition` to `workflow` with whatever else is waiting.
    pub(crate) async fn apply(
        &self,
        workflow: &str,
        transition: Transition,
    ) -> Result<Workflow, StoreError> {
        self.0
            .submit((workflow.to_string(), transition))
            .await
            .map_err(|e| StoreError::Batch {
                message: e.to_string(),
                unavailable: true,
            })?
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
            spawn_writer("inventories", write_inventories(self.store.clone(), rx));
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
