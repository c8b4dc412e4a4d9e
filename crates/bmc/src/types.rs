//! The vocabulary shared by every backend: what a BMC can be asked and how to
//! reach it. Pure data, no IO.

use std::fmt;

use serde::{Deserialize, Serialize};

// The words a BMC is asked in are the API's too: one definition, in the
// model, which the server and the CLI share.
pub use bellows_model::bmc::{BootDevice, BootOverride, PowerAction, PowerState};

/// The BMC protocol to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// IPMI 2.0 over LAN (RMCP+) through `ipmitool -I lanplus`.
    Ipmi,
    /// Redfish over HTTPS (or HTTP when the address says so).
    Redfish,
    /// Try Redfish first, then IPMI: Redfish is richer (virtual media,
    /// reliable boot-mode control) and fails fast when nothing listens.
    #[default]
    Auto,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Ipmi => "ipmi",
            Protocol::Redfish => "redfish",
            Protocol::Auto => "auto",
        })
    }
}

/// Where a BMC is and how to talk to it (everything but the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcEndpoint {
    /// Host name or IP address; for Redfish it may also be a base URL such
    /// as `https://10.0.0.5:8443` or `http://127.0.0.1:8000`.
    pub address: String,
    /// Port when not the protocol's default (623/udp IPMI, 443 Redfish).
    /// With `Auto` it is Redfish's port; the IPMI fallback uses 623.
    #[serde(default)]
    pub port: Option<u16>,
    /// The protocol to use.
    #[serde(default)]
    pub protocol: Protocol,
    /// Accept any TLS certificate: most BMCs ship self-signed ones.
    #[serde(default)]
    pub insecure_tls: bool,
}

/// A BMC password. It never shows in `Debug` or `Display`, so it cannot leak
/// through logs, events or error messages by formatting.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Password(secret.into())
    }

    /// The secret itself, for the wire and for encrypted storage only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The login for a BMC. Deserializable (write-only API input) but not
/// serializable, and its `Debug`/`Display` redact the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Credentials {
    /// BMC user name.
    pub username: String,
    /// BMC password, redacted whenever formatted.
    pub password: Password,
}

impl Credentials {
    /// Builds credentials from a user name and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: Password::new(password),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:<redacted>", self.username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_format_the_password() {
        let credentials = Credentials::new("admin", "hunter2-Secret");
        for shown in [
            format!("{credentials:?}"),
            format!("{credentials:#?}"),
            format!("{credentials}"),
            format!("{:?}", credentials.password),
            format!("{}", credentials.password),
        ] {
            assert!(!shown.contains("hunter2"), "leaked in {shown}");
        }
        assert_eq!(credentials.password.expose(), "hunter2-Secret");
    }

    #[test]
    fn expected_states_follow_the_action() {
        assert_eq!(PowerAction::SoftOff.expected_state(), PowerState::Off);
        assert_eq!(PowerAction::Cycle.expected_state(), PowerState::On);
    }

    #[test]
    fn endpoint_reads_with_defaults() {
        let endpoint: BmcEndpoint = serde_json::from_str(r#"{"address":"10.0.0.5"}"#)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(endpoint.protocol, Protocol::Auto);
        assert_eq!(endpoint.port, None);
        assert!(!endpoint.insecure_tls);
    }
}
