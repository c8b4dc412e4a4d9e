//! Option negotiation (RFC 2347): blksize (RFC 2348), timeout and tsize
//! (RFC 2349), windowsize (RFC 7440). Pure: the caller passes the request's
//! options, the file size and the operator's limits.

use std::time::Duration;

use crate::packet::{DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, TftpOption};

/// Largest block size granted by default: a DATA packet (1468 + 4 + 8 UDP +
/// 20 IPv4 = 1500 bytes) then fits a standard Ethernet MTU unfragmented.
pub const DEFAULT_MAX_BLOCK_SIZE: u16 = 1468;
/// Largest window granted by default: enough to fill a LAN, small enough that
/// one lost packet does not cost a large resend.
pub const DEFAULT_MAX_WINDOW_SIZE: u16 = 64;
/// Largest `timeout` option accepted by default. A LAN client needs a
/// second or two; RFC 2349 allows up to 255, which would let one silent
/// client hold a transfer slot for many minutes.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a transfer may go without progress by default before it is
/// given up, whatever its timeout and retries: bounds how long a client
/// that never acknowledges holds a slot.
pub const DEFAULT_MAX_STALL: Duration = Duration::from_secs(20);

/// What the operator allows a transfer to use, and how it retransmits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferLimits {
    /// Requests for a larger `blksize` get this value (8..=65464).
    pub max_block_size: u16,
    /// Requests for a larger `windowsize` get this value (at least 1).
    pub max_window_size: u16,
    /// First retransmission interval when the client names no `timeout`.
    pub default_timeout: Duration,
    /// The doubling retransmission interval never exceeds this (nor goes
    /// below the first interval).
    pub max_retransmit_interval: Duration,
    /// Retransmissions of one window (or OACK) before the transfer is given up.
    pub max_retries: u32,
    /// A `timeout` option above this is not acknowledged (RFC 2349 lets
    /// the server decline it, not change it): the transfer then runs with
    /// `default_timeout`.
    pub max_timeout: Duration,
    /// Time without progress (since the request, or the last ACK that
    /// moved the transfer on) after which it is given up, even with
    /// retries left.
    pub max_stall: Duration,
}

impl Default for TransferLimits {
    fn default() -> Self {
        Self {
            max_block_size: DEFAULT_MAX_BLOCK_SIZE,
            max_window_size: DEFAULT_MAX_WINDOW_SIZE,
            default_timeout: Duration::from_secs(1),
            max_retransmit_interval: Duration::from_secs(8),
            max_retries: 5,
            max_timeout: DEFAULT_MAX_TIMEOUT,
            max_stall: DEFAULT_MAX_STALL,
        }
    }
}

/// The parameters a transfer runs with, and the options to acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// DATA payload size.
    pub block_size: u16,
    /// Blocks sent before waiting for an ACK.
    pub window_size: u16,
    /// First retransmission interval.
    pub timeout: Duration,
    /// Accepted options as (name in the client's spelling, value), in request
    /// order. Empty means the server sends no OACK (RFC 2347).
    pub accepted: Vec<(String, String)>,
}

impl Negotiated {
    /// True when the reply to the request must be an OACK rather than DATA.
    pub fn needs_option_ack(&self) -> bool {
        !self.accepted.is_empty()
    }
}

