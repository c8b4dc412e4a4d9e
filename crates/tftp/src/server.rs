//! The socket loop around the pure core: one listening socket, and per
//! transfer an ephemeral socket on the local address the request reached
//! (RFC 1350's transfer IDs) driven by its own task.
//!
//! Everything a peer sends is decoded by [`Packet::decode`] and handled by
//! [`ReadTransfer`]; this module only moves datagrams, reads files off the
//! async threads, counts, logs and enforces the concurrency bound.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bellows_udp::unmapped;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::files::{FileContent, FileSource, OpenError, SafePath, sanitize_request_path};
use crate::netascii::NetasciiFile;
use crate::options::{Negotiated, TransferLimits, negotiate};
use crate::packet::{
    DATA_HEADER_LEN, ErrorCode, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, TftpOption, data_header,
    error_packet,
};
use crate::policy::{self, Admission, Busy, PerClient, Refusal, Start};
use crate::transfer::{ReadTransfer, TransferOutcome, Transmit};

mod task;

/// The standard TFTP port.
pub const DEFAULT_PORT: u16 = 69;
/// Transfers one address may run at once by default: a machine fetches one
/// file at a time (two during a UEFI size probe), so 8 leaves room for a
/// few machines behind one relay without letting one host fill the server.
pub const DEFAULT_MAX_TRANSFERS_PER_CLIENT: usize = 8;

/// Largest datagram read on the listening socket (any UDP payload fits).
const REQUEST_BUFFER: usize = 65536;
/// Largest datagram read on a transfer socket: ACKs are 4 bytes, ERRORs a
/// short message; anything longer is cut and still decodes.
const TRANSFER_BUFFER: usize = 1536;
/// File bytes read per trip to the blocking pool, at least (a whole window
/// is always read at once).
const READ_AHEAD: usize = 64 * 1024;
/// After the grace period has expired and transfers were told to stop, how
/// long before their tasks are cancelled outright.
const HARD_STOP: Duration = Duration::from_secs(2);

/// How the server runs; [`Default`] is the standard port on all addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpConfig {
    /// Address to listen on; port 0 picks a free one (see
    /// [`TftpServer::local_addr`]).
    pub listen: SocketAddr,
    /// Transfers running at once; requests beyond get ERROR 0 "server busy".
    pub max_transfers: usize,
    /// Transfers one client address may run at once; requests beyond get
    /// ERROR 0 naming the reason. A booting machine needs one or two, and
    /// one host must not hold every slot.
    pub max_transfers_per_client: usize,
    /// Option limits and retransmission policy.
    pub limits: TransferLimits,
    /// On shutdown, how long in-flight transfers may run before being aborted.
    pub shutdown_grace: Duration,
}

impl Default for TftpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            // A boot storm's machines all fetch at once; a transfer of a
            // cached file costs ~4 KiB, so this many fit in ~40 MB.
            max_transfers: 10_000,
            max_transfers_per_client: DEFAULT_MAX_TRANSFERS_PER_CLIENT,
            limits: TransferLimits::default(),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    /// A setting is out of range; the message names it.
    #[error("invalid TFTP configuration: {0}")]
    InvalidConfig(String),
    /// The listening socket could not be bound (port in use, privileged port).
    #[error("cannot listen for TFTP on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Another socket-level failure.
    #[error("TFTP socket error: {0}")]
    Io(#[from] io::Error),
}

/// One finished request, given to the transfer hook: enough to record which
/// machine fetched which file, and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    /// The client's address and port.
    pub peer: SocketAddr,
    /// The file name exactly as requested.
    pub requested: String,
    /// The sanitised path that was opened, if it got that far.
    pub path: Option<SafePath>,
    /// The MAC of a `<mac>/` prefix in the request, if any.
    pub mac: Option<bellows_model::MacAddr>,
    /// Block size, window and acknowledged options, once the file was opened.
    pub negotiated: Option<Negotiated>,
    /// How it ended.
    pub outcome: TransferOutcome,
    /// DATA payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// From request to end.
    pub duration: Duration,
}

