//! Bring your own DHCP (seed 003): configuration for the site's dnsmasq,
//! Kea or ISC dhcpd that reserves each machine's address and does the
//! two-stage chainload (firmware → iPXE binary → this server's script),
//! with Bellows serving everything but DHCP. Pure text generation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use bellows_api::BootInfo;
use bellows_model::Hardware;
use serde_json::{Value, json};

/// The site's own DHCP server a config is written for (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SiteDhcp {
    /// dnsmasq (`dnsmasq --test -C FILE`).
    Dnsmasq,
    /// Kea DHCPv4 JSON (`kea-dhcp4 -t FILE`).
    Kea,
    /// ISC dhcpd (`dhcpd -t -cf FILE`).
    Isc,
}

/// One reservation.
struct Host {
    name: String,
    mac: String,
    ip: Ipv4Addr,
    netmask: Ipv4Addr,
    gateway: Option<IpAddr>,
    dns: Vec<IpAddr>,
    lease: Option<u64>,
}

/// A subnet and its hosts.
struct Subnet {
    network: Ipv4Addr,
    netmask: Ipv4Addr,
    hosts: Vec<Host>,
}

fn subnets(hardware: &[Hardware]) -> (Vec<Subnet>, Vec<String>) {
    let mut by_net: BTreeMap<(Ipv4Addr, Ipv4Addr), Vec<Host>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for hw in hardware {
        for (i, iface) in hw.network.interfaces.iter().enumerate() {
            let Some(d) = &iface.dhcp else { continue };
            let Some(ipc) = &d.ip else {
                skipped.push(format!("{} {}: no reserved IP", hw.id, d.mac));
                continue;
            };
            let IpAddr::V4(ip) = ipc.address else {
                skipped.push(format!("{} {}: {} is not IPv4", hw.id, d.mac, ipc.address));
                continue;
            };
            let netmask = ipc.netmask.unwrap_or(Ipv4Addr::new(255, 255, 255, 0));
            let network = Ipv4Addr::from(u32::from(ip) & u32::from(netmask));
            let name = d
                .hostname
                .clone()
                .or_else(|| hw.hostname().map(str::to_string))
                .unwrap_or_else(|| {
                    format!(
                        "bellows-{}-{i}",
                        hw.id.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
                    )
                });
            by_net.entry((network, netmask)).or_default().push(Host {
                name,
                mac: d.mac.to_string(),
                ip,
                netmask,
                gateway: ipc.gateway,
                dns: d.name_servers.clone().unwrap_or_default(),
                lease: d.lease_time,
            });
        }
    }
    let subnets = by_net
        .into_iter()
        .map(|((network, netmask), hosts)| Subnet {
            network,
            netmask,
            hosts,
        })
        .collect();
    (subnets, skipped)
}

fn prefix_len(mask: Ipv4Addr) -> u32 {
    u32::from(mask).leading_ones()
}

/// The URL the iPXE stage chains: by source address, since the site's DHCP
/// cannot put the MAC into the file name.
fn script_url(boot: &BootInfo) -> String {
    bellows_model::boot::script_by_source_url(&boot.http_base)
}

/// The syslog host for DHCP option 7, which carries IPv4 addresses only
/// (and no port: a receiver on another port cannot be announced this way).
fn syslog_ipv4(boot: &BootInfo) -> Option<Ipv4Addr> {
    let syslog = boot.syslog.as_deref()?;
    let host = syslog.split(':').next()?;
    host.parse().ok()
}

/// Writes the configuration; also returns the interfaces it had to leave
/// out (no reserved IPv4), for the caller to report.
pub fn generate(
    format: SiteDhcp,
    hardware: &[Hardware],
    boot: &BootInfo,
    interface: Option<&str>,
) -> (String, Vec<String>) {
    let (subnets, skipped) = subnets(hardware);
    let text = match format {
        SiteDhcp::Dnsmasq => dnsmasq(&subnets, boot, interface),
        SiteDhcp::Kea => kea(&subnets, boot, interface),
        SiteDhcp::Isc => isc(&subnets, boot),
    };
    (text, skipped)
}

