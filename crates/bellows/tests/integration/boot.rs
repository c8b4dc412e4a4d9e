//! The HTTP boot service (auto.ipxe, binaries, in-memory OS) and syslog,
//! through a real server process.

use serde_json::json;

use crate::harness::{Server, http, ok};

const MAC: &str = "02:00:00:00:b0:01";

fn get_text(url: &str) -> (u16, Vec<u8>) {
    get_text_from(url, None)
}

/// A GET from a chosen local address (the machine's reserved 127.0.0.2).
fn get_text_from(url: &str, source: Option<std::net::IpAddr>) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = crate::harness::client_builder()
            .local_address(source)
            .build()
            .unwrap();
        let resp = client.get(url).send().await.expect("request");
        (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
    })
}

fn setup() -> (tempfile::TempDir, Server) {
    setup_with(&[])
}

/// [`setup`] with more server flags.
fn setup_with(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let ipxe = dir.path().join("ipxe");
    let osie = dir.path().join("osie");
    std::fs::create_dir_all(&ipxe).unwrap();
    std::fs::create_dir_all(&osie).unwrap();
    std::fs::write(ipxe.join("undionly.kpxe"), b"fake undionly").unwrap();
    std::fs::write(osie.join("vmlinuz"), vec![7u8; 100_000]).unwrap();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    let mut args = vec![
        "--ipxe-dir",
        ipxe.to_str().unwrap(),
        "--osie-dir",
        osie.to_str().unwrap(),
        "--public-ip",
        "127.0.0.1",
        "--kernel-args",
        "extra=1",
    ];
    args.extend_from_slice(extra);
    let s = Server::start_with(&dir.path().join("data"), &args);
    let hw = json!({"id": "b1", "network": {"interfaces": [{"dhcp": {"mac": MAC, "ip": {"address": "127.0.0.2"}},
                     "netboot": {"allow_pxe": true, "allow_workflow": true}}]}});
    let (st, _) = http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(hw.to_string().as_bytes()),
    );
    assert_eq!(st, 201);
    (dir, s)
}

#[test]
fn auto_ipxe_follows_the_machine_and_its_workflows() {
    let (_dir, s) = setup();
    // The machine asks from its reserved address, 127.0.0.2.
    let script = |path: &str| {
        let machine = Some("127.0.0.2".parse().unwrap());
        let (st, body) = get_text_from(&format!("{}{path}", s.http_url), machine);
        (st, String::from_utf8(body).unwrap())
    };
    // Anyone else is refused, with the reason.
    let (st, body) = get_text(&format!("{}/ipxe/{MAC}/auto.ipxe", s.http_url));
    assert_eq!(st, 403);
    assert!(
        String::from_utf8_lossy(&body).contains("reserved address"),
        "{body:?}"
    );
    // No workflow: local boot.
    let (st, body) = script(&format!("/ipxe/{MAC}/auto.ipxe"));
    assert_eq!(st, 200);
    assert!(
        body.starts_with("#!ipxe\n")
            && body.contains("no pending workflow")
            && body.trim_end().ends_with("exit 1"),
        "{body}"
    );
    // Any MAC spelling; unknown MAC → 404.
    assert_eq!(script("/ipxe/02-00-00-00-B0-01/auto.ipxe").0, 200);
    assert_eq!(script("/ipxe/02:00:00:00:b0:99/auto.ipxe").0, 404);
    assert_eq!(script("/ipxe/not-a-mac/auto.ipxe").0, 404);

    // A workflow for the machine: the in-memory OS, with what the worker needs.
    let tmpl = std::fs::read_to_string(crate::harness::fixture("hello-world.tmpl")).unwrap();
    http(
        "POST",
        &format!("{}/api/v1/templates", s.url),
        Some(json!({"name": "hw", "data": tmpl}).to_string().as_bytes()),
    );
    let (st, wf) = http(
        "POST",
        &format!("{}/api/v1/workflows", s.url),
        Some(
            json!({"template": "hw", "hardware_map": {"device_1": MAC}})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 201, "{wf}");
    let (_, body) = script(&format!("/ipxe/{MAC}/auto.ipxe"));
    let http_base = s.http_url.clone();
    assert!(
        body.contains(&format!("kernel {http_base}/osie/vmlinuz initrd=initramfs")),
        "{body}"
    );
    assert!(body.contains(&format!("bellows.worker_id={MAC}")), "{body}");
    // The worker service over TLS, and the CA it pins: the fingerprint
    // openssl computes of the server's CA certificate.
    let worker_url = http_base.replacen("http://", "https://", 1);
    assert!(
        body.contains(&format!("bellows.api={worker_url} ")) && body.contains("extra=1"),
        "{body}"
    );
    let ca = s.ca.as_ref().expect("TLS on by default");
    let fingerprint = crate::harness::openssl_fingerprint(ca);
    assert!(
        body.contains(&format!("bellows.ca={fingerprint}")),
        "{body}"
    );
    assert!(
        body.contains(&format!("initrd {http_base}/osie/initramfs")),
        "{body}"
    );

    // allow_pxe false: local boot even with the workflow.
    let hw = json!({"id": "b1", "network": {"interfaces": [{"dhcp": {"mac": MAC, "ip": {"address": "127.0.0.2"}},
                     "netboot": {"allow_pxe": false}}]}});
    http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(hw.to_string().as_bytes()),
    );
    let (_, body) = script(&format!("/ipxe/{MAC}/auto.ipxe"));
    assert!(body.contains("allow_pxe is false"), "{body}");
}

