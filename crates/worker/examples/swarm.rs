//! A swarm of simulated workers against one server, for `bench/workers.sh`.
//!
//! Each simulated worker is what a machine's agent is on the wire: its own
//! HTTP/2 connection (`Endpoint::connect`, the agent's settings), one
//! `Subscribe` stream kept open, and unary `ReportAction` calls on the same
//! connection. Nothing runs: an assignment is answered at once with RUNNING
//! then SUCCESS.
//!
//! ```text
//! swarm run --target bellows|baseline|connect-only --grpc URL [--api URL]
//!           [--workers 1000] [--workflows 500] [--burst 100] [--warmup 20]
//!           [--pid PID[,PID…]] [--concurrency 64] [--settle-secs 3] [--idle-secs 30]
//!           [--json FILE]
//! swarm serve-baseline [ADDR]
//! ```
//!
//! `run` measures, in order:
//!
//! 1. the server's memory (VmRSS and Pss, summed over `--pid`) with no
//!    worker, with N open connections, and with N subscribed workers;
//! 2. (not for `connect-only`) the server's CPU time while the N workers
//!    sit idle for `--idle-secs` (keep-alives only);
//! 3. (not for `connect-only`) `--workflows` two-action workflows created one
//!    at a time, each for the next worker in turn, then the same number
//!    again in bursts of `--burst` created at once for distinct workers.
//!    For each: create request → `Run(a1)` on the worker's stream, the
//!    create call's own round trip, the RUNNING and SUCCESS reports' round
//!    trips, and SUCCESS(a1) sent → `Run(a2)` on the stream;
//! 4. the memory again, after all of that.
//!
//! It prints the results as one JSON object (also written to `--json`);
//! progress goes to stderr. Latencies are in ms: p50, p95, p99, max.
//!
//! Targets: `bellows` creates workflows with `POST {api}/api/v1/workflows`
//! (hardware for every worker and the template are pushed first);
//! `baseline` is `swarm serve-baseline`, a bare tonic service on the same
//! axum/hyper stack as Bellows that keeps a channel per stream and pushes an
//! assignment when told to (a unary call from a separate connection) and
//! the second action on SUCCESS of the first, with no store and no
//! rendering: the floor for the same exchange; `connect-only` opens the
//! connections and measures memory (any HTTP/2 server, e.g. nginx).
//!
//! Why one file of ~940 lines: an example is one file by Cargo's
//! convention, and this one is a self-contained load generator.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bellows_rpc::v1::{
    ActionRef, ActionReport, ActionSpec, ActionState, Assignment, Cpu, DiscoverReply,
    DiscoverRequest, Facts, Hello, Instruction, LogBatch, LogReply, Nic, ReportReply,
    SubscribeRequest, instruction,
};
use bellows_rpc::{Worker, WorkerClient, WorkerServer};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

const TEMPLATE: &str = "swarm";
const TASK: &str = "provision";
const TEMPLATE_YAML: &str = r#"version: "0.1"
name: swarm
global_timeout: 600
tasks:
  - name: provision
    worker: "{{.device_1}}"
    actions:
      - name: a1
        image: bellows/writefile
        timeout: 60
      - name: a2
        image: bellows/writefile
        timeout: 60
"#;
/// Longest wait for anything the server owes us.
const WAIT: Duration = Duration::from_secs(60);

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Bellows,
    Baseline,
    ConnectOnly,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Bellows => "bellows",
            Target::Baseline => "baseline",
            Target::ConnectOnly => "connect-only",
        }
    }
}

struct Args {
    target: Target,
    grpc: String,
    api: Option<String>,
    workers: usize,
    workflows: usize,
    burst: usize,
    warmup: usize,
    pids: Vec<u32>,
    concurrency: usize,
    settle: Duration,
    idle: Duration,
    json: Option<String>,
}

