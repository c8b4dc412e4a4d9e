//! A small boot storm (`bellows-storm`, crates/storm) against a real
//! server in network namespaces: 200 simulated machines, BIOS and UEFI,
//! through DHCP as firmware, TFTP, DHCP as iPXE, the script, the kernel and
//! initrd and the worker's three actions, all at once. Every machine must
//! call back, with every byte it fetched equal to the server's file and
//! every lease its reservation; time is not judged (see bench/storm.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

use bellows_testkit::netns::{Lab, can_run, ip};

use crate::harness::{BIN, Server, ok};

const MACHINES: usize = 200;
const SERVER_IP: &str = "10.88.0.1";
const STORM_IP: &str = "10.88.0.2";
const FIRST_MACHINE: &str = "10.88.128.1";

/// The storm generator, built beside `bellows` by the workspace's tests.
fn storm_bin() -> Option<PathBuf> {
    let bin = Path::new(BIN).with_file_name("bellows-storm");
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: scripts/test.sh builds it (cargo build -p bellows-storm)",
        bin.display()
    );
    eprintln!(
        "skipped: no {} (cargo build -p bellows-storm)",
        bin.display()
    );
    None
}

/// A storm that ran: its lab (namespaces), server and work directory,
/// kept alive for the checks that follow.
pub struct StormRun {
    pub server: Server,
    pub lab: Lab,
    pub work: tempfile::TempDir,
}

/// Boots `machines` simulated machines at once against a fresh server in a
/// lab of namespaces tagged `tag`, checks every one called back, and hands
/// back the lab; None when this machine cannot run it (outside CI).
pub fn boot_storm(machines: usize, tag: &str) -> Option<StormRun> {
    if !can_run() || !Path::new("/usr/lib/ipxe/undionly.kpxe").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI installs ipxe");
        return None;
    }
    let storm = storm_bin()?;
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let osie = data.join("osie");
    std::fs::create_dir_all(&osie).unwrap();
    // In-memory OS files whose every byte is checked when fetched whole.
    let pattern = |len: usize, seed: u8| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
            .collect()
    };
    std::fs::write(osie.join("vmlinuz"), pattern(1 << 20, 7)).unwrap();
    std::fs::write(osie.join("initramfs"), pattern(3 << 20, 11)).unwrap();

    let mut lab = Lab::new(tag, &format!("{SERVER_IP}/16"));
    let host = lab.host("gen").addr(&format!("{STORM_IP}/16")).add();
    // Every machine's address is local to the storm's namespace, and the
    // server reaches them all through it.
    ip(&[
        "-n",
        &host.ns,
        "route",
        "add",
        "local",
        "10.88.128.0/17",
        "dev",
        "lo",
    ]);
    ip(&[
        "-n",
        &lab.server_ns,
        "route",
        "add",
        "10.88.128.0/17",
        "via",
        STORM_IP,
    ]);
    let server = Server::start_on_lab_bridge(&lab.server_ns, SERVER_IP, &data, "reservation", &[]);
    let token = server.token.clone().expect("an admin token");
    let count = machines.to_string();
    let api = format!("https://{SERVER_IP}:42113");
    let setup = Command::new("ip")
        .args(["netns", "exec", &lab.server_ns])
        .arg(&storm)
        .args(["setup", "--api", &api, "--token", &token, "--ca"])
        .arg(data.join("tls/ca.crt"))
        .args(["--machines", &count, "--first-ip", FIRST_MACHINE])
        .args(["--gateway", SERVER_IP])
        .output()
        .expect("run bellows-storm setup");
    ok(&setup);

    let out = work.path().join("out");
    let run = Command::new("ip")
        .args(["netns", "exec", &host.ns])
        .arg(&storm)
        .args(["run", "--machines", &count, "--interface", &host.ifname])
        .args(["--first-ip", FIRST_MACHINE, "--uefi-every", "2"])
        .args(["--whole-files-every", "10", "--timeout-secs", "240"])
        .args(["--server-pid", &server.child.id().to_string()])
        .arg("--verify")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run bellows-storm");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stderr}{stdout}");
    assert!(
        run.status.success(),
        "the storm failed ({}):\n{stderr}\n{stdout}",
        run.status
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with(&format!("storm: {machines} machines, 0 failures,")),
        "{summary}"
    );
    Some(StormRun { server, lab, work })
}

