//! The in-memory OS's worker, as far as the server can tell: it dials the
//! first `bellows.api=` URL from the machine's address, pins the CA of
//! `bellows.ca=`, presents `bellows.token=`, subscribes, and answers each
//! action it is given with RUNNING then SUCCESS (nothing runs).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bellows_model::boot::KernelArgs;
use bellows_rpc::WorkerClient;
use bellows_rpc::v1::{ActionReport, ActionState, Cpu, Facts, Nic, SubscribeRequest, instruction};
use bellows_worker::tls::{Dialer, ServerTrust};
use tonic::transport::Endpoint;

use crate::Error;

/// When the worker's steps happened.
pub struct Run {
    /// Connected and greeted (Hello received).
    pub hello: Instant,
}

/// Connects as the worker of `mac` and reports `actions` actions done.
pub async fn run(
    cmdline: &str,
    local: Ipv4Addr,
    actions: usize,
    wait: Duration,
) -> Result<Run, Error> {
    let args = KernelArgs::parse(cmdline);
    let api = args
        .api
        .as_deref()
        .and_then(|a| a.split(',').next())
        .ok_or_else(|| Error::msg("no bellows.api= on the kernel line"))?
        .to_string();
    let worker_id = args
        .worker_id
        .clone()
        .ok_or_else(|| Error::msg("no bellows.worker_id= on the kernel line"))?;
    let trust = match &args.ca {
        Some(pin) => ServerTrust::pinned(pin).map_err(|e| Error::msg(e.to_string()))?,
        None => ServerTrust::System,
    };
    let endpoint = Endpoint::from_shared(api.clone())
        .map_err(|e| Error::msg(format!("{api}: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let channel = Dialer::new(endpoint, &trust)
        .map_err(|e| Error::msg(e.to_string()))?
        .from_address(IpAddr::V4(local))
        .connect()
        .await
        .map_err(|e| Error::msg(format!("connect {api}: {e}")))?;
    let bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = match &args.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| Error::msg("bellows.token= cannot go in a header"))?,
        ),
        None => None,
    };
    let mut client = WorkerClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(b) = &bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        Ok(req)
    });
    let mut stream = client
        .subscribe(SubscribeRequest {
            worker_id: worker_id.clone(),
            version: "storm".into(),
            facts: Some(facts(&worker_id)),
            running: None,
        })
        .await
        .map_err(|e| Error::msg(format!("subscribe: {}", e.message())))?
        .into_inner();
    let mut hello = None;
    let mut done = 0;
    let deadline = tokio::time::Instant::now() + wait;
    while done < actions {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .map_err(|_| Error::msg(format!("{done} of {actions} actions after {wait:?}")))?
            .map_err(|e| Error::msg(format!("stream: {}", e.message())))?
            .ok_or_else(|| Error::msg("the server ended the stream"))?;
        match message.kind {
            Some(instruction::Kind::Hello(_)) => hello = hello.or(Some(Instant::now())),
            Some(instruction::Kind::Run(assignment)) => {
                let r = assignment
                    .r#ref
                    .ok_or_else(|| Error::msg("an assignment without its action"))?;
                let now = unix_ms();
                let mut report = ActionReport {
                    worker_id: worker_id.clone(),
                    r#ref: Some(r),
                    state: ActionState::Running as i32,
                    started_at_ms: now,
                    ..Default::default()
                };
                client
                    .report_action(report.clone())
                    .await
                    .map_err(|e| Error::msg(format!("report RUNNING: {}", e.message())))?;
                report.state = ActionState::Success as i32;
                report.stopped_at_ms = unix_ms();
                report.exit_code = Some(0);
                client
                    .report_action(report)
                    .await
                    .map_err(|e| Error::msg(format!("report SUCCESS: {}", e.message())))?;
                done += 1;
            }
            _ => {} // keep-alive, cancel
        }
    }
    let hello = hello.ok_or_else(|| Error::msg("actions came before Hello"))?;
    Ok(Run { hello })
}

fn facts(mac: &str) -> Facts {
    Facts {
        cpu: Some(Cpu {
            model: "Storm CPU".into(),
            threads: 16,
            sockets: 1,
        }),
        memory_bytes: 32 << 30,
        disks: Vec::new(),
        nics: vec![Nic {
            name: "eth0".into(),
            mac: mac.to_string(),
            driver: "virtio_net".into(),
            speed_mbps: 10_000,
            link_up: true,
            addresses: Vec::new(),
            lldp: None,
        }],
        hostname: String::new(),
        kernel: "6.1.0".into(),
        architecture: "x86_64".into(),
        extra_json: String::new(),
        bmc_address: String::new(),
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
