//! BMC passwords at rest: sealed with ChaCha20-Poly1305 under a 32-byte
//! key that lives in its own file, never in the database, so a copied
//! database (or backup) alone yields no password.
//!
//! A stored value is `v1:` followed by the hex of nonce ‖ ciphertext ‖ tag,
//! with a fresh random 96-bit nonce for every value. The associated data
//! binds it to its row and to the endpoint the password was given for
//! (hardware id, address, port, protocol, user name, TLS setting): a value
//! copied to another record, or a record re-pointed behind the store's
//! back, no longer opens, so the password cannot be sent anywhere else.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::BmcRecord;

/// Length of a secret key, in bytes.
pub const KEY_LEN: usize = 32;

/// The format tag every sealed value starts with.
const PREFIX: &str = "v1:";
/// Domain separation for the associated data, versioned with the format.
const AAD_DOMAIN: &[u8] = b"bellows bmc password v1\0";
/// What the key fingerprint is a MAC of (it reveals nothing of the key).
const FINGERPRINT_INPUT: &[u8] = b"bellows secret key fingerprint v1";

/// The key BMC passwords are sealed with. Its `Debug` shows only the
/// fingerprint, so it cannot reach a log.
pub struct SecretKey {
    key: LessSafeKey,
    fingerprint: String,
    /// HMAC key over the raw key, for [`SecretKey::derive`].
    derivation: hmac::Key,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(fingerprint {})", self.fingerprint)
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    /// Reading, creating or writing the file failed.
    #[error("cannot {action} secret key file {}: {source}", .path.display())]
    Io {
        /// What was being done ("read", "create", "write").
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// Other users could read the key: refused rather than used.
    #[error(
        "secret key file {} can be read by other users (mode {mode:04o}); \
         run `chmod 600 {}` and start again",
        .path.display(), .path.display()
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds something other than a key.
    #[error(
        "secret key file {} does not hold a key: expected {KEY_LEN} bytes, \
         written as 64 hex digits",
        .path.display()
    )]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// Why a stored password could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The tag does not verify.
    #[error(
        "it does not open with this secret key: it was sealed with another key, \
         moved from another record, or its record was changed outside Bellows; \
         set the password again (`bellows bmc set`)"
    )]
    Mismatch,
    /// Not a value this version writes.
    #[error("the stored value is not in a format this Bellows knows")]
    Format,
    /// No nonce could be drawn.
    #[error("the system random number generator failed")]
    Random,
}

impl SecretKey {
    /// A key from its raw bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> SecretKey {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .unwrap_or_else(|_| unreachable!("a {KEY_LEN}-byte key fits ChaCha20-Poly1305"));
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, bytes), FINGERPRINT_INPUT);
        SecretKey {
            key: LessSafeKey::new(unbound),
            fingerprint: to_hex(&tag.as_ref()[..8]),
            derivation: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// A key for another purpose (`label` names it), derived from this one
    /// (HMAC-SHA256 of the label): replicas sharing the key file share it,
    /// and it reveals nothing of this key.
    pub fn derive(&self, label: &[u8]) -> [u8; KEY_LEN] {
        let tag = hmac::sign(&self.derivation, label);
        let mut out = [0u8; KEY_LEN];
        out.copy_from_slice(&tag.as_ref()[..KEY_LEN]);
        out
    }

    /// A fresh random key (and its bytes, to be written somewhere safe).
    pub fn generate() -> Result<(SecretKey, [u8; KEY_LEN]), SecretKeyError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SecretKeyError::Random)?;
        Ok((SecretKey::from_bytes(&bytes), bytes))
    }

    /// Reads the key file, or creates it (mode 0600, whatever the umask)
    /// with a new random key when it does not exist; `true` when created.
    /// An existing file that group or others may read is refused.
    pub fn load_or_create(path: &Path) -> Result<(SecretKey, bool), SecretKeyError> {
        let io = |action, source| SecretKeyError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(_) => Ok((SecretKey::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, bytes) = SecretKey::generate()?;
                // create_new with 0600: never visible with looser bits, and
                // never overwrites a key another process just wrote.
                let mut file = match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Ok((SecretKey::load(path)?, false));
                    }
                    Err(e) => return Err(io("create", e)),
                };
                // The umask may have removed bits; set exactly 0600.
                file.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| io("create", e))?;
                file.write_all(format!("{}\n", to_hex(&bytes)).as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io("write", e))?;
                Ok((key, true))
            }
            Err(e) => Err(io("read", e)),
        }
    }

    /// Reads an existing key file: 64 hex digits (what Bellows writes) or
    /// 32 raw bytes.
    fn load(path: &Path) -> Result<SecretKey, SecretKeyError> {
        let io = |source| SecretKeyError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(SecretKeyError::Malformed {
                path: path.to_path_buf(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretKeyError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let raw = std::fs::read(path).map_err(io)?;
        let bytes = match std::str::from_utf8(&raw).ok().map(str::trim) {
            Some(text) if text.len() == 2 * KEY_LEN => from_hex(text),
            _ if raw.len() == KEY_LEN => Some(raw.clone()),
            _ => None,
        };
        let key: [u8; KEY_LEN] =
            bytes
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| SecretKeyError::Malformed {
                    path: path.to_path_buf(),
                })?;
        Ok(SecretKey::from_bytes(&key))
    }

    /// A short, non-secret name for this key (a MAC of a fixed string),
    /// stored beside the sealed values to recognise a wrong key at open.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Seals `password` for `record` (stored under `hardware_id`).
    pub(crate) fn seal(
        &self,
        hardware_id: &str,
        record: &BmcRecord,
        password: &str,
    ) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut sealed = password.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding(hardware_id, record)),
                &mut sealed,
            )
            .map_err(|_| SecretError::Format)?;
        let mut value = nonce.to_vec();
        value.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", to_hex(&value)))
    }

    /// Opens a value [`SecretKey::seal`] wrote for the same record.
    pub(crate) fn open(
        &self,
        hardware_id: &str,
        record: &BmcRecord,
        stored: &str,
    ) -> Result<String, SecretError> {
        let bytes = stored
            .strip_prefix(PREFIX)
            .and_then(from_hex)
            .ok_or(SecretError::Format)?;
        if bytes.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(SecretError::Format);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Format)?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(binding(hardware_id, record)), &mut sealed)
            .map_err(|_| SecretError::Mismatch)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Format)
    }
}

