//! Container registry logins the server hands its workers, so the
//! in-memory OS can pull private action images without a password on the
//! kernel command line (which is served in the clear). Operators give
//! them as Docker's own `config.json` (`docker login` writes it).

use std::fmt;

use base64::Engine as _;

/// A user name and password for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// Registry host, as images name it ("quay.io", "10.0.0.1:5000";
    /// "docker.io" for Docker Hub).
    pub host: String,
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a Docker `config.json` gave no logins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryAuthError {
    /// Not JSON, or no `auths` object.
    #[error("not a Docker config.json with an \"auths\" object: {0}")]
    Format(String),
    /// One entry is unusable.
    #[error("auths.{host}: {message}")]
    Entry {
        /// The registry.
        host: String,
        /// What is wrong.
        message: String,
    },
}

/// The registry's host from an `auths` key ("https://index.docker.io/v1/"
/// is Docker Hub's historic key).
fn host_of(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// Reads the `auths` of a Docker `config.json`: each entry's `auth`
/// (base64 of `user:password`), or its `username` and `password`.
/// Credential helpers (`credsStore`) cannot be followed here and are
/// refused by name.
pub fn parse_docker_config(text: &str) -> Result<Vec<RegistryLogin>, RegistryAuthError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| RegistryAuthError::Format(e.to_string()))?;
    let auths = value
        .get("auths")
        .and_then(|a| a.as_object())
        .ok_or_else(|| RegistryAuthError::Format("\"auths\" is missing".into()))?;
    let mut out = Vec::new();
    for (key, entry) in auths {
        let host = host_of(key);
        let fail = |message: &str| RegistryAuthError::Entry {
            host: key.clone(),
            message: message.to_string(),
        };
        if host.is_empty() {
            return Err(fail("no registry host"));
        }
        let text = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or("");
        let (username, password) = if !text("auth").is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(text("auth").trim())
                .map_err(|_| fail("\"auth\" is not base64"))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| fail("\"auth\" is not UTF-8 text"))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| fail("\"auth\" is not base64 of USER:PASSWORD"))?;
            (u.to_string(), p.to_string())
        } else if !text("username").is_empty() {
            (text("username").to_string(), text("password").to_string())
        } else if !text("identitytoken").is_empty() {
            return Err(fail(
                "identity tokens (from a credential helper) are not supported: give auth or username and password",
            ));
        } else {
            return Err(fail("neither auth nor username is given"));
        };
        if username.is_empty() {
            return Err(fail("the user name is empty"));
        }
        out.push(RegistryLogin {
            host,
            username,
            password,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries_in_both_spellings() {
        let logins = parse_docker_config(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                "10.0.0.1:5000": {"username": "puller", "password": "s3cret"}
            }, "credsStore": "desktop"}"#,
        )
        .unwrap();
        assert_eq!(logins.len(), 2);
        assert_eq!(logins[0].host, "docker.io");
        assert_eq!(
            (logins[0].username.as_str(), logins[0].password.as_str()),
            ("user", "pa:ss")
        );
        assert_eq!(logins[1].host, "10.0.0.1:5000");
        assert!(!format!("{:?}", logins[1]).contains("s3cret"));
    }

    #[test]
    fn unusable_entries_are_named() {
        let e = parse_docker_config("[]").unwrap_err().to_string();
        assert!(e.contains("auths"), "{e}");
        let e = parse_docker_config(r#"{"auths":{"q.io":{"auth":"%%%"}}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "auths.q.io: \"auth\" is not base64");
        let e = parse_docker_config(r#"{"auths":{"q.io":{"identitytoken":"x"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("identity tokens"), "{e}");
        let e = parse_docker_config(r#"{"auths":{"q.io":{}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither auth nor username"), "{e}");
    }
}
