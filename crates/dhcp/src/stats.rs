//! Counters for the DHCP service: what operators and tests look at to see
//! whether packets arrive and why they are not answered.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::responder::{Decision, DropReason};
use crate::wire::MessageType;

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

    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a decision whose reply (if any) was sent.
    pub(crate) fn decided(&self, decision: &Decision) {
        let counter = match decision {
            Decision::Reply(reply) => {
                if reply.message_type == MessageType::Nak {
                    self.naks.fetch_add(1, Ordering::Relaxed);
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
    }
}