#[test]
fn binaries_and_in_memory_os_files_are_served_without_escapes() {
    let (_dir, s) = setup();
    let get = |path: &str| get_text(&format!("{}{path}", s.http_url));
    assert_eq!(get("/ipxe/undionly.kpxe"), (200, b"fake undionly".to_vec()));
    assert_eq!(
        get(&format!("/ipxe/{MAC}/undionly.kpxe")),
        (200, b"fake undionly".to_vec())
    );
    let (st, kernel) = get("/osie/vmlinuz");
    assert_eq!((st, kernel.len()), (200, 100_000));
    for bad in [
        "/ipxe/..%2Fsecret",
        "/ipxe/.hidden",
        "/ipxe/nope.efi",
        "/osie/..%2Fsecret",
        "/osie/../secret",
        "/ipxe/not-a-mac/undionly.kpxe",
    ] {
        let (st, body) = get(bad);
        assert!(st == 404 || st == 400, "{bad}: {st}");
        assert_ne!(body, b"outside", "{bad} escaped the root");
    }
}

/// `--local-boot refind`: rEFInd by iPXE's `${buildarch}`, and seed 004's
/// settings until the operator puts a `refind.conf` beside the binaries.
#[test]
fn refind_files_are_served_by_architecture_with_the_seed_settings() {
    let dir = tempfile::tempdir().unwrap();
    let refind = dir.path().join("refind");
    std::fs::create_dir_all(&refind).unwrap();
    std::fs::write(refind.join("refind_x64.efi"), b"fake rEFInd x64").unwrap();
    let s = Server::start_with(
        &dir.path().join("data"),
        &[
            "--refind-dir",
            refind.to_str().unwrap(),
            "--local-boot",
            "refind",
        ],
    );
    let get = |path: &str| get_text(&format!("{}{path}", s.http_url));
    let (st, body) = get("/refind/x86_64/refind.efi");
    assert_eq!((st, body.as_slice()), (200, &b"fake rEFInd x64"[..]));
    // No binary for that architecture, or not one at all: 404, no escape.
    for path in [
        "/refind/arm64/refind.efi",
        "/refind/mips/refind.efi",
        "/refind/..%2f..%2fetc/refind.efi",
        "/refind/refind_x64.efi",
    ] {
        assert_eq!(get(path).0, 404, "{path}");
    }
    let (st, conf) = get("/refind/refind.conf");
    let conf = String::from_utf8(conf).unwrap();
    assert_eq!(st, 200);
    for line in ["timeout 1", "textonly", "scanfor internal", "scan_delay 0"] {
        assert!(conf.lines().any(|l| l == line), "{line:?} in {conf}");
    }
    std::fs::write(refind.join("refind.conf"), b"timeout 5\n").unwrap();
    assert_eq!(get("/refind/refind.conf"), (200, b"timeout 5\n".to_vec()));
}

