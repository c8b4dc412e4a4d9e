//! How the worker trusts the server it talks gRPC to over `https://`.
//!
//! A machine being installed knows nothing but its kernel command line, so
//! the server puts the SHA-256 of its CA certificate there (`bellows.ca=`)
//! and the worker pins it: the chain the server presents must contain that
//! very certificate, and the server's certificate must chain to it and name
//! the address the worker dialled. No system trust store is consulted then,
//! so a certificate from any other CA, public or not, is refused. A worker
//! on an ordinary host may instead be given the CA file (`--server-ca`) or use the
//! system's trust store.
//!
//! tonic's own TLS is not built (it would bring its own rustls setup and no
//! pinning); [`Dialer`] dials TCP and runs rustls on ring itself.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where the worker's trust in the server comes from.
#[derive(Debug, Clone, Default)]
pub enum ServerTrust {
    /// The operating system's trust store (a server whose certificate a
    /// public or company CA signed).
    #[default]
    System,
    /// Only the CA whose certificate has this SHA-256 (`bellows.ca=`,
    /// `--ca-fingerprint`).
    Pinned([u8; 32]),
    /// Only the CA certificates in a PEM file (`--ca`).
    CaCertificates(Vec<CertificateDer<'static>>),
}

/// Why the worker's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A fingerprint is not 64 hex digits.
    #[error("CA fingerprint {0:?} is not a SHA-256 in hex (64 digits, colons allowed)")]
    BadFingerprint(String),
    /// A CA file cannot be read or holds no certificate.
    #[error("CA file {path}: {message}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The system trust store cannot be used.
    #[error("TLS: the system trust store: {0}")]
    System(String),
}

/// The server's chain does not hold the pinned CA.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server's certificate chain does not contain the pinned CA sha256:{0} (another server, or one whose CA changed: check bellows.ca= / --ca-fingerprint)"
)]
struct NotThePinnedCa(String);

impl ServerTrust {
    /// Reads a fingerprint as `bellows.ca=` or `openssl x509 -fingerprint
    /// -sha256` write it: hex, colons optional, `sha256:` prefix optional.
    pub fn pinned(fingerprint: &str) -> Result<ServerTrust, TlsError> {
        let bad = || TlsError::BadFingerprint(fingerprint.to_string());
        let text = fingerprint.trim();
        let text = text
            .strip_prefix("sha256:")
            .or_else(|| text.strip_prefix("SHA256:"))
            .unwrap_or(text);
        let hex: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut pin = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let digits = std::str::from_utf8(pair).map_err(|_| bad())?;
            pin[i] = u8::from_str_radix(digits, 16).map_err(|_| bad())?;
        }
        Ok(ServerTrust::Pinned(pin))
    }

    /// The CA certificates of a PEM file.
    pub fn ca_file(path: &Path) -> Result<ServerTrust, TlsError> {
        let error = |message: String| TlsError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| error(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(error("holds no CERTIFICATE block".into()));
        }
        Ok(ServerTrust::CaCertificates(certs))
    }

    /// A rustls client configuration (ring, ALPN `h2`) that checks the
    /// server this way.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let mut config = match self {
            ServerTrust::System => {
                let verifier = rustls_platform_verifier::Verifier::new(provider)
                    .map_err(|e| TlsError::System(e.to_string()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth()
            }
            ServerTrust::Pinned(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCa {
                    pin: *pin,
                    provider,
                }))
                .with_no_client_auth(),
            ServerTrust::CaCertificates(certs) => {
                let mut roots = RootCertStore::empty();
                for cert in certs {
                    roots.add(cert.clone())?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Makes channels to one server: TLS checked by a [`ServerTrust`] for an
/// `https://` URL, plain TCP otherwise.
#[derive(Clone)]
pub struct Dialer {
    endpoint: Endpoint,
    tls: Option<TlsConnector>,
}

impl Dialer {
    /// A dialer for `endpoint`; `trust` is used when its URL is `https://`.
    pub fn new(endpoint: Endpoint, trust: &ServerTrust) -> Result<Dialer, TlsError> {
        let tls = match endpoint.uri().scheme_str() {
            Some("https") => Some(TlsConnector {
                config: trust.client_config()?,
                local_address: None,
            }),
            _ => None,
        };
        Ok(Dialer { endpoint, tls })
    }

    /// Connects from `ip` (a host with several addresses; tests that play
    /// another machine).
    pub fn from_address(mut self, ip: std::net::IpAddr) -> Dialer {
        self.endpoint = self.endpoint.local_address(Some(ip));
        if let Some(tls) = &mut self.tls {
            tls.local_address = Some(ip);
        }
        self
    }

    /// A channel that connects on first use, and again after a failure.
    pub fn lazy(&self) -> Channel {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector_lazy(tls.clone()),
            None => self.endpoint.connect_lazy(),
        }
    }

    /// A channel connected now (tests and one-shot tools); a refused
    /// certificate is an error here.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector(tls.clone()).await,
            None => self.endpoint.connect().await,
        }
    }
}

/// Dials TCP and runs the TLS handshake, for tonic.
#[derive(Clone)]
struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    local_address: Option<std::net::IpAddr>,
}

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        let local_address = self.local_address;
        Box::pin(async move {
            let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid("the server URL has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|_| invalid("the server URL's host is not a DNS name or address"))?;
            let tcp = match local_address {
                None => TcpStream::connect((host.as_str(), port)).await?,
                Some(local) => {
                    let remote = tokio::net::lookup_host((host.as_str(), port))
                        .await?
                        .find(|a| a.is_ipv4() == local.is_ipv4())
                        .ok_or_else(|| {
                            invalid("the server has no address of the local one's family")
                        })?;
                    let socket = if local.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    socket.bind(std::net::SocketAddr::new(local, 0))?;
                    socket.connect(remote).await?
                }
            };
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Accepts a server only through the pinned CA.
#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedCa {
    fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        <[u8; 32]>::from(Sha256::digest(cert.as_ref())) == self.pin
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The pin names the server's own certificate: nothing to chain.
        if self.matches(end_entity) {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(ca) = intermediates.iter().find(|c| self.matches(c)) else {
            let hex: String = self.pin.iter().map(|b| format!("{b:02x}")).collect();
            // `General`, not `InvalidCertificate(Other)`: rustls prints
            // the latter's message only in Debug form.
            return Err(rustls::Error::General(NotThePinnedCa(hex).to_string()));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| !self.matches(c))
            .cloned()
            .collect();
        webpki.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_as_people_and_openssl_write_them() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        for text in [
            hex.clone(),
            format!("sha256:{hex}"),
            colons.clone(),
            format!("SHA256:{colons}"),
        ] {
            match ServerTrust::pinned(&text) {
                Ok(ServerTrust::Pinned(pin)) => assert_eq!(pin, [0xab; 32], "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        for bad in ["", "abcd", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(ServerTrust::pinned(bad).is_err(), "{bad:?} accepted");
        }
    }
}
