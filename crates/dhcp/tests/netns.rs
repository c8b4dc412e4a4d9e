//! The DHCP server against clients we did not write, in network namespaces
//! this test creates: ISC dhclient, busybox udhcpc, and dnsmasq (the
//! site's DHCP server next to Bellows in proxy mode). Needs root.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use bellows_dhcp::{DhcpConfig, Mode};
use bellows_model::MacAddr;
use bellows_testkit::files::write_executable;
use bellows_testkit::netns::{can_run, in_netns};
use bellows_testkit::packages::ensure_installed;
use bellows_testkit::{ChildGuard, wait_for};
use dhcproto::v4::{self, Architecture, DhcpOption, Message, OptionCode, UnknownOption};
use support::{
    RawClient, SERVER_IP, dhcp_lab, machine, read_env, start_server, start_server_unbound,
};

const CLIENT_MAC: MacAddr = MacAddr([0x02, 0x66, 0, 0, 0, 0x05]);
const UNKNOWN_MAC: MacAddr = MacAddr([0x02, 0x66, 0, 0, 0, 0x99]);

fn node5() -> std::sync::Arc<bellows_model::Hardware> {
    machine(
        CLIENT_MAC,
        "10.66.0.5",
        serde_json::json!({
            "hostname": "node-5",
            "lease_time": 900,
            "name_servers": ["10.66.0.53", "10.66.0.54"],
            "time_servers": ["10.66.0.123"]
        }),
    )
}

/// A client hook script that writes its environment to `<dir>/env.<reason>`.
fn env_dump_script(dir: &Path, reason_var: &str) -> String {
    let script = dir.join("hook.sh");
    let body = format!(
        "#!/bin/sh\nenv > \"{}/env.${{{reason_var}}}\"\nexit 0\n",
        dir.display()
    );
    write_executable(&script, &body);
    script.display().to_string()
}

fn dhclient_conf(dir: &Path, timeout_secs: u32) -> String {
    let conf = dir.join("dhclient.conf");
    std::fs::write(
        &conf,
        format!(
            "timeout {timeout_secs};\nretry 1;\ninitial-interval 1;\n\
             request subnet-mask, broadcast-address, routers, domain-name-servers,\n\
             \thost-name, domain-name, ntp-servers;\n"
        ),
    )
    .expect("write dhclient.conf");
    conf.display().to_string()
}

