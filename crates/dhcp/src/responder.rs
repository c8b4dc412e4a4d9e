//! The pure responder: one request in, one decision out.
//!
//! No IO, no clock, and no state between calls:
//! every answer follows from the packet, the hardware record and the
//! configuration, so a replayed or repeated request (Debian's ipxe.efi
//! reuses its xid on every boot) gets the same answer, and the function is
//! fuzzed and unit-tested with bytes alone.
//!
//! Why one file of ~720 lines: `respond` is one decision (which message,
//! which address, which boot plan, or why not) read top to bottom; the
//! wire format (`wire`), the boot plans (`netboot`) and the tests
//! (`responder/tests.rs`) are already apart.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use bellows_model::hardware::Interface;
use bellows_model::{Hardware, MacAddr};

use crate::config::{DhcpConfig, Mode};
use crate::lookup::Lookup;
use crate::netboot::{self, BootPlan, ClientKind, NetbootClient, PlanInputs};
use crate::wire::{
    self, BOOTREQUEST, BROADCAST_FLAG, FILE_LEN, IP_UDP_HEADER_LEN, MIN_DATAGRAM_LEN, MessageType,
    ReplyOption, ReplyPacket, Request, WireError, code,
};

/// Which listening port a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The DHCP server port (67).
    Dhcp,
    /// The PXE boot-server port (4011), where PXE and iPXE clients send
    /// their ProxyDHCP request after getting an address elsewhere.
    PxeBootServer,
}

/// Where and how a request arrived, as the socket loop learned it
/// (IP_PKTINFO): needed for the server identifier and the subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Port the request came in on.
    pub service: Service,
    /// This server's address on the receiving interface (for a relayed or
    /// unicast request, the address it was sent to).
    pub local_addr: Ipv4Addr,
    /// Netmask of `local_addr`, if known: used for clients on that subnet
    /// whose record has none.
    pub netmask: Option<Ipv4Addr>,
    /// Source address and port of the datagram.
    pub source: SocketAddrV4,
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255 on the interface the request came in on. Used for
    /// every client without an address, broadcast flag or not: unicasting
    /// to `yiaddr` would need an ARP entry we cannot write from a UDP
    /// socket.
    Broadcast {
        /// Client port (68).
        port: u16,
    },
    /// A client that has an address (RENEW, INFORM, port 4011), or a relay.
    Unicast(SocketAddrV4),
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// OFFER, ACK or NAK.
    pub message_type: MessageType,
    /// The client.
    pub mac: MacAddr,
    /// Address offered or confirmed (unspecified for INFORM and ProxyDHCP).
    pub yiaddr: Ipv4Addr,
    /// What the client was told to boot, if anything.
    pub boot: Option<BootPlan>,
    /// Where to send it.
    pub destination: Destination,
    /// The encoded DHCP message.
    pub payload: Vec<u8>,
    /// Options left out to fit the client's size limit.
    pub dropped_options: Vec<u8>,
}