/// The associated data: the row and everything that decides where the
/// password goes and as whom (not the power readings, which change).
fn binding(hardware_id: &str, record: &BmcRecord) -> Vec<u8> {
    let endpoint = (
        hardware_id,
        &record.address,
        record.port,
        &record.protocol,
        &record.username,
        record.insecure_tls,
    );
    let mut aad = AAD_DOMAIN.to_vec();
    // Strings, numbers and booleans always serialise.
    aad.extend(
        serde_json::to_vec(&endpoint)
            .unwrap_or_else(|e| unreachable!("a tuple of plain values serialises: {e}")),
    );
    aad
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> BmcRecord {
        BmcRecord {
            hardware_id: id.into(),
            address: "10.0.0.9".into(),
            port: None,
            protocol: "ipmi".into(),
            username: "admin".into(),
            insecure_tls: false,
            power_state: None,
            power_checked_at: None,
            power_error: None,
        }
    }

    #[test]
    fn sealed_values_open_only_for_their_record_and_key() {
        let (key, _) = SecretKey::generate().unwrap();
        let r = record("m1");
        let a = key.seal("m1", &r, "hunter2").unwrap();
        let b = key.seal("m1", &r, "hunter2").unwrap();
        assert!(a.starts_with("v1:") && !a.contains("hunter2"), "{a}");
        assert_ne!(a, b, "a fresh nonce for every value");
        assert_eq!(key.open("m1", &r, &a).unwrap(), "hunter2");

        // Another row, another endpoint, another key: refused.
        assert_eq!(key.open("m2", &r, &a), Err(SecretError::Mismatch));
        let moved = BmcRecord {
            address: "10.6.6.6".into(),
            ..r.clone()
        };
        assert_eq!(key.open("m1", &moved, &a), Err(SecretError::Mismatch));
        let (other, _) = SecretKey::generate().unwrap();
        assert_ne!(other.fingerprint(), key.fingerprint());
        assert_eq!(other.open("m1", &r, &a), Err(SecretError::Mismatch));
        // Power readings are not bound: the poller may update them.
        let polled = BmcRecord {
            power_state: Some("on".into()),
            ..r.clone()
        };
        assert_eq!(key.open("m1", &polled, &a).unwrap(), "hunter2");

        // Garbage and truncation are not a format; a flipped bit does not
        // verify. Neither panics.
        for bad in ["", "hunter2", "v1:", "v1:zz", "v2:00", &a[..11]] {
            assert_eq!(key.open("m1", &r, bad), Err(SecretError::Format), "{bad}");
        }
        let mut flipped = a.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(key.open("m1", &r, &flipped), Err(SecretError::Mismatch));
        let short = &a[..a.len() - 2];
        assert_eq!(key.open("m1", &r, short), Err(SecretError::Mismatch));
    }

    #[test]
    fn key_file_is_created_private_and_refused_when_exposed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let (created, fresh) = SecretKey::load_or_create(&path).unwrap();
        assert!(fresh);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64, "{text}");
        assert!(!format!("{created:?}").contains(text.trim()));

        let (loaded, fresh) = SecretKey::load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(loaded.fingerprint(), created.fingerprint());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = SecretKey::load_or_create(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key\n").unwrap();
        let e = SecretKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("does not hold a key"), "{e}");
        std::fs::write(&path, [7u8; KEY_LEN]).unwrap();
        assert_eq!(
            SecretKey::load_or_create(&path).unwrap().0.fingerprint(),
            SecretKey::from_bytes(&[7u8; KEY_LEN]).fingerprint()
        );
    }
}
