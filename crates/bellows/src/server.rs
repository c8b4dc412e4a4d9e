//! `bellows server`: open the store, serve the API, stop cleanly on SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use std::net::SocketAddr;

use bellows_api::worker::{HubSettings, WorkerHub, WorkerService};
use bellows_api::{AppState, BootInfo};
use bellows_ipxe::InstallOs;
use bellows_ipxe::http::{BootFiles, BootState};
use bellows_metadata::MetadataState;
use bellows_model::boot::KernelArgs;
use bellows_store::{SqliteStore, Store};
use bellows_syslog::SyslogServer;
use bellows_tftp::{DirectorySource, TftpConfig, TftpServer};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::cli::{DhcpMode, Listen, ServerArgs};
use crate::config;
use crate::error::CliError;

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(args: ServerArgs) -> Result<ExitCode, CliError> {
    let cfg = config::resolve(&args).map_err(|e| CliError::Usage(e.to_string()))?;
    let filter = EnvFilter::try_new(&cfg.log)
        .map_err(|e| CliError::Usage(format!("invalid log filter {:?}: {e}", cfg.log)))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        CliError::Server(format!(
            "cannot create data directory {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
    let store = SqliteStore::open(&cfg.data_dir).await.map_err(|e| {
        CliError::Server(format!(
            "cannot open the store in {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
    let store: Arc<SqliteStore> = Arc::new(store);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| CliError::Server(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Server(format!("listener has no address: {e}")))?;
    tracing::info!(
        data_dir = %cfg.data_dir.display(),
        "bellows API listening on http://{addr}"
    );

    // The HTTP boot service and any metadata-only listeners answer from the
    // store's in-memory index, never from a query.
    let http = bind_tcp(cfg.http_listen, "HTTP boot service (iPXE, metadata)").await?;
    let http_port = local_port(&http)?;
    let mut metadata_only = Vec::new();
    for addr in &cfg.metadata_listen {
        metadata_only.push(bind_tcp(*addr, "metadata service").await?);
    }
    let syslog = match cfg.syslog_listen {
        Listen::Off => None,
        Listen::At(addr) => match SyslogServer::bind(addr, store.clone()).await {
            Ok(s) => {
                let local = s
                    .local_addr()
                    .map_err(|e| CliError::Server(format!("syslog socket has no address: {e}")))?;
                tracing::info!("syslog receiver listening on udp://{local}");
                Some(s)
            }
            Err(e) if !cfg.explicit.syslog => {
                tracing::warn!(
                    "syslog receiver off: cannot bind {addr}: {e} (port 514 needs root; set --syslog-listen)"
                );
                None
            }
            Err(e) => {
                return Err(CliError::Server(format!(
                    "cannot bind syslog on {addr}: {e}"
                )));
            }
        },
    };
    let ipxe_dir = prepare_ipxe_dir(&cfg);
    let tftp = match cfg.tftp_listen {
        Listen::Off => None,
        Listen::At(listen) => {
            let source = DirectorySource::new(&ipxe_dir);
            let bound = match source {
                Ok(source) => {
                    let config = TftpConfig {
                        listen,
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
                    let server = server.with_transfer_hook(|record| {
                        tracing::info!(
                            peer = %record.peer,
                            file = %record.requested,
                            outcome = ?record.outcome,
                            bytes = record.bytes_sent,
                            "TFTP transfer ended"
                        );
                    });
                    tracing::info!("TFTP server listening on udp://{}", server.local_addr());
                    Some(server)
                }
                Err(e) if !cfg.explicit.tftp => {
                    tracing::warn!(
                        "TFTP off: cannot bind {listen}: {e} (port 69 needs root; set --tftp-listen)"
                    );
                    None
                }
                Err(e) => {
                    return Err(CliError::Server(format!(
                        "cannot start TFTP on {listen}: {e}"
                    )));
                }
            }
        }
    };
    let tftp_addr = tftp.as_ref().map(|t| t.local_addr());
    let syslog_host = match syslog.as_ref().and_then(|s| s.local_addr().ok()) {
        Some(a) if a.port() == 514 => Some(cfg.public_ip.to_string()),
        Some(a) => Some(SocketAddr::new(cfg.public_ip, a.port()).to_string()),
        None => None,
    };

    let http_base = format!("http://{}", SocketAddr::new(cfg.public_ip, http_port));
    let file_url = |name: &str| {
        if name.starts_with("http://") || name.starts_with("https://") {
            name.to_string()
        } else {
            format!("{http_base}/osie/{name}")
        }
    };
    let os = InstallOs {
        kernel_url: file_url(&cfg.osie_kernel),
        initrd_url: file_url(&cfg.osie_initrd),
        cmdline: format!(
            "{} console=tty0 console=ttyS0,115200 {}",
            KernelArgs {
                api: Some(format!(
                    "http://{}",
                    SocketAddr::new(cfg.public_ip, addr.port())
                )),
                syslog: syslog_host.clone(),
                worker_id: None,
            }
            .to_cmdline(),
            cfg.kernel_args
        ),
        attempts: 3,
    };
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
    let dhcp = start_dhcp(
        &cfg,
        &store,
        &http_base,
        tftp_addr.is_some(),
        syslog_host.as_deref(),
    )?;
    let dhcp_mode = match (&dhcp, cfg.dhcp_mode) {
        (None, _) | (_, DhcpMode::Off) => "off",
        (_, DhcpMode::Reservation) => "reservation",
        (_, DhcpMode::Proxy) => "proxy",
    };
    tracing::info!(public_ip = %cfg.public_ip, "boot URLs start with {http_base}");
    let dyn_store: Arc<dyn Store> = store.clone();
    let hub = WorkerHub::new(
        dyn_store.clone(),
        HubSettings {
            action_grace: cfg.action_grace,
            keepalive: cfg.worker_keepalive,
            ..HubSettings::default()
        },
    );
    tokio::spawn(hub.clone().follow_changes());
    let metadata = bellows_metadata::router(MetadataState {
        index: store.index(),
        trusted_proxies: Arc::new(cfg.trusted_proxies.clone()),
    });
    let boot = bellows_ipxe::http::router(
        BootState {
            store: dyn_store,
            os: Arc::new(os),
            local_boot: Arc::new(cfg.local_boot.clone()),
        },
        &BootFiles {
            ipxe_dir: ipxe_dir.clone(),
            osie_dir: Some(cfg.osie_dir.clone()),
            refind_dir: Some(cfg.refind_dir.clone()),
        },
    )
    .merge(metadata.clone())
    // Booted machines reach the worker service here: the API listener is
    // often loopback-only.
    .merge(WorkerService::new(hub.clone()).router());
    let mut http_apps = vec![(http, boot)];
    http_apps.extend(metadata_only.into_iter().map(|l| (l, metadata.clone())));

    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::Server(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| CliError::Server(format!("cannot handle SIGINT: {e}")))?;
    // One signal stops every listener: each waits on its own receiver.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop_tx.send(true);
    });
    {
        // Worker streams stay open for hours; end them so graceful
        // shutdown of the HTTP listeners can finish.
        let hub = hub.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let _ = rx.wait_for(|stop| *stop).await;
            hub.stop();
        });
    }
    let mut stopping = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut servers = Services::default();
    if let (true, Some(interface)) = (cfg.ipv6_ra, cfg.interface.as_deref()) {
        match bellows_dhcp::ra::RaSender::bind(interface) {
            Ok(ra) => {
                tracing::info!(
                    interface,
                    "sending IPv6 router advertisements (no prefix, lifetime 0)"
                );
                let stop = stopped();
                servers.spawn("IPv6 router advertisements", async move {
                    ra.run(stop).await;
                    Ok(())
                });
            }
            Err(e) => tracing::warn!(interface, "IPv6 router advertisements off: {e}"),
        }
    }
    {
        let stop = stopped();
        let hub = hub.clone();
        servers.spawn("workflow deadlines", async move {
            hub.enforce_deadlines(stop).await;
            Ok(())
        });
    }
    {
        let store = store.clone();
        let stop = stopped();
        servers.spawn("BMC power poller", async move {
            poll_power(store, POWER_POLL_INTERVAL, stop).await;
            Ok(())
        });
    }
    if let Some(dhcp) = dhcp {
        let stop = stopped();
        servers.spawn("DHCP server", async move {
            dhcp.run(stop)
                .await
                .map_err(|e| format!("DHCP server failed: {e}"))
        });
    }
    if let Some(tftp) = tftp {
        let stop = stopped();
        servers.spawn("TFTP server", async move {
            tftp.run(stop)
                .await
                .map_err(|e| format!("TFTP server failed: {e}"))
        });
    }
    if let Some(syslog) = syslog {
        let stop = stopped();
        servers.spawn("syslog receiver", async move {
            syslog.run(stop).await;
            Ok(())
        });
    }
    for (listener, app) in http_apps {
        let stop = stopped();
        let name = match listener.local_addr() {
            Ok(addr) => format!("HTTP service on {addr}"),
            Err(_) => "HTTP service".to_string(),
        };
        let failed = format!("{name} failed");
        servers.spawn(name, async move {
            // NODELAY: see bellows_api::serve.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| format!("{failed}: {e}"))
        });
    }
    let state = AppState {
        store: store.clone(),
        boot: Arc::new(BootInfo {
            public_ip: cfg.public_ip.to_string(),
            http_base: http_base.clone(),
            tftp_server: tftp_addr.map(|a| a.to_string()),
            syslog: syslog_host.clone(),
            dhcp_mode: dhcp_mode.into(),
        }),
        workers: hub.clone(),
    };
    let api_stop = stopped();
    servers.spawn("API", async move {
        bellows_api::serve(listener, state, api_stop)
            .await
            .map_err(|e| format!("API server failed: {e}"))
    });
    servers
        .run_until_drained(
            async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            },
            SHUTDOWN_DRAIN,
            || hub.connected_workers(),
        )
        .await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// How long a shutdown waits for open connections (worker streams, HTTP
/// requests) to finish before it closes them: a worker on a machine that
/// hung or lost power never answers, and would otherwise hold the server
/// up until systemd's `kill -9`, which skips closing the store.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The server's long-running tasks, by name, so a shutdown can say which
/// ones it had to cut.
#[derive(Default)]
struct Services {
    tasks: tokio::task::JoinSet<Result<(), String>>,
    names: std::collections::HashMap<tokio::task::Id, String>,
}

impl Services {
    fn spawn(
        &mut self,
        name: impl Into<String>,
        task: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name.into());
    }

    /// Waits for every task. A task that fails ends the server with its
    /// error. Once `stop` resolves, the tasks get `drain` to finish; what
    /// is left then is aborted and logged (with the workers whose streams
    /// were still open, from `workers`), and the shutdown goes on.
    async fn run_until_drained(
        mut self,
        stop: impl std::future::Future<Output = ()>,
        drain: std::time::Duration,
        workers: impl Fn() -> Vec<String>,
    ) -> Result<(), CliError> {
        tokio::pin!(stop);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let cut_off = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                done = self.tasks.join_next_with_id() => match done {
                    None => return Ok(()),
                    Some(Ok((id, Ok(())))) => {
                        self.names.remove(&id);
                    }
                    Some(Ok((_, Err(e)))) => return Err(CliError::Server(e)),
                    Some(Err(e)) => {
                        let name = self.names.remove(&e.id()).unwrap_or_default();
                        return Err(CliError::Server(format!("{name} task failed: {e}")));
                    }
                },
                () = &mut stop, if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + drain);
                }
                () = cut_off => {
                    let mut left: Vec<&str> = self.names.values().map(String::as_str).collect();
                    left.sort_unstable();
                    let workers = workers();
                    tracing::warn!(
                        services = ?left,
                        workers = ?workers,
                        "shutdown: connections still open after {} s (a worker or client that stopped answering); closing them",
                        drain.as_secs()
                    );
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    return Ok(());
                }
            }
        }
    }
}

