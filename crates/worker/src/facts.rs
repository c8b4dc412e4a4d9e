//! Facts about the machine the worker runs on, for the server's inventory
//! (sent when the worker subscribes): CPU, memory, disks, NICs, hostname,
//! kernel, architecture, and DMI identity as extra JSON.
//!
//! Everything is read from `/proc` and `/sys`; the parsing is in pure
//! functions, and [`collect_from`] reads a tree under any root so tests can
//! hand it a made-up one. A fact that cannot be read is left empty (or 0):
//! a machine with an odd kernel still gets a worker.
//!
//! Discovery adds two facts that need more than reading files: the BMC's
//! address ([`bmc_address`], from `ipmitool lan print`) and the switch
//! port at the other end of each NIC ([`merge_lldp`], from
//! [`crate::lldp`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bellows_model::api::LldpNeighbour;
use bellows_rpc::v1::{Cpu, Disk, Facts, Lldp, Nic};
use tokio::io::AsyncReadExt;

/// The facts of this machine.
pub fn collect() -> Facts {
    let mut facts = collect_from(Path::new("/"));
    let mut addresses = interface_addresses();
    for nic in &mut facts.nics {
        nic.addresses = addresses.remove(&nic.name).unwrap_or_default();
    }
    facts
}

/// The facts found in the `proc` and `sys` trees under `root` (`/` for the
/// real ones). Interface addresses are not in those trees; [`collect`] adds
/// them.
pub fn collect_from(root: &Path) -> Facts {
    let read = |relative: &str| fs::read_to_string(root.join(relative)).unwrap_or_default();
    let mut cpu = parse_cpuinfo(&read("proc/cpuinfo"));
    if cpu.sockets == 0 && cpu.threads > 0 {
        // No "physical id" lines (arm64): count packages in the topology.
        cpu.sockets = count_packages(&root.join("sys/devices/system/cpu")).max(1);
    }
    Facts {
        cpu: Some(cpu),
        memory_bytes: parse_meminfo(&read("proc/meminfo")),
        disks: disks(&root.join("sys/block")),
        nics: nics(&root.join("sys/class/net")),
        hostname: read("proc/sys/kernel/hostname").trim().to_string(),
        kernel: read("proc/sys/kernel/osrelease").trim().to_string(),
        architecture: std::env::consts::ARCH.to_string(),
        extra_json: dmi_json(&root.join("sys/class/dmi/id")),
        bmc_address: String::new(),
    }
}

/// Longest `ipmitool lan print` may take: a BMC that does not answer must
/// not hold up the report.
const IPMITOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most of `ipmitool lan print`'s output read (it is about 2 KiB).
const IPMITOOL_OUTPUT_LIMIT: u64 = 64 << 10;

/// The BMC's IPv4 address as this machine reads it with `ipmitool lan
/// print` (its default channel), so discovery can fill in the BMC record;
/// "" when `ipmitool` is not on the PATH, fails, takes longer than 10 s,
/// or the BMC has no address.
pub async fn bmc_address() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let Some(program) = find_on_path("ipmitool", &path) else {
        return String::new();
    };
    let run = async {
        let mut child = tokio::process::Command::new(&program)
            .args(["lan", "print"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let mut out = Vec::new();
        // The pipe is closed once read, so a chatty child cannot block.
        child
            .stdout
            .take()?
            .take(IPMITOOL_OUTPUT_LIMIT)
            .read_to_end(&mut out)
            .await
            .ok()?;
        let _ = child.wait().await;
        parse_lan_print(&String::from_utf8_lossy(&out))
    };
    match tokio::time::timeout(IPMITOOL_TIMEOUT, run).await {
        Ok(Some(address)) => address.to_string(),
        Ok(None) => String::new(),
        Err(_) => {
            tracing::debug!("ipmitool lan print took longer than {IPMITOOL_TIMEOUT:?}");
            String::new()
        }
    }
}

/// The address of the `IP Address` line of `ipmitool lan print` (not the
/// `IP Address Source` line before it); `None` without one, or when it is
/// 0.0.0.0 (a BMC without an address).
pub fn parse_lan_print(text: &str) -> Option<Ipv4Addr> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if key.trim() != "IP Address" {
            return None;
        }
        value
            .trim()
            .parse::<Ipv4Addr>()
            .ok()
            .filter(|a| !a.is_unspecified())
    })
}

