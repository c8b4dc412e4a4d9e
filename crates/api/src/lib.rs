//! The Bellows management API: REST/JSON over hardware, templates and
//! workflows. Every handler is a thin translation between HTTP and the
//! [`Store`]; the rules live in `bellows-model` and the store.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bellows_store::Store;
use tokio::net::TcpListener;

pub mod auth;
mod bmc;
mod body;
mod changes;
mod console;
pub mod discovery;
mod error;
mod hardware;
pub mod metrics;
pub mod power;
mod rules;
mod serve;
mod templates;
mod tokens;
pub mod worker;
mod workflows;

pub use error::ApiError;
pub use serve::{BodyTimedOut, HttpLimits, ListenerTls, serve_http};

/// The OpenAPI document, served at `/api/v1/openapi.json`; a test checks
/// the router and this document describe the same operations.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The one source of truth.
    pub store: Arc<dyn Store>,
    /// How machines reach the boot services (public address, URLs), for
    /// clients that write configuration for other programs
    /// (`bellows dhcp-config`, `bellows ipxe ovh-script`).
    pub boot: Arc<BootInfo>,
    /// Connected workers; the gRPC worker service is served on the API
    /// listener too, for `bellows worker` on ordinary hosts.
    pub workers: Arc<worker::WorkerHub>,
    /// Checks operators' tokens and machines' credentials.
    pub auth: Arc<auth::Authenticator>,
    /// What `GET /metrics` encodes; its API instruments count this
    /// router's requests.
    pub metrics: Arc<metrics::Metrics>,
}

/// Where the boot services are (`GET /api/v1/boot`); a wire type, so it
/// lives with the others in the model.
pub use bellows_model::api::BootInfo;

