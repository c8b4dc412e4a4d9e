//! Byte-level tests of the pure responder. Requests are built, and replies
//! read, with dhcproto: an independent codec, so a mistake in our wire code
//! cannot hide behind the same mistake in the test.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use bellows_model::{Hardware, MacAddr};
use dhcproto::v4::{self, Architecture, DhcpOption, Message, OptionCode, UnknownOption};
use dhcproto::{Decodable, Decoder, Encodable};

use super::*;
use crate::config::IpxeBinaries;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 1);
const MASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
const MAC_A: MacAddr = MacAddr([0x02, 0x66, 0, 0, 0, 0x0a]);
const MAC_NO_PXE: MacAddr = MacAddr([0x02, 0x66, 0, 0, 0, 0x0b]);
const MAC_NO_IP: MacAddr = MacAddr([0x02, 0x66, 0, 0, 0, 0x0c]);
const MAC_SITE_DHCP: MacAddr = MacAddr([0x02, 0x66, 0, 0, 0, 0x0d]);
const MAC_UEFI_HINT: MacAddr = MacAddr([0x02, 0x66, 0, 0, 0, 0x0e]);
const MAC_OVERRIDE: MacAddr = MacAddr([0x02, 0x66, 0, 0, 0, 0x0f]);
const MAC_V6_ONLY: MacAddr = MacAddr([0x02, 0x66, 0, 0, 0, 0x10]);
const MAC_UNKNOWN: MacAddr = MacAddr([0x02, 0x66, 0, 0, 0, 0xff]);
const RESERVED_A: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 10);

fn record(json: serde_json::Value) -> Arc<Hardware> {
    Arc::new(Hardware::from_value(json).expect("valid hardware"))
}

fn hosts() -> HashMap<MacAddr, Arc<Hardware>> {
    let mut map = HashMap::new();
    let mut add = |mac: MacAddr, hw: Arc<Hardware>| {
        map.insert(mac, hw);
    };
    add(
        MAC_A,
        record(serde_json::json!({
            "id": "a",
            "network": {"interfaces": [{
                "dhcp": {
                    "mac": MAC_A.to_string(),
                    "ip": {"address": "10.66.0.10", "netmask": "255.255.255.0", "gateway": "10.66.0.1"},
                    "hostname": "node-a",
                    "lease_time": 600,
                    "name_servers": ["10.66.0.53", "2001:db8::53", "10.66.0.54"],
                    "time_servers": ["10.66.0.123"]
                },
                "netboot": {"allow_pxe": true, "allow_workflow": true}
            }]}
        })),
    );
    add(
        MAC_NO_PXE,
        record(serde_json::json!({
            "id": "b",
            "network": {"interfaces": [{
                "dhcp": {"mac": MAC_NO_PXE.to_string(), "ip": {"address": "10.66.0.11", "netmask": "255.255.255.0"}},
                "netboot": {"allow_pxe": false}
            }]}
        })),
    );
    add(
        MAC_NO_IP,
        record(serde_json::json!({
            "id": "c",
            "network": {"interfaces": [{"dhcp": {"mac": MAC_NO_IP.to_string()}}]}
        })),
    );
    add(
        MAC_SITE_DHCP,
        record(serde_json::json!({
            "id": "d",
            "network": {"interfaces": [{
                "dhcp": {"mac": MAC_SITE_DHCP.to_string(), "ip": {"address": "10.66.0.13"}},
                "disable_dhcp": true
            }]}
        })),
    );
    add(
        MAC_UEFI_HINT,
        record(serde_json::json!({
            "id": "e",
            "network": {"interfaces": [{
                // No netmask: the receiving interface's /24 applies.
                "dhcp": {"mac": MAC_UEFI_HINT.to_string(), "ip": {"address": "10.66.0.14"},
                         "arch": "x86_64", "uefi": true}
            }]}
        })),
    );
    add(
        MAC_OVERRIDE,
        record(serde_json::json!({
            "id": "f",
            "network": {"interfaces": [{
                "dhcp": {"mac": MAC_OVERRIDE.to_string(), "ip": {"address": "10.66.0.15"}},
                "netboot": {"allow_pxe": true, "ipxe_binary": "snponly.efi"}
            }]}
        })),
    );
    add(
        MAC_V6_ONLY,
        record(serde_json::json!({
            "id": "g",
            "network": {"interfaces": [{
                "dhcp": {"mac": MAC_V6_ONLY.to_string(), "ip": {"address": "2001:db8::10"}}
            }]}
        })),
    );
    map
}

fn arrival() -> Arrival {
    Arrival {
        service: Service::Dhcp,
        local_addr: SERVER,
        netmask: Some(MASK),
        source: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
    }
}

fn message(mac: MacAddr, kind: v4::MessageType) -> Message {
    let mut msg = Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.octets(),
    );
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    msg
}

fn discover(mac: MacAddr) -> Message {
    message(mac, v4::MessageType::Discover)
}

fn with(mut msg: Message, opt: DhcpOption) -> Message {
    msg.opts_mut().insert(opt);
    msg
}

fn raw(code: u8, data: &[u8]) -> DhcpOption {
    DhcpOption::Unknown(UnknownOption::new(OptionCode::from(code), data.to_vec()))
}