fn spawn_dhclient(ns: &str, ifname: &str, dir: &Path, timeout_secs: u32) -> ChildGuard {
    let conf = dhclient_conf(dir, timeout_secs);
    let script = env_dump_script(dir, "reason");
    let lease = dir.join("dhclient.leases").display().to_string();
    let pid = dir.join("dhclient.pid").display().to_string();
    ChildGuard::spawn_in(
        ns,
        &[
            "dhclient", "-4", "-d", "-1", "-v", "-cf", &conf, "-lf", &lease, "-pf", &pid, "-sf",
            &script, ifname,
        ],
        &dir.join("dhclient.log"),
    )
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn dhclient_gets_exactly_its_reservation() {
    if !can_run() {
        return;
    }
    ensure_installed("dhclient", "isc-dhcp-client");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = dhcp_lab("dhc");
    let client = lab.host("cl").mac(CLIENT_MAC).add();
    let server = start_server(&lab, DhcpConfig::default(), vec![node5()]);

    let mut dhclient = spawn_dhclient(&client.ns, &client.ifname, dir.path(), 15);
    let bound = wait_for(Duration::from_secs(20), || {
        dir.path().join("env.BOUND").exists()
    });
    let _ = dhclient.wait_timeout(Duration::from_millis(100));
    assert!(
        bound,
        "dhclient did not bind; log:\n{}\nserver stats: {:?}",
        log_of(dir.path(), "dhclient.log"),
        server.stats.snapshot()
    );
    let env = read_env(&dir.path().join("env.BOUND"));
    let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("<missing>");
    assert_eq!(get("new_ip_address"), "10.66.0.5");
    assert_eq!(get("new_subnet_mask"), "255.255.255.0");
    assert_eq!(get("new_routers"), "10.66.0.1");
    assert_eq!(get("new_domain_name_servers"), "10.66.0.53 10.66.0.54");
    assert_eq!(get("new_host_name"), "node-5");
    assert_eq!(get("new_ntp_servers"), "10.66.0.123");
    assert_eq!(get("new_broadcast_address"), "10.66.0.255");
    assert_eq!(get("new_dhcp_server_identifier"), "10.66.0.1");
    assert_eq!(get("new_dhcp_lease_time"), "900");

    // The lease file says the same, as dhclient will remember it.
    let leases = log_of(dir.path(), "dhclient.leases");
    for line in [
        "fixed-address 10.66.0.5;",
        "option subnet-mask 255.255.255.0;",
        "option routers 10.66.0.1;",
        "option domain-name-servers 10.66.0.53,10.66.0.54;",
        "option host-name \"node-5\";",
    ] {
        assert!(
            leases.contains(line),
            "lease file lacks {line:?}:\n{leases}"
        );
    }
    let stats = server.stats.snapshot();
    assert!(stats.replied >= 2, "{stats:?}");
    assert_eq!(stats.naks, 0);
}

#[test]
fn unknown_mac_gets_nothing() {
    if !can_run() {
        return;
    }
    ensure_installed("dhclient", "isc-dhcp-client");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = dhcp_lab("unk");
    let client = lab.host("cl").mac(UNKNOWN_MAC).add();
    // The server knows another machine, not this one.
    let server = start_server(&lab, DhcpConfig::default(), vec![node5()]);

    let mut dhclient = spawn_dhclient(&client.ns, &client.ifname, dir.path(), 4);
    // dhclient -1 gives up after its 4 s timeout; never wait past 15 s.
    let status = dhclient.wait_timeout(Duration::from_secs(15));
    assert!(
        !dir.path().join("env.BOUND").exists(),
        "an unknown MAC got a lease:\n{}",
        log_of(dir.path(), "dhclient.log")
    );
    if let Some(status) = status {
        assert!(!status.success(), "dhclient -1 should fail without a lease");
    }
    let stats = server.stats.snapshot();
    assert!(
        stats.dropped_unknown >= 1,
        "the DISCOVERs must have reached the server and been refused: {stats:?}\n{}",
        log_of(dir.path(), "dhclient.log")
    );
    assert_eq!(stats.replied, 0, "{stats:?}");
}

fn udhcpc(
    ns: &str,
    ifname: &str,
    dir: &Path,
    extra: &[&str],
) -> std::collections::HashMap<String, String> {
    let busybox = ensure_installed("busybox", "busybox-static");
    let script = env_dump_script(dir, "1");
    let mut args = vec![
        busybox.as_str(),
        "udhcpc",
        "-f",
        "-q",
        "-n",
        "-i",
        ifname,
        "-t",
        "5",
        "-T",
        "2",
        "-s",
        &script,
        "-O",
        "hostname",
        "-O",
        "ntpsrv",
    ];
    args.extend_from_slice(extra);
    let mut child = ChildGuard::spawn_in(ns, &args, &dir.join("udhcpc.log"));
    let status = child.wait_timeout(Duration::from_secs(20));
    let bound = dir.join("env.bound");
    assert!(
        bound.exists(),
        "udhcpc did not bind (status {status:?}):\n{}",
        log_of(dir, "udhcpc.log")
    );
    let env = read_env(&bound);
    std::fs::remove_file(bound).expect("reset");
    env
}

#[test]
fn udhcpc_gets_its_reservation_and_netboot_answers() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = dhcp_lab("udh");
    let client = lab.host("cl").mac(CLIENT_MAC).add();
    let server = start_server(&lab, DhcpConfig::default(), vec![node5()]);

    let env = udhcpc(&client.ns, &client.ifname, dir.path(), &[]);
    let get = |k: &str| env.get(k).cloned().unwrap_or_else(|| "<missing>".into());
    assert_eq!(get("ip"), "10.66.0.5");
    assert_eq!(get("subnet"), "255.255.255.0");
    assert_eq!(get("router"), "10.66.0.1");
    assert_eq!(get("dns").trim(), "10.66.0.53 10.66.0.54");
    assert_eq!(get("hostname"), "node-5");
    assert_eq!(get("ntpsrv").trim(), "10.66.0.123");
    assert_eq!(get("serverid"), "10.66.0.1");
    assert_eq!(get("lease"), "900");
    assert!(
        env.get("boot_file").is_none_or(String::is_empty),
        "plain client got a boot file"
    );

    // The same real client, posing as UEFI x64 PXE firmware (60 + 93 = 7).
    let env = udhcpc(
        &client.ns,
        &client.ifname,
        dir.path(),
        &["-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007"],
    );
    assert_eq!(env.get("ip").map(String::as_str), Some("10.66.0.5"));
    assert_eq!(
        env.get("boot_file").map(String::as_str),
        Some("snponly.efi")
    );
    assert_eq!(env.get("siaddr").map(String::as_str), Some("10.66.0.1"));

    // ... as BIOS PXE firmware.
    let env = udhcpc(
        &client.ns,
        &client.ifname,
        dir.path(),
        &["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"],
    );
    assert_eq!(
        env.get("boot_file").map(String::as_str),
        Some("undionly.kpxe")
    );

    // ... and as iPXE (user class "iPXE"): the script URL.
    let env = udhcpc(
        &client.ns,
        &client.ifname,
        dir.path(),
        &["-x", "0x4d:69505845"],
    );
    assert_eq!(
        env.get("boot_file").map(String::as_str),
        Some("http://10.66.0.1:8080/ipxe/02:66:00:00:00:05/auto.ipxe")
    );
    assert_eq!(server.stats.snapshot().naks, 0);
}

