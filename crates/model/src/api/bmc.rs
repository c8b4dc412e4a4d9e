//! The BMC side of the API: how a machine's BMC is reached, its power
//! reading, and the jobs (power, boot device, netboot) run against it.
//!
//! The job types mirror `bellows-bmc`'s `Job` field for field; the model
//! cannot name that crate (it depends on none of ours), so the API converts
//! and a test there checks both serialize to the same bytes.

use serde::{Deserialize, Serialize};

use crate::bmc::{Step, StepState};

/// How to reach a machine's BMC. The password is kept apart
/// (the store's `BmcSecret`) so that this value can be shown and logged freely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcRecord {
    /// The machine it controls.
    pub hardware_id: String,
    /// BMC host name or IP address.
    pub address: String,
    /// Port, if not the protocol's default (623 IPMI, 443 Redfish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `ipmi`, `redfish` or `auto`.
    pub protocol: String,
    /// User name.
    pub username: String,
    /// Accept a self-signed Redfish certificate.
    #[serde(default)]
    pub insecure_tls: bool,
    /// Last power state seen by the poller (`on`, `off`, `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<String>,
    /// When the power state was read (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_checked_at: Option<i64>,
    /// Why the last power read failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_error: Option<String>,
}

impl BmcRecord {
    /// The fields that say where, how and as whom the password is sent
    /// (address, port, protocol, username, TLS verification) and differ
    /// between `self` and `other`. A stored password may only be kept when
    /// this is empty: otherwise it would go to a host it was not given for.
    pub fn endpoint_changes(&self, other: &BmcRecord) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.address != other.address {
            changed.push("address");
        }
        if self.port != other.port {
            changed.push("port");
        }
        if self.protocol != other.protocol {
            changed.push("protocol");
        }
        if self.username != other.username {
            changed.push("username");
        }
        if self.insecure_tls != other.insecure_tls {
            changed.push("insecure_tls");
        }
        changed
    }
}

/// A BMC as the API shows it: the record plus the fact that a password is
/// stored (the password itself is never sent back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcView {
    /// How the BMC is reached, and its last power reading.
    #[serde(flatten)]
    pub record: BmcRecord,
    /// Always true: a BMC cannot be set without a password.
    pub has_password: bool,
}

impl From<BmcRecord> for BmcView {
    fn from(record: BmcRecord) -> BmcView {
        BmcView {
            record,
            has_password: true,
        }
    }
}

/// The answer to `GET /hardware/{id}/power`: what the BMC says now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerReading {
    /// The machine.
    pub hardware_id: String,
    /// `on`, `off` or `unknown`.
    pub power: String,
}

/// The answer to a power, boot-device or netboot request: the job that ran
/// and how each of its steps went. A failed job is an error response
/// instead, whose message lists the steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcJob {
    /// The machine.
    pub hardware_id: String,
    /// The job's overall state (`succeeded` in a success response).
    pub state: StepState,
    /// The steps, in the order they ran.
    pub steps: Vec<Step>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `has_password` comes last and unset options are left out, as when
    /// the view was the record's JSON with the flag added.
    #[test]
    fn a_view_is_the_record_plus_has_password() {
        let record = BmcRecord {
            hardware_id: "m0".into(),
            address: "10.0.0.10".into(),
            port: None,
            protocol: "ipmi".into(),
            username: "admin".into(),
            insecure_tls: false,
            power_state: Some("on".into()),
            power_checked_at: None,
            power_error: None,
        };
        let text = serde_json::to_string(&BmcView::from(record.clone())).unwrap();
        assert_eq!(
            text,
            r#"{"hardware_id":"m0","address":"10.0.0.10","protocol":"ipmi","username":"admin","insecure_tls":false,"power_state":"on","has_password":true}"#
        );
        let back: BmcView = serde_json::from_str(&text).unwrap();
        assert_eq!(back.record, record);
    }

    /// Power readings are not part of the endpoint; every way of reaching
    /// another BMC, or the same one as someone else, is.
    #[test]
    fn endpoint_changes_name_each_field_that_redirects_the_password() {
        let record = BmcRecord {
            hardware_id: "m0".into(),
            address: "10.0.0.10".into(),
            port: None,
            protocol: "ipmi".into(),
            username: "admin".into(),
            insecure_tls: false,
            power_state: None,
            power_checked_at: None,
            power_error: None,
        };
        let mut same = record.clone();
        same.power_state = Some("on".into());
        same.power_error = Some("timeout".into());
        assert!(record.endpoint_changes(&same).is_empty());
        let other = BmcRecord {
            address: "10.6.6.6".into(),
            port: Some(8443),
            protocol: "redfish".into(),
            username: "root".into(),
            insecure_tls: true,
            ..record.clone()
        };
        assert_eq!(
            record.endpoint_changes(&other),
            ["address", "port", "protocol", "username", "insecure_tls"]
        );
    }
}
