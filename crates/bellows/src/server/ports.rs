//! The store seen through each service's port: DHCP, iPXE, metadata and
//! syslog each declare the few questions they ask (`bellows_dhcp::Lookup`,
//! `bellows_ipxe::http::BootLookup`, `bellows_metadata::MachineByAddress`,
//! `bellows_syslog::LogSink`), and this one adapter answers them all. The
//! service crates never see the 30-method `Store`.

use std::net::IpAddr;
use std::sync::Arc;

use bellows_model::auth::{WORKER_TOKEN_PREFIX, WorkerCredential, token_digest};
use bellows_model::discovery::transient_record;
use bellows_model::timeline::{Recorder, Step};
use bellows_model::{Hardware, LogEntry, MacAddr};
use bellows_store::group::{GroupCommit, WriteBatch};
use bellows_store::{AuthStore, HardwareIndex, Store, WorkflowFilter, now_ms};

/// Answers the services' lookups from the store's in-memory index, and
/// workflow and log questions from the store itself.
pub struct StorePorts {
    store: Arc<dyn Store>,
    index: Arc<HardwareIndex>,
    /// Where per-boot credentials are stored, in groups (a boot storm
    /// mints thousands a second); `None` under `--insecure`.
    credentials: Option<CredentialQueue>,
    /// Where the services' boot steps go (each machine's timeline).
    timeline: Option<Arc<dyn Recorder>>,
    /// Discovery, when on: unknown MACs are answered as transient records.
    discovery: Option<Discovery>,
}

/// What the ports need for discovery.
pub struct Discovery {
    /// Leases for unknown machines (reservation mode); none in proxy mode.
    pub pool: Option<std::sync::Mutex<bellows_dhcp::LeasePool>>,
    /// Lease length, seconds.
    pub lease_secs: u64,
    /// Signs discovery credentials; `None` under `--insecure`.
    pub tokens: Option<bellows_api::discovery::DiscoveryTokens>,
}

impl Discovery {
    /// The transient record DHCP answers an unknown `mac` with: a new or
    /// renewed lease (reservation mode; `None` when the pool is full), or
    /// boot information only (proxy mode).
    fn lease(&self, mac: MacAddr, index: &HardwareIndex) -> Option<Arc<Hardware>> {
        self.transient(mac, |pool| {
            pool.lease(mac, now_ms(), |ip| index.by_ip(IpAddr::V4(ip)).is_some())
        })
    }

    /// The same for the boot script: never leases, only reads the lease
    /// DHCP gave (so the script is bound to that address).
    fn current(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        self.transient(mac, |pool| pool.current(mac, now_ms()))
    }

    /// The transient record for `mac` with the address `address` picks
    /// from the pool (none: no record); without a pool, boot info only.
    fn transient(
        &self,
        mac: MacAddr,
        address: impl FnOnce(&mut bellows_dhcp::LeasePool) -> Option<std::net::Ipv4Addr>,
    ) -> Option<Arc<Hardware>> {
        let Some(pool) = &self.pool else {
            return Some(Arc::new(transient_record(mac, None, &[], None)));
        };
        let mut pool = pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ip = address(&mut pool)?;
        let p = pool.pool();
        Some(Arc::new(transient_record(
            mac,
            Some(p.reservation(ip)),
            &p.name_servers,
            Some(self.lease_secs),
        )))
    }
}

/// Credentials written together; every caller learns the batch's outcome.
type CredentialQueue = GroupCommit<WorkerCredential, Result<(), String>>;

fn credential_queue(auth: Arc<dyn AuthStore>) -> CredentialQueue {
    let write: WriteBatch<WorkerCredential, Result<(), String>> = Arc::new(move |batch| {
        let auth = auth.clone();
        Box::pin(async move {
            let outcome = auth
                .put_worker_credentials(&batch)
                .await
                .map_err(|e| e.to_string());
            vec![outcome; batch.len()]
        })
    });
    GroupCommit::new(write)
}

impl StorePorts {
    /// An adapter over `store`, minting worker credentials into
    /// `credentials` (none under `--insecure`).
    pub fn new(store: Arc<dyn Store>, credentials: Option<Arc<dyn AuthStore>>) -> StorePorts {
        let index = store.index();
        let credentials = credentials.map(credential_queue);
        StorePorts {
            store,
            index,
            credentials,
            timeline: None,
            discovery: None,
        }
    }

    /// Answers unknown machines for discovery.
    pub fn with_discovery(mut self, discovery: Discovery) -> StorePorts {
        self.discovery = Some(discovery);
        self
    }

    /// Records the services' boot steps with `recorder`.
    pub fn with_timeline(mut self, recorder: Arc<dyn Recorder>) -> StorePorts {
        self.timeline = Some(recorder);
        self
    }