fn pxe_discover(mac: MacAddr, xid: u32, arch: u16) -> Message {
    let mut msg = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.octets(),
    );
    // Like EDK2's PXE: ask for broadcast replies. (A UDP socket cannot
    // receive unicast to an address its interface does not have yet, and
    // dnsmasq unicasts to yiaddr when the flag is clear.)
    msg.set_flags(v4::Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(v4::MessageType::Discover));
    let vendor = if matches!(arch, 15 | 16 | 19) {
        format!("HTTPClient:Arch:{arch:05}:UNDI:003001")
    } else {
        format!("PXEClient:Arch:{arch:05}:UNDI:003016")
    };
    opts.insert(DhcpOption::ClassIdentifier(vendor.into_bytes()));
    opts.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(
        arch,
    )));
    opts.insert(DhcpOption::ClientNetworkInterface(1, 3, 16));
    let mut uuid = vec![0u8];
    uuid.extend((1..=16).collect::<Vec<u8>>());
    opts.insert(DhcpOption::ClientMachineIdentifier(uuid));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::VendorExtensions,
        OptionCode::ClassIdentifier,
        OptionCode::TFTPServerName,
        OptionCode::BootfileName,
        OptionCode::ClientMachineIdentifier,
    ]));
    msg
}

fn as_ipxe(mut msg: Message) -> Message {
    msg.opts_mut()
        .insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    msg.opts_mut()
        .insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(175u8),
            vec![0x13, 1, 1, 0x11, 1, 1],
        )));
    msg
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier)? {
        DhcpOption::ServerIdentifier(ip) => Some(*ip),
        _ => None,
    }
}

fn file(msg: &Message) -> String {
    let raw = msg.fname_str().and_then(Result::ok).unwrap_or_default();
    raw.trim_end_matches('\0').to_string()
}

fn class_id(msg: &Message) -> Option<Vec<u8>> {
    match msg.opts().get(OptionCode::ClassIdentifier)? {
        DhcpOption::ClassIdentifier(v) => Some(v.clone()),
        _ => None,
    }
}

fn ipxe_encap(msg: &Message) -> Option<Vec<u8>> {
    match msg.opts().get(OptionCode::from(175u8))? {
        DhcpOption::Unknown(u) => Some(u.data().to_vec()),
        _ => None,
    }
}

