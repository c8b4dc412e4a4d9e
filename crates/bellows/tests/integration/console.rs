//! The web console in a real browser: Debian's Chromium, driven over the
//! W3C WebDriver protocol (Debian's chromedriver; a small client below on
//! reqwest). An operator signs in with a token, watches a workflow move
//! from PENDING through RUNNING to SUCCESS while a worker reports (the page
//! is pushed each change: it is never reloaded), opens the machine and
//! sees its timeline drawn, and gets a template's error at its line.
//! Screenshots are kept in `$CARGO_TARGET_TMPDIR/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use bellows_rpc::v1::{ActionState, SubscribeRequest, instruction};
use bellows_testkit::packages::{apt_install, have};
use bellows_testkit::process::{ChildGuard, wait_for, wait_until};
use serde_json::{Value, json};

use crate::harness::{Server, client_builder};
use crate::worker_protocol::{connect, report};
use crate::workers::workflow_at;

const MAC: &str = "02:00:00:00:77:01";
const TEMPLATE: &str = r#"
version: "0.1"
name: console
global_timeout: 600
tasks:
  - name: install
    worker: "{{.device_1}}"
    actions:
      - {name: partition, image: bellows/writefile, timeout: 60}
      - {name: write-image, image: bellows/writefile, timeout: 60}
"#;

