//! The network-boot services a machine meets first (DHCP, TFTP, syslog)
//! and what they hand out: each builder binds its socket, or, when a
//! default port needs root, warns and leaves the service off; a port the
//! operator asked for that cannot be bound is an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bellows_ipxe::InstallOs;
use bellows_model::boot::{DEFAULT_CONSOLES, KernelArgs};
use bellows_model::timeline::Step;
use bellows_syslog::SyslogServer;
use bellows_tftp::{DirectorySource, TftpConfig, TftpServer, TransferOutcome};

use super::args::{DhcpMode, Listen};
use super::config::ServerConfig;
use super::ports::StorePorts;
use crate::error::CliError;

/// Where machines find this server's boot services, as the DHCP options,
/// the kernel command line and `GET /api/v1/boot` tell them.
pub struct Published {
    /// `http://public-ip:port` of the HTTP boot listener.
    pub http_base: String,
    /// The worker service's base URL: the boot listener, `https://` when
    /// TLS is on (`bellows.api=`).
    pub worker_url: String,
    /// Hex SHA-256 of the CA workers pin (`bellows.ca=`), when TLS is on.
    pub ca_pin: Option<String>,
    /// The TFTP server's bound address, when TFTP is on.
    pub tftp: Option<SocketAddr>,
    /// `host` or `host:port` of the syslog receiver, when it is on.
    pub syslog: Option<String>,
}

/// Binds the syslog receiver unless it is off.
pub async fn start_syslog(
    cfg: &ServerConfig,
    sink: Arc<StorePorts>,
) -> Result<Option<SyslogServer>, CliError> {
    let Listen::At(addr) = cfg.syslog_listen else {
        return Ok(None);
    };
    match SyslogServer::bind(addr, sink).await {
        Ok(s) => {
            let local = s
                .local_addr()
                .map_err(|e| CliError::Server(format!("syslog socket has no address: {e}")))?;
            tracing::info!("syslog receiver listening on udp://{local}");
            Ok(Some(s))
        }
        Err(e) if !cfg.explicit.syslog => {
            tracing::warn!(
                "syslog receiver off: cannot bind {addr}: {e} (port 514 needs root; set --syslog-listen)"
            );
            Ok(None)
        }
        Err(e) => Err(CliError::Server(format!(
            "cannot bind syslog on {addr}: {e}"
        ))),
    }
}

/// Binds the TFTP server for the iPXE binaries unless it is off.
pub async fn start_tftp(
    cfg: &ServerConfig,
    ipxe_dir: &Path,
    ports: Arc<StorePorts>,
) -> Result<Option<TftpServer>, CliError> {
    let Listen::At(listen) = cfg.tftp_listen else {
        return Ok(None);
    };
    let bound = match DirectorySource::new(ipxe_dir) {
        Ok(source) => {
            let config = TftpConfig {
                listen,
                max_transfers_per_client: cfg.tftp_transfers_per_client,
                ..TftpConfig::default()
            };
            TftpServer::bind(config, Arc::new(source))
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("cannot serve {}: {e}", ipxe_dir.display())),
    };
    match bound {
        Ok(server) => {
            let server = server.with_transfer_hook(move |record| {
                // The TFTP server logs each transfer at `info` itself.
                tracing::debug!(
                    peer = %record.peer,
                    file = %record.requested,
                    outcome = ?record.outcome,
                    bytes = record.bytes_sent,
                    "TFTP transfer ended"
                );
                // A size probe (UEFI asks the size, then downloads) is not
                // a step of the boot.
                if !matches!(record.outcome, TransferOutcome::OptionsDeclined { .. }) {
                    let began = bellows_store::now_ms()
                        .saturating_sub(i64::try_from(record.duration.as_millis()).unwrap_or(0));
                    ports.record_by_ip(record.peer.ip(), began, Step::Tftp, || {
                        let outcome = match &record.outcome {
                            TransferOutcome::Completed { bytes } => format!("{bytes} bytes"),
                            other => format!("{other:?}"),
                        };
                        format!(
                            "{}: {outcome} in {} ms",
                            record.requested,
                            record.duration.as_millis()
                        )
                    });
                }
            });
            tracing::info!("TFTP server listening on udp://{}", server.local_addr());
            Ok(Some(server))
        }
        Err(e) if !cfg.explicit.tftp => {
            tracing::warn!(
                "TFTP off: cannot bind {listen}: {e} (port 69 needs root; set --tftp-listen)"
            );
            Ok(None)
        }
        Err(e) => Err(CliError::Server(format!(
            "cannot start TFTP on {listen}: {e}"
        ))),
    }
}