/// Called once per request when it ends, on the transfer's task: it must
/// return quickly (hand off to a channel for slow work) and not panic.
pub type TransferHook = Arc<dyn Fn(&TransferRecord) + Send + Sync>;

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    completed: AtomicU64,
    declined: AtomicU64,
    failed: AtomicU64,
    busy: AtomicU64,
    client_busy: AtomicU64,
    duplicates: AtomicU64,
    malformed: AtomicU64,
    data_bytes_sent: AtomicU64,
    active: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A point-in-time copy of the server's counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TftpStats {
    /// Read and write requests received on the listening socket.
    pub requests: u64,
    /// Transfers whose last block was acknowledged.
    pub completed: u64,
    /// Transfers the client ended after the OACK with error 8 (size probes).
    pub declined: u64,
    /// Requests that ended any other way (refused, busy, timed out, client
    /// error, aborted).
    pub failed: u64,
    /// Of `failed`, those refused because `max_transfers` were running.
    pub busy: u64,
    /// Of `failed`, those refused because their address already ran
    /// `max_transfers_per_client`.
    pub client_busy: u64,
    /// Requests repeated byte for byte from a client address and port
    /// whose transfer of them runs already (retransmissions), ignored.
    pub duplicates: u64,
    /// Datagrams on the listening socket that were not a valid request.
    pub malformed: u64,
    /// DATA payload bytes sent, retransmissions included.
    pub data_bytes_sent: u64,
    /// Transfers running now.
    pub active: u64,
}

/// A cloneable view of a server's counters that outlives `run`.
#[derive(Debug, Clone)]
pub struct StatsHandle(Arc<Counters>);

impl StatsHandle {
    /// Reads every counter (each one atomically; the set is not a snapshot
    /// of a single instant).
    pub fn snapshot(&self) -> TftpStats {
        let c = &self.0;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TftpStats {
            requests: get(&c.requests),
            completed: get(&c.completed),
            declined: get(&c.declined),
            failed: get(&c.failed),
            busy: get(&c.busy),
            client_busy: get(&c.client_busy),
            duplicates: get(&c.duplicates),
            malformed: get(&c.malformed),
            data_bytes_sent: get(&c.data_bytes_sent),
            active: get(&c.active),
        }
    }
}

/// What every transfer task needs from the server.
struct Shared {
    source: Arc<dyn FileSource>,
    limits: TransferLimits,
    counters: Arc<Counters>,
    hook: Option<TransferHook>,
}

/// A bound TFTP server; [`run`](Self::run) serves until shutdown.
pub struct TftpServer {
    socket: UdpSocket,
    local_addr: SocketAddr,
    /// The listening socket reports each request's destination address
    /// (IP_PKTINFO), which matters when it listens on a wildcard address.
    learns_destination: bool,
    config: TftpConfig,
    shared: Shared,
}

fn validate(config: &TftpConfig) -> Result<(), TftpError> {
    let limits = &config.limits;
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&limits.max_block_size) {
        return Err(TftpError::InvalidConfig(format!(
            "max_block_size {} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}",
            limits.max_block_size
        )));
    }
    if limits.max_window_size == 0 {
        return Err(TftpError::InvalidConfig(
            "max_window_size must be at least 1".into(),
        ));
    }
    if config.max_transfers == 0 {
        return Err(TftpError::InvalidConfig(
            "max_transfers must be at least 1".into(),
        ));
    }
    if config.max_transfers_per_client == 0 {
        return Err(TftpError::InvalidConfig(
            "max_transfers_per_client must be at least 1".into(),
        ));
    }
    if limits.max_stall.is_zero() {
        return Err(TftpError::InvalidConfig(
            "max_stall must be more than zero".into(),
        ));
    }
    if limits.default_timeout.is_zero() {
        return Err(TftpError::InvalidConfig(
            "default_timeout must be more than zero".into(),
        ));
    }
    Ok(())
}