async fn bind_tcp(addr: SocketAddr, what: &str) -> Result<TcpListener, CliError> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
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

fn local_port(listener: &TcpListener) -> Result<u16, CliError> {
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| CliError::Server(format!("listener has no address: {e}")))
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
fn prepare_ipxe_dir(cfg: &crate::config::ServerConfig) -> std::path::PathBuf {
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

/// Answers DHCP hardware lookups from the store's in-memory index.
struct IndexLookup(Arc<bellows_store::HardwareIndex>);

impl bellows_dhcp::Lookup for IndexLookup {
    fn by_mac(&self, mac: bellows_model::MacAddr) -> Option<Arc<bellows_model::Hardware>> {
        self.0.by_mac(mac)
    }
}

/// Binds the DHCP server unless it is off. A default that cannot bind
/// (port 67 needs root) is a warning; an explicit request is an error.
fn start_dhcp(
    cfg: &crate::config::ServerConfig,
    store: &Arc<SqliteStore>,
    http_base: &str,
    tftp_on: bool,
    syslog_host: Option<&str>,
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
        tftp_server: if tftp_on { public_v4 } else { None },
        http_base_url: Some(http_base.to_string()),
        // Option 7 carries an address only, so only a receiver on 514.
        syslog_server: syslog_host.and_then(|h| h.parse().ok()),
        ..bellows_dhcp::DhcpConfig::default()
    };
    let listen = bellows_dhcp::ListenConfig {
        address,
        port: cfg.dhcp_listen.port(),
        interface: cfg.interface.clone(),
        ..bellows_dhcp::ListenConfig::default()
    };
    let lookup = Arc::new(IndexLookup(store.index()));
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

/// How often every BMC's power state is read.
const POWER_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads every BMC's power state on an interval and stores it, so
/// `bellows bmc list` and `hardware list` show it without a live call.
/// BMCs are read one after another: the client's own timeouts bound each.
async fn poll_power(
    store: Arc<SqliteStore>,
    every: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return,
        }
        let records = match store.list_bmcs().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "power poll: cannot list BMCs");
                continue;
            }
        };
        for record in records {
            let Ok(Some((record, secret))) = store.bmc_with_secret(&record.hardware_id).await
            else {
                continue;
            };
            let bmc = bellows_api::power::connect(&record, &secret).await;
            let _ = bellows_api::power::read_power(
                store.as_ref(),
                &record.hardware_id,
                bmc.as_ref().map_err(Clone::clone),
            )
            .await;
        }
    }
}
