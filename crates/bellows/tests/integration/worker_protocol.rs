//! The worker protocol spoken by hand: what a well-behaved worker gets, and
//! how malformed or hostile messages are refused without changing anything.

use std::time::Duration;

use bellows_rpc::WorkerClient;
use bellows_rpc::v1::{
    ActionRef, ActionReport, ActionState, LogBatch, LogLine, SubscribeRequest, instruction,
};
use tonic::Code;

use crate::harness::Server;
use crate::workers::{events, get_workflow, workflow};

const W1: &str = "02:00:00:00:30:01";
const W2: &str = "02:00:00:00:30:02";

const TEMPLATE: &str = r#"
version: "0.1"
name: proto
global_timeout: 600
tasks:
  - name: first
    worker: "{{.device_1}}"
    actions:
      - {name: one, image: bellows/writefile, timeout: 60}
      - {name: two, image: bellows/writefile, timeout: 60}
  - name: second
    worker: "{{.device_2}}"
    actions:
      - {name: three, image: bellows/writefile}
"#;

/// A gRPC client of our own making (not the Bellows worker), sending
/// `token` as its bearer credential when given.
pub async fn connect(
    url: &str,
    token: Option<&str>,
) -> WorkerClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor + use<>,
    >,
> {
    connect_from(url, None, token).await
}

/// [`connect`] from local address `from` (a loopback alias), as a host
/// at another address would.
pub async fn connect_from(
    url: &str,
    from: Option<std::net::IpAddr>,
    token: Option<&str>,
) -> WorkerClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor + use<>,
    >,
> {
    // Over TLS when the server has it on, trusting its CA as a worker
    // given `--server-ca` would.
    let url = crate::harness::worker_url(url);
    let trust = match crate::harness::ca_for(&url) {
        Some(ca) => bellows_worker::tls::ServerTrust::ca_file(&ca).expect("CA file"),
        None => bellows_worker::tls::ServerTrust::System,
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url).expect("url");
    let mut dialer = bellows_worker::tls::Dialer::new(endpoint, &trust).expect("dialer");
    if let Some(ip) = from {
        dialer = dialer.from_address(ip);
    }
    with_bearer(dialer.connect().await.expect("connect"), token)
}

/// A worker client on `channel` sending `token` (when given) as its bearer
/// credential on every call.
pub fn with_bearer(
    channel: tonic::transport::Channel,
    token: Option<&str>,
) -> WorkerClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor + use<>,
    >,
> {
    let header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
        token.map(|t| format!("Bearer {t}").parse().expect("header"));
    WorkerClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(h) = &header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    })
}

pub fn aref(wf: &str, task: &str, action: &str, attempt: u32) -> Option<ActionRef> {
    Some(ActionRef {
        workflow_id: wf.into(),
        task: task.into(),
        action: action.into(),
        attempt,
    })
}

pub fn report(worker: &str, r: Option<ActionRef>, state: ActionState) -> ActionReport {
    ActionReport {
        worker_id: worker.into(),
        r#ref: r,
        state: state as i32,
        ..Default::default()
    }
}

fn refused<T>(r: Result<tonic::Response<T>, tonic::Status>, code: Code, text: &str) {
    let Err(st) = r else {
        panic!("must be refused: expected {code:?} with {text:?}")
    };
    assert_eq!(st.code(), code, "{st:?}");
    assert!(
        st.message().contains(text),
        "{:?} lacks {text:?}",
        st.message()
    );
}

#[test]
fn hostile_and_malformed_worker_messages_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let id = workflow(&s, "proto", TEMPLATE, &[("device_1", W1), ("device_2", W2)]);
    let before = get_workflow(&s, &id);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = connect(&s.http_url, s.token.as_deref()).await;
        refused(
            c.report_action(report(
                W1,
                aref("nope", "first", "one", 1),
                ActionState::Running,
            ))
            .await,
            Code::NotFound,
            "no workflow \"nope\"",
        );
        refused(
            c.report_action(report(
                W1,
                aref(&id, "first", "two", 1),
                ActionState::Running,
            ))
            .await,
            Code::FailedPrecondition,
            "next action to run is \"one\"",
        );
        refused(
            c.report_action(report(
                W2,
                aref(&id, "first", "one", 1),
                ActionState::Running,
            ))
            .await,
            Code::PermissionDenied,
            "belongs to worker",
        );
        refused(
            c.report_action(report(
                W1,
                aref(&id, "first", "nothing", 1),
                ActionState::Running,
            ))
            .await,
            Code::NotFound,
            "no action \"nothing\"",
        );
        refused(
            c.report_action(report(
                W1,
                aref(&id, "first", "one", 0),
                ActionState::Running,
            ))
            .await,
            Code::InvalidArgument,
            "attempt starts at 1",
        );
        refused(
            c.report_action(report(
                W1,
                aref(&id, "first", "one", 2),
                ActionState::Running,
            ))
            .await,
            Code::FailedPrecondition,
            "attempt",
        );
        refused(
            c.report_action(report(
                W1,
                aref(&id, "first", "one", 1),
                ActionState::Success,
            ))
            .await,
            Code::FailedPrecondition,
            "PENDING, so it cannot finish",
        );
        refused(
            c.report_action(report(
                W1,
                aref(&id, "first", "one", 1),
                ActionState::Unspecified,
            ))
            .await,
            Code::InvalidArgument,
            "is not RUNNING",
        );
        refused(
            c.report_action(report(W1, None, ActionState::Running))
                .await,
            Code::InvalidArgument,
            "ref is missing",
        );
        refused(
            c.report_action(report(
                "",
                aref(&id, "first", "one", 1),
                ActionState::Running,
            ))
            .await,
            Code::InvalidArgument,
            "worker_id is empty",
        );
        refused(
            c.send_logs(LogBatch {
                worker_id: W2.into(),
                lines: vec![LogLine {
                    r#ref: aref(&id, "first", "one", 1),
                    stream: "stdout".into(),
                    at_ms: 0,
                    line: "not mine".into(),
                }],
            })
            .await,
            Code::PermissionDenied,
            "is not worker",
        );
        refused(
            c.send_logs(LogBatch {
                worker_id: W1.into(),
                lines: vec![LogLine {
                    r#ref: aref(&id, "first", "one", 1),
                    stream: "journal".into(),
                    at_ms: 0,
                    line: "x".into(),
                }],
            })
            .await,
            Code::InvalidArgument,
            "stream \"journal\"",
        );
        let long_id = "x".repeat(300);
        refused(
            c.subscribe(SubscribeRequest {
                worker_id: long_id,
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "at most 200",
        );
    });
    // Nothing changed: same workflow, only the creation event.
    assert_eq!(get_workflow(&s, &id), before);
    assert_eq!(events(&s, &id).len(), 1);
}

