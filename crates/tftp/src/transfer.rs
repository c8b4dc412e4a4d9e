//! The sending side of one read transfer, as a state machine over datagrams
//! and time. No IO: the caller feeds it what arrived and when, and performs
//! the [`Transmit`]s it returns; DATA is described by file offset so the
//! caller reads the bytes (and reads them again for a retransmission).
//!
//! Windowing follows RFC 7440: a window of blocks goes out, and an ACK of
//! block `n` starts the next window at `n + 1` (which also resends anything
//! after a gap). Duplicate and stale ACKs are ignored, which avoids the
//! Sorcerer's Apprentice syndrome; lost packets are recovered by the timer,
//! which resends from the last acknowledged block with exponential backoff.
//! Block numbers roll over from 65535 to 0, as tftp-hpa and atftp expect.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::options::{Negotiated, TransferLimits};
use crate::packet::{ErrorCode, Packet, TftpOption, error_packet};

/// Something the caller must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A DATA packet to the peer: block number `block`, carrying `len` bytes
    /// of the file from `offset`.
    Data {
        /// Block number on the wire.
        block: u16,
        /// Offset in the file of the first payload byte.
        offset: u64,
        /// Payload length (shorter than the block size only for the last block).
        len: usize,
    },
    /// A ready-made packet (OACK or ERROR) to `to`, which is not always the
    /// peer: a stray sender gets "unknown transfer ID".
    Packet {
        /// Destination.
        to: SocketAddr,
        /// The encoded packet.
        bytes: Vec<u8>,
    },
}

/// How a transfer ended, for logs, counters and the transfer hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The client acknowledged the last block.
    Completed {
        /// File bytes delivered.
        bytes: u64,
    },
    /// The client answered the OACK with error 8, which is how UEFI firmware
    /// ends its size probe before the real download: not a failure.
    OptionsDeclined {
        /// The client's message.
        message: String,
    },
    /// The client sent an ERROR mid-transfer.
    ClientError {
        /// The client's code.
        code: ErrorCode,
        /// The client's message.
        message: String,
    },
    /// No progress after the maximum number of retransmissions.
    TimedOut {
        /// Retransmissions made before giving up.
        retries: u32,
    },
    /// The request was refused before any data moved (missing file, access
    /// violation, unsupported mode, write request, server busy).
    Refused {
        /// Code sent to the client.
        code: ErrorCode,
        /// Why, for the operator (the client gets a generic message).
        reason: String,
    },
    /// The server ended the transfer (shutdown, read error).
    Aborted {
        /// Why.
        reason: String,
    },
}

