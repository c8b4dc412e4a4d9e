//! Group commit: writes that arrive while the store is busy writing wait
//! together and go in one transaction next, so a boot storm's thousands of
//! small writes (workers' reports, per-boot credentials) share a handful
//! of transactions instead of queueing one by one for the single writer.
//! One that arrives alone is written at once, alone: no added latency when
//! the server is quiet.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

/// Most items written in one transaction: bounds how long a transaction
/// holds the write lock (and row locks on PostgreSQL).
pub const MAX_BATCH: usize = 256;
/// Items waiting beyond the batch being written; a sender then waits.
const QUEUE: usize = 4096;

/// Writes a batch; returns one result per item, in order.
pub type WriteBatch<T, R> =
    Arc<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = Vec<R>> + Send>> + Send + Sync>;

struct Pending<T, R> {
    item: T,
    reply: oneshot::Sender<R>,
}

/// A queue in front of a batch write.
pub struct GroupCommit<T, R> {
    write: WriteBatch<T, R>,
    sender: OnceLock<mpsc::Sender<Pending<T, R>>>,
}

/// The writer task has stopped (the runtime is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the group-commit writer stopped")]
pub struct WriterStopped;

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// A queue whose batches `write` writes.
    pub fn new(write: WriteBatch<T, R>) -> GroupCommit<T, R> {
        GroupCommit {
            write,
            sender: OnceLock::new(),
        }
    }

    /// Writes `item` with whatever else is waiting; its own result.
    pub async fn submit(&self, item: T) -> Result<R, WriterStopped> {
        // The writer starts with the first item.
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            start_writer(self.write.clone(), rx);
            tx
        });
        let (reply, answer) = oneshot::channel();
        sender
            .send(Pending { item, reply })
            .await
            .map_err(|_| WriterStopped)?;
        answer.await.map_err(|_| WriterStopped)
    }
}

/// Runs the writer loop on a thread of its own, in the runtime it was
/// started from. A batch awaits the database several times (begin, read,
/// write, commit); as a task on the server's runtime, with a boot storm's
/// thousands of ready tasks, it went to the back of the queue at each of
/// them, and a batch that takes 12 ms alone took 50-90 ms: every report
/// waits for the batch before it. On its own thread it is polled as soon
/// as it is woken. Its sockets and timers stay the runtime's (one reactor:
/// a PostgreSQL connection it opens is used by the other tasks too). A
/// writer that cannot start leaves its queue closed: callers get
/// [`WriterStopped`].
fn start_writer<T: Send + 'static, R: Send + 'static>(
    write: WriteBatch<T, R>,
    queue: mpsc::Receiver<Pending<T, R>>,
) {
    spawn_writer("group-commit", write_batches(write, queue));
}

/// Runs `writer` (a loop that writes to the store) on a thread of its own,
/// in the runtime it is called from, for the reason given at
/// [`start_writer`]: a writer holds the store's single write lock across
/// its awaits, and on the runtime each await waited behind a boot storm's
/// thousands of ready tasks while every other writer waited for the lock.
/// If the thread cannot start, the writer does not run (logged) and its
/// queue's senders see it closed.
pub fn spawn_writer(name: &str, writer: impl Future<Output = ()> + Send + 'static) {
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(writer));
    if let Err(e) = spawned {
        tracing::error!("cannot start the {name} writer's thread: {e}");
    }
}

/// Waits for the next item, then takes whatever else is waiting, up to
/// [`MAX_BATCH`]; None when every sender is gone.
pub async fn next_batch<T>(queue: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    next_batch_up_to(queue, MAX_BATCH).await
}

/// [`next_batch`] with another cap (at least one item): background
/// writers that nobody waits on take more per transaction.
pub async fn next_batch_up_to<T>(queue: &mut mpsc::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let mut batch = vec![queue.recv().await?];
    while batch.len() < max {
        match queue.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn write_batches<T, R>(write: WriteBatch<T, R>, mut queue: mpsc::Receiver<Pending<T, R>>) {
    while let Some(batch) = next_batch(&mut queue).await {
        let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) =
            batch.into_iter().map(|p| (p.item, p.reply)).unzip();
        let n = items.len();
        let started = std::time::Instant::now();
        let results = write(items).await;
        if n > 1 {
            tracing::debug!(
                items = n,
                took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "written in one transaction"
            );
        }
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have gone (its client disconnected): fine.
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Items submitted while a batch is being written go together in the
    /// next one, each caller gets its own result, and a lone item is
    /// written alone.
    #[tokio::test]
    async fn waiting_items_share_the_next_batch() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (s, g) = (sizes.clone(), gate.clone());
        let queue: Arc<GroupCommit<u32, u32>> =
            Arc::new(GroupCommit::new(Arc::new(move |items| {
                let (s, g) = (s.clone(), g.clone());
                Box::pin(async move {
                    s.lock().unwrap().push(items.len());
                    // The first batch waits until the test lets it go.
                    if let Ok(permit) = g.acquire().await {
                        permit.forget();
                        g.add_permits(1);
                    }
                    items.into_iter().map(|i| i * 10).collect()
                })
            })));
        let first = tokio::spawn({
            let q = queue.clone();
            async move { q.submit(1).await.unwrap() }
        });
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (2..=5)
            .map(|i| {
                let q = queue.clone();
                tokio::spawn(async move { q.submit(i).await.unwrap() })
            })
            .collect();
        // Let the four queue up behind the first batch.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), 10);
        let mut got = Vec::new();
        for r in rest {
            got.push(r.await.unwrap());
        }
        assert_eq!(got, [20, 30, 40, 50]);
        assert_eq!(*sizes.lock().unwrap(), [1, 4]);
    }
}