/// Why no reply is sent. Each is counted, and logged at a level that
/// matches how surprising it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Mode is off.
    #[error("DHCP is off")]
    Disabled,
    /// Unreadable bytes.
    #[error("malformed packet: {0}")]
    Malformed(#[from] WireError),
    /// A server message (op 2), e.g. another server's reply.
    #[error("not a client message (op {0})")]
    NotARequest(u8),
    /// Not Ethernet; records are keyed by 6-byte MACs.
    #[error("hardware type {htype} with address length {hlen} is not Ethernet")]
    UnsupportedHardware {
        /// `htype` field.
        htype: u8,
        /// `hlen` field.
        hlen: u8,
    },
    /// No address of ours to name as server identifier.
    #[error("no server address known for the receiving interface")]
    NoServerAddress,
    /// No hardware record has this MAC.
    #[error("{0} has no hardware record")]
    UnknownClient(MacAddr),
    /// The record leaves this interface to the site's DHCP server.
    #[error("{0}: the record sets disable_dhcp for this interface")]
    DhcpDisabled(MacAddr),
    /// The record has no IPv4 reservation for this MAC.
    #[error("{0} has no reserved IPv4 address")]
    NoReservation(MacAddr),
    /// Proxy mode answers network-boot clients only.
    #[error("{0} is not a network-boot client")]
    NotNetbootClient(MacAddr),
    /// `netboot.allow_pxe` is false (proxy mode has nothing else to give).
    #[error("{0} may not network-boot (netboot.allow_pxe is false)")]
    NetbootNotAllowed(MacAddr),
    /// Proxy mode with no boot file for this client.
    #[error("{mac}: no boot file: {reason}")]
    NoBootFile {
        /// The client.
        mac: MacAddr,
        /// Why.
        reason: String,
    },
    /// The client's REQUEST names another server: it chose that one.
    #[error("{mac} chose server {server}")]
    OtherServerChosen {
        /// The client.
        mac: MacAddr,
        /// The server it chose.
        server: Ipv4Addr,
    },
    /// In proxy mode, REQUESTs on port 67 are the site server's business.
    #[error("{0}: addressing belongs to the site's DHCP server in proxy mode")]
    AddressingNotOurs(MacAddr),
    /// DHCPRELEASE: nothing to do without a lease database.
    #[error("{mac} released {ip}")]
    Released {
        /// The client.
        mac: MacAddr,
        /// The address it gave back.
        ip: Ipv4Addr,
    },
    /// DHCPDECLINE: the client saw its address in use by another host.
    #[error("{mac} declined {ip}: the address is in use by another host")]
    Declined {
        /// The client.
        mac: MacAddr,
        /// The conflicting address.
        ip: Ipv4Addr,
    },
    /// A message type this server does not answer.
    #[error("{mac}: {kind:?} is not answered")]
    Unanswered {
        /// The client.
        mac: MacAddr,
        /// Its message type.
        kind: MessageType,
    },
}

impl DropReason {
    /// Every reason's metric label value, in [`kind_index`](Self::kind_index)
    /// order: a bounded set, whatever the packets say.
    pub const KINDS: [&'static str; 16] = [
        "disabled",
        "malformed",
        "not_a_request",
        "unsupported_hardware",
        "no_server_address",
        "unknown_client",
        "dhcp_disabled",
        "no_reservation",
        "not_netboot_client",
        "netboot_not_allowed",
        "no_boot_file",
        "other_server_chosen",
        "addressing_not_ours",
        "released",
        "declined",
        "unanswered",
    ];

    /// Where `malformed` is in [`KINDS`](Self::KINDS).
    pub const MALFORMED_INDEX: usize = 1;

    /// This reason's place in [`KINDS`](Self::KINDS).
    pub fn kind_index(&self) -> usize {
        match self {
            DropReason::Disabled => 0,
            DropReason::Malformed(_) => Self::MALFORMED_INDEX,
            DropReason::NotARequest(_) => 2,
            DropReason::UnsupportedHardware { .. } => 3,
            DropReason::NoServerAddress => 4,
            DropReason::UnknownClient(_) => 5,
            DropReason::DhcpDisabled(_) => 6,
            DropReason::NoReservation(_) => 7,
            DropReason::NotNetbootClient(_) => 8,
            DropReason::NetbootNotAllowed(_) => 9,
            DropReason::NoBootFile { .. } => 10,
            DropReason::OtherServerChosen { .. } => 11,
            DropReason::AddressingNotOurs(_) => 12,
            DropReason::Released { .. } => 13,
            DropReason::Declined { .. } => 14,
            DropReason::Unanswered { .. } => 15,
        }
    }

    /// This reason's metric label value.
    pub fn kind(&self) -> &'static str {
        Self::KINDS
            .get(self.kind_index())
            .copied()
            .unwrap_or("unanswered")
    }
}

/// The responder's verdict on one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this.
    Reply(Box<Reply>),
    /// Send nothing.
    Drop(DropReason),
}