/// The first executable file called `name` in the directories of `path`
/// (a `PATH` value).
pub fn find_on_path(name: &str, path: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|file| {
            fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The protobuf form of an LLDP neighbour.
pub fn lldp_to_proto(neighbour: &LldpNeighbour) -> Lldp {
    Lldp {
        chassis_id: neighbour.chassis_id.clone(),
        port_id: neighbour.port_id.clone(),
        system_name: neighbour.system_name.clone(),
        port_description: neighbour.port_description.clone(),
    }
}

/// Puts the neighbour heard on each NIC (by interface name) into `facts`;
/// a NIC nothing was heard on keeps what it had.
pub fn merge_lldp(facts: &mut Facts, heard: &BTreeMap<String, LldpNeighbour>) {
    for nic in &mut facts.nics {
        if let Some(neighbour) = heard.get(&nic.name) {
            nic.lldp = Some(lldp_to_proto(neighbour));
        }
    }
}

/// CPU model, logical CPUs and sockets from `/proc/cpuinfo`. Sockets are the
/// distinct `physical id`s, 0 when the file has none.
pub fn parse_cpuinfo(text: &str) -> Cpu {
    let mut threads = 0u32;
    let mut packages = BTreeSet::new();
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => threads += 1,
            "physical id" => {
                packages.insert(value);
            }
            _ => {
                fields.entry(key).or_insert(value);
            }
        }
    }
    // x86 says "model name"; others use one of these, or only the IDs.
    let model = ["model name", "Model", "cpu model", "cpu"]
        .iter()
        .find_map(|key| fields.get(key).filter(|v| !v.is_empty()))
        .map(|v| v.to_string())
        .or_else(|| {
            let implementer = fields.get("CPU implementer")?;
            let part = fields.get("CPU part")?;
            Some(format!("implementer {implementer} part {part}"))
        })
        .unwrap_or_default();
    Cpu {
        model,
        threads,
        sockets: u32::try_from(packages.len()).unwrap_or(u32::MAX),
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            let unit = match parts.next() {
                Some("kB") | Some("KB") | Some("kb") => 1024,
                None => 1,
                Some(_) => return None,
            };
            value.checked_mul(unit)
        })
        .unwrap_or(0)
}

