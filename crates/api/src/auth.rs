//! Who is calling: operators prove themselves with a bearer token that has
//! a role; a machine's worker with the per-boot credential its boot script
//! carried on the kernel command line. See SECURITY.md for the model.
//!
//! The REST side is one middleware ([`require_role`]) that maps each
//! route to the least role allowed on it, records every change in the
//! audit log, and withholds secrets from viewers; handlers see the
//! [`Operator`] as a request extension. The gRPC side asks
//! [`Authenticator::worker`] on every call.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bellows_model::auth::{
    AuditEntry, CreatedToken, Role, TOKEN_BYTES, TokenRecord, WorkerCredential, token_digest,
    token_text,
};
use bellows_model::{State as WorkflowState, time::now_ms};
use bellows_store::{AuthStore, CredentialLookup, Store, StoreError};
use ring::rand::{SecureRandom, SystemRandom};

use crate::{ApiError, AppState};

/// How long after its workflow ended a per-boot credential may still send
/// the last log lines and reports (they are refused by the workflow's own
/// rules after that anyway).
const CREDENTIAL_GRACE_MS: i64 = 5 * 60 * 1000;

/// How the server checks callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSettings {
    /// No tokens at all: everyone is an admin and any worker id is
    /// believed. Only with `--insecure`; the server warns loudly.
    pub insecure: bool,
    /// Per-boot credentials work only from the machine's reserved address
    /// when it has one. Off for relayed or NATed networks.
    pub bind_to_address: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            insecure: false,
            bind_to_address: true,
        }
    }
}

/// An operator, as proven by a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The token's name, recorded with every change it makes.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// Who a worker call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerCaller {
    /// An operator token (operator or admin): may act as any worker, as
    /// `bellows worker` on an ordinary host does.
    Operator(Operator),
    /// A machine's per-boot credential: may act only as its own worker.
    Machine(WorkerCredential),
}

/// Random tokens could not be made: the OS random source failed.
#[derive(Debug, thiserror::Error)]
#[error("the system random source failed")]
pub struct RandomUnavailable;

/// A new random token with `prefix`.
pub fn new_token(prefix: &str) -> Result<String, RandomUnavailable> {
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomUnavailable)?;
    Ok(token_text(prefix, &bytes))
}

/// Checks tokens and credentials against the store.
pub struct Authenticator {
    tokens: Arc<dyn AuthStore>,
    store: Arc<dyn Store>,
    settings: AuthSettings,
    /// Discovery credentials, when the server runs discovery.
    discovery: std::sync::OnceLock<crate::discovery::DiscoveryTokens>,
}

/// Who a `Discover` call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryCaller {
    /// An operator token (operator or admin): may report for any MAC, as
    /// `bellows worker --discovery` on an ordinary host does.
    Operator(Operator),
    /// A machine's discovery credential: reports for its own MAC only.
    Machine(crate::discovery::DiscoveryClaim),
}

impl Authenticator {
    /// An authenticator over `tokens` (credentials) and `store` (whose
    /// workflows decide whether a machine's credential is still alive).
    pub fn new(
        tokens: Arc<dyn AuthStore>,
        store: Arc<dyn Store>,
        settings: AuthSettings,
    ) -> Arc<Authenticator> {
        Arc::new(Authenticator {
            tokens,
            store,
            settings,
            discovery: std::sync::OnceLock::new(),
        })
    }

    /// Accepts discovery credentials signed with `tokens`' key (set once,
    /// at start, when the server runs discovery).
    pub fn enable_discovery(&self, tokens: crate::discovery::DiscoveryTokens) {
        let _ = self.discovery.set(tokens);
    }

    /// Discovery credentials, if discovery is on.
    pub fn discovery_tokens(&self) -> Option<&crate::discovery::DiscoveryTokens> {
        self.discovery.get()
    }

