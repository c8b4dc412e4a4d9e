//! Request bodies: size-limited, decoded with errors that name the problem.

use axum::body::{Body, to_bytes};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::{ApiError, MAX_BODY_BYTES};

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] with a 413,
/// and one that does not arrive in time (the deadline `serve_http` put on
/// it) with a 408.
pub async fn read(body: Body) -> Result<axum::body::Bytes, ApiError> {
    to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| {
        if let Some(t) = crate::serve::timed_out(&e) {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", t.to_string(), None);
        }
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body is larger than the {MAX_BODY_BYTES}-byte limit"),
            None,
        )
    })
}

/// Parses JSON into `T`; malformed JSON or wrong types are a 400 naming the
/// line/column or field.
pub async fn json<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = read(body).await?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() && path != "." {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{path}: {inner}"),
                Some(path),
            )
        } else {
            ApiError::bad_request(format!("request body is not valid JSON: {inner}"))
        }
    })?;
    // Anything after the JSON value (`{…}}`) is an error, not ignored.
    de.end()
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    Ok(value)
}
