//! The metadata service: each caller, found by its address, sees only its
//! own record; cloud-init's own datasource code reads it.

use std::net::IpAddr;
use std::process::Command;

use serde_json::{Value, json};

use bellows_testkit::netns::{Lab, can_run};

use crate::harness::{Server, http, ok};

/// GET from a chosen source address (the whole of 127/8 is loopback).
fn get_from(src: &str, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let src: IpAddr = src.parse().unwrap();
        let client = crate::harness::client_builder()
            .local_address(src)
            .build()
            .unwrap();
        let mut req = client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    })
}

fn machine(id: &str, mac: &str, ip: &str, hostname: &str, key: &str) -> Value {
    json!({
        "id": id,
        "metadata": {"instance": {"hostname": hostname, "ssh_keys": [key],
                                  "userdata": format!("#cloud-config\nhostname: {hostname}\n")}},
        "network": {"interfaces": [{"dhcp": {"mac": mac, "ip": {"address": ip}}}]}
    })
}

fn push(s: &Server, doc: &Value) {
    let (status, v) = http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(doc.to_string().as_bytes()),
    );
    assert!(status == 200 || status == 201, "{v}");
}

#[test]
fn each_caller_sees_only_its_own_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--trusted-proxies", "127.0.0.9/32"]);
    push(
        &s,
        &machine(
            "a",
            "02:00:00:00:00:0a",
            "127.0.0.2",
            "alpha",
            "ssh-ed25519 AAAA alpha@lab",
        ),
    );
    push(
        &s,
        &machine(
            "b",
            "02:00:00:00:00:0b",
            "127.0.0.3",
            "bravo",
            "ssh-ed25519 BBBB bravo@lab",
        ),
    );
    let host = |src: &str| {
        get_from(
            src,
            &format!("{}/latest/meta-data/hostname", s.http_url),
            &[],
        )
    };
    assert_eq!(host("127.0.0.2"), (200, "alpha".into()));
    assert_eq!(host("127.0.0.3"), (200, "bravo".into()));
    // Each machine's timeline notes its metadata request once (a burst of
    // paths is one step), and only its own.
    assert_eq!(host("127.0.0.2"), (200, "alpha".into()));
    let metadata_steps = |id: &str| -> Vec<String> {
        let (_, v) = http(
            "GET",
            &format!("{}/api/v1/hardware/{id}/timeline", s.url),
            None,
        );
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["step"] == "metadata")
            .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let noted = bellows_testkit::process::wait_for(std::time::Duration::from_secs(5), || {
        metadata_steps("a") == ["from 127.0.0.2"] && metadata_steps("b") == ["from 127.0.0.3"]
    });
    assert!(
        noted,
        "timelines: a {:?}, b {:?}",
        metadata_steps("a"),
        metadata_steps("b")
    );
    // Unknown caller: 404 and nothing else.
    for path in [
        "/latest/meta-data/hostname",
        "/latest/meta-data/",
        "/metadata",
        "/meta-data",
        "/user-data",
    ] {
        let (status, body) = get_from("127.0.0.4", &format!("{}{path}", s.http_url), &[]);
        assert_eq!((status, body.as_str()), (404, "not found\n"), "{path}");
    }
    // A spoofed X-Forwarded-For from an untrusted peer is ignored...
    let spoof = [("x-forwarded-for", "127.0.0.3")];
    let url = format!("{}/latest/meta-data/hostname", s.http_url);
    assert_eq!(get_from("127.0.0.4", &url, &spoof).0, 404);
    assert_eq!(get_from("127.0.0.2", &url, &spoof), (200, "alpha".into()));
    // ...and honoured from a trusted proxy (right-most untrusted entry).
    assert_eq!(get_from("127.0.0.9", &url, &spoof), (200, "bravo".into()));
    assert_eq!(
        get_from(
            "127.0.0.9",
            &url,
            &[("x-forwarded-for", "127.0.0.2, 127.0.0.3")]
        ),
        (200, "bravo".into())
    );
    assert_eq!(get_from("127.0.0.9", &url, &[]).0, 404);

    // Other views of the same record: EC2's key directory under /latest,
    // hegel's one-key-a-line value under /2009-04-04.
    let (_, keys) = get_from(
        "127.0.0.3",
        &format!("{}/latest/meta-data/public-keys/", s.http_url),
        &[],
    );
    assert_eq!(keys, "0=bravo@lab");
    let (_, keys) = get_from(
        "127.0.0.3",
        &format!("{}/2009-04-04/meta-data/public-keys", s.http_url),
        &[],
    );
    assert_eq!(keys, "ssh-ed25519 BBBB bravo@lab");
    let (_, md) = get_from("127.0.0.2", &format!("{}/metadata", s.http_url), &[]);
    let md: Value = serde_json::from_str(&md).unwrap();
    assert_eq!(
        (md["id"].as_str(), md["hostname"].as_str()),
        (Some("a"), Some("alpha"))
    );
    let (_, ud) = get_from(
        "127.0.0.2",
        &format!("{}/latest/user-data", s.http_url),
        &[],
    );
    assert_eq!(ud, "#cloud-config\nhostname: alpha\n");

    // Live: a push changes the next answer, no restart.
    push(
        &s,
        &machine(
            "a",
            "02:00:00:00:00:0a",
            "127.0.0.2",
            "alpha-2",
            "ssh-ed25519 AAAA alpha@lab",
        ),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while host("127.0.0.2").1 != "alpha-2" {
        assert!(
            std::time::Instant::now() < deadline,
            "push not visible within 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // And a re-addressed machine loses the old address at once.
    push(
        &s,
        &machine(
            "b",
            "02:00:00:00:00:0b",
            "127.0.0.5",
            "bravo",
            "ssh-ed25519 BBBB bravo@lab",
        ),
    );
    while host("127.0.0.3").0 != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "old address still answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn imds_v2_token_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    push(
        &s,
        &machine(
            "a",
            "02:00:00:00:00:0a",
            "127.0.0.1",
            "alpha",
            "ssh-ed25519 AAAA alpha@lab",
        ),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = crate::harness::client_builder().build().unwrap();
        let url = format!("{}/latest/api/token", s.http_url);
        let r = c
            .put(&url)
            .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["x-aws-ec2-metadata-token-ttl-seconds"], "60");
        let token = r.text().await.unwrap();
        assert_eq!(token.len(), 32);
        let r = c.put(&url).send().await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            400,
            "missing TTL is refused as EC2 does"
        );
        let r = c
            .get(format!("{}/latest/meta-data/instance-id", s.http_url))
            .header("X-aws-ec2-metadata-token", token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "a");
    });
}

