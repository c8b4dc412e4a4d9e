//! Test networks for the DHCP server: network namespaces the test creates,
//! joined by a bridge in the server's namespace, with the Bellows server on
//! a thread inside it and real clients (dhclient, udhcpc, dnsmasq) started
//! with `ip netns exec`. Everything is removed on drop, even when the test
//! fails: processes started here are killed by PID, then the namespaces
//! are deleted.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bellows_dhcp::{DhcpConfig, DhcpServer, DhcpStats, ListenConfig};
use bellows_model::{Hardware, MacAddr};
use dhcproto::v4::Message;
use dhcproto::{Decodable, Decoder, Encodable};
use socket2::{Domain, Protocol, Socket, Type};

/// The server's address on the test bridge.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 1);

/// Is this process root (needed for `ip netns`)?
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// False (with a message) when the test must be skipped: not root and not
/// in CI. CI runs as root, so there a missing privilege fails the test.
pub fn can_run() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs root for network namespaces, and CI must run it"
    );
    eprintln!("skipped: needs root (network namespaces); CI runs it as root");
    false
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Creates namespace `name`, first removing one of that name that a killed
/// earlier run (which had this run's PID) left behind.
fn add_netns(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
    ip(&["netns", "add", name]);
}

fn ip(args: &[&str]) {
    run("ip", args);
}

/// Installs Debian packages when `binary` is missing; one apt at a time
/// across parallel test processes (flock).
pub fn ensure_installed(binary: &str, package: &str) -> String {
    let find = || {
        ["/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"]
            .iter()
            .map(|dir| format!("{dir}{binary}"))
            .find(|p| Path::new(p).exists())
    };
    if let Some(path) = find() {
        return path;
    }
    let install = format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {package} \
         || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {package})"
    );
    let status = Command::new("flock")
        .args([
            "-w",
            "600",
            "/tmp/bellows-dhcp-tests-apt.lock",
            "sh",
            "-c",
            &install,
        ])
        .stdout(Stdio::null())
        .status()
        .expect("run apt-get");
    assert!(status.success(), "apt-get install {package} failed");
    find().unwrap_or_else(|| panic!("{package} installed but {binary} not found"))
}

/// Namespaces and links made for one test.
pub struct Lab {
    prefix: String,
    /// The server's namespace (bridge `br0` at 10.66.0.1/24).
    pub server_ns: String,
    namespaces: Vec<String>,
}

/// A namespace plugged into the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// The interface inside it.
    pub ifname: String,
    /// Its MAC.
    pub mac: MacAddr,
}

impl Lab {
    /// A fresh server namespace; `tag` (≤ 4 characters) keeps names unique
    /// between tests of one process, the PID between processes.
    pub fn new(tag: &str) -> Lab {
        assert!(tag.len() <= 4, "tag {tag:?} too long for interface names");
        let prefix = format!("bd{}{tag}", std::process::id() % 100_000);
        let server_ns = format!("{prefix}-srv");
        let lab = Lab {
            prefix,
            server_ns: server_ns.clone(),
            namespaces: vec![server_ns.clone()],
        };
        // Registered before creation, so a failure below still cleans up.
        add_netns(&server_ns);
        let ns = server_ns.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", ns, "addr", "add", "10.66.0.1/24", "dev", "br0"]);
        ip(&["-n", ns, "link", "set", "br0", "up"]);
        lab
    }

    /// Adds namespace `<prefix>-<name>` with interface MAC `mac` and, if
    /// given, address `addr/24`, on a veth into the bridge.
    pub fn host(&mut self, name: &str, mac: MacAddr, addr: Option<&str>) -> Host {
        self.host_on("br0", name, mac, addr)
    }

    /// Adds another bridge `name` with address `cidr` to the server's
    /// namespace: a second provisioning network on the same server.
    pub fn bridge(&self, name: &str, cidr: &str) {
        let ns = self.server_ns.as_str();
        ip(&["-n", ns, "link", "add", name, "type", "bridge"]);
        ip(&["-n", ns, "addr", "add", cidr, "dev", name]);
        ip(&["-n", ns, "link", "set", name, "up"]);
    }