    /// Who a `Discover` call with these headers, from `peer`, comes from:
    /// a discovery credential (checked, and bound to its address unless
    /// `--no-bind-credentials`), or an operator token.
    pub async fn discovery_caller(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<DiscoveryCaller, tonic::Status> {
        if self.settings.insecure {
            return Ok(DiscoveryCaller::Operator(insecure_operator()));
        }
        let token = bearer(headers).ok_or_else(|| {
            tonic::Status::unauthenticated(
                "no credential: a discovering machine sends the bellows.token= of its boot",
            )
        })?;
        if token.starts_with(crate::discovery::DISCOVERY_TOKEN_PREFIX) {
            let tokens = self.discovery.get().ok_or_else(|| {
                tonic::Status::failed_precondition("discovery is off on this server")
            })?;
            let claim = tokens
                .verify(token, now_ms())
                .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
            if self.settings.bind_to_address
                && let Some(bound) = claim.address
            {
                let from = peer.map(|p| canonical(p.ip()));
                if from != Some(canonical(bound)) {
                    tracing::warn!(mac = %claim.mac, from = ?from, %bound,
                        "a discovery credential was used from another address");
                    return Err(tonic::Status::permission_denied(
                        "this credential works only from the address the machine was leased",
                    ));
                }
            }
            return Ok(DiscoveryCaller::Machine(claim));
        }
        self.operator_for_machine_call(
            &token_digest(token),
            "reporting a discovery",
            "the credential is not valid (a per-boot credential cannot report a discovery)",
        )
        .await
        .map(DiscoveryCaller::Operator)
    }

    /// The operator behind an API token with `digest` making a call a
    /// machine would make (`doing` it): operator or admin only; `unknown`
    /// is the refusal when no token has that digest.
    async fn operator_for_machine_call(
        &self,
        digest: &str,
        doing: &str,
        unknown: &'static str,
    ) -> Result<Operator, tonic::Status> {
        match self
            .tokens
            .api_token_by_digest(digest)
            .await
            .map_err(unavailable)?
        {
            Some(t) if t.role.allows(Role::Operator) => Ok(Operator {
                name: t.name,
                role: t.role,
            }),
            Some(t) => Err(tonic::Status::permission_denied(format!(
                "token {:?} is a {}; {doing} needs operator or admin",
                t.name, t.role
            ))),
            None => Err(tonic::Status::unauthenticated(unknown)),
        }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> AuthSettings {
        self.settings
    }

    /// The credentials store, for the token endpoints.
    pub fn tokens(&self) -> &Arc<dyn AuthStore> {
        &self.tokens
    }

    /// Creates an operator token; the answer is the only time it is shown.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        created_by: &str,
    ) -> Result<CreatedToken, ApiError> {
        bellows_model::auth::check_token_name(name)
            .map_err(|e| ApiError::invalid("name", e.to_string()))?;
        let token = new_token(bellows_model::auth::API_TOKEN_PREFIX).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
                None,
            )
        })?;
        let record = TokenRecord {
            name: name.to_string(),
            role,
            created_at: now_ms(),
            created_by: created_by.to_string(),
        };
        self.tokens
            .create_api_token(&record, &token_digest(&token))
            .await?;
        Ok(CreatedToken { record, token })
    }

    /// The operator behind an `Authorization: Bearer` header.
    pub async fn operator(&self, headers: &HeaderMap) -> Result<Operator, ApiError> {
        if self.settings.insecure {
            return Ok(insecure_operator());
        }
        let token = bearer(headers).ok_or_else(|| unauthorized("this endpoint needs a token: send `Authorization: Bearer TOKEN` (the CLI reads BELLOWS_TOKEN, or the server's admin.token when it runs on the same machine)"))?;
        self.operator_by_token(token).await
    }

    async fn operator_by_token(&self, token: &str) -> Result<Operator, ApiError> {
        match self
            .tokens
            .api_token_by_digest(&token_digest(token))
            .await?
        {
            Some(t) => Ok(Operator {
                name: t.name,
                role: t.role,
            }),
            None => Err(unauthorized(
                "the token is not valid (revoked, or never issued here)",
            )),
        }
    }

    /// Who a worker call with these headers, from `peer`, comes from.
    /// Operator and admin tokens are accepted too; viewers are not.
    pub async fn worker(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<WorkerCaller, tonic::Status> {
        if self.settings.insecure {
            return Ok(WorkerCaller::Operator(insecure_operator()));
        }
        let token = bearer(headers).ok_or_else(|| {
            tonic::Status::unauthenticated(
                "no credential: workers send `authorization: Bearer` with the bellows.token= of their boot",
            )
        })?;
        let digest = token_digest(token);
        let lookup = self
            .tokens
            .worker_credential(&digest)
            .await
            .map_err(unavailable)?;
        let Some(CredentialLookup {
            credential,
            workflow_active,
        }) = lookup
        else {
            return self
                .operator_for_machine_call(
                    &digest,
                    "acting as a worker",
                    "the credential is not valid (from an earlier boot, or never issued)",
                )
                .await
                .map(WorkerCaller::Operator);
        };
        if self.settings.bind_to_address
            && let Some(bound) = credential.address.as_deref()
        {
            let from = peer.map(|p| canonical(p.ip()));
            if from.map(|ip| ip.to_string()).as_deref() != Some(bound) {
                tracing::warn!(
                    worker = %credential.worker,
                    from = ?from,
                    bound,
                    "a machine's credential was used from another address"
                );
                return Err(tonic::Status::permission_denied(
                    "this credential works only from the machine's reserved address",
                ));
            }
        }
        // An unfinished workflow was read with the credential; an ended one
        // is read whole for when it stopped.
        let alive = workflow_active || {
            let workflow = self
                .store
                .workflow(&credential.workflow_id)
                .await
                .map_err(unavailable)?;
            workflow.is_some_and(|wf| match wf.state {
                WorkflowState::Pending | WorkflowState::Running => true,
                _ => wf
                    .stopped_at
                    .is_some_and(|t| now_ms().saturating_sub(t) < CREDENTIAL_GRACE_MS),
            })
        };
        if !alive {
            return Err(tonic::Status::unauthenticated(
                "the credential's workflow has ended; the machine must boot again",
            ));
        }
        Ok(WorkerCaller::Machine(credential))
    }
}

