//! Several `bellows server` processes sharing one PostgreSQL database
//! (Debian's, started by the test): workflows created through any replica
//! are run by workers connected to any replica, each action exactly once;
//! a replica killed mid-run, or PostgreSQL restarted, changes nothing but
//! the time it takes; a silent worker's deadline fires once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bellows_testkit::postgres::{TestServer, database};
use serde_json::Value;

use crate::harness::{BIN, Server, http};

/// Replicas on one database, with one secret key, one CA and one admin
/// token between them (as an operator sets them up: see README).
struct Replicas {
    servers: Vec<Option<Server>>,
    base: PathBuf,
}

impl Replicas {
    fn start(n: usize, store: &str, base: &Path, extra: &[&str]) -> Replicas {
        let key = base.join("secret.key");
        let mut servers = Vec::new();
        for i in 0..n {
            let dir = base.join(format!("replica{i}"));
            if i > 0 {
                // The first replica's CA and token, as the README says.
                let first = base.join("replica0");
                std::fs::create_dir_all(dir.join("tls")).unwrap();
                for file in ["tls/ca.crt", "tls/ca.key", "admin.token"] {
                    std::fs::copy(first.join(file), dir.join(file)).unwrap();
                }
            }
            let mut args = vec!["--store", store, "--secret-key-file"];
            let key = key.to_str().unwrap();
            args.push(key);
            args.extend_from_slice(&["--tftp-listen", "off", "--syslog-listen", "off"]);
            args.extend_from_slice(&["--dhcp-mode", "off"]);
            args.extend_from_slice(extra);
            servers.push(Some(Server::start_with(&dir, &args)));
        }
        Replicas {
            servers,
            base: base.to_path_buf(),
        }
    }

    fn live(&self) -> Vec<&Server> {
        self.servers.iter().flatten().collect()
    }