fn dnsmasq(subnets: &[Subnet], boot: &BootInfo, interface: Option<&str>) -> String {
    let mut s = String::from(
        "# dnsmasq configuration written by `bellows dhcp-config --format dnsmasq`.\n",
    );
    let _ = writeln!(
        s,
        "# Reservations only; Bellows ({}) serves TFTP, HTTP and the iPXE scripts.",
        boot.public_ip
    );
    if let Some(i) = interface {
        let _ = writeln!(s, "interface={i}");
    }
    s.push_str("port=0\n");
    for net in subnets {
        let _ = writeln!(s, "dhcp-range={},static,{}", net.network, net.netmask);
    }
    for (n, net) in subnets.iter().enumerate() {
        for (h, host) in net.hosts.iter().enumerate() {
            let tag = format!("bellows{n}x{h}");
            let lease = host.lease.map(|l| format!(",{l}")).unwrap_or_default();
            let _ = writeln!(
                s,
                "dhcp-host={},set:{tag},{},{}{lease}",
                host.mac, host.ip, host.name
            );
            if let Some(gw) = host.gateway {
                let _ = writeln!(s, "dhcp-option=tag:{tag},option:router,{gw}");
            }
            if !host.dns.is_empty() {
                let list: Vec<String> = host.dns.iter().map(ToString::to_string).collect();
                let _ = writeln!(
                    s,
                    "dhcp-option=tag:{tag},option:dns-server,{}",
                    list.join(",")
                );
            }
        }
    }
    let server = &boot.public_ip;
    let _ = write!(
        s,
        "# Two-stage chainload (https://ipxe.org/howto/chainloading): firmware gets an iPXE\n\
         # binary for its architecture, iPXE (user class \"iPXE\") gets this server's script.\n\
         dhcp-match=set:ipxe,175\n\
         dhcp-userclass=set:ipxe,iPXE\n\
         dhcp-match=set:efi64,option:client-arch,7\n\
         dhcp-match=set:efi64,option:client-arch,9\n\
         dhcp-boot=tag:ipxe,{url}\n\
         dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi,,{server}\n\
         dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe,,{server}\n\
         # iPXE: do not wait for ProxyDHCP offers (option 175.176 no-pxedhcp).\n\
         dhcp-option=tag:ipxe,encap:175,176,1b\n",
        url = script_url(boot)
    );
    if let Some(host) = syslog_ipv4(boot) {
        let _ = writeln!(s, "dhcp-option=option:log-server,{host}");
    }
    s
}

fn kea(subnets: &[Subnet], boot: &BootInfo, interface: Option<&str>) -> String {
    let server = &boot.public_ip;
    let subnet4: Vec<Value> = subnets
        .iter()
        .enumerate()
        .map(|(i, net)| {
            let reservations: Vec<Value> = net
                .hosts
                .iter()
                .map(|h| {
                    let mut options = Vec::new();
                    if let Some(gw) = h.gateway {
                        options.push(json!({"name": "routers", "data": gw.to_string()}));
                    }
                    if !h.dns.is_empty() {
                        let list: Vec<String> = h.dns.iter().map(ToString::to_string).collect();
                        options.push(json!({"name": "domain-name-servers", "data": list.join(", ")}));
                    }
                    json!({"hw-address": h.mac, "ip-address": h.ip.to_string(), "hostname": h.name, "option-data": options})
                })
                .collect();
            json!({
                "id": i + 1,
                "subnet": format!("{}/{}", net.network, prefix_len(net.netmask)),
                "reservations": reservations,
            })
        })
        .collect();
    let mut options =
        vec![json!({"name": "no-pxedhcp", "space": "ipxe", "data": "1", "always-send": true})];
    if let Some(host) = syslog_ipv4(boot) {
        options.push(json!({"name": "log-servers", "data": host.to_string()}));
    }
    let doc = json!({
        "Dhcp4": {
            "interfaces-config": {"interfaces": [interface.unwrap_or("*")]},
            "lease-database": {"type": "memfile", "lfc-interval": 3600},
            "valid-lifetime": 86400,
            "option-def": [
                {"name": "ipxe-encap-opts", "code": 175, "space": "dhcp4", "type": "empty", "encapsulate": "ipxe"},
                {"name": "no-pxedhcp", "code": 176, "space": "ipxe", "type": "uint8"}
            ],
            "client-classes": [
                {
                    "name": "ipxe",
                    "test": "substring(option[77].hex,0,4) == 'iPXE'",
                    "boot-file-name": script_url(boot),
                    "option-data": [{"name": "ipxe-encap-opts", "always-send": true}]
                },
                {
                    "name": "efi64",
                    "test": "not member('ipxe') and (option[93].hex == 0x0007 or option[93].hex == 0x0009)",
                    "next-server": server,
                    "boot-file-name": "snponly.efi"
                },
                {
                    "name": "bios",
                    "test": "not member('ipxe') and not member('efi64')",
                    "next-server": server,
                    "boot-file-name": "undionly.kpxe"
                }
            ],
            "option-data": options,
            "subnet4": subnet4
        }
    });
    let mut text =
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| unreachable!("JSON serialises: {e}"));
    text.push('\n');
    text
}

