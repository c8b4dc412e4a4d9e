//! The server's TLS certificate: its own CA, made on first start, or the
//! operator's chain (SECURITY.md, "Transport").
//!
//! The CA's key and certificate live in `DATA_DIR/tls/` (`ca.key` 0600).
//! At every start the CA signs a fresh certificate for every name the
//! server may be reached by (the public address, each interface address,
//! loopback, the host name, `--tls-name`); its key never touches the disk.
//! Machines pin the CA by the SHA-256 of its certificate (`bellows.ca=`
//! on their kernel command line), so a re-signed leaf or a new address
//! needs no change on their side; operators' CLIs trust `ca.crt`.
//!
//! Both certificates are valid from 2000: a machine being installed often
//! has an unset clock, and a pinned private CA gains nothing from a
//! `not_before` its clock cannot check. Rotate by removing `DATA_DIR/tls/`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use super::config::{ServerConfig, TlsSource};

/// The folder of the server's own CA, inside the data directory.
pub const TLS_DIR: &str = "tls";
/// The CA certificate operators' CLIs trust (`--ca`), inside [`TLS_DIR`].
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA's private key, inside [`TLS_DIR`].
const CA_KEY_FILE: &str = "ca.key";

/// What the listeners present and what machines pin.
pub struct ServerTls {
    /// The chain (leaf, then CA) and key, with ALPN `h2` and `http/1.1`.
    pub config: Arc<rustls::ServerConfig>,
    /// Hex SHA-256 of the certificate machines pin (`bellows.ca=`).
    pub pin: String,
    /// The CA certificate file an operator's CLI elsewhere trusts, when the
    /// server made it.
    pub ca_file: Option<PathBuf>,
    /// Whether the CA was made by this start.
    pub created: bool,
    /// The names the server's own certificate carries (empty for the
    /// operator's).
    pub names: Vec<String>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A certificate could not be made.
    #[error("making the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the chain or key (for example a key of another
    /// certificate).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Hex SHA-256 of a DER certificate: what `bellows.ca=` and `--ca-fingerprint`
/// carry.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Loads or makes the server's certificate as `cfg` says.
pub fn load(cfg: &ServerConfig) -> Result<ServerTls, TlsError> {
    match &cfg.tls {
        TlsSource::Given { cert, key } => given(cert, key),
        TlsSource::OwnCa { extra_names } => {
            let mut names = own_names(cfg);
            for name in extra_names {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            own_ca(&cfg.data_dir.join(TLS_DIR), names)
        }
    }
}

/// The operator's chain and key; machines pin the chain's last certificate.
fn given(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: cert.to_path_buf(),
            message: format!("not a PEM certificate chain: {e}"),
        })?;
    let Some(last) = chain.last() else {
        return Err(TlsError::Pem {
            path: cert.to_path_buf(),
            message: "holds no CERTIFICATE block".into(),
        });
    };
    let pin = fingerprint(last);
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        path: key.to_path_buf(),
        message: format!("not a PEM private key: {e}"),
    })?;
    Ok(ServerTls {
        config: server_config(chain, key_der)?,
        pin,
        ca_file: None,
        created: false,
        names: Vec::new(),
    })
}

/// The names the server may be reached by: the public address, every
/// interface address, loopback and the host name.
fn own_names(cfg: &ServerConfig) -> Vec<String> {
    let mut ips: Vec<IpAddr> = vec![cfg.public_ip];
    for listen in [cfg.listen.ip(), cfg.http_listen.ip()] {
        if !listen.is_unspecified() {
            ips.push(listen);
        }
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(addr) = a.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                ips.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                // Link-local addresses need a zone, which a URL cannot
                // carry to a certificate check.
                if !v6.ip().is_unicast_link_local() {
                    ips.push(IpAddr::V6(v6.ip()));
                }
            }
        }
    }
    ips.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    ips.push(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
    let mut names: Vec<String> = Vec::new();
    for ip in ips {
        let s = ip.to_string();
        if !names.contains(&s) {
            names.push(s);
        }
    }
    names.push("localhost".into());
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
        && !host.is_empty()
        && host != "localhost"
    {
        names.push(host.to_string());
    }
    names
}

/// Loads the CA in `dir` (making it the first time) and signs a new
/// certificate for `names` with it.
fn own_ca(dir: &Path, names: Vec<String>) -> Result<ServerTls, TlsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    bellows_store::files::private_dir(dir).map_err(|e| TlsError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let key_path = dir.join(CA_KEY_FILE);
    let cert_path = dir.join(CA_CERT_FILE);
    let (ca_key, ca_der, created) = if key_path.exists() {
        let pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&pem).map_err(|e| TlsError::Pem {
            path: key_path.clone(),
            message: format!("not the CA's private key: {e}"),
        })?;
        let der = CertificateDer::from_pem_file(&cert_path).map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            message: format!(
                "cannot read the CA certificate that goes with {}: {e}",
                key_path.display()
            ),
        })?;
        (key, der, false)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params(&key).self_signed(&key)?;
        write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
        (key, cert.der().clone(), true)
    };
    let issuer = Issuer::new(ca_params(&ca_key), &ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params(&names).signed_by(&leaf_key, &issuer)?;
    let leaf_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    Ok(ServerTls {
        config: server_config(vec![leaf.der().clone(), ca_der.clone()], leaf_der)?,
        pin: fingerprint(&ca_der),
        ca_file: Some(cert_path),
        created,
        names,
    })
}

/// Writes a file that must not exist yet, with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The CA's parameters, rebuilt from its key alone at every start (its
/// name carries the key's fingerprint), so signing needs no certificate
/// parser.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let id: String = Sha256::digest(key.public_key_raw())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Bellows");
    dn.push(DnType::CommonName, format!("Bellows CA {id}"));
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2050, 1, 1);
    params
}

/// The server certificate's parameters for `names`.
fn leaf_params(names: &[String]) -> CertificateParams {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Bellows");
    dn.push(DnType::CommonName, "bellows server");
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .iter()
        .filter_map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Some(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().ok().map(SanType::DnsName),
        })
        .collect();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2050, 1, 1);
    params
}

/// A rustls server configuration on ring for `chain` and `key`.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_signs_a_new_leaf_each_start() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let first = own_ca(&tls, vec!["10.0.0.1".into(), "localhost".into()]).unwrap();
        assert!(first.created);
        let second = own_ca(&tls, vec!["10.0.0.2".into()]).unwrap();
        assert!(!second.created);
        assert_eq!(first.pin, second.pin, "the pinned CA survives a restart");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tls.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_key_without_its_certificate_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        own_ca(&tls, vec!["localhost".into()]).unwrap();
        std::fs::remove_file(tls.join(CA_CERT_FILE)).unwrap();
        let err = own_ca(&tls, vec!["localhost".into()])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("ca.crt"), "{err}");
    }
}
