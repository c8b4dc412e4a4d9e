//! The instance metadata service (Tinkerbell's "hegel"): a booted machine
//! asks "who am I?" and gets its own answer, found by the address the
//! request came from, in the formats cloud images already speak: EC2
//! (`/latest/meta-data/…`), hegel's EC2 (`/2009-04-04/meta-data/…`, where
//! hegel and EC2 disagree: [`views::Ec2Dialect`]), Equinix (`/metadata`,
//! with hegel's `metadata.instance.storage`) and cloud-init NoCloud
//! (`ds=nocloud-net;s=http://server/`).
//!
//! An unknown caller gets a bare 404 and learns nothing; a machine never
//! sees another machine's data. `X-Forwarded-For` counts only when the
//! direct peer is a configured trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use bellows_model::Hardware;

mod cidr;
pub mod views;

pub use cidr::{Cidr, CidrParseError};

use views::{Ec2Answer, Ec2Dialect};

/// The one question the metadata service asks: which machine holds this
/// address. A port rather than the store, so this crate knows nothing of
/// how records are kept.
pub trait MachineByAddress: Send + Sync {
    /// The machine with an interface reserved `ip`.
    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Hardware>>;

    /// Told when `hw` (at `ip`) is answered, for its boot timeline; must
    /// return at once. Nothing by default.
    fn served(&self, _hw: &Hardware, _ip: IpAddr) {}
}

/// Shared by the metadata handlers.
#[derive(Clone)]
pub struct MetadataState {
    /// Live hardware lookups.
    pub machines: Arc<dyn MachineByAddress>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<Cidr>>,
}

/// Routes of the metadata service, for the HTTP boot listener. The server
/// must be run with connect info (`into_make_service_with_connect_info`).
pub fn router(state: MetadataState) -> Router {
    Router::new()
        .route("/latest/api/token", put(imds_token))
        .route("/{version}", get(ec2_root))
        .route("/{version}/", get(ec2_root))
        .route("/{version}/{*path}", get(ec2))
        .route("/metadata", get(equinix))
        .route("/meta-data", get(nocloud_meta_data))
        .route("/user-data", get(nocloud_user_data))
        .route("/vendor-data", get(nocloud_vendor_data))
        .with_state(state)
}

/// The address a request is from: the TCP peer, or, when the peer is a
/// trusted proxy, the right-most `X-Forwarded-For` entry that is not one.
pub fn caller_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = unmap(peer);
    if !trusted.iter().any(|c| c.contains(peer)) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(unmap)
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.iter().any(|c| c.contains(*ip)))
        .unwrap_or(peer)
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The machine asking, found by its address. Extracting it answers an
/// unknown caller with a bare 404 before any handler runs.
struct Caller {
    hw: Arc<Hardware>,
    ip: IpAddr,
}

impl FromRequestParts<MetadataState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &MetadataState,
    ) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            tracing::error!("metadata router served without connect info");
            return Err(not_found());
        };
        let ip = caller_ip(peer.ip(), &parts.headers, &state.trusted_proxies);
        match state.machines.by_ip(ip) {
            Some(hw) => {
                state.machines.served(&hw, ip);
                Ok(Caller { hw, ip })
            }
            None => {
                tracing::debug!(%ip, "metadata request from an unknown address");
                Err(not_found())
            }
        }
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, text("not found\n")).into_response()
}

fn text(body: impl Into<String>) -> ([(header::HeaderName, HeaderValue); 1], String) {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body.into(),
    )
}

fn answer(a: Ec2Answer) -> Response {
    match a {
        Ec2Answer::Listing(lines) => text(lines.join("\n")).into_response(),
        Ec2Answer::Text(t) => text(t).into_response(),
        Ec2Answer::NotFound => not_found(),
    }
}

/// `/latest` answers as EC2, `/2009-04-04` as hegel (see [`Ec2Dialect`]);
/// any other version is not found.
async fn ec2_root(caller: Caller, Path(version): Path<String>) -> Response {
    match Ec2Dialect::for_version(&version) {
        Some(dialect) => answer(views::ec2_lookup(&caller.hw, caller.ip, dialect, "")),
        None => not_found(),
    }
}

async fn ec2(caller: Caller, Path((version, path)): Path<(String, String)>) -> Response {
    match Ec2Dialect::for_version(&version) {
        Some(dialect) => answer(views::ec2_lookup(&caller.hw, caller.ip, dialect, &path)),
        None => not_found(),
    }
}

/// IMDSv2: hand out a session token. Bellows also answers without one
/// (IMDSv1), so the token is accepted, not enforced; the TTL is checked the
/// way EC2 checks it so clients get EC2's errors.
async fn imds_token(_caller: Caller, headers: HeaderMap) -> Response {
    let ttl = headers
        .get("x-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok());
    match ttl {
        Some(ttl @ 1..=21600) => {
            let token = uuid::Uuid::new_v4().simple().to_string();
            let mut resp = text(token).into_response();
            if let Ok(v) = HeaderValue::from_str(&ttl.to_string()) {
                resp.headers_mut()
                    .insert("x-aws-ec2-metadata-token-ttl-seconds", v);
            }
            resp
        }
        _ => (
            StatusCode::BAD_REQUEST,
            text("X-aws-ec2-metadata-token-ttl-seconds must be 1-21600\n"),
        )
            .into_response(),
    }
}

async fn equinix(caller: Caller) -> Response {
    let hw = caller.hw;
    axum::Json(views::equinix(&hw)).into_response()
}

async fn nocloud_meta_data(caller: Caller) -> Response {
    let hw = caller.hw;
    text(views::nocloud_meta_data(&hw)).into_response()
}

/// NoCloud needs `user-data` to exist; an empty body means "none".
async fn nocloud_user_data(caller: Caller) -> Response {
    let hw = caller.hw;
    text(views::user_data(&hw).unwrap_or_default()).into_response()
}

async fn nocloud_vendor_data(caller: Caller) -> Response {
    let hw = caller.hw;
    text(views::vendor_data(&hw).unwrap_or_default()).into_response()
}
