//! A registry client for pulling (the distribution spec's v2 API): the
//! manifest (through an index when the image has several platforms), the
//! config and the layers, each checked against its digest and the size the
//! manifest claims, with the registry's own authentication (anonymous,
//! basic, or a bearer token from its token service). Layers stream to
//! files; nothing a registry sends is held in memory beyond
//! [`MAX_DOCUMENT_BYTES`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use super::auth::{Challenge, parse_challenge, pull_scope, token_from_response};
use super::manifest::{
    Descriptor, Digest, Document, ImageConfig, ImageManifest, MAX_DOCUMENT_BYTES, ManifestError,
    Platform, accept_header, check_platform, choose, parse_config, parse_document,
};
use crate::builtin::error_chain;
use crate::container::RegistryCredentials;
use crate::reference::{ImageRef, registry_key};

/// Where images come from and how to reach their registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Credentials by registry host (normalised as Docker does: "docker.io"
    /// for Docker Hub).
    pub credentials: BTreeMap<String, RegistryCredentials>,
    /// Registries ("host:port") reached over plain HTTP: a lab's
    /// `docker-registry`. Loopback registries always are, as with Docker.
    pub insecure: Vec<String>,
}

/// Why an image could not be pulled; each names the image and the cause.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry has no such image or tag.
    #[error("image {image} was not found on {registry}: {message}")]
    NotFound {
        /// The image.
        image: String,
        /// The registry.
        registry: String,
        /// The registry's own words.
        message: String,
    },
    /// The registry wants credentials, or refused the ones given.
    #[error("registry {registry} refused to serve {image}: {why}")]
    Unauthorized {
        /// The image.
        image: String,
        /// The registry.
        registry: String,
        /// What happened.
        why: Refusal,
    },
    /// The manifest, index or config is unusable, or for another machine.
    #[error("image {image}: {source}")]
    Manifest {
        /// The image.
        image: String,
        /// What is wrong.
        source: ManifestError,
    },
    /// The registry answered with an unexpected status.
    #[error("image {image}: {registry} answered {status} for {what}: {message}")]
    Status {
        /// The image.
        image: String,
        /// The registry.
        registry: String,
        /// The status.
        status: u16,
        /// Which request.
        what: String,
        /// The registry's own words.
        message: String,
    },
    /// The registry could not be reached or the transfer broke.
    #[error("image {image}: {registry}: {message}")]
    Transport {
        /// The image.
        image: String,
        /// The registry.
        registry: String,
        /// The cause.
        message: String,
    },
    /// A blob was not what its descriptor promised.
    #[error("image {image}: blob {digest}: {message}")]
    Blob {
        /// The image.
        image: String,
        /// The blob.
        digest: String,
        /// Size or digest mismatch.
        message: String,
    },
    /// The local disk refused.
    #[error("image {image}: {path}: {source}")]
    Io {
        /// The image.
        image: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a registry did not serve an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It wants a login and this worker has none for it.
    NeedsLogin,
    /// It refused the login this worker has.
    LoginRefused,
    /// It answered 401 without a challenge Bellows can answer.
    NoChallenge,
    /// It answered 403 (no access, or an expired redirect).
    Forbidden(String),
    /// Its token service is one credentials are not sent to.
    UntrustedRealm(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NeedsLogin => f.write_str(
                "it needs a login (on the server: --registry-auth FILE, a Docker config.json; on a worker: --registry-user HOST=USER with BELLOWS_REGISTRY_PASSWORD)",
            ),
            Refusal::LoginRefused => f.write_str("it refused the login given for it"),
            Refusal::NoChallenge => {
                f.write_str("it answered 401 without an authentication challenge Bellows can answer")
            }
            Refusal::Forbidden(host) => write!(f, "{host} answered 403 Forbidden"),
            Refusal::UntrustedRealm(realm) => write!(
                f,
                "its token service {realm} is neither HTTPS nor the registry itself, so no login is sent to it"
            ),
        }
    }
}

/// An image resolved to one manifest for this machine.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The manifest's digest: the image's identity.
    pub digest: Digest,
    /// Its layers and config descriptor.
    pub manifest: ImageManifest,
    /// What its config says about running it.
    pub config: ImageConfig,
}

/// How a request authenticates, once the registry said how.
#[derive(Clone)]
enum Auth {
    Basic(RegistryCredentials),
    Bearer(String),
}

/// Pulls from registries (see the module docs). Cheap to share.
pub struct RegistryClient {
    http: reqwest::Client,
    credentials: crate::container::Credentials,
    insecure: BTreeSet<String>,
    /// What worked last, by "host scope".
    auth: Mutex<HashMap<String, Auth>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registries_with_credentials", &self.credentials.hosts())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl RegistryClient {
    /// Takes the logins the server handed the worker.
    pub fn learn(&self, logins: &[(String, RegistryCredentials)]) {
        self.credentials.learn(logins);
    }

