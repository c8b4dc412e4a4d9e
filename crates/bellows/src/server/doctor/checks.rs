//! The pre-flight checks, each a finding with the remedy for it. They read
//! the machine (ports, interfaces, files, the clock), never change it.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use nix::ifaddrs::getifaddrs;

use super::super::args::{DhcpMode, Listen};
use super::super::config::ServerConfig;
use super::Finding;

/// Every port the server would bind is free and bindable by this user.
pub fn ports(cfg: &ServerConfig) -> Vec<Finding> {
    let mut wanted: Vec<(&'static str, SocketAddr, bool)> = vec![
        ("API", cfg.listen, true),
        ("HTTP boot", cfg.http_listen, true),
    ];
    for addr in &cfg.metadata_listen {
        wanted.push(("metadata", *addr, true));
    }
    if cfg.dhcp_mode != DhcpMode::Off {
        wanted.push(("DHCP", cfg.dhcp_listen, false));
    }
    if let Listen::At(addr) = cfg.tftp_listen {
        wanted.push(("TFTP", addr, false));
    }
    if let Listen::At(addr) = cfg.syslog_listen {
        wanted.push(("syslog", addr, false));
    }
    wanted
        .into_iter()
        .map(|(what, addr, tcp)| port(what, addr, tcp))
        .collect()
}

fn port(what: &'static str, addr: SocketAddr, tcp: bool) -> Finding {
    let proto = if tcp { "tcp" } else { "udp" };
    let check = format!("{what} port {proto}/{addr}");
    // Port 0 is "any free port": nothing to check.
    if addr.port() == 0 {
        return Finding::ok(check, "a free port is picked at start");
    }
    let bound = if tcp {
        TcpListener::bind(addr).map(drop)
    } else {
        UdpSocket::bind(addr).map(drop)
    };
    match bound {
        Ok(()) => Finding::ok(check, "free"),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Finding::fail(
            check,
            format!("cannot bind: {e}"),
            format!(
                "ports below 1024 need root or CAP_NET_BIND_SERVICE: run the server as root, or `setcap cap_net_bind_service,cap_net_raw+ep $(command -v bellows)`, or move the {what} service to a higher port"
            ),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Finding::warn(
            check,
            "in use".to_string(),
            format!(
                "if a Bellows server runs here it holds it (fine); otherwise `ss -l{}np 'sport = :{}'` shows which program does: stop it or choose another address",
                if tcp { "t" } else { "u" },
                addr.port()
            ),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Finding::fail(
            check,
            format!("{} is not an address of this machine", addr.ip()),
            "give an address one of its interfaces holds (`ip -br addr`), or 0.0.0.0".to_string(),
        ),
        Err(e) => Finding::fail(
            check,
            format!("cannot bind: {e}"),
            "see the error".to_string(),
        ),
    }
}

/// The addresses each interface holds.
fn addresses() -> Vec<(String, IpAddr)> {
    let Ok(addrs) = getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let ip = a.address.as_ref().and_then(|s| {
                s.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            })?;
            Some((a.interface_name, ip))
        })
        .collect()
}

/// The provisioning interface exists and holds the address machines are
/// told to reach.
pub fn interface(cfg: &ServerConfig) -> Vec<Finding> {
    let all = addresses();
    let holders: Vec<&str> = all
        .iter()
        .filter(|(_, ip)| *ip == cfg.public_ip)
        .map(|(name, _)| name.as_str())
        .collect();
    let Some(name) = cfg.interface.as_deref() else {
        let check = "public address".to_string();
        return vec![if holders.is_empty() && !cfg.public_ip.is_loopback() {
            Finding::fail(
                check,
                format!("no interface holds {}", cfg.public_ip),
                "machines are told to fetch their boot files from it: give --public-ip one of this machine's addresses (`ip -br addr`)".to_string(),
            )
        } else {
            Finding::ok(
                check,
                format!("{} (on {})", cfg.public_ip, holders.join(", ")),
            )
        }];
    };
    let check = format!("interface {name}");
    if !Path::new("/sys/class/net").join(name).exists() {
        return vec![Finding::fail(
            check,
            "no such interface".to_string(),
            "`ip -br link` lists this machine's interfaces; give --interface the one on the provisioning network".to_string(),
        )];
    }
    let mine: Vec<IpAddr> = all
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, ip)| *ip)
        .collect();
    let operstate =
        std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("operstate"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
    let mut findings = vec![if mine.contains(&cfg.public_ip) {
        Finding::ok(check.clone(), format!("holds {}", cfg.public_ip))
    } else {
        Finding::fail(
            check.clone(),
            format!("does not hold {} (it has {})", cfg.public_ip, list(&mine)),
            format!(
                "machines fetch from {}: `ip addr add {}/24 dev {name}`, or give --public-ip an address {name} holds",
                cfg.public_ip, cfg.public_ip
            ),
        )
    }];
    if operstate == "down" {
        findings.push(Finding::warn(
            format!("{check} link"),
            "down".to_string(),
            format!("`ip link set {name} up`, and check its cable or switch port"),
        ));
    }
    findings
}

