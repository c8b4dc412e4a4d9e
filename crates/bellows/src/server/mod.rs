//! `bellows server`: open the store, start every service, stop cleanly on
//! SIGTERM. This file only wires: each service is built by its own
//! function (`netboot` for the UDP boot services, `http_apps` here for the
//! HTTP listeners), the store reaches the services through `ports`, and
//! `services` runs and stops them.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bellows_api::auth::{AuthSettings, Authenticator};
use bellows_api::metrics::ApiMetrics;
use bellows_api::power::{POWER_POLL_INTERVAL, poll_power};
use bellows_api::worker::{HubSettings, WorkerHub, WorkerService};
use bellows_api::{AppState, BootInfo, ListenerTls};
use bellows_ipxe::InstallOs;
use bellows_ipxe::http::{BootDirs, BootState};
use bellows_metadata::MetadataState;
use bellows_store::{AuthStore, DB_FILE, SecretKey, SqlStore, Store, StoreError};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::error::CliError;
use args::{DhcpMode, LogFormat};

mod args;
pub mod bootstrap;
pub mod config;
pub mod doctor;
mod metrics;
mod netboot;
mod ports;
mod services;
mod timeline;
pub mod tls;

pub use args::ServerArgs;
use config::ServerConfig;
use netboot::Published;
use ports::StorePorts;
use services::{SHUTDOWN_DRAIN, Services};

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(args: ServerArgs) -> Result<ExitCode, CliError> {
    let cfg = config::resolve(&args).map_err(|e| CliError::Usage(e.to_string()))?;
    init_logging(&cfg.log, cfg.log_format)?;
    raise_open_file_limit();
    // What `bellows doctor` would warn about, in the log (the DHCP probe
    // in the background).
    doctor::log_at_start(&cfg);
    let (store, discovery_key) = open_store(&cfg).await?;
    let dyn_store: Arc<dyn Store> = store.clone();
    let auth_store: Arc<dyn AuthStore> = store.clone();
    let auth = Authenticator::new(
        auth_store.clone(),
        dyn_store.clone(),
        AuthSettings {
            insecure: cfg.insecure,
            // Relayed or NATed networks: the address a machine's calls come
            // from is not its reservation, for scripts or for workers.
            bind_to_address: !cfg.allow_script_from_any_address,
        },
    );
    if cfg.insecure {
        tracing::warn!(
            "--insecure: NO AUTHENTICATION AND NO TLS. Anyone who reaches the API may change everything, and any host on the provisioning network may act as any machine's worker and read its workflow's secrets, and anyone on the path reads every token and secret in the clear"
        );
    } else {
        bootstrap::first_admin_token(&auth, &cfg.data_dir).await?;
    }
    let tls = if cfg.insecure {
        None
    } else {
        Some(load_tls(&cfg)?)
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let timeline = timeline::TimelineRecorder::start(dyn_store.clone());
    let mut ports = StorePorts::new(
        dyn_store.clone(),
        (!cfg.insecure).then(|| auth_store.clone()),
    )
    .with_timeline(timeline.clone());
    if let Some(d) = &cfg.discovery {
        let tokens = || bellows_api::discovery::DiscoveryTokens::new(&discovery_key);
        auth.enable_discovery(tokens());
        ports = ports.with_discovery(ports::Discovery {
            pool: match cfg.dhcp_mode {
                DhcpMode::Reservation => d
                    .pool
                    .clone()
                    .map(|p| std::sync::Mutex::new(bellows_dhcp::LeasePool::new(p, d.lease_secs))),
                _ => None,
            },
            lease_secs: d.lease_secs,
            tokens: (!cfg.insecure).then(tokens),
        });
        tracing::info!(
            pool = ?d.pool.as_ref().map(|p| format!("{}-{}", p.first, p.last)),
            max_discovered = d.max_discovered,
            "discovery is on: machines with no record boot the in-memory OS and report their inventory"
        );
    }
    let ports = Arc::new(ports);

    let api_listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| CliError::Server(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let api_port = local_port(&api_listener)?;
    tracing::info!(
        data_dir = %cfg.data_dir.display(),
        "bellows API listening on {scheme}://{}",
        SocketAddr::new(cfg.listen.ip(), api_port)
    );
    // The HTTP boot service and any metadata-only listeners answer from the
    // store's in-memory index, never from a query.
    let http = bind_tcp(cfg.http_listen, "HTTP boot service (iPXE, metadata)").await?;
    let http_port = local_port(&http)?;
    let mut metadata_only = Vec::new();
    for addr in &cfg.metadata_listen {
        metadata_only.push(bind_tcp(*addr, "metadata service").await?);
    }

    let syslog = netboot::start_syslog(&cfg, ports.clone()).await?;
    let ipxe_dir = netboot::prepare_ipxe_dir(&cfg);
    let tftp = netboot::start_tftp(&cfg, &ipxe_dir, ports.clone()).await?;
    let boot_addr = SocketAddr::new(cfg.public_ip, http_port);
    let published = Published {
        http_base: format!("http://{boot_addr}"),
        worker_url: format!("{scheme}://{boot_addr}"),
        ca_pin: tls.as_ref().map(|t| t.pin.clone()),
        tftp: tftp.as_ref().map(|t| t.local_addr()),
        syslog: netboot::syslog_host(&cfg, syslog.as_ref()),
    };
    netboot::warn_missing_files(&cfg, &ipxe_dir);
    let dhcp = netboot::start_dhcp(&cfg, ports.clone(), &published)?;
    let dhcp_mode = match (&dhcp, cfg.dhcp_mode) {
        (None, _) | (_, DhcpMode::Off) => "off",
        (_, DhcpMode::Reservation) => "reservation",
        (_, DhcpMode::Proxy) => "proxy",
    };
    tracing::info!(public_ip = %cfg.public_ip, "boot URLs start with {}", published.http_base);

    let api_metrics = ApiMetrics::default();
    let hub = WorkerHub::new(
        dyn_store.clone(),
        HubSettings {
            action_grace: cfg.action_grace,
            keepalive: cfg.worker_keepalive,
            registry_logins: cfg.registry_logins.clone(),
            metrics: api_metrics.clone(),
            timeline: Some(timeline.clone()),
            discovery: cfg.discovery.as_ref().map(|d| {
                Arc::new(bellows_api::discovery::DiscoverySettings {
                    pool: d.pool.clone(),
                    max_discovered: d.max_discovered,
                    poll_seconds: d.poll_seconds,
                })
            }),
            ..HubSettings::default()
        },
    );
    let metrics = metrics::registry(
        &api_metrics,
        &store,
        metrics::Sources {
            dhcp: dhcp.as_ref().map(|d| d.stats()),
            tftp: tftp.as_ref().map(|t| t.stats()),
            syslog: syslog.as_ref().map(|s| s.stats()),
            hub: hub.clone(),
            timeline: timeline.clone(),
        },
    );
    tokio::spawn(hub.clone().follow_changes());
    if !cfg.registry_logins.is_empty() {
        let hosts: Vec<&str> = cfg
            .registry_logins
            .iter()
            .map(|l| l.host.as_str())
            .collect();
        tracing::info!("workers are given registry logins for {}", hosts.join(", "));
        if cfg.insecure {
            tracing::warn!(
                "--insecure: registry logins go to workers without TLS and to any host claiming a machine"
            );
        }
    }
    let os = netboot::install_os(&cfg, &published);
    let worker_service = WorkerService::new(hub.clone(), auth.clone());
    let boot_tls = tls.as_ref().map(|t| ListenerTls {
        config: t.config.clone(),
        plain_http_too: true,
    });
    let http_apps = http_apps(
        &cfg,
        ports.clone(),
        worker_service,
        os,
        ipxe_dir,
        (http, boot_tls),
        metadata_only,
    );

    let stop = StopSignal::install()?;
    {
        // Worker streams stay open for hours; end them so graceful
        // shutdown of the HTTP listeners can finish.
        let hub = hub.clone();
        let stopped = stop.wait();
        tokio::spawn(async move {
            stopped.await;
            hub.stop();
        });
    }
    let mut servers = Services::default();
    if let (true, Some(interface)) = (cfg.ipv6_ra, cfg.interface.as_deref()) {
        match bellows_dhcp::ra::RaSender::bind(interface) {
            Ok(ra) => {
                tracing::info!(
                    interface,
                    "sending IPv6 router advertisements (no prefix, lifetime 0)"
                );
                let stopped = stop.wait();
                servers.spawn("IPv6 router advertisements", async move {
                    ra.run(stopped).await;
                    Ok(())
                });
            }
            Err(e) => tracing::warn!(interface, "IPv6 router advertisements off: {e}"),
        }
    }
    {
        let stopped = stop.wait();
        let hub = hub.clone();
        servers.spawn("workflow deadlines", async move {
            hub.enforce_deadlines(stopped).await;
            Ok(())
        });
    }
    {
        let store = dyn_store.clone();
        let api_metrics = api_metrics.clone();
        let stopped = stop.wait();
        servers.spawn("BMC power poller", async move {
            poll_power(store, POWER_POLL_INTERVAL, api_metrics, stopped).await;
            Ok(())
        });
    }
    if let Some(dhcp) = dhcp {
        let stopped = stop.wait();
        servers.spawn("DHCP server", async move {
            dhcp.run(stopped)
                .await
                .map_err(|e| format!("DHCP server failed: {e}"))
        });
    }
    if let Some(tftp) = tftp {
        let stopped = stop.wait();
        servers.spawn("TFTP server", async move {
            tftp.run(stopped)
                .await
                .map_err(|e| format!("TFTP server failed: {e}"))
        });
    }
    if let Some(syslog) = syslog {
        let stopped = stop.wait();
        servers.spawn("syslog receiver", async move {
            syslog.run(stopped).await;
            Ok(())
        });
    }
    // The boot listener comes first; the others serve metadata alone.
    for (i, (listener, app, listener_tls)) in http_apps.into_iter().enumerate() {
        let app = if i == 0 {
            timeline::note_downloads(api_metrics.count_requests(app, "boot"), ports.clone())
        } else {
            api_metrics.count_requests(app, "metadata")
        };
        let stopped = stop.wait();
        let limits = cfg.http_limits;
        let name = match listener.local_addr() {
            Ok(addr) => format!("HTTP service on {addr}"),
            Err(_) => "HTTP service".to_string(),
        };
        let failed = format!("{name} failed");
        servers.spawn(name, async move {
            bellows_api::serve_http(listener, app, limits, listener_tls, stopped)
                .await
                .map_err(|e| format!("{failed}: {e}"))
        });
    }
    let state = AppState {
        store: store.clone(),
        boot: Arc::new(BootInfo {
            public_ip: cfg.public_ip.to_string(),
            http_base: published.http_base.clone(),
            tftp_server: published.tftp.map(|a| a.to_string()),
            syslog: published.syslog.clone(),
            dhcp_mode: dhcp_mode.into(),
        }),
        workers: hub.clone(),
        auth,
        metrics,
    };
    let api_stopped = stop.wait();
    let api_limits = cfg.api_limits;
    let api_tls = tls.as_ref().map(|t| ListenerTls {
        config: t.config.clone(),
        plain_http_too: false,
    });
    servers.spawn("API", async move {
        bellows_api::serve_with(api_listener, state, api_limits, api_tls, api_stopped)
            .await
            .map_err(|e| format!("API server failed: {e}"))
    });
    servers
        .run_until_drained(stop.wait(), SHUTDOWN_DRAIN, || hub.connected_workers())
        .await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The server's certificate, logged so an operator knows what machines pin
/// and which CA file a CLI elsewhere needs.
fn load_tls(cfg: &ServerConfig) -> Result<tls::ServerTls, CliError> {
    let loaded = tls::load(cfg).map_err(|e| CliError::Server(format!("TLS: {e}")))?;
    match &loaded.ca_file {
        Some(ca) => {
            if loaded.created {
                tracing::info!(file = %ca.display(), "created the server's own TLS CA");
            }
            tracing::info!(
                ca = %ca.display(),
                ca_fingerprint = %loaded.pin,
                names = %loaded.names.join(","),
                "TLS on: the API and the worker service speak HTTPS; a CLI on another host needs --ca {}",
                ca.display()
            );
        }
        None => tracing::info!(
            ca_fingerprint = %loaded.pin,
            "TLS on with the given certificate; machines pin the last certificate of its chain"
        ),
    }
    Ok(loaded)
}

/// Raises the soft open-file limit to the hard one: each worker holds a
/// connection, and the boot listener takes up to 16,384 (the common soft
/// default of 1,024 would turn machines away long before that).
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
}

/// Logs go to stderr, filtered by `--log` (`RUST_LOG` syntax): text
/// (coloured only on a terminal) or one JSON object per line.
fn init_logging(filter: &str, format: LogFormat) -> Result<(), CliError> {
    let env_filter = EnvFilter::try_new(filter)
        .map_err(|e| CliError::Usage(format!("invalid log filter {filter:?}: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // Fields at the top level, beside timestamp, level and target, so
        // a shipper indexes `mac` or `workflow` without unpacking.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    Ok(())
}

/// Opens (creating if needed) the embedded store in the data directory,
/// with the secret key its BMC passwords are sealed with.
async fn open_store(cfg: &ServerConfig) -> Result<(Arc<SqlStore>, [u8; 32]), CliError> {
    // Private before anything (the key file by default) is written in it.
    bellows_store::files::private_dir(&cfg.data_dir)
        .map_err(|e| CliError::Server(format!("data directory: {e}")))?;
    let key_file = &cfg.secret_key_file;
    let (key, created) =
        SecretKey::load_or_create(key_file).map_err(|e| CliError::Server(e.to_string()))?;
    if created {
        tracing::warn!(
            file = %key_file.display(),
            fingerprint = key.fingerprint(),
            "created a new secret key for BMC passwords: back it up apart from the \
             database; without it the stored BMC passwords cannot be read"
        );
    }
    // Discovery credentials are signed with a key of their own, derived
    // from this one: replicas sharing the key file accept each other's.
    let discovery_key = key.derive(bellows_api::discovery::KEY_LABEL);
    let opened = match &cfg.store {
        config::StoreLocation::Sqlite => SqlStore::open_sqlite(&cfg.data_dir, key).await,
        config::StoreLocation::Postgres { url, pool } => {
            let shown = bellows_store::redact_url(url);
            tracing::info!(store = %shown, "opening the PostgreSQL store");
            match SqlStore::open_postgres(url, key, pool).await {
                Err(e @ StoreError::WrongKey { .. }) => Err(e),
                Err(e) => {
                    return Err(CliError::Server(format!(
                        "cannot open the PostgreSQL store {shown}: {e}"
                    )));
                }
                ok => ok,
            }
        }
    };
    let store = match opened {
        Ok(store) => store,
        Err(e @ StoreError::WrongKey { .. }) => {
            // A key made just now for a database sealed with another one
            // is of no use to anyone: do not leave it to be picked up.
            let made = if created && std::fs::remove_file(key_file).is_ok() {
                " (it did not exist; the one just created was removed again)"
            } else {
                ""
            };
            let (place, forget) = match &cfg.store {
                config::StoreLocation::Sqlite => (
                    format!("in {}", cfg.data_dir.display()),
                    format!("sqlite3 {}", cfg.data_dir.join(DB_FILE).display()),
                ),
                config::StoreLocation::Postgres { url, .. } => {
                    let shown = bellows_store::redact_url(url);
                    (shown.clone(), format!("psql {shown} -c"))
                }
            };
            return Err(CliError::Server(format!(
                "cannot open the store {place}: {e}. Give the key file they were sealed \
                 with (--secret-key-file; this start used {key}{made}). If that key is \
                 lost, so are the passwords: `{forget} 'DELETE FROM bmc'` forgets \
                 every BMC, then set them again with `bellows bmc set`.",
                key = key_file.display(),
            )));
        }
        Err(e) => {
            return Err(CliError::Server(format!(
                "cannot open the store in {}: {e}",
                cfg.data_dir.display()
            )));
        }
    };
    Ok((Arc::new(store), discovery_key))
}

/// The HTTP listeners and what each serves: the boot listener carries the
/// iPXE routes, metadata and the worker service (booted machines reach the
/// worker service here, as the API listener is often loopback-only), over
/// `boot_tls` for the worker's gRPC and plain HTTP for iPXE and metadata;
/// each metadata-only listener carries metadata alone, in plain HTTP (the
/// clients of instance metadata speak nothing else). The boot listener is
/// first.
fn http_apps(
    cfg: &ServerConfig,
    ports: Arc<StorePorts>,
    workers: WorkerService,
    os: InstallOs,
    ipxe_dir: std::path::PathBuf,
    (boot_listener, boot_tls): (TcpListener, Option<ListenerTls>),
    metadata_only: Vec<TcpListener>,
) -> Vec<(TcpListener, axum::Router, Option<ListenerTls>)> {
    let metadata = bellows_metadata::router(MetadataState {
        machines: ports.clone(),
        trusted_proxies: Arc::new(cfg.trusted_proxies.clone()),
    });
    let boot = bellows_ipxe::http::router(
        BootState {
            machines: ports,
            os: Arc::new(os),
            local_boot: Arc::new(cfg.local_boot.clone()),
            script_from_any_address: cfg.allow_script_from_any_address,
        },
        &BootDirs {
            ipxe_dir,
            osie_dir: Some(cfg.osie_dir.clone()),
            refind_dir: Some(cfg.refind_dir.clone()),
        },
    )
    .merge(metadata.clone())
    .merge(workers.router());
    let mut apps = vec![(boot_listener, boot, boot_tls)];
    apps.extend(
        metadata_only
            .into_iter()
            .map(|l| (l, metadata.clone(), None)),
    );
    apps
}

/// SIGTERM or SIGINT, seen by every task: each waits on its own receiver.
struct StopSignal {
    rx: tokio::sync::watch::Receiver<bool>,
}

impl StopSignal {
    fn install() -> Result<StopSignal, CliError> {
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| CliError::Server(format!("cannot handle SIGTERM: {e}")))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| CliError::Server(format!("cannot handle SIGINT: {e}")))?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            let _ = tx.send(true);
        });
        Ok(StopSignal { rx })
    }

    /// Resolves once a stop signal has arrived.
    fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

async fn bind_tcp(addr: SocketAddr, what: &str) -> Result<TcpListener, CliError> {
    let listener = listen(addr).map_err(|e| {
        CliError::Server(format!(
            "cannot listen on {addr} for the {what}: {e} (choose another address with --http-listen / --metadata-listen)"
        ))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Server(format!("listener has no address: {e}")))?;
    tracing::info!("{what} listening on http://{local}");
    Ok(listener)
}

/// Connections the kernel queues for a listener before it accepts them
/// (capped by `net.core.somaxconn`, 4096 by default): a boot storm's
/// machines connect by the thousand within a second, and tokio's default
/// of 1,024 dropped their SYNs.
const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn local_port(listener: &TcpListener) -> Result<u16, CliError> {
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| CliError::Server(format!("listener has no address: {e}")))
}