    /// A client with the system's trust store for HTTPS registries.
    pub fn new(options: RegistryOptions) -> Result<RegistryClient, String> {
        let http = crate::builtin::https_client(Duration::from_secs(15), Duration::from_secs(60))?;
        Ok(RegistryClient {
            http,
            credentials: crate::container::Credentials::new(options.credentials),
            insecure: options.insecure.iter().map(|h| registry_key(h)).collect(),
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// `http` or `https` for `host`.
    fn base(&self, host: &str) -> String {
        if is_loopback(host) || self.insecure.contains(&host.to_ascii_lowercase()) {
            format!("http://{host}")
        } else {
            format!("https://{host}")
        }
    }

    /// Finds this machine's manifest of `image` and reads its config.
    pub(crate) async fn resolve(
        &self,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<Resolved, PullError> {
        let name = image.full();
        let manifest_error = |source| PullError::Manifest {
            image: name.clone(),
            source,
        };
        let (body, content_type) = self.document(image, &image.tag_or_digest()).await?;
        let mut digest = Digest::of(&body);
        if let Some(pinned) = image.digest() {
            let pinned = Digest::parse(pinned).map_err(manifest_error)?;
            if pinned != digest {
                return Err(PullError::Blob {
                    image: name,
                    digest: pinned.to_string(),
                    message: format!("the registry's manifest has digest {digest}"),
                });
            }
        }
        let manifest = match parse_document(content_type.as_deref(), &body)
            .map_err(manifest_error)?
        {
            Document::Manifest(m) => m,
            Document::Index(list) => {
                let chosen = choose(&list, platform).map_err(manifest_error)?.clone();
                let (body, content_type) = self.document(image, &chosen.digest.to_string()).await?;
                digest = Digest::of(&body);
                if digest != chosen.digest {
                    return Err(PullError::Blob {
                        image: name,
                        digest: chosen.digest.to_string(),
                        message: format!("the registry's manifest has digest {digest}"),
                    });
                }
                match parse_document(content_type.as_deref(), &body).map_err(manifest_error)? {
                    Document::Manifest(m) => m,
                    Document::Index(_) => {
                        return Err(manifest_error(ManifestError::Invalid {
                            what: "index",
                            message: "it names another index, not a manifest".into(),
                        }));
                    }
                }
            }
        };
        if manifest.config.size > MAX_DOCUMENT_BYTES as u64 {
            return Err(PullError::Blob {
                image: name,
                digest: manifest.config.digest.to_string(),
                message: format!("a config of {} bytes is too large", manifest.config.size),
            });
        }
        let url = self.blob_url(image, &manifest.config.digest);
        let response = self.get(image, &url, None).await?;
        let response = self.expect_ok(image, response, "the image config").await?;
        let bytes = self
            .read_bounded(image, response, manifest.config.size as usize)
            .await?;
        check_blob(
            &name,
            &manifest.config,
            bytes.len() as u64,
            &Digest::of(&bytes),
        )?;
        let config = parse_config(&bytes).map_err(manifest_error)?;
        check_platform(platform, &config.platform).map_err(manifest_error)?;
        Ok(Resolved {
            digest,
            manifest,
            config,
        })
    }

    /// Downloads the blob `descriptor` names to `dest` (through a temporary
    /// file beside it), checking its size and digest; `progress` gets the
    /// bytes received so far.
    pub(crate) async fn fetch_blob(
        &self,
        image: &ImageRef,
        descriptor: &Descriptor,
        dest: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), PullError> {
        let name = image.full();
        let io = |path: &Path| {
            let image = name.clone();
            let path = path.display().to_string();
            move |source| PullError::Io {
                image,
                path,
                source,
            }
        };
        let url = self.blob_url(image, &descriptor.digest);
        let response = self.get(image, &url, None).await?;
        let mut response = self
            .expect_ok(image, response, &format!("layer {}", descriptor.digest))
            .await?;
        let tmp = dest.with_extension("partial");
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        let mut hasher = sha2::Sha256::new();
        let mut received: u64 = 0;
        let result = async {
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.transport(image, &e))?
            {
                received += chunk.len() as u64;
                if received > descriptor.size {
                    return Err(PullError::Blob {
                        image: name.clone(),
                        digest: descriptor.digest.to_string(),
                        message: format!(
                            "the registry sent more than the {} bytes the manifest gives",
                            descriptor.size
                        ),
                    });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io(&tmp))?;
                progress(received);
            }
            file.flush().await.map_err(io(&tmp))?;
            check_blob(
                &name,
                descriptor,
                received,
                &Digest::from_hash(&hasher.finalize()[..]),
            )
        }
        .await;
        drop(file);
        match result {
            Ok(()) => tokio::fs::rename(&tmp, dest).await.map_err(io(dest)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// The response carrying the blob `descriptor` names, for a caller that
    /// streams it elsewhere (oci2disk) and checks its digest itself.
    pub(crate) async fn blob_response(
        &self,
        image: &ImageRef,
        descriptor: &Descriptor,
    ) -> Result<reqwest::Response, PullError> {
        let url = self.blob_url(image, &descriptor.digest);
        let response = self.get(image, &url, None).await?;
        self.expect_ok(image, response, &format!("blob {}", descriptor.digest))
            .await
    }

    fn blob_url(&self, image: &ImageRef, digest: &Digest) -> String {
        format!(
            "{}/v2/{}/blobs/{digest}",
            self.base(&image.api_host()),
            image.repository()
        )
    }

    /// A manifest or index by tag or digest, with its content type.
    async fn document(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>), PullError> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.base(&image.api_host()),
            image.repository()
        );
        let response = self.get(image, &url, Some(&accept_header())).await?;
        let response = self.expect_ok(image, response, "the manifest").await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = self
            .read_bounded(image, response, MAX_DOCUMENT_BYTES)
            .await?;
        Ok((body, content_type))
    }

    fn transport(&self, image: &ImageRef, error: &reqwest::Error) -> PullError {
        PullError::Transport {
            image: image.full(),
            registry: image.registry_host(),
            message: error_chain(error),
        }
    }

    /// A GET that answers the registry's authentication challenge once.
    async fn get(
        &self,
        image: &ImageRef,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, PullError> {
        let host = image.api_host();
        let key = format!("{host} {}", pull_scope(&image.repository()));
        let known = self.auth.lock().ok().and_then(|m| m.get(&key).cloned());
        let response = self.send(image, url, accept, known.as_ref()).await?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        // A 401 from wherever a redirect led is not the registry's to answer.
        let registry_url = reqwest::Url::parse(&self.base(&host)).ok();
        let same_host = |u: &reqwest::Url| {
            registry_url.as_ref().is_some_and(|r| {
                r.host_str() == u.host_str()
                    && r.port_or_known_default() == u.port_or_known_default()
            })
        };
        if !same_host(response.url()) {
            return Err(PullError::Unauthorized {
                image: image.full(),
                registry: image.registry_host(),
                why: Refusal::Forbidden(response.url().host_str().unwrap_or("?").to_string()),
            });
        }
        let challenge = response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge);
        let credentials = self.credentials.get(&image.registry_host());
        let unauthorized = |why| PullError::Unauthorized {
            image: image.full(),
            registry: image.registry_host(),
            why,
        };
        let refused = || {
            unauthorized(if credentials.is_some() {
                Refusal::LoginRefused
            } else {
                Refusal::NeedsLogin
            })
        };
        let auth = match challenge {
            Some(Challenge::Basic) => match &credentials {
                Some(c) => Auth::Basic(c.clone()),
                None => return Err(unauthorized(Refusal::NeedsLogin)),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                // A login goes to a token service over HTTPS, or to the
                // registry itself (a lab's plain-HTTP registry).
                let trusted = realm.starts_with("https://")
                    || reqwest::Url::parse(&realm).is_ok_and(|r| same_host(&r));
                let login = match &credentials {
                    Some(_) if !trusted => {
                        return Err(unauthorized(Refusal::UntrustedRealm(realm)));
                    }
                    other => other.as_ref(),
                };
                let scope = scope.unwrap_or_else(|| pull_scope(&image.repository()));
                self.token(image, &realm, service.as_deref(), &scope, login)
                    .await?
            }
            None => return Err(unauthorized(Refusal::NoChallenge)),
        };
        let response = self.send(image, url, accept, Some(&auth)).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(refused());
        }
        if let Ok(mut map) = self.auth.lock() {
            map.insert(key, auth);
        }
        Ok(response)
    }

    async fn send(
        &self,
        image: &ImageRef,
        url: &str,
        accept: Option<&str>,
        auth: Option<&Auth>,
    ) -> Result<reqwest::Response, PullError> {
        let mut request = self.http.get(url);
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        request = match auth {
            Some(Auth::Basic(c)) => request.basic_auth(&c.username, Some(&c.password)),
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            None => request,
        };
        request.send().await.map_err(|e| self.transport(image, &e))
    }

    /// Asks the token service for a pull token (with the credentials, if
    /// any; anonymous otherwise, as public images on Docker Hub need).
    async fn token(
        &self,
        image: &ImageRef,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<Auth, PullError> {
        let mut url = reqwest::Url::parse(realm).map_err(|e| PullError::Transport {
            image: image.full(),
            registry: image.registry_host(),
            message: format!("token service {realm:?}: {e}"),
        })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut request = self.http.get(url);
        if let Some(c) = credentials {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(image, &e))?;
        if matches!(response.status().as_u16(), 401 | 403) {
            return Err(PullError::Unauthorized {
                image: image.full(),
                registry: image.registry_host(),
                why: if credentials.is_some() {
                    Refusal::LoginRefused
                } else {
                    Refusal::NeedsLogin
                },
            });
        }
        let response = self.expect_ok(image, response, "a token").await?;
        let body = self.read_bounded(image, response, 1 << 20).await?;
        token_from_response(&body)
            .map(Auth::Bearer)
            .ok_or_else(|| PullError::Transport {
                image: image.full(),
                registry: image.registry_host(),
                message: format!("token service {realm} returned no token"),
            })
    }

    /// The response if it is a success; else the registry's error.
    async fn expect_ok(
        &self,
        image: &ImageRef,
        response: reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Response, PullError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let response_host = response.url().host_str().unwrap_or("?").to_string();
        let body = self
            .read_bounded(image, response, 64 << 10)
            .await
            .unwrap_or_default();
        let message = registry_message(&body);
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(PullError::NotFound {
                image: image.full(),
                registry: image.registry_host(),
                message,
            });
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(PullError::Unauthorized {
                image: image.full(),
                registry: image.registry_host(),
                why: if self.credentials.get(&image.registry_host()).is_some() {
                    Refusal::LoginRefused
                } else {
                    Refusal::NeedsLogin
                },
            });
        }
        if status == reqwest::StatusCode::FORBIDDEN {
            return Err(PullError::Unauthorized {
                image: image.full(),
                registry: image.registry_host(),
                why: Refusal::Forbidden(response_host),
            });
        }
        Err(PullError::Status {
            image: image.full(),
            registry: image.registry_host(),
            status: status.as_u16(),
            what: what.to_string(),
            message,
        })
    }

    /// The whole body, refused past `limit` bytes.
    async fn read_bounded(
        &self,
        image: &ImageRef,
        mut response: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, PullError> {
        let mut out = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport(image, &e))?
        {
            if out.len() + chunk.len() > limit {
                return Err(PullError::Transport {
                    image: image.full(),
                    registry: image.registry_host(),
                    message: format!("an answer longer than {limit} bytes was refused"),
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// Whether `host` (`name[:port]`) is this machine: plain HTTP is fine.
fn is_loopback(host: &str) -> bool {
    let bare = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The registry's error text (`{"errors":[{"code":…,"message":…}]}`), or
/// the start of the body.
fn registry_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(body)
        && !parsed.errors.is_empty()
    {
        return parsed
            .errors
            .iter()
            .map(|e| format!("{} ({})", e.message, e.code))
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "no details".to_string()
    } else {
        text.chars().take(200).collect()
    }
}

/// Checks a downloaded blob against its descriptor.
fn check_blob(
    image: &str,
    descriptor: &Descriptor,
    size: u64,
    digest: &Digest,
) -> Result<(), PullError> {
    let fail = |message: String| PullError::Blob {
        image: image.to_string(),
        digest: descriptor.digest.to_string(),
        message,
    };
    if size != descriptor.size {
        return Err(fail(format!(
            "{size} bytes received, the manifest gives {}",
            descriptor.size
        )));
    }
    if *digest != descriptor.digest {
        return Err(fail(format!("the bytes received have digest {digest}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_are_quoted() {
        assert_eq!(
            registry_message(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#
            ),
            "manifest unknown (MANIFEST_UNKNOWN)"
        );
        assert_eq!(registry_message(b""), "no details");
        assert_eq!(
            registry_message(b"404 page not found\n"),
            "404 page not found"
        );
    }

    #[test]
    fn loopback_and_listed_registries_are_plain_http() {
        let client = RegistryClient::new(RegistryOptions {
            insecure: vec!["http://10.0.0.1:5000/".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(client.base("10.0.0.1:5000"), "http://10.0.0.1:5000");
        assert_eq!(client.base("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(client.base("localhost:5000"), "http://localhost:5000");
        assert_eq!(client.base("quay.io"), "https://quay.io");
        assert_eq!(client.base("10.0.0.1:5001"), "https://10.0.0.1:5001");
        assert_eq!(
            client.base("127.evil.example:5000"),
            "https://127.evil.example:5000"
        );
        assert_eq!(client.base("[::1]:5000"), "http://[::1]:5000");
    }

    #[test]
    fn a_short_or_altered_blob_is_refused() {
        let d = Descriptor {
            media_type: String::new(),
            digest: Digest::of(b"abc"),
            size: 3,
            platform: None,
        };
        assert!(check_blob("i", &d, 3, &Digest::of(b"abc")).is_ok());
        let e = check_blob("i", &d, 2, &Digest::of(b"ab"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 bytes received, the manifest gives 3"), "{e}");
        let e = check_blob("i", &d, 3, &Digest::of(b"abd"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("have digest sha256:"), "{e}");
    }
}