/// A WebDriver session on chromedriver at `base`.
struct Browser {
    base: String,
    session: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Browser {
    fn start(base: &str) -> Browser {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::builder().build().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--ignore-certificate-errors",
                         "--window-size=1280,1000"]
            }
        }}});
        let mut browser = Browser {
            base: base.to_string(),
            session: String::new(),
            http,
            rt,
        };
        let created = browser.call(reqwest::Method::POST, "/session", Some(caps));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let mut req = self.http.request(method, &url);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.expect("webdriver request");
            let v: Value = resp.json().await.expect("webdriver JSON");
            v["value"].clone()
        })
    }

    fn session_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
    }

    fn go(&self, url: &str) {
        self.session_call(reqwest::Method::POST, "/url", Some(json!({"url": url})));
    }

    /// Runs `script` in the page; its return value.
    fn js(&self, script: &str) -> Value {
        self.session_call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.session_call(
            reqwest::Method::POST,
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.session_call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.session_call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        );
    }

    /// Waits until `script` returns true in the page; fails the test with
    /// `what` and the page's text.
    fn wait_until(&self, what: &str, script: &str) {
        let ok = wait_for(Duration::from_secs(20), || self.js(script) == json!(true));
        if !ok {
            let text = self.js("return document.body.innerText");
            panic!(
                "the page never showed {what}; it shows:\n{}",
                text.as_str().unwrap_or_default()
            );
        }
    }

    fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.session_call(reqwest::Method::GET, "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self
                .rt
                .block_on(self.http.delete(format!("{}{path}", self.base)).send());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn an_operator_watches_a_workflow_live_and_reads_a_machines_timeline() {
    if !(have("chromium") && have("chromedriver")) {
        if std::env::var_os("CI").is_none() {
            eprintln!("skipped: no chromium/chromedriver (apt install chromium chromium-driver)");
            return;
        }
        apt_install(&["chromium", "chromium-driver"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let token = s.token.clone().expect("admin token");
    let id = workflow_at(&s.url, "console", TEMPLATE, &[("device_1", MAC)]);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let port = free_port();
    let log = dir.path().join("chromedriver.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut driver = ChildGuard::spawn(
        "chromedriver",
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(out.try_clone().unwrap())
            .stderr(out),
    );
    let base = format!("http://127.0.0.1:{port}");
    let probe = client_builder().build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    wait_until(Duration::from_secs(20), "chromedriver", &log, || {
        driver.assert_running(&log);
        rt.block_on(probe.get(format!("{base}/status")).send())
            .is_ok_and(|r| r.status().is_success())
    });
    let browser = Browser::start(&base);

    // Signing in: the page itself holds no data before a token is given.
    browser.go(&format!("{}/ui/", s.url));
    browser.wait_until(
        "the sign-in form",
        "return !document.getElementById('login').hidden",
    );
    browser.type_into("#token", "not-a-token");
    browser.click("#login-button");
    browser.wait_until(
        "the refusal",
        "return document.getElementById('login-error').textContent.includes('refused')",
    );
    browser.type_into("#token", &token);
    browser.click("#login-button");
    let row_state = |state: &str| {
        format!(
            "const c = document.querySelector('#workflows tr[data-id=\"{id}\"] td[data-state]'); \
             return c !== null && c.dataset.state === '{state}'"
        )
    };
    browser.wait_until("the workflow PENDING", &row_state("PENDING"));
    browser.wait_until(
        "the live stream",
        "return !document.getElementById('live').hidden",
    );
    // A mark the page would lose if it were reloaded.
    browser.js("window.__stayed = true; return true");

    // A worker of our own reports; the page follows without reloading.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut worker, mut stream) = rt.block_on(async {
        let mut worker = connect(&s.http_url, Some(&token)).await;
        let stream = worker
            .subscribe(SubscribeRequest {
                worker_id: MAC.into(),
                version: "console-test".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (worker, stream)
    });
    for action in ["partition", "write-image"] {
        let r = rt.block_on(async {
            let assignment = loop {
                let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .expect("an assignment")
                    .unwrap()
                    .unwrap();
                if let Some(instruction::Kind::Run(a)) = msg.kind {
                    break a;
                }
            };
            let r = assignment.r#ref.unwrap();
            assert_eq!(r.action, action);
            worker
                .report_action(report(MAC, Some(r.clone()), ActionState::Running))
                .await
                .unwrap();
            r
        });
        browser.wait_until("the workflow RUNNING", &row_state("RUNNING"));
        // The row shows the running action (the state alone stays RUNNING
        // from the first action to the last).
        browser.wait_until(
            &format!("{action} running"),
            &format!(
                "return document.querySelector('#workflows tr[data-id=\"{id}\"] td[data-progress]').textContent.includes('{action}')"
            ),
        );
        if action == "partition" {
            browser.screenshot(&shots, "workflow-running.png");
        }
        rt.block_on(async {
            worker
                .report_action(report(MAC, Some(r), ActionState::Success))
                .await
                .unwrap();
        });
    }
    browser.wait_until("the workflow SUCCESS", &row_state("SUCCESS"));
    browser.wait_until(
        "2 of 2 actions done",
        &format!(
            "return document.querySelector('#workflows tr[data-id=\"{id}\"] td[data-progress]').dataset.progress === '2/2'"
        ),
    );
    assert_eq!(
        browser.js("return window.__stayed === true"),
        json!(true),
        "the page was reloaded"
    );
    browser.screenshot(&shots, "workflow-success.png");

    // The machine: its timeline, drawn and listed.
    browser.go(&format!("{}/ui/#/machines/console-m0", s.url));
    browser.wait_until(
        "the machine's timeline",
        "const rows = [...document.querySelectorAll('#timeline tbody tr')].map(r => r.innerText); \
         return rows.some(r => r.includes('worker_connected')) && rows.some(r => r.includes('write-image SUCCESS')) \
           && rows.some(r => r.includes('workflow_finished')) \
           && document.querySelectorAll('#timeline-chart rect').length === rows.length",
    );
    let shot = browser.screenshot(&shots, "machine-timeline.png");

    // A template with an error: the message names the line.
    browser.go(&format!("{}/ui/#/templates", s.url));
    browser.wait_until(
        "the template form",
        "return document.getElementById('template-form') !== null",
    );
    browser.type_into("#template-name", "broken");
    browser.type_into(
        "#template-data",
        "version: \"0.1\"\nname: broken\ntasks:\n  - name: [unclosed\n",
    );
    browser.js("document.querySelector('#template-form button').click(); return true");
    browser.wait_until(
        "the template's error",
        "const r = document.getElementById('template-result'); \
         return r.className === 'error' && r.textContent.length > 0",
    );
    // The line it names (4) is selected in the editor.
    assert_eq!(
        browser.js("const t = document.getElementById('template-data'); \
             return t.value.substring(t.selectionStart, t.selectionEnd)"),
        json!("  - name: [unclosed")
    );
    browser.screenshot(&shots, "template-error.png");
    eprintln!("screenshots: {} (e.g. {})", shots.display(), shot.display());
    drop(browser);
    drop(driver);
}
