//! Discovery on QEMU VMs (TCG): two machines nobody pushed network-boot
//! with `--discovery`, get pool addresses and the in-memory OS in
//! discovery mode, and report their inventory; both appear as
//! `discovered` with what QEMU gave them (MAC, memory, disk size and
//! serial). `rule test` predicts that a rule for the larger disk takes one
//! and not the other; once the rule is stored, that one is enrolled,
//! reboots, installs end to end (image2disk, writefile, cexec, kexec) and
//! its installed system calls back; the other stays discovered.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use bellows_testkit::netns::{Lab, can_run};

use crate::harness::{Server, ok};
use crate::lifecycle::{build_disk, build_osie, callback_line, have, template};
use crate::vm::{Firmware, Order, VmSpec, file_tail};

const SERVER_IP: &str = "10.83.0.1";
const TIMEOUT: Duration = Duration::from_secs(600);
const BIG: (&str, &str, u64, u32) = ("52:54:00:d1:5c:01", "BIGDISK0001", 512 << 20, 1024);
const SMALL: (&str, &str, u64, u32) = ("52:54:00:d1:5c:02", "SMALLDISK02", 256 << 20, 896);

const RULE: &str = "name: big-disks
priority: 10
match:
  mac_prefix: \"52:54:00:d1\"
  disks: { min_size: 400MiB }
set:
  hostname: \"big-{counter:02}\"
  facility: lab1
  tags: [discovered]
workflow:
  template: disco-install
";

