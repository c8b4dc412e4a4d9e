//! Ethernet MAC addresses: the key by which booting machines are recognised.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit MAC address.
///
/// DHCP, iPXE and the worker all identify a machine by MAC, and each writes
/// it differently (`D0-50-99-…`, `d0:50:99:…`, `d050.99…`). Parsing them all
/// into one value and printing one canonical form (lowercase, colons) is what
/// makes "unique MAC across all hardware" mean something.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a MAC address (expected six hex octets such as d0:50:99:d7:63:20)")]
pub struct MacParseError {
    input: String,
}

impl MacAddr {
    /// The octets, for protocol code that writes them into packets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError {
            input: s.chars().take(64).collect(),
        };
        let hex: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        // Separators must be consistent with one of the usual layouts, not
        // sprinkled anywhere: accept 12 bare hex digits, or the separated forms.
        let trimmed = s.trim();
        let separated_ok = match trimmed.len() {
            12 => true,
            17 => {
                let sep = trimmed.as_bytes()[2];
                (sep == b':' || sep == b'-')
                    && trimmed
                        .bytes()
                        .enumerate()
                        .all(|(i, b)| if i % 3 == 2 { b == sep } else { b != sep })
            }
            14 => trimmed
                .bytes()
                .enumerate()
                .all(|(i, b)| if i % 5 == 4 { b == b'.' } else { b != b'.' }),
            _ => false,
        };
        if !separated_ok || hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).map_err(|_| err())?;
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings_to_one_canonical_form() {
        for s in [
            "d0:50:99:d7:63:20",
            "D0:50:99:D7:63:20",
            "d0-50-99-d7-63-20",
            "d050.99d7.6320",
            "d05099d76320",
            " d0:50:99:d7:63:20 ",
        ] {
            let mac: MacAddr = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(mac.to_string(), "d0:50:99:d7:63:20", "{s}");
        }
    }

    #[test]
    fn rejects_non_macs() {
        for s in [
            "",
            "d0:50:99:d7:63",
            "d0:50:99:d7:63:20:11",
            "g0:50:99:d7:63:20",
            "d0:50-99:d7:63:20",
            "d0::5099:d7:63:20",
            "d0:50:99:d7:6:320",
            "10.0.0.1",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s:?} accepted");
        }
    }
}
