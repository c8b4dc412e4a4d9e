//! Counters for the DHCP service: what operators and tests look at to see
//! whether packets arrive and why they are not answered.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::netboot::BootPlan;
use crate::responder::{Decision, DropReason};
use crate::wire::MessageType;

/// The reply types counted apart, as metric label values.
pub const REPLY_TYPES: [&str; 3] = ["offer", "ack", "nak"];

/// What a reply told the client to boot, as metric label values: a binary
/// by TFTP (firmware), a binary by URL (UEFI HTTP boot), the iPXE script
/// (iPXE), or nothing (addressing only).
pub const REPLY_BOOTS: [&str; 4] = ["tftp", "http", "script", "none"];

/// Live counters, shared between the socket loop and whoever reports them.
#[derive(Debug, Default)]
pub struct DhcpStats {
    received: AtomicU64,
    replied: AtomicU64,
    naks: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_unknown: AtomicU64,
    dropped_other: AtomicU64,
    send_errors: AtomicU64,
    /// Replies by [`REPLY_TYPES`] × [`REPLY_BOOTS`].
    replies_by_kind: [[AtomicU64; REPLY_BOOTS.len()]; REPLY_TYPES.len()],
    /// Unanswered requests by [`DropReason::KINDS`].
    drops_by_reason: [AtomicU64; DropReason::KINDS.len()],
}

/// The counters by label, for metrics: which replies went out and why the
/// others did not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsByKind {
    /// (reply type, boot plan, count) for every pair, zeros included.
    pub replies: Vec<(&'static str, &'static str, u64)>,
    /// (drop reason, count) for every reason, zeros included.
    pub drops: Vec<(&'static str, u64)>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Datagrams read from the sockets.
    pub received: u64,
    /// Replies sent (NAKs included).
    pub replied: u64,
    /// NAKs sent.
    pub naks: u64,
    /// Datagrams that were not readable DHCP.
    pub dropped_malformed: u64,
    /// Requests from MACs with no hardware record.
    pub dropped_unknown: u64,
    /// Requests left unanswered for any other reason (proxy mode and a
    /// plain client, another server chosen, RELEASE …).
    pub dropped_other: u64,
    /// Replies the kernel refused to send.
    pub send_errors: u64,
}

impl DhcpStats {
    /// The current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            received: get(&self.received),
            replied: get(&self.replied),
            naks: get(&self.naks),
            dropped_malformed: get(&self.dropped_malformed),
            dropped_unknown: get(&self.dropped_unknown),
            dropped_other: get(&self.dropped_other),
            send_errors: get(&self.send_errors),
        }
    }

    /// The replies by type and boot plan, and the drops by reason.
    pub fn by_kind(&self) -> StatsByKind {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut replies = Vec::with_capacity(REPLY_TYPES.len() * REPLY_BOOTS.len());
        for (kind, row) in REPLY_TYPES.iter().zip(&self.replies_by_kind) {
            for (boot, count) in REPLY_BOOTS.iter().zip(row) {
                replies.push((*kind, *boot, get(count)));
            }
        }
        let drops = DropReason::KINDS
            .iter()
            .zip(&self.drops_by_reason)
            .map(|(reason, count)| (*reason, get(count)))
            .collect();
        StatsByKind { replies, drops }
    }

    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a decision whose reply (if any) was sent.
    pub(crate) fn decided(&self, decision: &Decision) {
        if let Decision::Drop(reason) = decision
            && let Some(count) = self.drops_by_reason.get(reason.kind_index())
        {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let counter = match decision {
            Decision::Reply(reply) => {
                let kind = match reply.message_type {
                    MessageType::Offer => 0,
                    MessageType::Nak => {
                        self.naks.fetch_add(1, Ordering::Relaxed);
                        2
                    }
                    _ => 1,
                };
                let boot = match &reply.boot {
                    Some(BootPlan::Tftp { .. }) => 0,
                    Some(BootPlan::Http { .. }) => 1,
                    Some(BootPlan::Script { .. }) => 2,
                    Some(BootPlan::Nothing(_)) | None => 3,
                };
                if let Some(count) = self.replies_by_kind.get(kind).and_then(|r| r.get(boot)) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                &self.replied
            }
            Decision::Drop(DropReason::Malformed(_)) => &self.dropped_malformed,
            Decision::Drop(DropReason::UnknownClient(_)) => &self.dropped_unknown,
            Decision::Drop(_) => &self.dropped_other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn send_error(&self) {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A datagram too large for the receive buffer counts as malformed.
    pub(crate) fn malformed(&self) {
        self.dropped_malformed.fetch_add(1, Ordering::Relaxed);
        if let Some(count) = self.drops_by_reason.get(DropReason::MALFORMED_INDEX) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}
