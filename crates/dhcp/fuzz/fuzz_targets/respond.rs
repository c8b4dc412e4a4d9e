//! Fuzzes decode → respond: any datagram, in every mode and on both
//! ports, must give a decision without panicking, and every reply must be
//! a well-formed DHCP message within the size the client allows.

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, LazyLock};

use bellows_dhcp::{
    Arrival, IpxeBinaries, Decision, DhcpConfig, Lookup, Mode, Request, Service, respond,
};
use bellows_model::{Hardware, MacAddr};
use libfuzzer_sys::fuzz_target;

/// Record shapes; which one a MAC gets depends on its last byte, so the
/// fuzzer reaches every branch without guessing a MAC.
static TEMPLATES: LazyLock<Vec<Hardware>> = LazyLock::new(|| {
    let shapes = [
        serde_json::json!({"ip": {"address": "10.66.0.10", "netmask": "255.255.255.0", "gateway": "10.66.0.1"},
            "hostname": "node", "lease_time": 600, "name_servers": ["10.66.0.53"], "time_servers": ["10.66.0.123"]}),
        serde_json::json!({"ip": {"address": "10.66.0.11"}, "arch": "x86_64", "uefi": true}),
        serde_json::json!({"ip": {"address": "10.77.0.12", "netmask": "255.255.0.0"}, "arch": "aarch64"}),
        serde_json::json!({}),
        serde_json::json!({"ip": {"address": "2001:db8::1"}}),
    ];
    let netboots = [
        serde_json::json!({"allow_pxe": true}),
        serde_json::json!({"allow_pxe": false}),
        serde_json::json!({"ipxe_binary": "snp.efi"}),
        serde_json::json!({"ipxe_binary": "../bad"}),
    ];
    let mut out = Vec::new();
    for dhcp in &shapes {
        for netboot in &netboots {
            let mut dhcp = dhcp.clone();
            dhcp["mac"] = serde_json::json!("02:00:00:00:00:00");
            let doc = serde_json::json!({"id": "fuzz", "network": {"interfaces": [{"dhcp": dhcp, "netboot": netboot}]}});
            if let Ok(hw) = Hardware::from_value(doc) {
                out.push(hw);
            }
        }
    }
    out
});

struct AnyMac;

impl Lookup for AnyMac {
    fn by_mac(&self, mac: MacAddr) -> Option<Arc<Hardware>> {
        let last = mac.octets()[5];
        if last == 0xff {
            return None;
        }
        let mut hw = TEMPLATES.get(usize::from(last) % TEMPLATES.len())?.clone();
        if let Some(dhcp) = hw
            .network
            .interfaces
            .first_mut()
            .and_then(|i| i.dhcp.as_mut())
        {
            dhcp.mac = mac;
        }
        if last & 0x40 != 0
            && let Some(iface) = hw.network.interfaces.first_mut()
        {
            iface.disable_dhcp = true;
        }
        Some(Arc::new(hw))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let mut cfg = DhcpConfig {
        mode: if selector & 1 == 0 {
            Mode::Reservation
        } else {
            Mode::Proxy
        },
        ..DhcpConfig::default()
    };
    if selector & 2 != 0 {
        cfg.public_ip = Some(Ipv4Addr::new(192, 0, 2, 1));
        cfg.domain_name = Some("example.test".into());
        cfg.syslog_server = Some(Ipv4Addr::new(10, 66, 0, 2));
        cfg.ipxe_binaries = IpxeBinaries {
            efi_ia32: Some("ipxe-i386.efi".into()),
            efi_arm64: Some("ipxe-arm64.efi".into()),
            ..IpxeBinaries::default()
        };
    }
    if selector & 4 != 0 {
        cfg.max_datagram_len = 576;
    }
    let arrival = Arrival {
        service: if selector & 8 == 0 {
            Service::Dhcp
        } else {
            Service::PxeBootServer
        },
        local_addr: if selector & 16 == 0 {
            Ipv4Addr::new(10, 66, 0, 1)
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        netmask: (selector & 32 == 0).then_some(Ipv4Addr::new(255, 255, 255, 0)),
        source: SocketAddrV4::new(Ipv4Addr::new(10, 66, 0, 50), 68),
    };
    let request = Request::parse(packet).ok();
    let client_limit = request
        .as_ref()
        .and_then(|r| r.max_message_size())
        .map_or(576, usize::from)
        .clamp(576, usize::from(cfg.max_datagram_len))
        - 28;
    // A relay's option 82 is echoed on top (the relay strips it).
    let relay_echo = request
        .as_ref()
        .filter(|r| !r.giaddr.is_unspecified())
        .and_then(|r| r.options.get(82))
        .map_or(0, bellows_dhcp::wire::option_wire_len);
    let limit = client_limit + relay_echo;
    if let Decision::Reply(reply) = respond(packet, &arrival, &cfg, &AnyMac) {
        assert!(
            reply.payload.len() >= 300,
            "reply shorter than BOOTP's 300 bytes"
        );
        assert!(
            reply.payload.len() <= limit,
            "reply of {} bytes over the client's limit {limit}",
            reply.payload.len()
        );
        let parsed = Request::parse(&reply.payload).expect("our own reply must parse");
        assert_eq!(parsed.op, 2);
        assert_eq!(parsed.message_type, reply.message_type);
    }
});
