//! What the DHCP service answers, and where it listens.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

/// How Bellows takes part in DHCP on the provisioning network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Bellows is the DHCP server: machines with a hardware record and a
    /// reserved address get it (and boot info); everyone else gets nothing.
    /// There is no pool, so Bellows never hands out an address nobody
    /// reserved.
    #[default]
    Reservation,
    /// The site's DHCP server does the addressing (seed 003); Bellows
    /// answers only network-boot clients, with boot info and no address
    /// (ProxyDHCP, also on the PXE boot-server port 4011).
    Proxy,
    /// No DHCP at all (the operator's server hands out boot info itself).
    Off,
}

/// Why a mode name is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a DHCP mode: use reservation, proxy or off")]
pub struct ModeParseError(String);

impl FromStr for Mode {
    type Err = ModeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "reservation" => Ok(Mode::Reservation),
            "proxy" => Ok(Mode::Proxy),
            "off" | "none" | "disabled" => Ok(Mode::Off),
            _ => Err(ModeParseError(s.chars().take(64).collect())),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Reservation => "reservation",
            Mode::Proxy => "proxy",
            Mode::Off => "off",
        })
    }
}

/// iPXE binary names by firmware architecture, as the TFTP and HTTP
/// services publish them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpxeBinaries {
    /// Legacy BIOS PXE (option 93 = 0).
    pub bios: String,
    /// x86-64 UEFI (option 93 = 7 or 9; 16 over HTTP). `snponly.efi` by
    /// default: it drives the NIC through the firmware's own network
    /// protocol (which just PXE-booted it) and hands control back cleanly
    /// when a script exits. Debian's `ipxe.efi`, with its own NIC drivers,
    /// never returns to OVMF after `exit` (tested in QEMU), so the firmware
    /// could not go on to the installed disk.
    pub efi_x64: String,
    /// 32-bit x86 UEFI (6; 15 over HTTP), when that binary is available.
    pub efi_ia32: Option<String>,
    /// arm64 UEFI (11; 19 over HTTP), when that binary is available.
    pub efi_arm64: Option<String>,
}

impl Default for IpxeBinaries {
    fn default() -> Self {
        IpxeBinaries {
            bios: "undionly.kpxe".to_string(),
            efi_x64: "snponly.efi".to_string(),
            efi_ia32: None,
            efi_arm64: None,
        }
    }
}

/// Everything the pure responder needs to know about this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// Reservation (default), proxy or off.
    pub mode: Mode,
    /// Address clients should see as the server: server identifier (54),
    /// and the default host of TFTP and HTTP boot URLs. `None`: the address
    /// of the interface the request arrived on.
    pub public_ip: Option<Ipv4Addr>,
    /// TFTP server for `siaddr`/next-server. `None`: the server identifier.
    pub tftp_server: Option<Ipv4Addr>,
    /// Base of the HTTP boot service, e.g. `http://10.0.0.1:8080`, without
    /// a trailing slash. `None`: `http://<server id>:<http_port>`.
    pub http_base_url: Option<String>,
    /// Port of the HTTP boot service when `http_base_url` is not set.
    pub http_port: u16,
    /// iPXE binary names.
    pub ipxe_binaries: IpxeBinaries,
    /// Lease time for records that set none.
    pub default_lease_time: Duration,
    /// Domain name (option 15), if the site has one.
    pub domain_name: Option<String>,
    /// Syslog receiver (option 7), e.g. Bellows' own.
    pub syslog_server: Option<Ipv4Addr>,
    /// Upper bound on a reply datagram (IP + UDP + DHCP), whatever option
    /// 57 allows; replies are never above 576 unless the client asks.
    pub max_datagram_len: u16,
    /// Port clients listen on (68). Configurable for tests and benches.
    pub client_port: u16,
    /// Port relays listen on (67).
    pub relay_port: u16,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        DhcpConfig {
            mode: Mode::Reservation,
            public_ip: None,
            tftp_server: None,
            http_base_url: None,
            http_port: 8080,
            ipxe_binaries: IpxeBinaries::default(),
            default_lease_time: Duration::from_secs(86_400),
            domain_name: None,
            syslog_server: None,
            max_datagram_len: 1500,
            client_port: 68,
            relay_port: 67,
        }
    }
}

