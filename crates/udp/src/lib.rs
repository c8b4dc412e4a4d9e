//! UDP with packet info, the plumbing DHCP and TFTP share (as `quinn-udp`
//! is for QUIC): a boot server on a multi-homed host must know which
//! interface and local address each request arrived on, to name itself
//! correctly and to answer from the address the client spoke to, and a
//! broadcast reply must leave by the interface the request came in on.
//!
//! Sockets are tokio's; these functions do the `recvmsg`/`sendmsg` with
//! control messages inside tokio's readiness loop.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrStorage, recvmsg, sendmsg,
    setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Where a datagram arrived, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// The interface it came in on (0 if unknown).
    pub ifindex: u32,
    /// The local address to answer from (IPv4 `ipi_spec_dst`; for IPv6 the
    /// destination). Unspecified when the kernel could not choose one.
    pub local: IpAddr,
    /// The destination address in the packet's header (may be a
    /// broadcast address).
    pub destination: IpAddr,
}

impl PacketInfo {
    /// The address a reply should come from: the local address the kernel
    /// chose, else the header destination.
    pub fn reply_from(&self) -> IpAddr {
        if self.local.is_unspecified() {
            self.destination
        } else {
            self.local
        }
    }
}

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Datagram {
    /// Bytes written into the buffer.
    pub len: usize,
    /// The datagram was larger than the buffer and was cut.
    pub truncated: bool,
    /// Who sent it.
    pub source: SocketAddr,
    /// Where it arrived, when packet info is on.
    pub info: Option<PacketInfo>,
}

/// The receive queue a boot server's listening socket asks for (with
/// [`enlarge_receive_buffer`]): a boot storm sends thousands of requests
/// within a second; the kernel's default (~208 KiB) holds a few hundred.
pub const STORM_RECEIVE_QUEUE_BYTES: usize = 8 << 20;
/// Datagrams a listener takes with [`try_recv`] after the one that woke it,
/// before it yields: a burst is served without one trip through the
/// runtime's readiness machinery per packet, and other tasks still run.
pub const DRAIN_PER_WAKE: usize = 64;

/// A control-message buffer large enough for either family's packet info.
pub fn control_buffer() -> Vec<u8> {
    nix::cmsg_space!(nix::libc::in_pktinfo, nix::libc::in6_pktinfo)
}

/// Asks the kernel to report each datagram's arrival interface and
/// address. A dual-stack socket reports IPv4 arrivals through either
/// option, so both are set on IPv6 sockets.
pub fn enable_packet_info(socket: &impl AsFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        let _ = setsockopt(socket, sockopt::Ipv4PacketInfo, &true);
        setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true).map_err(io::Error::from)
    } else {
        setsockopt(socket, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)
    }
}

/// Asks for a receive queue of `bytes`, so that a burst of datagrams waits
/// for the server instead of being dropped: `SO_RCVBUFFORCE` (root, or
/// CAP_NET_ADMIN: beyond `net.core.rmem_max`), else `SO_RCVBUF` (capped
/// at `rmem_max`). Best effort: the default queue still works, smaller.
pub fn enlarge_receive_buffer(socket: &impl AsFd, bytes: usize) {
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &bytes);
    }
}

/// Receives one datagram with its packet info (waits until one arrives).
/// `control` comes from [`control_buffer`].
pub async fn recv(
    socket: &UdpSocket,
    buffer: &mut [u8],
    control: &mut [u8],
) -> io::Result<Datagram> {
    let fd = socket.as_fd().as_raw_fd();
    socket
        .async_io(Interest::READABLE, || recv_now(fd, buffer, control))
        .await
}

/// Receives one datagram if one is queued now (`WouldBlock` otherwise):
/// a loop woken by one datagram drains the burst behind it before it
/// yields, instead of taking one per turn of a busy runtime.
pub fn try_recv(socket: &UdpSocket, buffer: &mut [u8], control: &mut [u8]) -> io::Result<Datagram> {
    let fd = socket.as_fd().as_raw_fd();
    socket.try_io(Interest::READABLE, || recv_now(fd, buffer, control))
}