    /// Notes a step of the machine that holds `hardware_id`.
    pub fn record(&self, hardware_id: &str, step: Step, detail: String) {
        if let Some(timeline) = &self.timeline {
            timeline.record(hardware_id, step, detail);
        }
    }

    /// Notes a step of the machine reserved `ip`, if one is, taken at
    /// `at` (Unix milliseconds).
    pub fn record_by_ip(&self, ip: IpAddr, at: i64, step: Step, detail: impl FnOnce() -> String) {
        if let Some(timeline) = &self.timeline
            && let Some(hw) = self.index.by_ip(ip)
        {
            timeline.record_at(&hw.id, at, step, detail());
        }
    }
}

impl bellows_dhcp::Lookup for StorePorts {
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        self.index
            .by_mac(mac)
            .or_else(|| self.discovery.as_ref()?.lease(mac, &self.index))
    }

    fn replied(&self, reply: &bellows_dhcp::Reply) {
        use bellows_dhcp::{BootPlan, MessageType};
        let step = match reply.message_type {
            MessageType::Offer => Step::DhcpOffer,
            MessageType::Ack => Step::DhcpAck,
            _ => return,
        };
        if self.timeline.is_none() {
            return;
        }
        let Some(hw) = self.index.by_mac(reply.mac) else {
            return;
        };
        let boot = match &reply.boot {
            Some(BootPlan::Tftp { next_server, file }) => {
                format!("firmware: boot file {file} by TFTP from {next_server}")
            }
            Some(BootPlan::Http { url }) => format!("UEFI HTTP boot: {url}"),
            Some(BootPlan::Script { url }) => format!("iPXE: script {url}"),
            Some(BootPlan::Nothing(reason)) => format!("no boot file: {reason}"),
            None => "address only".to_string(),
        };
        let detail = if reply.yiaddr.is_unspecified() {
            format!("{} (proxy) {boot}", reply.mac)
        } else {
            format!("{} → {}; {boot}", reply.mac, reply.yiaddr)
        };
        self.record(&hw.id, step, detail);
    }
}

impl bellows_metadata::MachineByAddress for StorePorts {
    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Hardware>> {
        self.index.by_ip(ip)
    }

    fn served(&self, hw: &Hardware, ip: IpAddr) {
        self.record(&hw.id, Step::Metadata, format!("from {ip}"));
    }
}

