//! `bellows server` configuration: defaults, TOML file, environment, flags.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use bellows_api::HttpLimits;
use bellows_ipxe::LocalBoot;
use bellows_metadata::Cidr;

use super::args::{DEFAULT_HTTP_LISTEN, DEFAULT_LISTEN, DhcpMode, Listen, LogFormat, ServerArgs};

/// The resolved server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// The database: the embedded one in `data_dir`, or PostgreSQL.
    pub store: StoreLocation,
    /// Worker URLs of the other servers sharing the store.
    pub peers: Vec<String>,
    /// The key BMC passwords are sealed with.
    pub secret_key_file: PathBuf,
    /// API address.
    pub listen: SocketAddr,
    /// HTTP boot service address.
    pub http_listen: SocketAddr,
    /// Extra metadata-only addresses.
    pub metadata_listen: Vec<SocketAddr>,
    /// Trusted proxies for X-Forwarded-For.
    pub trusted_proxies: Vec<Cidr>,
    /// Provisioning interface, if named.
    pub interface: Option<String>,
    /// Address machines reach Bellows at.
    pub public_ip: IpAddr,
    /// DHCP mode.
    pub dhcp_mode: DhcpMode,
    /// DHCP address.
    pub dhcp_listen: SocketAddr,
    /// Send IPv6 router advertisements on the interface.
    pub ipv6_ra: bool,
    /// TFTP address or off.
    pub tftp_listen: Listen,
    /// Syslog address or off.
    pub syslog_listen: Listen,
    /// TFTP transfers one client address may run at once.
    pub tftp_transfers_per_client: usize,
    /// Which services the operator configured explicitly (a failure to
    /// bind them is fatal; a default that cannot bind is only a warning).
    pub explicit: Explicit,
    /// iPXE binaries.
    pub ipxe_dir: PathBuf,
    /// In-memory OS files.
    pub osie_dir: PathBuf,
    /// Kernel file name or URL.
    pub osie_kernel: String,
    /// Initrd file name or URL.
    pub osie_initrd: String,
    /// Extra kernel command line.
    pub kernel_args: String,
    /// Local boot mode.
    pub local_boot: LocalBoot,
    /// rEFInd binaries and optional refind.conf.
    pub refind_dir: PathBuf,
    /// Serve per-machine scripts to any address, not only reserved ones.
    pub allow_script_from_any_address: bool,
    /// Discovery, when on.
    pub discovery: Option<DiscoveryConfig>,
    /// Log filter.
    pub log: String,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Grace past an action's timeout before the server expires it.
    pub action_grace: std::time::Duration,
    /// Keep-alive (and unstarted-assignment resend) interval of worker streams.
    pub worker_keepalive: std::time::Duration,
    /// No tokens, no worker credentials, no TLS (`--insecure`).
    pub insecure: bool,
    /// Registry logins for the workers (`--registry-auth`).
    pub registry_logins: Vec<bellows_model::registry::RegistryLogin>,
    /// Where the TLS certificate comes from (unused with `insecure`).
    pub tls: TlsSource,
    /// Limits of the boot and metadata HTTP listeners.
    pub http_limits: HttpLimits,
    /// Limits of the API listener (its own connection limits, the same
    /// timeouts as the boot listener).
    pub api_limits: HttpLimits,
}

/// Which database the server keeps its state in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// SQLite in the data directory.
    Sqlite,
    /// A PostgreSQL database, perhaps shared with other servers.
    Postgres {
        /// Its URL (with any password: never log it as it is).
        url: String,
        /// Pool size and timeouts.
        pool: bellows_store::PoolSettings,
    },
}

/// The certificate the API and the worker's gRPC present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// The server's own CA in `DATA_DIR/tls/`, made on first start, signs
    /// a certificate for these extra names (and the addresses it finds)
    /// at every start.
    OwnCa {
        /// `--tls-name` values.
        extra_names: Vec<String>,
    },
    /// The operator's chain and key (`--tls-cert`, `--tls-key`).
    Given {
        /// PEM chain, leaf first.
        cert: PathBuf,
        /// PEM private key.
        key: PathBuf,
    },
}

/// Boot services the operator asked for by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Explicit {
    /// DHCP mode or address given.
    pub dhcp: bool,
    /// TFTP address given.
    pub tftp: bool,
    /// Syslog address given.
    pub syslog: bool,
    /// iPXE directory given (served as it is; otherwise Debian's files are
    /// copied into the data directory first).
    pub ipxe_dir: bool,
}