#[test]
fn a_subscribed_worker_is_pushed_its_action_and_repeats_are_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = connect(&s.http_url, s.token.as_deref()).await;
        // Uppercase and dashes: the same MAC as the template's.
        let mut stream = c
            .subscribe(SubscribeRequest {
                worker_id: W1.to_uppercase().replace(':', "-"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(first.kind, Some(instruction::Kind::Hello(_))));
        // Nothing to do yet: the stream stays quiet until a workflow appears.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), stream.message())
                .await
                .is_err()
        );
        let id = create_workflow(&s).await;
        let pushed = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("assignment pushed within 5 s")
            .unwrap()
            .unwrap();
        let Some(instruction::Kind::Run(a)) = pushed.kind else {
            panic!("expected a Run, got {pushed:?}");
        };
        let r = a.r#ref.clone().unwrap();
        assert_eq!(
            (r.workflow_id.as_str(), r.action.as_str(), r.attempt),
            (id.as_str(), "one", 1)
        );
        assert_eq!(a.spec.unwrap().image, "bellows/writefile");
        // Start twice, finish twice: one transition each.
        for _ in 0..2 {
            c.report_action(report(W1, Some(r.clone()), ActionState::Running))
                .await
                .unwrap();
        }
        for _ in 0..2 {
            c.report_action(report(W1, Some(r.clone()), ActionState::Success))
                .await
                .unwrap();
        }
        let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Some(instruction::Kind::Run(a2)) = next.kind else {
            panic!("expected the next action, got {next:?}");
        };
        assert_eq!(a2.r#ref.unwrap().action, "two");
        id
    });
    let wf = &s.cli(&["workflow", "list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&wf.stdout).unwrap();
    let id = list["items"][0]["id"].as_str().unwrap().to_string();
    let evs = events(&s, &id);
    let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "action_started",
            "state_changed",
            "action_finished"
        ]
    );
}

/// Creates the TEMPLATE workflow for W1 and W2 over the REST API, from
/// async code; its id.
async fn create_workflow(s: &Server) -> String {
    let url = s.url.clone();
    tokio::task::spawn_blocking(move || {
        crate::workers::workflow_at(
            &url,
            "proto",
            TEMPLATE,
            &[("device_1", W1), ("device_2", W2)],
        )
    })
    .await
    .unwrap()
}

/// The next message other than a keep-alive, within `within`.
async fn next_instruction(
    stream: &mut tonic::Streaming<bellows_rpc::v1::Instruction>,
    within: Duration,
) -> Option<instruction::Kind> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .ok()?
            .expect("stream stays healthy")
            .expect("stream stays open");
        if msg.kind.is_some() {
            return msg.kind;
        }
    }
}

#[test]
fn an_assignment_the_worker_never_starts_is_pushed_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--worker-keepalive", "1"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = connect(&s.http_url, s.token.as_deref()).await;
        let mut stream = c
            .subscribe(SubscribeRequest {
                worker_id: W1.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let hello = next_instruction(&mut stream, Duration::from_secs(5)).await;
        assert!(matches!(hello, Some(instruction::Kind::Hello(_))));
        let id = create_workflow(&s).await;
        let Some(instruction::Kind::Run(first)) =
            next_instruction(&mut stream, Duration::from_secs(5)).await
        else {
            panic!("expected the first assignment");
        };
        // This worker "loses" it: no report. The server pushes it again
        // after a keep-alive (1 s here), the same attempt.
        let Some(instruction::Kind::Run(again)) =
            next_instruction(&mut stream, Duration::from_secs(5)).await
        else {
            panic!("the unstarted assignment was not pushed again");
        };
        assert_eq!(again.r#ref, first.r#ref);
        assert_eq!(again.r#ref, aref(&id, "first", "one", 1));
        // Once started, it is not pushed again, however long it runs.
        c.report_action(report(W1, again.r#ref.clone(), ActionState::Running))
            .await
            .unwrap();
        let quiet = next_instruction(&mut stream, Duration::from_secs(3)).await;
        assert!(quiet.is_none(), "a started action was pushed: {quiet:?}");
        c.report_action(report(W1, again.r#ref.clone(), ActionState::Success))
            .await
            .unwrap();
        let Some(instruction::Kind::Run(second)) =
            next_instruction(&mut stream, Duration::from_secs(5)).await
        else {
            panic!("expected the second assignment");
        };
        assert_eq!(second.r#ref, aref(&id, "first", "two", 1));
    });
}
