//! Bellows against Tinkerbell's metadata service (hegel), row by row.
//!
//! The judge is hegel's own EC2 front-end test table and the machines it
//! runs against, kept in the shared Tinkerbell corpus
//! (`shared/tinkerbell-compat/fixtures/hegel/`, never copied here). Each
//! machine is loaded through the same parser a `hardware push` uses, the
//! metadata router is served on loopback, and each row's path is fetched
//! from the row's source address over a real TCP connection, so the caller
//! is found by its TCP peer address exactly as in the server.
//!
//! A row either matches hegel (status and body) or is one of the few
//! deliberate differences listed in [`DELIBERATE`], each with its reason.
//! Anything else fails the test, and so does a listed difference that no
//! longer differs (the list must stay true).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bellows_metadata::{MachineByAddress, MetadataState, router};
use bellows_model::Hardware;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where Bellows answers differently from hegel on purpose: (source
/// address, path without its trailing `/`, why). Both spellings of a path
/// (with and without the trailing `/`) are covered by one entry.
const DELIBERATE: &[(&str, &str, &str)] = &[
    (
        "127.0.0.13",
        "/2009-04-04/meta-data/instance-id",
        "a record without metadata.instance.id answers its hardware id, not an empty \
         body: cloud-init keys its per-instance state on instance-id, and an empty one \
         would make every boot look like a new, nameless instance",
    ),
    (
        "127.0.0.11",
        "/2009-04-04/meta-data/local-ipv4",
        "a record with no private IPv4 in metadata.instance.ips answers the address the \
         machine asked from (its reserved DHCP address), not an empty body: EC2 always \
         has local-ipv4, and a record that works with hegel (one listing a private \
         address) gets hegel's answer",
    ),
    (
        "127.0.0.14",
        "/2009-04-04/meta-data/hostname",
        "an unknown caller gets the same 404 status as from hegel, with the body \
         `not found` rather than an empty one: clients look only at the status",
    ),
];

/// Machines found by their reserved addresses, as the server's store index
/// finds them.
struct Machines(Vec<Arc<Hardware>>);

impl MachineByAddress for Machines {
    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Hardware>> {
        self.0.iter().find(|hw| hw.ips().any(|a| a == ip)).cloned()
    }
}

/// The corpus directory: `BELLOWS_COMPAT_DIR`, else the first
/// `shared/tinkerbell-compat` beside an ancestor of this crate. `Err` names
/// every place looked at.
fn compat_dir() -> Result<PathBuf, Vec<PathBuf>> {
    let mut looked = Vec::new();
    if let Some(dir) = std::env::var_os("BELLOWS_COMPAT_DIR") {
        let dir = PathBuf::from(dir);
        if dir.join("fixtures/hegel/cases.tsv").is_file() {
            return Ok(dir);
        }
        looked.push(dir);
    }
    for ancestor in Path::new(env!("CARGO_MANIFEST_DIR")).ancestors() {
        let dir = ancestor.join("shared/tinkerbell-compat");
        if dir.join("fixtures/hegel/cases.tsv").is_file() {
            return Ok(dir);
        }
        looked.push(dir);
    }
    Err(looked)
}

/// The hegel fixtures, or `None` after saying loudly that they are missing.
fn hegel_fixtures() -> Option<PathBuf> {
    match compat_dir() {
        Ok(dir) => Some(dir.join("fixtures")),
        Err(looked) => {
            eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!("!! hegel compatibility NOT CHECKED: Tinkerbell corpus not found.");
            eprintln!("!! Set BELLOWS_COMPAT_DIR to the tinkerbell-compat directory.");
            eprintln!("!! Looked for fixtures/hegel/cases.tsv under:");
            for dir in looked {
                eprintln!("!!   {}", dir.display());
            }
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
            None
        }
    }
}

fn load(fixtures: &Path, file: &str) -> Hardware {
    let path = fixtures.join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Hardware::from_json(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every machine listed in `hegel/machines.txt`.
fn machines(fixtures: &Path) -> Vec<Arc<Hardware>> {
    let list = std::fs::read_to_string(fixtures.join("hegel/machines.txt")).expect("machines.txt");
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|file| Arc::new(load(fixtures, file)))
        .collect()
}

/// Serves the metadata router, answering from `machines`, on 127.0.0.1
/// until the test's runtime ends.
async fn serve(machines: Arc<dyn MachineByAddress>) -> SocketAddr {
    let state = MetadataState {
        machines,
        trusted_proxies: Arc::new(Vec::new()),
    };
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `GET path` from `source` (any of 127/8 is loopback) with the path sent
/// as written: (status, body).
async fn get(
    server: SocketAddr,
    source: IpAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    let mut stream = socket.connect(server).await.expect("connect");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: metadata\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answer within 10 s")
        .expect("read answer");
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "unexpected chunked answer: {head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// One row of `hegel/cases.tsv`.
struct Case {
    source: IpAddr,
    path: String,
    status: u16,
    body: String,
    origin: String,
}

fn cases(fixtures: &Path) -> Vec<Case> {
    let table = std::fs::read_to_string(fixtures.join("hegel/cases.tsv")).expect("cases.tsv");
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("cases.tsv has no {name} column"))
    };
    let (ip, path, status, body, origin) = (
        col("source_ip"),
        col("path"),
        col("status"),
        col("body"),
        col("origin"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let field = |i: usize| f.get(i).copied().unwrap_or_default();
            Case {
                source: field(ip).parse().expect("source_ip"),
                path: field(path).to_string(),
                status: field(status).parse().expect("status"),
                body: field(body).replace("\\n", "\n"),
                origin: field(origin).to_string(),
            }
        })
        .collect()
}

/// Whether `got` is the body a row expects. `json:a.b.0.c=V` checks one
/// value of a JSON answer (array indices as numbers); anything else is
/// compared as text.
fn body_matches(expected: &str, got: &str) -> bool {
    let Some(check) = expected.strip_prefix("json:") else {
        return expected == got;
    };
    let Some((path, want)) = check.split_once('=') else {
        return false;
    };
    let Ok(doc) = serde_json::from_str::<Value>(got) else {
        return false;
    };
    let pointer: String = path.split('.').map(|s| format!("/{s}")).collect();
    match doc.pointer(&pointer) {
        Some(Value::String(s)) => s == want,
        Some(other) => serde_json::from_str::<Value>(want).is_ok_and(|w| &w == other),
        None => false,
    }
}

fn deliberate(case: &Case) -> Option<&'static str> {
    let path = case.path.trim_end_matches('/');
    DELIBERATE
        .iter()
        .find(|(ip, p, _)| ip.parse::<IpAddr>().ok() == Some(case.source) && *p == path)
        .map(|(_, _, why)| *why)
}

fn shown(s: &str) -> String {
    let mut s = format!("{s:?}");
    if s.len() > 120 {
        s.truncate(117);
        s.push_str("...");
    }
    s
}

#[tokio::test]
async fn hegel_ec2_and_metadata_cases() {
    let Some(fixtures) = hegel_fixtures() else {
        return;
    };
    let server = serve(Arc::new(Machines(machines(&fixtures)))).await;
    let cases = cases(&fixtures);
    let (mut passed, mut allowed, mut failed) = (0, 0, Vec::new());
    let mut differing: BTreeMap<(IpAddr, String), ()> = BTreeMap::new();
    println!("hegel compatibility ({} rows)", cases.len());
    for case in &cases {
        let (status, body) = get(server, case.source, &case.path, &[]).await;
        let ok = status == case.status && body_matches(&case.body, &body);
        let why = deliberate(case);
        let mark = match (ok, why) {
            (true, _) => {
                passed += 1;
                "ok  "
            }
            (false, Some(_)) => {
                allowed += 1;
                differing.insert((case.source, case.path.trim_end_matches('/').into()), ());
                "DIFF"
            }
            (false, None) => {
                failed.push(format!(
                    "{} {}: expected {} {} got {} {}  [{}]",
                    case.source,
                    case.path,
                    case.status,
                    shown(&case.body),
                    status,
                    shown(&body),
                    case.origin
                ));
                "FAIL"
            }
        };
        println!("  {mark} {:<11} {}", case.source, case.path);
        if !ok {
            println!(
                "         expected {} {}\n         got      {} {}",
                case.status,
                shown(&case.body),
                status,
                shown(&body)
            );
            if let Some(why) = why {
                println!("         deliberate: {why}");
            }
        }
    }
    println!(
        "hegel rows passed {passed}/{}, deliberate differences {allowed}, failing {}",
        cases.len(),
        failed.len()
    );
    // A listed difference that no longer differs is stale: drop it.
    let stale: Vec<_> = DELIBERATE
        .iter()
        .filter(|(ip, p, _)| {
            let ip: IpAddr = ip.parse().expect("address in DELIBERATE");
            !differing.contains_key(&(ip, (*p).to_string()))
        })
        .map(|(ip, p, _)| format!("{ip} {p}"))
        .collect();
    assert!(
        failed.is_empty() && stale.is_empty(),
        "rows differing from hegel without a listed reason:\n  {}\nlisted differences that no longer differ:\n  {}",
        failed.join("\n  "),
        stale.join("\n  ")
    );
}

/// What Tinkerbell's `rootio` action reads from `/metadata`: the document's
/// `metadata.instance.storage` (disks with device, partitions with label,
/// number and size, and wipe_table; filesystems and volume groups when the
/// record has them), decoded into Go structs, so every type matters.
#[tokio::test]
async fn metadata_carries_the_storage_rootio_reads() {
    let Some(fixtures) = hegel_fixtures() else {
        return;
    };
    let hw = load(&fixtures, "hegel/hegel-rootio.json");
    let raw: Value = serde_json::from_slice(
        &std::fs::read(fixtures.join("hegel/hegel-rootio.json")).expect("read"),
    )
    .expect("JSON");
    let source = hw.ips().next().expect("reserved address");
    let server = serve(Arc::new(Machines(vec![Arc::new(hw)]))).await;
    let (status, body) = get(server, source, "/metadata", &[]).await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("JSON answer");
    let storage = &doc["metadata"]["instance"]["storage"];
    // The record's storage, verbatim: nothing rootio reads is lost.
    assert_eq!(
        storage, &raw["spec"]["metadata"]["instance"]["storage"],
        "{body}"
    );
    let disk = &storage["disks"][0];
    assert_eq!(disk["device"], "/dev/nvme0n1");
    assert_eq!(disk["wipe_table"], true);
    let part = &disk["partitions"][0];
    assert_eq!(part["label"], "ROOT");
    assert!(part["number"].is_i64(), "number is an int: {part}");
    assert!(part["size"].is_u64(), "size is a uint64: {part}");
    // The Equinix-shaped top level stays as Bellows documents it.
    assert_eq!(doc["hostname"], "sm01");
    assert_eq!(doc["storage"], *storage);
}

/// Identity is the TCP peer: an `X-Forwarded-For` from an untrusted peer
/// names nobody, however the path is spelled.
#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let Some(fixtures) = hegel_fixtures() else {
        return;
    };
    let server = serve(Arc::new(Machines(machines(&fixtures)))).await;
    let stranger: IpAddr = "127.0.0.14".parse().expect("address");
    let spoof = [("X-Forwarded-For", "127.0.0.11")];
    for path in [
        "/2009-04-04/meta-data/public-keys",
        "/2009-04-04/user-data/",
        "/latest/meta-data/",
        "/metadata",
        "/user-data",
    ] {
        let (status, body) = get(server, stranger, path, &spoof).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            !body.contains("key1") && !body.contains("userdata"),
            "{path}"
        );
    }
}

