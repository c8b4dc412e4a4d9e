//! The CLI, run as a user runs it: the built binary with BELLOWS_URL set.

use serde_json::Value;

use crate::harness::{BIN, Server, fixture, ok};

const MAC: &str = "d0:50:99:d7:63:20";

/// The seed's hello-world flow (seed 000/001): hardware push, template
/// create (prints the id), workflow create with a hardware map.
#[test]
fn seed_hello_world_flow() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let hw = fixture("hardware.json");
    let out = ok(&s.cli(&["hardware", "push", "--file", hw.to_str().unwrap()]));
    assert_eq!(out.trim(), "0fba0bf8-3772-4b4a-ab9f-6ebe93b90a94");
    let list = ok(&s.cli(&["hardware", "list"]));
    assert!(list.contains(MAC) && list.contains("10.1.0.5"), "{list}");

    let tmpl = fixture("hello-world.tmpl");
    let tid = ok(&s.cli(&[
        "template",
        "create",
        "-n",
        "hello-world",
        "-p",
        tmpl.to_str().unwrap(),
    ]));
    let tid = tid.trim();
    assert_eq!(tid.len(), 36, "template create prints the id: {tid:?}");

    let map = format!("{{\"device_1\":\"{MAC}\"}}");
    let wid = ok(&s.cli(&["workflow", "create", "-t", tid, "-r", &map]));
    let wid = wid.trim();
    assert_eq!(wid.len(), 36, "workflow create prints the id: {wid:?}");

    let table = ok(&s.cli(&["workflow", "get", wid]));
    assert!(
        table.contains("PENDING") && table.contains(MAC) && table.contains("hello_world"),
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&ok(&s.cli(&["workflow", "get", wid, "-o", "json"]))).unwrap();
    assert_eq!(json["tasks"][0]["worker"], MAC);
    assert_eq!(json["state"], "PENDING");
    let yaml = ok(&s.cli(&["workflow", "get", wid, "-o", "yaml"]));
    assert!(yaml.contains("state: PENDING"), "{yaml}");
    let events = ok(&s.cli(&["workflow", "events", wid]));
    assert!(events.contains("created"), "{events}");
    let listed = ok(&s.cli(&["workflow", "list", "--state", "pending", "--hardware", MAC]));
    assert!(listed.contains(wid), "{listed}");
    let tlist = ok(&s.cli(&["template", "get", "hello-world"]));
    assert!(
        tlist.contains("worker: \"{{.device_1}}\""),
        "template get shows the source: {tlist}"
    );
}

#[test]
fn push_from_stdin_updates_and_delete_removes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let doc = std::fs::read(fixture("hardware.json")).unwrap();
    ok(&s.cli_stdin(&["hardware", "push", "--file", "-"], Some(&doc)));
    let renamed = String::from_utf8(doc)
        .unwrap()
        .replace("\"uefi\":false", "\"uefi\":true");
    ok(&s.cli_stdin(&["hardware", "push", "-f", "-"], Some(renamed.as_bytes())));
    let got: Value =
        serde_json::from_str(&ok(&s.cli(&["hardware", "get", MAC, "-o", "json"]))).unwrap();
    assert_eq!(got["network"]["interfaces"][0]["dhcp"]["uefi"], true);
    ok(&s.cli(&["hardware", "delete", MAC]));
    let out = s.cli(&["hardware", "get", MAC]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn errors_are_reported_with_the_field_and_a_failing_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let bad = br#"{"id":"x","network":{"interfaces":[{"dhcp":{"mac":"not-a-mac"}}]}}"#;
    let out = s.cli_stdin(&["hardware", "push", "-f", "-"], Some(bad));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("network.interfaces[0].dhcp.mac") && err.contains("422"),
        "{err}"
    );

    let out = s.cli(&["workflow", "create", "-t", "x", "-r", "{not json"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hardware-map is not JSON"));

    // No server at all: a clear message, not a hang.
    let out = std::process::Command::new(BIN)
        .args(["--url", "http://127.0.0.1:9", "hardware", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach Bellows"));
}

#[test]
fn completions_are_generated() {
    let out = std::process::Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("hardware") && text.contains("workflow"));
}