fn list(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "no address".to_string();
    }
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why IPv6 is not usable on `interface` for router advertisements, if
/// it is not: read from this network namespace's /proc/sys.
pub fn ipv6_problem(interface: &str) -> Option<String> {
    let conf = Path::new("/proc/sys/net/ipv6/conf");
    if !conf.exists() {
        return Some("IPv6 is not available in this kernel".to_string());
    }
    let disabled = |scope: &str| {
        std::fs::read_to_string(conf.join(scope).join("disable_ipv6"))
            .map(|v| v.trim() == "1")
            .unwrap_or(false)
    };
    if disabled(interface) {
        return Some(format!("IPv6 is disabled on {interface}"));
    }
    if disabled("all") {
        return Some("IPv6 is disabled on every interface (net.ipv6.conf.all)".to_string());
    }
    let link_local = addresses().iter().any(|(n, ip)| {
        n == interface && matches!(ip, IpAddr::V6(v6) if v6.segments()[0] == 0xfe80)
    });
    if !link_local {
        return Some(format!("{interface} has no IPv6 link-local address"));
    }
    None
}

/// The remedy for [`ipv6_problem`], and why it matters.
pub fn ipv6_remedy(interface: &str) -> String {
    format!(
        "Bellows tells iPXE there is no IPv6 router (a router advertisement) so it stops waiting; without IPv6 on {interface} it cannot, and every machine waits ~13 s for IPv6 autoconfiguration at each iPXE stage (a BIOS boot to call-back took 26.6 s instead of 10.3 s). Enable it: `sysctl -w net.ipv6.conf.{interface}.disable_ipv6=0` (and net.ipv6.conf.all), or persist it in /etc/sysctl.d/"
    )
}

/// IPv6 on the provisioning interface, when the server would send router
/// advertisements there.
pub fn ipv6(cfg: &ServerConfig) -> Vec<Finding> {
    let Some(name) = cfg.interface.as_deref().filter(|_| cfg.ipv6_ra) else {
        return Vec::new();
    };
    let check = format!("IPv6 on {name}");
    vec![match ipv6_problem(name) {
        Some(problem) => Finding::warn(check, problem, ipv6_remedy(name)),
        None => Finding::ok(check, "usable: router advertisements end iPXE's IPv6 wait"),
    }]
}

/// The iPXE binaries and the in-memory OS are there and look like what
/// they are named.
pub fn boot_files(cfg: &ServerConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    // The server copies Debian's binaries into DATA_DIR/ipxe; an explicit
    // directory is served as it is.
    let ipxe_dir = if cfg.explicit.ipxe_dir || cfg.ipxe_dir.join("undionly.kpxe").is_file() {
        cfg.ipxe_dir.clone()
    } else {
        cfg.data_dir.join("ipxe")
    };
    for (file, firmware) in [("undionly.kpxe", "BIOS"), ("snponly.efi", "UEFI")] {
        let path = ipxe_dir.join(file);
        findings.push(match std::fs::metadata(&path) {
            Ok(m) if m.len() > 0 => Finding::ok(format!("iPXE for {firmware}"), path.display().to_string()),
            _ => Finding::fail(
                format!("iPXE for {firmware}"),
                format!("no {}", path.display()),
                "`apt install ipxe` (Debian's binaries in /usr/lib/ipxe), or --ipxe-dir with your own build".to_string(),
            ),
        });
    }
    let image_remedy = "`bellows image build --data-dir DATA_DIR` makes the in-memory OS (in DATA_DIR/osie), or set --osie-kernel/--osie-initrd";
    for (name, what, looks_right) in [
        (
            &cfg.osie_kernel,
            "in-memory OS kernel",
            is_linux_kernel as fn(&[u8]) -> bool,
        ),
        (&cfg.osie_initrd, "in-memory OS initramfs", is_initramfs),
    ] {
        if name.starts_with("http://") || name.starts_with("https://") {
            findings.push(Finding::ok(
                what.to_string(),
                format!("{name} (a URL, not checked)"),
            ));
            continue;
        }
        let path = cfg.osie_dir.join(name);
        findings.push(match head(&path) {
            None => Finding::warn(
                what.to_string(),
                format!(
                    "no {}: machines with a workflow fall back to local boot",
                    path.display()
                ),
                image_remedy.to_string(),
            ),
            Some(bytes) if !looks_right(&bytes) => Finding::fail(
                what.to_string(),
                format!("{} is not a {what}", path.display()),
                image_remedy.to_string(),
            ),
            Some(_) => Finding::ok(what.to_string(), path.display().to_string()),
        });
    }
    findings
}