#[test]
fn two_hundred_machines_boot_at_once_and_all_call_back_with_the_right_bytes() {
    let Some(StormRun { server, lab, work }) = boot_storm(MACHINES, "stm") else {
        return;
    };
    let out = work.path().join("out");
    // Its files: one row per machine, each with a call-back time.
    let csv = std::fs::read_to_string(out.join("machines.csv")).unwrap();
    assert_eq!(csv.lines().count(), MACHINES + 1);
    assert!(
        std::fs::read_to_string(out.join("storm.svg"))
            .unwrap()
            .contains("<polyline")
    );

    // The server agrees: every workflow SUCCESS, each action started and
    // finished once.
    let list = ok(&server.cli_netns(&lab.server_ns, &["workflow", "list", "-o", "json"], None));
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), MACHINES, "{list:#}");
    let unfinished: Vec<&serde_json::Value> =
        items.iter().filter(|w| w["state"] != "SUCCESS").collect();
    assert!(unfinished.is_empty(), "not SUCCESS: {unfinished:#?}");
    let id = items[0]["id"].as_str().unwrap_or_default();
    let events = ok(&server.cli_netns(
        &lab.server_ns,
        &["workflow", "events", id, "-o", "json"],
        None,
    ));
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    for action in ["step-1", "step-2", "step-3"] {
        for kind in ["action_started", "action_finished"] {
            let n = events["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e.get("event").unwrap_or(e))
                .filter(|e| e["type"] == kind && e["action"] == action)
                .count();
            assert_eq!(n, 1, "{kind} {action}: {events:#}");
        }
    }

    // Each machine's boot timeline, as the services recorded it: every
    // step of the path, in order (a BIOS machine; the writer is behind
    // the storm by a moment).
    let expected = [
        ("dhcp_offer", "firmware: boot file undionly.kpxe by TFTP"),
        ("dhcp_ack", "firmware: boot file undionly.kpxe by TFTP"),
        ("tftp", "undionly.kpxe: "),
        ("dhcp_offer", "iPXE: script http://"),
        ("dhcp_ack", "iPXE: script http://"),
        ("script", "the in-memory OS"),
        ("download", "/osie/vmlinuz (20"),
        ("download", "/osie/initramfs (20"),
        ("worker_connected", "per-boot credential"),
        ("action_started", "step-1"),
        ("action_finished", "step-1 SUCCESS"),
        ("action_started", "step-2"),
        ("action_finished", "step-2 SUCCESS"),
        ("action_started", "step-3"),
        ("action_finished", "step-3 SUCCESS"),
        ("workflow_finished", "SUCCESS"),
    ];
    let mut steps = Vec::new();
    let complete = bellows_testkit::process::wait_for(std::time::Duration::from_secs(20), || {
        let out = server.cli_netns(
            &lab.server_ns,
            &["hardware", "timeline", "storm-00000", "-o", "json"],
            None,
        );
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        steps = json["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["step"].as_str().unwrap_or_default().to_string(),
                    s["detail"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        // Each expected step found after the one before it.
        let mut rest = steps.iter();
        expected
            .iter()
            .all(|(step, detail)| rest.any(|(s, d)| s == step && d.contains(detail)))
    });
    assert!(
        complete,
        "timeline of storm-00000 lacks a step or its order: {steps:#?}"
    );
    // The table a person reads: the time between steps.
    let table = ok(&server.cli_netns(
        &lab.server_ns,
        &["hardware", "timeline", "storm-00000"],
        None,
    ));
    assert!(
        table.starts_with("TIME") && table.contains(" s "),
        "{table}"
    );
    drop(server);
    drop(lab);
}