fn isc(subnets: &[Subnet], boot: &BootInfo) -> String {
    let server = &boot.public_ip;
    let mut s =
        String::from("# ISC dhcpd configuration written by `bellows dhcp-config --format isc`.\n");
    let _ = write!(
        s,
        "authoritative;\n\
         option client-architecture code 93 = unsigned integer 16;\n\
         option space ipxe;\n\
         option ipxe-encap-opts code 175 = encapsulate ipxe;\n\
         option ipxe.no-pxedhcp code 176 = unsigned integer 8;\n\n\
         if exists user-class and option user-class = \"iPXE\" {{\n\
         \x20 filename \"{url}\";\n\
         \x20 option ipxe.no-pxedhcp 1;\n\
         }} elsif option client-architecture = 00:07 or option client-architecture = 00:09 {{\n\
         \x20 next-server {server};\n\
         \x20 filename \"snponly.efi\";\n\
         }} else {{\n\
         \x20 next-server {server};\n\
         \x20 filename \"undionly.kpxe\";\n\
         }}\n\n",
        url = script_url(boot)
    );
    if let Some(host) = syslog_ipv4(boot) {
        let _ = writeln!(s, "option log-servers {host};\n");
    }
    for (n, net) in subnets.iter().enumerate() {
        let _ = writeln!(s, "subnet {} netmask {} {{\n}}\n", net.network, net.netmask);
        for (h, host) in net.hosts.iter().enumerate() {
            let _ = writeln!(s, "host bellows-{n}-{h} {{");
            let _ = writeln!(s, "  hardware ethernet {};", host.mac);
            let _ = writeln!(s, "  fixed-address {};", host.ip);
            let _ = writeln!(s, "  option host-name \"{}\";", host.name);
            let _ = writeln!(s, "  option subnet-mask {};", host.netmask);
            if let Some(gw) = host.gateway {
                let _ = writeln!(s, "  option routers {gw};");
            }
            if !host.dns.is_empty() {
                let list: Vec<String> = host.dns.iter().map(ToString::to_string).collect();
                let _ = writeln!(s, "  option domain-name-servers {};", list.join(", "));
            }
            if let Some(l) = host.lease {
                let _ = writeln!(s, "  default-lease-time {l};\n  max-lease-time {l};");
            }
            s.push_str("}\n");
        }
    }
    s
}

/// The customer iPXE script of seed 000, for OVH's `POST /me/ipxeScript`:
/// close the public NIC, DHCP on the private one, chain this server's
/// script for that NIC, and `exit 1` (boot the next device: a failure, so
/// UEFI firmware does not stop in its setup menu) if anything fails.
pub fn ovh_script(boot: &BootInfo, public_nic: &str, private_nic: &str) -> String {
    format!(
        "#!ipxe\n\
         ifclose {public_nic}\n\
         dhcp {private_nic} || goto failed\n\
         set iface {private_nic}\n\
         chain --autofree {base}{ipxe}/${{{private_nic}/mac}}/{script} || goto failed\n\
         :failed\n\
         exit 1\n",
        base = boot.http_base,
        ipxe = bellows_model::boot::IPXE_PATH,
        script = bellows_model::boot::SCRIPT_NAME,
    )
}
