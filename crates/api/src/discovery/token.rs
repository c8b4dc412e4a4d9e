//! Discovery credentials: what the boot script of an unknown machine
//! carries so its worker may report an inventory, and nothing else.
//!
//! They are not stored: a credential is the MAC, the address it is bound
//! to and the time it was issued, signed with a key derived from the
//! server's secret key (replicas sharing the key file accept each other's).
//! So a flood of unknown MACs asking for boot scripts writes nothing.
//! A credential proves only "this server gave a discovery boot to this MAC
//! (at this address)": the report it allows creates or updates the
//! `discovered` record of that MAC, never an enrolled one.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bellows_model::MacAddr;
use ring::hmac;

/// What every discovery credential starts with (tells it from a per-boot
/// credential in logs and in the authenticator).
pub const DISCOVERY_TOKEN_PREFIX: &str = "bellows_disc_";
/// How long a discovery credential is good for: a machine waits in
/// discovery for days, and reboots (getting a new one) when it is told to.
pub const DISCOVERY_TOKEN_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// Label of the derived key.
pub const KEY_LABEL: &[u8] = b"bellows discovery credential v1";

/// Mints and checks discovery credentials.
pub struct DiscoveryTokens {
    key: hmac::Key,
}

/// What a valid credential says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryClaim {
    /// The MAC it was issued to.
    pub mac: MacAddr,
    /// The address it must be used from, when bound.
    pub address: Option<IpAddr>,
    /// Unix milliseconds.
    pub issued_at: i64,
}

/// Why a credential is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not one of ours, or altered.
    #[error("not a valid discovery credential")]
    Invalid,
    /// Too old.
    #[error("the discovery credential has expired; the machine must boot again")]
    Expired,
}

impl DiscoveryTokens {
    /// Credentials signed with `key` (32 bytes, derived from the server's
    /// secret key with [`KEY_LABEL`]).
    pub fn new(key: &[u8]) -> DiscoveryTokens {
        DiscoveryTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// A credential for `mac`, bound to `address` when given.
    pub fn mint(&self, mac: MacAddr, address: Option<IpAddr>, now_ms: i64) -> String {
        let mut payload = Vec::with_capacity(32);
        payload.extend_from_slice(&mac.octets());
        match address {
            None => payload.push(0),
            Some(IpAddr::V4(v4)) => {
                payload.push(4);
                payload.extend_from_slice(&v4.octets());
            }
            Some(IpAddr::V6(v6)) => {
                payload.push(16);
                payload.extend_from_slice(&v6.octets());
            }
        }
        payload.extend_from_slice(&now_ms.to_be_bytes());
        let tag = hmac::sign(&self.key, &payload);
        payload.extend_from_slice(tag.as_ref());
        format!(
            "{DISCOVERY_TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    /// Checks `token` (signature first, then age).
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<DiscoveryClaim, TokenError> {
        let body = token
            .strip_prefix(DISCOVERY_TOKEN_PREFIX)
            .ok_or(TokenError::Invalid)?;
        if body.len() > 128 {
            return Err(TokenError::Invalid);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Invalid)?;
        const TAG: usize = 32;
        if raw.len() < 6 + 1 + 8 + TAG {
            return Err(TokenError::Invalid);
        }
        let (payload, tag) = raw.split_at(raw.len() - TAG);
        hmac::verify(&self.key, payload, tag).map_err(|_| TokenError::Invalid)?;
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&payload[..6]);
        let (address, rest) = match payload[6] {
            0 => (None, &payload[7..]),
            4 if payload.len() >= 7 + 4 => {
                let mut o = [0u8; 4];
                o.copy_from_slice(&payload[7..11]);
                (Some(IpAddr::from(o)), &payload[11..])
            }
            16 if payload.len() >= 7 + 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&payload[7..23]);
                (Some(IpAddr::from(o)), &payload[23..])
            }
            _ => return Err(TokenError::Invalid),
        };
        let issued: [u8; 8] = rest.try_into().map_err(|_| TokenError::Invalid)?;
        let issued_at = i64::from_be_bytes(issued);
        if now_ms.saturating_sub(issued_at) > DISCOVERY_TOKEN_TTL_MS || issued_at > now_ms + 60_000
        {
            return Err(TokenError::Expired);
        }
        Ok(DiscoveryClaim {
            mac: MacAddr(mac),
            address,
            issued_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_proves_its_mac_and_address_and_nothing_altered_passes() {
        let tokens = DiscoveryTokens::new(&[7u8; 32]);
        let mac: MacAddr = "52:54:00:be:00:01".parse().unwrap();
        let ip: IpAddr = "10.0.0.100".parse().unwrap();
        let t = tokens.mint(mac, Some(ip), 1_000);
        let claim = tokens.verify(&t, 2_000).unwrap();
        assert_eq!(claim.mac, mac);
        assert_eq!(claim.address, Some(ip));
        let unbound = tokens.mint(mac, None, 1_000);
        assert_eq!(tokens.verify(&unbound, 2_000).unwrap().address, None);
        // Another server's key, a flipped character, a truncation, an old one.
        let other = DiscoveryTokens::new(&[8u8; 32]);
        assert_eq!(other.verify(&t, 2_000), Err(TokenError::Invalid));
        let mut chars: Vec<char> = t.chars().collect();
        let i = DISCOVERY_TOKEN_PREFIX.len() + 3;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let flipped: String = chars.into_iter().collect();
        assert_eq!(tokens.verify(&flipped, 2_000), Err(TokenError::Invalid));
        assert_eq!(
            tokens.verify(&t[..t.len() - 4], 2_000),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            tokens.verify(&t, 1_000 + DISCOVERY_TOKEN_TTL_MS + 1),
            Err(TokenError::Expired)
        );
        for junk in ["", "bellows_disc_", "bellows_disc_!!!!", "bellows_boot_abc"] {
            assert_eq!(tokens.verify(junk, 0), Err(TokenError::Invalid), "{junk}");
        }
    }
}
