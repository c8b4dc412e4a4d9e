//! IPv6 router advertisements on the provisioning network.
//!
//! iPXE configures IPv6 beside DHCPv4 and, on a network with no router
//! advertising, waits about 13 s for one at every iPXE stage (DESIGN.md
//! field notes). A single advertisement with no prefix, no M/O flags and a
//! router lifetime of zero ("I am not a default router; there is nothing to
//! configure") ends that wait at once, without giving any machine an IPv6
//! address or route. Bellows sends one when a machine solicits, and
//! periodically.

use std::future::Future;
use std::io::{self, Read};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};

/// ICMPv6 type of a router solicitation.
pub const ROUTER_SOLICITATION: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const ROUTER_ADVERTISEMENT: u8 = 134;

/// How often an unsolicited advertisement goes out.
const PERIOD: Duration = Duration::from_secs(10);

/// The advertisement: no prefixes, no managed/other flags, lifetime 0,
/// with our link-layer address. The kernel fills in the checksum.
pub fn advertisement(mac: Option<[u8; 6]>) -> Vec<u8> {
    let mut p = vec![
        ROUTER_ADVERTISEMENT,
        0, // code
        0,
        0,  // checksum (kernel)
        64, // current hop limit
        0,  // M=0, O=0
        0,
        0, // router lifetime 0: not a default router
        0,
        0,
        0,
        0, // reachable time
        0,
        0,
        0,
        0, // retrans timer
    ];
    if let Some(mac) = mac {
        p.extend_from_slice(&[1, 1]); // source link-layer address, 8 bytes
        p.extend_from_slice(&mac);
    }
    p
}

/// True if `packet` (an ICMPv6 message) is a well-formed router solicitation.
pub fn is_solicitation(packet: &[u8]) -> bool {
    packet.len() >= 8 && packet[0] == ROUTER_SOLICITATION && packet[1] == 0
}

/// Sends advertisements on `interface` until `shutdown`: at start, on every
/// solicitation, and every 10 s. ND traffic is a few packets a minute, so a
/// plain thread with a blocking socket (read timeout 1 s) does the work.
pub struct RaSender {
    socket: Socket,
    ifindex: u32,
    packet: Vec<u8>,
}

impl RaSender {
    /// Opens a raw ICMPv6 socket bound to `interface` (needs CAP_NET_RAW).
    pub fn bind(interface: &str) -> io::Result<RaSender> {
        let ifindex = nix::net::if_::if_nametoindex(interface).map_err(io::Error::from)?;
        let mac = nix::ifaddrs::getifaddrs().ok().and_then(|mut addrs| {
            addrs.find_map(|a| {
                if a.interface_name != interface {
                    return None;
                }
                a.address?.as_link_addr()?.addr()
            })
        });
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        socket.bind_device(Some(interface.as_bytes()))?;
        // RFC 4861: hop limit 255 on every ND message, or receivers drop it.
        socket.set_multicast_hops_v6(255)?;
        socket.set_unicast_hops_v6(255)?;
        socket.set_multicast_loop_v6(false)?;
        let all_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
        socket.join_multicast_v6(&all_routers, ifindex)?;
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        Ok(RaSender {
            socket,
            ifindex,
            packet: advertisement(mac),
        })
    }

    fn send(&self) {
        let all_nodes = SocketAddrV6::new(
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            0,
            0,
            self.ifindex,
        );
        if let Err(e) = self.socket.send_to(&self.packet, &all_nodes.into()) {
            tracing::debug!(error = %e, "router advertisement not sent");
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let stop = stop.clone();
            std::thread::spawn(move || self.serve(&stop))
        };
        shutdown.await;
        stop.store(true, Ordering::Relaxed);
        // The thread notices within its 1 s read timeout.
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    }

    fn serve(&self, stop: &AtomicBool) {
        let mut buf = [0u8; 1500];
        let mut last = Instant::now();
        self.send();
        while !stop.load(Ordering::Relaxed) {
            let mut socket: &Socket = &self.socket;
            match socket.read(&mut buf) {
                Ok(n) if is_solicitation(&buf[..n]) => self.send(),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "ICMPv6 receive failed");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            if last.elapsed() >= PERIOD {
                self.send();
                last = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_configures_nothing() {
        let ra = advertisement(Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(ra[0], ROUTER_ADVERTISEMENT);
        assert_eq!(ra[5], 0, "no managed/other flags: nothing for DHCPv6 to do");
        assert_eq!(
            &ra[6..8],
            &[0, 0],
            "router lifetime 0: not a default router"
        );
        assert_eq!(
            &ra[16..],
            &[1, 1, 2, 0, 0, 0, 0, 1],
            "only a source link-layer option, no prefix"
        );
        assert_eq!(advertisement(None).len(), 16);
        assert!(is_solicitation(&[133, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_solicitation(&[133, 0, 0]));
        assert!(!is_solicitation(&[134, 0, 0, 0, 0, 0, 0, 0]));
    }
}
