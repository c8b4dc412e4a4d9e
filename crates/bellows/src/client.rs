//! A small typed client for the management API, used by the CLI.

use std::marker::PhantomData;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::CliError;

/// Talks to one Bellows server.
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

/// The admin token a server on this machine wrote, for a CLI talking to
/// it over loopback: `$BELLOWS_DATA_DIR/admin.token`, else
/// `./bellows-data/admin.token`. Never read for another host, whose server
/// must not receive this one's token.
pub fn local_admin_token(base: &str) -> Option<String> {
    let host = base
        .split_once("://")
        .map_or(base, |(_, rest)| rest)
        .split(['/', '?'])
        .next()?;
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !local {
        return None;
    }
    let dir = std::env::var_os("BELLOWS_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("bellows-data"));
    let token =
        std::fs::read_to_string(dir.join(crate::server::bootstrap::ADMIN_TOKEN_FILE)).ok()?;
    Some(token.trim().to_string()).filter(|t| !t.is_empty())
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:42113`) sending `token`
    /// as its bearer credential.
    pub fn new(base: &str, token: Option<String>) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
            token,
        })
    }

    /// `GET path`, answered with a `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Answer<T>, CliError> {
        Ok(Answer::new(path, self.call(Method::GET, path, None).await?))
    }

    /// Sends `body` as JSON with `method`; the server answers with a `T`.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Answer<T>, CliError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| CliError::Usage(format!("cannot encode the request: {e}")))?;
        self.send_bytes(method, path, bytes).await
    }

    /// Sends a JSON body the operator wrote, as it is (the server, not the
    /// CLI, reads every shape it may have).
    pub async fn send_bytes<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Answer<T>, CliError> {
        Ok(Answer::new(
            path,
            self.call(method, path, Some(body)).await?,
        ))
    }

    /// `DELETE path`; the server answers with no content.
    pub async fn delete(&self, path: &str) -> Result<(), CliError> {
        self.call(Method::DELETE, path, None).await.map(drop)
    }

    /// Sends a request; returns the JSON body (or `Null` for 204).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
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
        } else if status == StatusCode::UNAUTHORIZED {
            Err(CliError::Api {
                status: status.as_u16(),
                message: format!(
                    "{} (give --token or BELLOWS_TOKEN; on the server's machine the CLI reads DATA_DIR/admin.token when BELLOWS_DATA_DIR names the data directory)",
                    value["message"].as_str().unwrap_or("unauthorized")
                ),
                field: None,
            })
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

/// A successful answer: the JSON exactly as the server sent it, which
/// `-o json` and `-o yaml` print unchanged, and its reading as a `T` for
/// the tables, done only when a table is printed.
pub struct Answer<T> {
    path: String,
    raw: Value,
    kind: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Answer<T> {
    fn new(path: &str, raw: Value) -> Answer<T> {
        Answer {
            path: path.to_string(),
            raw,
            kind: PhantomData,
        }
    }

    /// The JSON as the server sent it.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The answer as its API type; an answer of another shape (a server of
    /// another version) is an error naming the request.
    pub fn decode(self) -> Result<T, CliError> {
        serde_json::from_value(self.raw).map_err(|e| CliError::Unexpected {
            path: self.path,
            error: e.to_string(),
        })
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
