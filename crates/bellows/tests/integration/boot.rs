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
    let dir = tempfile::tempdir().unwrap();
    let ipxe = dir.path().join("ipxe");
    let osie = dir.path().join("osie");
    std::fs::create_dir_all(&ipxe).unwrap();
    std::fs::create_dir_all(&osie).unwrap();
    std::fs::write(ipxe.join("undionly.kpxe"), b"fake undionly").unwrap();
    std::fs::write(osie.join("vmlinuz"), vec![7u8; 100_000]).unwrap();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    let s = Server::start_with(
        &dir.path().join("data"),
        &[
            "--ipxe-dir",
            ipxe.to_str().unwrap(),
            "--osie-dir",
            osie.to_str().unwrap(),
            "--public-ip",
            "127.0.0.1",
            "--kernel-args",
            "extra=1",
        ],
    );
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
    assert!(
        body.contains("bellows.api=http://127.0.0.1:") && body.contains("extra=1"),
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
