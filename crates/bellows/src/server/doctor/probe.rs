//! Is another DHCP server answering on the provisioning segment? Sends one
//! DISCOVER as a made-up client (a random locally administered MAC, so no
//! server has a reservation for it and no lease is taken: it never sends a
//! REQUEST) and collects the OFFERs that come back.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use socket2::{Domain, Protocol, Socket, Type};

/// One server that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Its server identifier (option 54), else the datagram's source.
    pub server: Ipv4Addr,
    /// The address it offered the made-up client.
    pub offered: Ipv4Addr,
    /// Whether it is a PXE boot server answer (option 60 `PXEClient`) only.
    pub pxe_only: bool,
}

/// Why the probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The client port is taken (a DHCP client runs here) or needs root.
    #[error("cannot listen on UDP port 68 on {interface}: {source}")]
    Bind {
        /// The interface.
        interface: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The DISCOVER could not be built or sent.
    #[error("cannot send the DISCOVER on {interface}: {reason}")]
    Send {
        /// The interface.
        interface: String,
        /// Why.
        reason: String,
    },
}

/// Broadcasts a DISCOVER out of `interface` and gathers the OFFERs heard
/// within `listen`; at most 64 are kept.
pub async fn probe(interface: &str, listen: Duration) -> Result<Vec<Offer>, ProbeError> {
    let bind_error = |source| ProbeError::Bind {
        interface: interface.to_string(),
        source,
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(bind_error)?;
    socket.set_reuse_address(true).map_err(bind_error)?;
    socket.set_broadcast(true).map_err(bind_error)?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    let any: SocketAddr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into();
    socket.bind(&any.into()).map_err(bind_error)?;
    let socket = tokio::net::UdpSocket::from_std(socket.into()).map_err(bind_error)?;

    let mac = made_up_mac();
    let xid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    let discover = discover(&mac, xid).map_err(|reason| ProbeError::Send {
        interface: interface.to_string(),
        reason,
    })?;
    socket
        .send_to(&discover, (Ipv4Addr::BROADCAST, 67))
        .await
        .map_err(|e| ProbeError::Send {
            interface: interface.to_string(),
            reason: e.to_string(),
        })?;

    let mut offers = Vec::new();
    let mut buf = vec![0u8; 1500];
    let deadline = tokio::time::Instant::now() + listen;
    while offers.len() < 64 {
        let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
        let Ok(Ok((len, from))) = received else {
            break;
        };
        if let Some(offer) = buf.get(..len).and_then(|b| read_offer(b, xid, &mac, from))
            && !offers.contains(&offer)
        {
            offers.push(offer);
        }
    }
    Ok(offers)
}

/// A random locally administered unicast MAC.
fn made_up_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let seed = nanos ^ std::process::id().rotate_left(16);
    mac[2..].copy_from_slice(&seed.to_be_bytes());
    // Locally administered, unicast.
    mac[0] = 0x02;
    mac[1] = 0xbd; // "Bellows doctor"
    mac
}

fn discover(mac: &[u8; 6], xid: u32) -> Result<Vec<u8>, String> {
    let mut msg = Message::default();
    msg.set_opcode(Opcode::BootRequest)
        .set_xid(xid)
        .set_flags(Flags::default().set_broadcast())
        .set_chaddr(mac);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::ServerIdentifier,
    ]));
    let mut bytes = Vec::with_capacity(300);
    msg.encode(&mut Encoder::new(&mut bytes))
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// An OFFER to our DISCOVER, or None for anything else heard on port 68.
fn read_offer(bytes: &[u8], xid: u32, mac: &[u8; 6], from: SocketAddr) -> Option<Offer> {
    let msg = Message::decode(&mut Decoder::new(bytes)).ok()?;
    if msg.opcode() != Opcode::BootReply || msg.xid() != xid || msg.chaddr().get(..6)? != mac {
        return None;
    }
    if msg.opts().msg_type() != Some(MessageType::Offer) {
        return None;
    }
    let server = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => match from {
            SocketAddr::V4(v4) => *v4.ip(),
            SocketAddr::V6(_) => return None,
        },
    };
    let pxe_only = msg.yiaddr().is_unspecified()
        && matches!(
            msg.opts().get(OptionCode::ClassIdentifier),
            Some(DhcpOption::ClassIdentifier(c)) if c.starts_with(b"PXEClient")
        );
    Some(Offer {
        server,
        offered: msg.yiaddr(),
        pxe_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_offers_to_our_transaction_count() {
        let mac = [0x02, 0xbd, 1, 2, 3, 4];
        let xid = 0x0102_0304;
        let reply = |xid: u32, kind: MessageType| {
            let mut msg = Message::default();
            msg.set_opcode(Opcode::BootReply)
                .set_xid(xid)
                .set_yiaddr(Ipv4Addr::new(10, 0, 0, 9))
                .set_chaddr(&mac);
            msg.opts_mut().insert(DhcpOption::MessageType(kind));
            msg.opts_mut()
                .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 2)));
            let mut bytes = Vec::new();
            msg.encode(&mut Encoder::new(&mut bytes)).unwrap();
            bytes
        };
        let from: SocketAddr = "10.0.0.2:67".parse().unwrap();
        assert_eq!(
            read_offer(&reply(xid, MessageType::Offer), xid, &mac, from),
            Some(Offer {
                server: Ipv4Addr::new(10, 0, 0, 2),
                offered: Ipv4Addr::new(10, 0, 0, 9),
                pxe_only: false,
            })
        );
        assert_eq!(
            read_offer(&reply(xid + 1, MessageType::Offer), xid, &mac, from),
            None
        );
        assert_eq!(
            read_offer(&reply(xid, MessageType::Ack), xid, &mac, from),
            None
        );
        assert_eq!(read_offer(b"garbage", xid, &mac, from), None);
        // Our own DISCOVER, looped back, is not an offer either.
        assert_eq!(
            read_offer(&discover(&mac, xid).unwrap(), xid, &mac, from),
            None
        );
    }
}