/// Why the configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// A value is malformed.
    #[error("{0}")]
    Value(String),
    /// The file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// Parser message, naming the key.
        message: String,
    },
}

/// File name of the secret key inside the data directory, by default.
pub const DEFAULT_SECRET_KEY_FILE: &str = "secret.key";

/// Where Debian's `ipxe` package puts the binaries.
pub const DEBIAN_IPXE_DIR: &str = "/usr/lib/ipxe";

/// Where Debian's `refind` package puts rEFInd's binaries.
pub const DEBIAN_REFIND_DIR: &str = "/usr/share/refind/refind";

fn default_addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| unreachable!("default address {s} parses: {e}"))
}

/// Flags and environment (already merged by clap) over the file over defaults.
pub fn resolve(args: &ServerArgs) -> Result<ServerConfig, ConfigError> {
    let file = match &args.config {
        Some(path) => load(path)?,
        None => ServerArgs::default(),
    };
    // Field by field: the flag (or its env var) wins over the file.
    macro_rules! pick {
        ($field:ident) => {
            args.$field.clone().or(file.$field.clone())
        };
    }
    let data_dir = pick!(data_dir).unwrap_or_else(|| PathBuf::from("bellows-data"));
    let peers: Vec<String> = pick!(peers)
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.trim().trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if let Some(bad) = peers.iter().find(|p| {
        !(p.starts_with("https://") || p.starts_with("http://")) || p.contains([',', ' ', '$'])
    }) {
        return Err(ConfigError::Value(format!(
            "peers: {bad:?} is not a worker URL (https://HOST:PORT)"
        )));
    }
    let store = match pick!(store).as_deref().map(str::trim) {
        None | Some("" | "sqlite") => StoreLocation::Sqlite,
        Some(url)
            if bellows_store::STORE_URL_SCHEMES
                .iter()
                .any(|s| url.starts_with(s)) =>
        {
            let defaults = bellows_store::PoolSettings::default();
            let secs = std::time::Duration::from_secs;
            StoreLocation::Postgres {
                url: url.to_string(),
                pool: bellows_store::PoolSettings {
                    max_connections: pick!(store_max_connections)
                        .unwrap_or(defaults.max_connections),
                    acquire_timeout: pick!(store_acquire_timeout)
                        .map_or(defaults.acquire_timeout, secs),
                    statement_timeout: pick!(store_statement_timeout)
                        .map_or(defaults.statement_timeout, secs),
                },
            }
        }
        Some(other) => {
            let shown = other.split_once("://").map_or(other, |(scheme, _)| scheme);
            return Err(ConfigError::Value(format!(
                "store: {shown:?} is neither \"sqlite\" nor a PostgreSQL URL \
                 (postgres://user:password@host/database)"
            )));
        }
    };
    let http_listen = pick!(http_listen).unwrap_or_else(|| default_addr(DEFAULT_HTTP_LISTEN));
    let interface = pick!(interface);
    let trusted_proxies = pick!(trusted_proxies)
        .unwrap_or_default()
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.parse::<Cidr>()
                .map_err(|e| ConfigError::Value(format!("trusted_proxies: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let public_ip = match pick!(public_ip) {
        Some(ip) => ip,
        None => detect_public_ip(interface.as_deref(), http_listen.ip())?,
    };
    let local_boot = match pick!(local_boot) {
        Some(s) => s
            .parse::<LocalBoot>()
            .map_err(|e| ConfigError::Value(format!("local_boot: {e}")))?,
        None => LocalBoot::Exit,
    };
    let secs = std::time::Duration::from_secs;
    let mut http_limits = HttpLimits::BOOT;
    if let Some(s) = pick!(http_header_timeout) {
        http_limits.header_read_timeout = secs(s);
    }
    if let Some(s) = pick!(http_body_timeout) {
        http_limits.body_read_timeout = secs(s);
    }
    let api_limits = HttpLimits {
        header_read_timeout: http_limits.header_read_timeout,
        body_read_timeout: http_limits.body_read_timeout,
        ..HttpLimits::API
    };
    if let Some(n) = pick!(http_max_connections) {
        http_limits.max_connections = n;
    }
    if let Some(n) = pick!(http_max_connections_per_ip) {
        http_limits.max_connections_per_ip = n;
    }
    if http_limits.header_read_timeout.is_zero() || http_limits.body_read_timeout.is_zero() {
        return Err(ConfigError::Value(
            "http_header_timeout, http_body_timeout: must be at least 1 second".into(),
        ));
    }
    let explicit = Explicit {
        dhcp: pick!(dhcp_mode).is_some() || pick!(dhcp_listen).is_some(),
        tftp: pick!(tftp_listen).is_some(),
        syslog: pick!(syslog_listen).is_some(),
        ipxe_dir: pick!(ipxe_dir).is_some(),
    };
    Ok(ServerConfig {
        osie_dir: pick!(osie_dir).unwrap_or_else(|| data_dir.join("osie")),
        secret_key_file: pick!(secret_key_file)
            .unwrap_or_else(|| data_dir.join(DEFAULT_SECRET_KEY_FILE)),
        interface: interface.clone(),
        data_dir,
        store,
        peers,
        listen: pick!(listen).unwrap_or_else(|| default_addr(DEFAULT_LISTEN)),
        http_listen,
        metadata_listen: pick!(metadata_listen).unwrap_or_default(),
        trusted_proxies,
        public_ip,
        ipv6_ra: pick!(ipv6_ra).unwrap_or(
            interface.is_some()
                && pick!(dhcp_mode).unwrap_or(DhcpMode::Reservation) == DhcpMode::Reservation,
        ),
        dhcp_mode: pick!(dhcp_mode).unwrap_or(DhcpMode::Reservation),
        dhcp_listen: pick!(dhcp_listen).unwrap_or_else(|| default_addr("0.0.0.0:67")),
        tftp_listen: pick!(tftp_listen).unwrap_or(Listen::At(default_addr("0.0.0.0:69"))),
        syslog_listen: pick!(syslog_listen).unwrap_or(Listen::At(default_addr("0.0.0.0:514"))),
        tftp_transfers_per_client: match pick!(tftp_transfers_per_client) {
            Some(n @ 1..=1024) => n as usize,
            Some(_) => {
                return Err(ConfigError::Value(
                    "tftp_transfers_per_client: must be 1 to 1024".into(),
                ));
            }
            None => bellows_tftp::DEFAULT_MAX_TRANSFERS_PER_CLIENT,
        },
        explicit,
        ipxe_dir: pick!(ipxe_dir).unwrap_or_else(|| PathBuf::from(DEBIAN_IPXE_DIR)),
        osie_kernel: pick!(osie_kernel).unwrap_or_else(|| "vmlinuz".into()),
        osie_initrd: pick!(osie_initrd).unwrap_or_else(|| "initramfs".into()),
        kernel_args: pick!(kernel_args).unwrap_or_default(),
        local_boot,
        refind_dir: pick!(refind_dir).unwrap_or_else(|| PathBuf::from(DEBIAN_REFIND_DIR)),
        allow_script_from_any_address: pick!(allow_script_from_any_address).unwrap_or(false),
        discovery: discovery_config(args, &file)?,
        log: pick!(log).unwrap_or_else(|| "info".to_string()),
        log_format: pick!(log_format).unwrap_or(LogFormat::Text),
        action_grace: std::time::Duration::from_secs(pick!(action_grace).unwrap_or(60)),
        worker_keepalive: std::time::Duration::from_secs(match pick!(worker_keepalive) {
            Some(0) => {
                return Err(ConfigError::Value(
                    "worker_keepalive: must be at least 1 second".into(),
                ));
            }
            Some(s) => s,
            None => 25,
        }),
        insecure: pick!(insecure).unwrap_or(false),
        registry_logins: match pick!(registry_auth) {
            None => Vec::new(),
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::Value(format!("registry_auth: {}: {e}", path.display()))
                })?;
                bellows_model::registry::parse_docker_config(&text).map_err(|e| {
                    ConfigError::Value(format!("registry_auth: {}: {e}", path.display()))
                })?
            }
        },
        tls: match (pick!(tls_cert), pick!(tls_key)) {
            (Some(cert), Some(key)) => TlsSource::Given { cert, key },
            (None, None) => TlsSource::OwnCa {
                extra_names: pick!(tls_name)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect(),
            },
            _ => {
                return Err(ConfigError::Value(
                    "tls_cert, tls_key: give both or neither".into(),
                ));
            }
        },
        http_limits,
        api_limits,
    })
}

