//! DHCP as PXE firmware and then iPXE send it, for many machines over one
//! socket: every simulated machine broadcasts from port 68 (as firmware
//! does) and the answers, broadcast back, are handed to the machine whose
//! transaction id they carry.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhcproto::v4::{
    Architecture, DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Decoder, Encodable};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::Error;

/// Which DHCP client is speaking: the firmware's PXE ROM or iPXE after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The firmware (PXE), asking for a boot file to fetch by TFTP.
    Firmware,
    /// iPXE, asking for its script (user class `iPXE`).
    Ipxe,
}

/// Which firmware the machine has: BIOS (arch 0) or x86-64 UEFI (arch 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// Legacy BIOS with a PXE ROM.
    Bios,
    /// UEFI (as OVMF sends it).
    Uefi,
}

impl Firmware {
    fn arch(self) -> u16 {
        match self {
            Firmware::Bios => 0,
            Firmware::Uefi => 7,
        }
    }
}

/// What an acknowledged lease told the machine.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The address it was given.
    pub address: Ipv4Addr,
    /// `siaddr`: where to fetch the boot file by TFTP.
    pub next_server: Ipv4Addr,
    /// The boot file (option 67, else the `file` field).
    pub boot_file: String,
}

/// The shared socket and the machines waiting on it.
pub struct Client {
    socket: UdpSocket,
    waiting: Mutex<HashMap<u32, mpsc::Sender<Message>>>,
}

/// Broadcast-flag requests go here; answers come back to port 68.
const SERVERS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::BROADCAST), 67);

/// The retransmission waits of PXE firmware (the PXE specification: 4, 8,
/// 16 and 32 s, shortened here: a storm's loss is the server's to avoid,
/// and the firmware's long waits would hide it in the figures).
const RETRIES: [Duration; 4] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

impl Client {
    /// Binds port 68 on `interface`, with a receive buffer of `rcvbuf`
    /// bytes (answers to thousands of machines arrive together).
    pub fn bind(interface: &str, rcvbuf: usize) -> Result<Arc<Client>, Error> {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_broadcast(true)?;
        socket.bind_device(Some(interface.as_bytes()))?;
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(rcvbuf);
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        let client = Arc::new(Client {
            socket,
            waiting: Mutex::new(HashMap::new()),
        });
        tokio::spawn(receive(client.clone()));
        Ok(client)
    }

    /// DISCOVER → OFFER → REQUEST → ACK for `mac`, as `stage` and
    /// `firmware` would send them; `xid` must be unique among machines.
    pub async fn lease(
        &self,
        mac: [u8; 6],
        xid: u32,
        stage: Stage,
        firmware: Firmware,
    ) -> Result<Lease, Error> {
        let (tx, mut rx) = mpsc::channel(4);
        self.lock().insert(xid, tx);
        let result = self.exchange(mac, xid, stage, firmware, &mut rx).await;
        self.lock().remove(&xid);
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::Sender<Message>>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn exchange(
        &self,
        mac: [u8; 6],
        xid: u32,
        stage: Stage,
        firmware: Firmware,
        rx: &mut mpsc::Receiver<Message>,
    ) -> Result<Lease, Error> {
        let discover = request(mac, xid, stage, firmware, MessageType::Discover);
        let offer = self
            .ask(&discover, MessageType::Offer, rx)
            .await
            .map_err(|e| e.context("DHCP DISCOVER"))?;
        let server = match offer.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => *ip,
            _ => return Err(Error::msg("DHCP OFFER without a server identifier")),
        };
        let mut req = request(mac, xid, stage, firmware, MessageType::Request);
        req.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
        req.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        let ack = self
            .ask(&req, MessageType::Ack, rx)
            .await
            .map_err(|e| e.context("DHCP REQUEST"))?;
        let boot_file = match ack.opts().get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(name)) => String::from_utf8_lossy(name).into_owned(),
            _ => ack
                .fname_str()
                .and_then(Result::ok)
                .unwrap_or_default()
                .to_string(),
        };
        Ok(Lease {
            address: ack.yiaddr(),
            next_server: ack.siaddr(),
            boot_file: boot_file.trim_end_matches('\0').to_string(),
        })
    }

    /// Sends `msg` until an answer of type `want` comes, with the
    /// firmware's retransmissions.
    async fn ask(
        &self,
        msg: &Message,
        want: MessageType,
        rx: &mut mpsc::Receiver<Message>,
    ) -> Result<Message, Error> {
        let bytes = msg
            .to_vec()
            .map_err(|e| Error::msg(format!("encode: {e}")))?;
        for wait in RETRIES {
            self.socket.send_to(&bytes, SERVERS).await?;
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(answer)) => match answer.opts().msg_type() {
                        Some(t) if t == want => return Ok(answer),
                        Some(MessageType::Nak) => return Err(Error::msg("DHCP NAK")),
                        _ => continue, // another server's offer, a stray
                    },
                    Ok(None) => return Err(Error::msg("DHCP receiver stopped")),
                    Err(_) => break,
                }
            }
        }
        Err(Error::msg(format!(
            "no {want:?} after {} tries",
            RETRIES.len()
        )))
    }
}

/// Hands each answer to the machine whose xid it carries.
async fn receive(client: Arc<Client>) {
    let mut buf = vec![0u8; 1500];
    loop {
        let Ok((n, _)) = client.socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(msg) = Message::decode(&mut Decoder::new(&buf[..n])) else {
            continue;
        };
        if msg.opcode() != dhcproto::v4::Opcode::BootReply {
            continue;
        }
        let tx = client.lock().get(&msg.xid()).cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send(msg);
        }
    }
}

/// A request with the options real clients send: PXE firmware's vendor
/// class, architecture, NIC type and UUID; iPXE's user class and its
/// feature option (175) on top.
fn request(mac: [u8; 6], xid: u32, stage: Stage, firmware: Firmware, kind: MessageType) -> Message {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, zero, zero, zero, zero, &mac);
    msg.set_flags(Flags::default().set_broadcast());
    let arch = firmware.arch();
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::MaxMessageSize(1472));
    opts.insert(DhcpOption::ClassIdentifier(
        format!("PXEClient:Arch:{arch:05}:UNDI:{}", "003016").into_bytes(),
    ));
    opts.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(
        arch,
    )));
    opts.insert(DhcpOption::ClientNetworkInterface(1, 3, 16));
    let mut uuid = vec![0u8; 17];
    uuid[11..].copy_from_slice(&mac);
    opts.insert(DhcpOption::ClientMachineIdentifier(uuid));
    opts.insert(DhcpOption::ParameterRequestList(
        [1u8, 3, 6, 12, 15, 17, 43, 60, 66, 67, 97, 119, 128, 175]
            .into_iter()
            .map(OptionCode::from)
            .collect(),
    ));
    if stage == Stage::Ipxe {
        opts.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        // iPXE's feature flags: HTTP (19), DNS (23), bzImage (24), EFI (36).
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(175),
            vec![
                19,
                1,
                1,
                23,
                1,
                1,
                24,
                1,
                1,
                36,
                1,
                u8::from(firmware == Firmware::Uefi),
            ],
        )));
    }
    msg
}
