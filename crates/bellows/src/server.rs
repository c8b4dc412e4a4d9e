//! `bellows server`: open the store, serve the API, stop cleanly on SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use bellows_api::AppState;
use bellows_store::SqliteStore;
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
    let store = Arc::new(store);
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

    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::Server(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| CliError::Server(format!("cannot handle SIGINT: {e}")))?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    let state = AppState {
        store: store.clone(),
    };
    bellows_api::serve(listener, state, shutdown)
        .await
        .map_err(|e| CliError::Server(format!("API server failed: {e}")))?;
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