fn recv_now(fd: RawFd, buffer: &mut [u8], control: &mut [u8]) -> io::Result<Datagram> {
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(control), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let source = message
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::other("datagram without an IP source address"))?;
    let mut info = None;
    if let Ok(messages) = message.cmsgs() {
        for control_message in messages {
            match control_message {
                ControlMessageOwned::Ipv4PacketInfo(i) => {
                    info = Some(PacketInfo {
                        ifindex: u32::try_from(i.ipi_ifindex).unwrap_or(0),
                        local: IpAddr::V4(Ipv4Addr::from(u32::from_be(i.ipi_spec_dst.s_addr))),
                        destination: IpAddr::V4(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr))),
                    });
                }
                ControlMessageOwned::Ipv6PacketInfo(i) => {
                    let address = IpAddr::V6(Ipv6Addr::from(i.ipi6_addr.s6_addr));
                    info = Some(PacketInfo {
                        ifindex: i.ipi6_ifindex,
                        local: address,
                        destination: address,
                    });
                }
                _ => {}
            }
        }
    }
    Ok(Datagram {
        len: message.bytes,
        truncated: message.flags.contains(MsgFlags::MSG_TRUNC),
        source,
        info,
    })
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()));
    }
    let v6 = address.as_sockaddr_in6()?;
    Some(SocketAddr::new(IpAddr::V6(v6.ip()), v6.port()))
}

/// Sends `payload` to `to` from `source` and, when `ifindex` is non-zero,
/// out of that interface: the kernel then routes 255.255.255.255 out of
/// the interface the request came in on.
pub async fn send_v4_from(
    socket: &UdpSocket,
    payload: &[u8],
    to: SocketAddrV4,
    ifindex: u32,
    source: Ipv4Addr,
) -> io::Result<usize> {
    let fd = socket.as_fd().as_raw_fd();
    socket
        .async_io(Interest::WRITABLE, || {
            send_v4_now(fd, payload, to, ifindex, source)
        })
        .await
}

fn send_v4_now(
    fd: RawFd,
    payload: &[u8],
    to: SocketAddrV4,
    ifindex: u32,
    source: Ipv4Addr,
) -> io::Result<usize> {
    let info = nix::libc::in_pktinfo {
        ipi_ifindex: i32::try_from(ifindex).unwrap_or(0),
        ipi_spec_dst: nix::libc::in_addr {
            s_addr: u32::from(source).to_be(),
        },
        ipi_addr: nix::libc::in_addr { s_addr: 0 },
    };
    let cmsgs = [ControlMessage::Ipv4PacketInfo(&info)];
    sendmsg(
        fd,
        &[IoSlice::new(payload)],
        &cmsgs,
        MsgFlags::empty(),
        Some(&SockaddrIn::from(to)),
    )
    .map_err(io::Error::from)
}

/// Most datagrams one [`send_segmented`] call may carry: the kernel's
/// `UDP_MAX_SEGMENTS` (64 on every kernel that has UDP segmentation).
pub const MAX_SEGMENTS: usize = 64;
/// Most bytes one [`send_segmented`] call may carry: one UDP datagram's
/// largest payload over IPv4, which the kernel then cuts into segments.
pub const MAX_SEGMENTED_BYTES: usize = 65_507;