#[test]
fn netboot_answers_through_the_real_socket() {
    if !can_run() {
        return;
    }
    let mut lab = dhcp_lab("nbt");
    let client = lab.host("cl").mac(CLIENT_MAC).add();
    let server = start_server(&lab, DhcpConfig::default(), vec![node5()]);
    let ifname = client.ifname.clone();
    let replies = in_netns(&client.ns, move || {
        let raw = RawClient::bind(&ifname, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
        let mut out = Vec::new();
        for (xid, msg) in [
            (1u32, pxe_discover(CLIENT_MAC, 1, 0)),
            (2, pxe_discover(CLIENT_MAC, 2, 7)),
            (3, pxe_discover(CLIENT_MAC, 3, 16)),
            (4, as_ipxe(pxe_discover(CLIENT_MAC, 4, 0))),
        ] {
            out.push((xid, raw.exchange(&msg, to, Duration::from_secs(1))));
        }
        out
    });
    let stats = server.stats.snapshot();
    let script = "http://10.66.0.1:8080/ipxe/02:66:00:00:00:05/auto.ipxe";
    for (xid, got) in replies {
        assert_eq!(
            got.len(),
            1,
            "xid {xid}: one offer expected, stats {stats:?}"
        );
        let (from, offer) = &got[0];
        assert_eq!(*from.ip(), SERVER_IP, "xid {xid}");
        assert_eq!(offer.opts().msg_type(), Some(v4::MessageType::Offer));
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 66, 0, 5));
        assert_eq!(server_id(offer), Some(SERVER_IP));
        match xid {
            1 => {
                assert_eq!(file(offer), "undionly.kpxe");
                assert_eq!(offer.siaddr(), SERVER_IP);
                assert_eq!(class_id(offer).as_deref(), Some(&b"PXEClient"[..]));
            }
            2 => {
                assert_eq!(file(offer), "snponly.efi");
                assert_eq!(offer.siaddr(), SERVER_IP);
                assert_eq!(class_id(offer).as_deref(), Some(&b"PXEClient"[..]));
                assert!(
                    offer
                        .opts()
                        .get(OptionCode::ClientMachineIdentifier)
                        .is_some()
                );
            }
            3 => {
                assert_eq!(file(offer), "http://10.66.0.1:8080/ipxe/snponly.efi");
                assert_eq!(class_id(offer).as_deref(), Some(&b"HTTPClient"[..]));
            }
            _ => {
                assert_eq!(file(offer), script);
                assert_eq!(ipxe_encap(offer), Some(vec![176, 1, 1]));
            }
        }
    }
}

#[test]
fn relayed_request_is_answered_to_the_relay() {
    if !can_run() {
        return;
    }
    let mut lab = dhcp_lab("rly");
    // The "relay" has an address and listens on 67, as a relay agent does.
    let relay = lab
        .host("rl")
        .mac(MacAddr([0x02, 0x66, 0, 0, 0, 0x77]))
        .addr("10.66.0.7/24")
        .add();
    let _server = start_server(&lab, DhcpConfig::default(), vec![node5()]);
    let ifname = relay.ifname.clone();
    let got = in_netns(&relay.ns, move || {
        let raw = RawClient::bind(&ifname, SocketAddrV4::new(Ipv4Addr::new(10, 66, 0, 7), 67));
        let mut msg = pxe_discover(CLIENT_MAC, 0x5eed, 7);
        msg.set_giaddr(Ipv4Addr::new(10, 66, 0, 7));
        msg.set_hops(1);
        raw.exchange(
            &msg,
            SocketAddrV4::new(SERVER_IP, 67),
            Duration::from_secs(3),
        )
    });
    assert_eq!(got.len(), 1, "one reply to the relay");
    let (from, offer) = &got[0];
    assert_eq!(*from, SocketAddrV4::new(SERVER_IP, 67));
    assert_eq!(offer.giaddr(), Ipv4Addr::new(10, 66, 0, 7));
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 66, 0, 5));
    assert_eq!(file(offer), "snponly.efi");
}

