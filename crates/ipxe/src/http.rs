//! HTTP boot routes: `auto.ipxe` per machine, the iPXE binaries, and the
//! in-memory OS files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bellows_model::{Hardware, MacAddr, State as WfState};
use bellows_store::{Store, WorkflowFilter};
use tower_http::services::ServeDir;

use crate::script::{InstallOs, LocalBoot, choose, render};

/// What the boot routes need.
#[derive(Clone)]
pub struct BootState {
    /// Machines and workflows.
    pub store: Arc<dyn Store>,
    /// The in-memory OS every installing machine boots.
    pub os: Arc<InstallOs>,
    /// What a machine with nothing to do boots.
    pub local_boot: Arc<LocalBoot>,
}

/// Where files come from.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// iPXE binaries (`undionly.kpxe`, `ipxe.efi` …), served at `/ipxe/`.
    pub ipxe_dir: PathBuf,
    /// In-memory OS files (kernel, initrd), served at `/osie/`, if local.
    pub osie_dir: Option<PathBuf>,
}

/// The boot routes, to merge into the HTTP boot listener (which must run
/// with connect info, for `/auto.ipxe` by source address).
pub fn router(state: BootState, files: &BootFiles) -> Router {
    let mut router = Router::new()
        .route("/ipxe/{mac}/auto.ipxe", get(by_mac))
        .route("/auto.ipxe", get(by_source))
        .route("/ipxe/auto.ipxe", get(by_source))
        .with_state(state)
        .nest_service("/ipxe", ServeDir::new(&files.ipxe_dir));
    if let Some(dir) = &files.osie_dir {
        router = router.nest_service("/osie", ServeDir::new(dir));
    }
    router
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))],
        body,
    )
        .into_response()
}

async fn by_mac(State(state): State<BootState>, Path(mac): Path<String>) -> Response {
    let Ok(mac) = mac.parse::<MacAddr>() else {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    };
    match state.store.index().by_mac(mac) {
        Some(hw) => script(&state, &hw, mac).await,
        None => {
            tracing::info!(%mac, "auto.ipxe for an unknown MAC");
            text(StatusCode::NOT_FOUND, "not found\n".into())
        }
    }
}

/// Fallback for scripts that cannot put the MAC in the URL: the machine
/// whose reserved IP the request comes from.
async fn by_source(
    State(state): State<BootState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let ip = peer.ip();
    let Some(hw) = state.store.index().by_ip(ip) else {
        tracing::info!(%ip, "auto.ipxe from an unknown address");
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    };
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    };
    let mac = hw
        .network
        .interfaces
        .iter()
        .filter_map(|i| i.dhcp.as_ref())
        .find(|d| d.ip.as_ref().is_some_and(|a| a.address == ip))
        .map(|d| d.mac);
    match mac {
        Some(mac) => script(&state, &hw, mac).await,
        None => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

async fn script(state: &BootState, hw: &Hardware, mac: MacAddr) -> Response {
    let waiting = match workflow_waiting(state.store.as_ref(), hw, mac).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, %mac, "cannot read workflows for auto.ipxe");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "#!ipxe\necho Bellows: server error; retrying in 10 s\nsleep 10\nchain --autofree ${filename} || exit\n".into(),
            );
        }
    };
    let choice = choose(hw, mac, waiting);
    tracing::info!(%mac, hardware = %hw.id, ?choice, "serving auto.ipxe");
    text(StatusCode::OK, render(&choice, mac, &state.os, &state.local_boot))
}

/// A PENDING workflow, or a RUNNING one (the machine rebooted mid-way and
/// must get back to its worker), for this MAC or machine.
async fn workflow_waiting(
    store: &dyn Store,
    hw: &Hardware,
    mac: MacAddr,
) -> Result<bool, bellows_store::StoreError> {
    for state in [WfState::Pending, WfState::Running] {
        for worker in [mac.to_string(), hw.id.clone()] {
            let filter = WorkflowFilter {
                state: Some(state),
                worker: Some(worker),
            };
            if !store.list_workflows(&filter).await?.is_empty() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
