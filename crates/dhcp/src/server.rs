//! The socket loop: a thin shell of IO around [`respond`].
//!
//! It binds UDP 67 (and 4011 in proxy mode) with SO_BROADCAST and
//! SO_REUSEADDR, optionally SO_BINDTODEVICE, and IP_PKTINFO so that each
//! datagram tells which interface and local address it arrived on. That is
//! what makes the server identifier right on a multi-homed host, and lets a
//! broadcast reply leave by the interface the request came in on.
//! Lookups are in memory (see [`Lookup`]): the loop never waits on the store.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bellows_udp::Datagram;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::config::{ConfigError, DhcpConfig, ListenConfig, Mode};
use crate::lookup::Lookup;
use crate::responder::{Arrival, Decision, Destination, DropReason, Service, respond};
use crate::stats::DhcpStats;

/// Receive buffer: larger than any DHCP request a client sends; a datagram
/// that does not fit is counted as malformed.
const RECV_BUFFER_LEN: usize = 4096;
/// How often the counters are summarised in the log (when they moved).
const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Interface addresses are re-read at most this often (and when a packet
/// arrives on an interface not seen before).
const INTERFACE_REFRESH: Duration = Duration::from_secs(30);

/// Why the DHCP service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration would produce broken replies.
    #[error("invalid DHCP configuration: {0}")]
    Config(#[from] ConfigError),
    /// Mode `off` has nothing to listen for; do not start the service.
    #[error("DHCP mode is off: there is nothing to listen for")]
    ModeOff,
    /// The server must be created inside a Tokio runtime.
    #[error("the DHCP server must be bound from inside a Tokio runtime")]
    NoRuntime,
    /// A socket could not be set up (port in use, no such interface, or
    /// not permitted: port 67 needs root or CAP_NET_BIND_SERVICE, and
    /// SO_BINDTODEVICE needs CAP_NET_RAW).
    #[error("DHCP socket {addr}: cannot {action}: {source}")]
    Socket {
        /// What was being done.
        action: &'static str,
        /// The address being bound.
        addr: SocketAddrV4,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A bound DHCP service, ready to [`run`](DhcpServer::run).
pub struct DhcpServer {
    listeners: Vec<Listener>,
    shared: Arc<Shared>,
}

struct Listener {
    service: Service,
    bound: SocketAddrV4,
    socket: UdpSocket,
}

struct Shared {
    cfg: DhcpConfig,
    hosts: Arc<dyn Lookup>,
    stats: Arc<DhcpStats>,
    interfaces: Mutex<InterfaceTable>,
}

impl DhcpServer {
    /// Validates `cfg` and binds the sockets (port 67, and 4011 in proxy
    /// mode). Call from inside a Tokio runtime.
    pub fn bind(
        listen: &ListenConfig,
        cfg: DhcpConfig,
        hosts: Arc<dyn Lookup>,
    ) -> Result<DhcpServer, ServerError> {
        cfg.validate()?;
        if cfg.mode == Mode::Off {
            return Err(ServerError::ModeOff);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ServerError::NoRuntime);
        }
        let mut ports = vec![(Service::Dhcp, listen.port)];
        if cfg.mode == Mode::Proxy {
            ports.push((Service::PxeBootServer, listen.pxe_port));
        }
        let mut listeners = Vec::new();
        for (service, port) in ports {
            let addr = SocketAddrV4::new(listen.address, port);
            let std_socket = open_socket(addr, listen.interface.as_deref())?;
            let bound = match std_socket.local_addr() {
                Ok(SocketAddr::V4(a)) => a,
                _ => addr,
            };
            let socket = UdpSocket::from_std(std_socket).map_err(|source| ServerError::Socket {
                action: "register with the runtime",
                addr,
                source,
            })?;
            listeners.push(Listener {
                service,
                bound,
                socket,
            });
        }
        Ok(DhcpServer {
            listeners,
            shared: Arc::new(Shared {
                cfg,
                hosts,
                stats: Arc::new(DhcpStats::default()),
                interfaces: Mutex::new(InterfaceTable::default()),
            }),
        })
    }

    /// The bound addresses (useful with port 0 in tests).
    pub fn local_addrs(&self) -> Vec<(Service, SocketAddrV4)> {
        self.listeners
            .iter()
            .map(|l| (l.service, l.bound))
            .collect()
    }

    /// The live counters; take a [`snapshot`](DhcpStats::snapshot) to read.
    pub fn stats(&self) -> Arc<DhcpStats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` completes. Per-packet problems (malformed
    /// input, send failures) are counted and logged, never fatal.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let mut listeners = self.listeners.into_iter();
        let first = listeners.next();
        let second = listeners.next();
        let shared = self.shared;
        tokio::select! {
            () = shutdown => Ok(()),
            () = summarise(shared.stats.clone()) => Ok(()),
            () = serve_optional(first, shared.clone()) => Ok(()),
            () = serve_optional(second, shared.clone()) => Ok(()),
        }
    }
}

/// Logs, at info, what the service did in each [`SUMMARY_EVERY`] that
/// saw traffic: the replies themselves are logged at debug.
async fn summarise(stats: Arc<DhcpStats>) {
    let mut last = stats.snapshot();
    let mut tick = tokio::time::interval(SUMMARY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = stats.snapshot();
        if now.received == last.received {
            continue;
        }
        let d = |a: u64, b: u64| a.saturating_sub(b);
        tracing::info!(
            received = d(now.received, last.received),
            replied = d(now.replied, last.replied),
            naks = d(now.naks, last.naks),
            unknown_clients = d(now.dropped_unknown, last.dropped_unknown),
            not_answered = d(now.dropped_other, last.dropped_other),
            malformed = d(now.dropped_malformed, last.dropped_malformed),
            send_errors = d(now.send_errors, last.send_errors),
            "DHCP in the last {} s",
            SUMMARY_EVERY.as_secs()
        );
        last = now;
    }
}

async fn serve_optional(listener: Option<Listener>, shared: Arc<Shared>) {
    match listener {
        Some(l) => serve(l, shared).await,
        None => std::future::pending().await,
    }
}

fn open_socket(
    addr: SocketAddrV4,
    interface: Option<&str>,
) -> Result<std::net::UdpSocket, ServerError> {
    let err = |action: &'static str| {
        move |source: io::Error| ServerError::Socket {
            action,
            addr,
            source,
        }
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(err("create a UDP socket"))?;
    socket
        .set_reuse_address(true)
        .map_err(err("set SO_REUSEADDR"))?;
    socket
        .set_broadcast(true)
        .map_err(err("set SO_BROADCAST"))?;
    if let Some(name) = interface {
        socket
            .bind_device(Some(name.as_bytes()))
            .map_err(err("bind to the interface (SO_BINDTODEVICE)"))?;
    }
    bellows_udp::enable_packet_info(&socket, false).map_err(err("set IP_PKTINFO"))?;
    bellows_udp::enlarge_receive_buffer(&socket, bellows_udp::STORM_RECEIVE_QUEUE_BYTES);
    socket
        .set_nonblocking(true)
        .map_err(err("make the socket non-blocking"))?;
    socket.bind(&addr.into()).map_err(err("bind"))?;
    Ok(socket.into())
}

async fn serve(listener: Listener, shared: Arc<Shared>) {
    let mut buf = vec![0u8; RECV_BUFFER_LEN];
    let mut control = bellows_udp::control_buffer();
    loop {
        let mut received = bellows_udp::recv(&listener.socket, &mut buf, &mut control).await;
        // This datagram and up to DRAIN_PER_WAKE more already queued, before the
        // loop yields: a storm's burst is taken without one trip through
        // the runtime's readiness machinery per packet.
        for taken in 0..=bellows_udp::DRAIN_PER_WAKE {
            match received {
                Ok(datagram) => answer(&listener, &shared, &buf, &datagram).await,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(addr = %listener.bound, "DHCP receive failed: {e}");
                    // Do not spin if the error repeats.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    break;
                }
            }
            if taken == bellows_udp::DRAIN_PER_WAKE {
                break;
            }
            received = bellows_udp::try_recv(&listener.socket, &mut buf, &mut control);
        }
    }
}

/// Decides on one received datagram (in `buf`) and sends the reply, if any.
async fn answer(listener: &Listener, shared: &Shared, buf: &[u8], received: &Datagram) {
    shared.stats.received();
    let SocketAddr::V4(source) = received.source else {
        return;
    };
    if received.truncated || received.len > buf.len() {
        shared.stats.malformed();
        tracing::debug!(source = %received.source, "dropped a datagram larger than {RECV_BUFFER_LEN} bytes");
        return;
    }
    let (ifindex, arrival) = shared.arrival(listener, received, source);
    let packet = buf.get(..received.len).unwrap_or_default();
    let decision = respond(packet, &arrival, &shared.cfg, &*shared.hosts);
    match &decision {
        Decision::Reply(reply) => {
            let (to, out_if) = match reply.destination {
                Destination::Broadcast { port } => {
                    (SocketAddrV4::new(Ipv4Addr::BROADCAST, port), ifindex)
                }
                Destination::Unicast(addr) => (addr, 0),
            };
            let sent = bellows_udp::send_v4_from(
                &listener.socket,
                &reply.payload,
                to,
                out_if,
                arrival.local_addr,
            )
            .await;
            match sent {
                Ok(_) => {
                    // Per packet: at debug (a storm's thousands of lines
                    // cost a third of the exchange's CPU at info); the
                    // periodic summary below says how many at info.
                    tracing::debug!(
                        mac = %reply.mac,
                        kind = ?reply.message_type,
                        yiaddr = %reply.yiaddr,
                        boot = ?reply.boot,
                        to = %to,
                        "DHCP reply"
                    );
                    shared.stats.decided(&decision);
                    shared.hosts.replied(reply);
                }
                Err(e) => {
                    shared.stats.send_error();
                    tracing::warn!(mac = %reply.mac, to = %to, "DHCP reply not sent: {e}");
                }
            }
        }
        Decision::Drop(reason) => {
            match reason {
                DropReason::Malformed(_) => {
                    tracing::debug!(source = %received.source, "DHCP: {reason}")
                }
                DropReason::Declined { .. } => {} // warned by the responder
                _ => tracing::debug!(source = %received.source, "DHCP not answered: {reason}"),
            }
            shared.stats.decided(&decision);
        }
    }
}

impl Shared {
    /// Builds the responder's view of where a datagram arrived; returns the
    /// interface index too, for sending the reply back out of it.
    fn arrival(
        &self,
        listener: &Listener,
        received: &Datagram,
        source: SocketAddrV4,
    ) -> (u32, Arrival) {
        let (ifindex, local_addr) = match received.info {
            Some(info) => match info.local {
                IpAddr::V4(local) if !local.is_unspecified() => (info.ifindex, local),
                _ => (info.ifindex, *listener.bound.ip()),
            },
            None => (0, *listener.bound.ip()),
        };
        let netmask = match self.interfaces.lock() {
            Ok(mut table) => table.netmask(ifindex, local_addr),
            Err(poisoned) => poisoned.into_inner().netmask(ifindex, local_addr),
        };
        (
            ifindex,
            Arrival {
                service: listener.service,
                local_addr,
                netmask,
                source,
            },
        )
    }
}

/// IPv4 addresses and masks by interface index, from getifaddrs(3).
#[derive(Default)]
struct InterfaceTable {
    by_index: HashMap<u32, Vec<(Ipv4Addr, Ipv4Addr)>>,
    refreshed: Option<Instant>,
}

impl InterfaceTable {
    fn netmask(&mut self, ifindex: u32, local: Ipv4Addr) -> Option<Ipv4Addr> {
        let age = self.refreshed.map(|t| t.elapsed());
        let stale = age.is_none_or(|a| a > INTERFACE_REFRESH);
        let unknown =
            !self.by_index.contains_key(&ifindex) && age.is_none_or(|a| a > Duration::from_secs(1));
        if stale || unknown {
            self.refresh();
        }
        let find = |addrs: &Vec<(Ipv4Addr, Ipv4Addr)>| {
            addrs.iter().find(|(a, _)| *a == local).map(|(_, m)| *m)
        };
        match self.by_index.get(&ifindex) {
            Some(addrs) => find(addrs).or_else(|| addrs.first().map(|(_, m)| *m)),
            None => self.by_index.values().find_map(find),
        }
    }

    fn refresh(&mut self) {
        self.refreshed = Some(Instant::now());
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return;
        };
        let mut by_index: HashMap<u32, Vec<(Ipv4Addr, Ipv4Addr)>> = HashMap::new();
        let mut index_of: HashMap<String, u32> = HashMap::new();
        for ifa in addrs {
            let addr = ifa
                .address
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .map(|a| a.ip());
            let mask = ifa
                .netmask
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .map(|a| a.ip());
            let (Some(addr), Some(mask)) = (addr, mask) else {
                continue;
            };
            let index = match index_of.get(&ifa.interface_name) {
                Some(i) => *i,
                None => {
                    let Ok(i) = nix::net::if_::if_nametoindex(ifa.interface_name.as_str()) else {
                        continue;
                    };
                    index_of.insert(ifa.interface_name.clone(), i);
                    i
                }
            };
            by_index.entry(index).or_default().push((addr, mask));
        }
        self.by_index = by_index;
    }
}
