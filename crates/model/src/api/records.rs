//! Records the store keeps and the API sends as they are: templates,
//! workflow events, machine and action logs, inventories.

use serde::{Deserialize, Serialize};

use crate::workflow::Event;

/// A stored template: its source text and identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// Server-assigned id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// YAML source (a Go template).
    pub data: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// A logged workflow event with its place in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Monotonic sequence number across all workflows.
    pub seq: i64,
    /// Workflow it belongs to.
    pub workflow_id: String,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// How a log line from an address no machine holds is filed:
/// `ip:<address>`. The store keeps all of these in one shared bucket.
pub const UNKNOWN_SENDER_PREFIX: &str = "ip:";

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

/// A stored log line with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Monotonic sequence number.
    pub seq: i64,
    /// The line.
    #[serde(flatten)]
    pub entry: LogEntry,
}

/// One line of an action's output, as a worker streamed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionLogLine {
    /// Workflow it belongs to.
    pub workflow_id: String,
    /// Task name.
    pub task: String,
    /// Action name.
    pub action: String,
    /// 1-based attempt.
    pub attempt: u32,
    /// `stdout`, `stderr`, or `worker` for the worker's own notes.
    pub stream: String,
    /// Unix milliseconds when the worker read it.
    pub at: i64,
    /// The text, without its newline.
    pub line: String,
}

/// A stored action output line with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionLogRecord {
    /// Monotonic sequence number; pass it back as `after` to follow.
    pub seq: i64,
    /// The line.
    #[serde(flatten)]
    pub line: ActionLogLine,
}

/// What a worker reported about its machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryRecord {
    /// Hardware the worker belongs to.
    pub hardware_id: String,
    /// Worker id that reported it.
    pub worker: String,
    /// The facts, as JSON.
    pub facts: serde_json::Value,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// The facts a worker reported, as the server stores them in
/// [`InventoryRecord::facts`]: the protobuf fields by name. Every field
/// defaults, so a record written by an older server still reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Facts {
    /// Kernel hostname.
    pub hostname: String,
    /// Kernel release.
    pub kernel: String,
    /// CPU architecture (`x86_64`, `aarch64`).
    pub architecture: String,
    /// Physical memory.
    pub memory_bytes: u64,
    /// The processors, when the worker could read them (`null` otherwise).
    pub cpu: Option<CpuFacts>,
    /// Block devices.
    pub disks: Vec<DiskFacts>,
    /// Network interfaces.
    pub nics: Vec<NicFacts>,
    /// DMI identity and anything else, free-form.
    pub extra: serde_json::Value,
    /// The BMC's address as the machine itself reads it (`ipmitool lan
    /// print`), empty when it cannot: so discovery can fill the BMC record.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bmc_address: String,
}

impl Facts {
    /// A DMI field (`sys_vendor`, `product_name`, `product_serial` …) from
    /// [`Facts::extra`], empty when the machine did not report it.
    pub fn dmi(&self, field: &str) -> &str {
        self.extra.get(field).and_then(|v| v.as_str()).unwrap_or("")
    }
}

/// The processors of a machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuFacts {
    /// Model name.
    pub model: String,
    /// Logical CPUs.
    pub threads: u32,
    /// Physical packages.
    pub sockets: u32,
}

/// One block device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskFacts {
    /// Kernel name (`sda`, `nvme0n1`).
    pub name: String,
    /// Capacity.
    pub size_bytes: u64,
    /// Model string.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Spinning disk.
    pub rotational: bool,
    /// Removable medium (USB stick, card reader).
    pub removable: bool,
}

/// One network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NicFacts {
    /// Kernel name (`eth0`, `enp1s0`).
    pub name: String,
    /// MAC address.
    pub mac: String,
    /// Kernel driver.
    pub driver: String,
    /// Link speed; 0 when unknown.
    pub speed_mbps: u32,
    /// Carrier present.
    pub link_up: bool,
    /// Addresses with prefix length (`10.0.0.5/24`).
    pub addresses: Vec<String>,
    /// The switch port at the other end, when the switch speaks LLDP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lldp: Option<LldpNeighbour>,
}

/// What a switch says about itself in LLDP (IEEE 802.1AB): enough for an
/// operator (and a rule) to know where a machine is cabled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LldpNeighbour {
    /// Chassis id, as text (a MAC in `aa:bb:…` form when it is one).
    pub chassis_id: String,
    /// Port id, as text (`Ethernet1/7`, `ge-0/0/7`, or a MAC).
    pub port_id: String,
    /// System name (the switch's hostname), when sent.
    pub system_name: String,
    /// Port description, when sent.
    pub port_description: String,
}

/// The answer to `POST /hardware/{id}/enroll`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The record, now enrolled.
    pub hardware: crate::Hardware,
    /// The workflow created, if a template was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<crate::Workflow>,
}

/// The answer to `POST /rules/test`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleTest {
    /// Every rule's verdict, in the order they are tried.
    pub verdicts: Vec<crate::discovery::rule::Verdict>,
    /// The rule that would enrol the machine, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
    /// The record it would produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<crate::Hardware>,
    /// The workflow request it would make.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<crate::api::NewWorkflow>,
    /// Why nothing would happen (not discovered, a rule's result invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The answer to `POST /workflow-sets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSet {
    /// Machines the selector took (ids).
    pub machines: Vec<String>,
    /// Workflows created (none on a dry run).
    pub workflows: Vec<crate::Workflow>,
}
