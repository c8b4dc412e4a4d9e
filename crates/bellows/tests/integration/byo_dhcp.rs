//! `bellows dhcp-config` output is accepted by the real daemons, and
//! `bellows ipxe ovh-script` is seed 000's script for this server.

use std::process::Command;

use serde_json::json;

use crate::harness::{Server, http, ok};

fn daemon(name: &str) -> Option<String> {
    let path = format!("/usr/sbin/{name}");
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} missing: scripts/test.sh installs it"
    );
    eprintln!("skipped {name}: not installed");
    None
}

fn server_with_machines() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--public-ip", "10.77.0.1"]);
    for doc in [
        json!({"id": "n1", "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:00:01", "hostname": "node1",
            "ip": {"address": "10.77.0.11", "netmask": "255.255.255.0", "gateway": "10.77.0.1"},
            "name_servers": ["10.77.0.1", "10.77.0.2"], "lease_time": 3600}}]}}),
        json!({"id": "n2", "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:00:02", "ip": {"address": "10.78.0.12"}}},
            {"dhcp": {"mac": "02:00:00:00:00:03"}}]}}),
    ] {
        let (st, v) = http(
            "POST",
            &format!("{}/api/v1/hardware", s.url),
            Some(doc.to_string().as_bytes()),
        );
        assert_eq!(st, 201, "{v}");
    }
    (dir, s)
}

#[test]
fn generated_configs_pass_the_daemons_own_checks() {
    let (dir, s) = server_with_machines();
    let write = |format: &str| {
        let out = s.cli(&["dhcp-config", "--format", format]);
        let text = ok(&out);
        assert!(String::from_utf8_lossy(&out.stderr).contains("left out n2 02:00:00:00:00:03"));
        let path = dir.path().join(format!("{format}.conf"));
        std::fs::write(&path, &text).unwrap();
        (path, text)
    };
    let (dnsmasq_conf, text) = write("dnsmasq");
    assert!(
        text.contains("dhcp-host=02:00:00:00:00:01,set:") && text.contains("10.77.0.11,node1,3600"),
        "{text}"
    );
    assert!(
        text.contains("/auto.ipxe") && text.contains("undionly.kpxe,,10.77.0.1"),
        "{text}"
    );
    if let Some(dnsmasq) = daemon("dnsmasq") {
        let out = Command::new(dnsmasq)
            .args(["--test", "-C"])
            .arg(&dnsmasq_conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dnsmasq --test: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (kea_conf, text) = write("kea");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["Dhcp4"]["subnet4"][0]["reservations"][0]["ip-address"],
        "10.77.0.11"
    );
    if let Some(kea) = daemon("kea-dhcp4") {
        let out = Command::new(kea).arg("-t").arg(&kea_conf).output().unwrap();
        assert!(
            out.status.success(),
            "kea-dhcp4 -t: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (isc_conf, text) = write("isc");
    assert!(text.contains("fixed-address 10.77.0.11;"), "{text}");
    if let Some(dhcpd) = daemon("dhcpd") {
        let leases = dir.path().join("dhcpd.leases");
        std::fs::write(&leases, "").unwrap();
        let out = Command::new(dhcpd)
            .args(["-t", "-4", "-cf"])
            .arg(&isc_conf)
            .arg("-lf")
            .arg(&leases)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dhcpd -t: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A broken config must fail the same checks, or they prove nothing.
    if let Some(dnsmasq) = daemon("dnsmasq") {
        std::fs::write(&dnsmasq_conf, "dhcp-range=not-an-address\n").unwrap();
        let out = Command::new(dnsmasq)
            .args(["--test", "-C"])
            .arg(&dnsmasq_conf)
            .output()
            .unwrap();
        assert!(!out.status.success());
    }
}

#[test]
fn ovh_script_is_the_seed_script_for_this_server() {
    let (_dir, s) = server_with_machines();
    let script = ok(&s.cli(&["ipxe", "ovh-script"]));
    let port = s.http_url.rsplit(':').next().unwrap();
    assert_eq!(
        script,
        format!(
            "#!ipxe\nifclose net0\ndhcp net1 || goto failed\nset iface net1\nchain --autofree http://10.77.0.1:{port}/ipxe/${{net1/mac}}/auto.ipxe || goto failed\n:failed\nexit 1\n"
        )
    );
    assert!(
        !script.contains("param"),
        "no params/param: OVH's iPXE lacks PARAM_CMD"
    );
}