fn usage() -> String {
    "usage: swarm run --target bellows|baseline|connect-only --grpc URL [--api URL] \
     [--workers N] [--workflows N] [--burst N] [--warmup N] [--pid PID[,PID...]] \
     [--concurrency N] [--settle-secs S] [--idle-secs S] [--json FILE]\n       swarm serve-baseline [ADDR]"
        .to_string()
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        target: Target::Bellows,
        grpc: String::new(),
        api: None,
        workers: 1000,
        workflows: 500,
        burst: 100,
        warmup: 20,
        pids: Vec::new(),
        concurrency: 64,
        settle: Duration::from_secs(3),
        idle: Duration::from_secs(30),
        json: None,
    };
    fn num(v: Option<String>, flag: &str) -> Result<usize, String> {
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    }
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--target" => {
                a.target = match it.next().as_deref() {
                    Some("bellows") => Target::Bellows,
                    Some("baseline") => Target::Baseline,
                    Some("connect-only") => Target::ConnectOnly,
                    other => return Err(format!("unknown target {other:?}")),
                }
            }
            "--grpc" => a.grpc = it.next().ok_or("--grpc needs a URL")?,
            "--api" => a.api = Some(it.next().ok_or("--api needs a URL")?),
            "--workers" => a.workers = num(it.next(), "--workers")?,
            "--workflows" => a.workflows = num(it.next(), "--workflows")?,
            "--burst" => a.burst = num(it.next(), "--burst")?,
            "--warmup" => a.warmup = num(it.next(), "--warmup")?,
            "--concurrency" => a.concurrency = num(it.next(), "--concurrency")?.max(1),
            "--idle-secs" => a.idle = Duration::from_secs(num(it.next(), "--idle-secs")? as u64),
            "--settle-secs" => {
                a.settle = Duration::from_secs(num(it.next(), "--settle-secs")? as u64)
            }
            "--json" => a.json = Some(it.next().ok_or("--json needs a file")?),
            "--pid" => {
                let v = it.next().ok_or("--pid needs PID[,PID...]")?;
                for p in v.split(',').filter(|p| !p.is_empty()) {
                    a.pids
                        .push(p.parse().map_err(|_| format!("bad pid {p:?}"))?);
                }
            }
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    if a.grpc.is_empty() {
        return Err(format!("--grpc is required\n{}", usage()));
    }
    if a.target == Target::Bellows && a.api.is_none() {
        return Err("--target bellows needs --api".into());
    }
    if a.workers == 0 || a.burst == 0 || a.burst > a.workers {
        return Err("need 1 <= --burst <= --workers".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("swarm: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.next().as_deref() {
        Some("serve-baseline") => {
            let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
            rt.block_on(serve_baseline(addr))
        }
        Some("run") => match parse_args(args) {
            Ok(a) => rt.block_on(run(a)),
            Err(e) => Err(e.into()),
        },
        _ => Err(usage().into()),
    };
    // Open streams and connections are not closed one by one: the process
    // ends and the kernel closes them.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarm: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// The baseline server: bare gRPC push on the same stack as Bellows.

type Tx = mpsc::Sender<Result<Instruction, Status>>;

/// A channel per subscribed worker, nothing else.
#[derive(Clone, Default)]
struct Baseline {
    streams: Arc<Mutex<HashMap<String, Tx>>>,
}

fn assignment(workflow_id: &str, action: &str) -> Instruction {
    Instruction {
        kind: Some(instruction::Kind::Run(Assignment {
            r#ref: Some(ActionRef {
                workflow_id: workflow_id.to_string(),
                task: TASK.to_string(),
                action: action.to_string(),
                attempt: 1,
            }),
            max_attempts: 1,
            resume: false,
            spec: Some(ActionSpec {
                name: action.to_string(),
                image: "bellows/writefile".into(),
                timeout_seconds: 60,
                ..Default::default()
            }),
        })),
    }
}