/// Whether a `/sys/block` entry is no disk: loop, RAM, compressed-RAM and
/// device-mapper devices.
pub fn skip_block_device(name: &str) -> bool {
    ["loop", "ram", "zram", "dm-"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// A NIC's `speed` file in Mb/s: "-1" (no link), garbage or nothing is 0.
pub fn parse_speed(text: &str) -> u32 {
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|s| u32::try_from(s).ok())
        .unwrap_or(0)
}

/// Length of the prefix of a netmask (`255.255.255.0` → 24).
pub fn prefix_len(netmask: &[u8]) -> u32 {
    netmask.iter().map(|b| b.count_ones()).sum()
}

/// A file's contents without surrounding whitespace; `None` if unreadable
/// or empty.
fn read_trimmed(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Names of the entries of a directory, sorted; empty if unreadable.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn disks(sys_block: &Path) -> Vec<Disk> {
    entries(sys_block)
        .into_iter()
        .filter(|name| !skip_block_device(name))
        .map(|name| {
            let dir = sys_block.join(&name);
            let flag = |file: &str| read_trimmed(&dir.join(file)).as_deref() == Some("1");
            let sectors: u64 = read_trimmed(&dir.join("size"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Disk {
                size_bytes: sectors.saturating_mul(512),
                model: read_trimmed(&dir.join("device/model")).unwrap_or_default(),
                serial: read_trimmed(&dir.join("device/serial"))
                    .or_else(|| read_trimmed(&dir.join("serial")))
                    .unwrap_or_default(),
                rotational: flag("queue/rotational"),
                removable: flag("removable"),
                name,
            }
        })
        .collect()
}

fn nics(sys_class_net: &Path) -> Vec<Nic> {
    entries(sys_class_net)
        .into_iter()
        .filter(|name| name != "lo")
        .map(|name| {
            let dir = sys_class_net.join(&name);
            let driver = fs::read_link(dir.join("device/driver"))
                .ok()
                .and_then(|target| target.file_name()?.to_str().map(str::to_string))
                .unwrap_or_default();
            Nic {
                mac: read_trimmed(&dir.join("address")).unwrap_or_default(),
                driver,
                speed_mbps: read_trimmed(&dir.join("speed"))
                    .map(|s| parse_speed(&s))
                    .unwrap_or(0),
                link_up: read_trimmed(&dir.join("operstate")).as_deref() == Some("up"),
                addresses: Vec::new(),
                lldp: None,
                name,
            }
        })
        .collect()
}

/// Distinct `topology/physical_package_id`s of the CPUs under `cpus`.
fn count_packages(cpus: &Path) -> u32 {
    let packages: BTreeSet<String> = entries(cpus)
        .into_iter()
        .filter(|name| {
            name.strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|name| read_trimmed(&cpus.join(name).join("topology/physical_package_id")))
        .collect();
    u32::try_from(packages.len()).unwrap_or(u32::MAX)
}

/// The machine's DMI identity (vendor, product, serial, board, BIOS) as a
/// JSON object; "" when there is none (VMs without DMI, arm boards).
fn dmi_json(dmi: &Path) -> String {
    let fields: serde_json::Map<String, serde_json::Value> = [
        "sys_vendor",
        "product_name",
        "product_serial",
        "product_uuid",
        "board_vendor",
        "board_name",
        "bios_vendor",
        "bios_version",
    ]
    .iter()
    .filter_map(|field| {
        let value = read_trimmed(&dmi.join(field))?;
        Some((field.to_string(), serde_json::Value::String(value)))
    })
    .collect();
    if fields.is_empty() {
        String::new()
    } else {
        serde_json::Value::Object(fields).to_string()
    }
}

/// Each interface's IPv4 and IPv6 addresses as `address/prefix`.
fn interface_addresses() -> BTreeMap<String, Vec<String>> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return by_name;
    };
    for interface in interfaces {
        let Some(address) = interface.address else {
            continue;
        };
        let netmask = interface.netmask;
        let text = if let Some(v4) = address.as_sockaddr_in() {
            let prefix = netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map(|m| prefix_len(&m.ip().octets()));
            with_prefix(v4.ip().to_string(), prefix)
        } else if let Some(v6) = address.as_sockaddr_in6() {
            let prefix = netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in6())
                .map(|m| prefix_len(&m.ip().octets()));
            with_prefix(v6.ip().to_string(), prefix)
        } else {
            continue;
        };
        by_name
            .entry(interface.interface_name)
            .or_default()
            .push(text);
    }
    by_name
}

fn with_prefix(address: String, prefix: Option<u32>) -> String {
    match prefix {
        Some(prefix) => format!("{address}/{prefix}"),
        None => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO_X86: &str = "\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
physical id\t: 0

processor\t: 2
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
physical id\t: 1

processor\t: 3
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
physical id\t: 1
";

    const CPUINFO_ARM64: &str = "\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

processor\t: 1
CPU implementer\t: 0x41
CPU part\t: 0xd0c
";

    #[test]
    fn cpuinfo_x86() {
        let cpu = parse_cpuinfo(CPUINFO_X86);
        assert_eq!(cpu.model, "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz");
        assert_eq!(cpu.threads, 4);
        assert_eq!(cpu.sockets, 2);
    }

    #[test]
    fn cpuinfo_arm64() {
        let cpu = parse_cpuinfo(CPUINFO_ARM64);
        assert_eq!(cpu.model, "implementer 0x41 part 0xd0c");
        assert_eq!(cpu.threads, 2);
        assert_eq!(cpu.sockets, 0);
        assert_eq!(parse_cpuinfo(""), Cpu::default());
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       16303604 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_meminfo(text), 16_303_604 * 1024);
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), 0);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), 0);
        assert_eq!(parse_meminfo(""), 0);
    }

    #[test]
    fn block_devices_and_speeds() {
        for name in ["loop0", "ram1", "zram0", "dm-3"] {
            assert!(skip_block_device(name), "{name}");
        }
        for name in ["sda", "nvme0n1", "vda", "mmcblk0", "md0"] {
            assert!(!skip_block_device(name), "{name}");
        }
        assert_eq!(parse_speed("10000\n"), 10_000);
        assert_eq!(parse_speed("-1"), 0);
        assert_eq!(parse_speed(""), 0);
        assert_eq!(parse_speed("fast"), 0);
        assert_eq!(prefix_len(&[255, 255, 255, 0]), 24);
        assert_eq!(prefix_len(&[0xff; 8]), 64);
        assert_eq!(prefix_len(&[0; 4]), 0);
    }

    /// A made-up machine: two disks (one rotational, one removable), a loop
    /// device to skip, two NICs and lo.
    #[test]
    fn a_whole_tree() {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("proc/cpuinfo", CPUINFO_X86);
        write("proc/meminfo", "MemTotal: 2048 kB\n");
        write("proc/sys/kernel/hostname", "node-1\n");
        write("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
        write("sys/block/sda/size", "1953525168\n");
        write("sys/block/sda/removable", "0\n");
        write("sys/block/sda/queue/rotational", "1\n");
        write("sys/block/sda/device/model", "ST1000NM0033-9ZM\n");
        write("sys/block/nvme0n1/size", "2048\n");
        write("sys/block/nvme0n1/removable", "1\n");
        write("sys/block/nvme0n1/queue/rotational", "0\n");
        write("sys/block/nvme0n1/device/serial", "  S4EWNX0R123456  \n");
        write("sys/block/loop0/size", "8\n");
        write("sys/class/net/lo/address", "00:00:00:00:00:00\n");
        write("sys/class/net/eth0/address", "d0:50:99:d7:63:20\n");
        write("sys/class/net/eth0/speed", "1000\n");
        write("sys/class/net/eth0/operstate", "up\n");
        write("sys/bus/pci/drivers/igb/.keep", "");
        fs::create_dir_all(root.path().join("sys/class/net/eth0/device")).unwrap();
        std::os::unix::fs::symlink(
            root.path().join("sys/bus/pci/drivers/igb"),
            root.path().join("sys/class/net/eth0/device/driver"),
        )
        .unwrap();
        write("sys/class/net/eth1/address", "d0:50:99:d7:63:21\n");
        write("sys/class/net/eth1/speed", "-1\n");
        write("sys/class/net/eth1/operstate", "down\n");
        write("sys/class/dmi/id/sys_vendor", "Supermicro\n");
        write("sys/class/dmi/id/product_serial", "\n");

        let facts = collect_from(root.path());
        let cpu = facts.cpu.clone().unwrap();
        assert_eq!((cpu.threads, cpu.sockets), (4, 2));
        assert_eq!(facts.memory_bytes, 2048 * 1024);
        assert_eq!(facts.hostname, "node-1");
        assert_eq!(facts.kernel, "6.1.0-18-amd64");
        assert_eq!(facts.architecture, std::env::consts::ARCH);
        assert_eq!(
            facts.disks,
            vec![
                Disk {
                    name: "nvme0n1".into(),
                    size_bytes: 2048 * 512,
                    model: String::new(),
                    serial: "S4EWNX0R123456".into(),
                    rotational: false,
                    removable: true,
                },
                Disk {
                    name: "sda".into(),
                    size_bytes: 1_953_525_168 * 512,
                    model: "ST1000NM0033-9ZM".into(),
                    serial: String::new(),
                    rotational: true,
                    removable: false,
                },
            ]
        );
        assert_eq!(
            facts.nics,
            vec![
                Nic {
                    name: "eth0".into(),
                    mac: "d0:50:99:d7:63:20".into(),
                    driver: "igb".into(),
                    speed_mbps: 1000,
                    link_up: true,
                    addresses: vec![],
                    lldp: None,
                },
                Nic {
                    name: "eth1".into(),
                    mac: "d0:50:99:d7:63:21".into(),
                    driver: String::new(),
                    speed_mbps: 0,
                    link_up: false,
                    addresses: vec![],
                    lldp: None,
                },
            ]
        );
        assert_eq!(facts.extra_json, r#"{"sys_vendor":"Supermicro"}"#);
    }

    #[test]
    fn sockets_from_topology_when_cpuinfo_has_none() {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("proc/cpuinfo", CPUINFO_ARM64);
        write(
            "sys/devices/system/cpu/cpu0/topology/physical_package_id",
            "0\n",
        );
        write(
            "sys/devices/system/cpu/cpu1/topology/physical_package_id",
            "0\n",
        );
        write("sys/devices/system/cpu/cpufreq/x", "");
        let facts = collect_from(root.path());
        assert_eq!(facts.cpu.unwrap().sockets, 1);
        assert_eq!(facts.extra_json, "");
        assert!(facts.disks.is_empty() && facts.nics.is_empty());
    }

    /// `ipmitool lan print` of a Supermicro BMC (ipmitool 1.8.19): the
    /// "IP Address Source" line comes first and must not be taken.
    const LAN_PRINT: &str = "\
Set in Progress         : Set Complete
Auth Type Support       : NONE MD2 MD5 PASSWORD
Auth Type Enable        : Callback : MD2 MD5 PASSWORD
                        : User     : MD2 MD5 PASSWORD
                        : Operator : MD2 MD5 PASSWORD
                        : Admin    : MD2 MD5 PASSWORD
                        : OEM      : MD2 MD5 PASSWORD
IP Address Source       : DHCP Address
IP Address              : 10.20.30.41
Subnet Mask             : 255.255.255.0
MAC Address             : 0c:c4:7a:12:34:56
SNMP Community String   : public
IP Header               : TTL=0x00 Flags=0x00 Precedence=0x00 TOS=0x00
BMC ARP Control         : ARP Responses Enabled, Gratuitous ARP Disabled
Default Gateway IP      : 10.20.30.1
Default Gateway MAC     : 00:00:00:00:00:00
Backup Gateway IP       : 0.0.0.0
Backup Gateway MAC      : 00:00:00:00:00:00
802.1q VLAN ID          : Disabled
802.1q VLAN Priority    : 0
RMCP+ Cipher Suites     : 1,2,3,6,7,8,11,12
Cipher Suite Priv Max   : XaaaXXaaaXXaaXX
                        :     X=Cipher Suite Unused
                        :     c=CALLBACK
                        :     u=USER
                        :     o=OPERATOR
                        :     a=ADMIN
                        :     O=OEM
Bad Password Threshold  : Not Available
";

    #[test]
    fn bmc_address_from_lan_print() {
        assert_eq!(
            parse_lan_print(LAN_PRINT),
            Some(Ipv4Addr::new(10, 20, 30, 41))
        );
        // No address yet (DHCP pending), or none configured.
        let unset = LAN_PRINT.replace("10.20.30.41", "0.0.0.0");
        assert_eq!(parse_lan_print(&unset), None);
        // Only the source line: not an address.
        assert_eq!(
            parse_lan_print("IP Address Source       : Static Address\n"),
            None
        );
        // ipmitool's error output, and nothing.
        assert_eq!(
            parse_lan_print(
                "Could not open device at /dev/ipmi0 or /dev/ipmi/0 or /dev/ipmidev/0: No such file or directory\n"
            ),
            None
        );
        assert_eq!(parse_lan_print(""), None);
        assert_eq!(parse_lan_print("IP Address : 10.1.2.300\n"), None);
    }

    #[test]
    fn programs_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("ipmitool");
        fs::write(&tool, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(find_on_path("ipmitool", &path), None, "not executable");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_on_path("ipmitool", &path), Some(tool));
        assert_eq!(find_on_path("ipmitool", OsStr::new("")), None);
        // A directory of that name is no program.
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(find_on_path("sub", &path), None);
    }

    #[test]
    fn lldp_goes_to_its_nic() {
        let mut facts = Facts {
            nics: vec![
                Nic {
                    name: "eth0".into(),
                    ..Default::default()
                },
                Nic {
                    name: "eth1".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let neighbour = LldpNeighbour {
            chassis_id: "00:1c:73:0a:0b:0c".into(),
            port_id: "Ethernet1/7".into(),
            system_name: "leaf-12".into(),
            port_description: "rack 12".into(),
        };
        let heard = BTreeMap::from([
            ("eth1".to_string(), neighbour.clone()),
            ("eth9".to_string(), neighbour),
        ]);
        merge_lldp(&mut facts, &heard);
        assert_eq!(facts.nics[0].lldp, None);
        assert_eq!(
            facts.nics[1].lldp,
            Some(Lldp {
                chassis_id: "00:1c:73:0a:0b:0c".into(),
                port_id: "Ethernet1/7".into(),
                system_name: "leaf-12".into(),
                port_description: "rack 12".into(),
            })
        );
    }

    /// This machine, read for real: the numbers must be plausible and agree
    /// with what other tools see.
    #[test]
    fn this_machine() {
        let facts = collect();
        let cpu = facts.cpu.clone().unwrap();
        let available = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        assert!(cpu.threads >= available, "{cpu:?} vs {available}");
        assert!(cpu.sockets >= 1);
        assert!(facts.memory_bytes > 64 << 20);
        assert!(!facts.kernel.is_empty());
        assert_eq!(facts.architecture, std::env::consts::ARCH);
        assert!(facts.nics.iter().all(|n| n.name != "lo"));
        assert!(facts.disks.iter().all(|d| !skip_block_device(&d.name)));
    }
}
