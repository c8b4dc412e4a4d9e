//! The boot routes over a real socket, fetched with curl from chosen
//! loopback addresses: a machine's script only to its reserved address, and
//! no file through a symlink that leaves its folder.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bellows_ipxe::http::{BootDirs, BootLookup, BootState, LookupError, router};
use bellows_ipxe::{InstallOs, LocalBoot};
use bellows_model::{Hardware, MacAddr};
use serde_json::json;

/// Machines by MAC and by reserved address, none with work waiting.
struct Machines(Vec<Arc<Hardware>>);

#[async_trait::async_trait]
impl BootLookup for Machines {
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        self.0
            .iter()
            .find(|hw| {
                hw.network
                    .interfaces
                    .iter()
                    .any(|i| i.dhcp.as_ref().is_some_and(|d| d.mac == mac))
            })
            .cloned()
    }

    async fn mint_credential(
        &self,
        _: &Hardware,
        _: MacAddr,
        _: &str,
    ) -> Result<Option<String>, LookupError> {
        Ok(None)
    }

    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Hardware>> {
        self.0
            .iter()
            .find(|hw| {
                hw.network.interfaces.iter().any(|i| {
                    i.dhcp
                        .as_ref()
                        .and_then(|d| d.ip.as_ref())
                        .is_some_and(|a| a.address == ip)
                })
            })
            .cloned()
    }

    async fn waiting_workflow(
        &self,
        _: &Hardware,
        _: MacAddr,
    ) -> Result<Option<String>, LookupError> {
        Ok(None)
    }
}

const RESERVED_MAC: &str = "02:00:00:00:c0:01";
const UNRESERVED_MAC: &str = "02:00:00:00:c0:02";
const SECRET: &str = "echo custom-script-secret";

fn machines() -> Machines {
    let reserved: Hardware = serde_json::from_value(json!({
        "id": "reserved",
        "network": {"interfaces": [{
            "dhcp": {"mac": RESERVED_MAC, "ip": {"address": "127.0.0.2"}},
            "netboot": {"allow_pxe": true, "ipxe": {"contents": format!("#!ipxe\n{SECRET}\n")}}
        }]}
    }))
    .expect("hardware");
    let unreserved: Hardware = serde_json::from_value(json!({
        "id": "unreserved",
        "network": {"interfaces": [{
            "dhcp": {"mac": UNRESERVED_MAC},
            "netboot": {"allow_pxe": true}
        }]}
    }))
    .expect("hardware");
    Machines(vec![Arc::new(reserved), Arc::new(unreserved)])
}

/// Serves the boot routes on 127.0.0.1 until the test's runtime ends.
async fn serve(dirs: &BootDirs, script_from_any_address: bool) -> SocketAddr {
    let state = BootState {
        machines: Arc::new(machines()),
        os: Arc::new(InstallOs {
            kernel_url: "http://127.0.0.1/osie/vmlinuz".into(),
            initrd_url: "http://127.0.0.1/osie/initramfs".into(),
            cmdline: String::new(),
            attempts: 1,
        }),
        local_boot: Arc::new(LocalBoot::Exit),
        script_from_any_address,
    };
    let app = router(state, dirs).into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// GET with curl from `source`: (status, body).
async fn curl(server: SocketAddr, source: &str, path: &str) -> (u16, String) {
    bellows_testkit::packages::ensure_programs(&["curl"], &["curl"]);
    let url = format!("http://{server}{path}");
    let run = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--path-as-is",
            "--max-time",
            "10",
            "--interface",
            source,
        ])
        .args(["--write-out", "\n%{http_code}", &url])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("curl finishes")
        .expect("curl runs");
    assert!(output.status.success(), "curl {url}: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.parse().expect("status"), body.to_string())
}

fn empty_dirs(root: &Path) -> BootDirs {
    let ipxe_dir = root.join("ipxe");
    std::fs::create_dir_all(&ipxe_dir).expect("mkdir");
    BootDirs {
        ipxe_dir,
        osie_dir: None,
        refind_dir: None,
    }
}

