//! LLDP (IEEE 802.1AB): which switch port each NIC is cabled to, for
//! discovery's inventory. Switches send an LLDP frame on every port about
//! every 30 s; the worker only listens (it never sends).
//!
//! [`parse_lldp_frame`] is the pure core: bytes in, a neighbour or nothing
//! out, never a panic. [`Listener`] is the thin socket loop: one raw
//! `AF_PACKET` socket for the LLDP ethertype on every interface, each frame
//! mapped to its interface by the `sockaddr_ll` index `recvfrom` returns.
//!
//! Receiving the LLDP group address `01:80:c2:00:00:0e`: a NIC's filter
//! drops multicast nobody joined, and the usual way in, the socket option
//! `PACKET_ADD_MEMBERSHIP`, is wrapped by neither `socket2` nor `nix`
//! (and the workspace denies unsafe code). So [`Listener::open`] opens
//! each Ethernet interface that is not already all-multicast or
//! promiscuous itself, and undoes it when dropped:
//!
//! - with iproute2's `ip` (an ordinary host): `ip maddr add
//!   01:80:c2:00:00:0e dev IF`, just that group, unless it is already
//!   listed (lldpd, another listener);
//! - without it (busybox's `ip` has no `maddr`, as in the in-memory OS):
//!   the interface's all-multicast flag, set over rtnetlink
//!   ([`set_all_multicast`]), like `ip link set IF allmulticast on`. The
//!   machine then receives all multicast while it listens: harmless on a
//!   machine waiting to be enrolled.
//!
//! Either way a NIC that hands LLDP to its own firmware agent (Intel X710
//! with its firmware LLDP agent on) is not heard.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bellows_model::api::LldpNeighbour;
use nix::errno::Errno;
use nix::sys::socket::{LinkAddr, recvfrom};
use socket2::{Domain, Protocol, Socket, Type};

/// The LLDP ethertype.
pub const ETH_P_LLDP: u16 = 0x88cc;
/// The nearest-bridge group address LLDP frames are sent to.
pub const LLDP_GROUP: &str = "01:80:c2:00:00:0e";
/// 802.1Q and 802.1ad tags: one may precede the LLDP ethertype.
const VLAN_TAGS: [u16; 2] = [0x8100, 0x88a8];
/// `sll_pkttype` of a frame this host sent (seen when it runs lldpd too).
const PACKET_OUTGOING: u8 = 4;
/// Largest frame read; longer ones are cut and then refused by the parser.
const FRAME_BUFFER: usize = 9216;
/// At most this many interfaces are remembered by [`Neighbours`].
const MAX_INTERFACES: usize = 256;

/// The neighbour in one Ethernet frame, if it is a well-formed LLDP frame
/// (ethertype 0x88cc, optionally behind one 802.1Q/802.1ad tag) with a
/// chassis id and a port id. Any other input gives `None`, never a panic.
pub fn parse_lldp_frame(frame: &[u8]) -> Option<LldpNeighbour> {
    // Destination and source MACs, then the ethertype.
    let mut ethertype = be16(frame.get(12..14)?);
    let mut payload = frame.get(14..)?;
    if VLAN_TAGS.contains(&ethertype) {
        // The tag control information, then the real ethertype.
        ethertype = be16(payload.get(2..4)?);
        payload = payload.get(4..)?;
    }
    (ethertype == ETH_P_LLDP).then(|| parse_lldpdu(payload))?
}

/// The neighbour in an LLDPDU (the frame's payload): TLVs of a 7-bit type
/// and a 9-bit length until the End TLV (or the end of the data). A TLV
/// that runs past the end spoils the whole LLDPDU, as 802.1AB says; so does
/// a missing chassis id or port id. The TTL is not looked at.
pub fn parse_lldpdu(mut data: &[u8]) -> Option<LldpNeighbour> {
    let mut neighbour = LldpNeighbour::default();
    while data.len() >= 2 {
        let header = be16(&data[..2]);
        let kind = header >> 9;
        let len = usize::from(header & 0x1ff);
        let value = data.get(2..2 + len)?;
        data = &data[2 + len..];
        match kind {
            0 => break,
            1 => neighbour.chassis_id = chassis_id(value),
            2 => neighbour.port_id = port_id(value),
            4 => neighbour.port_description = text(value),
            5 => neighbour.system_name = text(value),
            _ => {}
        }
    }
    (!neighbour.chassis_id.is_empty() && !neighbour.port_id.is_empty()).then_some(neighbour)
}