/// `Some(token)` from `Authorization: Bearer TOKEN`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn insecure_operator() -> Operator {
    Operator {
        name: "anonymous (insecure)".into(),
        role: Role::Admin,
    }
}

fn unavailable(e: StoreError) -> tonic::Status {
    tonic::Status::unavailable(format!("store: {e}"))
}

/// IPv4-mapped IPv6 addresses as their IPv4 address, as reservations are
/// written.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message, None)
}

/// The least role allowed on a route, `None` for public ones.
pub fn required_role(method: &Method, route: &str) -> Option<Role> {
    match route {
        // The console's page and script carry no data; every request they
        // make passes this middleware with the operator's token.
        "/healthz" | "/api/v1/openapi.json" | "/ui" | "/ui/" | "/ui/{file}" => None,
        "/api/v1/tokens" | "/api/v1/tokens/{name}" | "/api/v1/audit" => Some(Role::Admin),
        "/api/v1/hardware/{id}/bmc" if method != Method::GET && method != Method::HEAD => {
            Some(Role::Admin)
        }
        // Answers a question; changes nothing.
        "/api/v1/rules/test" => Some(Role::Viewer),
        _ if method == Method::GET || method == Method::HEAD => Some(Role::Viewer),
        _ => Some(Role::Operator),
    }
}

/// The middleware: 401 without a valid token, 403 for a role that may
/// not, the audit entry for every change, and secrets withheld from
/// viewers.
pub async fn require_role(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = req.method().clone();
    let Some(needed) = required_role(&method, &route) else {
        return next.run(req).await;
    };
    let operator = match state.auth.operator(req.headers()).await {
        Ok(op) => op,
        Err(e) => {
            let mut resp = e.into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bellows\""),
            );
            return resp;
        }
    };
    if !operator.role.allows(needed) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} is a {}; this needs {}",
                operator.name, operator.role, needed
            ),
            None,
        )
        .into_response();
    }
    let path = req.uri().path().to_string();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let viewer = operator.role == Role::Viewer;
    req.extensions_mut().insert(operator.clone());
    let resp = next.run(req).await;
    if method != Method::GET && method != Method::HEAD {
        let entry = AuditEntry {
            at: now_ms(),
            actor: operator.name.clone(),
            method: method.to_string(),
            path: path.clone(),
            status: resp.status().as_u16(),
        };
        tracing::info!(actor = %entry.actor, method = %entry.method, path = %entry.path, status = entry.status, peer = ?peer, "API change");
        if let Err(e) = state.auth.tokens().append_audit(&entry).await {
            tracing::warn!("cannot record the audit entry: {e}");
        }
    }
    if viewer && resp.status().is_success() {
        return withhold_secrets(&route, resp).await;
    }
    resp
}

