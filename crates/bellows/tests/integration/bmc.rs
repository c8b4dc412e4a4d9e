//! BMC records: the password goes in and never comes out.

use serde_json::json;

use crate::harness::{Server, http, ok};

const PASSWORD: &str = "s3cret-Pa55word-never-shown";

#[test]
fn bmc_password_is_write_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--log", "debug"]);
    let hw =
        json!({"id": "m1", "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:0b:01"}}]}});
    http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(hw.to_string().as_bytes()),
    );

    // First set without a password: refused, naming the field.
    let (st, v) = http(
        "PUT",
        &format!("{}/api/v1/hardware/m1/bmc", s.url),
        Some(
            json!({"address": "10.0.0.9", "username": "admin"})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!((st, v["field"].as_str()), (422, Some("password")), "{v}");
    // Bad protocol, unknown machine.
    let (st, v) = http(
        "PUT",
        &format!("{}/api/v1/hardware/m1/bmc", s.url),
        Some(json!({"address": "10.0.0.9", "username": "admin", "password": "x", "protocol": "telnet"}).to_string().as_bytes()),
    );
    assert_eq!((st, v["field"].as_str()), (422, Some("protocol")), "{v}");
    let (st, _) = http(
        "PUT",
        &format!("{}/api/v1/hardware/nope/bmc", s.url),
        Some(
            json!({"address": "10.0.0.9", "username": "admin", "password": "x"})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 404);

    // Through the CLI, password on stdin.
    let out = ok(&s.cli_stdin(
        &[
            "bmc",
            "set",
            "02:00:00:00:0b:01",
            "--address",
            "10.0.0.9",
            "--protocol",
            "ipmi",
            "-u",
            "admin",
            "--password-stdin",
        ],
        Some(format!("{PASSWORD}\n").as_bytes()),
    ));
    assert!(out.contains("10.0.0.9") && out.contains("ipmi"), "{out}");
    // Update without a password keeps the stored one.
    let (st, v) = http(
        "PUT",
        &format!("{}/api/v1/hardware/m1/bmc", s.url),
        Some(
            json!({"address": "10.0.0.10", "username": "admin", "protocol": "redfish"})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 200, "{v}");

    let mut seen = Vec::new();
    for args in [
        vec!["bmc", "get", "m1", "-o", "json"],
        vec!["bmc", "list", "-o", "yaml"],
        vec!["bmc", "list"],
        vec!["hardware", "get", "m1", "-o", "json"],
    ] {
        seen.push(ok(&s.cli(&args)));
    }
    let (_, v) = http("GET", &format!("{}/api/v1/hardware/m1/bmc", s.url), None);
    assert_eq!(v["has_password"], true);
    assert_eq!(v["address"], "10.0.0.10");
    seen.push(v.to_string());
    seen.extend(s.drain_log());
    for text in &seen {
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    }

    ok(&s.cli(&["bmc", "delete", "m1"]));
    let (st, _) = http("GET", &format!("{}/api/v1/hardware/m1/bmc", s.url), None);
    assert_eq!(st, 404);
}

/// Power commands fail fast and clearly when a machine has no BMC or its
/// BMC does not answer, and the password stays out of every message.
#[test]
fn power_commands_report_missing_and_unreachable_bmcs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let hw =
        json!({"id": "m2", "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:0b:02"}}]}});
    http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(hw.to_string().as_bytes()),
    );
    let out = s.cli(&["power", "status", "m2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no BMC") && err.contains("409"), "{err}");

    // IPMI to a loopback port where nothing listens: an error in seconds.
    ok(&s.cli_stdin(
        &[
            "bmc",
            "set",
            "m2",
            "--address",
            "127.0.0.1",
            "--port",
            "9",
            "--protocol",
            "ipmi",
            "-u",
            "admin",
            "--password-stdin",
        ],
        Some(format!("{PASSWORD}\n").as_bytes()),
    ));
    for args in [
        vec!["power", "status", "m2"],
        vec!["power", "on", "m2"],
        vec!["boot-device", "pxe", "m2", "--efi"],
        vec!["netboot", "m2"],
    ] {
        let start = std::time::Instant::now();
        let out = s.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} succeeded against nothing");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(45),
            "{args:?} hung: {:?}",
            start.elapsed()
        );
        assert!(
            err.contains("127.0.0.1") && (err.contains("504") || err.contains("502")),
            "{args:?}: {err}"
        );
        assert!(!err.contains(PASSWORD), "password in {err}");
    }
    let listed = ok(&s.cli(&["bmc", "list"]));
    assert!(listed.contains("m2"), "{listed}");
    for line in s.drain_log() {
        assert!(
            !line.contains(PASSWORD),
            "password in the server log: {line}"
        );
    }
}
