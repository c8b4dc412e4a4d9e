//! Test networks: network namespaces joined by a bridge, created by the
//! test and removed (with every process started in them) when dropped.

use std::process::Command;

/// Is this process root (needed for `ip netns`)?
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Returns false (and says why) when the test must be skipped: not root and
/// not in CI. In CI, which runs as root, a missing privilege is a failure.
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

/// Creates namespace `name`, first removing one of that name that a killed
/// earlier run (which had this run's PID) left behind.
fn add_netns(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
    ip(&["netns", "add", name]);
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server namespace with a bridge, and host namespaces plugged into it.
pub struct Lab {
    prefix: String,
    pub server_ns: String,
    namespaces: Vec<String>,
}

impl Lab {
    /// Creates `<prefix>-srv` with bridge `br0` at `server_ip/24`.
    pub fn new(tag: &str, server_ip: &str) -> Lab {
        let prefix = format!("bl{}{tag}", std::process::id() % 100_000);
        let server_ns = format!("{prefix}-srv");
        let mut lab = Lab {
            prefix,
            server_ns: server_ns.clone(),
            namespaces: Vec::new(),
        };
        add_netns(&server_ns);
        lab.namespaces.push(server_ns.clone());
        let ns = server_ns.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{server_ip}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", ns, "link", "set", "br0", "up"]);
        lab
    }

    /// Adds host namespace `name` with `addr/24` on a veth into the bridge.
    pub fn host(&mut self, name: &str, addr: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        add_netns(&ns);
        self.namespaces.push(ns.clone());
        // veth names are limited to 15 characters.
        let n = self.namespaces.len();
        let (a, b) = (
            format!("{}a{n}", self.prefix),
            format!("{}b{n}", self.prefix),
        );
        ip(&[
            "link",
            "add",
            &a,
            "netns",
            &ns,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &self.server_ns,
        ]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &a]);
        ip(&["-n", &ns, "link", "set", &a, "up"]);
        ip(&["-n", &self.server_ns, "link", "set", &b, "master", "br0"]);
        ip(&["-n", &self.server_ns, "link", "set", &b, "up"]);
        ns
    }
}

impl Lab {
    /// The veth name inside host namespace `ns` (as made by [`Lab::host`]).
    pub fn host_interface(&self, ns: &str) -> String {
        let n = self
            .namespaces
            .iter()
            .position(|x| x == ns)
            .map_or(0, |i| i + 1);
        format!("{}a{n}", self.prefix)
    }

    /// Adds a tap device on the bridge for a VM (QEMU runs in the server
    /// namespace and opens it by name).
    pub fn tap(&mut self, n: u32) -> String {
        let tap = format!("{}t{n}", self.prefix);
        ip(&[
            "-n",
            &self.server_ns,
            "tuntap",
            "add",
            "dev",
            &tap,
            "mode",
            "tap",
        ]);
        ip(&["-n", &self.server_ns, "link", "set", &tap, "master", "br0"]);
        ip(&["-n", &self.server_ns, "link", "set", &tap, "up"]);
        tap
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            // Any process still inside dies with it; `ip netns pids` names them.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