/// Largest response body the viewer filter reads; bigger ones are refused
/// rather than passed on unfiltered.
const MAX_FILTERED_BODY: usize = 64 << 20;

/// Removes what a viewer may not read: user-data, rendered workflows (their
/// action environments hold passwords and tokens), template sources.
async fn withhold_secrets(route: &str, resp: Response) -> Response {
    let strip: fn(&mut serde_json::Value) = match route {
        "/api/v1/hardware" | "/api/v1/hardware/{id}" => strip_hardware,
        "/api/v1/workflows" | "/api/v1/workflows/{id}" => strip_workflow,
        "/api/v1/templates" | "/api/v1/templates/{id}" => strip_template,
        _ => return resp,
    };
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FILTERED_BODY).await else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "response too large to filter for a viewer",
            None,
        )
        .into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    match value.get_mut("items").and_then(|v| v.as_array_mut()) {
        Some(items) => items.iter_mut().for_each(strip),
        None => strip(&mut value),
    }
    let body = serde_json::to_vec(&value).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

const WITHHELD: &str = "(withheld from viewers)";

fn strip_hardware(v: &mut serde_json::Value) {
    if let Some(o) = v.as_object_mut()
        && o.contains_key("user_data")
    {
        o.insert("user_data".into(), WITHHELD.into());
    }
    if let Some(instance) = v
        .pointer_mut("/metadata/instance")
        .and_then(|i| i.as_object_mut())
        && instance.contains_key("userdata")
    {
        instance.insert("userdata".into(), WITHHELD.into());
    }
}

fn strip_workflow(v: &mut serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("rendered".into(), WITHHELD.into());
    }
}

fn strip_template(v: &mut serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("data".into(), WITHHELD.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_the_least_role_it_needs() {
        let g = Method::GET;
        let p = Method::POST;
        assert_eq!(required_role(&g, "/healthz"), None);
        assert_eq!(required_role(&g, "/api/v1/openapi.json"), None);
        assert_eq!(required_role(&g, "/api/v1/hardware"), Some(Role::Viewer));
        assert_eq!(required_role(&p, "/api/v1/hardware"), Some(Role::Operator));
        assert_eq!(
            required_role(&p, "/api/v1/hardware/{id}/power"),
            Some(Role::Operator)
        );
        assert_eq!(
            required_role(&g, "/api/v1/hardware/{id}/bmc"),
            Some(Role::Viewer)
        );
        assert_eq!(
            required_role(&Method::PUT, "/api/v1/hardware/{id}/bmc"),
            Some(Role::Admin)
        );
        assert_eq!(required_role(&g, "/api/v1/tokens"), Some(Role::Admin));
        assert_eq!(required_role(&g, "/api/v1/audit"), Some(Role::Admin));
        // Every route in the table is covered (no route is public by
        // accident).
        for (method, path) in crate::ROUTES {
            let m: Method = method.to_uppercase().parse().expect("method");
            let public = matches!(*path, "/healthz" | "/api/v1/openapi.json");
            assert_eq!(required_role(&m, path).is_none(), public, "{method} {path}");
        }
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_trimmed() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn viewers_do_not_see_user_data_rendered_workflows_or_template_sources() {
        let mut hw = serde_json::json!({"id": "m", "user_data": "#cloud-config\npassword: x",
            "metadata": {"instance": {"userdata": "secret", "hostname": "m"}}});
        strip_hardware(&mut hw);
        assert_eq!(hw["user_data"], WITHHELD);
        assert_eq!(hw["metadata"]["instance"]["userdata"], WITHHELD);
        assert_eq!(hw["metadata"]["instance"]["hostname"], "m");
        let mut wf = serde_json::json!({"id": "w", "rendered": "env: {PASSWORD: x}"});
        strip_workflow(&mut wf);
        assert_eq!(wf["rendered"], WITHHELD);
        let mut t = serde_json::json!({"id": "t", "data": "x"});
        strip_template(&mut t);
        assert_eq!(t["data"], WITHHELD);
    }
}