    /// The worker URLs of every replica, starting with the `first`th.
    fn worker_urls(&self, first: usize) -> String {
        let all: Vec<String> = self
            .servers
            .iter()
            .map(|s| {
                let s = s.as_ref().expect("live when workers start");
                crate::harness::worker_url(&s.http_url)
            })
            .collect();
        (0..all.len())
            .map(|i| all[(first + i) % all.len()].clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A worker for `mac` that knows every replica, `first` first.
    fn worker(&self, mac: &str, first: usize) -> Child {
        let first_server = self.servers[first % self.servers.len()]
            .as_ref()
            .expect("live");
        let log = self
            .base
            .join(format!("worker-{}.log", mac.replace(':', "")));
        Command::new(BIN)
            .args(["worker", "--server", &self.worker_urls(first), "--id", mac])
            .args(["--reboot", "exit", "--max-backoff", "1", "--no-docker"])
            .arg("--work-dir")
            .arg(self.base.join("work"))
            .env("BELLOWS_LOG", "info")
            .env(
                "BELLOWS_WORKER_TOKEN",
                first_server.token.clone().unwrap_or_default(),
            )
            .envs(first_server.ca.iter().map(|c| ("BELLOWS_SERVER_CA", c)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn bellows worker")
    }
}

/// Kills (by PID) the workers a test started, however it ends.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// A small deterministic generator, so a failing run can be repeated from
/// the seed it prints.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

fn seed() -> Lcg {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    eprintln!("replica test seed {seed}");
    Lcg(seed)
}

const TEMPLATE: &str = r#"
version: "0.1"
name: replicated
global_timeout: 600
tasks:
  - name: install
    worker: "{{.device_1}}"
    actions:
      - name: one
        image: bellows/writefile
        environment: {DEST_PATH: OUT/{{.device_1}}-one, CONTENTS: one}
      - name: two
        image: bellows/writefile
        environment: {DEST_PATH: OUT/{{.device_1}}-two, CONTENTS: two}
      - name: three
        image: bellows/writefile
        environment: {DEST_PATH: OUT/{{.device_1}}-three, CONTENTS: three}
"#;

fn post(api: &str, path: &str, body: Value) -> Value {
    let (st, answer) = http(
        "POST",
        &format!("{api}{path}"),
        Some(body.to_string().as_bytes()),
    );
    assert!(
        st == 200 || st == 201,
        "POST {path} on {api}: {st} {answer}"
    );
    answer
}

/// Pushes `machines` records and the template, then creates `per_machine`
/// workflows for each, every request through a replica picked at random.
fn create_workflows(
    r: &Replicas,
    rng: &mut Lcg,
    machines: &[String],
    per_machine: usize,
) -> Vec<String> {
    let out = r.base.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let template = TEMPLATE.replace("OUT", out.to_str().unwrap());
    post(
        &pick(r, rng),
        "/api/v1/templates",
        serde_json::json!({"name": "replicated", "data": template}),
    );
    for (i, mac) in machines.iter().enumerate() {
        post(
            &pick(r, rng),
            "/api/v1/hardware",
            serde_json::json!({"id": format!("m{i}"), "network": {"interfaces": [{"dhcp": {"mac": mac}}]}}),
        );
    }
    more_workflows(r, rng, machines, per_machine)
}

/// A live replica's API, at random.
fn pick(r: &Replicas, rng: &mut Lcg) -> String {
    let live = r.live();
    live[rng.below(live.len())].url.clone()
}

/// `per_machine` more workflows for each machine, through random replicas.
fn more_workflows(
    r: &Replicas,
    rng: &mut Lcg,
    machines: &[String],
    per_machine: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..per_machine {
        for mac in machines {
            let wf = post(
                &pick(r, rng),
                "/api/v1/workflows",
                serde_json::json!({"template": "replicated", "hardware_map": {"device_1": mac}}),
            );
            ids.push(wf["id"].as_str().expect("id").to_string());
        }
    }
    ids
}

fn machines(n: usize, prefix: u8) -> Vec<String> {
    (0..n)
        .map(|i| format!("02:00:00:{prefix:02x}:{:02x}:{:02x}", i / 256, i % 256))
        .collect()
}

/// Every workflow's state as `api` lists it (None when it does not answer
/// 200: a replica killed, the database away).
fn workflow_states(api: &str) -> Option<std::collections::HashMap<String, String>> {
    let (st, list) = http("GET", &format!("{api}/api/v1/workflows"), None);
    if st != 200 {
        return None;
    }
    let all = list["items"].as_array()?;
    Some(
        all.iter()
            .filter_map(|w| {
                Some((
                    w["id"].as_str()?.to_string(),
                    w["state"].as_str()?.to_string(),
                ))
            })
            .collect(),
    )
}

/// Waits (bounded) until every workflow ended, asking live replicas in
/// turn; fails naming those that did not succeed.
fn wait_all_succeeded(r: &Replicas, ids: &[String], limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut turn = 0usize;
    let mut left: Vec<String> = ids.to_vec();
    while !left.is_empty() {
        let live = r.live();
        let api = &live[turn % live.len()].url;
        turn += 1;
        if let Some(states) = workflow_states(api) {
            let failed: Vec<(&String, &String)> = states
                .iter()
                .filter(|(_, state)| matches!(state.as_str(), "FAILED" | "TIMEOUT"))
                .collect();
            assert!(failed.is_empty(), "workflows ended badly: {failed:#?}");
            left.retain(|id| states.get(id).map(String::as_str) != Some("SUCCESS"));
        }
        if Instant::now() >= deadline {
            print_diagnostics(r);
            panic!(
                "{} of {} workflows unfinished after {limit:?}, e.g. {:?}",
                left.len(),
                ids.len(),
                left.first()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What a stuck run leaves to read: each replica's warnings and errors and
/// the end of each worker's log (the temporary directory goes with the test).
fn print_diagnostics(r: &Replicas) {
    for (i, server) in r.live().iter().enumerate() {
        let lines = server.drain_log();
        let notable: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        eprintln!("--- replica {i}: {} warnings and errors", notable.len());
        for line in notable.iter().rev().take(40).rev() {
            eprintln!("{line}");
        }
    }
    let Ok(entries) = std::fs::read_dir(&r.base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("worker-") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- {name}: last lines of {}", lines.len());
        for line in &lines[lines.len().saturating_sub(15)..] {
            eprintln!("{line}");
        }
    }
}

/// How many of `ids` have succeeded, asked of `api`.
fn succeeded(api: &str, ids: &[String]) -> usize {
    let states = workflow_states(api).unwrap_or_else(|| panic!("{api} does not list workflows"));
    ids.iter()
        .filter(|id| states.get(*id).map(String::as_str) == Some("SUCCESS"))
        .count()
}

/// Every action of every workflow started once and finished once.
fn assert_each_action_ran_once(api: &str, ids: &[String]) {
    for id in ids {
        let (st, events) = http("GET", &format!("{api}/api/v1/workflows/{id}/events"), None);
        assert_eq!(st, 200, "{events}");
        let text = events.to_string();
        for action in ["one", "two", "three"] {
            for kind in ["action_started", "action_finished"] {
                let n = events["items"]
                    .as_array()
                    .map(|all| {
                        all.iter()
                            .filter(|e| {
                                let e = e.get("event").unwrap_or(e);
                                e["type"] == kind && e["action"] == action
                            })
                            .count()
                    })
                    .unwrap_or(0);
                assert_eq!(n, 1, "workflow {id}: {kind} of {action} {n} times: {text}");
            }
        }
    }
}

/// 200 workflows through three replicas, with workers spread over them.
#[test]
fn workflows_created_anywhere_run_once_on_workers_connected_anywhere() {
    let db = database();
    let base = tempfile::tempdir().unwrap();
    let r = Replicas::start(3, &db.url, base.path(), &[]);
    let mut rng = seed();
    let macs = machines(20, 0x51);
    let ids = create_workflows(&r, &mut rng, &macs, 10);
    let _workers = Workers(macs.iter().map(|mac| r.worker(mac, rng.below(3))).collect());
    wait_all_succeeded(&r, &ids, Duration::from_secs(300));
    assert_each_action_ran_once(&r.live()[0].url, &ids);
}

/// A replica `kill -9`ed while its workers run: they move to another and
/// every workflow still finishes, no action run twice.
#[test]
fn a_replica_killed_mid_run_loses_nothing() {
    let db = database();
    let base = tempfile::tempdir().unwrap();
    let mut r = Replicas::start(3, &db.url, base.path(), &[]);
    let mut rng = seed();
    let macs = machines(15, 0x52);
    // Every worker starts on replica 0, the one that dies.
    let _workers = Workers(macs.iter().map(|mac| r.worker(mac, 0)).collect());
    let mut ids = create_workflows(&r, &mut rng, &macs, 4);
    // Once the run is under way, kill the replica they all stream from;
    // then as much work again, which only the other replicas can hand out.
    wait_for_progress(&r, &ids);
    if let Some(victim) = r.servers[0].take() {
        victim.kill9();
    }
    ids.extend(more_workflows(&r, &mut rng, &macs, 4));
    wait_all_succeeded(&r, &ids, Duration::from_secs(300));
    assert_each_action_ran_once(&r.live()[0].url, &ids);
}

/// Waits (bounded) until at least one of `ids` has succeeded.
fn wait_for_progress(r: &Replicas, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while succeeded(&r.live()[r.live().len() - 1].url, ids) == 0 {
        assert!(Instant::now() < deadline, "no workflow finished in 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// PostgreSQL stopped and started again mid-run: the API says 503 while
/// it is away, and everything finishes once it is back.
#[test]
fn postgresql_restarted_mid_run_loses_nothing() {
    let mut pg = TestServer::start();
    let url = pg.database();
    let base = tempfile::tempdir().unwrap();
    let r = Replicas::start(2, &url, base.path(), &[]);
    let mut rng = seed();
    let macs = machines(10, 0x53);
    let _workers = Workers(macs.iter().map(|mac| r.worker(mac, rng.below(2))).collect());
    let mut ids = create_workflows(&r, &mut rng, &macs, 3);
    wait_for_progress(&r, &ids);
    pg.stop(true);
    let api = r.live()[0].url.clone();
    let (st, body) = http("GET", &format!("{api}/api/v1/workflows"), None);
    assert_eq!(st, 503, "{body}");
    assert!(
        body.to_string().contains("database is unavailable"),
        "{body}"
    );
    std::thread::sleep(Duration::from_secs(3));
    pg.restart();
    ids.extend(more_workflows(&r, &mut rng, &macs, 3));
    wait_all_succeeded(&r, &ids, Duration::from_secs(300));
    assert_each_action_ran_once(&api, &ids);
}

/// A worker that goes silent mid-action: with three replicas, its
/// action's deadline is enforced once, by the one running the timers.
#[test]
fn a_silent_workers_deadline_fires_once() {
    let db = database();
    let base = tempfile::tempdir().unwrap();
    let r = Replicas::start(3, &db.url, base.path(), &["--action-grace", "1"]);
    let mac = "02:00:00:54:00:01";
    let fifo = base.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
    );
    let template = format!(
        r#"
version: "0.1"
name: stuck
global_timeout: 600
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    actions:
      - name: stuck
        image: bellows/writefile
        timeout: 2
        environment: {{DEST_PATH: {}, CONTENTS: never read}}
"#,
        fifo.display()
    );
    let api = r.live()[1].url.clone();
    post(
        &api,
        "/api/v1/templates",
        serde_json::json!({"name": "stuck", "data": template}),
    );
    post(
        &api,
        "/api/v1/hardware",
        serde_json::json!({"id": "m", "network": {"interfaces": [{"dhcp": {"mac": mac}}]}}),
    );
    let wf = post(
        &api,
        "/api/v1/workflows",
        serde_json::json!({"template": "stuck", "hardware_map": {"device_1": mac}}),
    );
    let id = wf["id"].as_str().unwrap().to_string();
    let mut workers = Workers(vec![r.worker(mac, 2)]);
    // Running, then silent: stopped, so it neither reports nor lets go.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, wf) = http("GET", &format!("{api}/api/v1/workflows/{id}"), None);
        if wf["state"] == "RUNNING" {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {wf}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = workers.0[0].id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .is_ok_and(|s| s.success())
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let wf = loop {
        let (_, wf) = http("GET", &format!("{api}/api/v1/workflows/{id}"), None);
        if matches!(wf["state"].as_str(), Some("TIMEOUT" | "FAILED" | "SUCCESS")) {
            break wf;
        }
        assert!(Instant::now() < deadline, "the deadline never fired: {wf}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(wf["state"], "TIMEOUT", "{wf}");
    // A few more timer ticks on every replica: still one ending.
    std::thread::sleep(Duration::from_secs(3));
    let (_, events) = http("GET", &format!("{api}/api/v1/workflows/{id}/events"), None);
    let finished = events["items"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|e| e.get("event").unwrap_or(e)["type"] == "action_finished")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(finished, 1, "{events}");
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    workers.0[0].kill().ok();
}

/// The way up: a server's SQLite state copied into PostgreSQL by `bellows
/// store copy`, and a server started on it from the same data directory
/// (key, CA, token) answers as the old one did.
#[test]
fn store_copy_moves_a_site_from_sqlite_to_postgresql() {
    let db = database();
    let dir = tempfile::tempdir().unwrap();
    let old = Server::start_with(
        dir.path(),
        &[
            "--tftp-listen",
            "off",
            "--syslog-listen",
            "off",
            "--dhcp-mode",
            "off",
        ],
    );
    let template = TEMPLATE.replace("OUT", dir.path().to_str().unwrap());
    let id = crate::workers::workflow_at(
        &old.url,
        "moved",
        &template,
        &[("device_1", "02:00:00:55:00:01")],
    );
    let before = |s: &Server, path: &str| {
        let (st, body) = http("GET", &format!("{}{path}", s.url), None);
        assert_eq!(st, 200, "{path}: {body}");
        body
    };
    let hardware = before(&old, "/api/v1/hardware");
    let events = before(&old, &format!("/api/v1/workflows/{id}/events"));
    let (status, _) = old.terminate();
    assert!(status.success());

    let copy = |to: &str| {
        Command::new(BIN)
            .args(["store", "copy", "--from"])
            .arg(format!("sqlite:{}", dir.path().display()))
            .args(["--to", to])
            .output()
            .expect("run bellows store copy")
    };
    let out = copy(&db.url);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("every table reads back the same"), "{text}");

    let new = Server::start_with(
        dir.path(),
        &[
            "--store",
            &db.url,
            "--tftp-listen",
            "off",
            "--syslog-listen",
            "off",
            "--dhcp-mode",
            "off",
        ],
    );
    assert_eq!(before(&new, "/api/v1/hardware"), hardware);
    assert_eq!(
        before(&new, &format!("/api/v1/workflows/{id}/events")),
        events
    );
    // A second copy into a database in use is refused, naming why.
    let out = copy(&db.url);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
}