#[test]
fn proxy_mode_beside_dnsmasq() {
    if !can_run() {
        return;
    }
    let dnsmasq = ensure_installed("dnsmasq", "dnsmasq-base");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = dhcp_lab("pxy");
    let site = lab
        .host("dm")
        .mac(MacAddr([0x02, 0x66, 0, 0, 0, 0x02]))
        .addr("10.66.0.2/24")
        .add();
    let client = lab.host("cl").mac(CLIENT_MAC).add();
    let cfg = DhcpConfig {
        mode: Mode::Proxy,
        ..DhcpConfig::default()
    };
    let server = start_server(&lab, cfg, vec![node5()]);
    let leases = dir.path().join("dnsmasq.leases").display().to_string();
    let pid = dir.path().join("dnsmasq.pid").display().to_string();
    let interface = format!("--interface={}", site.ifname);
    let _dnsmasq = ChildGuard::spawn_in(
        &site.ns,
        &[
            &dnsmasq,
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--no-resolv",
            "--no-hosts",
            "--no-ping",
            &interface,
            "--bind-interfaces",
            "--dhcp-range=10.66.0.100,10.66.0.150,255.255.255.0,10m",
            "--dhcp-option=3,10.66.0.2",
            &format!("--dhcp-leasefile={leases}"),
            &format!("--pid-file={pid}"),
            "--user=root",
            "--group=root",
            "--log-dhcp",
            "--log-facility=-",
        ],
        &dir.path().join("dnsmasq.log"),
    );

    let ifname = client.ifname.clone();
    let (offers, ack_from_site, boot_ack) = in_netns(&client.ns, move || {
        let raw = RawClient::bind(&ifname, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
        let bcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
        // dnsmasq needs a moment to start: retry the DISCOVER (same xid, as
        // PXE ROMs do) until both servers have answered, at most ~12 s.
        let discover = pxe_discover(CLIENT_MAC, 0xb007, 7);
        let mut offers = Vec::new();
        for _ in 0..6 {
            offers = raw.exchange(&discover, bcast, Duration::from_secs(2));
            let ours = offers.iter().any(|(f, _)| *f.ip() == SERVER_IP);
            let site = offers
                .iter()
                .any(|(f, _)| *f.ip() == Ipv4Addr::new(10, 66, 0, 2));
            if ours && site {
                break;
            }
        }
        // Take the site's address, as PXE firmware does.
        let site_offer = offers
            .iter()
            .find(|(f, _)| *f.ip() == Ipv4Addr::new(10, 66, 0, 2))
            .map(|(_, m)| m.clone());
        let Some(site_offer) = site_offer else {
            return (offers, None, Vec::new());
        };
        let mut request = pxe_discover(CLIENT_MAC, 0xb008, 7);
        request
            .opts_mut()
            .insert(DhcpOption::MessageType(v4::MessageType::Request));
        request
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(site_offer.yiaddr()));
        request
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 66, 0, 2)));
        let acks = raw.exchange(&request, bcast, Duration::from_secs(2));
        let ack = acks
            .into_iter()
            .find(|(_, m)| m.opts().msg_type() == Some(v4::MessageType::Ack));
        let Some((_, ack)) = ack else {
            return (offers, None, Vec::new());
        };
        // Configure it, then ask Bellows' boot server on 4011 by unicast.
        let addr = format!("{}/24", ack.yiaddr());
        let status = std::process::Command::new("ip")
            .args(["addr", "add", &addr, "dev", &ifname])
            .status()
            .expect("ip addr add");
        assert!(status.success());
        let mut boot = pxe_discover(CLIENT_MAC, 0xb009, 7);
        boot.opts_mut()
            .insert(DhcpOption::MessageType(v4::MessageType::Request));
        boot.set_ciaddr(ack.yiaddr());
        let boot_ack = raw.exchange(
            &boot,
            SocketAddrV4::new(SERVER_IP, 4011),
            Duration::from_secs(2),
        );
        (offers, Some(ack), boot_ack)
    });
    let log = || log_of(dir.path(), "dnsmasq.log");
    let stats = server.stats.snapshot();

    let from_site: Vec<_> = offers
        .iter()
        .filter(|(f, _)| *f.ip() == Ipv4Addr::new(10, 66, 0, 2))
        .collect();
    let from_us: Vec<_> = offers
        .iter()
        .filter(|(f, _)| *f.ip() == SERVER_IP)
        .collect();
    assert_eq!(
        from_site.len(),
        1,
        "dnsmasq's offer; stats {stats:?}; dnsmasq log:\n{}",
        log()
    );
    assert_eq!(from_us.len(), 1, "Bellows' proxy offer; stats {stats:?}");
    let (_, site_offer) = from_site[0];
    let site_ip = u32::from(site_offer.yiaddr());
    assert!(
        (u32::from(Ipv4Addr::new(10, 66, 0, 100))..=u32::from(Ipv4Addr::new(10, 66, 0, 150)))
            .contains(&site_ip),
        "dnsmasq gives the address: {}",
        site_offer.yiaddr()
    );
    assert_eq!(file(site_offer), "", "dnsmasq has no boot info here");
    let (_, proxy_offer) = from_us[0];
    assert_eq!(
        proxy_offer.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "ProxyDHCP gives no address"
    );
    assert_eq!(file(proxy_offer), "snponly.efi");
    assert_eq!(proxy_offer.siaddr(), SERVER_IP);
    assert_eq!(class_id(proxy_offer).as_deref(), Some(&b"PXEClient"[..]));
    assert_eq!(server_id(proxy_offer), Some(SERVER_IP));
    assert!(
        proxy_offer
            .opts()
            .get(OptionCode::AddressLeaseTime)
            .is_none()
    );

    let ack = ack_from_site.unwrap_or_else(|| panic!("dnsmasq did not ACK; log:\n{}", log()));
    assert_eq!(ack.yiaddr(), site_offer.yiaddr());
    // Bellows stayed out of the site's REQUEST/ACK: no NAK, no ACK.
    assert_eq!(stats.naks, 0);

    assert_eq!(
        boot_ack.len(),
        1,
        "one boot-server ACK on 4011; stats {stats:?}"
    );
    let (from, boot) = &boot_ack[0];
    assert_eq!(*from, SocketAddrV4::new(SERVER_IP, 4011));
    assert_eq!(boot.opts().msg_type(), Some(v4::MessageType::Ack));
    assert_eq!(file(boot), "snponly.efi");
    assert_eq!(boot.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(boot.ciaddr(), site_offer.yiaddr());
}