/// The address to put in boot URLs when none is given: the interface's
/// first IPv4, else the HTTP listener's address if specific, else the first
/// non-loopback IPv4 on the machine.
fn detect_public_ip(interface: Option<&str>, http_ip: IpAddr) -> Result<IpAddr, ConfigError> {
    let addrs: Vec<(String, Ipv4Addr)> = nix::ifaddrs::getifaddrs()
        .map(|it| {
            it.filter_map(|a| {
                let v4 = a.address?.as_sockaddr_in()?.ip();
                Some((a.interface_name, v4))
            })
            .collect()
        })
        .unwrap_or_default();
    if let Some(name) = interface {
        return addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ip)| IpAddr::V4(*ip))
            .ok_or_else(|| {
                ConfigError::Value(format!(
                    "interface {name:?} has no IPv4 address; give --public-ip"
                ))
            });
    }
    if !http_ip.is_unspecified() {
        return Ok(http_ip);
    }
    Ok(addrs
        .iter()
        .map(|(_, ip)| *ip)
        .find(|ip| !ip.is_loopback())
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4))
}

fn load(path: &Path) -> Result<ServerArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_sqlite_unless_a_postgres_url_is_given() {
        let cfg = resolve(&ServerArgs::default()).unwrap();
        assert_eq!(cfg.store, StoreLocation::Sqlite);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            "store = \"postgres://bellows:pw@db.example/bellows\"\nstore_max_connections = 40\n",
        )
        .unwrap();
        let mut args = ServerArgs {
            config: Some(path),
            store_acquire_timeout: Some(2),
            ..Default::default()
        };
        let StoreLocation::Postgres { url, pool } = resolve(&args).unwrap().store else {
            panic!("not postgres");
        };
        assert_eq!(url, "postgres://bellows:pw@db.example/bellows");
        assert_eq!(pool.max_connections, 40);
        assert_eq!(pool.acquire_timeout, std::time::Duration::from_secs(2));
        assert_eq!(pool.statement_timeout, std::time::Duration::from_secs(30));
        args.store = Some("mysql://root:hunter2@db/bellows".into());
        let e = resolve(&args).unwrap_err().to_string();
        assert!(e.contains("\"mysql\"") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn defaults_then_file_then_flags() {
        let cfg = resolve(&ServerArgs::default()).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("bellows-data"));
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.dhcp_mode, DhcpMode::Reservation);
        assert_eq!(cfg.osie_dir, PathBuf::from("bellows-data/osie"));
        assert_eq!(
            cfg.secret_key_file,
            PathBuf::from("bellows-data/secret.key")
        );
        assert_eq!(cfg.explicit, Explicit::default());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            "data_dir = \"/srv/bellows\"\nlisten = \"0.0.0.0:9000\"\ndhcp_mode = \"proxy\"\ntftp_listen = \"off\"\npublic_ip = \"10.1.0.1\"\nlocal_boot = \"sanboot\"\n",
        )
        .unwrap();
        let mut args = ServerArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let cfg = resolve(&args).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/bellows"));
        assert_eq!(
            cfg.secret_key_file,
            PathBuf::from("/srv/bellows/secret.key")
        );
        assert_eq!(cfg.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(cfg.dhcp_mode, DhcpMode::Proxy);
        assert_eq!(cfg.tftp_listen, Listen::Off);
        assert_eq!(cfg.public_ip.to_string(), "10.1.0.1");
        assert_eq!(cfg.local_boot, LocalBoot::Sanboot);
        assert!(cfg.explicit.dhcp && cfg.explicit.tftp && !cfg.explicit.syslog);

        args.listen = Some("127.0.0.1:1".parse().unwrap());
        assert_eq!(resolve(&args).unwrap().listen.to_string(), "127.0.0.1:1");

        args.trusted_proxies = Some(vec!["10.0.0.0/33".into()]);
        let e = resolve(&args).unwrap_err().to_string();
        assert!(
            e.contains("trusted_proxies") && e.contains("10.0.0.0/33"),
            "{e}"
        );
        args.trusted_proxies = None;

        std::fs::write(
            &path,
            "data_dir = \"/srv/b\"\nsecret_key_file = \"/etc/bellows/key\"\n",
        )
        .unwrap();
        assert_eq!(
            resolve(&args).unwrap().secret_key_file,
            PathBuf::from("/etc/bellows/key")
        );

        std::fs::write(&path, "data-dir = \"x\"\n").unwrap();
        let e = resolve(&args).unwrap_err().to_string();
        assert!(e.contains("data-dir"), "{e}");
        std::fs::write(&path, "tftp_listen = \"nowhere\"\n").unwrap();
        let e = resolve(&args).unwrap_err().to_string();
        assert!(e.contains("nowhere"), "{e}");
        std::fs::write(&path, "worker_keepalive = 0\n").unwrap();
        let e = resolve(&args).unwrap_err().to_string();
        assert!(e.contains("worker_keepalive"), "{e}");
        std::fs::write(&path, "worker_keepalive = 5\n").unwrap();
        assert_eq!(resolve(&args).unwrap().worker_keepalive.as_secs(), 5);

        // The boot-network bounds: defaults, then the file.
        let cfg = resolve(&args).unwrap();
        assert_eq!(cfg.tftp_transfers_per_client, 8);
        assert!(!cfg.allow_script_from_any_address);
        std::fs::write(
            &path,
            "tftp_transfers_per_client = 50\nallow_script_from_any_address = true\n",
        )
        .unwrap();
        let cfg = resolve(&args).unwrap();
        assert_eq!(cfg.tftp_transfers_per_client, 50);
        assert!(cfg.allow_script_from_any_address);
        std::fs::write(&path, "tftp_transfers_per_client = 0\n").unwrap();
        let e = resolve(&args).unwrap_err().to_string();
        assert!(e.contains("tftp_transfers_per_client"), "{e}");
    }

    #[test]
    fn http_limits_default_and_override() {
        let cfg = resolve(&ServerArgs::default()).unwrap();
        assert_eq!(cfg.http_limits, HttpLimits::BOOT);
        assert_eq!(cfg.api_limits, HttpLimits::API);
        assert_eq!(cfg.http_limits.header_read_timeout.as_secs(), 10);
        assert_eq!(cfg.http_limits.max_connections, 16_384);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            "http_header_timeout = 3\nhttp_body_timeout = 4\nhttp_max_connections = 2048\nhttp_max_connections_per_ip = 0\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(path),
            ..Default::default()
        };
        let cfg = resolve(&args).unwrap();
        assert_eq!(cfg.http_limits.header_read_timeout.as_secs(), 3);
        assert_eq!(cfg.http_limits.body_read_timeout.as_secs(), 4);
        assert_eq!(cfg.http_limits.max_connections, 2048);
        assert_eq!(cfg.http_limits.max_connections_per_ip, 0);
        // The API keeps its own connection limits, with the same timeouts.
        assert_eq!(cfg.api_limits.header_read_timeout.as_secs(), 3);
        assert_eq!(cfg.api_limits.max_connections, 128);
    }
}