/// The syslog receiver as machines must name it: bare host on port 514
/// (what DHCP option 7 and most senders assume), else `host:port`.
pub fn syslog_host(cfg: &ServerConfig, syslog: Option<&SyslogServer>) -> Option<String> {
    match syslog.and_then(|s| s.local_addr().ok()) {
        Some(a) if a.port() == 514 => Some(cfg.public_ip.to_string()),
        Some(a) => Some(SocketAddr::new(cfg.public_ip, a.port()).to_string()),
        None => None,
    }
}

/// The in-memory OS every installing machine boots: its files (local ones
/// under `/osie/` on the HTTP boot listener) and the kernel command line
/// that tells the worker where the server is: the boot listener
/// (`published.http_base`), never the management API.
pub fn install_os(cfg: &ServerConfig, published: &Published) -> InstallOs {
    let file_url = |name: &str| {
        if name.starts_with("http://") || name.starts_with("https://") {
            name.to_string()
        } else {
            format!("{}/osie/{name}", published.http_base)
        }
    };
    InstallOs {
        kernel_url: file_url(&cfg.osie_kernel),
        initrd_url: file_url(&cfg.osie_initrd),
        // The operator's --kernel-args come last: a console= there becomes
        // /dev/console, a bellows.vlan= is the default for records without
        // a VLAN of their own.
        cmdline: format!(
            "{} {}",
            KernelArgs {
                // This server first, then the replicas sharing its store.
                api: Some(
                    std::iter::once(published.worker_url.as_str())
                        .chain(cfg.peers.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                syslog: published.syslog.clone(),
                ca: published.ca_pin.clone(),
                consoles: DEFAULT_CONSOLES.iter().map(|c| c.to_string()).collect(),
                ..KernelArgs::default()
            }
            .to_cmdline(),
            cfg.kernel_args
        ),
        attempts: 3,
    }
}

/// Says which boot files are missing, and what a machine will do instead,
/// before the first machine finds out the hard way.
pub fn warn_missing_files(cfg: &ServerConfig, ipxe_dir: &Path) {
    if !cfg.osie_kernel.starts_with("http") && !cfg.osie_dir.join(&cfg.osie_kernel).is_file() {
        tracing::warn!(
            "no in-memory OS kernel at {}: machines with workflows will fall back to local boot",
            cfg.osie_dir.join(&cfg.osie_kernel).display()
        );
    }
    if cfg.local_boot == bellows_ipxe::LocalBoot::Refind
        && !cfg.refind_dir.join("refind_x64.efi").is_file()
        && !cfg.refind_dir.join("refind_aa64.efi").is_file()
    {
        tracing::warn!(
            "--local-boot refind: no rEFInd binaries in {} (install Debian's refind package, or set --refind-dir); UEFI machines will exit to their firmware's next boot option",
            cfg.refind_dir.display()
        );
    }
    if !ipxe_dir.join("undionly.kpxe").is_file() || !ipxe_dir.join("snponly.efi").is_file() {
        tracing::warn!(
            "iPXE binaries missing in {} (undionly.kpxe for BIOS, snponly.efi for UEFI): install Debian's ipxe package, or set --ipxe-dir",
            ipxe_dir.display()
        );
    }
}

/// Binaries copied from Debian's `ipxe` package when no --ipxe-dir is given.
const DEBIAN_IPXE_FILES: &[&str] = &[
    "undionly.kpxe",
    "undionly.kkpxe",
    "ipxe.efi",
    "snponly.efi",
    "ipxe.pxe",
    "ipxe.lkrn",
];

/// The directory TFTP and HTTP serve iPXE binaries from. Debian installs
/// some of them as symlinks out of /usr/lib/ipxe (`ipxe.efi ->
/// /boot/ipxe.efi`), which the servers rightly refuse to follow, so by
/// default the files are copied into DATA_DIR/ipxe. A directory the
/// operator names is served as it is.
pub fn prepare_ipxe_dir(cfg: &ServerConfig) -> PathBuf {
    if cfg.explicit.ipxe_dir {
        return cfg.ipxe_dir.clone();
    }
    let dst = cfg.data_dir.join("ipxe");
    if let Err(e) = std::fs::create_dir_all(&dst) {
        tracing::warn!(
            "cannot create {}: {e}; serving {} directly",
            dst.display(),
            cfg.ipxe_dir.display()
        );
        return cfg.ipxe_dir.clone();
    }
    let mut copied = 0;
    for name in DEBIAN_IPXE_FILES {
        let src = cfg.ipxe_dir.join(name);
        let Ok(meta) = std::fs::metadata(&src) else {
            continue;
        };
        let target = dst.join(name);
        let current = std::fs::metadata(&target).ok();
        if current
            .is_some_and(|c| c.len() == meta.len() && c.modified().ok() >= meta.modified().ok())
        {
            continue;
        }
        match std::fs::copy(&src, &target) {
            Ok(_) => copied += 1,
            Err(e) => tracing::warn!("cannot copy {}: {e}", src.display()),
        }
    }
    if copied > 0 {
        tracing::info!(
            "copied {copied} iPXE binaries from {} to {}",
            cfg.ipxe_dir.display(),
            dst.display()
        );
    }
    dst
}

/// Binds the DHCP server unless it is off. A default that cannot bind
/// (port 67 needs root) is a warning; an explicit request is an error.
pub fn start_dhcp(
    cfg: &ServerConfig,
    lookup: Arc<StorePorts>,
    published: &Published,
) -> Result<Option<bellows_dhcp::DhcpServer>, CliError> {
    let mode = match cfg.dhcp_mode {
        DhcpMode::Off => return Ok(None),
        DhcpMode::Reservation => bellows_dhcp::Mode::Reservation,
        DhcpMode::Proxy => bellows_dhcp::Mode::Proxy,
    };
    let public_v4 = match cfg.public_ip {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(_) => None,
    };
    let std::net::IpAddr::V4(address) = cfg.dhcp_listen.ip() else {
        return Err(CliError::Usage(format!(
            "--dhcp-listen {} is not IPv4; DHCPv4 needs an IPv4 address",
            cfg.dhcp_listen
        )));
    };
    let dhcp_cfg = bellows_dhcp::DhcpConfig {
        mode,
        public_ip: public_v4,
        tftp_server: if published.tftp.is_some() {
            public_v4
        } else {
            None
        },
        http_base_url: Some(published.http_base.clone()),
        // Option 7 carries an address only, so only a receiver on 514.
        syslog_server: published.syslog.as_deref().and_then(|h| h.parse().ok()),
        ..bellows_dhcp::DhcpConfig::default()
    };
    let listen = bellows_dhcp::ListenConfig {
        address,
        port: cfg.dhcp_listen.port(),
        interface: cfg.interface.clone(),
        ..bellows_dhcp::ListenConfig::default()
    };
    match bellows_dhcp::DhcpServer::bind(&listen, dhcp_cfg, lookup) {
        Ok(server) => {
            tracing::info!(
                mode = ?cfg.dhcp_mode,
                interface = cfg.interface.as_deref().unwrap_or("any"),
                "DHCP server listening on udp://{}",
                cfg.dhcp_listen
            );
            Ok(Some(server))
        }
        Err(e) if !cfg.explicit.dhcp => {
            tracing::warn!(
                "DHCP off: cannot start on {}: {e} (port 67 needs root; set --dhcp-mode and --dhcp-listen)",
                cfg.dhcp_listen
            );
            Ok(None)
        }
        Err(e) => Err(CliError::Server(format!(
            "cannot start DHCP on {}: {e}",
            cfg.dhcp_listen
        ))),
    }
}
