//! The DHCP server in a lab network (`bellows_testkit::netns`): the
//! Bellows server on a thread inside the lab's server namespace, machine
//! records for it, and a raw client for packets no stock client sends. The
//! lab, and every client process started in it, is removed on drop.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bellows_dhcp::{DhcpConfig, DhcpServer, DhcpStats, ListenConfig};
use bellows_model::{Hardware, MacAddr};
use bellows_testkit::netns::{BRIDGE, Lab, enter_netns};
use dhcproto::v4::Message;
use dhcproto::{Decodable, Decoder, Encodable};
use socket2::{Domain, Protocol, Socket, Type};

/// The server's address on the test bridge.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 1);

/// The lab for test `tag`: the server's namespace with its bridge at
/// [`SERVER_IP`]/24.
pub fn dhcp_lab(tag: &str) -> Lab {
    Lab::new(tag, "10.66.0.1/24")
}

/// Starts the Bellows DHCP server inside the lab's server namespace, bound
/// to its bridge.
pub fn start_server(lab: &Lab, cfg: DhcpConfig, hosts: Vec<Arc<Hardware>>) -> ServerThread {
    let listen = ListenConfig {
        interface: Some(BRIDGE.into()),
        ..ListenConfig::default()
    };
    ServerThread::start(&lab.server_ns, listen, cfg, hosts)
}

/// Starts the server listening on every interface of the lab's server
/// namespace.
pub fn start_server_unbound(lab: &Lab, cfg: DhcpConfig, hosts: Vec<Arc<Hardware>>) -> ServerThread {
    ServerThread::start(&lab.server_ns, ListenConfig::default(), cfg, hosts)
}

/// The server on its own thread and current-thread runtime, inside the
/// server namespace (so its sockets and interface lookups are there).
pub struct ServerThread {
    /// Its counters.
    pub stats: Arc<DhcpStats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Binds and starts the server; panics (failing the test) if it cannot.
    pub fn start(
        ns: &str,
        listen: ListenConfig,
        cfg: DhcpConfig,
        hosts: Vec<Arc<Hardware>>,
    ) -> ServerThread {
        let map: HashMap<MacAddr, Arc<Hardware>> = hosts
            .into_iter()
            .flat_map(|hw| hw.macs().map(|m| (m, hw.clone())).collect::<Vec<_>>())
            .collect();
        let ns = ns.to_string();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                match DhcpServer::bind(&listen, cfg, Arc::new(map)) {
                    Ok(server) => {
                        let _ = ready_tx.send(Ok(server.stats()));
                        let _ = server
                            .run(async move {
                                let _ = stop_rx.await;
                            })
                            .await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        let stats = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => panic!("DHCP server did not start: {e}"),
            Err(e) => panic!("DHCP server did not start in 10 s: {e}"),
        };
        ServerThread {
            stats,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A hardware record: `mac` reserved `ip`/24 with gateway 10.66.0.1.
pub fn machine(mac: MacAddr, ip: &str, extra_dhcp: serde_json::Value) -> Arc<Hardware> {
    let mut dhcp = serde_json::json!({
        "mac": mac.to_string(),
        "ip": {"address": ip, "netmask": "255.255.255.0", "gateway": "10.66.0.1"}
    });
    if let (Some(d), serde_json::Value::Object(extra)) = (dhcp.as_object_mut(), extra_dhcp) {
        d.extend(extra);
    }
    let doc = serde_json::json!({
        "id": format!("m-{mac}"),
        "network": {"interfaces": [{"dhcp": dhcp, "netboot": {"allow_pxe": true, "allow_workflow": true}}]}
    });
    Arc::new(Hardware::from_value(doc).expect("valid hardware"))
}

/// A DHCP client socket of our own on port `port`, for packets no stock
/// client sends (PXE firmware, iPXE, relays). Requests are built and
/// replies read with dhcproto.
pub struct RawClient {
    socket: UdpSocket,
}

impl RawClient {
    /// Binds `bind` on `ifname` with SO_BROADCAST; call inside the
    /// client's namespace.
    pub fn bind(ifname: &str, bind: SocketAddrV4) -> RawClient {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket.set_broadcast(true).expect("SO_BROADCAST");
        socket
            .bind_device(Some(ifname.as_bytes()))
            .expect("SO_BINDTODEVICE");
        socket.bind(&bind.into()).expect("bind client socket");
        RawClient {
            socket: socket.into(),
        }
    }

    /// Sends `msg` to `to`.
    pub fn send(&self, msg: &Message, to: SocketAddrV4) {
        let bytes = msg.to_vec().expect("encode");
        self.socket.send_to(&bytes, to).expect("send");
    }

    /// Collects replies with transaction id `xid` for `window`.
    pub fn collect(&self, xid: u32, window: Duration) -> Vec<(SocketAddrV4, Message)> {
        let deadline = Instant::now() + window;
        let mut replies = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return replies;
            }
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            match self.socket.recv_from(&mut buf) {
                Ok((n, std::net::SocketAddr::V4(from))) => {
                    if let Ok(msg) = Message::decode(&mut Decoder::new(&buf[..n]))
                        && msg.xid() == xid
                        && msg.opcode() == dhcproto::v4::Opcode::BootReply
                    {
                        replies.push((from, msg));
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("receive: {e}"),
            }
        }
    }

    /// Sends `msg` and collects replies for `window`.
    pub fn exchange(
        &self,
        msg: &Message,
        to: SocketAddrV4,
        window: Duration,
    ) -> Vec<(SocketAddrV4, Message)> {
        self.send(msg, to);
        self.collect(msg.xid(), window)
    }
}

/// Reads a `KEY=value` file (the client scripts dump their environment).
pub fn read_env(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