fn pxe(mac: MacAddr, arch: u16) -> Message {
    let msg = with(
        discover(mac),
        DhcpOption::ClassIdentifier(format!("PXEClient:Arch:{arch:05}:UNDI:003016").into_bytes()),
    );
    with(
        msg,
        DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
    )
}

fn ipxe(mac: MacAddr, arch: u16) -> Message {
    let msg = with(pxe(mac, arch), DhcpOption::UserClass(b"iPXE".to_vec()));
    with(msg, raw(175, &[0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e]))
}

fn bytes(msg: &Message) -> Vec<u8> {
    msg.to_vec().expect("dhcproto encodes")
}

fn decide_with(msg: &Message, cfg: &DhcpConfig, at: &Arrival) -> Decision {
    respond(&bytes(msg), at, cfg, &hosts())
}

fn decide(msg: &Message) -> Decision {
    decide_with(msg, &DhcpConfig::default(), &arrival())
}

fn expect_reply(decision: Decision) -> (Reply, Message) {
    match decision {
        Decision::Reply(reply) => {
            let parsed = Message::decode(&mut Decoder::new(&reply.payload))
                .expect("dhcproto decodes our reply");
            (*reply, parsed)
        }
        Decision::Drop(reason) => panic!("expected a reply, dropped: {reason}"),
    }
}

fn expect_drop(decision: Decision) -> DropReason {
    match decision {
        Decision::Drop(reason) => reason,
        Decision::Reply(reply) => panic!("expected no reply, got {:?}", reply.message_type),
    }
}

fn opt(msg: &Message, code: OptionCode) -> Option<&DhcpOption> {
    msg.opts().get(code)
}

fn raw_opt(msg: &Message, code: u8) -> Option<Vec<u8>> {
    match msg.opts().get(OptionCode::from(code))? {
        DhcpOption::Unknown(u) => Some(u.data().to_vec()),
        other => panic!("option {code} decoded as {other:?}"),
    }
}

/// The BOOTP `file` field (dhcproto keeps the terminating NUL).
fn file(msg: &Message) -> String {
    let raw = msg.fname_str().and_then(Result::ok).unwrap_or_default();
    raw.trim_end_matches('\0').to_string()
}

fn class_id(msg: &Message) -> Option<Vec<u8>> {
    match opt(msg, OptionCode::ClassIdentifier)? {
        DhcpOption::ClassIdentifier(v) => Some(v.clone()),
        _ => None,
    }
}

fn bootfile_opt(msg: &Message) -> Option<String> {
    match opt(msg, OptionCode::BootfileName)? {
        DhcpOption::BootfileName(v) => Some(String::from_utf8_lossy(v).into_owned()),
        _ => None,
    }
}

/// Option codes in the order they appear in the reply.
fn option_order(payload: &[u8]) -> Vec<u8> {
    let mut codes = Vec::new();
    let mut i = 240;
    while i < payload.len() {
        match payload[i] {
            0 => i += 1,
            255 => break,
            c => {
                codes.push(c);
                i += 2 + usize::from(payload[i + 1]);
            }
        }
    }
    codes
}