/// One machine, whatever address asks: for a client that can only ask from
/// 127.0.0.1.
struct Only(Arc<Hardware>);

impl MachineByAddress for Only {
    fn by_ip(&self, _: IpAddr) -> Option<Arc<Hardware>> {
        Some(self.0.clone())
    }
}

/// cloud-init's own EC2 datasource code (Debian's package) reads hegel's
/// machine from Bellows: it settles on `/2009-04-04`, so it sees the hegel
/// dialect (every entry listed, `public-keys` one value) and still finds
/// the instance id, hostname, each key and the user data.
#[tokio::test]
async fn cloud_init_reads_the_hegel_dialect() {
    let Some(fixtures) = hegel_fixtures() else {
        return;
    };
    if !Path::new("/usr/lib/python3/dist-packages/cloudinit").is_dir() {
        eprintln!("!! cloud-init not installed: cloud_init_reads_the_hegel_dialect NOT CHECKED");
        return;
    }
    let hw = Arc::new(load(&fixtures, "hegel/hegel-allfields.json"));
    let addr = serve(Arc::new(Only(hw))).await;
    let client = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/peers/cloud_init_client.py"
    );
    let run = tokio::process::Command::new("/usr/bin/python3")
        .args([client, "ec2", &format!("http://{addr}")])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("cloud-init within 60 s")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let got: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "cloud-init: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["instance_id"], "instance-id", "{got}");
    assert_eq!(got["hostname"], "instance-hostname", "{got}");
    assert_eq!(
        got["ssh_keys"],
        serde_json::json!(["key1", "key2"]),
        "{got}"
    );
    assert_eq!(got["user_data"], "userdata", "{got}");
    // Only the hegel dialect lists `iqn` and has `public-keys` as a value.
    assert_eq!(got["metadata"]["iqn"], "", "{got}");
    assert_eq!(
        got["metadata"]["public-keys"],
        serde_json::json!(["key1", "key2"]),
        "{got}"
    );
}
