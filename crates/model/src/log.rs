//! A log line a booting machine sent: what the syslog receiver produces
//! and the store keeps.

use serde::{Deserialize, Serialize};

/// One log line a machine sent, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Hardware id, or `ip:<address>` for an unknown sender.
    pub machine: String,
    /// Unix milliseconds when Bellows received it.
    pub at: i64,
    /// Sender's address.
    pub source: String,
    /// Syslog facility number.
    pub facility: u8,
    /// Syslog severity number (0 emergency … 7 debug).
    pub severity: u8,
    /// Sender's hostname, if it gave one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Program (`ipxe`, `kernel`, `bellows-worker`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    /// The text.
    pub message: String,
}