impl TftpServer {
    /// Checks the configuration and binds the listening socket, so the caller
    /// learns of a busy port before spawning anything.
    pub async fn bind(config: TftpConfig, source: Arc<dyn FileSource>) -> Result<Self, TftpError> {
        validate(&config)?;
        let socket = UdpSocket::bind(config.listen)
            .await
            .map_err(|source| TftpError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = socket.local_addr()?;
        // Also on a specific address: one receive path for every setup, the
        // one the tests exercise.
        let learns_destination = enable_destination_info(&socket, local_addr);
        bellows_udp::enlarge_receive_buffer(&socket, bellows_udp::STORM_RECEIVE_QUEUE_BYTES);
        info!(address = %local_addr, "TFTP server listening");
        Ok(Self {
            socket,
            local_addr,
            learns_destination,
            shared: Shared {
                source,
                limits: config.limits.clone(),
                counters: Arc::default(),
                hook: None,
            },
            config,
        })
    }

    /// The address actually bound (the port, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters, readable during and after `run`.
    pub fn stats(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.shared.counters))
    }

    /// Sets the function called as each request ends (see [`TransferHook`]).
    pub fn with_transfer_hook(
        mut self,
        hook: impl Fn(&TransferRecord) + Send + Sync + 'static,
    ) -> Self {
        self.shared.hook = Some(Arc::new(hook));
        self
    }

    /// Serves until `shutdown` completes, then stops accepting, lets running
    /// transfers finish for [`TftpConfig::shutdown_grace`], and aborts the
    /// rest (the client gets ERROR 0). Errors on single datagrams are logged,
    /// never returned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), TftpError> {
        let Self {
            socket,
            local_addr,
            learns_destination,
            config,
            shared,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut acceptor = Acceptor {
            shared: Arc::new(shared),
            slots: Arc::new(Semaphore::new(config.max_transfers)),
            clients: Arc::new(Mutex::new(PerClient::new(config.max_transfers_per_client))),
            stop: stop_rx,
            tasks: JoinSet::new(),
        };
        let mut buffer = vec![0u8; REQUEST_BUFFER];
        let mut control = bellows_udp::control_buffer();
        tokio::pin!(shutdown);

        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = acceptor.tasks.join_next(), if !acceptor.tasks.is_empty() => {
                    report_join(joined);
                }
                received = bellows_udp::recv(&socket, &mut buffer, &mut control) => {
                    let mut received = received;
                    // This datagram and up to DRAIN_PER_WAKE more already queued:
                    // with thousands of transfers running, one request per
                    // turn of the runtime lets a boot storm's burst overflow
                    // the queue.
                    for taken in 0..=bellows_udp::DRAIN_PER_WAKE {
                        match received {
                            Ok(datagram) => {
                                let local_ip = datagram
                                    .info
                                    .filter(|_| learns_destination)
                                    .map_or(local_addr.ip(), |info| info.reply_from());
                                let len = datagram.len.min(buffer.len());
                                acceptor.dispatch(&socket, &buffer[..len], datagram.source, local_ip);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                // ICMP errors from earlier replies surface
                                // here; pause briefly so a persistent error
                                // cannot spin.
                                debug!(error = %e, "TFTP receive error");
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                break;
                            }
                        }
                        if taken == bellows_udp::DRAIN_PER_WAKE {
                            break;
                        }
                        received = bellows_udp::try_recv(&socket, &mut buffer, &mut control);
                    }
                }
            }
        }

        drop(socket);
        let mut tasks = acceptor.tasks;
        info!(
            in_flight = tasks.len(),
            grace = ?config.shutdown_grace,
            "TFTP server stopping"
        );
        let grace = tokio::time::sleep(config.shutdown_grace);
        let hard_stop = tokio::time::sleep(config.shutdown_grace + HARD_STOP);
        tokio::pin!(grace, hard_stop);
        let mut told_to_stop = false;
        while !tasks.is_empty() {
            tokio::select! {
                Some(joined) = tasks.join_next() => report_join(joined),
                () = &mut grace, if !told_to_stop => {
                    warn!(transfers = tasks.len(), "TFTP shutdown grace expired: aborting transfers");
                    told_to_stop = true;
                    let _ = stop_tx.send(true);
                }
                () = &mut hard_stop => {
                    tasks.abort_all();
                    while let Some(joined) = tasks.join_next().await {
                        report_join(joined);
                    }
                }
            }
        }
        info!("TFTP server stopped");
        Ok(())
    }
}

/// Binds with `config`, then [`TftpServer::run`]s until `shutdown`.
pub async fn serve(
    config: TftpConfig,
    source: Arc<dyn FileSource>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TftpError> {
    TftpServer::bind(config, source).await?.run(shutdown).await
}

fn report_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        if e.is_panic() {
            error!(error = %e, "TFTP transfer task panicked");
        } else {
            debug!(error = %e, "TFTP transfer task cancelled");
        }
    }
}

/// Asks the kernel to report each datagram's destination address. Returns
/// false (and logs) if it cannot: transfers then answer from an address the
/// routing table picks.
fn enable_destination_info(socket: &UdpSocket, local: SocketAddr) -> bool {
    match bellows_udp::enable_packet_info(socket, local.is_ipv6()) {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "cannot enable IP_PKTINFO; transfers will reply from a routed address");
            false
        }
    }
}

