//! Leases for machines nobody registered (discovery, reservation mode).
//! IO-free: the caller passes the time and says which addresses records
//! already hold. Memory is bounded by the pool: one lease per address, at
//! most, and a full pool answers "none" at once until a lease expires, so
//! a flood of unknown MACs costs neither memory nor a scan per packet.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bellows_model::MacAddr;
use bellows_model::discovery::Pool;

/// One unknown machine's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    ip: Ipv4Addr,
    expires_ms: i64,
}

/// Leases of a [`Pool`] to unknown MACs.
#[derive(Debug)]
pub struct LeasePool {
    pool: Pool,
    lease_ms: i64,
    by_mac: HashMap<MacAddr, Lease>,
    by_ip: HashMap<Ipv4Addr, MacAddr>,
    /// Where the next scan for a free address starts.
    cursor: u32,
    /// A scan found the pool full: nothing frees before this time.
    full_until_ms: Option<i64>,
    /// Requests refused because the pool was full.
    refused: u64,
}

impl LeasePool {
    /// Leases of `lease_secs` seconds from `pool`.
    pub fn new(pool: Pool, lease_secs: u64) -> LeasePool {
        LeasePool {
            pool,
            lease_ms: i64::try_from(lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            by_mac: HashMap::new(),
            by_ip: HashMap::new(),
            cursor: 0,
            full_until_ms: None,
            refused: 0,
        }
    }

    /// The pool leases come from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Leases held now (expired ones included until reused).
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    /// No lease held.
    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    /// Requests refused because every address was leased.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// `mac`'s address, if it holds an unexpired lease: what the boot
    /// script and the worker's report are checked against (they never
    /// lease).
    pub fn current(&self, mac: MacAddr, now_ms: i64) -> Option<Ipv4Addr> {
        self.by_mac
            .get(&mac)
            .filter(|l| l.expires_ms > now_ms)
            .map(|l| l.ip)
    }

    /// The address for `mac` (renewed when it has one), or `None` when the
    /// pool is full. `held(ip)` says a record owns `ip`: such addresses
    /// are never leased.
    pub fn lease(
        &mut self,
        mac: MacAddr,
        now_ms: i64,
        held: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let expires_ms = now_ms.saturating_add(self.lease_ms);
        if let Some(lease) = self.by_mac.get_mut(&mac) {
            if !held(lease.ip) {
                lease.expires_ms = expires_ms;
                return Some(lease.ip);
            }
            // A record took the address since: give this MAC another.
            let ip = lease.ip;
            self.by_mac.remove(&mac);
            self.by_ip.remove(&ip);
        }
        if self.full_until_ms.is_some_and(|t| now_ms < t) {
            self.refused += 1;
            return None;
        }
        let size = self.pool.len();
        let mut earliest: Option<i64> = None;
        for step in 0..size {
            let n = (self.cursor + step) % size;
            let Some(ip) = self.pool.nth(n) else { continue };
            if held(ip) {
                continue;
            }
            if let Some(owner) = self.by_ip.get(&ip).copied() {
                match self.by_mac.get(&owner).copied() {
                    Some(old) if old.expires_ms > now_ms => {
                        earliest = Some(earliest.map_or(old.expires_ms, |e| e.min(old.expires_ms)));
                        continue;
                    }
                    // Expired: the address is free again.
                    Some(_) => {
                        self.by_mac.remove(&owner);
                    }
                    None => {}
                }
            }
            self.by_ip.insert(ip, mac);
            self.by_mac.insert(mac, Lease { ip, expires_ms });
            self.cursor = (n + 1) % size;
            self.full_until_ms = None;
            return Some(ip);
        }
        self.refused += 1;
        // Every address is leased (or held by a record): nothing can free
        // before the earliest lease ends; a record deleted meanwhile waits
        // that long too, which is at most one lease time.
        self.full_until_ms = Some(earliest.unwrap_or(now_ms.saturating_add(self.lease_ms)));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u8) -> LeasePool {
        LeasePool::new(
            Pool {
                first: Ipv4Addr::new(10, 0, 0, 100),
                last: Ipv4Addr::new(10, 0, 0, 100 + n - 1),
                netmask: None,
                gateway: None,
                name_servers: vec![],
            },
            60,
        )
    }

    fn mac(i: u32) -> MacAddr {
        let b = i.to_be_bytes();
        MacAddr([0x02, 0xbd, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn a_mac_keeps_its_address_and_held_addresses_are_skipped() {
        let mut p = pool(4);
        let held = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 0, 0, 100);
        let a = p.lease(mac(1), 0, held).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 101));
        assert_eq!(p.lease(mac(1), 1_000, held), Some(a));
        assert_eq!(p.current(mac(1), 2_000), Some(a));
        assert_eq!(p.current(mac(2), 2_000), None, "current never leases");
        // A record takes the address: the MAC gets another.
        let b = p.lease(mac(1), 3_000, |ip| held(ip) || ip == a).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_flood_of_unknown_macs_is_bounded_by_the_pool_and_expired_leases_are_reused() {
        let mut p = pool(50);
        let none = |_: Ipv4Addr| false;
        let mut got = 0;
        for i in 0..5_000 {
            if p.lease(mac(i), 10, none).is_some() {
                got += 1;
            }
        }
        assert_eq!(got, 50);
        assert_eq!(p.len(), 50);
        assert_eq!(p.refused(), 4_950);
        // The first 50 keep their addresses while others are refused.
        assert!(p.lease(mac(7), 20, none).is_some());
        // After the lease time, newcomers get the expired addresses.
        assert!(p.lease(mac(9_999), 61_000, none).is_some());
        assert_eq!(p.len(), 50);
    }
}
