//! The LLDP listener against a real peer: Debian's `lldpd`, in a network
//! namespace of its own, cabled by a veth to a second namespace where the
//! listener runs. Both namespaces are made by the test and removed (with
//! everything running in them) when it ends, passed or failed; the veth is
//! created straight inside them, so no frame touches the host's network.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bellows_testkit::netns::{can_run, in_netns, ip};
use bellows_testkit::packages::apt_install;
use bellows_testkit::process::{ChildGuard, wait_for};
use bellows_worker::lldp::{Heard, LLDP_GROUP, Listener, lists_group, set_all_multicast};

/// Longest wait for lldpd's first frame (it sends every second here).
const HEAR_WITHIN: Duration = Duration::from_secs(40);

/// Two namespaces joined by a veth: `switch_if` in `switch_ns`, `host_if`
/// in `host_ns`. Dropping it kills what runs inside and deletes both.
struct Cable {
    switch_ns: String,
    host_ns: String,
    switch_if: String,
    host_if: String,
}

impl Cable {
    /// `letter` keeps the names of one process's tests apart, the PID
    /// those of different processes.
    fn new(letter: char) -> Cable {
        let tag = format!("bl{}{letter}", std::process::id() % 1_000_000);
        let cable = Cable {
            switch_ns: format!("{tag}-sw"),
            host_ns: format!("{tag}-host"),
            switch_if: format!("{tag}s"),
            host_if: format!("{tag}h"),
        };
        // Registered before anything exists, so a failure below still
        // cleans up; a namespace a killed earlier run (with this PID) left
        // is removed first.
        for ns in [&cable.switch_ns, &cable.host_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "link",
            "add",
            &cable.switch_if,
            "netns",
            &cable.switch_ns,
            "type",
            "veth",
            "peer",
            "name",
            &cable.host_if,
            "netns",
            &cable.host_ns,
        ]);
        ip(&[
            "-n",
            &cable.switch_ns,
            "link",
            "set",
            &cable.switch_if,
            "up",
        ]);
        ip(&["-n", &cable.host_ns, "link", "set", &cable.host_if, "up"]);
        cable
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        for ns in [&self.switch_ns, &self.host_ns] {
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

/// lldpd's path, installing Debian's package if it is missing; `None`
/// (with the reason printed) when it cannot be installed outside CI.
fn lldpd() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/sbin/lldpd");
    if path.exists() {
        return Some(path);
    }
    let installed = std::panic::catch_unwind(|| apt_install(&["lldpd"]));
    match installed {
        Ok(()) if path.exists() => Some(path),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "lldpd could not be installed (apt-get install lldpd), and CI must run this test"
            )
        }
        _ => {
            eprintln!("skipped: lldpd is not installed and apt-get install lldpd failed");
            None
        }
    }
}

