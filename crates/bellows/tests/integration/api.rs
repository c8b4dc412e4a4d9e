//! REST API behaviour, over loopback HTTP against a real server process.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::harness::{Server, fixture, http};

const MAC: &str = "d0:50:99:d7:63:20";

fn seed_hardware() -> Vec<u8> {
    std::fs::read(fixture("hardware.json")).unwrap()
}

fn hello_world() -> String {
    std::fs::read_to_string(fixture("hello-world.tmpl")).unwrap()
}

/// Everything a client can see: used to prove a refused request changed nothing.
fn snapshot(s: &Server) -> Value {
    let mut all = json!({});
    for kind in ["hardware", "templates", "workflows"] {
        let (status, v) = http("GET", &format!("{}/api/v1/{kind}", s.url), None);
        assert_eq!(status, 200);
        all[kind] = v["items"].clone();
    }
    let workflows = all["workflows"].as_array().cloned().unwrap_or_default();
    for wf in workflows {
        let id = wf["id"].as_str().unwrap().to_string();
        let (_, ev) = http(
            "GET",
            &format!("{}/api/v1/workflows/{id}/events", s.url),
            None,
        );
        all["events"][id] = ev;
    }
    all
}

/// A server holding the seed hardware, the hello-world template and one workflow.
fn seeded() -> (tempfile::TempDir, Server, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (st, _) = http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(&seed_hardware()),
    );
    assert_eq!(st, 201);
    let (st, t) = http(
        "POST",
        &format!("{}/api/v1/templates", s.url),
        Some(
            json!({"name": "hello-world", "data": hello_world()})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 201, "{t}");
    let (st, w) = http(
        "POST",
        &format!("{}/api/v1/workflows", s.url),
        Some(
            json!({"template": "hello-world", "hardware_map": {"device_1": MAC}})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 201, "{w}");
    let t = t["id"].as_str().unwrap().to_string();
    let w = w["id"].as_str().unwrap().to_string();
    (dir, s, t, w)
}

#[test]
fn workflow_from_the_seed_files_is_pending_with_its_worker() {
    let (_dir, s, tid, wid) = seeded();
    let (st, wf) = http("GET", &format!("{}/api/v1/workflows/{wid}", s.url), None);
    assert_eq!(st, 200);
    assert_eq!(wf["state"], "PENDING");
    assert_eq!(wf["template_id"], tid.as_str());
    assert_eq!(wf["tasks"][0]["worker"], MAC);
    assert_eq!(wf["tasks"][0]["actions"][0]["state"], "PENDING");
    assert_eq!(wf["hardware_id"], "0fba0bf8-3772-4b4a-ab9f-6ebe93b90a94");
    let (_, ev) = http(
        "GET",
        &format!("{}/api/v1/workflows/{wid}/events", s.url),
        None,
    );
    assert_eq!(ev["items"][0]["type"], "created");
    assert_eq!(ev["items"][0]["seq"], 1);
}

#[test]
fn workflows_are_rendered_once_at_creation() {
    let (_dir, s, tid, wid) = seeded();
    let (_, before) = http("GET", &format!("{}/api/v1/workflows/{wid}", s.url), None);
    let edited = hello_world().replace("image: hello-world", "image: busybox");
    let (st, _) = http(
        "PUT",
        &format!("{}/api/v1/templates/{tid}", s.url),
        Some(json!({"data": edited}).to_string().as_bytes()),
    );
    assert_eq!(st, 200);
    let (_, after) = http("GET", &format!("{}/api/v1/workflows/{wid}", s.url), None);
    assert_eq!(
        before, after,
        "a template edit must not change an existing workflow"
    );
    assert_eq!(after["tasks"][0]["actions"][0]["image"], "hello-world");
}

#[test]
fn hardware_push_updates_by_id_or_mac_and_gets_by_mac() {
    let (_dir, s, _, _) = seeded();
    let url = format!("{}/api/v1/hardware", s.url);
    // Same id: update, 200.
    let (st, _) = http("POST", &url, Some(&seed_hardware()));
    assert_eq!(st, 200);
    // No id, same MAC (other spelling): updates the same record.
    let doc = json!({"network": {"interfaces": [{"dhcp": {"mac": "D0-50-99-D7-63-20",
        "hostname": "renamed", "ip": {"address": "10.1.0.5"}}}]}});
    let (st, hw) = http("POST", &url, Some(doc.to_string().as_bytes()));
    assert_eq!(st, 200, "{hw}");
    assert_eq!(hw["id"], "0fba0bf8-3772-4b4a-ab9f-6ebe93b90a94");
    let (st, hw) = http("GET", &format!("{url}/{MAC}"), None);
    assert_eq!(st, 200);
    assert_eq!(
        hw["network"]["interfaces"][0]["dhcp"]["hostname"],
        "renamed"
    );
    let (_, list) = http("GET", &format!("{url}?mac={MAC}"), None);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, list) = http("GET", &format!("{url}?ip=10.1.0.5"), None);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, list) = http("GET", &format!("{url}?ip=10.9.9.9"), None);
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[test]
fn resource_shaped_hardware_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let doc = json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
        "metadata": {"name": "sm01", "namespace": "tink-system"},
        "spec": {"disks": [{"device": "/dev/nvme0n1"}],
                 "interfaces": [{"dhcp": {"mac": "3c:ec:ef:4c:4f:54", "ip": {"address": "172.16.10.100"}},
                                 "netboot": {"allowPXE": true, "allowWorkflow": true}}]}
    });
    let (st, hw) = http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(doc.to_string().as_bytes()),
    );
    assert_eq!(st, 201, "{hw}");
    assert_eq!(hw["id"], "sm01");
    assert_eq!(hw["network"]["interfaces"][0]["netboot"]["allow_pxe"], true);
    assert_eq!(hw["resource"]["metadata"]["namespace"], "tink-system");
}