/// Every route, for the OpenAPI consistency test: (method, path).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/boot"),
    ("get", "/api/v1/hardware"),
    ("post", "/api/v1/hardware"),
    ("get", "/api/v1/hardware/{id}"),
    ("put", "/api/v1/hardware/{id}"),
    ("delete", "/api/v1/hardware/{id}"),
    ("get", "/api/v1/hardware/{id}/logs"),
    ("get", "/api/v1/hardware/{id}/timeline"),
    ("get", "/api/v1/hardware/{id}/inventory"),
    ("get", "/api/v1/hardware/{id}/bmc"),
    ("put", "/api/v1/hardware/{id}/bmc"),
    ("delete", "/api/v1/hardware/{id}/bmc"),
    ("get", "/api/v1/bmcs"),
    ("get", "/api/v1/hardware/{id}/power"),
    ("post", "/api/v1/hardware/{id}/power"),
    ("post", "/api/v1/hardware/{id}/boot-device"),
    ("post", "/api/v1/hardware/{id}/netboot"),
    ("post", "/api/v1/hardware/{id}/enroll"),
    ("get", "/api/v1/rules"),
    ("post", "/api/v1/rules"),
    ("get", "/api/v1/rules/{name}"),
    ("delete", "/api/v1/rules/{name}"),
    ("post", "/api/v1/rules/test"),
    ("post", "/api/v1/workflow-sets"),
    ("get", "/api/v1/templates"),
    ("post", "/api/v1/templates"),
    ("get", "/api/v1/templates/{id}"),
    ("put", "/api/v1/templates/{id}"),
    ("delete", "/api/v1/templates/{id}"),
    ("get", "/api/v1/workflows"),
    ("post", "/api/v1/workflows"),
    ("get", "/api/v1/workflows/{id}"),
    ("delete", "/api/v1/workflows/{id}"),
    ("get", "/api/v1/workflows/{id}/events"),
    ("get", "/api/v1/workflows/{id}/logs"),
    ("post", "/api/v1/workflows/{id}/cancel"),
    ("get", "/api/v1/tokens"),
    ("post", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/{name}"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/changes"),
    ("get", "/metrics"),
];

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let counted = state.metrics.api.clone();
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/boot", get(boot))
        .route("/api/v1/hardware", get(hardware::list).post(hardware::push))
        .route(
            "/api/v1/hardware/{id}",
            get(hardware::get)
                .put(hardware::replace)
                .delete(hardware::delete),
        )
        .route("/api/v1/hardware/{id}/logs", get(hardware::logs))
        .route("/api/v1/hardware/{id}/timeline", get(hardware::timeline))
        .route("/api/v1/hardware/{id}/inventory", get(hardware::inventory))
        .route(
            "/api/v1/hardware/{id}/bmc",
            get(bmc::get).put(bmc::put).delete(bmc::delete),
        )
        .route("/api/v1/bmcs", get(bmc::list))
        .route(
            "/api/v1/hardware/{id}/power",
            get(power::status).post(power::power),
        )
        .route(
            "/api/v1/hardware/{id}/boot-device",
            axum::routing::post(power::boot_device),
        )
        .route(
            "/api/v1/hardware/{id}/netboot",
            axum::routing::post(power::netboot),
        )
        .route(
            "/api/v1/hardware/{id}/enroll",
            axum::routing::post(hardware::enroll),
        )
        .route("/api/v1/rules", get(rules::list).post(rules::put))
        .route(
            "/api/v1/rules/{name}",
            get(rules::get).delete(rules::delete),
        )
        .route("/api/v1/rules/test", axum::routing::post(rules::test))
        .route(
            "/api/v1/workflow-sets",
            axum::routing::post(rules::create_set),
        )
        .route(
            "/api/v1/templates",
            get(templates::list).post(templates::create),
        )
        .route(
            "/api/v1/templates/{id}",
            get(templates::get)
                .put(templates::update)
                .delete(templates::delete),
        )
        .route(
            "/api/v1/workflows",
            get(workflows::list).post(workflows::create),
        )
        .route(
            "/api/v1/workflows/{id}",
            get(workflows::get).delete(workflows::delete),
        )
        .route("/api/v1/workflows/{id}/events", get(workflows::events))
        .route("/api/v1/workflows/{id}/logs", get(workflows::logs))
        .route(
            "/api/v1/workflows/{id}/cancel",
            axum::routing::post(workflows::cancel),
        )
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route(
            "/api/v1/tokens/{name}",
            axum::routing::delete(tokens::revoke),
        )
        .route("/api/v1/audit", get(tokens::audit))
        .route("/metrics", get(metrics::serve))
        .route("/api/v1/changes", get(changes::serve))
        .route("/ui", get(console::redirect))
        .route("/ui/", get(console::index))
        .route("/ui/{file}", get(console::asset))
        // After routing, so the middleware knows the route's template.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_role,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read by `body::read` with its own limit and JSON error.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::map_response(json_rejections))
        .with_state(state.clone())
        .merge(worker::WorkerService::new(state.workers.clone(), state.auth.clone()).router());
    counted.count_requests(router, "api")
}

/// Serves the API on `listener` with the API's [`HttpLimits`] until
/// `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, HttpLimits::API, None, shutdown).await
}

/// [`serve`] with other limits (the server's flags, tests' short timeouts),
/// over TLS when `tls` is given.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    limits: HttpLimits,
    tls: Option<ListenerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // TCP_NODELAY is set on every connection by `serve_http`: workers get
    // their next action pushed right after their report is answered;
    // without it, Nagle holds that push ~40 ms waiting for a delayed ACK
    // (measured in bench/workers.sh).
    serve_http(listener, router(state), limits, tls, shutdown).await
}

/// axum's own extractor rejections (a malformed query string, a path that
/// is not UTF-8) are plain text; clients were promised `{code, message,
/// field}` for every error, so rewrite them here, in one place.
async fn json_rejections(resp: Response) -> Response {
    let status = resp.status();
    let is_text = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() && is_text) {
        return resp;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        _ => "bad_request",
    };
    ApiError::new(status, code, String::from_utf8_lossy(&bytes), None).into_response()
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn boot(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    axum::Json(state.boot.as_ref().clone())
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /api/v1/openapi.json",
        None,
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint; see /api/v1/openapi.json",
        None,
    )
}