/// The first 1 KiB of a file.
fn head(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 1024];
    let n = file.read(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// An x86 bzImage ("HdrS" at 0x202) or an arm64 Image ("ARM\x64" at 0x38).
fn is_linux_kernel(bytes: &[u8]) -> bool {
    bytes.get(0x202..0x206) == Some(b"HdrS") || bytes.get(0x38..0x3c) == Some(b"ARM\x64")
}

/// A cpio archive, plain or compressed as the kernel can unpack it.
fn is_initramfs(bytes: &[u8]) -> bool {
    const MAGICS: &[&[u8]] = &[
        b"070701",                       // newc cpio
        b"070702",                       // crc cpio
        &[0x1f, 0x8b],                   // gzip
        &[0x28, 0xb5, 0x2f, 0xfd],       // zstd
        &[0xfd, b'7', b'z', b'X', b'Z'], // xz
        &[0x02, 0x21, 0x4c, 0x18],       // lz4 legacy
        b"BZh",                          // bzip2
    ];
    MAGICS.iter().any(|m| bytes.starts_with(m))
}

/// Free space where the database lives.
pub fn disk(cfg: &ServerConfig) -> Vec<Finding> {
    // The data directory may not exist yet: its nearest existing parent.
    let mut dir: PathBuf = cfg.data_dir.clone();
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
            _ => {
                dir = PathBuf::from(".");
                break;
            }
        }
    }
    let check = format!("disk space at {}", dir.display());
    vec![match nix::sys::statvfs::statvfs(&dir) {
        Ok(s) => {
            let free = s.blocks_available().saturating_mul(s.fragment_size());
            let mib = free / (1 << 20);
            let remedy = || {
                "free space on that file system, or move --data-dir: a write that cannot be made durable is refused, and workers' reports with it".to_string()
            };
            if mib < 100 {
                Finding::fail(check, format!("{mib} MiB free"), remedy())
            } else if mib < 1024 {
                Finding::warn(check, format!("{mib} MiB free"), remedy())
            } else {
                Finding::ok(check, format!("{} GiB free", mib / 1024))
            }
        }
        Err(e) => Finding::warn(check, format!("cannot read: {e}"), "check the path".into()),
    }]
}

/// The clock: set at all, and not behind what this data directory has
/// already written (a clock that went back reorders events and keeps
/// credentials alive past their time).
pub fn clock(cfg: &ServerConfig) -> Vec<Finding> {
    let now = std::time::SystemTime::now();
    let check = "clock".to_string();
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // 2024-01-01: before this program existed.
    if since_epoch < 1_704_067_200 {
        return vec![Finding::fail(
            check,
            "the system clock is before 2024".to_string(),
            "set the time (`timedatectl set-ntp true`, or `date -s`): TLS certificates and every timestamp depend on it".to_string(),
        )];
    }
    let newest = std::fs::read_dir(&cfg.data_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max();
    match newest.and_then(|t| t.duration_since(now).ok()) {
        Some(ahead) if ahead.as_secs() > 300 => vec![Finding::warn(
            check,
            format!(
                "{} was written {} s in the future: the clock went back",
                cfg.data_dir.display(),
                ahead.as_secs()
            ),
            "synchronise the clock (NTP: `timedatectl set-ntp true` or chrony); with several servers on PostgreSQL every replica's clock must agree".to_string(),
        )],
        _ => vec![Finding::ok(check, "set, and not behind the data directory")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_file_magic() {
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(is_linux_kernel(&bz));
        assert!(!is_linux_kernel(b"\x1f\x8b not a kernel"));
        assert!(is_initramfs(b"070701000000"));
        assert!(is_initramfs(&[0x1f, 0x8b, 8, 0]));
        assert!(!is_initramfs(b"<html>404</html>"));
    }
}
