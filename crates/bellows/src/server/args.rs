//! `bellows server`'s settings as flags, environment and TOML file see
//! them (resolved into a `ServerConfig` by `config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Default API address: loopback. Every call needs a token, but the API
/// has no business on the provisioning network: machines use the boot
/// listener only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:42113";

/// Default HTTP boot listener (iPXE scripts, artifacts, metadata). An
/// unprivileged port, so the server starts as any user; boot URLs carry it.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";

/// A listener address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Service disabled.
    Off,
    /// Listen here.
    At(SocketAddr),
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Listen::Off);
        }
        s.parse()
            .map(Listen::At)
            .map_err(|_| format!("{s:?} is not an address (IP:PORT) or \"off\""))
    }
}

/// DHCP behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Answer only machines with a hardware record and a reserved IP.
    Reservation,
    /// ProxyDHCP: boot information only, beside the site's own DHCP.
    Proxy,
    /// No DHCP: the site's DHCP does everything (see `bellows dhcp-config`).
    Off,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event, for people.
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for
    /// log shippers.
    Json,
}

/// `bellows server` options. Precedence: flag, then environment variable,
/// then the TOML file given by --config (same names, with `_`), then the
/// default. Every field is optional so the file and the flags merge.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerArgs {
    /// Directory holding the embedded database [default: ./bellows-data].
    /// Made private to the server's user (0700; database files 0600).
    #[arg(long, env = "BELLOWS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the state lives: `sqlite` (the embedded database in
    /// --data-dir) or a PostgreSQL URL (`postgres://user:password@host/db`,
    /// with `?sslmode=verify-full` and the other libpq parameters) that
    /// several servers share [default: sqlite]. Servers sharing a database
    /// must share the secret key file too.
    #[arg(long, env = "BELLOWS_STORE")]
    pub store: Option<String>,
    /// Worker URLs of the other servers sharing this --store (e.g.
    /// https://10.0.0.3:8080, comma-separated). Booting machines are given
    /// this server's URL and then these, so a worker whose server dies
    /// carries on with the next. All of them must present certificates
    /// from one CA (copy DATA_DIR/tls/ca.* to each before its first start,
    /// or give every one --tls-cert/--tls-key from one CA).
    #[arg(long, env = "BELLOWS_PEERS", value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Most connections to PostgreSQL this server opens [default: 16].
    #[arg(long, env = "BELLOWS_STORE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub store_max_connections: Option<u32>,
    /// Seconds a request waits for a PostgreSQL connection before the API
    /// answers 503 [default: 5].
    #[arg(long, env = "BELLOWS_STORE_ACQUIRE_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..=600))]
    pub store_acquire_timeout: Option<u64>,
    /// Seconds any one PostgreSQL statement may run [default: 30].
    #[arg(long, env = "BELLOWS_STORE_STATEMENT_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub store_statement_timeout: Option<u64>,
    /// File holding the key BMC passwords are encrypted with, created
    /// (mode 0600) on first start; refused if group or others can read it.
    /// Keep it, or a copy, outside the data directory's backups
    /// [default: DATA_DIR/secret.key].
    #[arg(long, env = "BELLOWS_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Address for the API (REST, and the worker gRPC service) [default:
    /// 127.0.0.1:42113].
    /// Use port 0 to pick a free port; the chosen one is logged.
    #[arg(long, env = "BELLOWS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the HTTP boot service: iPXE scripts and binaries, the
    /// in-memory OS, instance metadata, and the worker gRPC service that
    /// booted machines reach [default: 0.0.0.0:8080].
    #[arg(long, env = "BELLOWS_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Extra addresses serving only the metadata service, e.g.
    /// 169.254.169.254:80 for stock cloud images (comma-separated).
    #[arg(long, env = "BELLOWS_METADATA_LISTEN", value_delimiter = ',')]
    pub metadata_listen: Option<Vec<SocketAddr>>,
    /// Proxies whose X-Forwarded-For is believed when identifying a
    /// metadata caller (CIDRs, comma-separated). Nobody by default.
    #[arg(long, env = "BELLOWS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Network interface of the provisioning network. DHCP binds to it,
    /// and --public-ip defaults to its first IPv4 address.
    #[arg(long, env = "BELLOWS_INTERFACE")]
    pub interface: Option<String>,
    /// Address machines reach Bellows at: next-server, script and file
    /// URLs, syslog host [default: the interface's or the HTTP listener's
    /// address].
    #[arg(long, env = "BELLOWS_PUBLIC_IP")]
    pub public_ip: Option<std::net::IpAddr>,
    /// DHCP mode [default: reservation].
    #[arg(long, env = "BELLOWS_DHCP_MODE", value_enum)]
    pub dhcp_mode: Option<DhcpMode>,
    /// Send IPv6 router advertisements (no prefix, not a default router) on
    /// --interface, so iPXE stops waiting ~13 s for one at every stage
    /// [default: true with --interface in reservation mode].
    #[arg(long, env = "BELLOWS_IPV6_RA")]
    pub ipv6_ra: Option<bool>,
    /// DHCP server address [default: 0.0.0.0:67].
    #[arg(long, env = "BELLOWS_DHCP_LISTEN")]
    pub dhcp_listen: Option<SocketAddr>,
    /// TFTP server address, or `off` [default: 0.0.0.0:69].
    #[arg(long, env = "BELLOWS_TFTP_LISTEN")]
    pub tftp_listen: Option<Listen>,
    /// Syslog receiver address, or `off` [default: 0.0.0.0:514].
    #[arg(long, env = "BELLOWS_SYSLOG_LISTEN")]
    pub syslog_listen: Option<Listen>,
    /// TFTP transfers one client address may run at once; more are
    /// refused with an error naming the reason [default: 8]. Raise it when
    /// many machines reach TFTP through one relay or NAT address.
    #[arg(long, env = "BELLOWS_TFTP_TRANSFERS_PER_CLIENT", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub tftp_transfers_per_client: Option<u32>,
    /// Directory of iPXE binaries served over TFTP and HTTP /ipxe/
    /// [default: /usr/lib/ipxe, Debian's ipxe package].
    #[arg(long, env = "BELLOWS_IPXE_DIR")]
    pub ipxe_dir: Option<PathBuf>,
    /// Directory of in-memory OS files served at /osie/ [default: DATA_DIR/osie].
    #[arg(long, env = "BELLOWS_OSIE_DIR")]
    pub osie_dir: Option<PathBuf>,
    /// In-memory OS kernel: a file name in --osie-dir or a full URL [default: vmlinuz].
    #[arg(long, env = "BELLOWS_OSIE_KERNEL")]
    pub osie_kernel: Option<String>,
    /// In-memory OS initrd: a file name in --osie-dir or a full URL [default: initramfs].
    #[arg(long, env = "BELLOWS_OSIE_INITRD")]
    pub osie_initrd: Option<String>,
    /// Extra kernel command line for the in-memory OS.
    #[arg(long, env = "BELLOWS_KERNEL_ARGS")]
    pub kernel_args: Option<String>,
    /// What a machine with nothing to do boots: exit (`exit 1`: the
    /// firmware's next boot option), sanboot (the first BIOS disk), refind
    /// (rEFInd served by Bellows scans the disks on UEFI; BIOS sanboots),
    /// or chain:URL [default: exit].
    #[arg(long, env = "BELLOWS_LOCAL_BOOT")]
    pub local_boot: Option<String>,
    /// Directory of rEFInd's binaries (refind_x64.efi …) and, optionally,
    /// your refind.conf, served at /refind/ for --local-boot refind
    /// [default: /usr/share/refind/refind, Debian's refind package].
    #[arg(long, env = "BELLOWS_REFIND_DIR")]
    pub refind_dir: Option<PathBuf>,
    /// Serve a machine's /ipxe/<mac>/auto.ipxe to any address, not only
    /// to the addresses reserved for it [default: false]. For relayed or
    /// NATed networks where a machine's requests arrive from another
    /// address; anyone who knows a MAC can then read that machine's script
    /// (and its per-boot worker credential, which then works from any
    /// address too).
    #[arg(long, env = "BELLOWS_ALLOW_SCRIPT_FROM_ANY_ADDRESS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_script_from_any_address: Option<bool>,
    /// Discovery: machines with no hardware record that network-boot get
    /// the in-memory OS in discovery mode, report their inventory and wait
    /// as `discovered` records for a rule or `bellows hardware enroll`.
    /// Reservation mode needs --discovery-pool; proxy mode leaves
    /// addressing to the site's DHCP.
    #[arg(long, env = "BELLOWS_DISCOVERY", num_args = 0..=1, default_missing_value = "true")]
    pub discovery: Option<bool>,
    /// Addresses for unknown machines in reservation mode: FIRST-LAST
    /// (e.g. 10.0.0.200-10.0.0.249), outside every reservation.
    #[arg(long, env = "BELLOWS_DISCOVERY_POOL")]
    pub discovery_pool: Option<String>,
    /// Subnet mask of discovery leases [default: none sent].
    #[arg(long, env = "BELLOWS_DISCOVERY_NETMASK")]
    pub discovery_netmask: Option<std::net::Ipv4Addr>,
    /// Default gateway of discovery leases [default: none sent].
    #[arg(long, env = "BELLOWS_DISCOVERY_GATEWAY")]
    pub discovery_gateway: Option<std::net::Ipv4Addr>,
    /// Seconds a discovery lease lasts [default: 600].
    #[arg(long, env = "BELLOWS_DISCOVERY_LEASE")]
    pub discovery_lease: Option<u64>,
    /// Most machines waiting as `discovered` at once; reports of new ones
    /// beyond it are refused [default: 1024].
    #[arg(long, env = "BELLOWS_DISCOVERY_MAX")]
    pub discovery_max: Option<usize>,
    /// Seconds between a waiting machine's reports [default: 10].
    #[arg(long, env = "BELLOWS_DISCOVERY_POLL")]
    pub discovery_poll: Option<u32>,
    /// TOML file with any of these settings (same names, `_` for `-`).
    #[arg(long, env = "BELLOWS_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `bellows=debug` [default: info].
    #[arg(long, env = "BELLOWS_LOG")]
    pub log: Option<String>,
    /// `text` or `json` (one object per line, for log shippers)
    /// [default: text].
    #[arg(long, env = "BELLOWS_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Seconds past an action's timeout before the server ends it itself
    /// when its worker has gone silent [default: 60]. The worker normally
    /// reports the timeout first, after running the action's on-timeout
    /// command.
    #[arg(long, env = "BELLOWS_ACTION_GRACE")]
    pub action_grace: Option<u64>,
    /// Seconds between keep-alives on an idle worker stream [default: 25];
    /// an assignment its worker has not started by then is pushed again.
    #[arg(long, env = "BELLOWS_WORKER_KEEPALIVE", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub worker_keepalive: Option<u64>,
    /// Turn off every credential: no API tokens, and any host may act as
    /// any machine's worker. Only for a lab you fully trust; the server
    /// warns at start [default: false].
    #[arg(long, env = "BELLOWS_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// Docker config.json (as `docker login` writes it) whose `auths` are
    /// handed to every authenticated worker over TLS, so the in-memory OS
    /// can pull private action images; read at start.
    #[arg(long, env = "BELLOWS_REGISTRY_AUTH", value_name = "FILE")]
    pub registry_auth: Option<PathBuf>,
    /// PEM certificate chain for the API and the worker's gRPC, leaf first;
    /// machines pin the last certificate in the file, so end it with your
    /// CA [default: a certificate from the server's own CA, made on first
    /// start in DATA_DIR/tls/].
    #[arg(long, env = "BELLOWS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "BELLOWS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Another DNS name or address the server's own certificate names (the
    /// public address, loopback, the host name and every interface address
    /// are always in it); repeat or separate with commas.
    #[arg(long, env = "BELLOWS_TLS_NAME", value_delimiter = ',')]
    pub tls_name: Option<Vec<String>>,
    /// Seconds an HTTP client has to send a request's headers, on every
    /// listener; an idle HTTP/1 keep-alive connection is closed after the
    /// same time [default: 10]. HTTP/2 (the worker's gRPC) is pinged instead.
    #[arg(long, env = "BELLOWS_HTTP_HEADER_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_timeout: Option<u64>,
    /// Seconds an HTTP client has to send a whole request body, on every
    /// listener (gRPC streams excepted) [default: 30].
    #[arg(long, env = "BELLOWS_HTTP_BODY_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_body_timeout: Option<u64>,
    /// Open connections the boot HTTP listener (and each metadata listener)
    /// takes; more are closed at once. Each worker holds one while its
    /// workflow runs [default: 16384; 0 for no limit].
    #[arg(long, env = "BELLOWS_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Open connections one peer address may hold on the boot listener
    /// [default: 64; 0 for no limit].
    #[arg(long, env = "BELLOWS_HTTP_MAX_CONNECTIONS_PER_IP")]
    pub http_max_connections_per_ip: Option<usize>,
}