/// (method, url, body, expected status, message fragment, expected field)
type BadCase<'a> = (&'a str, String, Vec<u8>, u16, &'a str, Option<&'a str>);

/// Every bad request gets the right 4xx, a message naming the problem, and
/// leaves the store exactly as it was.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let (_dir, s, tid, wid) = seeded();
    let before = snapshot(&s);
    let hw_url = format!("{}/api/v1/hardware", s.url);
    let seed: Value = serde_json::from_slice(&seed_hardware()).unwrap();
    let with = |ptr: &str, v: Value| {
        let mut doc = seed.clone();
        *doc.pointer_mut(ptr).unwrap() = v;
        doc.to_string().into_bytes()
    };
    let big = vec![b' '; 2 << 20];
    let huge_template = json!({"name": "big", "data": "#".repeat(300 * 1024)}).to_string();
    let cases: Vec<BadCase> = vec![
        // (method, url, body, status, message fragment, field)
        ("POST", hw_url.clone(), b"{\"id\": ".to_vec(), 400, "not valid JSON", None),
        ("POST", hw_url.clone(), b"[1,2]".to_vec(), 422, "JSON object", None),
        ("POST", hw_url.clone(), with("/network/interfaces/0/dhcp/mac", json!("d0:50:99:d7:63")), 422,
            "not a MAC address", Some("network.interfaces[0].dhcp.mac")),
        ("POST", hw_url.clone(), with("/network/interfaces/0/dhcp/ip/address", json!("10.1.0.256")), 422,
            "invalid IP address", Some("network.interfaces[0].dhcp.ip.address")),
        ("POST", hw_url.clone(), with("/id", json!("another-machine")), 409,
            "already belongs to hardware", Some("network.interfaces[0].dhcp.mac")),
        ("POST", hw_url.clone(),
            json!({"id": "other", "network": {"interfaces": [{"dhcp": {"mac": "aa:bb:cc:dd:ee:ff", "ip": {"address": "10.1.0.5"}}}]}}).to_string().into_bytes(),
            409, "already reserved", Some("network.interfaces[0].dhcp.ip.address")),
        ("POST", hw_url.clone(), big.clone(), 413, "limit", None),
        ("PUT", format!("{hw_url}/nope"), seed_hardware(), 404, "not found", None),
        ("PUT", format!("{hw_url}/{MAC}"), with("/id", json!("different")), 422, "differs", Some("id")),
        ("GET", format!("{hw_url}/nope"), vec![], 404, "not found", None),
        ("GET", format!("{hw_url}?mac=zz"), vec![], 400, "not a MAC", Some("mac")),
        ("DELETE", format!("{hw_url}/nope"), vec![], 404, "not found", None),
        ("DELETE", format!("{hw_url}/{MAC}"), vec![], 409, "unfinished workflow", None),
        // Templates.
        ("POST", format!("{}/api/v1/templates", s.url), json!({"name": "x", "data": "tasks: [unclosed"}).to_string().into_bytes(),
            422, "not valid YAML", Some("data")),
        ("POST", format!("{}/api/v1/templates", s.url),
            json!({"name": "x", "data": hello_world().replace("image: hello-world", "image: Bad Image")}).to_string().into_bytes(),
            422, "not a valid image reference", Some("data.tasks[0].actions[0].image")),
        ("POST", format!("{}/api/v1/templates", s.url),
            json!({"name": "x", "data": hello_world().replace("{{.device_1}}", "{{.device_1")}).to_string().into_bytes(),
            422, "template syntax", Some("data")),
        ("POST", format!("{}/api/v1/templates", s.url), json!({"name": "hello-world", "data": hello_world()}).to_string().into_bytes(),
            409, "already exists", Some("name")),
        ("POST", format!("{}/api/v1/templates", s.url), json!({"name": 5, "data": "x"}).to_string().into_bytes(),
            400, "name", Some("name")),
        ("POST", format!("{}/api/v1/templates", s.url), json!({"name": "", "data": hello_world()}).to_string().into_bytes(),
            422, "must not be empty", Some("name")),
        ("POST", format!("{}/api/v1/templates", s.url), huge_template.into_bytes(), 422, "limit", Some("data")),
        ("PUT", format!("{}/api/v1/templates/{tid}", s.url), json!({"data": "version: \"0.1\"\nname: x\ntasks: []\n"}).to_string().into_bytes(),
            422, "at least one task", Some("data.tasks")),
        ("GET", format!("{}/api/v1/templates/nope", s.url), vec![], 404, "not found", None),
        ("DELETE", format!("{}/api/v1/templates/nope", s.url), vec![], 404, "not found", None),
        // Workflows.
        ("POST", format!("{}/api/v1/workflows", s.url), json!({"template": "hello-world", "hardware_map": {"device_9": MAC}}).to_string().into_bytes(),
            422, "\"device_1\"", Some("hardware_map")),
        ("POST", format!("{}/api/v1/workflows", s.url), json!({"template": "nope", "hardware_map": {"device_1": MAC}}).to_string().into_bytes(),
            404, "template \"nope\" not found", Some("template")),
        ("POST", format!("{}/api/v1/workflows", s.url), json!({"template": "hello-world", "hardware_map": {"device_1": "aa:aa:aa:aa:aa:aa"}}).to_string().into_bytes(),
            422, "no hardware has", Some("hardware_map.device_1")),
        // An empty map is taken (literal workers need none), but this
        // template uses device_1, so rendering names the missing key.
        ("POST", format!("{}/api/v1/workflows", s.url), json!({"template": "hello-world", "hardware_map": {}}).to_string().into_bytes(),
            422, "\"device_1\"", Some("hardware_map")),
        ("POST", format!("{}/api/v1/workflows", s.url), json!({"template": "hello-world"}).to_string().into_bytes(),
            400, "hardware_map", None),
        ("POST", format!("{}/api/v1/workflows", s.url), big, 413, "limit", None),
        ("GET", format!("{}/api/v1/workflows/nope", s.url), vec![], 404, "not found", None),
        ("GET", format!("{}/api/v1/workflows/nope/events", s.url), vec![], 404, "not found", None),
        ("GET", format!("{}/api/v1/workflows?state=DONE", s.url), vec![], 400, "not one of", Some("state")),
        ("DELETE", format!("{}/api/v1/workflows/nope", s.url), vec![], 404, "not found", None),
        ("GET", format!("{}/api/v1/workflows?state=PENDING&state=RUNNING", s.url), vec![], 400, "duplicate field", None),
        ("POST", hw_url.clone(), json!({"metadata": {"name": "dup1"}, "network": 5, "spec": {}}).to_string().into_bytes(),
            422, "belongs to the flat shape", Some("network")),
        ("POST", hw_url.clone(), json!({"id": "x", "resource": [1]}).to_string().into_bytes(),
            422, "must be an object", Some("resource")),
        // Routing.
        ("GET", format!("{}/api/v1/nothing", s.url), vec![], 404, "no such endpoint", None),
        ("PATCH", format!("{}/api/v1/workflows/{wid}", s.url), vec![], 405, "not allowed", None),
    ];
    for (method, url, body, status, fragment, field) in cases {
        let body = if body.is_empty() {
            None
        } else {
            Some(body.as_slice())
        };
        let (got, v) = http(method, &url, body);
        let what = format!("{method} {url} -> {got} {v}");
        assert_eq!(got, status, "{what}");
        let message = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {what}"));
        assert!(
            message.contains(fragment),
            "message lacks {fragment:?}: {what}"
        );
        assert!(v["code"].is_string(), "{what}");
        assert_eq!(v["field"].as_str(), field, "{what}");
        assert_eq!(snapshot(&s), before, "store changed after {method} {url}");
    }
}

