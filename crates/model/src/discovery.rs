//! Discovery: machines nobody typed in. An unknown machine that
//! network-boots (with `--discovery`) runs the in-memory OS in discovery
//! mode, reports its inventory, and becomes a hardware record in state
//! `discovered`; ordered [`rule`]s then turn it into a provisioned machine
//! with a workflow, or an operator enrols it by hand.
//!
//! Everything here is pure: the record a report becomes
//! ([`discovered_record`]), the address pool's bounds ([`Pool`]), and the
//! rules (matching and what they set).

pub mod rule;

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::Facts;
use crate::hardware::{Dhcp, Hardware, Interface, IpConfig, Netboot, Network};
use crate::mac::MacAddr;

/// Where a discovered record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryState {
    /// Reported its inventory; no rule matched and nobody enrolled it yet:
    /// it gets no workflow and no secret, and boots discovery again.
    Discovered,
    /// A rule or an operator made it an ordinary machine.
    Enrolled,
}

impl DiscoveryState {
    /// The name `hardware list --state` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryState::Discovered => "discovered",
            DiscoveryState::Enrolled => "enrolled",
        }
    }
}

/// What discovery knows about a machine it created (the `discovery` field
/// of a hardware record; absent on records an operator pushed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    /// Discovered or enrolled.
    pub state: DiscoveryState,
    /// The inventory its worker reported, newest.
    pub inventory: Facts,
    /// Unix milliseconds of the first report.
    pub first_seen: i64,
    /// Unix milliseconds of the newest report.
    pub last_seen: i64,
    /// Who enrolled it: `rule:<name>` or `operator:<token name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_by: Option<String>,
}

/// A machine's lifecycle state as `hardware list --state` filters it:
/// `discovered`, `enrolled` (discovered, then enrolled) or `registered`
/// (pushed by an operator).
pub fn hardware_state(hw: &Hardware) -> &'static str {
    match &hw.discovery {
        Some(d) => d.state.as_str(),
        None => "registered",
    }
}

/// Is this record waiting in discovery (no workflow may be made for it by
/// the boot path, and its boot is the discovery OS)?
pub fn is_discovered(hw: &Hardware) -> bool {
    hw.discovery
        .as_ref()
        .is_some_and(|d| d.state == DiscoveryState::Discovered)
}

/// The id a discovered machine's record gets: stable per MAC, so a machine
/// that reports twice (or two servers that see it) make one record.
pub fn discovered_id(mac: MacAddr) -> String {
    let hex: String = mac.to_string().split(':').collect();
    format!("discovered-{hex}")
}

/// The pool unknown machines are addressed from in reservation mode, and
/// the network settings their lease carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// First address handed out.
    pub first: Ipv4Addr,
    /// Last address handed out (inclusive).
    pub last: Ipv4Addr,
    /// Subnet mask of the leases.
    pub netmask: Option<Ipv4Addr>,
    /// Default route of the leases.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers of the leases.
    pub name_servers: Vec<Ipv4Addr>,
}

/// Largest pool accepted: its leases are kept in memory, one per address.
pub const MAX_POOL_ADDRESSES: u32 = 65_536;

/// A pool that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Not `FIRST-LAST`.
    #[error("{0:?} is not an address range: write FIRST-LAST, e.g. 10.0.0.100-10.0.0.199")]
    Syntax(String),
    /// Last before first.
    #[error("the range {0}-{1} ends before it starts")]
    Backwards(Ipv4Addr, Ipv4Addr),
    /// Too many addresses to keep leases for.
    #[error("the range has {0} addresses; at most {MAX_POOL_ADDRESSES} can be leased")]
    TooLarge(u64),
}

impl Pool {
    /// Parses `FIRST-LAST` (IPv4).
    pub fn parse_range(text: &str) -> Result<(Ipv4Addr, Ipv4Addr), PoolError> {
        let syntax = || PoolError::Syntax(text.chars().take(64).collect());
        let (a, b) = text.trim().split_once('-').ok_or_else(syntax)?;
        let first: Ipv4Addr = a.trim().parse().map_err(|_| syntax())?;
        let last: Ipv4Addr = b.trim().parse().map_err(|_| syntax())?;
        if u32::from(last) < u32::from(first) {
            return Err(PoolError::Backwards(first, last));
        }
        let size = u64::from(u32::from(last)) - u64::from(u32::from(first)) + 1;
        if size > u64::from(MAX_POOL_ADDRESSES) {
            return Err(PoolError::TooLarge(size));
        }
        Ok((first, last))
    }

    /// How many addresses the pool holds.
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Never true for a parsed pool; here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `n`th address of the pool, if there is one.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        (n < self.len()).then(|| Ipv4Addr::from(u32::from(self.first) + n))
    }

    /// Is `ip` one of the pool's addresses?
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(v4))
            }
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
        }
    }

    /// The reservation a pool address stands for (address, mask, gateway,
    /// DNS), as a record holds it.
    pub fn reservation(&self, address: Ipv4Addr) -> IpConfig {
        IpConfig {
            address: IpAddr::V4(address),
            netmask: self.netmask,
            gateway: self.gateway.map(IpAddr::V4),
            family: Some(4),
            extra: Map::new(),
        }
    }
}