/// The attack of issue 12: another host asks for a machine's script by its
/// MAC, which is no secret. It is refused with a reason, and the record's
/// own `contents` never leave; the machine itself is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machines_script_goes_only_to_its_reserved_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(&empty_dirs(dir.path()), false).await;
    let path = format!("/ipxe/{RESERVED_MAC}/auto.ipxe");

    let (status, body) = curl(server, "127.0.0.1", &path).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("reserved address"), "{body}");
    assert!(!body.contains("custom-script-secret"), "{body}");
    // Another spelling of the MAC is the same machine.
    let (status, _) = curl(server, "127.0.0.3", "/ipxe/02-00-00-00-C0-01/auto.ipxe").await;
    assert_eq!(status, 403);

    let (status, body) = curl(server, "127.0.0.2", &path).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(SECRET), "{body}");
    // By source address, as before.
    let (status, body) = curl(server, "127.0.0.2", "/auto.ipxe").await;
    assert_eq!((status, body.contains(SECRET)), (200, true), "{body}");
    let (status, _) = curl(server, "127.0.0.1", "/auto.ipxe").await;
    assert_eq!(status, 404);

    // A machine with no reserved address (proxy DHCP, the site's DHCP) is
    // served wherever it asks from: there is nothing to check against.
    let (status, body) = curl(
        server,
        "127.0.0.1",
        &format!("/ipxe/{UNRESERVED_MAC}/auto.ipxe"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("#!ipxe"), "{body}");
}

/// `--allow-script-from-any-address`, for relayed or NATed networks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_can_serve_scripts_to_any_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(&empty_dirs(dir.path()), true).await;
    let (status, body) = curl(
        server,
        "127.0.0.1",
        &format!("/ipxe/{RESERVED_MAC}/auto.ipxe"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(SECRET), "{body}");
}

/// The attack of issue 12: a symlink in a served folder that points out of
/// it (to /etc/passwd, to a file beside the folder, through a linked
/// subfolder) is not followed; links that stay inside still work, as does
/// a served folder that is itself reached through a link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_out_of_a_served_folder_are_not_followed() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), b"outside the folder").expect("write");

    let ipxe = root.join("ipxe");
    std::fs::create_dir_all(&ipxe).expect("mkdir");
    std::fs::write(ipxe.join("undionly.kpxe"), b"fake undionly").expect("write");
    symlink("undionly.kpxe", ipxe.join("undionly.kkpxe")).expect("link");
    symlink("/etc/passwd", ipxe.join("passwd.efi")).expect("link");
    symlink(outside.join("secret"), ipxe.join("secret.efi")).expect("link");
    symlink("../outside/secret", ipxe.join("relative.efi")).expect("link");

    let real_osie = root.join("osie-real");
    std::fs::create_dir_all(real_osie.join("sub")).expect("mkdir");
    std::fs::write(real_osie.join("vmlinuz"), vec![7u8; 10_000]).expect("write");
    std::fs::write(real_osie.join("sub/initramfs"), b"initramfs").expect("write");
    symlink("vmlinuz", real_osie.join("kernel")).expect("link");
    symlink("sub", real_osie.join("images")).expect("link");
    symlink("/etc/passwd", real_osie.join("passwd")).expect("link");
    symlink(&outside, real_osie.join("escape")).expect("link");
    // The folder itself is a link (as a data directory may be): fine.
    let osie = root.join("osie");
    symlink(&real_osie, &osie).expect("link");

    let refind = root.join("refind");
    std::fs::create_dir_all(&refind).expect("mkdir");
    symlink("/etc/passwd", refind.join("refind_x64.efi")).expect("link");

    let dirs = BootDirs {
        ipxe_dir: ipxe,
        osie_dir: Some(osie),
        refind_dir: Some(refind),
    };
    let server = serve(&dirs, false).await;
    let get = |path: &'static str| curl(server, "127.0.0.1", path);

    assert_eq!(
        get("/ipxe/undionly.kpxe").await,
        (200, "fake undionly".into())
    );
    assert_eq!(
        get("/ipxe/undionly.kkpxe").await,
        (200, "fake undionly".into())
    );
    assert_eq!(
        get("/ipxe/02:00:00:00:c0:09/undionly.kkpxe").await,
        (200, "fake undionly".into())
    );
    let (status, kernel) = get("/osie/vmlinuz").await;
    assert_eq!((status, kernel.len()), (200, 10_000));
    assert_eq!(get("/osie/kernel").await.0, 200);
    assert_eq!(get("/osie/sub/initramfs").await, (200, "initramfs".into()));
    assert_eq!(
        get("/osie/images/initramfs").await,
        (200, "initramfs".into())
    );

    for path in [
        "/ipxe/passwd.efi",
        "/ipxe/secret.efi",
        "/ipxe/relative.efi",
        "/ipxe/02:00:00:00:c0:09/passwd.efi",
        "/osie/passwd",
        "/osie/escape/secret",
        "/osie/escape%2Fsecret",
        "/osie/..%2Foutside/secret",
        "/osie/sub/../../outside/secret",
        "/osie/sub",
        "/refind/x86_64/refind.efi",
    ] {
        let (status, body) = get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            !body.contains("root:") && !body.contains("outside the folder"),
            "{path} escaped: {body}"
        );
    }
}