/// The address a transfer socket binds: the request's destination, in the
/// peer's address family.
fn transfer_local_ip(peer: IpAddr, destination: IpAddr) -> IpAddr {
    match (peer, unmapped(destination)) {
        (IpAddr::V4(_), local @ IpAddr::V4(_)) | (IpAddr::V6(_), local @ IpAddr::V6(_)) => local,
        (IpAddr::V4(_), IpAddr::V6(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), IpAddr::V4(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// A request copied out of the receive buffer for its task.
struct OwnedRequest {
    filename: String,
    mode: String,
    options: Vec<(String, String)>,
}

/// Turns requests on the listening socket into transfer tasks, within the
/// concurrency bound.
struct Acceptor {
    shared: Arc<Shared>,
    /// One permit per transfer that may run.
    slots: Arc<Semaphore>,
    /// Transfers running per client address.
    clients: Arc<Mutex<PerClient>>,
    /// Becomes true when running transfers must abort.
    stop: watch::Receiver<bool>,
    tasks: JoinSet<()>,
}

impl Acceptor {
    /// Handles one datagram on the listening socket; never blocks.
    fn dispatch(
        &mut self,
        socket: &UdpSocket,
        datagram: &[u8],
        peer: SocketAddr,
        destination: IpAddr,
    ) {
        let shared = &self.shared;
        let counters = &shared.counters;
        let transfer_peer = SocketAddr::new(unmapped(peer.ip()), peer.port());
        // Both slots are taken before the datagram is even decoded and
        // given back (by drop) unless a transfer starts.
        let request = policy::fingerprint(datagram);
        let client_slot = match ClientSlot::take(&self.clients, transfer_peer, request) {
            Ok(slot) => Some(slot),
            Err(Start::Duplicate) => {
                bump(&counters.duplicates, 1);
                debug!(%peer, "ignored a request from a client whose transfer runs already");
                return;
            }
            Err(_) => None,
        };
        let permit = client_slot
            .as_ref()
            .and_then(|_| Arc::clone(&self.slots).try_acquire_owned().ok());
        let busy = match (&client_slot, &permit) {
            (None, _) => Some(Busy::Client),
            (Some(_), None) => Some(Busy::Server),
            (Some(_), Some(_)) => None,
        };
        let request = match policy::admit(datagram, busy) {
            Admission::Serve(request) => request,
            Admission::Refuse {
                filename,
                refusal,
                busy,
            } => {
                bump(&counters.requests, 1);
                match busy {
                    Some(Busy::Server) => {
                        bump(&counters.busy, 1);
                        warn!(%peer, file = %filename.escape_debug(), "TFTP server busy: refusing request");
                    }
                    Some(Busy::Client) => {
                        bump(&counters.client_busy, 1);
                        warn!(%peer, file = %filename.escape_debug(), "TFTP client at its transfer limit: refusing request");
                    }
                    None => {
                        info!(%peer, file = %filename.escape_debug(), reason = %refusal.reason, "refused TFTP request");
                    }
                }
                reply(socket, peer, refusal.code, refusal.client_message);
                finish(
                    shared,
                    &refused_record(peer, filename, refusal.code, &refusal.reason),
                );
                return;
            }
            Admission::Ignore(why) => {
                bump(&counters.malformed, 1);
                debug!(%peer, "ignored {why}");
                return;
            }
        };
        bump(&counters.requests, 1);
        let (Some(permit), Some(client_slot)) = (permit, client_slot) else {
            return;
        };
        let owned = OwnedRequest {
            filename: request.filename.to_string(),
            mode: request.mode.to_string(),
            options: request
                .options
                .iter()
                .map(|o| (o.name.to_string(), o.value.to_string()))
                .collect(),
        };
        let local_ip = transfer_local_ip(transfer_peer.ip(), destination);
        let task = task::run_transfer(
            Arc::clone(shared),
            owned,
            transfer_peer,
            local_ip,
            self.stop.clone(),
            (permit, client_slot),
        );
        self.tasks.spawn(task);
    }
}

/// One of a client's transfers, counted in [`PerClient`] until dropped
/// (when the transfer's task ends, however it ends).
struct ClientSlot {
    clients: Arc<Mutex<PerClient>>,
    peer: SocketAddr,
    request: u64,
}

impl ClientSlot {
    /// Counts a transfer for `peer`, unless its address is at its limit or
    /// the request is a retransmission ([`Start`] says which).
    fn take(
        clients: &Arc<Mutex<PerClient>>,
        peer: SocketAddr,
        request: u64,
    ) -> Result<Self, Start> {
        let start = clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_start(peer, request);
        match start {
            Start::Started => Ok(Self {
                clients: Arc::clone(clients),
                peer,
                request,
            }),
            refused => Err(refused),
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .end(self.peer, self.request);
    }
}

/// The slots a running transfer holds: one of the server's, one of its
/// client's.
type Slots = (OwnedSemaphorePermit, ClientSlot);

/// The record of a request refused on the listening socket.
fn refused_record(
    peer: SocketAddr,
    filename: &str,
    code: ErrorCode,
    reason: &str,
) -> TransferRecord {
    TransferRecord {
        peer,
        requested: filename.to_string(),
        path: None,
        mac: sanitize_request_path(filename).ok().and_then(|r| r.mac),
        negotiated: None,
        outcome: TransferOutcome::Refused {
            code,
            reason: reason.to_string(),
        },
        bytes_sent: 0,
        duration: Duration::ZERO,
    }
}

/// Sends an ERROR from the listening socket without waiting: if the socket
/// buffer is full the reply is dropped, as UDP allows.
fn reply(socket: &UdpSocket, peer: SocketAddr, code: ErrorCode, message: &str) {
    if let Err(e) = socket.try_send_to(&error_packet(code, message), peer) {
        debug!(%peer, error = %e, "could not send TFTP error reply");
    }
}

/// Counts, logs and reports a finished request.
fn finish(shared: &Shared, record: &TransferRecord) {
    let counters = &shared.counters;
    let file = record.requested.escape_debug();
    let mac = record.mac.map(|m| m.to_string());
    let elapsed_ms = record.duration.as_millis() as u64;
    match &record.outcome {
        TransferOutcome::Completed { bytes } => {
            bump(&counters.completed, 1);
            info!(peer = %record.peer, %file, mac, bytes, elapsed_ms, "TFTP transfer complete");
        }
        TransferOutcome::OptionsDeclined { message } => {
            bump(&counters.declined, 1);
            debug!(peer = %record.peer, %file, mac, %message, "TFTP client ended after option negotiation");
        }
        TransferOutcome::ClientError { code, message } => {
            bump(&counters.failed, 1);
            info!(peer = %record.peer, %file, mac, %code, %message, "TFTP client ended the transfer with an error");
        }
        TransferOutcome::TimedOut { retries } => {
            bump(&counters.failed, 1);
            warn!(peer = %record.peer, %file, mac, retries, "TFTP transfer timed out");
        }
        TransferOutcome::Refused { .. } => bump(&counters.failed, 1),
        TransferOutcome::Aborted { reason } => {
            bump(&counters.failed, 1);
            warn!(peer = %record.peer, %file, mac, %reason, "TFTP transfer aborted");
        }
    }
    if let Some(hook) = &shared.hook {
        hook(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_bad_setting() {
        let mut config = TftpConfig::default();
        assert!(validate(&config).is_ok());
        config.limits.max_block_size = 7;
        let error = validate(&config).unwrap_err().to_string();
        assert!(error.contains("max_block_size"), "{error}");
        config.limits.max_block_size = 1468;
        config.max_transfers = 0;
        assert!(
            validate(&config)
                .unwrap_err()
                .to_string()
                .contains("max_transfers")
        );
        config.max_transfers = 4;
        config.max_transfers_per_client = 0;
        assert!(
            validate(&config)
                .unwrap_err()
                .to_string()
                .contains("max_transfers_per_client")
        );
        config.max_transfers_per_client = 1;
        config.limits.max_stall = Duration::ZERO;
        assert!(
            validate(&config)
                .unwrap_err()
                .to_string()
                .contains("max_stall")
        );
    }

    #[test]
    fn transfer_sockets_use_the_peer_family() {
        let v4: IpAddr = "10.0.0.5".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(unmapped(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            transfer_local_ip(v4, mapped),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(transfer_local_ip(v4, v6), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(transfer_local_ip(v6, v4), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(transfer_local_ip(v6, v6), v6);
    }
}
