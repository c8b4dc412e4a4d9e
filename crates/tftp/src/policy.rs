//! Which requests are served, and how a refusal reads: pure functions the
//! socket loop calls, so every accept/refuse rule can be tested without a
//! socket (and is fuzzable with the packet decoder).
//!
//! Two checkpoints: [`admit`] on the listening socket (is this a read
//! request, is there a free transfer slot) and [`check_request`] on the
//! transfer's own socket (mode, path). What opening the file says is turned
//! into a refusal by [`refusal_for_open`].

use crate::files::{OpenError, RequestPath, sanitize_request_path};
use crate::packet::{ErrorCode, Packet, Request};

/// Why a request is not served: the error the client is sent, and the
/// reason kept in the transfer record and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// TFTP error code sent to the client.
    pub code: ErrorCode,
    /// Text sent to the client: short, and never a server path.
    pub client_message: &'static str,
    /// Text for the operator.
    pub reason: String,
}

/// What the listening socket does with one datagram.
#[derive(Debug)]
pub enum Admission<'a> {
    /// Start a transfer for this read request.
    Serve(Request<'a>),
    /// Answer with an error and record the refusal.
    Refuse {
        /// The file the client asked for, for the record.
        filename: &'a str,
        /// Why.
        refusal: Refusal,
        /// Refused only because every transfer slot is taken.
        busy: bool,
    },
    /// Not a request (or not decodable): drop it silently, as the RFC
    /// says a server must not answer stray packets on its well-known port.
    Ignore(String),
}

/// Decides what to do with a datagram on the listening socket, given
/// whether a transfer slot is free. A read-only server refuses writes; a
/// full server refuses with "busy" so clients retry rather than time out.
pub fn admit(datagram: &[u8], slot_free: bool) -> Admission<'_> {
    match Packet::decode(datagram) {
        Ok(Packet::ReadRequest(request)) if slot_free => Admission::Serve(request),
        Ok(Packet::ReadRequest(request)) => Admission::Refuse {
            filename: request.filename,
            refusal: Refusal {
                code: ErrorCode::NotDefined,
                client_message: "Server busy, try again later",
                reason: "server busy".into(),
            },
            busy: true,
        },
        Ok(Packet::WriteRequest(request)) => Admission::Refuse {
            filename: request.filename,
            refusal: Refusal {
                code: ErrorCode::AccessViolation,
                client_message: "Read-only server",
                reason: "write request to a read-only server".into(),
            },
            busy: false,
        },
        Ok(other) => Admission::Ignore(format!("non-request packet on the TFTP port: {other:?}")),
        Err(e) => Admission::Ignore(format!("malformed datagram on the TFTP port: {e}")),
    }
}

/// What an admitted request will be served as.
#[derive(Debug)]
pub struct Accepted {
    /// The sanitised path, with any per-machine MAC prefix split off.
    pub path: RequestPath,
    /// Whether the client asked for netascii (else octet).
    pub netascii: bool,
}

/// Checks an admitted request's mode and path before any file is opened:
/// only octet and netascii, and only paths inside the served tree.
pub fn check_request(filename: &str, mode: &str) -> Result<Accepted, Refusal> {
    let netascii = match mode.to_ascii_lowercase().as_str() {
        "octet" => false,
        "netascii" => true,
        other => {
            return Err(Refusal {
                code: ErrorCode::IllegalOperation,
                client_message: "Only octet and netascii modes are supported",
                reason: format!("unsupported mode {other:?}"),
            });
        }
    };
    let path = sanitize_request_path(filename).map_err(|e| Refusal {
        code: ErrorCode::AccessViolation,
        client_message: "Access violation",
        reason: e.to_string(),
    })?;
    Ok(Accepted { path, netascii })
}

/// How a failure to open the file is told to the client.
pub fn refusal_for_open(error: &OpenError) -> Refusal {
    match error {
        OpenError::NotFound => Refusal {
            code: ErrorCode::FileNotFound,
            client_message: "File not found",
            reason: "file not found".into(),
        },
        OpenError::AccessDenied(reason) => Refusal {
            code: ErrorCode::AccessViolation,
            client_message: "Access violation",
            reason: reason.clone(),
        },
        OpenError::Io(e) => Refusal {
            code: ErrorCode::NotDefined,
            client_message: "Cannot read file",
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(name: &str, mode: &str) -> Vec<u8> {
        let mut p = vec![0, 1];
        p.extend_from_slice(name.as_bytes());
        p.push(0);
        p.extend_from_slice(mode.as_bytes());
        p.push(0);
        p
    }

    #[test]
    fn a_read_request_is_served_while_a_slot_is_free_and_refused_as_busy_otherwise() {
        let packet = rrq("undionly.kpxe", "octet");
        assert!(
            matches!(admit(&packet, true), Admission::Serve(r) if r.filename == "undionly.kpxe")
        );
        match admit(&packet, false) {
            Admission::Refuse {
                filename,
                refusal,
                busy,
            } => {
                assert!(busy);
                assert_eq!(filename, "undionly.kpxe");
                assert_eq!(refusal.code, ErrorCode::NotDefined);
                assert_eq!(refusal.reason, "server busy");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writes_are_refused_and_stray_packets_ignored() {
        let mut wrq = rrq("evil", "octet");
        wrq[1] = 2;
        assert!(matches!(
            admit(&wrq, true),
            Admission::Refuse {
                refusal: Refusal {
                    code: ErrorCode::AccessViolation,
                    ..
                },
                ..
            }
        ));
        assert!(matches!(admit(&[0, 4, 0, 1], true), Admission::Ignore(_)));
        assert!(matches!(admit(b"\xff", true), Admission::Ignore(_)));
        assert!(matches!(admit(b"", true), Admission::Ignore(_)));
    }

    #[test]
    fn mode_and_path_are_checked_before_opening() {
        let ok = check_request("/01:02:03:04:05:06/ipxe.efi", "OCTET").unwrap();
        assert!(!ok.netascii);
        assert!(ok.path.mac.is_some());
        assert!(check_request("boot.cfg", "NetAscii").unwrap().netascii);
        let mail = check_request("x", "mail").unwrap_err();
        assert_eq!(mail.code, ErrorCode::IllegalOperation);
        let escape = check_request("../../etc/shadow", "octet").unwrap_err();
        assert_eq!(escape.code, ErrorCode::AccessViolation);
        assert!(!escape.client_message.contains("etc"));
    }

    #[test]
    fn open_failures_never_show_the_client_a_server_path() {
        let denied = refusal_for_open(&OpenError::AccessDenied("/srv/tftp/x is a symlink".into()));
        assert_eq!(denied.client_message, "Access violation");
        assert!(denied.reason.contains("symlink"));
        assert_eq!(
            refusal_for_open(&OpenError::NotFound).code,
            ErrorCode::FileNotFound
        );
    }
}
