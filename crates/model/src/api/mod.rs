//! The management API's wire types, shared by the server (`bellows-api`)
//! and the CLI: the server serializes exactly these, and the CLI reads its
//! answers into them, so a renamed field breaks the build rather than a
//! table column.
//!
//! Records the store also keeps ([`TemplateRecord`], [`EventRecord`],
//! [`BmcRecord`], the logs, [`InventoryRecord`]) live here too; the store
//! re-exports them. Hardware and workflows are [`crate::Hardware`] and
//! [`crate::Workflow`] themselves.

use serde::{Deserialize, Serialize};

mod bmc;
mod records;
mod requests;

pub use bmc::{BmcJob, BmcRecord, BmcView, PowerReading};
pub use records::{
    ActionLogLine, ActionLogRecord, CpuFacts, DiskFacts, Enrolled, EventRecord, Facts,
    InventoryRecord, LldpNeighbour, LogEntry, LogRecord, NicFacts, RuleTest, TemplateRecord,
    UNKNOWN_SENDER_PREFIX, WorkflowSet,
};
pub use requests::{
    BootDeviceRequest, CancelWorkflow, EnrollRequest, NetbootRequest, NewTemplate, NewWorkflow,
    PowerRequest, RuleSource, RuleTestRequest, SetBmc, TemplateUpdate, WorkflowSetRequest,
};

/// Every listing (`GET /hardware`, `/templates`, `/workflows`, `/bmcs`,
/// events and logs) is an object with one `items` array, so a listing can
/// later carry paging fields without breaking clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    /// The entries, in the server's order.
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

/// Where the boot services are, as machines see them (`GET /boot`), for
/// clients that write configuration for other programs (`bellows
/// dhcp-config`, `bellows ipxe ovh-script`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    /// Address machines reach Bellows at.
    pub public_ip: String,
    /// Base URL of the HTTP boot service (`http://IP:PORT`).
    pub http_base: String,
    /// TFTP server address, if TFTP is on.
    pub tftp_server: Option<String>,
    /// Syslog host (`IP` or `IP:PORT`), if the receiver is on.
    pub syslog: Option<String>,
    /// DHCP mode the server runs (`reservation`, `proxy`, `off`).
    pub dhcp_mode: String,
}

impl<T> From<Vec<T>> for List<T> {
    fn from(items: Vec<T>) -> List<T> {
        List { items }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_an_object_with_items() {
        let list = List::from(vec![1, 2]);
        assert_eq!(serde_json::to_string(&list).unwrap(), r#"{"items":[1,2]}"#);
        let empty: List<u8> = serde_json::from_str("{}").unwrap();
        assert!(empty.items.is_empty());
    }
}
