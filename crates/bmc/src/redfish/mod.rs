//! Redfish over HTTP(S) with reqwest: the IO half. It follows the service's
//! links (service root → Systems → ComputerSystem → its actions and virtual
//! media) instead of assuming vendor paths; [`model`] holds the pure half.

pub mod model;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::error::{BmcError, redact, truncate};
use crate::types::{BootDevice, BootOverride, Credentials, PowerAction, PowerState};
use model::{SystemInfo, VirtualMediaInfo};

/// The path every Redfish service answers at.
pub const SERVICE_ROOT: &str = "/redfish/v1/";

/// How the Redfish client behaves; the defaults bound every request so an
/// unreachable BMC fails in seconds.
#[derive(Debug, Clone)]
pub struct RedfishSettings {
    /// Bound on opening the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Bound on one whole request, response body included.
    pub request_timeout: Duration,
    /// Which ComputerSystem to control (its Id or path); the first otherwise.
    pub system: Option<String>,
}

impl Default for RedfishSettings {
    fn default() -> Self {
        RedfishSettings {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            system: None,
        }
    }
}

/// A BMC spoken to over Redfish with HTTP basic authentication.
#[derive(Debug)]
pub struct RedfishClient {
    base_url: String,
    address: String,
    credentials: Credentials,
    http: reqwest::Client,
    settings: RedfishSettings,
    system_path: Mutex<Option<String>>,
}

/// Turns an endpoint address into a base URL (`scheme://host[:port]`),
/// defaulting to HTTPS. Credentials in the URL are refused so they can never
/// reach logs through it.
pub fn base_url(address: &str, port: Option<u16>) -> Result<String, BmcError> {
    let address = address.trim().trim_end_matches('/');
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) if scheme == "http" || scheme == "https" => (scheme, rest),
        Some((scheme, _)) => {
            return Err(BmcError::Config(format!(
                "Redfish address scheme {scheme:?} is neither http nor https"
            )));
        }
        None => ("https", address),
    };
    if rest.is_empty()
        || rest.contains(['@', '/', '?', '#'])
        || rest.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(BmcError::Config(
            "Redfish address must be a host, host:port or scheme://host[:port], \
             without credentials or path"
                .into(),
        ));
    }
    let has_port = match rest.rfind(':') {
        Some(colon) => !rest.contains(']') || rest.rfind(']') < Some(colon),
        None => false,
    };
    Ok(match (port, has_port) {
        (Some(port), false) => format!("{scheme}://{rest}:{port}"),
        _ => format!("{scheme}://{rest}"),
    })
}

/// Builds the HTTP client: rustls with the `ring` provider, verifying against
/// the system trust store unless `insecure_tls` (self-signed BMC certificates).
fn http_client(
    insecure_tls: bool,
    settings: &RedfishSettings,
) -> Result<reqwest::Client, BmcError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_error = |error: rustls::Error| BmcError::Config(format!("TLS setup: {error}"));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let verifier: Arc<dyn ServerCertVerifier> = if insecure_tls {
        Arc::new(AcceptAnyCertificate(provider))
    } else {
        Arc::new(rustls_platform_verifier::Verifier::new(provider).map_err(config_error)?)
    };
    let tls = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| BmcError::Config(format!("HTTP client setup: {error}")))
}