#[test]
fn discover_from_a_known_mac_gets_its_reservation_and_network_options() {
    let (reply, offer) = expect_reply(decide(&discover(MAC_A)));
    assert_eq!(offer.opts().msg_type(), Some(v4::MessageType::Offer));
    assert_eq!(offer.yiaddr(), RESERVED_A);
    assert_eq!(offer.xid(), 0x1234_5678);
    assert_eq!(offer.chaddr(), &MAC_A.octets());
    assert_eq!(reply.destination, Destination::Broadcast { port: 68 });
    assert_eq!(
        opt(&offer, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(&offer, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(MASK))
    );
    assert_eq!(
        opt(&offer, OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert_eq!(
        opt(&offer, OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![
            Ipv4Addr::new(10, 66, 0, 53),
            Ipv4Addr::new(10, 66, 0, 54)
        ])),
        "IPv6 name servers are left out of a DHCPv4 reply"
    );
    assert_eq!(
        opt(&offer, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("node-a".into()))
    );
    assert_eq!(
        opt(&offer, OptionCode::BroadcastAddr),
        Some(&DhcpOption::BroadcastAddr(Ipv4Addr::new(10, 66, 0, 255)))
    );
    assert_eq!(
        opt(&offer, OptionCode::NtpServers),
        Some(&DhcpOption::NtpServers(vec![Ipv4Addr::new(10, 66, 0, 123)]))
    );
    assert_eq!(
        opt(&offer, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(600))
    );
    assert_eq!(
        opt(&offer, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(300))
    );
    assert_eq!(
        opt(&offer, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(525))
    );
    // A plain client gets no boot info.
    assert_eq!(file(&offer), "");
    assert_eq!(offer.siaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(reply.boot.is_none());
    // Every client accepts 576-byte datagrams; BOOTP wants at least 300.
    assert!(reply.payload.len() >= 300 && reply.payload.len() <= 548);
}

#[test]
fn configured_public_ip_domain_and_syslog_are_used() {
    let cfg = DhcpConfig {
        public_ip: Some(Ipv4Addr::new(192, 0, 2, 7)),
        domain_name: Some("rack1.example".into()),
        syslog_server: Some(Ipv4Addr::new(10, 66, 0, 2)),
        default_lease_time: Duration::from_secs(3600),
        ..DhcpConfig::default()
    };
    let (_, offer) = expect_reply(decide_with(&discover(MAC_UEFI_HINT), &cfg, &arrival()));
    assert_eq!(
        opt(&offer, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 7)))
    );
    assert_eq!(
        opt(&offer, OptionCode::DomainName),
        Some(&DhcpOption::DomainName("rack1.example".into()))
    );
    assert_eq!(
        opt(&offer, OptionCode::LogServer),
        Some(&DhcpOption::LogServer(vec![Ipv4Addr::new(10, 66, 0, 2)]))
    );
    assert_eq!(
        opt(&offer, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    // The record has no netmask: the receiving interface's applies.
    assert_eq!(
        opt(&offer, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(MASK))
    );
    assert!(opt(&offer, OptionCode::Router).is_none());
}

#[test]
fn request_for_the_reservation_is_acked() {
    let msg = with(
        message(MAC_A, v4::MessageType::Request),
        DhcpOption::RequestedIpAddress(RESERVED_A),
    );
    let msg = with(msg, DhcpOption::ServerIdentifier(SERVER));
    let (reply, ack) = expect_reply(decide(&msg));
    assert_eq!(ack.opts().msg_type(), Some(v4::MessageType::Ack));
    assert_eq!(ack.yiaddr(), RESERVED_A);
    assert_eq!(reply.destination, Destination::Broadcast { port: 68 });

    // RENEWING: ciaddr set, no option 50 → unicast to the client.
    let mut renew = message(MAC_A, v4::MessageType::Request);
    renew.set_ciaddr(RESERVED_A);
    let (reply, ack) = expect_reply(decide(&renew));
    assert_eq!(ack.opts().msg_type(), Some(v4::MessageType::Ack));
    assert_eq!(ack.ciaddr(), RESERVED_A);
    assert_eq!(
        reply.destination,
        Destination::Unicast(SocketAddrV4::new(RESERVED_A, 68))
    );
}

#[test]
fn request_for_another_address_is_nakked() {
    let msg = with(
        message(MAC_A, v4::MessageType::Request),
        DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 66, 0, 99)),
    );
    let (reply, nak) = expect_reply(decide(&msg));
    assert_eq!(nak.opts().msg_type(), Some(v4::MessageType::Nak));
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.destination, Destination::Broadcast { port: 68 });
    assert!(
        matches!(opt(&nak, OptionCode::Message), Some(DhcpOption::Message(m)) if m.contains("10.66.0.99"))
    );
    assert!(opt(&nak, OptionCode::AddressLeaseTime).is_none());
    assert_eq!(
        opt(&nak, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );

    // A REQUEST naming no address at all is refused too.
    let (_, nak) = expect_reply(decide(&message(MAC_A, v4::MessageType::Request)));
    assert_eq!(nak.opts().msg_type(), Some(v4::MessageType::Nak));

    let stats = crate::stats::DhcpStats::default();
    stats.decided(&decide(&msg));
    assert_eq!(stats.snapshot().naks, 1);
    assert_eq!(stats.snapshot().replied, 1);
    // By kind: one NAK, booting nothing; nothing else counted.
    let by_kind = stats.by_kind();
    let counted: Vec<_> = by_kind.replies.iter().filter(|(_, _, n)| *n > 0).collect();
    assert_eq!(counted, [&("nak", "none", 1)]);
    assert!(by_kind.drops.iter().all(|(_, n)| *n == 0));
}

#[test]
fn every_drop_reason_has_its_own_metric_label() {
    let mac = MAC_A;
    let ip = Ipv4Addr::new(10, 0, 0, 1);
    let reasons = [
        DropReason::Disabled,
        DropReason::Malformed(WireError::TooShort(3)),
        DropReason::NotARequest(2),
        DropReason::UnsupportedHardware { htype: 6, hlen: 6 },
        DropReason::NoServerAddress,
        DropReason::UnknownClient(mac),
        DropReason::DhcpDisabled(mac),
        DropReason::NoReservation(mac),
        DropReason::NotNetbootClient(mac),
        DropReason::NetbootNotAllowed(mac),
        DropReason::NoBootFile {
            mac,
            reason: "none".into(),
        },
        DropReason::OtherServerChosen { mac, server: ip },
        DropReason::AddressingNotOurs(mac),
        DropReason::Released { mac, ip },
        DropReason::Declined { mac, ip },
        DropReason::Unanswered {
            mac,
            kind: MessageType::Inform,
        },
    ];
    assert_eq!(reasons.len(), DropReason::KINDS.len());
    let mut labels: Vec<&str> = reasons.iter().map(DropReason::kind).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), reasons.len(), "two reasons share a label");
    // Each is counted under its own label.
    let stats = crate::stats::DhcpStats::default();
    for reason in &reasons {
        stats.decided(&Decision::Drop(reason.clone()));
    }
    let by_kind = stats.by_kind();
    assert!(by_kind.drops.iter().all(|(_, n)| *n == 1), "{by_kind:?}");
}

#[test]
fn request_to_another_server_is_ignored() {
    let msg = with(
        message(MAC_A, v4::MessageType::Request),
        DhcpOption::RequestedIpAddress(RESERVED_A),
    );
    let msg = with(
        msg,
        DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 66, 0, 250)),
    );
    assert_eq!(
        expect_drop(decide(&msg)),
        DropReason::OtherServerChosen {
            mac: MAC_A,
            server: Ipv4Addr::new(10, 66, 0, 250)
        }
    );
}