    /// Like [`Lab::host`], plugged into bridge `bridge`.
    pub fn host_on(&mut self, bridge: &str, name: &str, mac: MacAddr, addr: Option<&str>) -> Host {
        let ns = format!("{}-{name}", self.prefix);
        self.namespaces.push(ns.clone());
        add_netns(&ns);
        let n = self.namespaces.len();
        let inner = format!("{}c{n}", self.prefix);
        let outer = format!("{}p{n}", self.prefix);
        assert!(inner.len() <= 15 && outer.len() <= 15);
        ip(&[
            "link",
            "add",
            &inner,
            "netns",
            &ns,
            "type",
            "veth",
            "peer",
            "name",
            &outer,
            "netns",
            &self.server_ns,
        ]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns,
            "link",
            "set",
            &inner,
            "address",
            &mac.to_string(),
        ]);
        if let Some(addr) = addr {
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inner,
            ]);
        }
        ip(&["-n", &ns, "link", "set", &inner, "up"]);
        ip(&[
            "-n",
            &self.server_ns,
            "link",
            "set",
            &outer,
            "master",
            bridge,
        ]);
        ip(&["-n", &self.server_ns, "link", "set", &outer, "up"]);
        Host {
            ns,
            ifname: inner,
            mac,
        }
    }

    /// Adds namespace `<prefix>-<name>` behind `gateway`: a veth between
    /// them, `gateway_cidr` on the gateway's end, MAC `mac` and no address
    /// on the new end. For a second subnet reached through a relay.
    pub fn behind(
        &mut self,
        gateway: &Host,
        name: &str,
        mac: MacAddr,
        gateway_cidr: &str,
    ) -> (Host, String) {
        let ns = format!("{}-{name}", self.prefix);
        self.namespaces.push(ns.clone());
        add_netns(&ns);
        let n = self.namespaces.len();
        let inner = format!("{}c{n}", self.prefix);
        let outer = format!("{}g{n}", self.prefix);
        ip(&[
            "link",
            "add",
            &inner,
            "netns",
            &ns,
            "type",
            "veth",
            "peer",
            "name",
            &outer,
            "netns",
            &gateway.ns,
        ]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns,
            "link",
            "set",
            &inner,
            "address",
            &mac.to_string(),
        ]);
        ip(&["-n", &ns, "link", "set", &inner, "up"]);
        ip(&[
            "-n",
            &gateway.ns,
            "addr",
            "add",
            gateway_cidr,
            "dev",
            &outer,
        ]);
        ip(&["-n", &gateway.ns, "link", "set", &outer, "up"]);
        (
            Host {
                ns,
                ifname: inner,
                mac,
            },
            outer,
        )
    }

    /// Adds a route in the server's namespace.
    pub fn server_route(&self, to: &str, via: &str) {
        ip(&["-n", &self.server_ns, "route", "add", to, "via", via]);
    }

    /// Starts the Bellows DHCP server inside the server namespace, bound
    /// to `br0`.
    pub fn start_server(&self, cfg: DhcpConfig, hosts: Vec<Arc<Hardware>>) -> ServerThread {
        let listen = ListenConfig {
            interface: Some("br0".into()),
            ..ListenConfig::default()
        };
        ServerThread::start(&self.server_ns, listen, cfg, hosts)
    }

    /// Starts the server listening on every interface of its namespace.
    pub fn start_server_unbound(&self, cfg: DhcpConfig, hosts: Vec<Arc<Hardware>>) -> ServerThread {
        ServerThread::start(&self.server_ns, ListenConfig::default(), cfg, hosts)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            // Anything still running inside was started by this test.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Moves the calling thread into network namespace `ns`. Sockets it then
/// creates belong to that namespace for good.
pub fn enter_netns(ns: &str) {
    let file = File::open(format!("/run/netns/{ns}")).expect("open the namespace");
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// Runs `f` on a thread inside namespace `ns` and returns its result.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
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

/// A child process killed (by PID) when dropped.
pub struct ChildGuard {
    child: Child,
    /// What it is, for messages.
    pub name: String,
}

impl ChildGuard {
    /// Runs `args` inside namespace `ns`, output to `log`.
    pub fn spawn_in(ns: &str, args: &[&str], log: &Path) -> ChildGuard {
        let out = File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", args[0]));
        ChildGuard {
            child,
            name: args[0].to_string(),
        }
    }

    /// Waits up to `limit` for the process to exit; its status if it did.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 50 ms for at most `limit`.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
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