#[test]
fn replies_leave_by_the_interface_the_request_came_in_on() {
    if !can_run() {
        return;
    }
    // Two provisioning networks on one server, which listens on both
    // (no SO_BINDTODEVICE): IP_PKTINFO must give each client the server
    // identifier and subnet of its own network, and the broadcast reply
    // must leave by that network's interface.
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let mut lab = dhcp_lab("two");
    lab.bridge("br1", "10.66.1.1/24");
    let mac_b = MacAddr([0x02, 0x66, 0, 0, 1, 0x06]);
    let on_a = lab.host("ca").mac(CLIENT_MAC).add();
    let on_b = lab.host("cb").mac(mac_b).bridge("br1").add();
    // Neither record has a netmask: it comes from the receiving interface.
    let record = |mac: MacAddr, ip: &str| {
        let doc = serde_json::json!({
            "id": format!("m-{mac}"),
            "network": {"interfaces": [{"dhcp": {"mac": mac.to_string(), "ip": {"address": ip}}}]}
        });
        std::sync::Arc::new(bellows_model::Hardware::from_value(doc).expect("valid"))
    };
    let server = start_server_unbound(
        &lab,
        DhcpConfig::default(),
        vec![record(CLIENT_MAC, "10.66.0.5"), record(mac_b, "10.66.1.6")],
    );
    let env_a = udhcpc(&on_a.ns, &on_a.ifname, dir_a.path(), &[]);
    let env_b = udhcpc(&on_b.ns, &on_b.ifname, dir_b.path(), &[]);
    let get = |env: &std::collections::HashMap<String, String>, k: &str| {
        env.get(k).cloned().unwrap_or_else(|| "<missing>".into())
    };
    assert_eq!(get(&env_a, "ip"), "10.66.0.5");
    assert_eq!(get(&env_a, "serverid"), "10.66.0.1");
    assert_eq!(get(&env_a, "subnet"), "255.255.255.0");
    assert_eq!(get(&env_b, "ip"), "10.66.1.6");
    assert_eq!(
        get(&env_b, "serverid"),
        "10.66.1.1",
        "server id of the second network"
    );
    assert_eq!(get(&env_b, "subnet"), "255.255.255.0");
    assert_eq!(server.stats.snapshot().send_errors, 0);
}

