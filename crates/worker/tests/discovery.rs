//! The discovery loop against an in-process gRPC server that answers
//! `Discover` from a script: it retries through refusals, follows the
//! poll interval, fails over between servers, sends the credential and
//! the facts, reboots (exits, in `PowerMode::Exit`) once enrolled, and
//! stops on its token.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bellows_rpc::v1::{
    ActionReport, DiscoverReply, DiscoverRequest, Instruction, LogBatch, LogReply, ReportReply,
    SubscribeRequest,
};
use bellows_rpc::{Worker, WorkerServer};
use bellows_worker::agent::{AgentConfig, Exit, PowerMode};
use bellows_worker::discovery::Discovery;
use bellows_worker::tls::ServerTrust;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// One `Discover` call as the server saw it.
#[derive(Debug, Clone)]
struct Call {
    request: DiscoverRequest,
    authorization: Option<String>,
    at: Instant,
}

/// Answers `Discover` with the next scripted reply (not enrolled, poll
/// 1 s, once the script runs out); everything else is unimplemented.
#[derive(Clone, Default)]
struct Fake {
    script: Arc<Mutex<VecDeque<Result<DiscoverReply, Status>>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Fake {
    fn new(script: Vec<Result<DiscoverReply, Status>>) -> Fake {
        Fake {
            script: Arc::new(Mutex::new(script.into())),
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl Worker for Fake {
    type SubscribeStream = tokio_stream::Empty<Result<Instruction, Status>>;

    async fn subscribe(
        &self,
        _request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("no workflows here"))
    }

    async fn report_action(
        &self,
        _request: Request<ActionReport>,
    ) -> Result<Response<ReportReply>, Status> {
        Err(Status::unimplemented("no workflows here"))
    }

    async fn send_logs(&self, _request: Request<LogBatch>) -> Result<Response<LogReply>, Status> {
        Err(Status::unimplemented("no workflows here"))
    }

    async fn discover(
        &self,
        request: Request<DiscoverRequest>,
    ) -> Result<Response<DiscoverReply>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.calls.lock().unwrap().push(Call {
            request: request.into_inner(),
            authorization,
            at: Instant::now(),
        });
        let next = self.script.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Ok(not_enrolled(1, "still waiting")))
            .map(Response::new)
    }
}

fn not_enrolled(poll_seconds: u32, message: &str) -> DiscoverReply {
    DiscoverReply {
        enrolled: false,
        hardware_id: "discovered-52-54-00-12-34-56".into(),
        poll_seconds,
        message: message.into(),
    }
}

fn enrolled() -> DiscoverReply {
    DiscoverReply {
        enrolled: true,
        hardware_id: "rack12-u7".into(),
        poll_seconds: 0,
        message: "enrolled by rule rack-12".into(),
    }
}

/// Serves `fake` on a loopback port; its URL.
async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route_service(
        "/bellows.worker.v1.Worker/{*method}",
        WorkerServer::new(fake),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A loopback URL nothing listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn config(servers: Vec<String>) -> AgentConfig {
    AgentConfig {
        servers,
        worker_id: "52:54:00:12:34:56".into(),
        work_root: std::env::temp_dir(),
        power: PowerMode::Exit,
        max_backoff: Duration::from_secs(1),
        send_facts: true,
        token: Some("discovery-token".into()),
        trust: ServerTrust::System,
    }
}

async fn discover(config: AgentConfig, stop: CancellationToken) -> Exit {
    let discovery = Discovery::new(config).unwrap().listen_lldp(false);
    tokio::time::timeout(Duration::from_secs(30), discovery.run(stop))
        .await
        .expect("discovery did not finish in 30 s")
}

#[tokio::test]
async fn reports_until_enrolled_then_reboots() {
    let fake = Fake::new(vec![
        Err(Status::unimplemented("discovery is not implemented")),
        Err(Status::unauthenticated("no such credential")),
        Ok(not_enrolled(1, "waiting for an operator")),
        Ok(not_enrolled(1, "waiting for an operator")),
        Ok(enrolled()),
    ]);
    let url = serve(fake.clone()).await;
    let exit = discover(config(vec![url]), CancellationToken::new()).await;
    assert_eq!(exit, Exit::Reboot);

    let calls = fake.calls();
    assert_eq!(calls.len(), 5, "{calls:#?}");
    for call in &calls {
        assert_eq!(
            call.authorization.as_deref(),
            Some("Bearer discovery-token")
        );
        assert_eq!(call.request.worker_id, "52:54:00:12:34:56");
        assert!(!call.request.version.is_empty());
        // The facts of this machine, read afresh for every report.
        let facts = call.request.facts.as_ref().expect("facts");
        assert!(
            !facts.kernel.is_empty() && facts.memory_bytes > 0,
            "{facts:?}"
        );
        assert_eq!(facts.architecture, std::env::consts::ARCH);
    }
    // Backing off from 1 s after a refusal (±25 %), then the server's
    // poll interval of 1 s.
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    for gap in &gaps {
        assert!(
            *gap >= Duration::from_millis(700) && *gap <= Duration::from_secs(5),
            "{gaps:?}"
        );
    }
}

#[tokio::test]
async fn fails_over_to_the_next_server() {
    let fake = Fake::new(vec![Ok(enrolled())]);
    let url = serve(fake.clone()).await;
    let started = Instant::now();
    let exit = discover(config(vec![dead_url(), url]), CancellationToken::new()).await;
    assert_eq!(exit, Exit::Reboot);
    assert_eq!(fake.calls().len(), 1);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn stops_on_its_token_while_the_server_is_away() {
    let stop = CancellationToken::new();
    let run = tokio::spawn(discover(config(vec![dead_url()]), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let asked = Instant::now();
    stop.cancel();
    assert_eq!(run.await.unwrap(), Exit::Stopped);
    assert!(asked.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn bad_settings_are_refused_before_starting() {
    let mut bad = config(vec!["not a url".into()]);
    assert!(Discovery::new(bad.clone()).is_err());
    bad.servers = Vec::new();
    assert!(Discovery::new(bad.clone()).is_err());
    bad.servers = vec!["http://127.0.0.1:1".into()];
    bad.token = Some("line\nbreak".into());
    assert!(Discovery::new(bad).is_err());
}