impl TransferOutcome {
    /// True only for a delivered file.
    pub fn is_completed(&self) -> bool {
        matches!(self, Self::Completed { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// OACK sent, waiting for ACK 0.
    AwaitingOptionAck,
    /// DATA flowing.
    Sending,
    /// Over; see `outcome`.
    Finished,
}

/// One read transfer: what to send next, and when to retransmit.
#[derive(Debug)]
pub struct ReadTransfer {
    peer: SocketAddr,
    file_size: u64,
    block_size: u16,
    window_size: u16,
    /// Index (1-based, never wrapping) of the final block; it is shorter than
    /// `block_size`, possibly empty.
    last_block: u64,
    phase: Phase,
    /// Highest block index the client has acknowledged (0: none yet).
    acked: u64,
    /// Highest block index sent so far.
    sent_upto: u64,
    option_ack: Option<Vec<u8>>,
    initial_interval: Duration,
    interval: Duration,
    max_interval: Duration,
    max_retries: u32,
    retries: u32,
    /// When the transfer gives up without progress, whatever retries are
    /// left (`None`: never, the limit being beyond the clock's range).
    stall_deadline: Option<Instant>,
    max_stall: Duration,
    deadline: Option<Instant>,
    outcome: Option<TransferOutcome>,
}

impl ReadTransfer {
    /// Starts sending `file_size` bytes to `peer` with the negotiated
    /// parameters, returning the transfer and its first packets (an OACK, or
    /// the first window of DATA).
    pub fn start(
        peer: SocketAddr,
        file_size: u64,
        negotiated: &Negotiated,
        limits: &TransferLimits,
        now: Instant,
    ) -> (Self, Vec<Transmit>) {
        let block_size = negotiated.block_size.max(1);
        let option_ack = negotiated.needs_option_ack().then(|| {
            let options = negotiated
                .accepted
                .iter()
                .map(|(name, value)| TftpOption { name, value })
                .collect();
            // Names come from a decoded request and values are digits, so
            // neither holds a NUL; an empty OACK is the safe fallback.
            Packet::OptionAck { options }
                .to_bytes()
                .unwrap_or_else(|_| vec![0, 6])
        });
        let initial_interval = negotiated.timeout.max(Duration::from_millis(1));
        let mut transfer = Self {
            peer,
            file_size,
            block_size,
            window_size: negotiated.window_size.max(1),
            last_block: file_size / u64::from(block_size) + 1,
            phase: Phase::Sending,
            acked: 0,
            sent_upto: 0,
            option_ack,
            initial_interval,
            interval: initial_interval,
            max_interval: limits.max_retransmit_interval.max(initial_interval),
            max_retries: limits.max_retries,
            retries: 0,
            stall_deadline: now.checked_add(limits.max_stall),
            max_stall: limits.max_stall,
            deadline: None,
            outcome: None,
        };
        let first = if transfer.option_ack.is_some() {
            transfer.phase = Phase::AwaitingOptionAck;
            transfer.send_option_ack(now)
        } else {
            transfer.send_window(now)
        };
        (transfer, first)
    }

    /// The client's address and port (its transfer ID).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Negotiated DATA payload size.
    pub fn block_size(&self) -> u16 {
        self.block_size
    }

    /// Negotiated window size.
    pub fn window_size(&self) -> u16 {
        self.window_size
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called;
    /// `None` once finished.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True once the transfer has ended; see [`outcome`](Self::outcome).
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// How the transfer ended, once it has.
    pub fn outcome(&self) -> Option<&TransferOutcome> {
        self.outcome.as_ref()
    }

    /// Feeds one datagram received on the transfer's socket from `from`.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Vec<Transmit> {
        let packet = Packet::decode(datagram);
        if from != self.peer {
            // RFC 1350: tell the stray sender, leave the transfer alone. An
            // ERROR is never answered (two servers could ping-pong forever),
            // nor is garbage (no reflection of junk).
            return match packet {
                Ok(Packet::Error { .. }) | Err(_) => Vec::new(),
                Ok(_) => vec![Transmit::Packet {
                    to: from,
                    bytes: error_packet(ErrorCode::UnknownTransferId, "Unknown transfer ID"),
                }],
            };
        }
        if self.is_finished() {
            return Vec::new();
        }
        match packet {
            Ok(Packet::Ack { block }) => self.handle_ack(block, now),
            Ok(Packet::Error { code, message }) => {
                let message = message.into_owned();
                let outcome = if self.phase == Phase::AwaitingOptionAck
                    && code == ErrorCode::OptionsRefused
                {
                    TransferOutcome::OptionsDeclined { message }
                } else {
                    TransferOutcome::ClientError { code, message }
                };
                self.finish(outcome);
                Vec::new()
            }
            // Anything else from the peer (garbage, DATA, a repeated request
            // reaching this port) is ignored: the timer recovers.
            _ => Vec::new(),
        }
    }

    /// Called at (or after) [`deadline`](Self::deadline): retransmits from the
    /// last acknowledged block with a doubled interval, or gives up. Early
    /// calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Transmit> {
        match self.deadline {
            Some(deadline) if now >= deadline && !self.is_finished() => {}
            _ => return Vec::new(),
        }
        let stalled = self.stall_deadline.is_some_and(|limit| now >= limit);
        if self.retries >= self.max_retries || stalled {
            let retries = self.retries;
            self.finish(TransferOutcome::TimedOut { retries });
            return vec![Transmit::Packet {
                to: self.peer,
                bytes: error_packet(ErrorCode::NotDefined, "Transfer timed out"),
            }];
        }
        self.retries += 1;
        self.interval = (self.interval * 2).min(self.max_interval);
        match self.phase {
            Phase::AwaitingOptionAck => self.send_option_ack(now),
            Phase::Sending => self.send_window(now),
            Phase::Finished => Vec::new(),
        }
    }

    /// Ends the transfer from the server side (shutdown, read error) and
    /// returns the ERROR to send to the peer.
    pub fn abort(&mut self, code: ErrorCode, message: &str, reason: String) -> Transmit {
        self.finish(TransferOutcome::Aborted { reason });
        Transmit::Packet {
            to: self.peer,
            bytes: error_packet(code, message),
        }
    }

    fn handle_ack(&mut self, block: u16, now: Instant) -> Vec<Transmit> {
        if self.phase == Phase::AwaitingOptionAck {
            if block != 0 {
                return Vec::new();
            }
            self.phase = Phase::Sending;
            self.progress(now);
            return self.send_window(now);
        }
        // Map the 16-bit number onto the blocks in flight. The in-flight
        // range acked..=sent_upto spans at most 65536 indices (window <=
        // 65535), so the match is unique.
        let distance = u64::from(block.wrapping_sub(self.acked as u16));
        let index = self.acked + distance;
        if distance == 0 || index > self.sent_upto {
            return Vec::new(); // duplicate or stale
        }
        self.acked = index;
        self.progress(now);
        if self.acked >= self.last_block {
            self.finish(TransferOutcome::Completed {
                bytes: self.file_size,
            });
            return Vec::new();
        }
        self.send_window(now)
    }

    /// Resets the backoff and the stall limit after the client made progress.
    fn progress(&mut self, now: Instant) {
        self.retries = 0;
        self.interval = self.initial_interval;
        self.stall_deadline = now.checked_add(self.max_stall);
    }

    /// Arms the timer for the next retransmission, never past the stall
    /// limit, so a silent client is given up on time.
    fn arm(&mut self, now: Instant) {
        let next = now.checked_add(self.interval).unwrap_or(now);
        self.deadline = Some(match self.stall_deadline {
            Some(limit) => next.min(limit),
            None => next,
        });
    }

    fn send_option_ack(&mut self, now: Instant) -> Vec<Transmit> {
        self.arm(now);
        match &self.option_ack {
            Some(bytes) => vec![Transmit::Packet {
                to: self.peer,
                bytes: bytes.clone(),
            }],
            None => Vec::new(),
        }
    }

    /// Sends the window after the last acknowledged block.
    fn send_window(&mut self, now: Instant) -> Vec<Transmit> {
        let first = self.acked + 1;
        let last = (self.acked + u64::from(self.window_size)).min(self.last_block);
        let block_size = u64::from(self.block_size);
        let transmits = (first..=last)
            .map(|index| {
                let offset = (index - 1) * block_size;
                let len = (self.file_size - offset).min(block_size);
                Transmit::Data {
                    block: index as u16, // wraps 65535 -> 0 on purpose
                    offset,
                    len: len as usize,
                }
            })
            .collect();
        self.sent_upto = self.sent_upto.max(last);
        self.arm(now);
        transmits
    }

    fn finish(&mut self, outcome: TransferOutcome) {
        self.phase = Phase::Finished;
        self.deadline = None;
        self.outcome = Some(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::negotiate;
    use crate::packet::TftpOption;

    const PEER: &str = "127.0.0.1:40000";

    fn peer() -> SocketAddr {
        PEER.parse().unwrap()
    }

    fn ack(block: u16) -> Vec<u8> {
        Packet::Ack { block }.to_bytes().unwrap()
    }

    fn start_with(
        size: u64,
        options: &[(&str, &str)],
        limits: &TransferLimits,
        now: Instant,
    ) -> (ReadTransfer, Vec<Transmit>) {
        let options: Vec<_> = options
            .iter()
            .map(|&(name, value)| TftpOption { name, value })
            .collect();
        let negotiated = negotiate(&options, Some(size), limits);
        ReadTransfer::start(peer(), size, &negotiated, limits, now)
    }

    fn blocks(transmits: &[Transmit]) -> Vec<u16> {
        transmits
            .iter()
            .filter_map(|t| match t {
                Transmit::Data { block, .. } => Some(*block),
                Transmit::Packet { .. } => None,
            })
            .collect()
    }

    fn decoded(transmit: &Transmit) -> (SocketAddr, Packet<'_>) {
        match transmit {
            Transmit::Packet { to, bytes } => (*to, Packet::decode(bytes).unwrap()),
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    #[test]
    fn lockstep_without_options_sends_short_last_block() {
        let now = Instant::now();
        let (mut t, first) = start_with(1000, &[], &TransferLimits::default(), now);
        assert_eq!(
            first,
            vec![Transmit::Data {
                block: 1,
                offset: 0,
                len: 512
            }]
        );
        let next = t.handle_datagram(peer(), &ack(1), now);
        assert_eq!(
            next,
            vec![Transmit::Data {
                block: 2,
                offset: 512,
                len: 488
            }]
        );
        assert!(t.handle_datagram(peer(), &ack(2), now).is_empty());
        assert_eq!(
            t.outcome(),
            Some(&TransferOutcome::Completed { bytes: 1000 })
        );
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn exact_multiple_of_block_size_ends_with_an_empty_block() {
        let now = Instant::now();
        let (mut t, first) = start_with(1024, &[], &TransferLimits::default(), now);
        assert_eq!(blocks(&first), [1]);
        t.handle_datagram(peer(), &ack(1), now);
        let third = { t.handle_datagram(peer(), &ack(2), now) };
        assert_eq!(
            third,
            vec![Transmit::Data {
                block: 3,
                offset: 1024,
                len: 0
            }]
        );
        assert!(!t.is_finished());
        t.handle_datagram(peer(), &ack(3), now);
        assert!(t.outcome().unwrap().is_completed());
    }

    #[test]
    fn empty_file_is_one_empty_block() {
        let now = Instant::now();
        let (mut t, first) = start_with(0, &[], &TransferLimits::default(), now);
        assert_eq!(
            first,
            vec![Transmit::Data {
                block: 1,
                offset: 0,
                len: 0
            }]
        );
        t.handle_datagram(peer(), &ack(1), now);
        assert_eq!(t.outcome(), Some(&TransferOutcome::Completed { bytes: 0 }));
    }

    #[test]
    fn options_bring_an_oack_and_data_waits_for_ack_zero() {
        let now = Instant::now();
        let (mut t, first) = start_with(
            5000,
            &[("blksize", "1024"), ("tsize", "0"), ("windowsize", "2")],
            &TransferLimits::default(),
            now,
        );
        assert_eq!(first.len(), 1);
        let (to, oack) = decoded(&first[0]);
        assert_eq!(to, peer());
        assert_eq!(
            oack,
            Packet::OptionAck {
                options: vec![
                    TftpOption {
                        name: "blksize",
                        value: "1024"
                    },
                    TftpOption {
                        name: "tsize",
                        value: "5000"
                    },
                    TftpOption {
                        name: "windowsize",
                        value: "2"
                    },
                ]
            }
        );
        assert!(t.handle_datagram(peer(), &ack(1), now).is_empty());
        let window = t.handle_datagram(peer(), &ack(0), now);
        assert_eq!(
            window,
            vec![
                Transmit::Data {
                    block: 1,
                    offset: 0,
                    len: 1024
                },
                Transmit::Data {
                    block: 2,
                    offset: 1024,
                    len: 1024
                },
            ]
        );
        // A repeated ACK 0 is a duplicate now.
        assert!(t.handle_datagram(peer(), &ack(0), now).is_empty());
    }

    #[test]
    fn windows_advance_on_the_last_ack_and_resend_after_a_gap() {
        let now = Instant::now();
        let (mut t, _) = start_with(
            10 * 512,
            &[("windowsize", "4")],
            &TransferLimits::default(),
            now,
        );
        assert_eq!(
            blocks(&t.handle_datagram(peer(), &ack(0), now)),
            [1, 2, 3, 4]
        );
        assert_eq!(
            blocks(&t.handle_datagram(peer(), &ack(4), now)),
            [5, 6, 7, 8]
        );
        // Client lost block 6: it ACKs 5, the next window starts at 6.
        assert_eq!(
            blocks(&t.handle_datagram(peer(), &ack(5), now)),
            [6, 7, 8, 9]
        );
        // Late ACKs of older blocks, and of the current one, are ignored.
        assert!(t.handle_datagram(peer(), &ack(4), now).is_empty());
        assert!(t.handle_datagram(peer(), &ack(5), now).is_empty());
        // An ACK beyond anything sent is ignored too.
        assert!(t.handle_datagram(peer(), &ack(30), now).is_empty());
        assert_eq!(blocks(&t.handle_datagram(peer(), &ack(9), now)), [10, 11]);
        assert!(t.handle_datagram(peer(), &ack(11), now).is_empty());
        assert_eq!(
            t.outcome(),
            Some(&TransferOutcome::Completed { bytes: 5120 })
        );
    }

    #[test]
    fn timeouts_resend_from_last_ack_with_doubling_capped_interval_then_give_up() {
        let limits = TransferLimits {
            default_timeout: Duration::from_secs(1),
            max_retransmit_interval: Duration::from_secs(4),
            max_retries: 3,
            ..TransferLimits::default()
        };
        let t0 = Instant::now();
        let (mut t, _) = start_with(4096, &[("windowsize", "2")], &limits, t0);
        assert_eq!(t.deadline(), Some(t0 + Duration::from_secs(1)));
        let window = t.handle_datagram(peer(), &ack(0), t0);
        assert_eq!(blocks(&window), [1, 2]);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(blocks(&t.handle_datagram(peer(), &ack(1), t1)), [2, 3]);
        assert_eq!(t.deadline(), Some(t1 + Duration::from_secs(1)));

        // Early wake-ups change nothing.
        assert!(t.handle_timeout(t1 + Duration::from_millis(999)).is_empty());

        let mut now = t1 + Duration::from_secs(1);
        for expected_interval in [2, 4, 4] {
            let resent = t.handle_timeout(now);
            assert_eq!(blocks(&resent), [2, 3], "resend from last acked block");
            assert_eq!(
                t.deadline(),
                Some(now + Duration::from_secs(expected_interval))
            );
            now += Duration::from_secs(expected_interval);
        }
        let last = t.handle_timeout(now);
        let (to, error) = decoded(&last[0]);
        assert_eq!(to, peer());
        assert!(matches!(
            error,
            Packet::Error {
                code: ErrorCode::NotDefined,
                ..
            }
        ));
        assert_eq!(t.outcome(), Some(&TransferOutcome::TimedOut { retries: 3 }));
        assert_eq!(t.deadline(), None);
        assert!(t.handle_timeout(now + Duration::from_secs(60)).is_empty());
    }

    /// How long a client that never answers holds the transfer, on the
    /// simulated clock, with whatever options it asked for.
    fn hold_time_of_a_silent_client(options: &[(&str, &str)], limits: &TransferLimits) -> Duration {
        let t0 = Instant::now();
        let (mut t, _) = start_with(1 << 20, options, limits, t0);
        let mut now = t0;
        for _ in 0..1000 {
            let Some(deadline) = t.deadline() else {
                break;
            };
            now = deadline;
            t.handle_timeout(now);
        }
        assert!(matches!(
            t.outcome(),
            Some(TransferOutcome::TimedOut { .. })
        ));
        now - t0
    }

    #[test]
    fn a_silent_client_holds_its_slot_well_under_a_minute() {
        let limits = TransferLimits::default();
        // The worst the options allow: the largest accepted timeout.
        for options in [
            &[][..],
            &[("timeout", "5")][..],
            &[("timeout", "255")][..],
            &[("timeout", "5"), ("tsize", "0")][..],
        ] {
            let held = hold_time_of_a_silent_client(options, &limits);
            assert!(held <= limits.max_stall, "{options:?} held {held:?}");
        }
        assert!(limits.max_stall <= Duration::from_secs(30));
        // Even with retries to spare, the stall limit ends it.
        let generous = TransferLimits {
            max_retries: 1000,
            max_stall: Duration::from_secs(12),
            ..TransferLimits::default()
        };
        assert_eq!(
            hold_time_of_a_silent_client(&[], &generous),
            Duration::from_secs(12)
        );
    }

    #[test]
    fn progress_moves_the_stall_limit() {
        let limits = TransferLimits {
            max_stall: Duration::from_secs(3),
            ..TransferLimits::default()
        };
        let t0 = Instant::now();
        let (mut t, _) = start_with(4096, &[], &limits, t0);
        // 1 s, then 2 s: the second retransmission would be due at 3 s,
        // which is the stall limit.
        assert_eq!(blocks(&t.handle_timeout(t0 + Duration::from_secs(1))), [1]);
        assert_eq!(t.deadline(), Some(t0 + Duration::from_secs(3)));
        let t1 = t0 + Duration::from_millis(2500);
        assert_eq!(blocks(&t.handle_datagram(peer(), &ack(1), t1)), [2]);
        assert_eq!(t.deadline(), Some(t1 + Duration::from_secs(1)));
        assert_eq!(blocks(&t.handle_timeout(t1 + Duration::from_secs(1))), [2]);
        let limit = t1 + Duration::from_secs(3);
        assert_eq!(t.deadline(), Some(limit));
        t.handle_timeout(limit);
        assert_eq!(t.outcome(), Some(&TransferOutcome::TimedOut { retries: 1 }));
    }

    #[test]
    fn progress_resets_the_backoff() {
        let limits = TransferLimits::default();
        let t0 = Instant::now();
        let (mut t, _) = start_with(4096, &[], &limits, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(blocks(&t.handle_timeout(t1)), [1]);
        assert_eq!(t.deadline(), Some(t1 + Duration::from_secs(2)));
        let t2 = t1 + Duration::from_millis(10);
        assert_eq!(blocks(&t.handle_datagram(peer(), &ack(1), t2)), [2]);
        assert_eq!(t.deadline(), Some(t2 + Duration::from_secs(1)));
    }

    #[test]
    fn negotiated_timeout_sets_the_first_interval_and_oack_is_retransmitted() {
        let limits = TransferLimits::default();
        let t0 = Instant::now();
        let (mut t, first) = start_with(10, &[("timeout", "3")], &limits, t0);
        assert_eq!(t.deadline(), Some(t0 + Duration::from_secs(3)));
        let again = t.handle_timeout(t0 + Duration::from_secs(3));
        assert_eq!(again, first, "the OACK is resent unchanged");
        assert_eq!(t.deadline(), Some(t0 + Duration::from_secs(9)));
    }

    #[test]
    fn error_8_after_oack_ends_quietly_as_a_probe() {
        let now = Instant::now();
        let (mut t, _) = start_with(1 << 20, &[("tsize", "0")], &TransferLimits::default(), now);
        let abort = error_packet(ErrorCode::OptionsRefused, "User aborted the transfer");
        assert!(t.handle_datagram(peer(), &abort, now).is_empty());
        assert_eq!(
            t.outcome(),
            Some(&TransferOutcome::OptionsDeclined {
                message: "User aborted the transfer".into()
            })
        );
        assert!(t.handle_timeout(now + Duration::from_secs(100)).is_empty());
    }

    #[test]
    fn client_error_mid_transfer_ends_it() {
        let now = Instant::now();
        let (mut t, _) = start_with(4096, &[], &TransferLimits::default(), now);
        t.handle_datagram(peer(), &ack(1), now);
        let error = error_packet(ErrorCode::DiskFull, "disk full");
        assert!(t.handle_datagram(peer(), &error, now).is_empty());
        assert_eq!(
            t.outcome(),
            Some(&TransferOutcome::ClientError {
                code: ErrorCode::DiskFull,
                message: "disk full".into()
            })
        );
        // Code 8 once data flows is an ordinary client error.
        let (mut t, _) = start_with(4096, &[], &TransferLimits::default(), now);
        t.handle_datagram(peer(), &error_packet(ErrorCode::OptionsRefused, ""), now);
        assert!(matches!(
            t.outcome(),
            Some(TransferOutcome::ClientError {
                code: ErrorCode::OptionsRefused,
                ..
            })
        ));
    }

    #[test]
    fn strangers_get_unknown_transfer_id_and_do_not_disturb() {
        let now = Instant::now();
        let (mut t, _) = start_with(4096, &[], &TransferLimits::default(), now);
        let deadline = t.deadline();
        let other_port: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let other_host: SocketAddr = "127.0.0.2:40000".parse().unwrap();
        for stranger in [other_port, other_host] {
            let reply = t.handle_datagram(stranger, &ack(1), now);
            assert_eq!(reply.len(), 1);
            let (to, packet) = decoded(&reply[0]);
            assert_eq!(to, stranger);
            assert!(matches!(
                packet,
                Packet::Error {
                    code: ErrorCode::UnknownTransferId,
                    ..
                }
            ));
            // Their ERRORs and garbage get nothing back.
            let error = error_packet(ErrorCode::NotDefined, "x");
            assert!(t.handle_datagram(stranger, &error, now).is_empty());
            assert!(t.handle_datagram(stranger, b"\x01", now).is_empty());
        }
        assert_eq!(t.deadline(), deadline);
        assert!(!t.is_finished());
        assert_eq!(blocks(&t.handle_datagram(peer(), &ack(1), now)), [2]);
    }

    #[test]
    fn garbage_and_unexpected_packets_from_the_peer_are_ignored() {
        let now = Instant::now();
        let (mut t, _) = start_with(4096, &[], &TransferLimits::default(), now);
        let data = Packet::Data {
            block: 1,
            data: b"x",
        }
        .to_bytes()
        .unwrap();
        for datagram in [
            &b""[..],
            b"\x00",
            b"\x00\x04",
            &data,
            b"\x00\x01a\x00octet\x00",
        ] {
            assert!(t.handle_datagram(peer(), datagram, now).is_empty());
        }
        assert!(!t.is_finished());
    }

    #[test]
    fn block_numbers_roll_over_to_zero_past_65535() {
        let now = Instant::now();
        let limits = TransferLimits::default();
        let blocks_total: u64 = 65536 + 10;
        let size = blocks_total * 512 - 100; // short last block
        let (mut t, mut out) = start_with(size, &[], &limits, now);
        let mut expected_index: u64 = 1;
        let mut steps = 0;
        while !t.is_finished() {
            steps += 1;
            assert!(steps <= 70_000, "must finish");
            assert_eq!(out.len(), 1);
            let Transmit::Data { block, offset, len } = out[0] else {
                panic!("expected data");
            };
            assert_eq!(block, expected_index as u16);
            assert_eq!(offset, (expected_index - 1) * 512);
            if expected_index == 65535 {
                assert_eq!(block, 65535);
            }
            if expected_index == 65536 {
                assert_eq!(block, 0, "rollover to 0");
            }
            let expected_len = if expected_index == blocks_total {
                412
            } else {
                512
            };
            assert_eq!(len, expected_len);
            out = t.handle_datagram(peer(), &ack(block), now);
            expected_index += 1;
        }
        assert_eq!(expected_index - 1, blocks_total);
        assert_eq!(
            t.outcome(),
            Some(&TransferOutcome::Completed { bytes: size })
        );
    }

    #[test]
    fn windowed_rollover_with_a_stale_ack_across_the_wrap() {
        let now = Instant::now();
        let limits = TransferLimits::default();
        let size = 70_000 * 512;
        let (mut t, _) = start_with(size, &[("windowsize", "8")], &limits, now);
        let mut out = t.handle_datagram(peer(), &ack(0), now);
        let mut last_acked: u16 = 0;
        let mut rounds = 0;
        while !t.is_finished() {
            rounds += 1;
            assert!(rounds <= 10_000);
            let sent = blocks(&out);
            assert!(!sent.is_empty());
            let top = *sent.last().unwrap();
            // A stale ACK from before the window never moves it backwards.
            assert!(t.handle_datagram(peer(), &ack(last_acked), now).is_empty());
            out = t.handle_datagram(peer(), &ack(top), now);
            if last_acked > 65000 && top < 100 {
                // The first window after the wrap: old numbers near 65535
                // are stale now.
                assert!(t.handle_datagram(peer(), &ack(65535), now).is_empty());
            }
            last_acked = top;
        }
        assert!(t.outcome().unwrap().is_completed());
    }

    #[test]
    fn window_of_65535_maps_acks_uniquely() {
        let now = Instant::now();
        let limits = TransferLimits {
            max_window_size: u16::MAX,
            ..TransferLimits::default()
        };
        let size = 200_000 * 8;
        let (mut t, _) = start_with(
            size,
            &[("windowsize", "65535"), ("blksize", "8")],
            &limits,
            now,
        );
        let first = t.handle_datagram(peer(), &ack(0), now);
        assert_eq!(first.len(), 65535);
        // ACK of the window's last block (65535) moves to 65536.., which wraps to 0.
        let next = t.handle_datagram(peer(), &ack(65535), now);
        assert_eq!(blocks(&next)[0], 0);
        assert_eq!(next.len(), 65535);
    }

    #[test]
    fn server_abort_sends_an_error_and_finishes() {
        let now = Instant::now();
        let (mut t, _) = start_with(4096, &[], &TransferLimits::default(), now);
        let transmit = t.abort(
            ErrorCode::NotDefined,
            "Server shutting down",
            "shutdown".into(),
        );
        let (to, packet) = decoded(&transmit);
        assert_eq!(to, peer());
        assert!(matches!(packet, Packet::Error { .. }));
        assert!(t.is_finished());
        assert!(t.handle_datagram(peer(), &ack(1), now).is_empty());
    }
}