fn discovered(server: &Server, ns: &str) -> Vec<Value> {
    let out = ok(&server.cli_netns(
        ns,
        &["hardware", "list", "--state", "discovered", "-o", "json"],
        None,
    ));
    let list: Value = serde_json::from_str(&out).expect("hardware list JSON");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn rule_test(server: &Server, ns: &str, machine: &str, candidate: Option<&Path>) -> Value {
    let mut args = vec!["rule", "test", machine, "-o", "json"];
    let file;
    if let Some(path) = candidate {
        file = path.display().to_string();
        args.extend(["-f", file.as_str()]);
    }
    serde_json::from_str(&ok(&server.cli_netns(ns, &args, None))).expect("rule test JSON")
}

#[test]
fn unknown_vms_are_discovered_and_a_rule_enrols_the_one_with_the_larger_disk() {
    if !can_run() || !have(&[]) {
        return;
    }
    let work_dir = tempfile::tempdir().unwrap();
    let work = work_dir.path();
    let data = work.join("data");
    let osie = data.join("osie");
    std::fs::create_dir_all(&osie).unwrap();
    build_osie(&osie);
    let sum = build_disk(&osie, SERVER_IP);
    let mut lab = Lab::new("dsc", &format!("{SERVER_IP}/24"));
    let taps = [lab.tap(1), lab.tap(2)];
    let ns = lab.server_ns.clone();
    let server = Server::start_on_lab_bridge(
        &ns,
        SERVER_IP,
        &data,
        "reservation",
        &[
            "--discovery",
            "--discovery-pool",
            "10.83.0.100-10.83.0.120",
            "--discovery-netmask",
            "255.255.255.0",
            "--discovery-poll",
            "3",
        ],
    );
    let img_url = format!("http://{SERVER_IP}:8080/osie/installed.img.zst");
    let t = template(&sum, "disco-install", &img_url, true);
    ok(&server.cli_netns(
        &ns,
        &["template", "create", "-n", "disco-install", "-p", "-"],
        Some(t.as_bytes()),
    ));

    let mut vms = Vec::new();
    for ((mac, serial, size, memory), tap) in [BIG, SMALL].into_iter().zip(&taps) {
        let dir = work.join(mac.replace(':', ""));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk.img");
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(size))
            .expect("empty disk");
        vms.push((
            dir.clone(),
            crate::vm::start_vm(&VmSpec {
                ns: &ns,
                tap,
                mac,
                fw: Firmware::Bios,
                work: &dir,
                memory_mib: memory,
                reboot: true,
                disk: Some((&disk, Order::NetworkFirst)),
                disk_serial: Some(serial),
            }),
        ));
    }
    let consoles = || {
        vms.iter()
            .map(|(dir, _)| file_tail(&dir.join("console.log"), 2500))
            .collect::<Vec<_>>()
            .join("\n-----\n")
    };

    // Both report and wait as discovered, with what QEMU gave them.
    let start = Instant::now();
    let found = loop {
        let list = discovered(&server, &ns);
        let complete = list.len() == 2
            && list.iter().all(|hw| {
                hw["discovery"]["inventory"]["disks"]
                    .as_array()
                    .is_some_and(|d| !d.is_empty())
            });
        if complete {
            break list;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "not both discovered within {TIMEOUT:?}: {list:#?}\nconsoles:\n{}",
            consoles()
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!(
        "DISCOVERY: both VMs discovered {:.1} s after power-on",
        start.elapsed().as_secs_f64()
    );
    for (mac, serial, size, memory) in [BIG, SMALL] {
        let hw = found
            .iter()
            .find(|hw| hw["network"]["interfaces"][0]["dhcp"]["mac"] == mac)
            .unwrap_or_else(|| panic!("{mac} not discovered: {found:#?}"));
        let inv = &hw["discovery"]["inventory"];
        let address = hw["network"]["interfaces"][0]["dhcp"]["ip"]["address"]
            .as_str()
            .unwrap_or_default();
        assert!(address.starts_with("10.83.0.1"), "a pool address: {hw:#}");
        let disk = inv["disks"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["serial"] == serial))
            .unwrap_or_else(|| panic!("no disk with serial {serial}: {inv:#}"));
        assert_eq!(disk["size_bytes"].as_u64(), Some(size), "{inv:#}");
        // The kernel reserves some of what QEMU gave it.
        let have = inv["memory_bytes"].as_u64().unwrap_or(0);
        let given = u64::from(memory) << 20;
        assert!(
            have > given * 8 / 10 && have <= given,
            "memory {have} for -m {memory}: {inv:#}"
        );
        assert!(
            inv["nics"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["mac"] == mac),
            "{inv:#}"
        );
        // No workflow for a discovered machine.
        assert!(hw["discovery"]["state"] == "discovered");
    }
    let big_id = "discovered-525400d15c01";
    let small_id = "discovered-525400d15c02";

    // `rule test` with the rule not stored yet predicts both outcomes.
    let rule_file = work.join("rule.yaml");
    std::fs::write(&rule_file, RULE).unwrap();
    let big = rule_test(&server, &ns, big_id, Some(&rule_file));
    assert_eq!(big["winner"], "big-disks", "{big:#}");
    assert_eq!(
        big["hardware"]["metadata"]["instance"]["hostname"], "big-01",
        "{big:#}"
    );
    assert_eq!(big["workflow"]["template"], "disco-install", "{big:#}");
    let small = rule_test(&server, &ns, small_id, Some(&rule_file));
    assert!(small["winner"].is_null(), "{small:#}");
    assert!(
        small["verdicts"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("disks that fit: has 0")),
        "{small:#}"
    );
    // Nothing was changed by the tests.
    assert_eq!(discovered(&server, &ns).len(), 2);

    ok(&server.cli_netns(
        &ns,
        &["rule", "create", "-f", &rule_file.display().to_string()],
        None,
    ));
    // The big one is enrolled at its next report, reboots, installs, and
    // its installed system calls back over syslog.
    let start = Instant::now();
    let callback = loop {
        if let Some(line) = callback_line(&server, &ns, big_id) {
            break line;
        }
        let wfs = ok(&server.cli_netns(&ns, &["workflow", "list", "-o", "json"], None));
        assert!(
            !wfs.contains("\"FAILED\"") && !wfs.contains("\"TIMEOUT\""),
            "the workflow failed: {wfs}\nconsoles:\n{}",
            consoles()
        );
        assert!(
            start.elapsed() < TIMEOUT,
            "no call-back within {TIMEOUT:?}; workflows {wfs}\nconsoles:\n{}",
            consoles()
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!(
        "DISCOVERY: rule stored → installed system called back in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let message = callback["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("installed hostname=disco-install-cexec"),
        "{message}"
    );
    let hw: Value = serde_json::from_str(&ok(&server.cli_netns(
        &ns,
        &["hardware", "get", big_id, "-o", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(hw["discovery"]["state"], "enrolled", "{hw:#}");
    assert_eq!(hw["discovery"]["enrolled_by"], "rule:big-disks", "{hw:#}");
    assert_eq!(hw["metadata"]["instance"]["hostname"], "big-01", "{hw:#}");
    assert_eq!(
        hw["metadata"]["facility"]["facility_code"], "lab1",
        "{hw:#}"
    );
    // The small one is still waiting, and the stored rule still says no.
    let still: Vec<String> = discovered(&server, &ns)
        .iter()
        .filter_map(|hw| hw["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(still, [small_id]);
    let small = rule_test(&server, &ns, small_id, None);
    assert!(small["winner"].is_null(), "{small:#}");
    let rules: Value = serde_json::from_str(&ok(&server.cli_netns(
        &ns,
        &["rule", "list", "-o", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(rules["items"][0]["enrolled"], 1, "{rules:#}");
    drop(vms);
}