/// The OpenAPI document the server serves lists exactly the routes it has.
#[test]
fn openapi_document_matches_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (st, doc) = http("GET", &format!("{}/api/v1/openapi.json", s.url), None);
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    let routed: BTreeSet<(String, String)> = bellows_api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed);
    // Every route in the table is really served (not 404/405 from the fallback);
    // the change stream never ends (the console test reads it).
    for (method, path) in routed.iter().filter(|(_, p)| p != "/api/v1/changes") {
        let url = format!("{}{}", s.url, path.replace("{id}", "x"));
        let body = (method == "post" || method == "put").then_some(b"{}".as_slice());
        let (status, v) = http(&method.to_uppercase(), &url, body);
        let fallback = v["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such endpoint") || m.contains("method not allowed"));
        assert!(
            !fallback,
            "{method} {path} is documented but not routed ({status})"
        );
    }
    // The one route whose answer is not JSON.
    let (status, metrics) = http("GET", &format!("{}/metrics", s.url), None);
    assert_eq!(status, 200);
    assert!(
        metrics.as_str().is_some_and(|t| t.ends_with("# EOF\n")),
        "{metrics}"
    );
}

/// Issue 12: half-sent requests held the boot listener and the API. Now
/// one address gets 64 connections on the boot listener (the rest are
/// closed at once), the slow ones are cut after the header timeout, and
/// others, and the API, are answered meanwhile. Loopback only, bounded.
#[test]
fn slow_clients_starve_neither_the_boot_listener_nor_the_api() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--http-header-timeout", "2"]);
    let boot = s.http_url.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for i in 0..150 {
        let mut c = std::net::TcpStream::connect(&boot).unwrap();
        let _ = c.write_all(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n").as_bytes());
        slow.push(c);
    }
    let attacked = Instant::now();
    // A good client from another address, with curl, on the boot listener;
    // the API from the attacker's own address.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "3",
        ])
        .args(["--interface", "127.0.0.2"])
        .arg(format!("{}/ipxe/00:00:00:00:00:01/auto.ipxe", s.http_url))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        code.starts_with('2') || code.starts_with('4'),
        "boot listener: {code:?}"
    );
    let (status, _) = http("GET", &format!("{}/healthz", s.url), None);
    assert_eq!(status, 200);
    assert!(attacked.elapsed() < Duration::from_secs(2));

    // Every slow connection is closed: 86 at once, 64 after 2 s.
    // All within 6 s of the attack, however many are left open.
    let mut closed = 0;
    let deadline = attacked + Duration::from_secs(6);
    for c in &mut slow {
        let left = deadline.saturating_duration_since(Instant::now());
        c.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        let mut buf = [0u8; 512];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break closed += 1,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break closed += 1,
                Err(_) => break,
            }
        }
    }
    assert_eq!(closed, 150);
    assert!(
        attacked.elapsed() < Duration::from_secs(6),
        "{:?}",
        attacked.elapsed()
    );
}
