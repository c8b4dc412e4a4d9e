//! Discovery: a machine nobody registered (booted with
//! `bellows.discovery=1`) reports its whole inventory to the server and
//! asks, every few seconds, whether it has been enrolled; once it has, it
//! reboots, and on its next boot it is a known machine that gets its
//! workflow the ordinary way.
//!
//! It talks to the same servers, with the same credential, TLS trust and
//! fail-over as the agent ([`crate::agent`]), and reboots through the
//! agent's [`PowerMode`](crate::agent::PowerMode). Facts are collected again for every report, so
//! what was learnt in between is sent: LLDP neighbours are heard by a
//! listener thread ([`crate::lldp`]) that runs for as long as discovery
//! does (switches send every 30 s, and a port may come up late), so the
//! first report is not held up waiting for them.

use std::time::{Duration, Instant};

use bellows_rpc::v1::{DiscoverReply, DiscoverRequest, Facts};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::agent::{
    AgentConfig, AgentError, CALL_TIMEOUT, Exit, Servers, jitter, take_power_action,
};
use crate::lldp::{Listener, Neighbours};
use crate::runtime::AfterSuccess;

/// The first wait after a failed report; it doubles up to
/// [`AgentConfig::max_backoff`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The wait between reports when the server does not say.
const DEFAULT_POLL: Duration = Duration::from_secs(10);
/// The longest wait between reports, whatever the server says.
const MAX_POLL: Duration = Duration::from_secs(300);
/// After a reboot command (or system call) returned without the machine
/// going down: how long to wait for the shutdown's SIGTERM before
/// reporting (and so rebooting) again.
const REBOOT_GRACE: Duration = Duration::from_secs(60);
/// How often the LLDP thread looks at its stop token.
const LLDP_TICK: Duration = Duration::from_secs(1);

/// The discovery loop of an unknown machine.
pub struct Discovery {
    config: AgentConfig,
    servers: Servers,
    lldp: bool,
}

impl Discovery {
    /// Discovery against `config`'s servers, with its credential, trust,
    /// power mode and longest back-off (its work directory and
    /// `send_facts` are not used: discovery always sends facts). Fails as
    /// [`crate::agent::Agent::new`] does on a bad URL or token.
    pub fn new(config: AgentConfig) -> Result<Discovery, AgentError> {
        Ok(Discovery {
            servers: Servers::connect(&config)?,
            config,
            lldp: true,
        })
    }

    /// Whether to listen for LLDP (on by default): off for a test, or a
    /// host where a raw socket and opening its NICs to the LLDP group
    /// ([`crate::lldp`]) are not wanted.
    pub fn listen_lldp(mut self, on: bool) -> Discovery {
        self.lldp = on;
        self
    }

    /// Reports until the server says the machine is enrolled, then
    /// reboots: returns [`Exit::Reboot`] in
    /// [`PowerMode::Exit`](crate::agent::PowerMode::Exit), or
    /// [`Exit::Stopped`] once `stop` is cancelled. Never returns because
    /// the server is away or refuses (it backs off and tries again).
    pub async fn run(self, stop: CancellationToken) -> Exit {
        let lldp = self.lldp.then(|| LldpThread::start(stop.child_token()));
        let heard = lldp.as_ref().map(|l| l.heard.clone()).unwrap_or_default();
        let exit = self.rounds(&stop, &heard).await;
        if let Some(lldp) = lldp {
            lldp.finish().await;
        }
        exit
    }