#[tonic::async_trait]
impl Worker for Baseline {
    type SubscribeStream = ReceiverStream<Result<Instruction, Status>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let hello = Instruction {
            kind: Some(instruction::Kind::Hello(Hello {
                hardware_id: String::new(),
                keepalive_seconds: 25,
                registries: Vec::new(),
            })),
        };
        let _ = tx.try_send(Ok(hello));
        if let Ok(mut s) = self.streams.lock() {
            s.insert(req.worker_id, tx);
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    /// `message == "create"`: push action a1 of `ref.workflow_id` to
    /// `worker_id` (the "create a workflow" of the baseline). SUCCESS of a1:
    /// push a2 (the "next action"). Anything else: acknowledge.
    async fn report_action(
        &self,
        request: Request<ActionReport>,
    ) -> Result<Response<ReportReply>, Status> {
        let rep = request.into_inner();
        let r = rep.r#ref.unwrap_or_default();
        let push = if rep.message == "create" {
            Some("a1")
        } else if rep.state == ActionState::Success as i32 && r.action == "a1" {
            Some("a2")
        } else {
            None
        };
        if let Some(action) = push {
            let tx = self
                .streams
                .lock()
                .ok()
                .and_then(|s| s.get(&rep.worker_id).cloned())
                .ok_or_else(|| Status::not_found("worker not subscribed"))?;
            tx.send(Ok(assignment(&r.workflow_id, action)))
                .await
                .map_err(|_| Status::unavailable("stream closed"))?;
        }
        Ok(Response::new(ReportReply {
            workflow_state: "RUNNING".into(),
        }))
    }

    async fn send_logs(&self, request: Request<LogBatch>) -> Result<Response<LogReply>, Status> {
        Ok(Response::new(LogReply {
            accepted: request.into_inner().lines.len() as u32,
        }))
    }

    /// Simulated workers are never unknown machines.
    async fn discover(
        &self,
        _request: Request<DiscoverRequest>,
    ) -> Result<Response<DiscoverReply>, Status> {
        Err(Status::unimplemented("the baseline has no discovery"))
    }
}

async fn serve_baseline(addr: String) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let app = axum::Router::new().route_service(
        "/bellows.worker.v1.Worker/{*method}",
        WorkerServer::new(Baseline::default()),
    );
    println!("baseline listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The simulated workers.

/// What happened to one workflow, as seen by its worker and by us.
#[derive(Default, Clone)]
struct Rec {
    create_sent: Option<Instant>,
    create_done: Option<Instant>,
    run1: Option<Instant>,
    success1_sent: Option<Instant>,
    run2: Option<Instant>,
    running_rtt: Vec<Duration>,
    success_rtt: Vec<Duration>,
}

struct Shared {
    recs: Mutex<HashMap<String, Rec>>,
    /// A workflow id once its last SUCCESS is acknowledged (or failed).
    done: mpsc::UnboundedSender<String>,
    errors: Mutex<Vec<String>>,
    ready: AtomicUsize,
}

impl Shared {
    fn with(&self, id: &str, f: impl FnOnce(&mut Rec)) {
        if let Ok(mut recs) = self.recs.lock() {
            f(recs.entry(id.to_string()).or_default());
        }
    }
    fn error(&self, e: String) {
        if let Ok(mut errs) = self.errors.lock() {
            if errs.len() < 20 {
                eprintln!("swarm: {e}");
            }
            errs.push(e);
        }
    }
}

fn mac(i: usize) -> String {
    format!("02:5a:00:00:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff)
}

fn endpoint(url: &str) -> Result<Endpoint, Error> {
    // The agent's own settings (crates/worker/src/agent.rs).
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true))
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One worker: subscribe, say when Hello came, then answer each assignment.
async fn worker(i: usize, channel: Channel, shared: Arc<Shared>) {
    let id = mac(i);
    let mut client = WorkerClient::new(channel);
    let req = SubscribeRequest {
        worker_id: id.clone(),
        version: "swarm".into(),
        facts: Some(Facts {
            cpu: Some(Cpu {
                model: "Simulated CPU".into(),
                threads: 32,
                sockets: 2,
            }),
            memory_bytes: 64 << 30,
            disks: Vec::new(),
            nics: vec![Nic {
                name: "eth0".into(),
                mac: id.clone(),
                driver: "virtio_net".into(),
                speed_mbps: 10_000,
                link_up: true,
                addresses: Vec::new(),
                lldp: None,
            }],
            hostname: format!("swarm-{i:04}"),
            kernel: "6.1.0".into(),
            architecture: "x86_64".into(),
            extra_json: String::new(),
            bmc_address: String::new(),
        }),
        running: None,
    };
    let mut stream = match client.subscribe(req).await {
        Ok(s) => s.into_inner(),
        Err(e) => return shared.error(format!("worker {i}: subscribe: {e}")),
    };
    let mut hello = false;
    loop {
        match stream.message().await {
            Ok(Some(ins)) => match ins.kind {
                Some(instruction::Kind::Hello(_)) if !hello => {
                    hello = true;
                    shared.ready.fetch_add(1, Ordering::SeqCst);
                }
                Some(instruction::Kind::Run(a)) => {
                    let at = Instant::now();
                    let Some(r) = a.r#ref else { continue };
                    match r.action.as_str() {
                        "a1" => shared.with(&r.workflow_id, |rec| rec.run1 = Some(at)),
                        _ => shared.with(&r.workflow_id, |rec| rec.run2 = Some(at)),
                    }
                    tokio::spawn(report(id.clone(), client.clone(), r, shared.clone()));
                }
                _ => {} // keep-alive, cancel
            },
            Ok(None) => return shared.error(format!("worker {i}: server ended the stream")),
            Err(e) => return shared.error(format!("worker {i}: stream: {e}")),
        }
    }
}

/// RUNNING, then SUCCESS, each timed; a2's SUCCESS finishes the workflow.
async fn report(
    worker: String,
    mut client: WorkerClient<Channel>,
    r: ActionRef,
    shared: Arc<Shared>,
) {
    let wf = r.workflow_id.clone();
    let last = r.action != "a1";
    let started = unix_ms();
    let mut rep = ActionReport {
        worker_id: worker,
        r#ref: Some(r),
        state: ActionState::Running as i32,
        started_at_ms: started,
        ..Default::default()
    };
    let t = Instant::now();
    let res = tokio::time::timeout(WAIT, client.report_action(rep.clone())).await;
    let rtt = t.elapsed();
    if let Err(e) = flatten(res) {
        shared.error(format!("{wf}: RUNNING: {e}"));
        let _ = shared.done.send(wf);
        return;
    }
    shared.with(&wf, |rec| rec.running_rtt.push(rtt));
    rep.state = ActionState::Success as i32;
    rep.stopped_at_ms = unix_ms();
    rep.exit_code = Some(0);
    let t = Instant::now();
    if !last {
        shared.with(&wf, |rec| rec.success1_sent = Some(t));
    }
    let res = tokio::time::timeout(WAIT, client.report_action(rep)).await;
    let rtt = t.elapsed();
    match flatten(res) {
        Ok(()) => shared.with(&wf, |rec| rec.success_rtt.push(rtt)),
        Err(e) => {
            shared.error(format!("{wf}: SUCCESS: {e}"));
            let _ = shared.done.send(wf);
            return;
        }
    }
    if last {
        let _ = shared.done.send(wf);
    }
}

fn flatten<T>(r: Result<Result<T, Status>, tokio::time::error::Elapsed>) -> Result<(), String> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err(format!("no answer in {WAIT:?}")),
    }
}

