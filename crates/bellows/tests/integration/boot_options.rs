//! Workflow boot options (Tinkerbell's `bootOptions`): netboot toggling and
//! starting the machine through its BMC, against OpenIPMI's `ipmi_sim`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use bellows_testkit::bmc::{IpmiSim, PASSWORD, USERNAME};

use crate::harness::{Server, http, ok};
use crate::workers::events;

const MAC: &str = "02:00:00:00:40:01";
const TEMPLATE: &str = r#"
version: "0.1"
name: boot
global_timeout: 600
tasks:
  - name: os
    worker: "{{.device_1}}"
    actions:
      - name: noop
        image: bellows/writefile
        environment:
          DEST_PATH: /tmp/bellows-boot-options-test
          CONTENTS: "installed"

"#;

fn setup(s: &Server, bmc_port: u16) {
    let hw = json!({"id": "bm1", "network": {"interfaces": [{"dhcp": {"mac": MAC}, "netboot": {"allow_pxe": false}}]}});
    let (st, _) = http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(hw.to_string().as_bytes()),
    );
    assert_eq!(st, 201);
    ok(&s.cli_stdin(
        &[
            "bmc",
            "set",
            "bm1",
            "--address",
            "127.0.0.1",
            "--port",
            &bmc_port.to_string(),
            "--protocol",
            "ipmi",
            "-u",
            USERNAME,
            "--password-stdin",
        ],
        Some(format!("{PASSWORD}\n").as_bytes()),
    ));
    let (st, body) = http(
        "POST",
        &format!("{}/api/v1/templates", s.url),
        Some(
            json!({"name": "boot", "data": TEMPLATE})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 201, "{body}");
}

fn allow_pxe(s: &Server) -> Value {
    let (_, hw) = http("GET", &format!("{}/api/v1/hardware/bm1", s.url), None);
    hw["network"]["interfaces"][0]["netboot"]["allow_pxe"].clone()
}

/// The workflow's `boot_requested` event, waited for up to 60 s (the BMC
/// job runs in the background).
fn boot_requested(s: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(e) = events(s, id)
            .into_iter()
            .find(|e| e["type"] == "boot_requested")
        {
            return e;
        }
        assert!(Instant::now() < deadline, "no boot_requested event");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_workflow_can_start_its_machine_through_the_bmc_and_toggle_netboot() {
    let sim = IpmiSim::start();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    setup(&s, sim.port);
    let id = ok(&s.cli(&[
        "workflow",
        "create",
        "-t",
        "boot",
        "-r",
        &format!("{{\"device_1\":\"{MAC}\"}}"),
        "--toggle-netboot",
        "--netboot",
    ]))
    .trim()
    .to_string();
    assert_eq!(allow_pxe(&s), json!(true), "netboot allowed at creation");
    // The BMC job runs in the background and lands as an event.
    let boot = boot_requested(&s, &id);
    assert_eq!(boot["ok"], true, "{boot}");
    // The emulator (not our code) says: powered on, next boot from PXE.
    assert_eq!(sim.power_file(), "1");
    assert!(sim.calls().contains("set boot pxe"), "{}", sim.calls());
    // The worker runs the workflow; success turns netboot off again.
    let work = dir.path().join("w");
    let mut w = crate::workers::Worker::start(&s.http_url, MAC, &work_dir(&work), &["--no-docker"]);
    let wf = crate::workers::wait_state(&s, &id, &["SUCCESS", "FAILED"], Duration::from_secs(60));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    assert_eq!(allow_pxe(&s), json!(false), "netboot off after success");
    w.kill9();
    let shown = ok(&s.cli(&["workflow", "events", &id]));
    assert!(shown.contains("boot_requested"), "{shown}");
}

#[test]
fn an_unreachable_bmc_is_recorded_and_leaves_the_workflow_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    setup(&s, 9);
    let id = ok(&s.cli(&[
        "workflow",
        "create",
        "-t",
        "boot",
        "-r",
        &format!("{{\"device_1\":\"{MAC}\"}}"),
        "--netboot",
    ]))
    .trim()
    .to_string();
    let boot = boot_requested(&s, &id);
    assert_eq!(boot["ok"], false);
    assert!(
        boot["message"].as_str().unwrap().contains("127.0.0.1"),
        "{boot}"
    );
    assert!(!boot.to_string().contains(PASSWORD));
    assert_eq!(crate::workers::get_workflow(&s, &id)["state"], "PENDING");
    assert_eq!(allow_pxe(&s), json!(false), "no toggle asked for");
}

fn work_dir(p: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(p).unwrap();
    p.to_path_buf()
}
