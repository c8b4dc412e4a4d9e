//! Typed failures: each says which BMC and which operation, so an operator
//! knows whether to fix the network, the password or the request. No variant
//! ever carries the password (see [`redact`]).

use std::time::Duration;

/// Why a BMC operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcError {
    /// Nothing answered at the address (connection refused, no route, no
    /// IPMI reply): check the address, port and network.
    #[error("BMC {address} is unreachable during {operation}: {detail}")]
    Unreachable {
        /// The BMC's address.
        address: String,
        /// What we were doing.
        operation: String,
        /// What the transport said.
        detail: String,
    },
    /// The BMC did not finish in time; every operation is bounded.
    #[error("BMC {address} did not answer {operation} within {after:?}")]
    Timeout {
        /// The BMC's address.
        address: String,
        /// What we were doing.
        operation: String,
        /// The bound that ran out.
        after: Duration,
    },
    /// The BMC refused the user name or password.
    #[error("BMC {address} rejected the credentials of user {username:?}: {detail}")]
    AuthFailed {
        /// The BMC's address.
        address: String,
        /// The user name we logged in as (never the password).
        username: String,
        /// What the BMC said.
        detail: String,
    },
    /// The BMC (or this backend) cannot do what was asked.
    #[error("BMC {address} does not support {operation}: {detail}")]
    Unsupported {
        /// The BMC's address.
        address: String,
        /// What was asked.
        operation: String,
        /// Why it cannot be done.
        detail: String,
    },
    /// The BMC answered, but not as the protocol says it should, or refused
    /// the request.
    #[error("BMC {address}: {operation} failed: {detail}")]
    Protocol {
        /// The BMC's address.
        address: String,
        /// What we were doing.
        operation: String,
        /// What went wrong.
        detail: String,
    },
    /// The request could not even be formed (bad address, missing tool).
    #[error("invalid BMC configuration: {0}")]
    Config(String),
    /// A job step waited for the power state to settle and it did not.
    #[error("power state stayed {last} instead of {wanted} for {after:?}")]
    PowerStateNotReached {
        /// The state we waited for.
        wanted: crate::PowerState,
        /// The last state the BMC reported.
        last: crate::PowerState,
        /// How long we polled.
        after: Duration,
    },
}

impl BmcError {
    /// True when the BMC could not be reached or timed out: what `Auto`
    /// protocol detection treats as "try the next protocol".
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            BmcError::Unreachable { .. } | BmcError::Timeout { .. }
        )
    }
}

/// Replaces every occurrence of `secret` in text that came from a peer or a
/// library (tool output, HTTP bodies) before it goes into an error, so even a
/// BMC that echoes the password cannot leak it through us.
pub fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "<redacted>")
}

/// Keeps peer-provided text short enough for an error message.
pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    let trimmed = text.trim();
    if trimmed.chars().count() <= max_chars {
        return trimmed.to_owned();
    }
    let mut short: String = trimmed.chars().take(max_chars).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_every_copy() {
        assert_eq!(redact("pw=abc abc", "abc"), "pw=<redacted> <redacted>");
        assert_eq!(redact("nothing", ""), "nothing");
    }

    #[test]
    fn truncate_keeps_short_text() {
        assert_eq!(truncate("  hi  ", 10), "hi");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