// ---------------------------------------------------------------------------
// Creating workflows: REST for Bellows, a unary call for the baseline.

#[derive(Clone)]
enum Creator {
    Bellows { http: reqwest::Client, api: String },
    Baseline { client: WorkerClient<Channel> },
}

impl Creator {
    /// Creates workflow number `n` for worker `w`; returns its id.
    async fn create(&self, n: usize, w: usize, shared: &Shared) -> Result<String, Error> {
        let sent = Instant::now();
        let id = match self {
            Creator::Bellows { http, api } => {
                let body = serde_json::json!({
                    "template": TEMPLATE,
                    "hardware_map": {"device_1": mac(w)},
                });
                let resp = http
                    .post(format!("{api}/api/v1/workflows"))
                    .json(&body)
                    .send()
                    .await?;
                let status = resp.status();
                let v: serde_json::Value = resp.json().await?;
                if !status.is_success() {
                    return Err(format!("create workflow: {status}: {v}").into());
                }
                v["id"]
                    .as_str()
                    .ok_or("create workflow: no id in the answer")?
                    .to_string()
            }
            Creator::Baseline { client } => {
                let id = format!("wf-{n}");
                shared.with(&id, |rec| rec.create_sent = Some(sent));
                client
                    .clone()
                    .report_action(ActionReport {
                        worker_id: mac(w),
                        r#ref: Some(ActionRef {
                            workflow_id: id.clone(),
                            task: TASK.into(),
                            action: "a1".into(),
                            attempt: 1,
                        }),
                        message: "create".into(),
                        ..Default::default()
                    })
                    .await?;
                id
            }
        };
        let done = Instant::now();
        shared.with(&id, |rec| {
            rec.create_sent = Some(sent);
            rec.create_done = Some(done);
        });
        Ok(id)
    }
}