/// A record for a machine only the network has seen: its boot NIC `mac`,
/// leased `ip` (reservation mode) or none (proxy mode), no metadata, a
/// lease of `lease_time` seconds. DHCP and iPXE answer an unknown MAC with
/// this (id empty, not stored); a report stores it under
/// [`discovered_id`] with the inventory.
pub fn transient_record(
    mac: MacAddr,
    ip: Option<IpConfig>,
    name_servers: &[Ipv4Addr],
    lease_time: Option<u64>,
) -> Hardware {
    Hardware {
        id: String::new(),
        metadata: Value::Null,
        network: Network {
            interfaces: vec![Interface {
                dhcp: Some(Dhcp {
                    mac,
                    ip,
                    hostname: None,
                    lease_time,
                    name_servers: (!name_servers.is_empty())
                        .then(|| name_servers.iter().copied().map(IpAddr::V4).collect()),
                    time_servers: None,
                    arch: None,
                    uefi: None,
                    iface_name: None,
                    vlan_id: None,
                    extra: Map::new(),
                }),
                netboot: Some(Netboot {
                    allow_pxe: Some(true),
                    allow_workflow: Some(false),
                    ..Netboot::default()
                }),
                disable_dhcp: false,
                extra: Map::new(),
            }],
            extra: Map::new(),
        },
        disks: Vec::new(),
        user_data: None,
        vendor_data: None,
        bmc_ref: None,
        resource: None,
        discovery: Some(Discovery {
            state: DiscoveryState::Discovered,
            inventory: Facts::default(),
            first_seen: 0,
            last_seen: 0,
            enrolled_by: None,
        }),
        extra: Map::new(),
    }
}

/// The record a first report makes: [`transient_record`] under
/// [`discovered_id`], with the inventory, the disks it found (for
/// templates' `.Hardware.Disks`), and the manufacturer in the metadata.
pub fn discovered_record(
    mac: MacAddr,
    ip: Option<IpConfig>,
    name_servers: &[Ipv4Addr],
    inventory: Facts,
    now_ms: i64,
) -> Hardware {
    let mut hw = transient_record(mac, ip, name_servers, None);
    hw.id = discovered_id(mac);
    if let Some(netboot) = hw.network.interfaces[0].netboot.as_mut() {
        // Rules and `hardware enroll` switch workflows on.
        netboot.allow_workflow = Some(true);
    }
    hw.metadata = serde_json::json!({
        "manufacturer": {
            "slug": inventory.dmi("sys_vendor"),
        },
        "instance": {},
    });
    hw.disks = disk_list(&inventory);
    hw.discovery = Some(Discovery {
        state: DiscoveryState::Discovered,
        inventory,
        first_seen: now_ms,
        last_seen: now_ms,
        enrolled_by: None,
    });
    hw
}

/// A newer report of a machine already discovered: its inventory and
/// disks replaced, its state and everything an operator set kept.
pub fn update_inventory(hw: &mut Hardware, inventory: Facts, now_ms: i64) {
    hw.disks = disk_list(&inventory);
    if let Some(d) = hw.discovery.as_mut() {
        d.inventory = inventory;
        d.last_seen = now_ms;
    }
}

/// `/dev/<name>` of each fixed disk, in the order the kernel lists them.
fn disk_list(inventory: &Facts) -> Vec<crate::hardware::Disk> {
    inventory
        .disks
        .iter()
        .filter(|d| !d.removable && !d.name.is_empty())
        .map(|d| crate::hardware::Disk {
            device: format!("/dev/{}", d.name),
            extra: Map::new(),
        })
        .collect()
}

/// Marks `hw` enrolled by `by` (`rule:<name>`, `operator:<name>`).
pub fn mark_enrolled(hw: &mut Hardware, by: String) {
    if let Some(d) = hw.discovery.as_mut() {
        d.state = DiscoveryState::Enrolled;
        d.enrolled_by = Some(by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_are_bounded() {
        let (a, b) = Pool::parse_range("10.0.0.100-10.0.0.199").unwrap();
        let pool = Pool {
            first: a,
            last: b,
            netmask: None,
            gateway: None,
            name_servers: vec![],
        };
        assert_eq!(pool.len(), 100);
        assert_eq!(pool.nth(99), Some(Ipv4Addr::new(10, 0, 0, 199)));
        assert_eq!(pool.nth(100), None);
        assert!(pool.contains("10.0.0.150".parse().unwrap()));
        assert!(!pool.contains("10.0.0.99".parse().unwrap()));
        assert!(pool.contains("::ffff:10.0.0.100".parse().unwrap()));
        assert!(matches!(
            Pool::parse_range("10.0.0.9-10.0.0.1"),
            Err(PoolError::Backwards(..))
        ));
        assert!(matches!(
            Pool::parse_range("10.0.0.0-10.2.0.0"),
            Err(PoolError::TooLarge(131_073))
        ));
        assert!(matches!(
            Pool::parse_range("10.0.0.1"),
            Err(PoolError::Syntax(_))
        ));
    }

    #[test]
    fn a_discovered_record_survives_the_hardware_round_trip() {
        let mac: MacAddr = "52:54:00:be:00:01".parse().unwrap();
        let mut facts = Facts {
            memory_bytes: 1 << 30,
            ..Facts::default()
        };
        facts.extra = serde_json::json!({"sys_vendor": "QEMU"});
        facts.disks.push(crate::api::DiskFacts {
            name: "vda".into(),
            size_bytes: 2 << 30,
            ..Default::default()
        });
        let pool = Pool {
            first: Ipv4Addr::new(10, 0, 0, 100),
            last: Ipv4Addr::new(10, 0, 0, 110),
            netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            gateway: None,
            name_servers: vec![],
        };
        let hw = discovered_record(
            mac,
            Some(pool.reservation(Ipv4Addr::new(10, 0, 0, 100))),
            &[],
            facts,
            5,
        );
        assert_eq!(hw.id, "discovered-525400be0001");
        assert_eq!(hardware_state(&hw), "discovered");
        assert_eq!(hw.disk_devices(), vec!["/dev/vda".to_string()]);
        let text = serde_json::to_vec(&hw).unwrap();
        let back = Hardware::from_json(&text).unwrap();
        assert_eq!(back, hw);
        assert!(is_discovered(&back));
    }
}
