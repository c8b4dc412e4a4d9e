//! Workflow execution end to end: a real server, real `bellows worker`
//! processes, and (for container actions) a real Docker daemon that the test
//! script starts on its own socket with locally imported images.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use bellows_testkit::ports::free_tcp_port;

use crate::harness::{BIN, Server, http, ok};

/// The image `scripts/docker-test-daemon.sh` imports (busybox, no registry).
pub const BUSYBOX: &str = "bellows-test/busybox:latest";

/// A `bellows worker` process; killed (by PID) when dropped.
pub struct Worker {
    pub child: Child,
    pub log: std::path::PathBuf,
}

impl Worker {
    /// Starts a worker for `id` against the server's HTTP boot listener.
    pub fn start(server_http: &str, id: &str, work_dir: &Path, extra: &[&str]) -> Worker {
        let log = work_dir.join(format!("worker-{}.log", id.replace(':', "")));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("worker log");
        let server = crate::harness::worker_url(server_http);
        let ca = crate::harness::ca_for(server_http);
        let child = Command::new(BIN)
            .args([
                "worker",
                "--server",
                server.as_str(),
                "--id",
                id,
                "--reboot",
                "exit",
            ])
            .args(["--max-backoff", "1"])
            .arg("--work-dir")
            .arg(work_dir.join("work"))
            .args(extra)
            .env("BELLOWS_LOG", "info,bellows_worker=debug")
            .env(
                "BELLOWS_WORKER_TOKEN",
                crate::harness::token_for(server_http).unwrap_or_default(),
            )
            .envs(ca.iter().map(|c| ("BELLOWS_SERVER_CA", c)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn bellows worker");
        Worker { child, log }
    }

    /// SIGKILL: the worker gets no chance to report or clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the worker to exit; returns its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when container tests can run; in CI they must.
pub fn docker_available() -> bool {
    if std::env::var_os("DOCKER_HOST").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the container tests: start the daemon with scripts/docker-test-daemon.sh and export DOCKER_HOST"
    );
    eprintln!("skipped: DOCKER_HOST is not set (run scripts/docker-test-daemon.sh)");
    false
}

/// Registers a machine for `mac`, a template, and a workflow; returns its id.
pub fn workflow(s: &Server, name: &str, template: &str, map: &[(&str, &str)]) -> String {
    workflow_at(&s.url, name, template, map)
}

/// [`workflow`] by API URL, for callers without the [`Server`] handle.
pub fn workflow_at(api: &str, name: &str, template: &str, map: &[(&str, &str)]) -> String {
    for (i, (_, mac)) in map.iter().enumerate() {
        let hw = serde_json::json!({
            "id": format!("{name}-m{i}"),
            "network": {"interfaces": [{"dhcp": {"mac": mac}}]}
        });
        let (st, body) = http(
            "POST",
            &format!("{api}/api/v1/hardware"),
            Some(hw.to_string().as_bytes()),
        );
        assert!(st == 200 || st == 201, "hardware push: {st} {body}");
    }
    let (st, body) = http(
        "POST",
        &format!("{api}/api/v1/templates"),
        Some(
            serde_json::json!({"name": name, "data": template})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 201, "template: {body}");
    let hw_map: serde_json::Map<String, Value> = map
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let (st, body) = http(
        "POST",
        &format!("{api}/api/v1/workflows"),
        Some(
            serde_json::json!({"template": name, "hardware_map": hw_map})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 201, "workflow: {body}");
    body["id"].as_str().expect("workflow id").to_string()
}

pub fn get_workflow(s: &Server, id: &str) -> Value {
    let (st, body) = http("GET", &format!("{}/api/v1/workflows/{id}", s.url), None);
    assert_eq!(st, 200, "{body}");
    body
}

/// Polls until the workflow is in one of `states` (bounded); returns it.
pub fn wait_state(s: &Server, id: &str, states: &[&str], timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let wf = get_workflow(s, id);
        if states.contains(&wf["state"].as_str().unwrap_or("")) {
            return wf;
        }
        assert!(
            Instant::now() < deadline,
            "workflow {id} not {states:?} within {timeout:?}: {wf:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls until `pred` holds for the workflow (bounded).
pub fn wait_until(s: &Server, id: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let wf = get_workflow(s, id);
        if pred(&wf) {
            return wf;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}: {wf:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn action(wf: &Value, task: usize, action: usize) -> &Value {
    &wf["tasks"][task]["actions"][action]
}

/// Every output line of a workflow, "action stream line".
pub fn logs(s: &Server, id: &str) -> Vec<String> {
    let out = ok(&s.cli(&["workflow", "logs", id, "-n", "10000"]));
    out.lines().map(str::to_string).collect()
}

pub fn events(s: &Server, id: &str) -> Vec<Value> {
    let (st, body) = http(
        "GET",
        &format!("{}/api/v1/workflows/{id}/events", s.url),
        None,
    );
    assert_eq!(st, 200);
    body["items"].as_array().cloned().unwrap_or_default()
}

/// Ids of the workflow's containers, as `docker ps` (not our client) lists
/// them.
pub fn containers_of(workflow: &str) -> String {
    let ps = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=bellows.workflow={workflow}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&ps.stdout).trim().to_string()
}

pub fn count_events(evs: &[Value], kind: &str, action: &str) -> usize {
    evs.iter()
        .filter(|e| e["type"] == kind && e["action"] == action)
        .count()
}

// ---------------------------------------------------------------------------
// Container actions (Docker)
// ---------------------------------------------------------------------------

#[test]
fn three_container_actions_share_environment_and_the_worker_directory() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mac = "02:00:00:00:10:01";
    let t = format!(
        r#"
version: "0.1"
name: three
global_timeout: 300
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    environment:
      SHARED: from-task
    actions:
      - name: write
        image: {BUSYBOX}
        timeout: 60
        command: ["sh", "-c", "echo \"$SHARED/$OWN\" > /worker/note && echo wrote"]
        environment:
          OWN: first
      - name: append
        image: {BUSYBOX}
        timeout: 60
        command: ["sh", "-c", "echo \"$SHARED/$OWN\" >> /worker/note; echo to-stderr >&2"]
        environment:
          OWN: second
      - name: read
        image: {BUSYBOX}
        timeout: 60
        command: ["sh", "-c", "cat /worker/note; test \"$(wc -l < /worker/note)\" -eq 2"]
"#
    );
    let id = workflow(&s, "three", &t, &[("device_1", mac)]);
    let _w = Worker::start(&s.http_url, mac, dir.path(), &[]);
    let wf = wait_state(
        &s,
        &id,
        &["SUCCESS", "FAILED", "TIMEOUT"],
        Duration::from_secs(120),
    );
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    for i in 0..3 {
        assert_eq!(action(&wf, 0, i)["exit_code"], 0);
    }
    let lines = logs(&s, &id);
    let text = lines.join("\n");
    assert!(text.contains("install/read > from-task/first"), "{text}");
    assert!(text.contains("install/read > from-task/second"), "{text}");
    assert!(text.contains("install/append ! to-stderr"), "{text}");
    // The inventory came with the subscription.
    let inv = ok(&s.cli(&["hardware", "inventory", "three-m0", "-o", "json"]));
    let inv: Value = serde_json::from_str(&inv).unwrap();
    assert!(
        inv["facts"]["memory_bytes"].as_u64().unwrap() > 0,
        "{inv:#}"
    );
}

#[test]
fn a_failed_container_action_runs_on_failure_and_skips_the_rest() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mac = "02:00:00:00:10:02";
    let t = format!(
        r#"
version: "0.1"
name: failing
global_timeout: 300
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    actions:
      - name: breaks
        image: {BUSYBOX}
        timeout: 60
        command: ["sh", "-c", "echo about to fail; exit 3"]
        on-failure: ["sh", "-c", "echo cleanup-ran; touch /worker/cleaned"]
      - name: never
        image: {BUSYBOX}
        command: ["true"]
"#
    );
    let id = workflow(&s, "failing", &t, &[("device_1", mac)]);
    let _w = Worker::start(&s.http_url, mac, dir.path(), &[]);
    let wf = wait_state(
        &s,
        &id,
        &["SUCCESS", "FAILED", "TIMEOUT"],
        Duration::from_secs(120),
    );
    assert_eq!(wf["state"], "FAILED", "{wf:#}");
    assert_eq!(action(&wf, 0, 0)["exit_code"], 3);
    assert!(
        wf["message"].as_str().unwrap().contains("breaks"),
        "the workflow names the failed action: {wf:#}"
    );
    assert_eq!(
        action(&wf, 0, 1)["state"],
        "PENDING",
        "later actions never ran"
    );
    let text = logs(&s, &id).join("\n");
    assert!(text.contains("cleanup-ran"), "on-failure output: {text}");
    assert!(
        action(&wf, 0, 0)["output"]
            .as_str()
            .unwrap()
            .contains("about to fail"),
        "{wf:#}"
    );
    let evs = events(&s, &id);
    assert_eq!(count_events(&evs, "action_started", "never"), 0);
    // `watch` on an ended workflow says so and exits with its status.
    let out = s.cli(&["workflow", "watch", &id]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_container_action_past_its_timeout_ends_timeout_after_on_timeout() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mac = "02:00:00:00:10:03";
    let t = format!(
        r#"
version: "0.1"
name: slow
global_timeout: 300
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    actions:
      - name: sleeper
        image: {BUSYBOX}
        timeout: 2
        command: ["sleep", "300"]
        on-timeout: ["sh", "-c", "echo on-timeout-ran"]
"#
    );
    let id = workflow(&s, "slow", &t, &[("device_1", mac)]);
    let started = Instant::now();
    let _w = Worker::start(&s.http_url, mac, dir.path(), &[]);
    let wf = wait_state(
        &s,
        &id,
        &["SUCCESS", "FAILED", "TIMEOUT"],
        Duration::from_secs(120),
    );
    assert_eq!(wf["state"], "TIMEOUT", "{wf:#}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "stopped promptly"
    );
    assert_eq!(action(&wf, 0, 0)["state"], "TIMEOUT");
    let text = logs(&s, &id).join("\n");
    assert!(text.contains("on-timeout-ran"), "{text}");
    // The container is gone.
    let left = containers_of(&id);
    assert!(left.is_empty(), "containers left behind: {left}");
}

#[test]
fn retries_run_a_failed_action_again_until_it_succeeds() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mac = "02:00:00:00:10:04";
    // Fails on the first two attempts, succeeds on the third.
    let t = format!(
        r#"
version: "0.1"
name: flaky
global_timeout: 300
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    actions:
      - name: flaky
        image: {BUSYBOX}
        timeout: 60
        retries: 2
        command: ["sh", "-c", "echo x >> /worker/tries; n=$(wc -l < /worker/tries); echo try $n; test $n -ge 3"]
"#
    );
    let id = workflow(&s, "flaky", &t, &[("device_1", mac)]);
    let _w = Worker::start(&s.http_url, mac, dir.path(), &[]);
    let wf = wait_state(
        &s,
        &id,
        &["SUCCESS", "FAILED", "TIMEOUT"],
        Duration::from_secs(120),
    );
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    let a = action(&wf, 0, 0);
    assert_eq!(a["attempts"], 3);
    assert_eq!(a["history"].as_array().unwrap().len(), 2);
    assert_eq!(a["history"][0]["state"], "FAILED");
    let evs = events(&s, &id);
    assert_eq!(count_events(&evs, "action_started", "flaky"), 3);
    assert_eq!(count_events(&evs, "action_retrying", "flaky"), 2);
}

#[test]
fn a_two_worker_workflow_runs_each_task_on_its_own_worker_in_order() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (m1, m2) = ("02:00:00:00:10:05", "02:00:00:00:10:06");
    let t = format!(
        r#"
version: "0.1"
name: pair
global_timeout: 300
tasks:
  - name: first
    worker: "{{{{.device_1}}}}"
    actions:
      - name: a1
        image: {BUSYBOX}
        command: ["sh", "-c", "echo on-first"]
  - name: second
    worker: "{{{{.device_2}}}}"
    actions:
      - name: a2
        image: {BUSYBOX}
        command: ["sh", "-c", "echo on-second"]
"#
    );
    let id = workflow(&s, "pair", &t, &[("device_1", m1), ("device_2", m2)]);
    // The second worker connects first: it must wait for the first task.
    let w2 = Worker::start(&s.http_url, m2, dir.path(), &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(get_workflow(&s, &id)["state"], "PENDING");
    let w1 = Worker::start(&s.http_url, m1, dir.path(), &[]);
    let wf = wait_state(
        &s,
        &id,
        &["SUCCESS", "FAILED", "TIMEOUT"],
        Duration::from_secs(120),
    );
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    let evs = events(&s, &id);
    let started: Vec<(String, String)> = evs
        .iter()
        .filter(|e| e["type"] == "action_started")
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["worker"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        started,
        [
            ("a1".to_string(), m1.to_string()),
            ("a2".to_string(), m2.to_string())
        ]
    );
    assert!(w1.log_text().contains("action=a1") && !w1.log_text().contains("action=a2"));
    assert!(w2.log_text().contains("action=a2") && !w2.log_text().contains("action=a1"));
}

#[test]
fn a_worker_killed_mid_action_and_restarted_finishes_without_rerunning() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mac = "02:00:00:00:10:07";
    let t = format!(
        r#"
version: "0.1"
name: resilient
global_timeout: 300
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    actions:
      - name: once
        image: {BUSYBOX}
        command: ["sh", "-c", "echo ran >> /worker/once"]
      - name: long
        image: {BUSYBOX}
        timeout: 120
        command: ["sh", "-c", "echo ran >> /worker/long; sleep 6; echo long-done"]
      - name: check
        image: {BUSYBOX}
        command: ["sh", "-c", "test $(wc -l < /worker/once) -eq 1 && test $(wc -l < /worker/long) -eq 1"]
"#
    );
    let id = workflow(&s, "resilient", &t, &[("device_1", mac)]);
    let mut w = Worker::start(&s.http_url, mac, dir.path(), &[]);
    wait_until(&s, &id, Duration::from_secs(60), |wf| {
        action(wf, 0, 1)["state"] == "RUNNING"
    });
    std::thread::sleep(Duration::from_secs(1));
    w.kill9();
    let _w = Worker::start(&s.http_url, mac, dir.path(), &[]);
    let wf = wait_state(
        &s,
        &id,
        &["SUCCESS", "FAILED", "TIMEOUT"],
        Duration::from_secs(120),
    );
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    let evs = events(&s, &id);
    assert_eq!(count_events(&evs, "action_started", "once"), 1);
    assert_eq!(count_events(&evs, "action_started", "long"), 1);
    assert_eq!(count_events(&evs, "action_finished", "long"), 1);
}

#[test]
fn the_server_killed_mid_workflow_and_restarted_lets_it_complete() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let s = Server::start_on(dir.path(), port, &[]);
    let mac = "02:00:00:00:10:08";
    let t = format!(
        r#"
version: "0.1"
name: survivor
global_timeout: 300
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    actions:
      - name: before
        image: {BUSYBOX}
        command: ["sh", "-c", "echo ran >> /worker/before"]
      - name: during
        image: {BUSYBOX}
        timeout: 120
        command: ["sh", "-c", "sleep 5; echo during-done"]
      - name: after
        image: {BUSYBOX}
        command: ["sh", "-c", "test $(wc -l < /worker/before) -eq 1"]
"#
    );
    let id = workflow(&s, "survivor", &t, &[("device_1", mac)]);
    let _w = Worker::start(&s.http_url, mac, dir.path(), &[]);
    wait_until(&s, &id, Duration::from_secs(60), |wf| {
        action(wf, 0, 1)["state"] == "RUNNING"
    });
    s.kill9();
    std::thread::sleep(Duration::from_secs(2));
    let s = Server::start_on(dir.path(), port, &[]);
    let wf = wait_state(
        &s,
        &id,
        &["SUCCESS", "FAILED", "TIMEOUT"],
        Duration::from_secs(120),
    );
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    let evs = events(&s, &id);
    assert_eq!(count_events(&evs, "action_started", "before"), 1);
    assert_eq!(count_events(&evs, "action_finished", "during"), 1);
    let text = logs(&s, &id).join("\n");
    assert!(text.contains("during-done"), "{text}");
}

#[test]
fn cancelling_stops_the_running_container() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mac = "02:00:00:00:10:09";
    let t = format!(
        r#"
version: "0.1"
name: cancelme
global_timeout: 300
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    actions:
      - name: forever
        image: {BUSYBOX}
        command: ["sleep", "300"]
"#
    );
    let id = workflow(&s, "cancelme", &t, &[("device_1", mac)]);
    let _w = Worker::start(&s.http_url, mac, dir.path(), &[]);
    wait_until(&s, &id, Duration::from_secs(60), |wf| {
        action(wf, 0, 0)["state"] == "RUNNING"
    });
    let out = ok(&s.cli(&["workflow", "cancel", &id, "--reason", "wrong machine"]));
    assert!(out.contains("CANCELLED"), "{out}");
    let wf = get_workflow(&s, &id);
    assert!(wf["message"].as_str().unwrap().contains("wrong machine"));
    // The worker is told at once and removes the container.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if containers_of(&id).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "container still there after cancel"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Cancelling again is refused.
    let again = s.cli(&["workflow", "cancel", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already CANCELLED"));
}

// ---------------------------------------------------------------------------
// Server-enforced rules (no container engine needed)
// ---------------------------------------------------------------------------

#[test]
fn a_silent_worker_cannot_hold_an_action_past_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--action-grace", "1"]);
    let mac = "02:00:00:00:20:01";
    // A built-in action that blocks: writefile to a FIFO nobody reads.
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let t = format!(
        r#"
version: "0.1"
name: silent
global_timeout: 300
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    actions:
      - name: stuck
        image: bellows/writefile
        timeout: 2
        environment:
          DEST_PATH: {}
          CONTENTS: never read
"#,
        fifo.display()
    );
    let id = workflow(&s, "silent", &t, &[("device_1", mac)]);
    let mut w = Worker::start(&s.http_url, mac, dir.path(), &["--no-docker"]);
    wait_until(&s, &id, Duration::from_secs(30), |wf| {
        action(wf, 0, 0)["state"] == "RUNNING"
    });
    // The worker dies before its own timeout handling can report.
    w.kill9();
    let wf = wait_state(
        &s,
        &id,
        &["SUCCESS", "FAILED", "TIMEOUT"],
        Duration::from_secs(30),
    );
    assert_eq!(wf["state"], "TIMEOUT", "{wf:#}");
    assert!(
        action(&wf, 0, 0)["message"]
            .as_str()
            .unwrap()
            .contains("no report from worker"),
        "{wf:#}"
    );
}

#[test]
fn the_global_timeout_ends_a_workflow_whose_worker_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mac = "02:00:00:00:20:02";
    let fifo = dir.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let t = format!(
        r#"
version: "0.1"
name: global
global_timeout: 3
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    actions:
      - name: stuck
        image: bellows/writefile
        environment:
          DEST_PATH: {}
          CONTENTS: never read
"#,
        fifo.display()
    );
    let id = workflow(&s, "global", &t, &[("device_1", mac)]);
    let mut w = Worker::start(&s.http_url, mac, dir.path(), &["--no-docker"]);
    wait_until(&s, &id, Duration::from_secs(30), |wf| {
        wf["state"] == "RUNNING"
    });
    w.kill9();
    let wf = wait_state(
        &s,
        &id,
        &["SUCCESS", "FAILED", "TIMEOUT"],
        Duration::from_secs(30),
    );
    assert_eq!(wf["state"], "TIMEOUT");
    assert!(wf["message"].as_str().unwrap().contains("global timeout"));
}

#[test]
fn reboot_happens_only_after_the_server_has_the_success() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mac = "02:00:00:00:20:03";
    let out = dir.path().join("hostname");
    let t = format!(
        r#"
version: "0.1"
name: rebooting
global_timeout: 60
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    actions:
      - name: hostname
        image: bellows/writefile
        environment:
          DEST_PATH: {}
          CONTENTS: "node-{{{{.device_1}}}}"
      - name: reboot
        image: quay.io/tinkerbell/actions/reboot:v1.0.0
"#,
        out.display()
    );
    let id = workflow(&s, "rebooting", &t, &[("device_1", mac)]);
    // No container engine: Tinkerbell's reboot image runs as the built-in.
    let mut w = Worker::start(&s.http_url, mac, dir.path(), &["--no-docker"]);
    let code = w.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(10), "worker exits 10 = reboot: {}", w.log_text());
    // By the time the worker "rebooted", the server had recorded SUCCESS.
    let wf = get_workflow(&s, &id);
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("node-{mac}")
    );
}