#[test]
fn clients_behind_isc_dhcrelay_get_their_reservation() {
    if !can_run() {
        return;
    }
    let dhcrelay = ensure_installed("dhcrelay", "isc-dhcp-relay");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = dhcp_lab("rel");
    // Relay on 10.66.0.7 (upstream, the server's bridge) and 10.66.5.1
    // (downstream, the client's own subnet), as a router would be.
    let relay = lab
        .host("rl")
        .mac(MacAddr([0x02, 0x66, 0, 0, 0, 0x07]))
        .addr("10.66.0.7/24")
        .add();
    let remote_mac = MacAddr([0x02, 0x66, 0, 0, 5, 0x14]);
    let (client, downstream) = lab.behind(&relay, "cl", remote_mac, "10.66.5.1/24");
    lab.server_route("10.66.5.0/24", "10.66.0.7");
    let remote = machine(
        remote_mac,
        "10.66.5.20",
        serde_json::json!({"hostname": "far-20"}),
    );
    // Route for this subnet is the relay; fix the record's gateway.
    let remote = {
        let mut hw = (*remote).clone();
        if let Some(ip) = hw.network.interfaces[0]
            .dhcp
            .as_mut()
            .and_then(|d| d.ip.as_mut())
        {
            ip.gateway = Some("10.66.5.1".parse().expect("ip"));
        }
        std::sync::Arc::new(hw)
    };
    let server = start_server(&lab, DhcpConfig::default(), vec![remote]);
    let pid = dir.path().join("dhcrelay.pid").display().to_string();
    // -a adds option 82 and -D drops replies whose 82 does not match:
    // our echo of it is checked by the relay itself.
    let _relay = ChildGuard::spawn_in(
        &relay.ns,
        &[
            &dhcrelay,
            "-d",
            "-4",
            "-a",
            "-D",
            "-pf",
            &pid,
            "-id",
            &downstream,
            "-iu",
            &relay.ifname,
            "10.66.0.1",
        ],
        &dir.path().join("dhcrelay.log"),
    );
    // Give dhcrelay a moment to open its sockets, bounded.
    let started = wait_for(Duration::from_secs(5), || {
        log_of(dir.path(), "dhcrelay.log").contains("Listening on")
    });
    assert!(
        started,
        "dhcrelay did not start:\n{}",
        log_of(dir.path(), "dhcrelay.log")
    );
    std::thread::sleep(Duration::from_millis(300));

    let env = udhcpc(&client.ns, &client.ifname, dir.path(), &[]);
    let get = |k: &str| env.get(k).cloned().unwrap_or_else(|| "<missing>".into());
    assert_eq!(
        get("ip"),
        "10.66.5.20",
        "relay log:\n{}",
        log_of(dir.path(), "dhcrelay.log")
    );
    assert_eq!(get("subnet"), "255.255.255.0");
    assert_eq!(get("router"), "10.66.5.1");
    assert_eq!(get("hostname"), "far-20");
    assert_eq!(get("serverid"), "10.66.0.1");
    let stats = server.stats.snapshot();
    assert!(stats.replied >= 2 && stats.naks == 0, "{stats:?}");
}
