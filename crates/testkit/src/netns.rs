//! Lab networks: network namespaces joined by bridges, made by the test
//! and removed, with every process still running inside them, when the
//! [`Lab`] is dropped. Real clients and servers then talk over real
//! interfaces without touching the host's network.

use std::fs::File;
use std::process::Command;

/// Whether this process is root, which `ip netns` needs. Asked of `id -u`
/// rather than a syscall so the answer matches what `ip` will see.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether a namespace test may run: false (with a message) when it must be
/// skipped because this is not root. CI runs as root, so there a missing
/// privilege fails the test instead of skipping it silently.
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

/// Runs `ip` with `args`, failing the test with its stderr if it fails: a
/// lab that is only half built would make the test fail later, obscurely.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates namespace `name`, first removing one of that name that a killed
/// earlier run (which had this run's PID) left behind.
fn add_netns(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
    ip(&["netns", "add", name]);
}

/// Kills every process inside namespace `ns`, then deletes it.
fn remove_netns(ns: &str) {
    // Anything still running inside was started by this test.
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// The name of the bridge [`Lab::new`] makes in the server's namespace.
pub const BRIDGE: &str = "br0";

/// A server namespace with bridge [`BRIDGE`], and the host namespaces
/// plugged into it; all removed on drop.
pub struct Lab {
    prefix: String,
    /// The server's namespace, where the bridges are.
    pub server_ns: String,
    namespaces: Vec<String>,
}

/// A namespace plugged into the lab, and its one interface there.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name.
    pub ns: String,
    /// The interface inside it.
    pub ifname: String,
}

impl Lab {
    /// Creates namespace `<prefix>-srv` with bridge [`BRIDGE`] at
    /// `server_cidr` (e.g. `10.66.0.1/24`). `tag` (at most 4 characters)
    /// keeps names unique between the tests of one process, the PID in the
    /// prefix between processes; interface names must fit in 15 bytes.
    pub fn new(tag: &str, server_cidr: &str) -> Lab {
        assert!(tag.len() <= 4, "tag {tag:?} too long for interface names");
        let prefix = format!("bt{}{tag}", std::process::id() % 100_000);
        let server_ns = format!("{prefix}-srv");
        // Registered before creation, so a failure below still cleans up.
        let lab = Lab {
            prefix,
            server_ns: server_ns.clone(),
            namespaces: vec![server_ns.clone()],
        };
        add_netns(&server_ns);
        ip(&["-n", &server_ns, "link", "set", "lo", "up"]);
        lab.bridge(BRIDGE, server_cidr);
        lab
    }

    /// Adds another bridge `name` at `cidr` to the server's namespace: a
    /// second provisioning network on the same server.
    pub fn bridge(&self, name: &str, cidr: &str) {
        let ns = self.server_ns.as_str();
        ip(&["-n", ns, "link", "add", name, "type", "bridge"]);
        ip(&["-n", ns, "addr", "add", cidr, "dev", name]);
        ip(&["-n", ns, "link", "set", name, "up"]);
    }