/// A configuration value that would produce broken replies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A boot file name clients could not use.
    #[error(
        "boot file {0:?} must be 1-100 characters of letters, digits, '.', '-' and '_' (a file name, not a path)"
    )]
    BootFileName(String),
    /// HTTP base URL is not `http(s)://…` or would not fit a reply.
    #[error(
        "http_base_url {0:?} must start with http:// or https://, have no trailing slash, no spaces, and be under 80 characters"
    )]
    HttpBaseUrl(String),
    /// Domain name too long or with characters DNS does not allow.
    #[error("domain_name {0:?} is not a valid domain name")]
    DomainName(String),
    /// Lease time that does not fit DHCP's 32-bit seconds or is zero.
    #[error("default_lease_time must be between 1 s and 136 years")]
    LeaseTime,
    /// `max_datagram_len` below the 576 every client accepts.
    #[error("max_datagram_len {0} is below the 576 bytes DHCP requires")]
    MaxDatagramLen(u16),
}

/// A file name safe in TFTP requests, HTTP paths and the `file` field.
pub(crate) fn valid_boot_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

impl DhcpConfig {
    /// Checks values that parse but would make replies clients cannot use;
    /// the binary calls this at start-up so mistakes surface there.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let files = &self.ipxe_binaries;
        for name in [
            Some(&files.bios),
            Some(&files.efi_x64),
            files.efi_ia32.as_ref(),
            files.efi_arm64.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !valid_boot_file_name(name) {
                return Err(ConfigError::BootFileName(name.clone()));
            }
        }
        if let Some(url) = &self.http_base_url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok
                || url.ends_with('/')
                || url.len() >= 80
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::HttpBaseUrl(url.clone()));
            }
        }
        if let Some(domain) = &self.domain_name {
            let ok = !domain.is_empty()
                && domain.len() <= 253
                && domain.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err(ConfigError::DomainName(domain.clone()));
            }
        }
        let secs = self.default_lease_time.as_secs();
        if secs == 0 || secs >= u64::from(u32::MAX) {
            return Err(ConfigError::LeaseTime);
        }
        if usize::from(self.max_datagram_len) < crate::wire::MIN_DATAGRAM_LEN {
            return Err(ConfigError::MaxDatagramLen(self.max_datagram_len));
        }
        Ok(())
    }
}

/// Where the socket loop listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// Address to bind; `0.0.0.0` is needed to receive broadcasts.
    pub address: Ipv4Addr,
    /// DHCP server port (67).
    pub port: u16,
    /// PXE boot-server port (4011), bound in proxy mode only.
    pub pxe_port: u16,
    /// Bind to this interface only (SO_BINDTODEVICE), e.g. the
    /// provisioning bridge, so Bellows never answers on other networks.
    pub interface: Option<String>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            address: Ipv4Addr::UNSPECIFIED,
            port: 67,
            pxe_port: 4011,
            interface: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in [Mode::Reservation, Mode::Proxy, Mode::Off] {
            assert_eq!(m.to_string().parse::<Mode>(), Ok(m));
        }
        assert!("pool".parse::<Mode>().is_err());
    }

    #[test]
    fn validation_names_the_bad_value() {
        assert_eq!(DhcpConfig::default().validate(), Ok(()));
        let mut cfg = DhcpConfig::default();
        cfg.ipxe_binaries.efi_ia32 = Some("../etc/passwd".into());
        assert!(
            matches!(cfg.validate(), Err(ConfigError::BootFileName(n)) if n.contains("passwd"))
        );
        let cfg = DhcpConfig {
            http_base_url: Some("ftp://x".into()),
            ..DhcpConfig::default()
        };
        assert!(matches!(cfg.validate(), Err(ConfigError::HttpBaseUrl(_))));
        let cfg = DhcpConfig {
            max_datagram_len: 500,
            ..DhcpConfig::default()
        };
        assert_eq!(cfg.validate(), Err(ConfigError::MaxDatagramLen(500)));
        let cfg = DhcpConfig {
            domain_name: Some("bad domain".into()),
            ..DhcpConfig::default()
        };
        assert!(matches!(cfg.validate(), Err(ConfigError::DomainName(_))));
    }
}
