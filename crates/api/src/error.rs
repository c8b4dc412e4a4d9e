//! The one error body every endpoint returns: `{code, message, field}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bellows_model::ValidationError;
use bellows_store::StoreError;
use serde::Serialize;

/// An API failure, with the HTTP status it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code: `bad_request`, `invalid`, `not_found`,
    /// `conflict`, `too_large`, `timeout`, `method_not_allowed`, `internal`,
    /// `password_required`, `secret_unreadable`, and the BMC codes.
    pub code: &'static str,
    /// Human-readable cause, naming the fix where there is one.
    pub message: String,
    /// Field path at fault, if one.
    pub field: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    field: Option<&'a str>,
}

impl ApiError {
    /// 400: the request could not be read at all (not JSON, wrong types).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message, None)
    }

    /// 404 for a named object.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{kind} {id:?} not found"),
            None,
        )
    }

    /// 422 for a field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            message,
            Some(field.into()),
        )
    }

    /// Any status.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: field.filter(|f| !f.is_empty()),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            e.to_string(),
            Some(e.field),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, id } => Self::not_found(kind, &id),
            StoreError::Conflict { field, message } => {
                Self::new(StatusCode::CONFLICT, "conflict", message, field)
            }
            StoreError::Transition(t) => {
                Self::new(StatusCode::CONFLICT, "conflict", t.to_string(), None)
            }
            e @ StoreError::PasswordRequired { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "password_required",
                e.to_string(),
                Some("password".into()),
            ),
            e @ StoreError::Secret { .. } => {
                tracing::error!(error = %e, "BMC password unusable");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "secret_unreadable",
                    e.to_string(),
                    None,
                )
            }
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "the database is unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("the database is unavailable ({e}); retry once it is back"),
                    None,
                )
            }
            other => {
                tracing::error!(error = %other, "store failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("internal error: {other}"),
                    None,
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            code: self.code,
            message: &self.message,
            field: self.field.as_deref(),
        };
        (self.status, Json(body)).into_response()
    }
}
