//! A small typed client for the management API, used by the CLI.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::error::CliError;

/// Talks to one Bellows server.
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:42113`).
    pub fn new(base: &str) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// Sends a request; returns the JSON body (or `Null` for 204).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let resp = req.send().await.map_err(|e| {
            CliError::Connect(format!(
                "cannot reach Bellows at {}: {} (is `bellows server` running? set --url or BELLOWS_URL)",
                self.base,
                root_cause(&e)
            ))
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CliError::Connect(format!("reading response from {url}: {e}")))?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| CliError::Api {
            status: status.as_u16(),
            message: format!(
                "unexpected non-JSON response: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
            field: None,
        })?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(CliError::Api {
                status: status.as_u16(),
                message: value["message"]
                    .as_str()
                    .unwrap_or("request failed")
                    .to_string(),
                field: value["field"].as_str().map(str::to_string),
            })
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Percent-encodes one path segment (ids are free text; MACs have colons).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