/// curl with `extra` arguments: (status, headers, body bytes).
async fn curl_raw(server: SocketAddr, path: &str, extra: &[&str]) -> (u16, String, Vec<u8>) {
    bellows_testkit::packages::ensure_programs(&["curl"], &["curl"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let headers = dir.path().join("headers");
    let url = format!("http://{server}{path}");
    let run = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D"])
        .arg(&headers)
        .args(extra)
        .arg(&url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("curl finishes")
        .expect("curl runs");
    assert!(output.status.success(), "curl {url}: {output:?}");
    let headers = std::fs::read_to_string(headers).expect("headers");
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, headers, output.stdout)
}

/// True when `headers` (as curl wrote them) hold `line`, case aside.
fn has(headers: &str, line: &str) -> bool {
    headers.to_lowercase().contains(&line.to_lowercase())
}

/// Boot files as curl sees them: whole, one range (what the storm and
/// some firmware ask), a suffix, past the end (416), several ranges
/// (answered whole), HEAD, and If-Modified-Since (304).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_files_answer_ranges_head_and_conditional_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let osie = dir.path().join("osie");
    std::fs::create_dir_all(&osie).expect("mkdir");
    // Three and a half chunks of 64 KiB, every byte telling its place.
    let kernel: Vec<u8> = (0..229_376u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(osie.join("vmlinuz"), &kernel).expect("write");
    let mut dirs = empty_dirs(dir.path());
    dirs.osie_dir = Some(osie);
    let server = serve(&dirs, false).await;

    let (status, headers, body) = curl_raw(server, "/osie/vmlinuz", &[]).await;
    assert_eq!(status, 200);
    assert!(body == kernel, "the whole file, byte for byte");
    assert!(has(&headers, "accept-ranges: bytes"), "{headers}");
    assert!(has(&headers, "content-length: 229376"), "{headers}");
    let modified = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("last-modified: ")
                .or(l.strip_prefix("Last-Modified: "))
        })
        .expect("last-modified")
        .trim()
        .to_string();

    let (status, headers, body) = curl_raw(server, "/osie/vmlinuz", &["-r", "65530-131080"]).await;
    assert_eq!(status, 206);
    assert!(
        body == kernel[65_530..=131_080],
        "the range crosses a chunk"
    );
    assert!(
        has(&headers, "content-range: bytes 65530-131080/229376"),
        "{headers}"
    );
    let (status, _, body) = curl_raw(server, "/osie/vmlinuz", &["-r", "-10"]).await;
    assert_eq!((status, body.as_slice()), (206, &kernel[229_366..]));
    let (status, headers, body) = curl_raw(server, "/osie/vmlinuz", &["-r", "300000-"]).await;
    assert_eq!((status, body.len()), (416, 0));
    assert!(has(&headers, "content-range: bytes */229376"), "{headers}");
    let (status, _, body) = curl_raw(server, "/osie/vmlinuz", &["-r", "0-1,5-6"]).await;
    assert!(
        status == 200 && body == kernel,
        "several ranges: the whole file"
    );

    let (status, headers, _) = curl_raw(server, "/osie/vmlinuz", &["-I"]).await;
    assert_eq!(status, 200, "HEAD");
    assert!(has(&headers, "content-length: 229376"), "{headers}");
    let since = format!("If-Modified-Since: {modified}");
    let (status, _, body) = curl_raw(server, "/osie/vmlinuz", &["-H", &since]).await;
    assert_eq!((status, body.len()), (304, 0));
    let stale = "If-Range: Thu, 01 Jan 1970 00:00:00 GMT";
    let (status, _, body) = curl_raw(server, "/osie/vmlinuz", &["-r", "0-9", "-H", stale]).await;
    assert!(
        status == 200 && body == kernel,
        "If-Range of another version: whole"
    );
    let (status, _, _) = curl_raw(server, "/osie/missing", &[]).await;
    assert_eq!(status, 404);
}