/// cloud-init (Debian's package, its own datasource code) in network
/// namespaces: two machines with different addresses each read their own
/// hostname, SSH keys and user-data over EC2 and NoCloud-net; a third,
/// unknown address gets nothing.
#[test]
fn cloud_init_datasources_in_network_namespaces() {
    if !can_run() {
        return;
    }
    assert!(
        std::path::Path::new("/usr/lib/python3/dist-packages/cloudinit").exists(),
        "Debian's cloud-init package is required (scripts/test.sh installs it)"
    );
    let mut lab = Lab::new("md", "10.77.0.1/24");
    let h1 = lab.host("h1").addr("10.77.0.11/24").add().ns;
    let h2 = lab.host("h2").addr("10.77.0.12/24").add().ns;
    let h3 = lab.host("h3").addr("10.77.0.13/24").add().ns;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in_netns(&lab.server_ns, "10.77.0.1", dir.path());
    for (id, mac, ipaddr, name) in [
        ("m1", "02:00:00:00:01:01", "10.77.0.11", "node-one"),
        ("m2", "02:00:00:00:01:02", "10.77.0.12", "node-two"),
    ] {
        let doc = machine(
            id,
            mac,
            ipaddr,
            name,
            &format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{id} root@{name}"),
        );
        ok(&s.cli_netns(
            &lab.server_ns,
            &["hardware", "push", "-f", "-"],
            Some(doc.to_string().as_bytes()),
        ));
    }
    let client = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/peers/cloud_init_client.py"
    );
    let run = |ns: &str, kind: &str| -> Value {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "timeout",
                "60",
                "/usr/bin/python3",
                client,
                kind,
                &s.http_url,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
            panic!(
                "{kind} in {ns}: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    for kind in ["ec2", "nocloud"] {
        for (ns, id, name) in [(&h1, "m1", "node-one"), (&h2, "m2", "node-two")] {
            let got = run(ns, kind);
            assert_eq!(got["ok"], true, "{kind} {ns}: {got}");
            assert_eq!(got["instance_id"], id, "{kind} {ns}");
            assert_eq!(got["hostname"], name, "{kind} {ns}");
            assert_eq!(
                got["ssh_keys"],
                json!([format!(
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{id} root@{name}"
                )]),
                "{kind} {ns}"
            );
            assert_eq!(
                got["user_data"],
                format!("#cloud-config\nhostname: {name}\n"),
                "{kind} {ns}"
            );
        }
        assert_eq!(
            run(&h3, kind)["ok"],
            false,
            "{kind}: an unknown address must learn nothing"
        );
    }
    drop(s);
}