/// Parses an option value: ASCII decimal digits only (surrounding blanks
/// tolerated), no sign, no overflow.
fn parse_decimal(value: &str) -> Option<u64> {
    let digits = value.trim_matches(|c: char| c.is_ascii_whitespace());
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Decides which of a read request's options to accept.
///
/// `file_size` is the size to report for `tsize`, or `None` when it cannot be
/// stated (netascii, whose size on the client differs). A size of 0 is not
/// reported either (see below). Unknown, malformed,
/// out-of-range and repeated options are ignored, never fatal, so one odd
/// option does not fail a boot.
pub fn negotiate(
    options: &[TftpOption<'_>],
    file_size: Option<u64>,
    limits: &TransferLimits,
) -> Negotiated {
    let max_block = limits.max_block_size.clamp(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
    let max_window = limits.max_window_size.max(1);
    let mut negotiated = Negotiated {
        block_size: DEFAULT_BLOCK_SIZE,
        window_size: 1,
        timeout: limits.default_timeout,
        accepted: Vec::new(),
    };
    let mut seen: Vec<&'static str> = Vec::new();
    for option in options {
        let Some(kind) = ["blksize", "timeout", "tsize", "windowsize"]
            .into_iter()
            .find(|known| option.name.eq_ignore_ascii_case(known))
        else {
            continue;
        };
        if seen.contains(&kind) {
            continue;
        }
        let Some(requested) = parse_decimal(option.value) else {
            continue;
        };
        let reply = match kind {
            "blksize" if requested >= u64::from(MIN_BLOCK_SIZE) => {
                let size = u16::try_from(requested).unwrap_or(u16::MAX).min(max_block);
                negotiated.block_size = size;
                size.to_string()
            }
            // Above the operator's maximum the option is left out of the
            // OACK and the default applies: the server may decline an
            // option but must not answer a different timeout.
            "timeout"
                if (1..=255).contains(&requested)
                    && Duration::from_secs(requested) <= limits.max_timeout =>
            {
                negotiated.timeout = Duration::from_secs(requested);
                requested.to_string()
            }
            // An empty file's size is not acknowledged: curl (lib/tftp.c)
            // rejects `tsize 0` in an OACK as invalid and fails the
            // download, and no client gains anything from it.
            "tsize" => match file_size {
                Some(size) if size > 0 => size.to_string(),
                _ => continue,
            },
            "windowsize" if (1..=65535).contains(&requested) => {
                let window = u16::try_from(requested).unwrap_or(u16::MAX).min(max_window);
                negotiated.window_size = window;
                window.to_string()
            }
            _ => continue,
        };
        seen.push(kind);
        negotiated.accepted.push((option.name.to_string(), reply));
    }
    negotiated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<TftpOption<'a>> {
        pairs
            .iter()
            .map(|&(name, value)| TftpOption { name, value })
            .collect()
    }

    fn accepted(n: &Negotiated) -> Vec<(&str, &str)> {
        n.accepted
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn no_options_means_rfc1350_defaults_and_no_oack() {
        let n = negotiate(&[], Some(10), &TransferLimits::default());
        assert_eq!(n.block_size, 512);
        assert_eq!(n.window_size, 1);
        assert_eq!(n.timeout, Duration::from_secs(1));
        assert!(!n.needs_option_ack());
    }

    #[test]
    fn blksize_is_clamped_to_the_configured_maximum() {
        let limits = TransferLimits::default();
        let n = negotiate(&opts(&[("blksize", "65464")]), Some(1), &limits);
        assert_eq!(n.block_size, 1468);
        assert_eq!(accepted(&n), [("blksize", "1468")]);
        let n = negotiate(&opts(&[("BLKSIZE", "1024")]), Some(1), &limits);
        assert_eq!(n.block_size, 1024);
        assert_eq!(accepted(&n), [("BLKSIZE", "1024")]);
        let n = negotiate(&opts(&[("blksize", "8")]), Some(1), &limits);
        assert_eq!(n.block_size, 8);
        // Larger than RFC 2348 allows: still clamped, as tftp-hpa does.
        let n = negotiate(&opts(&[("blksize", "99999999999")]), Some(1), &limits);
        assert_eq!(n.block_size, 1468);
    }

    #[test]
    fn invalid_values_are_ignored_not_fatal() {
        let limits = TransferLimits::default();
        for (name, value) in [
            ("blksize", "7"),
            ("blksize", "0"),
            ("blksize", "-512"),
            ("blksize", "+512"),
            ("blksize", "12ab"),
            ("blksize", ""),
            ("timeout", "0"),
            ("timeout", "256"),
            ("windowsize", "0"),
            ("windowsize", "65536"),
            ("tsize", "x"),
            ("tsize", "99999999999999999999999"),
            ("multicast", ""),
            ("utimeout", "1000"),
        ] {
            let n = negotiate(&opts(&[(name, value)]), Some(5), &limits);
            assert!(!n.needs_option_ack(), "{name}={value} must be ignored");
            assert_eq!((n.block_size, n.window_size), (512, 1));
        }
    }

    #[test]
    fn tsize_reports_the_real_size_unless_unknown() {
        let limits = TransferLimits::default();
        let n = negotiate(&opts(&[("tsize", "0")]), Some(123_456_789), &limits);
        assert_eq!(accepted(&n), [("tsize", "123456789")]);
        let n = negotiate(&opts(&[("tsize", "77")]), Some(5), &limits);
        assert_eq!(accepted(&n), [("tsize", "5")]);
        let n = negotiate(&opts(&[("tsize", "0")]), None, &limits);
        assert!(!n.needs_option_ack());
        // curl fails on `tsize 0`, so an empty file reports no size.
        let n = negotiate(
            &opts(&[("tsize", "0"), ("blksize", "1024")]),
            Some(0),
            &limits,
        );
        assert_eq!(accepted(&n), [("blksize", "1024")]);
    }

    #[test]
    fn timeout_and_windowsize_follow_rfc_ranges() {
        let limits = TransferLimits {
            max_window_size: 16,
            ..TransferLimits::default()
        };
        let n = negotiate(
            &opts(&[("timeout", "3"), ("windowsize", "4")]),
            Some(5),
            &limits,
        );
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(n.window_size, 4);
        assert_eq!(accepted(&n), [("timeout", "3"), ("windowsize", "4")]);
        let n = negotiate(&opts(&[("windowsize", "65535")]), Some(5), &limits);
        assert_eq!(n.window_size, 16);
        assert_eq!(accepted(&n), [("windowsize", "16")]);
    }

    #[test]
    fn a_timeout_above_the_maximum_is_declined_not_changed() {
        let limits = TransferLimits::default();
        let n = negotiate(
            &opts(&[("timeout", "255"), ("blksize", "1024")]),
            Some(5),
            &limits,
        );
        assert_eq!(n.timeout, limits.default_timeout);
        assert_eq!(accepted(&n), [("blksize", "1024")]);
        let n = negotiate(&opts(&[("timeout", "6")]), Some(5), &limits);
        assert!(!n.needs_option_ack());
        let n = negotiate(&opts(&[("timeout", "5")]), Some(5), &limits);
        assert_eq!(n.timeout, Duration::from_secs(5));
        assert_eq!(accepted(&n), [("timeout", "5")]);
    }

    #[test]
    fn first_occurrence_wins_and_unknown_options_are_skipped() {
        let n = negotiate(
            &opts(&[
                ("foo", "bar"),
                ("blksize", "1000"),
                ("Blksize", "600"),
                ("tsize", "0"),
            ]),
            Some(42),
            &TransferLimits::default(),
        );
        assert_eq!(n.block_size, 1000);
        assert_eq!(accepted(&n), [("blksize", "1000"), ("tsize", "42")]);
    }

    #[test]
    fn a_bad_first_copy_does_not_hide_a_good_second_one() {
        let n = negotiate(
            &opts(&[("blksize", "abc"), ("blksize", "900")]),
            Some(1),
            &TransferLimits::default(),
        );
        assert_eq!(n.block_size, 900);
    }

    #[test]
    fn limits_outside_the_protocol_range_are_corrected() {
        let limits = TransferLimits {
            max_block_size: 2,
            max_window_size: 0,
            ..TransferLimits::default()
        };
        let n = negotiate(
            &opts(&[("blksize", "1400"), ("windowsize", "8")]),
            Some(1),
            &limits,
        );
        assert_eq!((n.block_size, n.window_size), (8, 1));
    }
}