/// Answers one datagram. Never panics on any input.
pub fn respond(packet: &[u8], arrival: &Arrival, cfg: &DhcpConfig, hosts: &dyn Lookup) -> Decision {
    if cfg.mode == Mode::Off {
        return Decision::Drop(DropReason::Disabled);
    }
    match Request::parse(packet) {
        Ok(request) => respond_to(&request, arrival, cfg, hosts),
        Err(e) => Decision::Drop(DropReason::Malformed(e)),
    }
}

/// Answers an already-decoded request.
pub fn respond_to(
    request: &Request,
    arrival: &Arrival,
    cfg: &DhcpConfig,
    hosts: &dyn Lookup,
) -> Decision {
    let drop = Decision::Drop;
    if cfg.mode == Mode::Off {
        return drop(DropReason::Disabled);
    }
    if request.op != BOOTREQUEST {
        return drop(DropReason::NotARequest(request.op));
    }
    let Some(mac) = request.mac() else {
        return drop(DropReason::UnsupportedHardware {
            htype: request.htype,
            hlen: request.hlen,
        });
    };
    let Some(hardware) = hosts.by_mac(mac) else {
        return drop(DropReason::UnknownClient(mac));
    };
    let Some(interface) = hardware.interface_by_mac(mac) else {
        return drop(DropReason::UnknownClient(mac));
    };
    let server_id = cfg.public_ip.unwrap_or(arrival.local_addr);
    if server_id.is_unspecified() || server_id.is_broadcast() {
        return drop(DropReason::NoServerAddress);
    }
    let exchange = Exchange {
        request,
        arrival,
        cfg,
        mac,
        hardware: &hardware,
        interface,
        client: NetbootClient::classify(request),
        server_id,
    };
    match (arrival.service, cfg.mode) {
        (_, Mode::Off) => drop(DropReason::Disabled),
        (Service::PxeBootServer, _) => exchange.boot_server(),
        (Service::Dhcp, Mode::Reservation) => exchange.reservation(),
        (Service::Dhcp, Mode::Proxy) => exchange.proxy(),
    }
}

/// One request and everything known about it.
struct Exchange<'a> {
    request: &'a Request,
    arrival: &'a Arrival,
    cfg: &'a DhcpConfig,
    mac: MacAddr,
    hardware: &'a Hardware,
    interface: &'a Interface,
    client: NetbootClient,
    server_id: Ipv4Addr,
}

/// Should a reply carry addressing (reservation) or only boot info (proxy)?
#[derive(Clone, Copy, PartialEq, Eq)]
enum Content {
    /// Address, lease and network options (OFFER/ACK).
    Lease(Ipv4Addr),
    /// Network options for a client that has its address (INFORM ACK).
    Inform,
    /// Boot info only, yiaddr 0 (ProxyDHCP).
    BootOnly,
}