    async fn rounds(&self, stop: &CancellationToken, heard: &Neighbours) -> Exit {
        let mut backoff = FIRST_BACKOFF.min(self.config.max_backoff);
        let mut last_message: Option<String> = None;
        tracing::info!(
            server = %self.servers.url(),
            worker = %self.config.worker_id,
            "discovery: reporting this machine's inventory until it is enrolled"
        );
        loop {
            let facts = tokio::select! {
                _ = stop.cancelled() => return Exit::Stopped,
                facts = collect(heard) => facts,
            };
            let reply = tokio::select! {
                _ = stop.cancelled() => return Exit::Stopped,
                reply = self.report(facts) => reply,
            };
            let wait = match reply {
                Ok(reply) if reply.enrolled => {
                    tracing::info!(
                        hardware = %reply.hardware_id,
                        "enrolled{}; rebooting into its workflow",
                        colon(&reply.message)
                    );
                    if let Some(exit) =
                        take_power_action(&self.config.power, AfterSuccess::Reboot).await
                    {
                        return exit;
                    }
                    // The shutdown is under way (its SIGTERM will stop
                    // this loop) or the reboot failed (logged): report
                    // again later, which reboots again if still enrolled.
                    REBOOT_GRACE
                }
                Ok(reply) => {
                    backoff = FIRST_BACKOFF.min(self.config.max_backoff);
                    let wait = poll_interval(reply.poll_seconds);
                    if last_message.as_deref() != Some(reply.message.as_str()) {
                        tracing::info!(
                            hardware = %reply.hardware_id,
                            "not enrolled yet{}; reporting again every {} s",
                            colon(&reply.message),
                            wait.as_secs()
                        );
                        last_message = Some(reply.message);
                    } else {
                        tracing::debug!("not enrolled yet; next report in {wait:?}");
                    }
                    wait
                }
                Err(status) => {
                    let why = match status.code() {
                        Code::Unimplemented => "does not take discovery reports",
                        Code::Unauthenticated | Code::PermissionDenied => {
                            "refused this worker's credential"
                        }
                        _ => "did not take the report",
                    };
                    tracing::warn!(
                        "server {} {why} ({}: {}); retrying in {:?}",
                        self.servers.url(),
                        status.code(),
                        status.message(),
                        backoff
                    );
                    self.servers.fail_over();
                    last_message = None;
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.config.max_backoff.max(FIRST_BACKOFF));
                    wait
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return Exit::Stopped,
                _ = tokio::time::sleep(jitter(wait)) => {}
            }
        }
    }

    /// One `Discover` call to the current server.
    async fn report(&self, facts: Facts) -> Result<DiscoverReply, tonic::Status> {
        let mut request = tonic::Request::new(DiscoverRequest {
            worker_id: self.config.worker_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            facts: Some(facts),
        });
        request.set_timeout(CALL_TIMEOUT);
        Ok(self.servers.client().discover(request).await?.into_inner())
    }
}

/// The wait between reports the server asks for: `poll_seconds`, within
/// 1 s to 5 min; 10 s when it says 0 (nothing).
pub fn poll_interval(poll_seconds: u32) -> Duration {
    if poll_seconds == 0 {
        return DEFAULT_POLL;
    }
    Duration::from_secs(u64::from(poll_seconds)).clamp(Duration::from_secs(1), MAX_POLL)
}

/// This machine's facts for a report: the files read off the blocking
/// threads, the BMC's address, and the LLDP neighbours heard so far.
async fn collect(heard: &Neighbours) -> Facts {
    let mut facts = tokio::task::spawn_blocking(crate::facts::collect)
        .await
        .unwrap_or_default();
    facts.bmc_address = crate::facts::bmc_address().await;
    crate::facts::merge_lldp(&mut facts, &heard.snapshot());
    facts
}

/// ": message", or nothing for an empty one.
fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The LLDP listener on a thread of its own (its socket blocks), filling
/// [`Neighbours`] until its token is cancelled.
struct LldpThread {
    heard: Neighbours,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl LldpThread {
    fn start(stop: CancellationToken) -> LldpThread {
        let heard = Neighbours::default();
        let thread = {
            let (heard, stop) = (heard.clone(), stop.clone());
            std::thread::spawn(move || listen(&heard, &stop))
        };
        LldpThread {
            heard,
            stop,
            thread,
        }
    }

    /// Stops the thread and waits (up to 5 s) for it, so the group
    /// addresses it added are removed before the process exits.
    async fn finish(self) {
        self.stop.cancel();
        let thread = self.thread;
        let join = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(Duration::from_secs(5), join)
            .await
            .is_err()
        {
            tracing::debug!("the LLDP listener did not stop in 5 s");
        }
    }
}

/// The listening thread's loop: a failure to open is logged once (not
/// root, no `AF_PACKET`), and discovery carries on without LLDP.
fn listen(heard: &Neighbours, stop: &CancellationToken) {
    let mut listener = match Listener::open() {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!("not listening for LLDP: {e}");
            return;
        }
    };
    while !stop.is_cancelled() {
        match listener.next(Instant::now() + LLDP_TICK) {
            Ok(Some(h)) => {
                tracing::debug!(
                    interface = %h.interface,
                    switch = %h.neighbour.system_name,
                    port = %h.neighbour.port_id,
                    "LLDP neighbour"
                );
                heard.record(h);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("LLDP listener failed: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_intervals() {
        assert_eq!(poll_interval(0), Duration::from_secs(10));
        assert_eq!(poll_interval(1), Duration::from_secs(1));
        assert_eq!(poll_interval(30), Duration::from_secs(30));
        assert_eq!(poll_interval(300), Duration::from_secs(300));
        assert_eq!(poll_interval(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn messages() {
        assert_eq!(colon(""), "");
        assert_eq!(colon("waiting for a rule"), ": waiting for a rule");
    }
}