#[test]
fn syslog_lines_are_filed_under_the_machine() {
    let (_dir, s) = setup();
    let addr = s.syslog.expect("syslog on");
    let sock = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    sock.send_to(b"<6>ipxe: Downloading vmlinuz", addr).unwrap();
    sock.send_to(
        b"<11>1 2026-11-21T12:00:00Z node app - - - image2disk failed",
        addr,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = ok(&s.cli(&["hardware", "logs", MAC]));
        if out.contains("image2disk failed") {
            assert!(
                out.contains("Downloading vmlinuz") && out.contains("err") && out.contains("ipxe"),
                "{out}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "logs not filed within 5 s: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (st, v) = http(
        "GET",
        &format!("{}/api/v1/hardware/b1/logs?limit=1", s.url),
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["machine"], "b1");
}

/// The attack of issue 12: syslog from many addresses Bellows does not know,
/// each under the per-machine cap, grew the database without bound. All
/// unknown senders now share one bucket of 10,000 lines (counted in the
/// database with sqlite3), and a known machine's lines are all kept.
#[test]
fn a_syslog_flood_from_many_addresses_stays_within_the_budget() {
    use std::time::{Duration, Instant};
    let sqlite3 = bellows_testkit::packages::ensure_installed("sqlite3", "sqlite3");
    // Its own port: the other syslog test may hold 514.
    let (dir, s) = setup_with(&["--syslog-listen", "127.0.0.1:0"]);
    let addr = s.syslog.expect("syslog on");
    let machine = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    let count = |filter: &str| -> i64 {
        let db = dir.path().join("data/bellows.db");
        let out = std::process::Command::new(&sqlite3)
            .arg("-readonly")
            .arg(&db)
            .arg(format!("SELECT count(*) FROM machine_log WHERE {filter}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let wait_for = |filter: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while count(filter) == 0 {
            assert!(Instant::now() < deadline, "no line where {filter}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The machine's first line is stored before the flood starts.
    machine
        .send_to(b"<14>worker: before the flood", addr)
        .unwrap();
    wait_for("machine = 'b1' AND body LIKE '%before the flood%'");

    let (senders, lines_each) = (250u32, 50u32);
    let started = Instant::now();
    for n in 0..senders {
        let source = format!("127.0.{}.{}", 1 + n / 200, 10 + n % 200);
        let sock = std::net::UdpSocket::bind(format!("{source}:0")).unwrap();
        for i in 0..lines_each {
            let line = format!("<13>flood: junk {n} {i} {}", "x".repeat(100));
            sock.send_to(line.as_bytes(), addr).unwrap();
        }
        machine
            .send_to(format!("<14>worker: progress {n}").as_bytes(), addr)
            .unwrap();
        // Paced so the receiver's socket buffer does not overflow: the
        // flood must reach the store to test it.
        std::thread::sleep(Duration::from_millis(25));
    }
    // UDP: under load one datagram may be dropped, so say it until it
    // is filed (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    while count("machine = 'b1' AND body LIKE '%flood over%'") == 0 {
        assert!(Instant::now() < deadline, "'flood over' never filed");
        machine.send_to(b"<14>worker: flood over", addr).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let unknown = count("machine LIKE 'ip:%'");
    let distinct = count("machine LIKE 'ip:127.0.2.%'");
    eprintln!(
        "{} lines from {senders} addresses in {:?}: {unknown} kept",
        senders * lines_each,
        started.elapsed()
    );
    assert!(
        unknown <= 10_000,
        "{unknown} lines kept from unknown senders"
    );
    assert!(distinct > 0, "the newest senders' lines are kept");
    // The machine's lines outlive the flood: its first one is still there,
    // and (UDP may drop a few under load) most of the others.
    let kept = count("machine = 'b1'");
    eprintln!("{kept} of the machine's {} lines kept", senders + 2);
    assert_eq!(
        count("machine = 'b1' AND body LIKE '%before the flood%'"),
        1
    );
    assert!(kept > i64::from(senders) / 2, "{kept}");
    let out = ok(&s.cli(&["hardware", "logs", MAC, "--limit", "300"]));
    assert!(
        out.contains("before the flood") && out.contains("flood over"),
        "{out}"
    );
}

/// The router advertisement that ends iPXE's IPv6 wait, as ndisc6's
/// `rdisc6` (a client we did not write) sees it: no prefix, not a router.
#[test]
fn router_advertisement_answers_a_solicitation() {
    if !bellows_testkit::netns::can_run() {
        return;
    }
    let rdisc6 = "/usr/bin/rdisc6";
    if !std::path::Path::new(rdisc6).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "ndisc6 is required; scripts/test.sh installs it"
        );
        eprintln!("skipped: no rdisc6");
        return;
    }
    let mut lab = bellows_testkit::netns::Lab::new("ra", "10.76.0.1/24");
    let host = lab.host("h1").addr("10.76.0.11/24").add();
    let dir = tempfile::tempdir().unwrap();
    let _s = Server::start_in_netns_with(
        &lab.server_ns,
        "10.76.0.1",
        dir.path(),
        &[
            "--interface",
            "br0",
            "--dhcp-mode",
            "reservation",
            "--dhcp-listen",
            "10.76.0.1:67",
            "--tftp-listen",
            "off",
        ],
    );
    // The link-local address needs DAD to finish before it can send; retry.
    let mut last = String::new();
    for _ in 0..10 {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.ns,
                rdisc6,
                "-1",
                "-r",
                "2",
                "-w",
                "1500",
                &host.ifname,
            ])
            .output()
            .unwrap();
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && last.contains("Router lifetime") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let lifetime = last
        .lines()
        .find(|l| l.starts_with("Router lifetime"))
        .unwrap_or("");
    assert!(
        lifetime.contains(" 0 (0x00000000) seconds"),
        "not a default router: {last}"
    );
    assert!(!last.contains("Prefix"), "no prefix to configure: {last}");
    assert!(
        last.contains("Stateful address conf.    :           No"),
        "{last}"
    );
}