fn http_client() -> Result<reqwest::Client, Error> {
    // Plain HTTP on loopback only; reqwest is built without a TLS provider
    // of its own, so hand it one it will never use.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(WAIT)
        .build()?)
}

/// Pushes one hardware record per worker and the two-action template.
async fn setup_bellows(http: &reqwest::Client, api: &str, workers: usize) -> Result<(), Error> {
    let sem = Arc::new(Semaphore::new(16));
    let mut set = JoinSet::new();
    for i in 0..workers {
        let (http, url, permit) = (
            http.clone(),
            format!("{api}/api/v1/hardware"),
            sem.clone().acquire_owned().await?,
        );
        set.spawn(async move {
            let _permit = permit;
            let body = serde_json::json!({
                "id": format!("swarm-{i:04}"),
                "network": {"interfaces": [{"dhcp": {"mac": mac(i)}}]},
            });
            let resp = http.post(url).json(&body).send().await?;
            if !resp.status().is_success() {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                return Err::<(), Error>(format!("push hardware {i}: {status}: {text}").into());
            }
            Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let resp = http
        .post(format!("{api}/api/v1/templates"))
        .json(&serde_json::json!({"name": TEMPLATE, "data": TEMPLATE_YAML}))
        .send()
        .await?;
    // 409: already there from an earlier run against the same server.
    if !resp.status().is_success() && resp.status() != reqwest::StatusCode::CONFLICT {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("create template: {status}: {text}").into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Memory.

#[derive(Clone, Copy, Default)]
struct Mem {
    rss_kib: u64,
    pss_kib: u64,
}

fn field_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn memory(pids: &[u32]) -> Mem {
    let mut m = Mem::default();
    for p in pids {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let rollup = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        m.rss_kib += field_kib(&status, "VmRSS:");
        m.pss_kib += field_kib(&rollup, "Pss:");
    }
    m
}

/// CPU time (user + system, every thread) of `pids`, in ms. /proc counts in
/// USER_HZ ticks, which Linux fixes at 100 per second for every
/// architecture it exposes /proc on.
fn cpu_ms(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|stat| {
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10
        })
        .sum()
}

async fn settled_memory(pids: &[u32], settle: Duration) -> Mem {
    tokio::time::sleep(settle).await;
    memory(pids)
}

fn mem_json(m: Mem) -> serde_json::Value {
    serde_json::json!({"rss_kib": m.rss_kib, "pss_kib": m.pss_kib})
}

/// Bytes per worker between two readings.
fn per_worker(from: Mem, to: Mem, n: usize) -> serde_json::Value {
    let d = |a: u64, b: u64| (b as f64 - a as f64) * 1024.0 / n as f64;
    serde_json::json!({
        "rss_bytes": d(from.rss_kib, to.rss_kib).round(),
        "pss_bytes": d(from.pss_kib, to.pss_kib).round(),
    })
}

// ---------------------------------------------------------------------------
// Statistics.

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        let x = v[rank.clamp(1, v.len()) - 1];
        (x * 1000.0).round() / 1000.0
    };
    serde_json::json!({
        "n": v.len(),
        "p50": pct(50.0),
        "p95": pct(95.0),
        "p99": pct(99.0),
        "max": pct(100.0),
    })
}

fn phase_stats(shared: &Shared, ids: &[String], wall: Duration, cpu: u64) -> serde_json::Value {
    let recs = shared.recs.lock().map(|r| r.clone()).unwrap_or_default();
    let (mut dispatch, mut create, mut next, mut running, mut success) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut complete = 0;
    for id in ids {
        let Some(r) = recs.get(id) else { continue };
        if let (Some(s), Some(a)) = (r.create_sent, r.run1) {
            dispatch.push(ms(a.saturating_duration_since(s)));
        }
        if let (Some(s), Some(d)) = (r.create_sent, r.create_done) {
            create.push(ms(d - s));
        }
        if let (Some(s), Some(a)) = (r.success1_sent, r.run2) {
            next.push(ms(a.saturating_duration_since(s)));
        }
        running.extend(r.running_rtt.iter().map(|d| ms(*d)));
        success.extend(r.success_rtt.iter().map(|d| ms(*d)));
        if r.run2.is_some() && r.success_rtt.len() == 2 {
            complete += 1;
        }
    }
    serde_json::json!({
        "workflows": ids.len(),
        "complete": complete,
        "wall_s": (wall.as_secs_f64() * 1000.0).round() / 1000.0,
        "server_cpu_ms": cpu,
        "server_cpu_ms_per_workflow": if ids.is_empty() { 0.0 } else {
            ((cpu as f64 / ids.len() as f64) * 1000.0).round() / 1000.0
        },
        "dispatch_ms": summary(dispatch),
        "create_rtt_ms": summary(create),
        "next_action_ms": summary(next),
        "running_rtt_ms": summary(running),
        "success_rtt_ms": summary(success),
    })
}

/// Waits for `n` workflows to finish.
async fn wait_done(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Result<(), Error> {
    for _ in 0..n {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(_)) => {}
            _ => return Err(format!("a workflow did not finish within {WAIT:?}").into()),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------

async fn run(a: Args) -> Result<(), Error> {
    let n = a.workers;
    let http = http_client()?;
    if a.target == Target::Bellows {
        let t = Instant::now();
        setup_bellows(&http, a.api.as_deref().unwrap_or_default(), n).await?;
        eprintln!(
            "swarm: pushed {n} hardware records and the template in {:.1?}",
            t.elapsed()
        );
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        recs: Mutex::new(HashMap::new()),
        done: done_tx,
        errors: Mutex::new(Vec::new()),
        ready: AtomicUsize::new(0),
    });
    let mem0 = settled_memory(&a.pids, a.settle).await;

    // N connections, `concurrency` handshakes at a time.
    let ep = endpoint(&a.grpc)?;
    let t = Instant::now();
    let sem = Arc::new(Semaphore::new(a.concurrency));
    let mut set = JoinSet::new();
    for i in 0..n {
        let (ep, permit) = (ep.clone(), sem.clone().acquire_owned().await?);
        set.spawn(async move {
            let _permit = permit;
            (i, ep.connect().await)
        });
    }
    let mut channels: Vec<Option<Channel>> = vec![None; n];
    while let Some(r) = set.join_next().await {
        let (i, c) = r?;
        channels[i] = Some(c.map_err(|e| format!("connection {i}: {e:?}"))?);
    }
    let connect_s = t.elapsed().as_secs_f64();
    eprintln!("swarm: {n} connections in {connect_s:.2} s");
    let mem_conn = settled_memory(&a.pids, a.settle).await;

    let mut out = serde_json::json!({
        "target": a.target.name(),
        "workers": n,
        "connect_s": (connect_s * 1000.0).round() / 1000.0,
        "memory": {"idle": mem_json(mem0), "connected": mem_json(mem_conn)},
        "per_connection": per_worker(mem0, mem_conn, n),
    });
    if a.target == Target::ConnectOnly {
        return finish(&a, out, &shared, channels);
    }

    // Subscribe every worker on its connection, `concurrency` at a time.
    let t = Instant::now();
    for (i, c) in channels.iter().enumerate() {
        while i >= shared.ready.load(Ordering::SeqCst) + a.concurrency {
            if t.elapsed() > WAIT {
                return Err("workers are not getting their Hello".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if let Some(c) = c {
            tokio::spawn(worker(i, c.clone(), shared.clone()));
        }
    }
    while shared.ready.load(Ordering::SeqCst) < n {
        if t.elapsed() > WAIT || shared.errors.lock().map(|e| !e.is_empty()).unwrap_or(true) {
            return Err(format!(
                "only {} of {n} workers subscribed",
                shared.ready.load(Ordering::SeqCst)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let subscribe_s = t.elapsed().as_secs_f64();
    eprintln!("swarm: {n} workers subscribed in {subscribe_s:.2} s");
    let mem_sub = settled_memory(&a.pids, a.settle).await;
    out["subscribe_s"] = ((subscribe_s * 1000.0).round() / 1000.0).into();
    out["memory"]["subscribed"] = mem_json(mem_sub);
    out["per_worker"] = per_worker(mem0, mem_sub, n);
    out["per_stream"] = per_worker(mem_conn, mem_sub, n);

    // Idle: keep-alives only.
    if !a.idle.is_zero() {
        let cpu0 = cpu_ms(&a.pids);
        tokio::time::sleep(a.idle).await;
        let cpu = cpu_ms(&a.pids).saturating_sub(cpu0);
        out["idle"] = serde_json::json!({
            "secs": a.idle.as_secs(),
            "server_cpu_ms": cpu,
            "server_cpu_ms_per_s": ((cpu as f64 / a.idle.as_secs_f64()) * 100.0).round() / 100.0,
        });
        eprintln!("swarm: idle {:?}: server CPU {cpu} ms", a.idle);
    }

    let creator = match a.target {
        Target::Bellows => Creator::Bellows {
            http: http.clone(),
            api: a.api.clone().unwrap_or_default(),
        },
        _ => Creator::Baseline {
            client: WorkerClient::new(ep.connect().await?),
        },
    };
    let mut seq_no = 0usize;
    // Warm-up, not counted: caches, pools, the REST connection.
    for _ in 0..a.warmup {
        creator.create(seq_no, seq_no % n, &shared).await?;
        seq_no += 1;
        wait_done(&mut done_rx, 1).await?;
    }

    // One at a time.
    let (t, cpu0) = (Instant::now(), cpu_ms(&a.pids));
    let mut seq_ids = Vec::with_capacity(a.workflows);
    for _ in 0..a.workflows {
        seq_ids.push(creator.create(seq_no, seq_no % n, &shared).await?);
        seq_no += 1;
        wait_done(&mut done_rx, 1).await?;
    }
    let cpu = cpu_ms(&a.pids).saturating_sub(cpu0);
    out["sequential"] = phase_stats(&shared, &seq_ids, t.elapsed(), cpu);
    eprintln!(
        "swarm: {} workflows one at a time in {:.1?}",
        a.workflows,
        t.elapsed()
    );

    // Bursts of `burst` created at once, for distinct workers.
    let (t, cpu0) = (Instant::now(), cpu_ms(&a.pids));
    let mut burst_ids = Vec::new();
    let rounds = a.workflows.div_ceil(a.burst);
    for _ in 0..rounds {
        let mut set = JoinSet::new();
        for _ in 0..a.burst {
            let (c, s, k) = (creator.clone(), shared.clone(), seq_no);
            seq_no += 1;
            set.spawn(async move { c.create(k, k % n, &s).await });
        }
        let mut created = 0;
        while let Some(r) = set.join_next().await {
            burst_ids.push(r??);
            created += 1;
        }
        wait_done(&mut done_rx, created).await?;
    }
    let cpu = cpu_ms(&a.pids).saturating_sub(cpu0);
    out["burst"] = phase_stats(&shared, &burst_ids, t.elapsed(), cpu);
    out["burst"]["size"] = a.burst.into();
    eprintln!(
        "swarm: {rounds} bursts of {} in {:.1?}",
        a.burst,
        t.elapsed()
    );

    let connected = shared.ready.load(Ordering::SeqCst);
    let mem_after = settled_memory(&a.pids, a.settle).await;
    out["memory"]["after"] = mem_json(mem_after);
    out["workers_still_subscribed"] = connected.into();
    finish(&a, out, &shared, channels)
}

fn finish(
    a: &Args,
    mut out: serde_json::Value,
    shared: &Shared,
    channels: Vec<Option<Channel>>,
) -> Result<(), Error> {
    let errors = shared.errors.lock().map(|e| e.len()).unwrap_or(0);
    out["errors"] = errors.into();
    let text = serde_json::to_string(&out)?;
    println!("{text}");
    if let Some(path) = &a.json {
        std::fs::write(path, format!("{text}\n"))?;
    }
    drop(channels);
    if errors > 0 {
        return Err(format!("{errors} errors").into());
    }
    Ok(())
}