/// The MAC of `interface` in namespace `ns`.
fn mac_of(ns: &str, interface: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/sys/class/net/{interface}/address"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn hears_lldpd_across_a_veth() {
    if !can_run() {
        return;
    }
    let Some(lldpd) = lldpd() else { return };
    let cable = Cable::new('a');
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lldpd.conf");
    std::fs::write(
        &conf,
        format!(
            "configure system hostname leaf-test\n\
             configure lldp tx-interval 1\n\
             configure lldp portidsubtype ifname\n\
             configure ports {} lldp portdescription \"rack 7 port 12\"\n",
            cable.switch_if
        ),
    )
    .unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let log = dir.path().join("lldpd.log");
    let lldpd_path = lldpd.to_string_lossy().into_owned();
    // -d: in the foreground, so the PID is lldpd's (`ip netns exec`
    // execs it); its own pid file and control socket, so a host lldpd is
    // not disturbed; only the veth.
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &cable.switch_ns, &lldpd_path, "-d", "-p"])
        .arg(path("lldpd.pid"))
        .arg("-u")
        .arg(path("lldpd.socket"))
        .arg("-O")
        .arg(&conf)
        .args(["-I", &cable.switch_if])
        .stdin(Stdio::null())
        .stderr(out.try_clone().unwrap())
        .stdout(out)
        .spawn()
        .expect("start lldpd");
    let pid = child.id().to_string();
    let mut daemon = ChildGuard::adopt("lldpd", child);
    // lldpd reads its configuration through lldpcli before it sends.
    wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("resume operations"))
    });
    daemon.assert_running(&log);

    let host_if = cable.host_if.clone();
    let (heard, group_while_open, group_after) = in_netns(&cable.host_ns, move || {
        let mut listener = Listener::open().expect("open the LLDP socket (as root)");
        let group_while_open = receives_group(&host_if);
        let deadline = Instant::now() + HEAR_WITHIN;
        let mut heard: Option<Heard> = None;
        while let Some(h) = listener.next(deadline).expect("receive") {
            if h.interface == host_if {
                heard = Some(h);
                break;
            }
        }
        drop(listener);
        (heard, group_while_open, receives_group(&host_if))
    });
    let Some(heard) = heard else {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("no LLDP frame from lldpd in {HEAR_WITHIN:?}; its log:\n{text}");
    };
    let neighbour = heard.neighbour;
    assert_eq!(neighbour.system_name, "leaf-test");
    assert_eq!(neighbour.port_id, cable.switch_if);
    assert_eq!(neighbour.port_description, "rack 7 port 12");
    assert_eq!(
        neighbour.chassis_id,
        mac_of(&cable.switch_ns, &cable.switch_if)
    );
    // The listener opened the veth to the LLDP group while it listened,
    // and closed it after.
    assert!(group_while_open, "{LLDP_GROUP} not received on the veth");
    assert!(
        !group_after,
        "{LLDP_GROUP} still received after the listener"
    );
    // SIGTERM first, by PID, so lldpd reaps its privilege-separated child;
    // the guards kill whatever is left.
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    daemon.wait_timeout(Duration::from_secs(5));
    drop(daemon);
    drop(cable);
}

/// Whether `interface` receives the LLDP group: `ip maddr` lists it (the
/// listener's way with iproute2) or the interface is all-multicast (its
/// way without). Asked in the calling thread's namespace, which a child
/// process inherits.
fn receives_group(interface: &str) -> bool {
    let run = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    lists_group(&run(&["maddr", "show", "dev", interface]))
        || run(&["link", "show", "dev", interface]).contains("ALLMULTI")
}

/// The fallback where iproute2's `ip maddr` is missing (busybox, in the
/// in-memory OS): the all-multicast flag set and cleared over rtnetlink,
/// as `ip link` then shows it.
#[test]
fn all_multicast_over_rtnetlink() {
    if !can_run() {
        return;
    }
    let cable = Cable::new('b');
    let link = |ns: &str, interface: &str| {
        let out = Command::new("ip")
            .args(["-n", ns, "link", "show", "dev", interface])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let host_if = cable.host_if.clone();
    let index = in_netns(&cable.host_ns, move || {
        let index = nix::net::if_::if_nametoindex(host_if.as_str()).unwrap();
        set_all_multicast(index, true).expect("set all-multicast");
        index
    });
    assert!(
        link(&cable.host_ns, &cable.host_if).contains("ALLMULTI"),
        "{}",
        link(&cable.host_ns, &cable.host_if)
    );
    // Only that interface, in that namespace.
    assert!(!link(&cable.switch_ns, &cable.switch_if).contains("ALLMULTI"));
    in_netns(&cable.host_ns, move || {
        set_all_multicast(index, false).expect("clear all-multicast")
    });
    assert!(!link(&cable.host_ns, &cable.host_if).contains("ALLMULTI"));
    // No such interface: the kernel's refusal comes back as an error.
    let refused = in_netns(&cable.host_ns, || set_all_multicast(999_999, true));
    assert!(refused.is_err(), "{refused:?}");
}
