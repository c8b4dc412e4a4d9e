//! `bellows server`: open the store, serve the API, stop cleanly on SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use bellows_api::AppState;
use bellows_metadata::MetadataState;
use bellows_store::{SqliteStore, Store};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::cli::ServerArgs;
use crate::commands::CliError;
use crate::config;

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
    let index = store.index();
    let metadata = bellows_metadata::router(MetadataState {
        index: index.clone(),
        trusted_proxies: Arc::new(cfg.trusted_proxies.clone()),
    });
    let mut http_listeners = vec![(cfg.http_listen, "HTTP boot service (metadata)")];
    http_listeners.extend(cfg.metadata_listen.iter().map(|a| (*a, "metadata service")));
    let mut bound = Vec::new();
    for (addr, what) in http_listeners {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            CliError::Server(format!(
                "cannot listen on {addr} for the {what}: {e} (set another address with --http-listen / --metadata-listen)"
            ))
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| CliError::Server(format!("listener has no address: {e}")))?;
        tracing::info!("{what} listening on http://{local}");
        bound.push(listener);
    }

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
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    for listener in bound {
        let app = metadata.clone();
        let stop = stopped();
        servers.spawn(async move {
            let addr = listener.local_addr().ok();
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| format!("HTTP service on {addr:?} failed: {e}"))
        });
    }
    let state = AppState {
        store: store.clone(),
    };
    let api_stop = stopped();
    servers.spawn(async move {
        bellows_api::serve(listener, state, api_stop)
            .await
            .map_err(|e| format!("API server failed: {e}"))
    });
    while let Some(done) = servers.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(CliError::Server(e)),
            Err(e) => return Err(CliError::Server(format!("a listener task failed: {e}"))),
        }
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
