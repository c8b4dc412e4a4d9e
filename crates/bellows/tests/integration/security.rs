//! The attacks of issue 12, each tried against a real server: anonymous and
//! wrong-role API calls, and a rogue gRPC worker (a client written here,
//! not the Bellows worker) claiming another machine's MAC.

use std::net::IpAddr;
use std::time::Duration;

use bellows_rpc::WorkerClient;
use bellows_rpc::v1::{ActionState, SubscribeRequest, instruction};
use serde_json::Value;
use tonic::Code;

use crate::harness::{Server, client_builder, http, ok};
use crate::worker_protocol::{aref, connect_from, report};

/// One HTTP call with exactly the credential given (none, or `token`):
/// (status, `WWW-Authenticate`, JSON body).
fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    call_from(None, method, url, token, body)
}

fn call_from(
    from: Option<IpAddr>,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = client_builder()
            .local_address(from)
            .build()
            .expect("client");
        let mut req = client.request(method.parse().expect("method"), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, challenge, value)
    })
}

fn new_token(s: &Server, name: &str, role: &str) -> String {
    let out = ok(&s.cli(&["token", "create", "--name", name, "--role", role]));
    let token = out.trim().to_string();
    assert!(token.starts_with("bellows_api_"), "{out}");
    token
}

#[test]
fn the_api_refuses_anonymous_and_wrong_role_calls_and_records_who_changed_what() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path());
    let admin = s.token.clone().expect("the first start writes admin.token");
    // The token file is the admin's alone.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("admin.token"))
            .expect("admin.token")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let hw_url = format!("{}/api/v1/hardware", s.url);

    // Anonymous: 401 with a challenge, on reads and writes; health is open.
    let (st, challenge, body) = call("GET", &hw_url, None, None);
    assert_eq!(st, 401, "{body}");
    assert!(challenge.is_some_and(|c| c.starts_with("Bearer")));
    assert_eq!(body["code"], "unauthorized");
    let machine = serde_json::json!({"id": "m1", "user_data": "#cloud-config\npassword: hunter2",
        "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:40:01"}}]}});
    assert_eq!(call("POST", &hw_url, None, Some(machine.clone())).0, 401);
    assert_eq!(call("GET", &hw_url, Some("bellows_api_00"), None).0, 401);
    assert_eq!(
        call("GET", &format!("{}/healthz", s.url), None, None).0,
        200
    );
    // The change stream and the metrics are the API's too; the console's
    // page is open (its script asks the API with the operator's token).
    for path in ["/api/v1/changes", "/metrics"] {
        assert_eq!(
            call("GET", &format!("{}{path}", s.url), None, None).0,
            401,
            "{path}"
        );
    }
    let (st, _, page) = call("GET", &format!("{}/ui/", s.url), None, None);
    assert_eq!(st, 200);
    let page = page.as_str().unwrap_or_default().to_string();
    assert!(page.contains("console.js"), "{page}");
    // Nothing was written by the refused calls.
    let (_, _, list) = call("GET", &hw_url, Some(&admin), None);
    assert_eq!(list["items"], serde_json::json!([]));

    let viewer = new_token(&s, "dash", "viewer");
    let operator = new_token(&s, "ops-alice", "operator");

    // A viewer reads, but not secrets, and changes nothing.
    let (st, _, body) = call("POST", &hw_url, Some(&viewer), Some(machine.clone()));
    assert_eq!(
        (st, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    // An operator writes machines, but not tokens or BMC credentials.
    let (st, _, body) = call("POST", &hw_url, Some(&operator), Some(machine));
    assert!(st == 200 || st == 201, "{st} {body}");
    let (st, _, body) = call("GET", &format!("{hw_url}/m1"), Some(&viewer), None);
    assert_eq!(st, 200);
    assert!(!body.to_string().contains("hunter2"), "{body}");
    let (_, _, body) = call("GET", &format!("{hw_url}/m1"), Some(&operator), None);
    assert!(body.to_string().contains("hunter2"));
    let bmc = serde_json::json!({"address": "127.0.0.1", "username": "u", "password": "p"});
    assert_eq!(
        call(
            "PUT",
            &format!("{hw_url}/m1/bmc"),
            Some(&operator),
            Some(bmc)
        )
        .0,
        403
    );
    let tokens_url = format!("{}/api/v1/tokens", s.url);
    assert_eq!(call("GET", &tokens_url, Some(&operator), None).0, 403);
    let escalate = serde_json::json!({"name": "mine", "role": "admin"});
    assert_eq!(
        call("POST", &tokens_url, Some(&operator), Some(escalate)).0,
        403
    );

    // Who did what is recorded; tokens are listed, never shown again.
    let audit = ok(&s.cli(&["token", "audit", "-o", "json"]));
    assert!(
        audit.contains("ops-alice") && audit.contains("/api/v1/hardware"),
        "{audit}"
    );
    let listed = ok(&s.cli(&["token", "list", "-o", "json"]));
    assert!(listed.contains("ops-alice") && !listed.contains(&operator));

    // A revoked token stops working at once; the last admin cannot go.
    ok(&s.cli(&["token", "revoke", "ops-alice"]));
    assert_eq!(call("GET", &hw_url, Some(&operator), None).0, 401);
    let admins: Vec<Value> = serde_json::from_str::<Value>(&listed).expect("json")["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|t| t["role"] == "admin")
        .cloned()
        .collect();
    let last = admins[0]["name"].as_str().expect("name");
    let (st, _, _) = call(
        "DELETE",
        &format!("{tokens_url}/{last}"),
        Some(&admin),
        None,
    );
    assert_eq!(st, 409);
}

const TEMPLATE: &str = r#"
version: "0.1"
name: secret
global_timeout: 600
tasks:
  - name: install
    worker: "{{.device_1}}"
    environment:
      ROOT_PASSWORD: hunter2-secret
    actions:
      - {name: one, image: bellows/writefile, timeout: 60}
"#;

const A: &str = "02:00:00:00:41:01";
const B: &str = "02:00:00:00:41:02";
const A_IP: &str = "127.0.0.1";
const B_IP: &str = "127.0.0.2";

/// Pushes machine `name` with NIC `mac` reserved `ip`, and a workflow for it.
fn machine_with_workflow(s: &Server, name: &str, mac: &str, ip: &str) -> String {
    let hw = serde_json::json!({"id": name, "network": {"interfaces": [{
        "dhcp": {"mac": mac, "ip": {"address": ip, "netmask": "255.0.0.0"}},
        "netboot": {"allow_pxe": true, "allow_workflow": true}}]}});
    let (st, body) = http(
        "POST",
        &format!("{}/api/v1/hardware", s.url),
        Some(hw.to_string().as_bytes()),
    );
    assert!(st == 200 || st == 201, "{st} {body}");
    let (st, _) = http(
        "POST",
        &format!("{}/api/v1/templates", s.url),
        Some(
            serde_json::json!({"name": name, "data": TEMPLATE})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 201);
    let (st, wf) = http(
        "POST",
        &format!("{}/api/v1/workflows", s.url),
        Some(
            serde_json::json!({"template": name, "hardware_map": {"device_1": mac}})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(st, 201, "{wf}");
    wf["id"].as_str().expect("id").to_string()
}

/// The per-boot credential in `mac`'s script, fetched from `from` as the
/// machine's iPXE would.
fn boot_credential(s: &Server, mac: &str, from: &str) -> String {
    boot_credential_at(&s.http_url, mac, from)
}

fn boot_credential_at(http_url: &str, mac: &str, from: &str) -> String {
    let url = format!("{http_url}/ipxe/{mac}/auto.ipxe");
    let (st, _, script) = call_from(Some(from.parse().expect("ip")), "GET", &url, None, None);
    assert_eq!(st, 200, "{script}");
    let script = script.as_str().expect("text").to_string();
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bellows.token="))
        .unwrap_or_else(|| panic!("no bellows.token= in {script}"))
        .to_string()
}

/// A gRPC client of our own, from `from`, with `token`.
async fn rogue(
    s: &Server,
    from: &str,
    token: Option<&str>,
) -> WorkerClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor + use<>,
    >,
> {
    connect_from(&s.http_url, Some(from.parse().expect("ip")), token).await
}

fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code) {
    match r {
        Ok(v) => panic!("must be refused with {code:?}, got {v:?}"),
        Err(st) => assert_eq!(st.code(), code, "{st:?}"),
    }
}

#[test]
fn a_rogue_worker_claiming_another_machine_gets_nothing_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_with(dir.path(), &["--worker-keepalive", "1"]);
    let wf_a = machine_with_workflow(&s, "a", A, A_IP);
    machine_with_workflow(&s, "b", B, B_IP);
    let cred_a = boot_credential(&s, A, A_IP);
    let cred_b = boot_credential(&s, B, B_IP);
    assert!(cred_a.starts_with("bellows_boot_") && cred_a != cred_b);
    let viewer = new_token(&s, "dash", "viewer");
    let operator = new_token(&s, "ops", "operator");
    let sub = |id: &str| SubscribeRequest {
        worker_id: id.into(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // No credential, an invented one, a viewer's token.
        for token in [None, Some("bellows_boot_1234"), Some(viewer.as_str())] {
            let mut c = rogue(&s, A_IP, token).await;
            let want = if token == Some(viewer.as_str()) {
                Code::PermissionDenied
            } else {
                Code::Unauthenticated
            };
            refused(c.subscribe(sub(A)).await, want);
            refused(
                c.report_action(report(
                    A,
                    aref(&wf_a, "install", "one", 1),
                    ActionState::Success,
                ))
                .await,
                want,
            );
        }
        // Machine B's own credential, from B's address, claiming A.
        let mut c = rogue(&s, B_IP, Some(&cred_b)).await;
        refused(c.subscribe(sub(A)).await, Code::PermissionDenied);
        refused(
            c.report_action(report(
                A,
                aref(&wf_a, "install", "one", 1),
                ActionState::Success,
            ))
            .await,
            Code::PermissionDenied,
        );
        // A's credential from another address than A's reservation.
        let mut c = rogue(&s, B_IP, Some(&cred_a)).await;
        refused(c.subscribe(sub(A)).await, Code::PermissionDenied);
    });
    // None of that changed the workflow.
    let (_, wf) = http("GET", &format!("{}/api/v1/workflows/{wf_a}", s.url), None);
    assert_eq!(wf["state"], "PENDING", "{wf}");
    let (_, events) = http(
        "GET",
        &format!("{}/api/v1/workflows/{wf_a}/events", s.url),
        None,
    );
    assert_eq!(
        events["items"].as_array().map(Vec::len),
        Some(1),
        "{events}"
    );

    rt.block_on(async {
        // The machine itself gets its work, secrets included.
        let mut own = rogue(&s, A_IP, Some(&cred_a)).await;
        let mut stream = own
            .subscribe(sub(A))
            .await
            .expect("own stream")
            .into_inner();
        let mut hello = None;
        let mut run = None;
        while run.is_none() {
            let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("within 10 s")
                .expect("healthy")
                .expect("open");
            match msg.kind {
                Some(instruction::Kind::Hello(h)) => hello = Some(h),
                Some(instruction::Kind::Run(a)) => run = Some(a),
                _ => {}
            }
        }
        assert_eq!(hello.expect("hello").hardware_id, "a");
        let run = run.expect("run");
        assert_eq!(
            run.spec
                .as_ref()
                .and_then(|s| s.environment.get("ROOT_PASSWORD"))
                .map(String::as_str),
            Some("hunter2-secret")
        );
        // An operator's stream cannot displace the machine's own.
        let mut op = rogue(&s, A_IP, Some(&operator)).await;
        refused(op.subscribe(sub(A)).await, Code::AlreadyExists);
        let still = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a keep-alive within 5 s");
        assert!(matches!(still, Ok(Some(_))), "{still:?}");
        // A new boot mints a new credential; the old one is dead.
        let http_url = s.http_url.clone();
        let fresh = tokio::task::spawn_blocking(move || boot_credential_at(&http_url, A, A_IP))
            .await
            .expect("fetch");
        assert_ne!(fresh, cred_a);
        let mut stale = rogue(&s, A_IP, Some(&cred_a)).await;
        refused(
            stale
                .report_action(report(
                    A,
                    aref(&wf_a, "install", "one", 1),
                    ActionState::Running,
                ))
                .await,
            Code::Unauthenticated,
        );
        let mut renewed = rogue(&s, A_IP, Some(&fresh)).await;
        renewed
            .report_action(report(
                A,
                aref(&wf_a, "install", "one", 1),
                ActionState::Running,
            ))
            .await
            .expect("the machine's current credential reports");
    });
}