    /// Starts describing host namespace `<prefix>-<name>`; [`HostPlan::add`]
    /// creates it. By default it is on [`BRIDGE`], with the kernel's random
    /// MAC and no address.
    pub fn host<'a>(&'a mut self, name: &str) -> HostPlan<'a> {
        HostPlan {
            lab: self,
            name: name.to_string(),
            bridge: BRIDGE.to_string(),
            mac: None,
            cidr: None,
        }
    }

    /// Registers and creates a new namespace `<prefix>-<name>`; returns it
    /// and its index, which keeps its interface names unique.
    fn add_host_ns(&mut self, name: &str) -> (String, usize) {
        let ns = format!("{}-{name}", self.prefix);
        self.namespaces.push(ns.clone());
        add_netns(&ns);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        (ns, self.namespaces.len())
    }

    /// A veth pair: `inner` in `ns` (with `mac` if given), `outer` in
    /// `peer_ns`; both left down.
    fn veth(&self, ns: &str, inner: &str, peer_ns: &str, outer: &str, mac: Option<&str>) {
        assert!(
            inner.len() <= 15 && outer.len() <= 15,
            "interface names {inner}, {outer} longer than 15 bytes"
        );
        ip(&[
            "link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer, "netns",
            peer_ns,
        ]);
        if let Some(mac) = mac {
            ip(&["-n", ns, "link", "set", inner, "address", mac]);
        }
    }

    /// Adds namespace `<prefix>-<name>` behind `gateway`: a veth between
    /// them, `gateway_cidr` on the gateway's end, MAC `mac` and no address
    /// on the new end. Returns the new host and the gateway's interface:
    /// a second subnet reached through a relay.
    pub fn behind(
        &mut self,
        gateway: &Host,
        name: &str,
        mac: impl std::fmt::Display,
        gateway_cidr: &str,
    ) -> (Host, String) {
        let (ns, n) = self.add_host_ns(name);
        let inner = format!("{}c{n}", self.prefix);
        let outer = format!("{}g{n}", self.prefix);
        self.veth(&ns, &inner, &gateway.ns, &outer, Some(&mac.to_string()));
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
        (Host { ns, ifname: inner }, outer)
    }

    /// Adds a route in the server's namespace, for subnets behind a host.
    pub fn server_route(&self, to: &str, via: &str) {
        ip(&["-n", &self.server_ns, "route", "add", to, "via", via]);
    }

    /// Adds tap device number `n` on [`BRIDGE`] for a VM: QEMU runs in the
    /// server namespace and opens it by the name returned.
    pub fn tap(&mut self, n: u32) -> String {
        let tap = format!("{}t{n}", self.prefix);
        let ns = self.server_ns.as_str();
        ip(&["-n", ns, "tuntap", "add", "dev", &tap, "mode", "tap"]);
        ip(&["-n", ns, "link", "set", &tap, "master", BRIDGE]);
        ip(&["-n", ns, "link", "set", &tap, "up"]);
        tap
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            remove_netns(ns);
        }
    }
}

/// A host namespace about to be plugged into a lab bridge, so that the
/// optional parts (MAC, address, which bridge) are named at the call site.
#[must_use = "a host is only created by `add`"]
pub struct HostPlan<'a> {
    lab: &'a mut Lab,
    name: String,
    bridge: String,
    mac: Option<String>,
    cidr: Option<String>,
}

impl HostPlan<'_> {
    /// Gives the host's interface this MAC, for servers that know machines
    /// by MAC.
    pub fn mac(mut self, mac: impl std::fmt::Display) -> Self {
        self.mac = Some(mac.to_string());
        self
    }

    /// Gives the host's interface a static address (`a.b.c.d/len`);
    /// without one it waits for DHCP.
    pub fn addr(mut self, cidr: &str) -> Self {
        self.cidr = Some(cidr.to_string());
        self
    }

    /// Plugs the host into bridge `bridge` (made by [`Lab::bridge`])
    /// instead of [`BRIDGE`].
    pub fn bridge(mut self, bridge: &str) -> Self {
        self.bridge = bridge.to_string();
        self
    }

    /// Creates the namespace and its veth into the bridge, both ends up.
    pub fn add(self) -> Host {
        let lab = self.lab;
        let (ns, n) = lab.add_host_ns(&self.name);
        let inner = format!("{}c{n}", lab.prefix);
        let outer = format!("{}p{n}", lab.prefix);
        lab.veth(&ns, &inner, &lab.server_ns, &outer, self.mac.as_deref());
        if let Some(cidr) = &self.cidr {
            ip(&["-n", &ns, "addr", "add", cidr, "dev", &inner]);
        }
        ip(&["-n", &ns, "link", "set", &inner, "up"]);
        let server = lab.server_ns.as_str();
        ip(&["-n", server, "link", "set", &outer, "master", &self.bridge]);
        ip(&["-n", server, "link", "set", &outer, "up"]);
        Host { ns, ifname: inner }
    }
}

/// Moves the calling thread into network namespace `ns`. Sockets it then
/// creates belong to that namespace for good, so do this on a thread of
/// its own (see [`in_netns`]).
pub fn enter_netns(ns: &str) {
    let file = File::open(format!("/run/netns/{ns}")).expect("open the namespace");
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// Runs `f` on a fresh thread inside namespace `ns` and returns its result
/// (a panic in `f` fails the caller): in-process clients without moving the
/// test's own thread.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
