//! Who may do what: operator roles, the shape of the bearer tokens that
//! prove them, and the per-boot credentials that prove a machine's worker.
//!
//! Tokens are random (made by the server, not here: this crate does no IO)
//! and stored only as their SHA-256 digest, so a copied database grants
//! nothing. A token is 256 random bits, so a fast hash is enough: there is
//! nothing to guess that a slow hash would protect.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What an operator token may do. Ordered: each role may do everything
/// the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read only; user-data, rendered workflows and template sources are
    /// withheld, since they carry secrets.
    Viewer,
    /// Everything but tokens and BMC credentials.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected admin, operator or viewer")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

/// The prefix of operator tokens: recognisable in a leaked file or a
/// secret scanner's report.
pub const API_TOKEN_PREFIX: &str = "bellows_api_";

/// The prefix of a machine's per-boot worker credential.
pub const WORKER_TOKEN_PREFIX: &str = "bellows_boot_";

/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;

/// The token text for `random` bytes behind `prefix`.
pub fn token_text(prefix: &str, random: &[u8; TOKEN_BYTES]) -> String {
    let mut s = String::with_capacity(prefix.len() + 2 * TOKEN_BYTES);
    s.push_str(prefix);
    for b in random {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What the store keeps of a token: its SHA-256, in hex.
pub fn token_digest(token: &str) -> String {
    let digest = Sha256::digest(token.trim().as_bytes());
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Longest token name accepted.
pub const MAX_TOKEN_NAME: usize = 64;

/// Why a token name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "token name {0:?} must be 1 to {MAX_TOKEN_NAME} letters, digits, '.', '_', '-' or '@', starting with a letter or digit"
)]
pub struct BadTokenName(pub String);

/// Checks a token name: it is written into events and logs, so it stays
/// plain.
pub fn check_token_name(name: &str) -> Result<(), BadTokenName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOKEN_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(BadTokenName(name.to_string()))
    }
}

/// An operator token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Unique name, recorded with every change the token makes.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The token that created it (`bootstrap` for the first admin token).
    #[serde(default)]
    pub created_by: String,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Unique name.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// The answer to `POST /api/v1/tokens`: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// The record as listed.
    #[serde(flatten)]
    pub record: TokenRecord,
    /// The bearer token; keep it, it cannot be shown again.
    pub token: String,
}

/// A per-boot worker credential as the store keeps it: minted when a
/// machine's script boots the in-memory OS, valid for that machine's
/// worker only, from its reserved address when it has one, while the
/// workflow it was minted for has not ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCredential {
    /// SHA-256 of the token, hex.
    pub digest: String,
    /// The worker id it proves (the MAC the machine booted by).
    pub worker: String,
    /// The machine's hardware id.
    pub hardware_id: String,
    /// The workflow it was minted for.
    pub workflow_id: String,
    /// The reserved address calls must come from, when bound.
    pub address: Option<String>,
    /// Unix milliseconds.
    pub issued_at: i64,
}

/// One change made through the management API, for `GET /api/v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix milliseconds.
    pub at: i64,
    /// The token's name.
    pub actor: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// The answer's status code.
    pub status: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse_their_own_spelling() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(
                serde_json::to_value(r).expect("json"),
                serde_json::json!(r.as_str())
            );
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn tokens_are_prefixed_hex_and_stored_as_their_digest() {
        let t = token_text(API_TOKEN_PREFIX, &[0xab; TOKEN_BYTES]);
        assert_eq!(t.len(), API_TOKEN_PREFIX.len() + 64);
        assert!(t.starts_with("bellows_api_abab"));
        let d = token_digest(&t);
        assert_eq!(d.len(), 64);
        assert_ne!(d, token_digest(&token_text(API_TOKEN_PREFIX, &[0; 32])));
        // Whitespace around a pasted token does not matter.
        assert_eq!(d, token_digest(&format!(" {t}\n")));
        // The well-known SHA-256 of "abc".
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn token_names_stay_plain() {
        assert!(check_token_name("ci-runner.1@rack2").is_ok());
        for bad in ["", "-x", "a b", "a\nb", &"x".repeat(65)] {
            assert!(check_token_name(bad).is_err(), "{bad:?}");
        }
    }
}