/// A chassis id TLV's value: subtype 4 is a MAC, 5 a network address,
/// the others text.
fn chassis_id(value: &[u8]) -> String {
    match value.split_first() {
        Some((4, mac)) => colon_hex(mac),
        Some((5, address)) => network_address(address),
        Some((_, rest)) => text(rest),
        None => String::new(),
    }
}

/// A port id TLV's value: subtype 3 is a MAC, 4 a network address, the
/// others text (an interface name, alias or a locally assigned id).
fn port_id(value: &[u8]) -> String {
    match value.split_first() {
        Some((3, mac)) => colon_hex(mac),
        Some((4, address)) => network_address(address),
        Some((_, rest)) => text(rest),
        None => String::new(),
    }
}

/// A network address: an IANA address family (1 IPv4, 2 IPv6) and the
/// address; anything else is read as text.
fn network_address(value: &[u8]) -> String {
    match value.split_first() {
        Some((1, v4)) => match <[u8; 4]>::try_from(v4) {
            Ok(octets) => Ipv4Addr::from(octets).to_string(),
            Err(_) => text(value),
        },
        Some((2, v6)) => match <[u8; 16]>::try_from(v6) {
            Ok(octets) => Ipv6Addr::from(octets).to_string(),
            Err(_) => text(value),
        },
        _ => text(value),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Text as a switch sends it: UTF-8 (lossy), without control characters
/// (they would reach logs and the console) or surrounding blanks and NULs.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

fn be16(two: &[u8]) -> u16 {
    u16::from_be_bytes([two[0], two[1]])
}

/// An LLDP frame heard on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// The interface it arrived on (`eth0`).
    pub interface: String,
    /// What the switch said.
    pub neighbour: LldpNeighbour,
}

/// The latest neighbour per interface, shared between a listening thread
/// and the reports that read it; at most 256 interfaces are kept.
#[derive(Debug, Clone, Default)]
pub struct Neighbours(Arc<Mutex<BTreeMap<String, LldpNeighbour>>>);

impl Neighbours {
    /// Remembers `heard`, replacing what that interface said before.
    pub fn record(&self, heard: Heard) {
        if let Ok(mut map) = self.0.lock()
            && (map.len() < MAX_INTERFACES || map.contains_key(&heard.interface))
        {
            map.insert(heard.interface, heard.neighbour);
        }
    }

    /// A copy of what has been heard so far, by interface name.
    pub fn snapshot(&self) -> BTreeMap<String, LldpNeighbour> {
        self.0.lock().map(|map| map.clone()).unwrap_or_default()
    }
}

/// A raw socket receiving LLDP frames on every interface of this network
/// namespace (root, or `CAP_NET_RAW`). Blocking: run it on a thread of
/// its own.
pub struct Listener {
    socket: Socket,
    buffer: Vec<u8>,
    /// What [`Listener::open`] did to interfaces, undone on drop.
    opened: Vec<Opened>,
}

impl Listener {
    /// Opens the socket, and each Ethernet interface to the LLDP group
    /// (see the module's documentation). The socket hears every
    /// interface, but only those present now are opened to the group.
    pub fn open() -> io::Result<Listener> {
        let protocol = Protocol::from(i32::from(ETH_P_LLDP.to_be()));
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(protocol))?;
        let opened = open_everywhere();
        Ok(Listener {
            socket,
            buffer: vec![0; FRAME_BUFFER],
            opened,
        })
    }

    /// The next LLDP neighbour heard before `until`, or `None` once it
    /// passes. Frames that are not valid LLDP, or that this host sent, are
    /// skipped.
    pub fn next(&mut self, until: Instant) -> io::Result<Option<Heard>> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // SO_RCVTIMEO of 0 would mean "forever".
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let (len, from) = match recvfrom::<LinkAddr>(self.socket.as_raw_fd(), &mut self.buffer)
            {
                Ok(received) => received,
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let Some(from) = from else { continue };
            if from.pkttype() == PACKET_OUTGOING {
                continue;
            }
            let Some(neighbour) = parse_lldp_frame(&self.buffer[..len.min(self.buffer.len())])
            else {
                continue;
            };
            let Some(interface) = u32::try_from(from.ifindex())
                .ok()
                .and_then(|index| nix::net::if_::if_indextoname(index).ok())
                .map(|name| name.to_string_lossy().into_owned())
            else {
                continue;
            };
            return Ok(Some(Heard {
                interface,
                neighbour,
            }));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        for opened in &self.opened {
            match opened {
                Opened::Group(name) => {
                    let _ = ip(&["maddr", "del", LLDP_GROUP, "dev", name]);
                }
                Opened::AllMulticast(name, index) => {
                    if let Err(e) = set_all_multicast(*index, false) {
                        tracing::debug!(interface = %name, "cannot clear all-multicast: {e}");
                    }
                }
            }
        }
    }
}

