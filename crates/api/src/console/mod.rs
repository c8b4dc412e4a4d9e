//! The web console (`/ui/`): one page and one script, vendored here, no
//! build step. The page carries no data: the script asks the REST API for
//! everything with the token the operator gives it (kept for the browser
//! tab only, in `sessionStorage`), so every request passes the same
//! authentication and roles as the CLI's; workflows progress live from
//! `GET /api/v1/changes` (server-sent events), not from polling. A strict
//! Content-Security-Policy allows only this origin's script and styles,
//! and the script writes text, never markup, so stored data cannot run.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// What the browser may load and send: this origin only, no inline code,
/// no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `/ui` → `/ui/`, so the script's relative paths resolve.
pub(crate) async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// The page.
pub(crate) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// The script and the styles; nothing else is there.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "console.js" => page("text/javascript; charset=utf-8", SCRIPT),
        "console.css" => page("text/css; charset=utf-8", STYLE),
        _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
