//! Writes the boot timeline the services record (`bellows_model::timeline`)
//! in the background, in groups: a service hands a step over in a bounded
//! queue and goes on; a full queue drops the step (counted, never waits),
//! so a boot storm cannot slow a packet path or grow the server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use bellows_model::boot;
use bellows_model::timeline::{BootEvent, MAX_DETAIL, Recorder, Step};
use bellows_store::Store;
use bellows_store::group::next_batch_up_to;
use tokio::sync::mpsc;

use super::ports::StorePorts;

/// Steps waiting to be written, at most.
const QUEUE: usize = 65_536;

/// A metadata request is noted once per machine in this long: an
/// installed system asks for many paths in a row, and again on every boot.
const METADATA_EVERY_MS: i64 = 10 * 60 * 1000;

/// Steps noted per machine per minute, at most. A boot takes ~16; DHCP
/// and TFTP requests are not authenticated, so a host that spoofs a
/// machine's MAC or address could otherwise fill its timeline (and the
/// store's write queue) with made-up steps.
const STEPS_PER_MINUTE: u32 = 60;

/// Machines whose recent counts are kept; past this the counts start over
/// (they are known machines only, so this is a bound, not a working size).
const MAX_TRACKED: usize = 100_000;

/// What is remembered per machine between steps.
#[derive(Debug, Default)]
struct Recent {
    /// When the current minute began, and steps noted in it.
    minute: (i64, u32),
    /// When its metadata was last noted.
    metadata: Option<i64>,
}

/// The services' [`Recorder`]: queues steps for the store.
#[derive(Debug)]
pub struct TimelineRecorder {
    queue: mpsc::Sender<(String, BootEvent)>,
    dropped: AtomicU64,
    /// Each machine's recent steps (known machines only; at most
    /// [`MAX_TRACKED`]).
    recent: Mutex<HashMap<String, Recent>>,
}

impl TimelineRecorder {
    /// A recorder whose steps a background task writes into `store`.
    pub fn start(store: Arc<dyn Store>) -> Arc<TimelineRecorder> {
        let (queue, rx) = mpsc::channel(QUEUE);
        bellows_store::group::spawn_writer("timeline", write(store, rx));
        Arc::new(TimelineRecorder {
            queue,
            dropped: AtomicU64::new(0),
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// Steps dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Recorder for TimelineRecorder {
    fn record_at(&self, hardware_id: &str, at: i64, step: Step, mut detail: String) {
        {
            let Ok(mut recent) = self.recent.lock() else {
                return;
            };
            if recent.len() >= MAX_TRACKED && !recent.contains_key(hardware_id) {
                recent.clear();
            }
            let machine = recent.entry(hardware_id.to_string()).or_default();
            if step == Step::Metadata {
                if machine.metadata.is_some_and(|t| at - t < METADATA_EVERY_MS) {
                    return;
                }
                machine.metadata = Some(at);
            }
            let now = bellows_store::now_ms();
            if now - machine.minute.0 >= 60_000 {
                machine.minute = (now, 0);
            }
            if machine.minute.1 >= STEPS_PER_MINUTE {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            machine.minute.1 += 1;
        }
        if detail.len() > MAX_DETAIL {
            let mut end = MAX_DETAIL;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        let event = BootEvent { at, step, detail };
        if self
            .queue
            .try_send((hardware_id.to_string(), event))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Steps written in one transaction, at most.
const BATCH: usize = 4096;

/// After writing less than a full batch, the writer waits this long for
/// more steps: a boot storm's ~16 steps per machine then go in a few
/// transactions a second instead of hundreds of small ones, each of which
/// took the store's single writer from the workers' reports.
const GATHER: std::time::Duration = std::time::Duration::from_millis(250);

async fn write(store: Arc<dyn Store>, mut queue: mpsc::Receiver<(String, BootEvent)>) {
    while let Some(batch) = next_batch_up_to(&mut queue, BATCH).await {
        let full = batch.len() == BATCH;
        if let Err(e) = store.append_boot_events(&batch).await {
            tracing::warn!(steps = batch.len(), "boot timeline steps not stored: {e}");
        }
        if !full {
            // This loop has a thread of its own (`spawn_writer`), so it may
            // sleep; a tokio timer would panic here once the runtime shuts
            // down.
            std::thread::sleep(GATHER);
        }
    }
}

/// Notes in its timeline each boot file a machine fetches from the boot
/// listener (the in-memory OS's kernel and initramfs, iPXE binaries by
/// HTTP), by the address it asks from.
pub fn note_downloads(router: Router, ports: Arc<StorePorts>) -> Router {
    router.layer(middleware::from_fn_with_state(ports, note_download))
}

async fn note_download(
    State(ports): State<Arc<StorePorts>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let boot_file = path.starts_with(boot::OSIE_PATH)
        || (path.starts_with(boot::IPXE_PATH) && !path.ends_with(".ipxe"));
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (Some(peer), true) = (peer, boot_file) else {
        return next.run(request).await;
    };
    let path = path.to_string();
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|r| r.to_str().ok())
        .map(|r| format!(", {r}"))
        .unwrap_or_default();
    let asked = bellows_store::now_ms();
    let response = next.run(request).await;
    let status = response.status();
    if status.is_success() {
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok())
            .map(|l| format!(", {l} bytes"))
            .unwrap_or_default();
        ports.record_by_ip(peer, asked, Step::Download, || {
            format!("{path} ({}{length}{range})", status.as_u16())
        });
    }
    response
}

#[cfg(test)]
mod tests {
    use bellows_store::{SecretKey, SqlStore};

    use super::*;

    /// The attack: a host spoofing a machine's MAC sends DISCOVER after
    /// DISCOVER. Its timeline takes a minute's worth of steps and the rest
    /// are dropped and counted; another machine's steps still go in.
    #[tokio::test]
    async fn a_flood_of_steps_for_one_machine_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = SecretKey::load_or_create(&dir.path().join("key")).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path(), key).await.unwrap());
        let recorder = TimelineRecorder::start(store.clone());
        for i in 0..500 {
            recorder.record("victim", Step::DhcpOffer, format!("spoofed {i}"));
        }
        recorder.record("other", Step::DhcpAck, "real".into());
        assert_eq!(recorder.dropped(), 500 - u64::from(STEPS_PER_MINUTE));
        // The writer runs in the background, in groups gathered for a
        // while: the steps may take more than one.
        let (mut stored, mut other) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            stored = store.boot_events("victim", 1_000).await.unwrap();
            other = store.boot_events("other", 10).await.unwrap();
            if stored.len() == STEPS_PER_MINUTE as usize && other.len() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(stored.len(), STEPS_PER_MINUTE as usize);
        assert_eq!(other.len(), 1);
        // Details from clients are cut to their bound.
        recorder.record("third", Step::Tftp, "x".repeat(10_000));
        for _ in 0..100 {
            if let Some(e) = store.boot_events("third", 1).await.unwrap().pop() {
                assert_eq!(e.detail.len(), MAX_DETAIL);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the long detail was never stored");
    }
}