/// How [`Listener::open`] made an interface pass LLDP frames, to undo it.
#[derive(Debug)]
enum Opened {
    /// `ip maddr add` of the LLDP group on this interface.
    Group(String),
    /// The all-multicast flag on this interface (by index).
    AllMulticast(String, u32),
}

/// Makes every Ethernet interface of this network namespace that does not
/// already receive the LLDP group receive it (see the module's
/// documentation); what it did, to undo.
fn open_everywhere() -> Vec<Opened> {
    let mut opened = Vec::new();
    for name in ethernet_interfaces() {
        match ip(&["maddr", "show", "dev", &name]) {
            Some(listed) if lists_group(&listed) => {}
            Some(_) => {
                if ip(&["maddr", "add", LLDP_GROUP, "dev", &name]).is_some() {
                    opened.push(Opened::Group(name));
                } else {
                    tracing::debug!(interface = %name, "ip maddr add {LLDP_GROUP} failed");
                }
            }
            None => {
                let Ok(index) = nix::net::if_::if_nametoindex(name.as_str()) else {
                    continue;
                };
                match set_all_multicast(index, true) {
                    Ok(()) => opened.push(Opened::AllMulticast(name, index)),
                    Err(e) => {
                        tracing::debug!(interface = %name, "cannot set all-multicast: {e}")
                    }
                }
            }
        }
    }
    opened
}

/// Names of the Ethernet interfaces (ARPHRD_ETHER link addresses), asked
/// of the kernel (not of `/sys`, which shows the network namespace it was
/// mounted in), without those that already receive all multicast (or
/// everything).
fn ethernet_interfaces() -> BTreeSet<String> {
    use nix::net::if_::InterfaceFlags;
    const ARPHRD_ETHER: u16 = 1;
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return BTreeSet::new();
    };
    interfaces
        .filter(|i| {
            i.address
                .as_ref()
                .and_then(|a| a.as_link_addr())
                .is_some_and(|link| link.hatype() == ARPHRD_ETHER)
        })
        .filter(|i| {
            !i.flags
                .intersects(InterfaceFlags::IFF_ALLMULTI | InterfaceFlags::IFF_PROMISC)
        })
        .map(|i| i.interface_name)
        .filter(|name| name != "lo")
        .collect()
}

