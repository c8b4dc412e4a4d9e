//! Request bodies: size-limited, decoded with errors that name the problem.

use axum::body::Body;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::{ApiError, MAX_BODY_BYTES};

/// How much of an oversized body is read and thrown away before the 413 is
/// sent: a client still writing its body (over TLS above all) would
/// otherwise get a broken pipe instead of the answer. Bounded in bytes here
/// and in time by the body deadline.
const DRAIN_BYTES: usize = 8 * MAX_BODY_BYTES;

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] with a 413,
/// and one that does not arrive in time (the deadline `serve_http` put on
/// it) with a 408.
pub async fn read(body: Body) -> Result<axum::body::Bytes, ApiError> {
    use tokio_stream::StreamExt;
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match crate::serve::timed_out(&e) {
            Some(t) => ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", t.to_string(), None),
            None => ApiError::bad_request(format!("cannot read the request body: {e}")),
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen > DRAIN_BYTES {
            break;
        }
        if seen <= MAX_BODY_BYTES {
            kept.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body is larger than the {MAX_BODY_BYTES}-byte limit"),
            None,
        ));
    }
    Ok(kept.into())
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
