//! A QEMU VM installed through two `bellows server` replicas that share one
//! PostgreSQL database, both answering DHCP (reservation mode) on the
//! machine's network: the replica its in-memory OS booted from and is
//! connected to is killed (SIGKILL) while the workflow runs; the worker
//! carries on with the other replica (the kernel command line names both),
//! every action runs once, the machine's reboot is answered by the survivor
//! and the installed system calls back to it.
//!
//! The image comes from a mirror (a third namespace, `python3 -m
//! http.server` behind a rate-limited link), as it would at a site with
//! several servers: an image served by the replica that dies would fail the
//! download, which is the mirror's business, not the fail-over's.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use bellows_testkit::netns::{Lab, can_run};
use bellows_testkit::postgres::database;
use bellows_testkit::{ChildGuard, wait_for};

use crate::harness::{Server, ok};
use crate::lifecycle::{build_disk, build_osie, have, template};
use crate::vm::{Firmware, Order, VmSpec, file_tail};

const NET: &str = "10.77.0";
const MAC: &str = "52:54:00:77:00:10";
const NAME: &str = "replicated-vm";
const TIMEOUT: Duration = Duration::from_secs(600);

/// One replica: its server and the namespace it runs in.
struct Replica {
    server: Option<Server>,
    ns: String,
    ip: String,
    log: Vec<String>,
}

impl Replica {
    fn server(&self) -> &Server {
        self.server.as_ref().expect("the replica is alive")
    }