/// Discovery's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Leases for unknown machines (reservation mode).
    pub pool: Option<bellows_model::discovery::Pool>,
    /// Seconds a lease lasts.
    pub lease_secs: u64,
    /// Most machines waiting as discovered.
    pub max_discovered: usize,
    /// Seconds between a waiting machine's reports.
    pub poll_seconds: u32,
}

fn discovery_config(
    args: &ServerArgs,
    file: &ServerArgs,
) -> Result<Option<DiscoveryConfig>, ConfigError> {
    macro_rules! pick {
        ($field:ident) => {
            args.$field.clone().or(file.$field.clone())
        };
    }
    if !pick!(discovery).unwrap_or(false) {
        return Ok(None);
    }
    let pool = match pick!(discovery_pool) {
        Some(text) => {
            let (first, last) = bellows_model::discovery::Pool::parse_range(&text)
                .map_err(|e| ConfigError::Value(format!("discovery_pool: {e}")))?;
            Some(bellows_model::discovery::Pool {
                first,
                last,
                netmask: pick!(discovery_netmask),
                gateway: pick!(discovery_gateway),
                name_servers: Vec::new(),
            })
        }
        None => None,
    };
    let mode = pick!(dhcp_mode).unwrap_or(DhcpMode::Reservation);
    if mode == DhcpMode::Reservation
        && pool.is_none()
        && (pick!(dhcp_mode).is_some() || pick!(dhcp_listen).is_some())
    {
        return Err(ConfigError::Value(
            "discovery in reservation mode needs --discovery-pool FIRST-LAST: the addresses unknown machines get".into(),
        ));
    }
    Ok(Some(DiscoveryConfig {
        pool,
        lease_secs: pick!(discovery_lease).unwrap_or(600).clamp(30, 86_400),
        max_discovered: pick!(discovery_max).unwrap_or(1024).clamp(1, 100_000),
        poll_seconds: pick!(discovery_poll).unwrap_or(10).clamp(1, 300),
    }))
}
