//! `/api/v1/tokens` (create, list, revoke) and `/api/v1/audit`: admin only
//! (the middleware checks the role before these run).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bellows_model::api::List;
use bellows_model::auth::{AuditEntry, CreatedToken, NewToken, TokenRecord};
use serde::Deserialize;

use crate::auth::Operator;
use crate::{ApiError, AppState, body};

/// Creates a token; the answer carries it, the only time it is shown.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(operator): Extension<Operator>,
    body: Body,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let req: NewToken = body::json(body).await?;
    let created = state
        .auth
        .create_token(&req.name, req.role, &operator.name)
        .await?;
    tracing::info!(name = %req.name, role = %req.role, by = %operator.name, "token created");
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists tokens (names and roles; never the tokens).
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<List<TokenRecord>>, ApiError> {
    Ok(Json(List {
        items: state.auth.tokens().list_api_tokens().await?,
    }))
}

/// Revokes a token at once. The last admin token cannot be revoked: the
/// server would have no one left to make new ones.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(operator): Extension<Operator>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.tokens().revoke_api_token(&name).await?;
    tracing::info!(name = %name, by = %operator.name, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    limit: Option<u32>,
}

/// The newest changes made through the API, oldest first.
pub(crate) async fn audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<List<AuditEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(200).clamp(1, 10_000);
    Ok(Json(List {
        items: state.auth.tokens().audit(limit).await?,
    }))
}