#[test]
fn inform_gets_options_without_address_or_lease() {
    let mut msg = message(MAC_A, v4::MessageType::Inform);
    msg.set_ciaddr(RESERVED_A);
    let (reply, ack) = expect_reply(decide(&msg));
    assert_eq!(ack.opts().msg_type(), Some(v4::MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.ciaddr(), RESERVED_A);
    assert!(opt(&ack, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&ack, OptionCode::Renewal).is_none());
    assert!(opt(&ack, OptionCode::Rebinding).is_none());
    assert_eq!(
        opt(&ack, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(MASK))
    );
    assert_eq!(
        reply.destination,
        Destination::Unicast(SocketAddrV4::new(RESERVED_A, 68))
    );
}

#[test]
fn release_and_decline_send_nothing() {
    let mut release = message(MAC_A, v4::MessageType::Release);
    release.set_ciaddr(RESERVED_A);
    assert_eq!(
        expect_drop(decide(&release)),
        DropReason::Released {
            mac: MAC_A,
            ip: RESERVED_A
        }
    );
    let decline = with(
        message(MAC_A, v4::MessageType::Decline),
        DhcpOption::RequestedIpAddress(RESERVED_A),
    );
    let reason = expect_drop(decide(&decline));
    assert_eq!(
        reason,
        DropReason::Declined {
            mac: MAC_A,
            ip: RESERVED_A
        }
    );
    let text = reason.to_string();
    assert!(
        text.contains("02:66:00:00:00:0a") && text.contains("10.66.0.10"),
        "{text}"
    );
}

#[test]
fn machines_without_a_usable_reservation_get_nothing() {
    assert_eq!(
        expect_drop(decide(&discover(MAC_UNKNOWN))),
        DropReason::UnknownClient(MAC_UNKNOWN)
    );
    assert_eq!(
        expect_drop(decide(&pxe(MAC_UNKNOWN, 7))),
        DropReason::UnknownClient(MAC_UNKNOWN)
    );
    assert_eq!(
        expect_drop(decide(&discover(MAC_NO_IP))),
        DropReason::NoReservation(MAC_NO_IP)
    );
    assert_eq!(
        expect_drop(decide(&discover(MAC_V6_ONLY))),
        DropReason::NoReservation(MAC_V6_ONLY)
    );
    assert_eq!(
        expect_drop(decide(&discover(MAC_SITE_DHCP))),
        DropReason::DhcpDisabled(MAC_SITE_DHCP)
    );
}

#[test]
fn mode_off_and_missing_server_address_answer_nothing() {
    let off = DhcpConfig {
        mode: Mode::Off,
        ..DhcpConfig::default()
    };
    assert_eq!(
        expect_drop(decide_with(&discover(MAC_A), &off, &arrival())),
        DropReason::Disabled
    );
    let nowhere = Arrival {
        local_addr: Ipv4Addr::UNSPECIFIED,
        ..arrival()
    };
    assert_eq!(
        expect_drop(decide_with(
            &discover(MAC_A),
            &DhcpConfig::default(),
            &nowhere
        )),
        DropReason::NoServerAddress
    );
}

#[test]
fn relayed_requests_are_answered_to_the_relay_with_option_82() {
    let relay = Ipv4Addr::new(10, 77, 0, 1);
    let mut msg = discover(MAC_A);
    msg.set_giaddr(relay);
    msg.set_hops(1);
    let mut packet = bytes(&msg);
    // Append option 82 (circuit id "eth7") before END, as a relay does.
    assert_eq!(packet.pop(), Some(255));
    packet.extend_from_slice(&[82, 6, 1, 4, b'e', b't', b'h', b'7', 255]);
    let at = Arrival {
        source: SocketAddrV4::new(relay, 67),
        ..arrival()
    };
    let decision = respond(&packet, &at, &DhcpConfig::default(), &hosts());
    let (reply, offer) = expect_reply(decision);
    assert_eq!(
        reply.destination,
        Destination::Unicast(SocketAddrV4::new(relay, 67))
    );
    assert_eq!(offer.giaddr(), relay);
    assert_eq!(offer.yiaddr(), RESERVED_A);
    let order = option_order(&reply.payload);
    assert_eq!(
        order.last(),
        Some(&82),
        "option 82 is echoed last: {order:?}"
    );
    let at82 = reply
        .payload
        .windows(8)
        .position(|w| w == [82, 6, 1, 4, b'e', b't', b'h', b'7']);
    assert!(at82.is_some());

    // A large option 82 is echoed whole and does not push the client's own
    // options out (the relay strips it before the client sees the reply).
    let mut relayed_pxe = pxe(MAC_A, 7);
    relayed_pxe.set_giaddr(relay);
    let mut big82 = bytes(&relayed_pxe);
    big82.pop();
    big82.extend_from_slice(&[82, 250, 1, 248]);
    big82.extend(std::iter::repeat_n(b'c', 248));
    big82.push(255);
    let decision = respond(&big82, &at, &DhcpConfig::default(), &hosts());
    let (with_big82, _) = expect_reply(decision);
    assert!(
        with_big82.dropped_options.is_empty(),
        "{:?}",
        with_big82.dropped_options
    );
    assert!(with_big82.payload.len() > 548 && with_big82.payload.len() <= 548 + 252);
    assert_eq!(option_order(&with_big82.payload).last(), Some(&82));
    assert!(
        with_big82
            .payload
            .windows(4)
            .any(|w| w == [82, 250, 1, 248])
    );

    // A NAK through a relay has the broadcast bit set for the relay.
    let mut wrong = with(
        message(MAC_A, v4::MessageType::Request),
        DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 9)),
    );
    wrong.set_giaddr(relay);
    let (reply, nak) = expect_reply(decide_with(&wrong, &DhcpConfig::default(), &at));
    assert_eq!(
        reply.destination,
        Destination::Unicast(SocketAddrV4::new(relay, 67))
    );
    assert!(nak.flags().broadcast());
}

