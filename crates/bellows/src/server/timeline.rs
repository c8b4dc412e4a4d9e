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
use bellows_store::group::next_batch;
use tokio::sync::mpsc;

use super::ports::StorePorts;

/// Steps waiting to be written, at most.
const QUEUE: usize = 65_536;

/// A metadata request is noted once per machine in this long: an
/// installed system asks for many paths in a row, and again on every boot.
const METADATA_EVERY_MS: i64 = 10 * 60 * 1000;

/// The services' [`Recorder`]: queues steps for the store.
#[derive(Debug)]
pub struct TimelineRecorder {
    queue: mpsc::Sender<(String, BootEvent)>,
    dropped: AtomicU64,
    /// When each machine's metadata was last noted (known machines only,
    /// so bounded by the hardware records).
    last_metadata: Mutex<HashMap<String, i64>>,
}

impl TimelineRecorder {
    /// A recorder whose steps a background task writes into `store`.
    pub fn start(store: Arc<dyn Store>) -> Arc<TimelineRecorder> {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(store, rx));
        Arc::new(TimelineRecorder {
            queue,
            dropped: AtomicU64::new(0),
            last_metadata: Mutex::new(HashMap::new()),
        })
    }

    /// Steps dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Recorder for TimelineRecorder {
    fn record_at(&self, hardware_id: &str, at: i64, step: Step, mut detail: String) {
        if step == Step::Metadata
            && let Ok(mut last) = self.last_metadata.lock()
        {
            match last.get(hardware_id) {
                Some(t) if at - t < METADATA_EVERY_MS => return,
                _ => {
                    last.insert(hardware_id.to_string(), at);
                }
            }
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

async fn write(store: Arc<dyn Store>, mut queue: mpsc::Receiver<(String, BootEvent)>) {
    while let Some(batch) = next_batch(&mut queue).await {
        if let Err(e) = store.append_boot_events(&batch).await {
            tracing::warn!(steps = batch.len(), "boot timeline steps not stored: {e}");
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