/// `RTM_NEWLINK`, netlink's "change a link".
const RTM_NEWLINK: u16 = 16;
/// `NLMSG_ERROR`: the kernel's answer (an error code, 0 for done).
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST | NLM_F_ACK`.
const NLM_F_REQUEST_ACK: u16 = 1 | 4;
/// The all-multicast interface flag.
const IFF_ALLMULTI: u32 = 0x200;

/// Turns interface `index`'s all-multicast flag on or off through
/// rtnetlink, as `ip link set IF allmulticast on|off` does (needs
/// `CAP_NET_ADMIN`); the fallback for joining the LLDP group where
/// iproute2 is missing.
pub fn set_all_multicast(index: u32, on: bool) -> io::Result<()> {
    use std::io::Read;
    const AF_NETLINK: i32 = 16;
    const NETLINK_ROUTE: i32 = 0;
    let socket = Socket::new(
        Domain::from(AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(NETLINK_ROUTE)),
    )?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    // Unconnected and unaddressed: the kernel is the destination.
    socket.send(&all_multicast_request(index, on, 1))?;
    let mut answer = [0u8; 1024];
    let len = (&socket).read(&mut answer)?;
    match parse_ack(&answer[..len]) {
        Some(0) => Ok(()),
        Some(errno) => Err(io::Error::from_raw_os_error(errno.saturating_neg())),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no acknowledgement from rtnetlink",
        )),
    }
}

/// An `RTM_NEWLINK` request (header and `ifinfomsg`, native byte order)
/// changing only the all-multicast flag of interface `index`.
pub fn all_multicast_request(index: u32, on: bool, sequence: u32) -> Vec<u8> {
    let mut message = Vec::with_capacity(32);
    message.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    message.extend_from_slice(&RTM_NEWLINK.to_ne_bytes()); // nlmsg_type
    message.extend_from_slice(&NLM_F_REQUEST_ACK.to_ne_bytes()); // nlmsg_flags
    message.extend_from_slice(&sequence.to_ne_bytes()); // nlmsg_seq
    message.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
    message.extend_from_slice(&[0, 0]); // ifi_family AF_UNSPEC, padding
    message.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    message.extend_from_slice(&index.to_ne_bytes()); // ifi_index
    let flags = if on { IFF_ALLMULTI } else { 0 };
    message.extend_from_slice(&flags.to_ne_bytes()); // ifi_flags
    message.extend_from_slice(&IFF_ALLMULTI.to_ne_bytes()); // ifi_change
    message
}

/// The error code of a netlink `NLMSG_ERROR` answer (0: acknowledged, a
/// negative errno: refused); `None` for anything else.
pub fn parse_ack(answer: &[u8]) -> Option<i32> {
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    if kind != NLMSG_ERROR {
        return None;
    }
    Some(i32::from_ne_bytes(answer.get(16..20)?.try_into().ok()?))
}

/// Whether `ip maddr show` output lists the LLDP group (joined by lldpd,
/// another listener or an earlier `ip maddr add`).
pub fn lists_group(ip_maddr_show: &str) -> bool {
    ip_maddr_show
        .split_whitespace()
        .any(|word| word.eq_ignore_ascii_case(LLDP_GROUP))
}

/// Runs `ip ARGS`; its stdout when it succeeded.
fn ip(args: &[&str]) -> Option<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLV: 7-bit type, 9-bit length, value.
    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = ((kind << 9) | value.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(value);
        out
    }

    fn ethernet(ethertype: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];
        frame.extend_from_slice(&[0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
        frame.extend_from_slice(ethertype);
        frame.extend_from_slice(payload);
        frame
    }

    /// What a Cisco-like switch sends: MAC chassis id, an interface-name
    /// port id, TTL, port description, system name, then padding.
    fn switch_lldpdu() -> Vec<u8> {
        let mut pdu = Vec::new();
        pdu.extend(tlv(1, &[4, 0x00, 0x1c, 0x73, 0x0a, 0x0b, 0x0c]));
        pdu.extend(tlv(2, b"\x05Ethernet1/7"));
        pdu.extend(tlv(3, &[0, 120]));
        pdu.extend(tlv(4, b"server rack 12 u7\0"));
        pdu.extend(tlv(5, b"leaf-12.example.net"));
        pdu.extend(tlv(
            127,
            &[0x00, 0x12, 0x0f, 0x01, 0x03, 0x6c, 0x03, 0x00, 0x10],
        ));
        pdu.extend(tlv(0, &[]));
        pdu.extend([0; 8]);
        pdu
    }

    #[test]
    fn a_switch_frame() {
        let frame = ethernet(&[0x88, 0xcc], &switch_lldpdu());
        assert_eq!(
            parse_lldp_frame(&frame),
            Some(LldpNeighbour {
                chassis_id: "00:1c:73:0a:0b:0c".into(),
                port_id: "Ethernet1/7".into(),
                system_name: "leaf-12.example.net".into(),
                port_description: "server rack 12 u7".into(),
            })
        );
    }

    #[test]
    fn behind_one_vlan_tag() {
        let frame = ethernet(&[0x81, 0x00, 0x00, 0x10, 0x88, 0xcc], &switch_lldpdu());
        assert_eq!(
            parse_lldp_frame(&frame).map(|n| n.port_id),
            Some("Ethernet1/7".into())
        );
        // Two tags: the ethertype after the first is not LLDP.
        let frame = ethernet(
            &[0x88, 0xa8, 0x00, 0x10, 0x81, 0x00, 0x00, 0x20, 0x88, 0xcc],
            &switch_lldpdu(),
        );
        assert_eq!(parse_lldp_frame(&frame), None);
    }

    #[test]
    fn other_subtypes() {
        let mut pdu = tlv(1, &[5, 1, 192, 0, 2, 7]);
        pdu.extend(tlv(2, &[3, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]));
        let n = parse_lldpdu(&pdu).unwrap();
        assert_eq!(
            (n.chassis_id.as_str(), n.port_id.as_str()),
            ("192.0.2.7", "aa:bb:cc:dd:ee:ff")
        );
        assert_eq!(
            (n.system_name.as_str(), n.port_description.as_str()),
            ("", "")
        );

        let mut v6 = vec![5, 2];
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        let mut pdu = tlv(1, &v6);
        pdu.extend(tlv(2, b"\x07ge-0/0/7"));
        let n = parse_lldpdu(&pdu).unwrap();
        assert_eq!(
            (n.chassis_id.as_str(), n.port_id.as_str()),
            ("2001:db8::1", "ge-0/0/7")
        );

        // Chassis component text, a network address of an unknown family,
        // invalid UTF-8 and control characters.
        let mut pdu = tlv(1, b"\x01SN1234\x1b[31m");
        pdu.extend(tlv(2, &[4, 9, b'x', 0xff]));
        let n = parse_lldpdu(&pdu).unwrap();
        assert_eq!(n.chassis_id, "SN1234[31m");
        assert_eq!(n.port_id, "x\u{fffd}");
    }

    #[test]
    fn refused_frames() {
        let good = ethernet(&[0x88, 0xcc], &switch_lldpdu());
        // Not LLDP.
        assert_eq!(
            parse_lldp_frame(&ethernet(&[0x08, 0x00], &switch_lldpdu())),
            None
        );
        // Every truncation: no panic; cut inside a TLV before the End, None.
        for len in 0..good.len() {
            let parsed = parse_lldp_frame(&good[..len]);
            if len < 14 + 2 + 7 + 2 + 12 {
                assert_eq!(parsed, None, "cut at {len}");
            }
        }
        // A length past the end.
        let mut pdu = tlv(1, &[4, 1, 2, 3, 4, 5, 6]);
        pdu.extend(tlv(2, b"\x05swp1"));
        pdu.extend([0x08, 0xff, b'x']);
        assert_eq!(parse_lldpdu(&pdu), None);
        // No port id, or an empty one.
        assert_eq!(parse_lldpdu(&tlv(1, &[4, 1, 2, 3, 4, 5, 6])), None);
        let mut pdu = tlv(1, &[4, 1, 2, 3, 4, 5, 6]);
        pdu.extend(tlv(2, &[]));
        assert_eq!(parse_lldpdu(&pdu), None);
        // Garbage of every short length and a pseudo-random long one.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 300)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            let _ = parse_lldp_frame(&bytes);
            let _ = parse_lldpdu(&bytes);
            let _ = parse_lldp_frame(&ethernet(&[0x88, 0xcc], &bytes));
        }
    }

    #[test]
    fn neighbours_keep_the_latest_and_are_bounded() {
        let heard = Neighbours::default();
        let n = |port: &str| LldpNeighbour {
            chassis_id: "c".into(),
            port_id: port.into(),
            ..Default::default()
        };
        for i in 0..300 {
            heard.record(Heard {
                interface: format!("eth{i}"),
                neighbour: n("a"),
            });
        }
        heard.record(Heard {
            interface: "eth0".into(),
            neighbour: n("b"),
        });
        let map = heard.snapshot();
        assert_eq!(map.len(), MAX_INTERFACES);
        assert_eq!(map["eth0"].port_id, "b");
    }

    #[test]
    fn all_multicast_requests_and_answers() {
        let on = all_multicast_request(7, true, 9);
        assert_eq!(on.len(), 32);
        let u32_at = |m: &[u8], at: usize| u32::from_ne_bytes(m[at..at + 4].try_into().unwrap());
        let u16_at = |m: &[u8], at: usize| u16::from_ne_bytes(m[at..at + 2].try_into().unwrap());
        assert_eq!(u32_at(&on, 0), 32);
        assert_eq!(u16_at(&on, 4), RTM_NEWLINK);
        assert_eq!(u16_at(&on, 6), 5);
        assert_eq!(u32_at(&on, 8), 9);
        assert_eq!(u32_at(&on, 20), 7);
        assert_eq!((u32_at(&on, 24), u32_at(&on, 28)), (0x200, 0x200));
        let off = all_multicast_request(7, false, 10);
        assert_eq!((u32_at(&off, 24), u32_at(&off, 28)), (0, 0x200));

        // NLMSG_ERROR with 0 (acknowledged) and -EPERM, then the request.
        let answer = |code: i32| {
            let mut a = 52u32.to_ne_bytes().to_vec();
            a.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            a.extend_from_slice(&0u16.to_ne_bytes());
            a.extend_from_slice(&[0; 8]);
            a.extend_from_slice(&code.to_ne_bytes());
            a.extend_from_slice(&on);
            a
        };
        assert_eq!(parse_ack(&answer(0)), Some(0));
        assert_eq!(parse_ack(&answer(-1)), Some(-1));
        assert_eq!(parse_ack(&answer(0)[..18]), None);
        assert_eq!(parse_ack(&on), None);
        assert_eq!(parse_ack(&[]), None);
    }

    #[test]
    fn group_listed() {
        let listed = "\
2:\teth0
\tlink  01:00:5e:00:00:01
\tlink  33:33:00:00:00:01
\tlink  01:80:c2:00:00:0e static
\tinet  224.0.0.1
";
        assert!(lists_group(listed));
        assert!(!lists_group("2:\teth0\n\tlink  01:00:5e:00:00:01\n"));
    }
}