/// Sends the bytes gathered from `parts` to `to` as consecutive datagrams
/// of `segment` bytes each (the last may be shorter), in one system call,
/// with UDP generic segmentation offload (`UDP_SEGMENT`): a TFTP window
/// costs one trip through the network stack instead of one per block.
///
/// At most [`MAX_SEGMENTS`] datagrams and [`MAX_SEGMENTED_BYTES`] in all.
/// A kernel or device without segmentation answers `EIO`, `EINVAL` or
/// `ENOPROTOOPT` (see [`segmentation_unsupported`]); the caller then sends
/// the datagrams one by one.
pub async fn send_segmented(
    socket: &UdpSocket,
    parts: &[IoSlice<'_>],
    segment: u16,
    to: SocketAddr,
) -> io::Result<usize> {
    let fd = socket.as_fd().as_raw_fd();
    let address = SockaddrStorage::from(to);
    socket
        .async_io(Interest::WRITABLE, || {
            let cmsgs = [ControlMessage::UdpGsoSegments(&segment)];
            sendmsg(fd, parts, &cmsgs, MsgFlags::empty(), Some(&address)).map_err(io::Error::from)
        })
        .await
}

/// True for the errors by which [`send_segmented`] says segmentation is not
/// available here (as opposed to a lost or refused send).
pub fn segmentation_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(nix::libc::EIO | nix::libc::EINVAL | nix::libc::ENOPROTOOPT | nix::libc::EOPNOTSUPP)
    )
}

/// IPv4 peers reaching a dual-stack socket appear as `::ffff:a.b.c.d`;
/// every decision about them uses the IPv4 address.
pub fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_datagram_says_where_it_arrived_and_a_reply_leaves_from_there() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable_packet_info(&server, false).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(b"hello", server.local_addr().unwrap())
            .await
            .unwrap();
        let mut buffer = [0u8; 16];
        let mut control = control_buffer();
        let got = recv(&server, &mut buffer, &mut control).await.unwrap();
        assert_eq!(&buffer[..got.len], b"hello");
        assert!(!got.truncated);
        assert_eq!(got.source, client.local_addr().unwrap());
        let info = got.info.unwrap();
        assert_eq!(info.reply_from(), IpAddr::from([127, 0, 0, 1]));
        assert_ne!(info.ifindex, 0);
        let SocketAddr::V4(to) = got.source else {
            panic!("IPv4 client")
        };
        send_v4_from(&server, b"back", to, info.ifindex, Ipv4Addr::LOCALHOST)
            .await
            .unwrap();
        let (n, from) = client.recv_from(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..n], b"back");
        assert_eq!(from, server.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_datagram_larger_than_the_buffer_is_marked_truncated() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&[7u8; 64], server.local_addr().unwrap())
            .await
            .unwrap();
        let mut buffer = [0u8; 8];
        let mut control = control_buffer();
        let got = recv(&server, &mut buffer, &mut control).await.unwrap();
        assert!(got.truncated);
        assert!(got.info.is_none(), "packet info was not asked for");
    }

    #[tokio::test]
    async fn a_segmented_send_arrives_as_separate_datagrams() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Three datagrams of 6 bytes and a short fourth, gathered from
        // headers and payloads kept apart, as a TFTP window is.
        let headers = [[0u8, 3, 0, 1], [0, 3, 0, 2], [0, 3, 0, 3], [0, 3, 0, 4]];
        let payloads: [&[u8]; 4] = [b"aa", b"bb", b"cc", b"d"];
        let parts: Vec<IoSlice<'_>> = headers
            .iter()
            .zip(payloads)
            .flat_map(|(header, payload)| [IoSlice::new(header), IoSlice::new(payload)])
            .collect();
        let sent = send_segmented(&server, &parts, 6, client.local_addr().unwrap()).await;
        match sent {
            Ok(n) => assert_eq!(n, 23),
            // A kernel without UDP_SEGMENT: the caller's fallback applies.
            Err(e) if segmentation_unsupported(&e) => return,
            Err(e) => panic!("segmented send failed: {e}"),
        }
        let mut received = Vec::new();
        let mut buffer = [0u8; 64];
        for _ in 0..4 {
            let (n, from) = client.recv_from(&mut buffer).await.unwrap();
            assert_eq!(from, server.local_addr().unwrap());
            received.push(buffer[..n].to_vec());
        }
        assert_eq!(
            received,
            [
                b"\0\x03\0\x01aa".to_vec(),
                b"\0\x03\0\x02bb".to_vec(),
                b"\0\x03\0\x03cc".to_vec(),
                b"\0\x03\0\x04d".to_vec(),
            ]
        );
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_address() {
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(unmapped(mapped), IpAddr::from([10, 0, 0, 1]));
        let v6: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
    }
}
