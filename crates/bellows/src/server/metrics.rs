//! The server's metrics registry (`GET /metrics` on the API listener):
//! the API's instruments, the store's commit latency, and the counters the
//! UDP services and the worker hub keep themselves, read at each scrape.
//! The protocol crates keep plain atomic counters and know nothing of
//! Prometheus; this file names them.

use std::fmt;
use std::sync::Arc;

use bellows_api::metrics::{ApiMetrics, Metrics};
use bellows_api::worker::WorkerHub;
use bellows_dhcp::DhcpStats;
use bellows_store::SqlStore;
use bellows_syslog::SyslogStats;
use bellows_tftp::StatsHandle;

use super::timeline::TimelineRecorder;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// What the server's services count, for the registry.
pub struct Sources {
    /// The DHCP server's counters, when it runs.
    pub dhcp: Option<Arc<DhcpStats>>,
    /// The TFTP server's counters, when it runs.
    pub tftp: Option<StatsHandle>,
    /// The syslog receiver's counters, when it runs.
    pub syslog: Option<Arc<SyslogStats>>,
    /// Connected workers.
    pub hub: Arc<WorkerHub>,
    /// The boot timeline's writer.
    pub timeline: Arc<TimelineRecorder>,
}

/// The registry `/metrics` serves, with `api`'s instruments in it.
pub fn registry(api: &ApiMetrics, store: &SqlStore, sources: Sources) -> Arc<Metrics> {
    let mut registry = Registry::default();
    api.register(&mut registry);
    registry.register(
        "bellows_store_commit_seconds",
        "Time each write that changes records takes to commit (SQLite's flush, PostgreSQL's round trip)",
        store.commit_latency(),
    );
    registry.register_collector(Box::new(sources));
    Arc::new(Metrics::new(api.clone(), registry))
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("dhcp", &self.dhcp.is_some())
            .field("tftp", &self.tftp.is_some())
            .field("syslog", &self.syslog.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplyLabels {
    message_type: &'static str,
    boot: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        if let Some(dhcp) = &self.dhcp {
            let total = dhcp.snapshot();
            let by_kind = dhcp.by_kind();
            counter(
                e,
                "bellows_dhcp_received",
                "DHCP datagrams received",
                total.received,
            )?;
            counters(
                e,
                "bellows_dhcp_replies",
                "DHCP replies sent, by type (offer, ack, nak) and what they boot (tftp: firmware, http: UEFI HTTP boot, script: iPXE, none)",
                by_kind
                    .replies
                    .iter()
                    .map(|&(message_type, boot, n)| (ReplyLabels { message_type, boot }, n)),
            )?;
            counters(
                e,
                "bellows_dhcp_dropped",
                "DHCP requests not answered, by reason",
                by_kind
                    .drops
                    .iter()
                    .map(|&(reason, n)| (ReasonLabels { reason }, n)),
            )?;
            counter(
                e,
                "bellows_dhcp_send_errors",
                "DHCP replies the kernel refused to send",
                total.send_errors,
            )?;
        }
        if let Some(tftp) = &self.tftp {
            let s = tftp.snapshot();
            counter(
                e,
                "bellows_tftp_requests",
                "TFTP read and write requests received",
                s.requests,
            )?;
            counters(
                e,
                "bellows_tftp_transfers",
                "TFTP transfers ended, by outcome (declined: the client only asked the size)",
                [
                    ("completed", s.completed),
                    ("declined", s.declined),
                    ("failed", s.failed),
                ]
                .map(|(outcome, n)| (OutcomeLabels { outcome }, n)),
            )?;
            counters(
                e,
                "bellows_tftp_refused",
                "TFTP requests refused for a limit (part of the failed transfers): busy is the server's limit, client_busy one address's",
                [("busy", s.busy), ("client_busy", s.client_busy)]
                    .map(|(reason, n)| (ReasonLabels { reason }, n)),
            )?;
            counter(
                e,
                "bellows_tftp_duplicate_requests",
                "TFTP read requests a client repeated while their transfer ran (retransmissions; ignored)",
                s.duplicates,
            )?;
            counter(
                e,
                "bellows_tftp_malformed",
                "Datagrams on the TFTP port that were not a valid request",
                s.malformed,
            )?;
            counter(
                e,
                "bellows_tftp_data_bytes",
                "TFTP DATA payload bytes sent, retransmissions included",
                s.data_bytes_sent,
            )?;
            gauge(
                e,
                "bellows_tftp_active_transfers",
                "TFTP transfers running now",
                s.active,
            )?;
        }
        if let Some(syslog) = &self.syslog {
            let get =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            counters(
                e,
                "bellows_syslog_messages",
                "Syslog datagrams from booting machines, by outcome (lost: the store refused the write)",
                [
                    ("stored", get(&syslog.stored)),
                    ("malformed", get(&syslog.malformed)),
                    ("lost", get(&syslog.lost)),
                ]
                .map(|(outcome, n)| (OutcomeLabels { outcome }, n)),
            )?;
        }
        counter(
            e,
            "bellows_timeline_dropped",
            "Boot-timeline steps dropped because the writer's queue was full",
            self.timeline.dropped(),
        )?;
        gauge(
            e,
            "bellows_connected_workers",
            "Workers holding an instruction stream now",
            u64::try_from(self.hub.connected()).unwrap_or(u64::MAX),
        )?;
        Ok(())
    }
}