#[test]
fn bios_pxe_gets_undionly_over_tftp() {
    let msg = with(
        pxe(MAC_A, 0),
        DhcpOption::ClientMachineIdentifier([0u8; 17].to_vec()),
    );
    let (reply, offer) = expect_reply(decide(&msg));
    assert_eq!(offer.yiaddr(), RESERVED_A);
    assert_eq!(file(&offer), "undionly.kpxe");
    assert_eq!(offer.siaddr(), SERVER);
    assert_eq!(class_id(&offer).as_deref(), Some(&b"PXEClient"[..]));
    assert_eq!(
        opt(&offer, OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    assert_eq!(
        opt(&offer, OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier([0u8; 17].to_vec())),
        "option 97 is echoed"
    );
    assert!(
        raw_opt(&offer, 175).is_none(),
        "firmware PXE gets no iPXE options"
    );
    assert_eq!(
        reply.boot,
        Some(BootPlan::Tftp {
            next_server: SERVER,
            file: "undionly.kpxe".into()
        })
    );
}

#[test]
fn uefi_x64_pxe_gets_ipxe_efi_over_tftp() {
    for arch in [7, 9] {
        let (_, offer) = expect_reply(decide(&pxe(MAC_A, arch)));
        assert_eq!(file(&offer), "snponly.efi", "arch {arch}");
        assert_eq!(offer.siaddr(), SERVER);
        assert_eq!(class_id(&offer).as_deref(), Some(&b"PXEClient"[..]));
    }
    // A configured TFTP server is the next server.
    let cfg = DhcpConfig {
        tftp_server: Some(Ipv4Addr::new(10, 66, 0, 69)),
        ..DhcpConfig::default()
    };
    let msg = with(
        pxe(MAC_A, 7),
        DhcpOption::ParameterRequestList(vec![
            OptionCode::TFTPServerName,
            OptionCode::BootfileName,
        ]),
    );
    let (_, offer) = expect_reply(decide_with(&msg, &cfg, &arrival()));
    assert_eq!(offer.siaddr(), Ipv4Addr::new(10, 66, 0, 69));
    assert_eq!(
        opt(&offer, OptionCode::TFTPServerName),
        Some(&DhcpOption::TFTPServerName(b"10.66.0.69".to_vec()))
    );
    assert_eq!(bootfile_opt(&offer).as_deref(), Some("snponly.efi"));
}

#[test]
fn other_architectures_get_their_binary_only_when_configured() {
    // 32-bit UEFI and arm64 without a configured binary: an address, no file.
    for arch in [6, 11, 99] {
        let (reply, offer) = expect_reply(decide(&pxe(MAC_A, arch)));
        assert_eq!(offer.yiaddr(), RESERVED_A, "arch {arch}");
        assert_eq!(file(&offer), "", "arch {arch}");
        assert_eq!(offer.siaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(
            matches!(reply.boot, Some(BootPlan::Nothing(ref why)) if why.contains(&arch.to_string()))
        );
    }
    let cfg = DhcpConfig {
        ipxe_binaries: IpxeBinaries {
            efi_ia32: Some("ipxe-i386.efi".into()),
            efi_arm64: Some("ipxe-arm64.efi".into()),
            ..IpxeBinaries::default()
        },
        ..DhcpConfig::default()
    };
    for (arch, name) in [(6, "ipxe-i386.efi"), (11, "ipxe-arm64.efi")] {
        let (_, offer) = expect_reply(decide_with(&pxe(MAC_A, arch), &cfg, &arrival()));
        assert_eq!(file(&offer), name);
        assert_eq!(offer.siaddr(), SERVER);
    }
}

#[test]
fn http_boot_client_gets_a_url_and_httpclient_echoed() {
    let msg = with(
        discover(MAC_A),
        DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
    );
    let msg = with(
        msg,
        DhcpOption::ClientSystemArchitecture(Architecture::from(16)),
    );
    let (reply, offer) = expect_reply(decide(&msg));
    let url = "http://10.66.0.1:8080/ipxe/snponly.efi";
    assert_eq!(file(&offer), url);
    assert_eq!(bootfile_opt(&offer).as_deref(), Some(url));
    assert_eq!(class_id(&offer).as_deref(), Some(&b"HTTPClient"[..]));
    assert_eq!(reply.boot, Some(BootPlan::Http { url: url.into() }));

    let cfg = DhcpConfig {
        http_base_url: Some("http://boot.rack1.example:9000".into()),
        ..DhcpConfig::default()
    };
    let (_, offer) = expect_reply(decide_with(&msg, &cfg, &arrival()));
    assert_eq!(
        file(&offer),
        "http://boot.rack1.example:9000/ipxe/snponly.efi"
    );
}

#[test]
fn ipxe_gets_its_script_and_no_pxedhcp() {
    let (reply, offer) = expect_reply(decide(&ipxe(MAC_A, 0)));
    let url = "http://10.66.0.1:8080/ipxe/02:66:00:00:00:0a/auto.ipxe";
    assert_eq!(file(&offer), url);
    assert_eq!(bootfile_opt(&offer).as_deref(), Some(url));
    assert_eq!(
        raw_opt(&offer, 175),
        Some(vec![176, 1, 1]),
        "175.176 no-pxedhcp = 1"
    );
    assert_eq!(offer.yiaddr(), RESERVED_A);
    assert_eq!(reply.boot, Some(BootPlan::Script { url: url.into() }));

    // Option 175 alone marks iPXE too, and Tinkerbell's user class.
    let only_175 = with(discover(MAC_A), raw(175, &[0x13, 1, 1]));
    let (_, offer) = expect_reply(decide(&only_175));
    assert_eq!(file(&offer), url);
    let tinkerbell = with(
        discover(MAC_A),
        DhcpOption::UserClass(b"Tinkerbell".to_vec()),
    );
    let (_, offer) = expect_reply(decide(&tinkerbell));
    assert_eq!(file(&offer), url);
}

#[test]
fn allow_pxe_false_gets_an_address_and_no_boot_info() {
    for msg in [pxe(MAC_NO_PXE, 7), ipxe(MAC_NO_PXE, 0)] {
        let (reply, offer) = expect_reply(decide(&msg));
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 66, 0, 11));
        assert_eq!(file(&offer), "");
        assert_eq!(offer.siaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(class_id(&offer).is_none());
        assert!(bootfile_opt(&offer).is_none());
        assert!(raw_opt(&offer, 175).is_none());
        assert!(reply.boot.is_none());
    }
}

#[test]
fn record_hints_and_overrides_choose_the_binary() {
    // PXEClient without option 93: the record says x86_64 UEFI.
    let no_arch = with(
        discover(MAC_UEFI_HINT),
        DhcpOption::ClassIdentifier(b"PXEClient".to_vec()),
    );
    let (_, offer) = expect_reply(decide(&no_arch));
    assert_eq!(file(&offer), "snponly.efi");
    // Without hints, a PXE ROM that sends no arch is a BIOS one.
    let (_, offer) = expect_reply(decide(&with(
        discover(MAC_A),
        DhcpOption::ClassIdentifier(b"PXEClient".to_vec()),
    )));
    assert_eq!(file(&offer), "undionly.kpxe");
    // netboot.ipxe_binary wins over the architecture's default.
    let (_, offer) = expect_reply(decide(&pxe(MAC_OVERRIDE, 7)));
    assert_eq!(file(&offer), "snponly.efi");
}

#[test]
fn every_ipxe_gets_its_script_tinkerbell_built_or_not() {
    let script = "http://10.66.0.1:8080/ipxe/02:66:00:00:00:0a/auto.ipxe";
    let (_, offer) = expect_reply(decide(&ipxe(MAC_A, 0)));
    assert_eq!(file(&offer), script);
    let tink = with(pxe(MAC_A, 7), DhcpOption::UserClass(b"Tinkerbell".to_vec()));
    let (_, offer) = expect_reply(decide(&tink));
    assert_eq!(file(&offer), script);
}

#[test]
fn replies_follow_option_55_order_and_fit_option_57() {
    let prl = vec![
        OptionCode::Hostname,
        OptionCode::DomainNameServer,
        OptionCode::SubnetMask,
        OptionCode::Router,
    ];
    let msg = with(discover(MAC_A), DhcpOption::ParameterRequestList(prl));
    let (reply, _) = expect_reply(decide(&msg));
    let order = option_order(&reply.payload);
    assert_eq!(&order[..6], &[53, 54, 12, 6, 1, 3], "{order:?}");

    // Large values: a long domain and many DNS servers. Without option 57
    // the reply stays within 576 - 28 bytes, dropping what was not asked for.
    let mut cfg = DhcpConfig {
        domain_name: Some(format!("{}.example", "d".repeat(60))),
        ..DhcpConfig::default()
    };
    let many_dns: Vec<String> = (1..=60).map(|i| format!("10.66.1.{i}")).collect();
    let big = record(serde_json::json!({
        "id": "big",
        "network": {"interfaces": [{
            "dhcp": {"mac": MAC_A.to_string(), "hostname": "h".repeat(60),
                     "ip": {"address": "10.66.0.10", "netmask": "255.255.255.0", "gateway": "10.66.0.1"},
                     "name_servers": many_dns}
        }]}
    }));
    let big_hosts: HashMap<MacAddr, Arc<Hardware>> = [(MAC_A, big)].into_iter().collect();
    let run = |msg: &Message, cfg: &DhcpConfig| {
        expect_reply(respond(&bytes(msg), &arrival(), cfg, &big_hosts)).0
    };
    let asks_hostname = with(
        discover(MAC_A),
        DhcpOption::ParameterRequestList(vec![OptionCode::Hostname, OptionCode::SubnetMask]),
    );
    let small = run(&asks_hostname, &cfg);
    assert!(small.payload.len() <= 548, "{}", small.payload.len());
    assert!(
        small.dropped_options.contains(&6),
        "{:?}",
        small.dropped_options
    );
    let kept = option_order(&small.payload);
    for needed in [53, 54, 51, 1, 3, 12] {
        assert!(kept.contains(&needed), "{needed} missing from {kept:?}");
    }
    // Option 57 below 576 still gets 576.
    let tiny = with(asks_hostname.clone(), DhcpOption::MaxMessageSize(300));
    assert_eq!(run(&tiny, &cfg).payload.len(), small.payload.len());
    // A client that accepts 1500 bytes gets everything.
    let large = with(asks_hostname, DhcpOption::MaxMessageSize(1500));
    let full = run(&large, &cfg);
    assert!(
        full.dropped_options.is_empty(),
        "{:?}",
        full.dropped_options
    );
    assert!(full.payload.len() > 548 && full.payload.len() <= 1500 - 28);
    // ... unless the server's own cap is lower.
    cfg.max_datagram_len = 576;
    let capped = with(discover(MAC_A), DhcpOption::MaxMessageSize(1500));
    assert!(run(&capped, &cfg).payload.len() <= 548);
}

#[test]
fn malformed_packets_are_dropped() {
    let good = bytes(&discover(MAC_A));
    let cfg = DhcpConfig::default();
    let check = |packet: &[u8]| respond(packet, &arrival(), &cfg, &hosts());
    assert!(matches!(
        check(&[]),
        Decision::Drop(DropReason::Malformed(WireError::TooShort(0)))
    ));
    assert!(matches!(
        check(&good[..100]),
        Decision::Drop(DropReason::Malformed(_))
    ));
    let mut no_magic = good.clone();
    no_magic[236] = 0;
    assert!(matches!(
        check(&no_magic),
        Decision::Drop(DropReason::Malformed(WireError::BadMagic(_)))
    ));
    let mut huge_hlen = good.clone();
    huge_hlen[2] = 255;
    assert!(matches!(
        check(&huge_hlen),
        Decision::Drop(DropReason::Malformed(WireError::BadHardwareLength(255)))
    ));
    // Option 93 of one byte; option 50 of three.
    let mut bad_arch = good[..good.len() - 1].to_vec();
    bad_arch.extend_from_slice(&[93, 1, 0, 255]);
    assert!(matches!(
        check(&bad_arch),
        Decision::Drop(DropReason::Malformed(_))
    ));
    let mut truncated = good[..good.len() - 1].to_vec();
    truncated.extend_from_slice(&[12, 40, b'x']);
    assert!(matches!(
        check(&truncated),
        Decision::Drop(DropReason::Malformed(_))
    ));
    // A server's reply (op 2) is not answered; neither is non-Ethernet.
    let mut reply_op = good.clone();
    reply_op[0] = 2;
    assert_eq!(expect_drop(check(&reply_op)), DropReason::NotARequest(2));
    let mut token_ring = good.clone();
    token_ring[1] = 6;
    assert!(matches!(
        expect_drop(check(&token_ring)),
        DropReason::UnsupportedHardware { htype: 6, .. }
    ));
    // Options dhcproto's decoder panics on in debug builds: just options here.
    for hostile in [&[80u8, 1, 0][..], &[94, 1, 1], &[81, 0], &[151, 0]] {
        let mut p = good[..good.len() - 1].to_vec();
        p.extend_from_slice(hostile);
        p.push(255);
        assert!(matches!(check(&p), Decision::Reply(_)), "{hostile:?}");
    }
}

#[test]
fn mutated_packets_never_panic() {
    // A cheap deterministic fuzz pass (the real one is fuzz/): flip bytes
    // of valid netboot requests and check that respond always returns.
    let seeds = [
        bytes(&pxe(MAC_A, 7)),
        bytes(&ipxe(MAC_A, 0)),
        bytes(&discover(MAC_UNKNOWN)),
    ];
    let cfg = DhcpConfig::default();
    let proxy = DhcpConfig {
        mode: Mode::Proxy,
        ..DhcpConfig::default()
    };
    let hosts = hosts();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000u32 {
        let seed = &seeds[round as usize % seeds.len()];
        let mut p = seed.clone();
        let flips = 1 + next() % 8;
        for _ in 0..flips {
            let i = usize::try_from(next() % p.len() as u64).unwrap_or(0);
            p[i] = next() as u8;
        }
        if next() % 4 == 0 {
            let cut = usize::try_from(next() % p.len() as u64).unwrap_or(0);
            p.truncate(cut);
        }
        let c = if round % 2 == 0 { &cfg } else { &proxy };
        let _ = respond(&p, &arrival(), c, &hosts);
    }
}

#[test]
fn proxy_mode_gives_boot_info_without_an_address() {
    let cfg = DhcpConfig {
        mode: Mode::Proxy,
        ..DhcpConfig::default()
    };
    let uuid = [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
    let msg = with(
        pxe(MAC_A, 7),
        DhcpOption::ClientMachineIdentifier(uuid.to_vec()),
    );
    let (reply, offer) = expect_reply(decide_with(&msg, &cfg, &arrival()));
    assert_eq!(offer.opts().msg_type(), Some(v4::MessageType::Offer));
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(offer.siaddr(), SERVER);
    assert_eq!(file(&offer), "snponly.efi");
    assert_eq!(class_id(&offer).as_deref(), Some(&b"PXEClient"[..]));
    assert_eq!(
        opt(&offer, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(&offer, OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(uuid.to_vec()))
    );
    for absent in [
        OptionCode::AddressLeaseTime,
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
    ] {
        assert!(opt(&offer, absent).is_none(), "{absent:?} in a proxy offer");
    }
    assert_eq!(reply.destination, Destination::Broadcast { port: 68 });

    // iPXE in proxy mode: its script, PXEClient (iPXE ignores proxy offers
    // without it), and no 175.176, which would stop it waiting for us.
    let (_, offer) = expect_reply(decide_with(&ipxe(MAC_A, 0), &cfg, &arrival()));
    assert_eq!(
        file(&offer),
        "http://10.66.0.1:8080/ipxe/02:66:00:00:00:0a/auto.ipxe"
    );
    assert_eq!(class_id(&offer).as_deref(), Some(&b"PXEClient"[..]));
    assert!(raw_opt(&offer, 175).is_none());
    // iPXE takes a ProxyDHCP reply only with next-server and a file name.
    assert_eq!(offer.siaddr(), SERVER);

    // Not ours to answer.
    assert_eq!(
        expect_drop(decide_with(&discover(MAC_A), &cfg, &arrival())),
        DropReason::NotNetbootClient(MAC_A)
    );
    assert_eq!(
        expect_drop(decide_with(&pxe(MAC_UNKNOWN, 7), &cfg, &arrival())),
        DropReason::UnknownClient(MAC_UNKNOWN)
    );
    assert_eq!(
        expect_drop(decide_with(&pxe(MAC_NO_PXE, 7), &cfg, &arrival())),
        DropReason::NetbootNotAllowed(MAC_NO_PXE)
    );
    assert!(matches!(
        expect_drop(decide_with(&pxe(MAC_A, 6), &cfg, &arrival())),
        DropReason::NoBootFile { .. }
    ));
    let mut site_request = pxe(MAC_A, 7);
    site_request
        .opts_mut()
        .insert(DhcpOption::MessageType(v4::MessageType::Request));
    site_request
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 66, 0, 2)));
    assert_eq!(
        expect_drop(decide_with(&site_request, &cfg, &arrival())),
        DropReason::AddressingNotOurs(MAC_A)
    );
}

/// The site's DHCP server and Bellows' proxy on one host share a server
/// identifier: the client's REQUEST for its lease then names "us", and a
/// boot-only ACK (yiaddr 0) would race the site's real ACK. Only a REQUEST
/// that asks for no address is a boot-server request.
#[test]
fn proxy_never_acks_a_lease_request_even_when_it_names_our_address() {
    let cfg = DhcpConfig {
        mode: Mode::Proxy,
        ..DhcpConfig::default()
    };
    let mut taking_lease = pxe(MAC_A, 7);
    taking_lease
        .opts_mut()
        .insert(DhcpOption::MessageType(v4::MessageType::Request));
    taking_lease
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(SERVER));
    taking_lease
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 66, 0, 77)));
    assert_eq!(
        expect_drop(decide_with(&taking_lease, &cfg, &arrival())),
        DropReason::AddressingNotOurs(MAC_A)
    );
    // The same client asking for boot info only (it has its address).
    let mut boot_request = pxe(MAC_A, 7);
    boot_request
        .opts_mut()
        .insert(DhcpOption::MessageType(v4::MessageType::Request));
    boot_request
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(SERVER));
    boot_request.set_ciaddr(Ipv4Addr::new(10, 66, 0, 77));
    let (_, ack) = expect_reply(decide_with(&boot_request, &cfg, &arrival()));
    assert_eq!(ack.opts().msg_type(), Some(v4::MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(file(&ack), "snponly.efi");
}

#[test]
fn boot_server_port_answers_pxe_requests_by_unicast() {
    let cfg = DhcpConfig {
        mode: Mode::Proxy,
        ..DhcpConfig::default()
    };
    let client = Ipv4Addr::new(10, 66, 0, 120);
    let mut msg = pxe(MAC_A, 7);
    msg.opts_mut()
        .insert(DhcpOption::MessageType(v4::MessageType::Request));
    msg.set_ciaddr(client);
    let at = Arrival {
        service: Service::PxeBootServer,
        source: SocketAddrV4::new(client, 68),
        ..arrival()
    };
    let (reply, ack) = expect_reply(decide_with(&msg, &cfg, &at));
    assert_eq!(ack.opts().msg_type(), Some(v4::MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.ciaddr(), client);
    assert_eq!(file(&ack), "snponly.efi");
    assert_eq!(
        reply.destination,
        Destination::Unicast(SocketAddrV4::new(client, 68))
    );
    // A plain DHCP client on 4011 gets nothing.
    let mut plain = message(MAC_A, v4::MessageType::Request);
    plain.set_ciaddr(client);
    assert_eq!(
        expect_drop(decide_with(&plain, &cfg, &at)),
        DropReason::NotNetbootClient(MAC_A)
    );
}

#[test]
fn replies_are_stable_across_repeated_xids() {
    // Debian's snponly.efi reuses its xid every boot: same request, same reply.
    let a = decide(&ipxe(MAC_A, 7));
    let b = decide(&ipxe(MAC_A, 7));
    assert_eq!(a, b);
}
