//! The store seen through each service's port: DHCP, iPXE, metadata and
//! syslog each declare the few questions they ask (`bellows_dhcp::Lookup`,
//! `bellows_ipxe::http::BootLookup`, `bellows_metadata::MachineByAddress`,
//! `bellows_syslog::LogSink`), and this one adapter answers them all. The
//! service crates never see the 30-method `Store`.

use std::net::IpAddr;
use std::sync::Arc;

use bellows_model::{Hardware, LogEntry, MacAddr};
use bellows_store::{HardwareIndex, Store, WorkflowFilter};

/// Answers the services' lookups from the store's in-memory index, and
/// workflow and log questions from the store itself.
pub struct StorePorts {
    store: Arc<dyn Store>,
    index: Arc<HardwareIndex>,
}

impl StorePorts {
    /// An adapter over `store`.
    pub fn new(store: Arc<dyn Store>) -> StorePorts {
        let index = store.index();
        StorePorts { store, index }
    }
}

impl bellows_dhcp::Lookup for StorePorts {
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        self.index.by_mac(mac)
    }
}

impl bellows_metadata::MachineByAddress for StorePorts {
    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Hardware>> {
        self.index.by_ip(ip)
    }
}

#[async_trait::async_trait]
impl bellows_ipxe::http::BootLookup for StorePorts {
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        self.index.by_mac(mac)
    }

    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Hardware>> {
        self.index.by_ip(ip)
    }

    async fn workflow_waiting(
        &self,
        hw: &Hardware,
        mac: MacAddr,
    ) -> Result<bool, bellows_ipxe::http::LookupError> {
        // A task names its worker by MAC or by hardware id.
        for worker in [mac.to_string(), hw.id.clone()] {
            let filter = WorkflowFilter {
                state: None,
                worker: Some(worker),
                active: true,
            };
            let found = self
                .store
                .list_workflows(&filter)
                .await
                .map_err(|e| bellows_ipxe::http::LookupError(e.to_string()))?;
            if !found.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[async_trait::async_trait]
impl bellows_syslog::LogSink for StorePorts {
    fn machine_at(&self, ip: IpAddr) -> Option<String> {
        self.index.by_ip(ip).map(|hw| hw.id.clone())
    }

    async fn append(&self, lines: &[LogEntry]) -> Result<(), bellows_syslog::SinkError> {
        self.store
            .append_logs(lines)
            .await
            .map_err(|e| bellows_syslog::SinkError(e.to_string()))
    }
}