/// A slow HTTP server (Python's, not ours) so progress has time to show.
const SLOW_SERVER: &str = r#"
import http.server, os, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = os.path.join(sys.argv[2], self.path.lstrip('/'))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = open(path, 'rb').read()
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        for i in range(0, len(data), 65536):
            self.wfile.write(data[i:i + 65536])
            time.sleep(0.03)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn image2disk_writes_byte_exact_with_progress_in_workflow_watch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mac = "02:00:00:00:20:04";
    // 4 MiB of random bytes, gzip-compressed by gzip itself.
    let img = dir.path().join("disk.img");
    let mut data = vec![0u8; 4 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&img, &data).unwrap();
    let sum = ok(&Command::new("sha256sum").arg(&img).output().unwrap());
    let sum = sum.split_whitespace().next().unwrap().to_string();
    assert!(
        Command::new("gzip")
            .args(["-k", "-1"])
            .arg(&img)
            .status()
            .unwrap()
            .success()
    );
    let port = free_tcp_port();
    let mut server = Command::new("python3")
        .args(["-c", SLOW_SERVER, &port.to_string()])
        .arg(dir.path())
        .spawn()
        .expect("python3");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the image server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = dir.path().join("written.img");
    let t = format!(
        r#"
version: "0.1"
name: stream
global_timeout: 300
tasks:
  - name: install
    worker: "{{{{.device_1}}}}"
    actions:
      - name: stream
        image: bellows/image2disk
        timeout: 120
        environment:
          IMG_URL: http://127.0.0.1:{port}/disk.img.gz
          DEST_DISK: {}
          COMPRESSED: "true"
          CHECKSUM: sha256:{sum}
"#,
        out.display()
    );
    let id = workflow(&s, "stream", &t, &[("device_1", mac)]);
    let watch = Command::new(BIN)
        .args(["workflow", "watch", &id])
        .env("BELLOWS_URL", &s.url)
        .envs(s.token.iter().map(|t| ("BELLOWS_TOKEN", t)))
        .envs(s.ca.iter().map(|c| ("BELLOWS_CA", c)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch");
    let _w = Worker::start(&s.http_url, mac, dir.path(), &["--no-docker"]);
    let watched = watch.wait_with_output().expect("watch output");
    let _ = server.kill();
    let _ = server.wait();
    let text = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(watched.status.code(), Some(0), "{text}");
    assert!(
        text.lines().any(|l| l.contains("install/stream RUNNING")
            && l.contains("written")
            && l.contains('%')),
        "progress shown while running:\n{text}"
    );
    assert!(text.contains("install/stream SUCCESS"), "{text}");
    assert_eq!(std::fs::read(&out).unwrap(), data, "byte-exact");
}

/// A worker on a machine that hung keeps its stream open and never answers
/// again (SIGSTOP: its kernel still holds the connection). SIGTERM must
/// still stop the server: a bounded drain, then the stream is cut, named
/// in the log, the store closed, exit 0.
#[test]
fn sigterm_stops_the_server_while_a_hung_worker_holds_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let mac = "02:00:00:00:30:01";
    let w = Worker::start(&s.http_url, mac, dir.path(), &["--no-docker"]);
    assert!(
        s.wait_for_log("worker connected", Duration::from_secs(30))
            .is_some(),
        "the worker never connected: {}",
        w.log_text()
    );
    let pid = w.child.id().to_string();
    let stopped = Command::new("kill").args(["-STOP", &pid]).status();
    assert!(stopped.is_ok_and(|st| st.success()));
    let started = Instant::now();
    let (status, lines) = s.terminate();
    let took = started.elapsed();
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    assert!(status.success(), "exit {status}: {lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("shutdown: connections still open")),
        "the cut stream is named in the log: {lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:#?}");
    eprintln!("stopped {took:?} after SIGTERM");
}
