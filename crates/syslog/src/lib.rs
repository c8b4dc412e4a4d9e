//! Syslog receiver: booting machines (iPXE, the in-memory OS, the worker)
//! send their logs here, and Bellows files each line under the machine
//! whose reserved IP it came from, so `bellows hardware logs MACHINE` shows
//! what a machine did while nobody watched its console.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bellows_model::LogEntry;
use bellows_model::api::UNKNOWN_SENDER_PREFIX;
use bellows_model::time::now_ms;
use tokio::net::UdpSocket;

pub mod parse;

/// Lines buffered before a write; bounds memory and transaction count.
const BATCH: usize = 256;
/// Longest a received line waits before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Counters, for logs and metrics.
#[derive(Debug, Default)]
pub struct SyslogStats {
    /// Lines stored.
    pub stored: AtomicU64,
    /// Datagrams that were not syslog.
    pub malformed: AtomicU64,
    /// Lines lost because the store refused a write.
    pub lost: AtomicU64,
}

/// Where lines go, and whose they are: a port rather than the store, so
/// this crate knows nothing of how lines are kept.
#[async_trait::async_trait]
pub trait LogSink: Send + Sync {
    /// The id of the machine that holds `ip`, if any; lines from anyone
    /// else are filed as `ip:<address>`.
    fn machine_at(&self, ip: IpAddr) -> Option<String>;
    /// Keeps a batch of lines (in order).
    async fn append(&self, lines: &[LogEntry]) -> Result<(), SinkError>;
}

/// The sink refused a batch; its lines are counted as lost.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// A bound receiver.
pub struct SyslogServer {
    socket: UdpSocket,
    sink: Arc<dyn LogSink>,
    stats: Arc<SyslogStats>,
}

impl SyslogServer {
    /// Binds the UDP socket (port 514 normally; any port for development).
    pub async fn bind(addr: SocketAddr, sink: Arc<dyn LogSink>) -> std::io::Result<SyslogServer> {
        Ok(SyslogServer {
            socket: UdpSocket::bind(addr).await?,
            sink,
            stats: Arc::default(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The counters, shared.
    pub fn stats(&self) -> Arc<SyslogStats> {
        self.stats.clone()
    }

    /// Receives until `shutdown`, then writes what is buffered.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut buf = vec![0u8; 8192];
        let mut batch: Vec<LogEntry> = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, peer)) => {
                        if let Some(entry) = self.entry(&buf[..n], peer) {
                            batch.push(entry);
                            if batch.len() >= BATCH {
                                self.flush(&mut batch).await;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "syslog receive failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = tick.tick() => self.flush(&mut batch).await,
                () = &mut shutdown => break,
            }
        }
        self.flush(&mut batch).await;
    }

    fn entry(&self, datagram: &[u8], peer: SocketAddr) -> Option<LogEntry> {
        let msg = match parse::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, error = %e, "dropping a non-syslog datagram");
                return None;
            }
        };
        let machine = self
            .sink
            .machine_at(peer.ip())
            .unwrap_or_else(|| format!("{UNKNOWN_SENDER_PREFIX}{}", peer.ip()));
        Some(LogEntry {
            machine,
            at: now_ms(),
            source: peer.ip().to_string(),
            facility: msg.facility,
            severity: msg.severity,
            hostname: msg.hostname,
            app: msg.app,
            message: msg.text,
        })
    }

    async fn flush(&self, batch: &mut Vec<LogEntry>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match self.sink.append(batch).await {
            Ok(()) => {
                self.stats.stored.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.lost.fetch_add(n, Ordering::Relaxed);
                tracing::error!(error = %e, lines = n, "cannot store syslog lines");
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Files lines in memory; knows one machine.
    #[derive(Default)]
    struct MemorySink {
        lines: Mutex<Vec<LogEntry>>,
    }

    #[async_trait::async_trait]
    impl LogSink for MemorySink {
        fn machine_at(&self, ip: IpAddr) -> Option<String> {
            (ip == IpAddr::from([127, 0, 0, 1])).then(|| "m1".to_string())
        }
        async fn append(&self, lines: &[LogEntry]) -> Result<(), SinkError> {
            self.lines.lock().unwrap().extend_from_slice(lines);
            Ok(())
        }
    }

    #[tokio::test]
    async fn files_lines_under_the_sending_machine() {
        let sink = Arc::new(MemorySink::default());
        let server = SyslogServer::bind("127.0.0.1:0".parse().unwrap(), sink.clone())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let stats = server.stats();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
        }));
        let known = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let unknown = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        known
            .send_to(b"<6>ipxe: Downloading vmlinuz", addr)
            .await
            .unwrap();
        known.send_to(b"not syslog", addr).await.unwrap();
        unknown
            .send_to(b"<11>1 - host app - - - stranger", addr)
            .await
            .unwrap();
        for _ in 0..100 {
            if stats.stored.load(Ordering::Relaxed) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(());
        task.await.unwrap();
        let lines = sink.lines.lock().unwrap().clone();
        let mine: Vec<_> = lines.iter().filter(|l| l.machine == "m1").collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(
            (mine[0].app.as_str(), mine[0].message.as_str()),
            ("ipxe", "Downloading vmlinuz")
        );
        let other: Vec<_> = lines
            .iter()
            .filter(|l| l.machine == "ip:127.0.0.2")
            .collect();
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].message, "stranger");
        assert_eq!(other[0].severity, 3);
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 1);
    }
}
