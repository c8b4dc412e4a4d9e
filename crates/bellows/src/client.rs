//! A small typed client for the management API, used by the CLI.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

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

/// The data directory of a server on this machine, when `base` is a
/// loopback URL: `$BELLOWS_DATA_DIR`, else `./bellows-data`. None for
/// another host, whose server must not receive this one's token.
fn local_data_dir(base: &str) -> Option<PathBuf> {
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
    Some(
        std::env::var_os("BELLOWS_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("bellows-data")),
    )
}

/// The admin token a server on this machine wrote, for a CLI talking to
/// it over loopback (see [`local_data_dir`]).
pub fn local_admin_token(base: &str) -> Option<String> {
    let dir = local_data_dir(base)?;
    let token =
        std::fs::read_to_string(dir.join(crate::server::bootstrap::ADMIN_TOKEN_FILE)).ok()?;
    Some(token.trim().to_string()).filter(|t| !t.is_empty())
}

/// The CA certificates the CLI trusts for `base`: `--ca`, else the own CA
/// of a server on this machine; None for the system's trust store.
fn trusted_ca(
    base: &str,
    ca: Option<&Path>,
) -> Result<Option<Vec<reqwest::Certificate>>, CliError> {
    let (path, given) = match ca {
        Some(path) => (path.to_path_buf(), true),
        None => match local_data_dir(base) {
            Some(dir) => (
                dir.join(crate::server::tls::TLS_DIR)
                    .join(crate::server::tls::CA_CERT_FILE),
                false,
            ),
            None => return Ok(None),
        },
    };
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(_) if !given => return Ok(None),
        Err(e) => {
            return Err(CliError::Usage(format!("--ca {}: {e}", path.display())));
        }
    };
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| CliError::Usage(format!("{}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: holds no CERTIFICATE block",
            path.display()
        )));
    }
    Ok(Some(certs))
}

impl Client {
    /// A client for `base` (e.g. `https://127.0.0.1:42113`) sending `token`
    /// as its bearer credential, trusting the CA in `ca` (see
    /// [`trusted_ca`]).
    pub fn new(base: &str, token: Option<String>, ca: Option<&Path>) -> Result<Client, CliError> {
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .connect_timeout(std::time::Duration::from_secs(5));
        if base.starts_with("https://")
            && let Some(certs) = trusted_ca(base, ca)?
        {
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
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
            let cause = root_cause(&e);
            CliError::Connect(format!(
                "cannot reach Bellows at {}: {cause}{}",
                self.base,
                connect_hint(&self.base, &cause)
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

/// What to try when the server cannot be reached.
fn connect_hint(base: &str, cause: &str) -> &'static str {
    let tls = [
        "certificate",
        "Certificate",
        "UnknownIssuer",
        "tls",
        "TLS",
        "handshake",
    ];
    if base.starts_with("https://") && tls.iter().any(|w| cause.contains(w)) {
        " (the server's certificate is not trusted: give --ca FILE or BELLOWS_CA, the server's DATA_DIR/tls/ca.crt; a server started with --insecure speaks http://)"
    } else if base.starts_with("http://") && cause.contains("connection closed") {
        " (a server with TLS on speaks https://)"
    } else {
        " (is `bellows server` running? set --url or BELLOWS_URL)"
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
