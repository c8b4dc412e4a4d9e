//! The socket loop on loopback (no root needed): counters, malformed
//! input, relayed replies, start-up errors and shutdown.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bellows_dhcp::{DhcpConfig, DhcpServer, ListenConfig, Lookup, Mode, ServerError, Service};
use bellows_model::{Hardware, MacAddr};
use dhcproto::v4::{self, DhcpOption, Message};
use dhcproto::{Decodable, Decoder, Encodable};

const KNOWN: MacAddr = MacAddr([0x02, 0x66, 0, 0, 0, 0x21]);

fn hosts() -> Arc<dyn Lookup> {
    let doc = serde_json::json!({
        "id": "lo",
        "network": {"interfaces": [{"dhcp": {
            "mac": KNOWN.to_string(),
            "ip": {"address": "10.66.0.21", "netmask": "255.255.255.0"}
        }}]}
    });
    let hw = Arc::new(Hardware::from_value(doc).expect("valid"));
    let map: HashMap<MacAddr, Arc<Hardware>> = [(KNOWN, hw)].into_iter().collect();
    Arc::new(map)
}

fn relayed_discover(mac: MacAddr, xid: u32) -> Vec<u8> {
    let mut msg = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::LOCALHOST,
        &mac.octets(),
    );
    msg.opts_mut()
        .insert(DhcpOption::MessageType(v4::MessageType::Discover));
    msg.to_vec().expect("encode")
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_counts_and_answers_relayed_requests_on_loopback() {
    // The "relay" is a socket on loopback; replies to giaddr go to its port.
    let relay = UdpSocket::bind("127.0.0.1:0").expect("relay socket");
    relay
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let relay_port = relay.local_addr().expect("addr").port();
    let cfg = DhcpConfig {
        relay_port,
        ..DhcpConfig::default()
    };
    let listen = ListenConfig {
        address: Ipv4Addr::LOCALHOST,
        port: 0,
        ..ListenConfig::default()
    };
    let server = DhcpServer::bind(&listen, cfg, hosts()).expect("bind");
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 1, "reservation mode binds port 67 only");
    let (service, server_addr) = addrs[0];
    assert_eq!(service, Service::Dhcp);
    let stats = server.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, server_addr.port());
    relay.send_to(b"not dhcp at all", to).expect("send");
    relay
        .send_to(&relayed_discover(MacAddr([2, 0, 0, 0, 0, 0x99]), 1), to)
        .expect("send");
    relay
        .send_to(&relayed_discover(KNOWN, 2), to)
        .expect("send");

    let relay_clone = relay.try_clone().expect("clone");
    let reply = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 1500];
        let (n, from) = relay_clone
            .recv_from(&mut buf)
            .expect("a reply to the relay");
        (buf[..n].to_vec(), from)
    })
    .await
    .expect("join");
    let (bytes, from) = reply;
    assert_eq!(from.port(), server_addr.port());
    let offer = Message::decode(&mut Decoder::new(&bytes)).expect("decode");
    assert_eq!(offer.xid(), 2);
    assert_eq!(offer.opts().msg_type(), Some(v4::MessageType::Offer));
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 66, 0, 21));
    assert_eq!(
        offer.opts().get(v4::OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(Ipv4Addr::LOCALHOST)),
        "server id from IP_PKTINFO"
    );

    let settled = wait_until(Duration::from_secs(3), || {
        let s = stats.snapshot();
        s.received == 3 && s.replied == 1
    });
    let s = stats.snapshot();
    assert!(settled, "{s:?}");
    assert_eq!(s.dropped_malformed, 1);
    assert_eq!(s.dropped_unknown, 1);
    assert_eq!(s.send_errors, 0);

    // Shutdown ends run() promptly.
    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(3), task).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}

#[tokio::test]
async fn proxy_mode_binds_the_boot_server_port_too() {
    let listen = ListenConfig {
        address: Ipv4Addr::LOCALHOST,
        port: 0,
        pxe_port: 0,
        interface: None,
    };
    let cfg = DhcpConfig {
        mode: Mode::Proxy,
        ..DhcpConfig::default()
    };
    let server = DhcpServer::bind(&listen, cfg, hosts()).expect("bind");
    let services: Vec<Service> = server.local_addrs().iter().map(|(s, _)| *s).collect();
    assert_eq!(services, vec![Service::Dhcp, Service::PxeBootServer]);
}

#[test]
fn start_up_errors_are_reported_not_panicked() {
    let listen = ListenConfig {
        address: Ipv4Addr::LOCALHOST,
        port: 0,
        ..ListenConfig::default()
    };
    // Outside a runtime.
    let r = DhcpServer::bind(&listen, DhcpConfig::default(), hosts());
    assert!(matches!(r, Err(ServerError::NoRuntime)));
    // Mode off has nothing to serve.
    let off = DhcpConfig {
        mode: Mode::Off,
        ..DhcpConfig::default()
    };
    let r = DhcpServer::bind(&listen, off, hosts());
    assert!(matches!(r, Err(ServerError::ModeOff)));
    // A bad configuration names the value.
    let bad = DhcpConfig {
        http_base_url: Some("http://x/".into()),
        ..DhcpConfig::default()
    };
    let r = DhcpServer::bind(&listen, bad, hosts());
    assert!(matches!(&r, Err(ServerError::Config(_))));
    let message = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("http_base_url"), "{message}");
    // A missing interface is a clear socket error.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let nowhere = ListenConfig {
        interface: Some("bellows-none0".into()),
        ..listen
    };
    let r = DhcpServer::bind(&nowhere, DhcpConfig::default(), hosts());
    let message = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("SO_BINDTODEVICE"), "{message}");
}