    /// Reads the log lines printed since the last call into `self.log`.
    fn read_log(&mut self) {
        if let Some(s) = &self.server {
            self.log.extend(s.drain_log());
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        ok(&self.server().cli_netns(&self.ns, args, None))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-o", "json"]);
        let out = self.cli(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Whether this replica logged the machine's worker connecting.
    fn worker_connected(&self) -> bool {
        self.log
            .iter()
            .any(|l| l.contains("worker connected") && l.contains(MAC))
    }
}

/// Starts a replica in `ns` at `ip`, DHCP in reservation mode on `iface`,
/// TFTP and the boot listener on `ip`, naming `peer` to booting machines.
fn start_replica(
    ns: &str,
    iface: &str,
    ip: &str,
    peer: &str,
    data: &Path,
    shared: &Shared,
) -> Replica {
    let tftp = format!("{ip}:69");
    let peers = format!("https://{peer}:8080");
    let server = Server::start_in_netns_with(
        ns,
        ip,
        data,
        &[
            "--dhcp-mode",
            "reservation",
            "--interface",
            iface,
            "--tftp-listen",
            &tftp,
            "--store",
            &shared.store,
            "--secret-key-file",
            shared.key.to_str().expect("UTF-8 path"),
            "--osie-dir",
            shared.osie.to_str().expect("UTF-8 path"),
            "--peers",
            &peers,
        ],
    );
    Replica {
        server: Some(server),
        ns: ns.to_string(),
        ip: ip.to_string(),
        log: Vec::new(),
    }
}

/// What the replicas share: the database, the secret key, the boot files.
struct Shared {
    store: String,
    key: std::path::PathBuf,
    osie: std::path::PathBuf,
}

/// Starts and stops the image mirror: an HTTP server we did not write,
/// behind a link limited to `rate` so the download lasts long enough to
/// kill a replica in the middle of it.
fn start_mirror(ns: &str, iface: &str, dir: &Path, addr: &str, log: &Path) -> ChildGuard {
    let tc = Command::new("ip")
        .args(["netns", "exec", ns, "tc", "qdisc", "add", "dev", iface])
        .args([
            "root", "tbf", "rate", "8mbit", "burst", "64kb", "latency", "500ms",
        ])
        .status()
        .expect("run tc");
    assert!(tc.success(), "tc could not limit the mirror's link");
    let out = std::fs::File::create(log).expect("mirror log");
    let err = out.try_clone().expect("mirror log");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "python3", "-m", "http.server"])
        .args(["--bind", addr, "8000", "--directory"])
        .arg(dir)
        .stdout(out)
        .stderr(err);
    let mut mirror = ChildGuard::spawn("mirror", &mut cmd);
    let url = format!("http://{addr}:8000/installed.img.zst");
    let up = wait_for(Duration::from_secs(20), || {
        Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-sfI", "--max-time", "2", &url])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    mirror.assert_running(log);
    assert!(up, "the mirror did not answer in 20 s");
    mirror
}

/// How many times each action of `events` started and finished.
fn action_counts(events: &Value, action: &str) -> (usize, usize) {
    let count = |kind: &str| {
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e.get("event").unwrap_or(e))
            .filter(|e| e["type"] == kind && e["action"] == action)
            .count()
    };
    (count("action_started"), count("action_finished"))
}

#[test]
fn a_vm_installs_through_the_replica_that_survives_its_first_ones_death() {
    if !can_run() || !have(&["/usr/sbin/tc", "/usr/bin/python3", "/usr/bin/curl"]) {
        return;
    }
    let db = database();
    let work = tempfile::tempdir().unwrap();
    let shared = Shared {
        store: db.unix_socket_url(),
        key: work.path().join("secret.key"),
        osie: work.path().join("osie"),
    };
    let mirror_dir = work.path().join("mirror");
    std::fs::create_dir_all(&shared.osie).unwrap();
    std::fs::create_dir_all(&mirror_dir).unwrap();
    build_osie(&shared.osie);
    // The installed system calls back to whichever replica answers its DHCP.
    let sum = build_disk(&mirror_dir, "dhcp");

    let (a_ip, b_ip, mirror_ip) = (format!("{NET}.1"), format!("{NET}.2"), format!("{NET}.3"));
    let mut lab = Lab::new("rvm", &format!("{a_ip}/24"));
    let tap = lab.tap(1);
    let b_host = lab.host("rb").addr(&format!("{b_ip}/24")).add();
    let m_host = lab.host("mir").addr(&format!("{mirror_ip}/24")).add();
    let _mirror = start_mirror(
        &m_host.ns,
        &m_host.ifname,
        &mirror_dir,
        &mirror_ip,
        &work.path().join("mirror.log"),
    );

    // The first replica makes the CA and the admin token; the second gets
    // copies before its first start (README: "Several servers").
    let a_data = work.path().join("a");
    let b_data = work.path().join("b");
    let mut replicas = vec![start_replica(
        &lab.server_ns,
        "br0",
        &a_ip,
        &b_ip,
        &a_data,
        &shared,
    )];
    std::fs::create_dir_all(b_data.join("tls")).unwrap();
    for file in ["tls/ca.crt", "tls/ca.key", "admin.token"] {
        std::fs::copy(a_data.join(file), b_data.join(file)).unwrap();
    }
    replicas.push(start_replica(
        &b_host.ns,
        &b_host.ifname,
        &b_ip,
        &a_ip,
        &b_data,
        &shared,
    ));

    // Set up through the second replica, so the first learns of the machine
    // from the database alone.
    let machine_ip = format!("{NET}.50");
    replicas[1]
        .server()
        .push_machine(&b_host.ns, NAME, MAC, &machine_ip, &a_ip, true);
    let img_url = format!("http://{mirror_ip}:8000/installed.img.zst");
    let t = template(&sum, NAME, &img_url, false);
    ok(&replicas[1].server().cli_netns(
        &b_host.ns,
        &["template", "create", "-n", NAME, "-p", "-"],
        Some(t.as_bytes()),
    ));
    let map = format!("{{\"device_1\":\"{MAC}\"}}");
    let id = replicas[1]
        .cli(&["workflow", "create", "-t", NAME, "-r", &map])
        .trim()
        .to_string();

    let disk = work.path().join("vm-disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(256 << 20))
        .expect("empty disk");
    let mut vm = crate::vm::start_vm(&VmSpec {
        ns: &lab.server_ns,
        tap: &tap,
        mac: MAC,
        fw: Firmware::Bios,
        work: work.path(),
        memory_mib: 1024,
        reboot: true,
        disk: Some((&disk, Order::NetworkFirst)),
        disk_serial: None,
    });
    let console = || file_tail(&work.path().join("console.log"), 4000);
    let start = Instant::now();

    // Wait until the worker is connected to one replica and the image is
    // streaming, then kill that replica.
    let first = loop {
        assert!(
            start.elapsed() < TIMEOUT,
            "the worker never started the install; console:\n{}",
            console()
        );
        assert!(
            vm.try_wait().is_none(),
            "the VM exited; console:\n{}",
            console()
        );
        for r in &mut replicas {
            r.read_log();
        }
        let connected = replicas.iter().position(Replica::worker_connected);
        let wf = replicas[1].json(&["workflow", "get", &id]);
        let streaming = wf["tasks"][0]["actions"][0]["state"] == "RUNNING";
        assert!(
            wf["state"] == "PENDING" || wf["state"] == "RUNNING",
            "the workflow ended before the kill: {wf:#}"
        );
        if let (Some(i), true) = (connected, streaming) {
            break i;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let survivor = 1 - first;
    eprintln!(
        "the worker is on replica {} ({}), streaming the image after {:.1} s: killing it",
        first,
        replicas[first].ip,
        start.elapsed().as_secs_f64()
    );
    let killed_at = Instant::now();
    if let Some(s) = replicas[first].server.take() {
        s.kill9();
    }
    let s = &mut replicas[survivor];
    s.log.clear();

    // The workflow finishes through the survivor, and the installed system
    // calls back to it.
    let mut success_after = None;
    let callback = loop {
        assert!(
            start.elapsed() < TIMEOUT,
            "no call-back within {TIMEOUT:?}; console:\n{}",
            console()
        );
        s.read_log();
        let wf = s.json(&["workflow", "get", &id]);
        match wf["state"].as_str() {
            Some("SUCCESS") => {
                success_after = success_after.or(Some(killed_at.elapsed()));
            }
            Some("FAILED") | Some("TIMEOUT") | Some("CANCELLED") => panic!(
                "workflow ended {}: {wf:#}\nconsole:\n{}",
                wf["state"],
                console()
            ),
            _ => {}
        }
        let logs = s.json(&["hardware", "logs", NAME, "-n", "2000"]);
        let line = logs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|l| {
                l["message"]
                    .as_str()
                    .filter(|m| m.contains("installed hostname="))
                    .map(str::to_string)
            });
        if let Some(line) = line {
            break line;
        }
        if let Some(status) = vm.try_wait() {
            panic!(
                "the VM exited ({status}) without a call-back; console:\n{}",
                console()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "REPLICA-VM: killed after {:.1} s; workflow SUCCESS {:.1} s later; call-back after {:.1} s in all",
        killed_at.duration_since(start).as_secs_f64(),
        success_after.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN),
        start.elapsed().as_secs_f64()
    );
    assert!(
        callback.contains(&format!("installed hostname={NAME}-cexec ip={machine_ip}")),
        "the installed system read what the workflow wrote: {callback}"
    );
    s.read_log();
    assert!(
        s.worker_connected(),
        "the worker never connected to the surviving replica"
    );
    let wf = s.json(&["workflow", "get", &id]);
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    let events = s.json(&["workflow", "events", &id]);
    for action in ["stream-image", "write-hostname", "tag-hostname", "reboot"] {
        assert_eq!(
            action_counts(&events, action),
            (1, 1),
            "{action} must start and finish once: {events:#}"
        );
    }
    // The survivor answered the reboot's network boot (the dead replica
    // cannot have): the local-boot script, as no workflow is left.
    assert!(
        s.log.iter().any(|l| l.contains("serving auto.ipxe")
            && l.contains(MAC)
            && l.contains("no pending workflow")),
        "the survivor did not serve the local-boot script after the install"
    );
    let _ = vm.wait();
    // The lab's namespaces go before the database's server (drop order).
    drop(replicas);
    drop(lab);
}