impl Exchange<'_> {
    fn netboot_allowed(&self) -> bool {
        bellows_model::boot::netboot_allowed(Some(self.interface))
    }

    fn release_or_decline(&self) -> Option<Decision> {
        let ip = self.request.requested_ip().unwrap_or(self.request.ciaddr);
        match self.request.message_type {
            MessageType::Release => {
                tracing::info!(mac = %self.mac, ip = %self.request.ciaddr, "DHCPRELEASE");
                Some(Decision::Drop(DropReason::Released {
                    mac: self.mac,
                    ip: self.request.ciaddr,
                }))
            }
            MessageType::Decline => {
                tracing::warn!(
                    mac = %self.mac,
                    ip = %ip,
                    "DHCPDECLINE: {} found {ip} already in use on the network; another host has that address (IP conflict): find it, or reserve a free address for this machine",
                    self.mac
                );
                Some(Decision::Drop(DropReason::Declined { mac: self.mac, ip }))
            }
            _ => None,
        }
    }

    fn reservation(&self) -> Decision {
        let mac = self.mac;
        if let Some(done) = self.release_or_decline() {
            return done;
        }
        if self.interface.disable_dhcp {
            return Decision::Drop(DropReason::DhcpDisabled(mac));
        }
        let reserved = self
            .interface
            .dhcp
            .as_ref()
            .and_then(|d| d.ip.as_ref())
            .and_then(|ip| match ip.address {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            });
        let Some(reserved) = reserved else {
            return Decision::Drop(DropReason::NoReservation(mac));
        };
        match self.request.message_type {
            MessageType::Discover => self.reply(MessageType::Offer, Content::Lease(reserved)),
            MessageType::Request => {
                if let Some(chosen) = self.request.server_id()
                    && chosen != self.server_id
                {
                    return Decision::Drop(DropReason::OtherServerChosen {
                        mac,
                        server: chosen,
                    });
                }
                let ciaddr = self.request.ciaddr;
                let wanted = self
                    .request
                    .requested_ip()
                    .or((!ciaddr.is_unspecified()).then_some(ciaddr));
                match wanted {
                    Some(ip) if ip == reserved => {
                        self.reply(MessageType::Ack, Content::Lease(reserved))
                    }
                    Some(ip) => self.nak(format!(
                        "{ip} is not the address reserved for {mac}; start over with DHCPDISCOVER"
                    )),
                    None => self.nak("DHCPREQUEST names no address".to_string()),
                }
            }
            MessageType::Inform => self.reply(MessageType::Ack, Content::Inform),
            kind => Decision::Drop(DropReason::Unanswered { mac, kind }),
        }
    }

    fn proxy(&self) -> Decision {
        let mac = self.mac;
        if let Some(done) = self.release_or_decline() {
            return done;
        }
        if !self.client.is_netboot() {
            return Decision::Drop(DropReason::NotNetbootClient(mac));
        }
        if !self.netboot_allowed() {
            return Decision::Drop(DropReason::NetbootNotAllowed(mac));
        }
        match self.request.message_type {
            MessageType::Discover => self.reply(MessageType::Offer, Content::BootOnly),
            // Some PXE ROMs send the boot-server request to port 67 with
            // our identifier. A REQUEST that asks for an address (option
            // 50) is the client taking a lease: when the site's DHCP server
            // shares our address it names "us", and a boot-only ACK would
            // race the real one (OVMF declines the lease on seeing it).
            MessageType::Request
                if self.request.server_id() == Some(self.server_id)
                    && self.request.requested_ip().is_none() =>
            {
                self.reply(MessageType::Ack, Content::BootOnly)
            }
            MessageType::Request => Decision::Drop(DropReason::AddressingNotOurs(mac)),
            kind => Decision::Drop(DropReason::Unanswered { mac, kind }),
        }
    }

    /// Port 4011: the PXE (and iPXE) ProxyDHCP request of a client that
    /// already has its address.
    fn boot_server(&self) -> Decision {
        let mac = self.mac;
        if !self.client.is_netboot() {
            return Decision::Drop(DropReason::NotNetbootClient(mac));
        }
        if !self.netboot_allowed() {
            return Decision::Drop(DropReason::NetbootNotAllowed(mac));
        }
        match self.request.message_type {
            MessageType::Request | MessageType::Inform => {
                self.reply(MessageType::Ack, Content::BootOnly)
            }
            kind => Decision::Drop(DropReason::Unanswered { mac, kind }),
        }
    }

    fn destination(&self, kind: MessageType) -> Destination {
        let req = self.request;
        let client = self.cfg.client_port;
        if !req.giaddr.is_unspecified() {
            return Destination::Unicast(SocketAddrV4::new(req.giaddr, self.cfg.relay_port));
        }
        if self.arrival.service == Service::PxeBootServer {
            let src = self.arrival.source;
            return if src.ip().is_unspecified() {
                Destination::Broadcast { port: src.port() }
            } else {
                Destination::Unicast(src)
            };
        }
        if kind == MessageType::Nak || req.ciaddr.is_unspecified() {
            // RFC 2131 §4.1: NAKs are broadcast when not relayed.
            Destination::Broadcast { port: client }
        } else {
            Destination::Unicast(SocketAddrV4::new(req.ciaddr, client))
        }
    }

    /// The largest DHCP payload this client accepts (option 57 counts the
    /// IP and UDP headers; below 576 is not allowed, above our cap is not
    /// sent).
    fn max_payload(&self) -> usize {
        let asked = self
            .request
            .max_message_size()
            .map_or(MIN_DATAGRAM_LEN, usize::from);
        let datagram = asked
            .min(usize::from(self.cfg.max_datagram_len))
            .max(MIN_DATAGRAM_LEN);
        datagram - IP_UDP_HEADER_LEN
    }

    fn header(&self, yiaddr: Ipv4Addr) -> ReplyPacket {
        let req = self.request;
        ReplyPacket {
            htype: req.htype,
            hlen: req.hlen,
            xid: req.xid,
            flags: req.flags,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: req.giaddr,
            chaddr: req.chaddr,
            file: Vec::new(),
            options: Vec::new(),
        }
    }

    fn nak(&self, message: String) -> Decision {
        tracing::info!(mac = %self.mac, "DHCPNAK: {message}");
        let mut packet = self.header(Ipv4Addr::UNSPECIFIED);
        if !self.request.giaddr.is_unspecified() {
            packet.flags |= BROADCAST_FLAG;
        }
        let mut options = OptionList::default();
        options.put(code::MESSAGE_TYPE, vec![MessageType::Nak.code()], true);
        options.put(code::SERVER_ID, self.server_id.octets().to_vec(), true);
        options.put(code::MESSAGE, message.into_bytes(), false);
        self.finish(MessageType::Nak, packet, options, None)
    }

    fn reply(&self, kind: MessageType, content: Content) -> Decision {
        let yiaddr = match content {
            Content::Lease(ip) => ip,
            Content::Inform | Content::BootOnly => Ipv4Addr::UNSPECIFIED,
        };
        let mut packet = self.header(yiaddr);
        if kind == MessageType::Ack {
            packet.ciaddr = self.request.ciaddr;
        }
        let mut options = OptionList::default();
        options.put(code::MESSAGE_TYPE, vec![kind.code()], true);
        options.put(code::SERVER_ID, self.server_id.octets().to_vec(), true);
        match content {
            Content::Lease(ip) => {
                self.lease_options(&mut options);
                self.network_options(&mut options, ip);
            }
            Content::Inform => {
                let own = if self.request.ciaddr.is_unspecified() {
                    *self.arrival.source.ip()
                } else {
                    self.request.ciaddr
                };
                self.network_options(&mut options, own);
            }
            Content::BootOnly => {}
        }

        let boot = if self.client.is_netboot() && self.netboot_allowed() {
            let plan = netboot::plan(
                self.cfg,
                &PlanInputs {
                    client: self.client,
                    mac: self.mac,
                    interface: self.interface,
                    server_id: self.server_id,
                },
            );
            if let BootPlan::Nothing(reason) = &plan {
                tracing::warn!(mac = %self.mac, arch = ?self.client.arch, "no boot file sent: {reason}");
                if content == Content::BootOnly {
                    return Decision::Drop(DropReason::NoBootFile {
                        mac: self.mac,
                        reason: reason.clone(),
                    });
                }
            } else {
                self.boot_options(&mut options, &mut packet, &plan, content);
            }
            Some(plan)
        } else {
            None
        };
        self.finish(kind, packet, options, boot)
    }

    fn lease_options(&self, options: &mut OptionList) {
        let from_record = self
            .interface
            .dhcp
            .as_ref()
            .and_then(|d| d.lease_time)
            .filter(|t| *t > 0);
        let lease = from_record
            .unwrap_or(self.cfg.default_lease_time.as_secs())
            .clamp(1, u64::from(u32::MAX));
        let secs = |v: u64| u32::try_from(v).unwrap_or(u32::MAX).to_be_bytes().to_vec();
        options.put(code::LEASE_TIME, secs(lease), true);
        if lease < u64::from(u32::MAX) {
            options.put(code::RENEWAL_TIME, secs(lease / 2), false);
            options.put(code::REBINDING_TIME, secs(lease * 7 / 8), false);
        }
    }

    /// Mask, router, DNS, names, NTP, syslog: what the client needs to use
    /// `own` on its network.
    fn network_options(&self, options: &mut OptionList, own: Ipv4Addr) {
        let dhcp = self.interface.dhcp.as_ref();
        let ip = dhcp.and_then(|d| d.ip.as_ref());
        let relayed = !self.request.giaddr.is_unspecified();
        let netmask = ip.and_then(|ip| ip.netmask).or_else(|| {
            // The receiving interface's mask fits only a client on its subnet.
            let mask = self.arrival.netmask?;
            let same_subnet = (u32::from(own) & u32::from(mask))
                == (u32::from(self.arrival.local_addr) & u32::from(mask));
            (!relayed && same_subnet).then_some(mask)
        });
        if let Some(mask) = netmask {
            options.put(code::SUBNET_MASK, mask.octets().to_vec(), true);
        }
        if let Some(IpAddr::V4(gw)) = ip.and_then(|ip| ip.gateway) {
            options.put(code::ROUTER, gw.octets().to_vec(), true);
        }
        let v4_list = |list: Option<&Vec<IpAddr>>| -> Vec<u8> {
            list.into_iter()
                .flatten()
                .filter_map(|a| match a {
                    IpAddr::V4(v4) => Some(v4.octets()),
                    IpAddr::V6(_) => None,
                })
                .flatten()
                .collect()
        };
        let dns = v4_list(dhcp.and_then(|d| d.name_servers.as_ref()));
        if !dns.is_empty() {
            options.put(code::DNS_SERVERS, dns, false);
        }
        if let Some(log) = self.cfg.syslog_server {
            options.put(code::LOG_SERVERS, log.octets().to_vec(), false);
        }
        let hostname = dhcp
            .and_then(|d| d.hostname.as_deref())
            .or_else(|| self.hardware.hostname())
            .filter(|h| !h.is_empty() && h.len() <= 255);
        if let Some(host) = hostname {
            options.put(code::HOSTNAME, host.as_bytes().to_vec(), false);
        }
        if let Some(domain) = &self.cfg.domain_name {
            options.put(code::DOMAIN_NAME, domain.as_bytes().to_vec(), false);
        }
        if let Some(mask) = netmask {
            let broadcast = Ipv4Addr::from(u32::from(own) | !u32::from(mask));
            options.put(code::BROADCAST_ADDRESS, broadcast.octets().to_vec(), false);
        }
        let ntp = v4_list(dhcp.and_then(|d| d.time_servers.as_ref()));
        if !ntp.is_empty() {
            options.put(code::NTP_SERVERS, ntp, false);
        }
    }

    fn boot_options(
        &self,
        options: &mut OptionList,
        packet: &mut ReplyPacket,
        plan: &BootPlan,
        content: Content,
    ) {
        let requested = |c: u8| self.request.parameter_request_list().contains(&c);
        // Every boot file comes with a next-server, URLs included: iPXE
        // accepts a ProxyDHCP reply only when it names both (else it prints
        // "Nothing to boot"), and scripts may use `${next-server}`.
        let url_next_server = self.cfg.tftp_server.unwrap_or(self.server_id);
        let (file, next_server) = match plan {
            BootPlan::Tftp { next_server, file } => (file.as_str(), *next_server),
            BootPlan::Http { url } | BootPlan::Script { url } => (url.as_str(), url_next_server),
            BootPlan::Nothing(_) => return,
        };
        let fits_file_field = file.len() < FILE_LEN;
        if fits_file_field {
            packet.file = file.as_bytes().to_vec();
        }
        packet.siaddr = next_server;
        if requested(code::TFTP_SERVER_NAME) {
            options.put(
                code::TFTP_SERVER_NAME,
                next_server.to_string().into_bytes(),
                false,
            );
        }
        // UEFI HTTP boot and iPXE read option 67; PXE ROMs read `file`.
        let url_client = !matches!(plan, BootPlan::Tftp { .. });
        if url_client || !fits_file_field || requested(code::BOOTFILE_NAME) {
            options.put(
                code::BOOTFILE_NAME,
                file.as_bytes().to_vec(),
                url_client || !fits_file_field,
            );
        }
        match self.client.kind {
            ClientKind::PxeFirmware => {
                options.put(code::VENDOR_CLASS, b"PXEClient".to_vec(), true);
                // PXE discovery control: no boot-server discovery, boot the
                // file named here.
                options.put(code::VENDOR_SPECIFIC, vec![6, 1, 8, code::END], false);
            }
            ClientKind::HttpFirmware => {
                options.put(code::VENDOR_CLASS, b"HTTPClient".to_vec(), true);
            }
            ClientKind::Ipxe { .. } => {
                if content == Content::BootOnly {
                    // iPXE accepts a ProxyDHCP offer only with PXEClient.
                    options.put(code::VENDOR_CLASS, b"PXEClient".to_vec(), true);
                } else {
                    // no-pxedhcp: do not wait ~3 s for ProxyDHCP offers.
                    options.put(
                        code::IPXE_ENCAPSULATED,
                        vec![code::IPXE_NO_PXEDHCP, 1, 1],
                        false,
                    );
                }
            }
            ClientKind::Plain => {}
        }
        if matches!(
            self.client.kind,
            ClientKind::PxeFirmware | ClientKind::HttpFirmware
        ) && let Some(uuid) = self.request.options.get(code::CLIENT_UUID)
        {
            options.put(code::CLIENT_UUID, uuid.to_vec(), false);
        }
    }

    fn finish(
        &self,
        kind: MessageType,
        mut packet: ReplyPacket,
        options: OptionList,
        boot: Option<BootPlan>,
    ) -> Decision {
        packet.options = options.ordered(self.request.parameter_request_list());
        let mut max_len = self.max_payload();
        if !self.request.giaddr.is_unspecified()
            && let Some(info) = self.request.options.get(code::RELAY_AGENT_INFO)
        {
            // RFC 3046: echo the relay's option 82, last. The relay strips
            // it before the client sees the reply, so it does not count
            // against the client's limit.
            max_len += wire::option_wire_len(info);
            packet.options.push(ReplyOption {
                code: code::RELAY_AGENT_INFO,
                data: info.to_vec(),
                required: true,
            });
        }
        let encoded = packet.encode(max_len);
        if !encoded.dropped.is_empty() {
            tracing::debug!(mac = %self.mac, dropped = ?encoded.dropped, "options left out to fit the client's size limit");
        }
        Decision::Reply(Box::new(Reply {
            message_type: kind,
            mac: self.mac,
            yiaddr: packet.yiaddr,
            boot,
            destination: self.destination(kind),
            payload: encoded.bytes,
            dropped_options: encoded.dropped,
        }))
    }
}

/// Reply options before ordering.
#[derive(Default)]
struct OptionList {
    items: Vec<ReplyOption>,
}

impl OptionList {
    fn put(&mut self, code: u8, data: Vec<u8>, required: bool) {
        self.items.retain(|o| o.code != code);
        self.items.push(ReplyOption {
            code,
            data,
            required,
        });
    }

    /// Message type, server id, then what the client asked for in its order
    /// (option 55), then the rest in the order they were added: so the
    /// options dropped to fit a small client are the ones it did not ask for.
    fn ordered(mut self, parameter_request_list: &[u8]) -> Vec<ReplyOption> {
        let rank = |c: u8| match c {
            code::MESSAGE_TYPE => 0,
            code::SERVER_ID => 1,
            _ => match parameter_request_list.iter().position(|p| *p == c) {
                Some(pos) => 2 + pos,
                None => 2 + 256,
            },
        };
        // Stable: equal ranks keep insertion order.
        self.items.sort_by_key(|o| rank(o.code));
        self.items
    }
}

#[cfg(test)]
mod tests;