#[async_trait::async_trait]
impl bellows_ipxe::http::BootLookup for StorePorts {
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        self.index
            .by_mac(mac)
            .or_else(|| self.discovery.as_ref()?.current(mac))
    }

    async fn mint_discovery_credential(
        &self,
        hw: &Hardware,
        mac: MacAddr,
    ) -> Result<Option<String>, bellows_ipxe::http::LookupError> {
        let Some(tokens) = self.discovery.as_ref().and_then(|d| d.tokens.as_ref()) else {
            return Ok(None);
        };
        let address = hw
            .interface_by_mac(mac)
            .and_then(|i| i.dhcp.as_ref())
            .and_then(|d| d.ip.as_ref())
            .map(|ip| ip.address);
        tracing::info!(%mac, bound_to = ?address, "minted a discovery credential");
        Ok(Some(tokens.mint(mac, address, now_ms())))
    }

    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Hardware>> {
        self.index.by_ip(ip)
    }

    fn script_served(&self, hw: &Hardware, mac: MacAddr, choice: &bellows_ipxe::ScriptChoice) {
        use bellows_ipxe::ScriptChoice;
        let detail = match choice {
            ScriptChoice::Install => format!("{mac}: the in-memory OS, to run a workflow"),
            ScriptChoice::LocalBoot(why) => format!("{mac}: local boot ({why})"),
            ScriptChoice::Chain(url) => format!("{mac}: chain {url}"),
            ScriptChoice::Inline(_) => format!("{mac}: the record's own script"),
            ScriptChoice::Discover => format!("{mac}: the in-memory OS, to report its inventory"),
        };
        if hw.id.is_empty() {
            // An unknown machine: no record to note it in yet.
            return;
        }
        self.record(&hw.id, Step::Script, detail);
    }

    async fn waiting_workflow(
        &self,
        hw: &Hardware,
        mac: MacAddr,
    ) -> Result<Option<String>, bellows_ipxe::http::LookupError> {
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
            if let Some(wf) = found.into_iter().next() {
                return Ok(Some(wf.id));
            }
        }
        Ok(None)
    }

    async fn mint_credential(
        &self,
        hw: &Hardware,
        mac: MacAddr,
        workflow_id: &str,
    ) -> Result<Option<String>, bellows_ipxe::http::LookupError> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let lookup = |e: String| bellows_ipxe::http::LookupError(e);
        let token =
            bellows_api::auth::new_token(WORKER_TOKEN_PREFIX).map_err(|e| lookup(e.to_string()))?;
        let address = hw
            .interface_by_mac(mac)
            .and_then(|i| i.dhcp.as_ref())
            .and_then(|d| d.ip.as_ref())
            .map(|ip| ip.address.to_string());
        let credential = WorkerCredential {
            digest: token_digest(&token),
            worker: mac.to_string(),
            hardware_id: hw.id.clone(),
            workflow_id: workflow_id.to_string(),
            address,
            issued_at: now_ms(),
        };
        let (workflow, bound_to) = (credential.workflow_id.clone(), credential.address.clone());
        credentials
            .submit(credential)
            .await
            .map_err(|e| lookup(e.to_string()))?
            .map_err(lookup)?;
        tracing::info!(%mac, hardware = %hw.id, %workflow,
            bound_to = bound_to.as_deref().unwrap_or("-"),
            "minted the worker's per-boot credential");
        Ok(Some(token))
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

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use bellows_dhcp::responder::{Arrival, Decision, Service, respond};
    use bellows_dhcp::{DhcpConfig, LeasePool, Lookup};
    use bellows_model::discovery::Pool;
    use bellows_store::{SecretKey, SqlStore};
    use dhcproto::v4::{self, DhcpOption, Message};
    use dhcproto::{Encodable, Encoder};

    use super::*;

    fn discover(mac: MacAddr) -> Vec<u8> {
        let mut msg = Message::new_with_id(
            0x1234_5678,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac.octets(),
        );
        msg.opts_mut()
            .insert(DhcpOption::MessageType(v4::MessageType::Discover));
        let mut buf = Vec::new();
        msg.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    fn offered(decision: Decision) -> Option<Ipv4Addr> {
        match decision {
            Decision::Reply(r) => Some(r.yiaddr),
            Decision::Drop(_) => None,
        }
    }

    /// The attack: 5,000 made-up MACs ask for addresses. They share the
    /// discovery pool (50 here) and nothing else; the known machine still
    /// gets its reservation, the lease table never holds more than the
    /// pool, and no record is written for any of them.
    #[tokio::test]
    async fn five_thousand_unknown_macs_cannot_exhaust_the_known_machines_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = SecretKey::load_or_create(&dir.path().join("key")).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path(), key).await.unwrap());
        let known = Hardware::from_json(
            br#"{"id":"known","network":{"interfaces":[{"dhcp":{"mac":"02:00:00:00:00:01",
                "ip":{"address":"10.0.0.105","netmask":"255.255.255.0"}}}]}}"#,
        )
        .unwrap();
        store.push_hardware(known).await.unwrap();
        let pool = Pool {
            first: Ipv4Addr::new(10, 0, 0, 100),
            last: Ipv4Addr::new(10, 0, 0, 149),
            netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            gateway: None,
            name_servers: vec![],
        };
        let ports = StorePorts::new(store.clone(), None).with_discovery(Discovery {
            pool: Some(std::sync::Mutex::new(LeasePool::new(pool, 600))),
            lease_secs: 600,
            tokens: None,
        });
        let cfg = DhcpConfig::default();
        let arrival = Arrival {
            service: Service::Dhcp,
            local_addr: Ipv4Addr::new(10, 0, 0, 1),
            netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            source: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        };
        let mut leased = std::collections::BTreeSet::new();
        for i in 0..5_000u32 {
            let b = i.to_be_bytes();
            let mac = MacAddr([0x02, 0xbd, b[0], b[1], b[2], b[3]]);
            if let Some(ip) = offered(respond(&discover(mac), &arrival, &cfg, &ports)) {
                assert_ne!(
                    ip,
                    Ipv4Addr::new(10, 0, 0, 105),
                    "a reserved address was leased"
                );
                leased.insert(ip);
            }
        }
        // 50 addresses, one of them reserved for the known machine.
        assert_eq!(leased.len(), 49);
        let pool_len = ports
            .discovery
            .as_ref()
            .and_then(|d| d.pool.as_ref())
            .map(|p| p.lock().unwrap().len());
        assert_eq!(pool_len, Some(49));
        let known_mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(
            offered(respond(&discover(known_mac), &arrival, &cfg, &ports)),
            Some(Ipv4Addr::new(10, 0, 0, 105))
        );
        assert_eq!(store.list_hardware().await.unwrap().len(), 1);
        assert!(ports.by_mac(known_mac).is_some());
    }

    /// Discovery off: an unknown MAC gets nothing at all.
    #[tokio::test]
    async fn without_discovery_unknown_macs_get_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = SecretKey::load_or_create(&dir.path().join("key")).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path(), key).await.unwrap());
        let ports = StorePorts::new(store, None);
        let mac: MacAddr = "02:bd:00:00:00:01".parse().unwrap();
        assert!(Lookup::by_mac(&ports, mac).is_none());
        assert!(bellows_ipxe::http::BootLookup::by_mac(&ports, mac).is_none());
    }
}
