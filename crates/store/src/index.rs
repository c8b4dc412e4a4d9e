//! An in-memory index of hardware by MAC and IP, kept current by the store.
//!
//! Network services answer from here, never from a query in their request
//! path: a DHCP reply or a metadata lookup is a hash-map read, and a
//! `hardware push` is visible to all of them as soon as it commits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bellows_model::{Hardware, MacAddr};

use crate::shared::Shared;

#[derive(Default)]
struct Maps {
    by_id: HashMap<String, Arc<Hardware>>,
    by_mac: HashMap<MacAddr, Arc<Hardware>>,
    by_ip: HashMap<IpAddr, Arc<Hardware>>,
}

impl Maps {
    fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            // Only the entries still this record's: a MAC or IP that has
            // since moved to another record (its update applied first)
            // stays with it.
            for mac in old.macs() {
                if self.by_mac.get(&mac).is_some_and(|h| h.id == id) {
                    self.by_mac.remove(&mac);
                }
            }
            for ip in old.ips() {
                if self.by_ip.get(&ip).is_some_and(|h| h.id == id) {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }

    fn insert(&mut self, hw: Hardware) {
        self.remove(&hw.id);
        let hw = Arc::new(hw);
        for mac in hw.macs() {
            self.by_mac.insert(mac, hw.clone());
        }
        for ip in hw.ips() {
            self.by_ip.insert(ip, hw.clone());
        }
        self.by_id.insert(hw.id.clone(), hw);
    }
}

/// Read-mostly hardware lookups for the network services.
///
/// Owned by the store, which updates it after each commit and before the
/// write returns: once a `hardware push` is acknowledged, the very next DHCP
/// packet or metadata request sees it.
pub struct HardwareIndex {
    maps: Shared<Maps>,
}

impl HardwareIndex {
    /// An index holding `all`.
    pub(crate) fn new(all: Vec<Hardware>) -> HardwareIndex {
        let index = HardwareIndex {
            maps: Shared::default(),
        };
        index.replace_all(all);
        index
    }

    /// Replaces the whole content (initial load, or after missed changes).
    pub(crate) fn replace_all(&self, all: Vec<Hardware>) {
        let mut maps = Maps::default();
        for hw in all {
            maps.insert(hw);
        }
        *self.maps.write() = maps;
    }

    /// Adds or replaces one record.
    pub(crate) fn upsert(&self, hw: Hardware) {
        self.maps.write().insert(hw);
    }

    /// Drops one record.
    pub(crate) fn remove(&self, id: &str) {
        self.maps.write().remove(id);
    }

    /// The machine owning this MAC.
    pub fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        self.maps.read().by_mac.get(&mac).cloned()
    }

    /// The machine with this reserved IP.
    pub fn by_ip(&self, ip: IpAddr) -> Option<Arc<Hardware>> {
        // An IPv4-mapped IPv6 peer (dual-stack socket) is the IPv4 machine.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.maps.read().by_ip.get(&ip).cloned()
    }

    /// The machine with this id.
    pub fn by_id(&self, id: &str) -> Option<Arc<Hardware>> {
        self.maps.read().by_id.get(id).cloned()
    }

    /// Number of machines for which `f` holds (a scan: for rare questions,
    /// such as how many machines wait in discovery).
    pub fn count_where(&self, f: impl Fn(&Hardware) -> bool) -> usize {
        self.maps.read().by_id.values().filter(|hw| f(hw)).count()
    }

    /// Number of machines indexed.
    pub fn len(&self) -> usize {
        self.maps.read().by_id.len()
    }

    /// True when no machine is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use crate::{SqlStore, Store};
    use bellows_model::{Hardware, MacAddr};

    fn hw(id: &str, mac: &str, ip: &str) -> Hardware {
        Hardware::from_value(serde_json::json!({
            "id": id,
            "network": {"interfaces": [{"dhcp": {"mac": mac, "ip": {"address": ip}}}]}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn is_current_as_soon_as_a_write_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open_sqlite(dir.path(), crate::SecretKey::from_bytes(&[1; 32]))
            .await
            .unwrap();
        store
            .push_hardware(hw("a", "02:00:00:00:00:01", "10.0.0.1"))
            .await
            .unwrap();
        drop(store);
        // Loaded at open.
        let store = SqlStore::open_sqlite(dir.path(), crate::SecretKey::from_bytes(&[1; 32]))
            .await
            .unwrap();
        let index = store.index();
        let mac1: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(index.by_mac(mac1).unwrap().id, "a");

        store
            .push_hardware(hw("b", "02:00:00:00:00:02", "10.0.0.2"))
            .await
            .unwrap();
        assert_eq!(index.by_ip("10.0.0.2".parse().unwrap()).unwrap().id, "b");

        // Re-addressing drops the old IP.
        store
            .push_hardware(hw("a", "02:00:00:00:00:01", "10.0.0.9"))
            .await
            .unwrap();
        assert!(index.by_ip("10.0.0.9".parse().unwrap()).is_some());
        assert!(index.by_ip("10.0.0.1".parse().unwrap()).is_none());
        assert!(index.by_ip("::ffff:10.0.0.9".parse().unwrap()).is_some());

        // A refused write leaves it alone.
        assert!(
            store
                .push_hardware(hw("c", "02:00:00:00:00:02", "10.0.0.3"))
                .await
                .is_err()
        );
        assert!(index.by_id("c").is_none());
        assert!(index.by_ip("10.0.0.3".parse().unwrap()).is_none());

        store.delete_hardware("a").await.unwrap();
        assert!(index.by_mac(mac1).is_none());
        assert_eq!(index.len(), 1);
    }
}