/// Accepts any server certificate (BMCs ship self-signed ones) while still
/// checking the handshake signatures, so the session is at least bound to the
/// key the server presented.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl RedfishClient {
    /// Prepares a client; no network traffic happens until an operation.
    pub fn new(
        address: &str,
        port: Option<u16>,
        insecure_tls: bool,
        credentials: Credentials,
        settings: RedfishSettings,
    ) -> Result<Self, BmcError> {
        let base_url = base_url(address, port)?;
        Ok(RedfishClient {
            address: base_url
                .split_once("://")
                .map_or(base_url.as_str(), |(_, host)| host)
                .to_owned(),
            http: http_client(insecure_tls, &settings)?,
            base_url,
            credentials,
            settings,
            system_path: Mutex::new(None),
        })
    }

    /// Reads the ComputerSystem's `PowerState`.
    pub async fn power_status(&self) -> Result<PowerState, BmcError> {
        Ok(self.system("power status").await?.1.power_state)
    }

    /// Posts `ComputerSystem.Reset` with the `ResetType` the service allows
    /// for the action. On/off requests for the state the machine is already
    /// in, and cycle/reset of a machine that is off (which BMCs refuse),
    /// become a no-op and a power-on respectively.
    pub async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        let operation = format!("power {action}");
        let (_, system) = self.system(&operation).await?;
        let action = match (action, system.power_state) {
            (PowerAction::On, PowerState::On)
            | (PowerAction::Off | PowerAction::SoftOff, PowerState::Off) => return Ok(()),
            (PowerAction::Cycle | PowerAction::Reset, PowerState::Off) => PowerAction::On,
            (action, _) => action,
        };
        let target = system
            .reset_target
            .as_deref()
            .ok_or_else(|| BmcError::Unsupported {
                address: self.address.clone(),
                operation: operation.clone(),
                detail: "the system has no ComputerSystem.Reset action".into(),
            })?;
        let reset_type = model::choose_reset_type(action, system.reset_types.as_deref())
            .ok_or_else(|| BmcError::Unsupported {
                address: self.address.clone(),
                operation: operation.clone(),
                detail: format!(
                    "none of the reset types {:?} is allowed (allowed: {:?})",
                    model::reset_type_preferences(action),
                    system.reset_types.as_deref().unwrap_or_default()
                ),
            })?;
        self.request(
            Method::POST,
            target,
            Some(json!({ "ResetType": reset_type })),
            &operation,
        )
        .await
        .map(drop)
    }

    /// PATCHes the system's boot source override.
    pub async fn set_boot_device(
        &self,
        device: BootDevice,
        options: BootOverride,
    ) -> Result<(), BmcError> {
        let operation = format!("boot device {device}");
        let (path, system) = self.system(&operation).await?;
        let target = model::boot_target(device);
        if let Some(allowed) = &system.boot_targets
            && !allowed.iter().any(|name| name == target)
        {
            return Err(BmcError::Unsupported {
                address: self.address.clone(),
                operation,
                detail: format!("boot target {target} is not among {allowed:?}"),
            });
        }
        let patch = model::boot_override_patch(device, options, system.has_boot_mode);
        self.request(Method::PATCH, &path, Some(patch), &operation)
            .await
            .map(drop)
    }

    /// Mounts an ISO image from `image_url` in the first optical virtual
    /// media device, through `InsertMedia` or, on older services, a PATCH.
    pub async fn insert_virtual_media(&self, image_url: &str) -> Result<(), BmcError> {
        let operation = "insert virtual media";
        let media = self.optical_media(operation).await?;
        if media.inserted {
            self.eject(&media, operation).await?;
        }
        let body = json!({ "Image": image_url, "Inserted": true, "WriteProtected": true });
        match &media.insert_target {
            Some(target) => {
                self.request(Method::POST, target, Some(body), operation)
                    .await
            }
            None => {
                self.request(Method::PATCH, &media.path, Some(body), operation)
                    .await
            }
        }
        .map(drop)
    }

    /// Ejects whatever the optical virtual media device holds.
    pub async fn eject_virtual_media(&self) -> Result<(), BmcError> {
        let operation = "eject virtual media";
        let media = self.optical_media(operation).await?;
        if !media.inserted && media.image.is_empty() {
            return Ok(());
        }
        self.eject(&media, operation).await
    }

    /// The state of the optical virtual media device (for callers that want
    /// to show or verify what is mounted).
    pub async fn virtual_media_status(&self) -> Result<VirtualMediaInfo, BmcError> {
        self.optical_media("virtual media status").await
    }

    /// Checks that the service answers with these credentials and has a
    /// system to control; `Auto` protocol detection uses it.
    pub async fn probe(&self) -> Result<(), BmcError> {
        self.system("probe").await.map(drop)
    }

    async fn eject(&self, media: &VirtualMediaInfo, operation: &str) -> Result<(), BmcError> {
        match &media.eject_target {
            Some(target) => {
                self.request(Method::POST, target, Some(json!({})), operation)
                    .await
            }
            None => {
                let body = json!({ "Image": null, "Inserted": false });
                self.request(Method::PATCH, &media.path, Some(body), operation)
                    .await
            }
        }
        .map(drop)
    }

    async fn optical_media(&self, operation: &str) -> Result<VirtualMediaInfo, BmcError> {
        let (_, system) = self.system(operation).await?;
        let collection = match system.virtual_media.clone() {
            Some(collection) => Some(collection),
            None => {
                let mut found = None;
                for manager in &system.managers {
                    let manager = self.get(manager, operation).await?;
                    if let Some(collection) = model::link(&manager, "/VirtualMedia") {
                        found = Some(collection);
                        break;
                    }
                }
                found
            }
        };
        let collection = collection.ok_or_else(|| BmcError::Unsupported {
            address: self.address.clone(),
            operation: operation.into(),
            detail: "neither the system nor its managers have a VirtualMedia collection".into(),
        })?;
        let mut devices = Vec::new();
        for path in model::members(&self.get(&collection, operation).await?) {
            let device = self.get(&path, operation).await?;
            devices.push(VirtualMediaInfo::from_json(&path, &device));
        }
        model::select_optical(&devices)
            .cloned()
            .ok_or_else(|| BmcError::Unsupported {
                address: self.address.clone(),
                operation: operation.into(),
                detail: "the VirtualMedia collection is empty".into(),
            })
    }

    /// The ComputerSystem's path (resolved once by following links from the
    /// service root) and its current state.
    async fn system(&self, operation: &str) -> Result<(String, SystemInfo), BmcError> {
        let mut cached = self.system_path.lock().await;
        let path = match cached.as_ref() {
            Some(path) => path.clone(),
            None => {
                let root = self.get(SERVICE_ROOT, operation).await?;
                let systems = model::link(&root, "/Systems").ok_or_else(|| {
                    self.protocol_error(operation, "the service root has no Systems link")
                })?;
                let collection = self.get(&systems, operation).await?;
                let path = model::select_system(&collection, self.settings.system.as_deref())
                    .map_err(|detail| self.protocol_error(operation, &detail))?;
                *cached = Some(path.clone());
                path
            }
        };
        drop(cached);
        let system = self.get(&path, operation).await?;
        Ok((path, SystemInfo::from_json(&system)))
    }

    async fn get(&self, path: &str, operation: &str) -> Result<Value, BmcError> {
        self.request(Method::GET, path, None, operation).await
    }

    /// One authenticated, bounded request; maps transport failures and
    /// status codes to typed errors and returns the JSON body (`Null` when
    /// the body is empty, as after most actions).
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        operation: &str,
    ) -> Result<Value, BmcError> {
        let url = self.url(path, operation)?;
        let mut request = self
            .http
            .request(method.clone(), &url)
            .basic_auth(
                &self.credentials.username,
                Some(self.credentials.password.expose()),
            )
            .header("Accept", "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        tracing::debug!(%method, %url, operation, "redfish request");
        let response = request
            .send()
            .await
            .map_err(|error| self.transport_error(operation, &error))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|error| self.transport_error(operation, &error))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return Ok(json.unwrap_or(Value::Null));
        }
        let detail = format!(
            "HTTP {status} from {method} {path}: {}",
            json.as_ref()
                .and_then(model::error_message)
                .unwrap_or_else(|| truncate(&text, 200))
        );
        let detail = redact(&detail, self.credentials.password.expose());
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => BmcError::AuthFailed {
                address: self.address.clone(),
                username: self.credentials.username.clone(),
                detail,
            },
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => BmcError::Unsupported {
                address: self.address.clone(),
                operation: operation.into(),
                detail,
            },
            _ => self.protocol_error(operation, &detail),
        })
    }

    /// Resolves a link from the service against our base URL. Absolute
    /// links must stay on the same origin so credentials never go elsewhere.
    fn url(&self, path: &str, operation: &str) -> Result<String, BmcError> {
        if path.starts_with('/') {
            Ok(format!("{}{path}", self.base_url))
        } else if path.starts_with(&format!("{}/", self.base_url)) {
            Ok(path.to_owned())
        } else {
            Err(self.protocol_error(
                operation,
                &format!("link {path:?} leaves the BMC {}", self.base_url),
            ))
        }
    }

    fn transport_error(&self, operation: &str, error: &reqwest::Error) -> BmcError {
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        let detail = redact(&detail, self.credentials.password.expose());
        if error.is_timeout() {
            BmcError::Timeout {
                address: self.address.clone(),
                operation: operation.into(),
                after: self.settings.request_timeout,
            }
        } else if error.is_connect() {
            BmcError::Unreachable {
                address: self.address.clone(),
                operation: operation.into(),
                detail,
            }
        } else {
            self.protocol_error(operation, &detail)
        }
    }

    fn protocol_error(&self, operation: &str, detail: &str) -> BmcError {
        BmcError::Protocol {
            address: self.address.clone(),
            operation: operation.into(),
            detail: redact(detail, self.credentials.password.expose()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let ok = |address, port| base_url(address, port).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok("10.0.0.5", None), "https://10.0.0.5");
        assert_eq!(ok("10.0.0.5", Some(8443)), "https://10.0.0.5:8443");
        assert_eq!(ok("http://127.0.0.1:8000/", None), "http://127.0.0.1:8000");
        assert_eq!(
            ok("http://127.0.0.1:8000", Some(9)),
            "http://127.0.0.1:8000"
        );
        assert_eq!(ok("[fe80::1]", Some(443)), "https://[fe80::1]:443");
        assert_eq!(ok("[fe80::1]:8443", None), "https://[fe80::1]:8443");
        for bad in [
            "https://admin:pw@10.0.0.5",
            "ftp://x",
            "",
            "10.0.0.5/redfish",
        ] {
            assert!(base_url(bad, None).is_err(), "{bad:?} accepted");
        }
    }
}
