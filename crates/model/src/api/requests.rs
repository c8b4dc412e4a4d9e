//! Request bodies, written by the CLI and read by the server.
//!
//! The server reads them with `deny_unknown_fields`, so a misspelt field is
//! a 400 naming it rather than a silently ignored setting. Where the server
//! checks a value against a type the model cannot name (the BMC crate's
//! power actions and boot devices) or must report a bad value with its own
//! message (the hardware map), the field is a type parameter: the server
//! reads its strict type, the CLI sends what the operator typed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::workflow::BootOptions;

/// `POST /templates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    /// Unique name.
    pub name: String,
    /// YAML source (a Go template).
    pub data: String,
}

/// `PUT /templates/{id}`: new source, and a new name if given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateUpdate {
    /// New name; the old one is kept when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New YAML source.
    pub data: String,
}

/// `POST /workflows`. `M` is the hardware map: `device_1` → MAC, IP or
/// hardware id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWorkflow<M = BTreeMap<String, String>> {
    /// Template id or name.
    pub template: String,
    /// Which machine each template key stands for.
    pub hardware_map: M,
    /// Hardware id for `.Hardware`, when it is not `device_1`'s machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// Netboot toggling and BMC start (Tinkerbell's `bootOptions`).
    #[serde(
        default,
        alias = "bootOptions",
        skip_serializing_if = "BootOptions::is_default"
    )]
    pub boot_options: BootOptions,
}

/// `POST /workflows/{id}/cancel`; the body may also be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelWorkflow {
    /// Why, for the event log.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `PUT /hardware/{id}/bmc`. `Debug` is not derived, so the password
/// cannot reach a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBmc {
    /// BMC host name or IP address.
    pub address: String,
    /// Port, if not the protocol's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `ipmi`, `redfish` or `auto` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// BMC user name.
    pub username: String,
    /// Required the first time; omitted later to keep the stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Accept a self-signed Redfish certificate.
    #[serde(default)]
    pub insecure_tls: bool,
}

/// `POST /hardware/{id}/power`. `A` is the action: `on`, `off`,
/// `soft_off`, `cycle` or `reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest<A = String> {
    /// The power change.
    pub action: A,
}

/// `POST /hardware/{id}/boot-device`. `D` is the device: `pxe`, `disk`,
/// `bios` or `cdrom`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootDeviceRequest<D = String> {
    /// The device to boot next.
    pub device: D,
    /// Boot in UEFI mode.
    #[serde(default)]
    pub efi: bool,
    /// Keep the device for every boot, not only the next.
    #[serde(default)]
    pub persistent: bool,
}

/// `POST /hardware/{id}/netboot`; the body may also be empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetbootRequest {
    /// Network-boot in UEFI mode.
    #[serde(default)]
    pub efi: bool,
}

/// `POST /hardware/{id}/enroll`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// Template (name or id) of the workflow to create for the machine
    /// (`device_1` is its MAC); none: enrolled only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// `POST /rules` and `POST /rules/test`: a rule's YAML (or JSON) text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSource {
    /// The rule file.
    #[serde(default)]
    pub data: String,
}

/// `POST /rules/test`: which rule would take a machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTestRequest {
    /// The machine (id or MAC).
    pub hardware: String,
    /// A rule not stored yet, tried as if it were (replacing a stored rule
    /// of the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// `POST /workflow-sets`: one template for every machine a selector takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSetRequest {
    /// Template name or id; `device_1` is each machine's first MAC.
    pub template: String,
    /// Which machines: a rule's `match` (state, facility, tags, vendor,
    /// disks …), as YAML or JSON text.
    pub selector: String,
    /// Only say which machines it would take.
    #[serde(default)]
    pub dry_run: bool,
}
