//! Which requests are served, and how a refusal reads: pure functions the
//! socket loop calls, so every accept/refuse rule can be tested without a
//! socket (and is fuzzable with the packet decoder).
//!
//! Two checkpoints: [`admit`] on the listening socket (is this a read
//! request, is there a free transfer slot, for the server and for this
//! client, counted by [`PerClient`]) and [`check_request`] on the
//! transfer's own socket (mode, path). What opening the file says is turned
//! into a refusal by [`refusal_for_open`].

use std::collections::HashMap;
use std::net::IpAddr;

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
        /// Refused only for want of a slot, and which.
        busy: Option<Busy>,
    },
    /// Not a request (or not decodable): drop it silently, as the RFC
    /// says a server must not answer stray packets on its well-known port.
    Ignore(String),
}

/// Which slot a request found taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Every transfer slot of the server is taken.
    Server,
    /// The client's address already runs as many transfers as one client
    /// may: one host must not hold the slots every other machine needs.
    Client,
}

/// Decides what to do with a datagram on the listening socket, given
/// which slot, if any, is taken (`None`: a transfer may start). A read-only
/// server refuses writes; a full server, or a client at its own limit, is
/// refused with "busy" so clients retry rather than time out.
pub fn admit(datagram: &[u8], busy: Option<Busy>) -> Admission<'_> {
    match Packet::decode(datagram) {
        Ok(Packet::ReadRequest(request)) => match busy {
            None => Admission::Serve(request),
            Some(Busy::Server) => Admission::Refuse {
                filename: request.filename,
                refusal: Refusal {
                    code: ErrorCode::NotDefined,
                    client_message: "Server busy, try again later",
                    reason: "server busy".into(),
                },
                busy,
            },
            Some(Busy::Client) => Admission::Refuse {
                filename: request.filename,
                refusal: Refusal {
                    code: ErrorCode::NotDefined,
                    client_message: "Too many transfers from your address, try again later",
                    reason: "too many transfers from this address".into(),
                },
                busy,
            },
        },
        Ok(Packet::WriteRequest(request)) => Admission::Refuse {
            filename: request.filename,
            refusal: Refusal {
                code: ErrorCode::AccessViolation,
                client_message: "Read-only server",
                reason: "write request to a read-only server".into(),
            },
            busy: None,
        },
        Ok(other) => Admission::Ignore(format!("non-request packet on the TFTP port: {other:?}")),
        Err(e) => Admission::Ignore(format!("malformed datagram on the TFTP port: {e}")),
    }
}

/// Transfers running per client address, against the per-client limit.
/// Holds an entry only for addresses with a transfer running, so it never
/// has more entries than the server has transfer slots.
#[derive(Debug)]
pub struct PerClient {
    limit: usize,
    running: HashMap<IpAddr, usize>,
}

impl PerClient {
    /// Counts against `limit` transfers per address.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            running: HashMap::new(),
        }
    }

    /// Counts one more transfer for `client`, unless it is at its limit.
    pub fn try_start(&mut self, client: IpAddr) -> bool {
        let running = self.running.entry(client).or_insert(0);
        if *running >= self.limit {
            return false;
        }
        *running += 1;
        true
    }

    /// Counts one of `client`'s transfers as ended.
    pub fn end(&mut self, client: IpAddr) {
        if let Some(running) = self.running.get_mut(&client) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                self.running.remove(&client);
            }
        }
    }

    /// Transfers `client` runs now.
    pub fn running(&self, client: IpAddr) -> usize {
        self.running.get(&client).copied().unwrap_or(0)
    }

    /// Addresses with at least one transfer running.
    pub fn clients(&self) -> usize {
        self.running.len()
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
            matches!(admit(&packet, None), Admission::Serve(r) if r.filename == "undionly.kpxe")
        );
        match admit(&packet, Some(Busy::Server)) {
            Admission::Refuse {
                filename,
                refusal,
                busy,
            } => {
                assert_eq!(busy, Some(Busy::Server));
                assert_eq!(filename, "undionly.kpxe");
                assert_eq!(refusal.code, ErrorCode::NotDefined);
                assert_eq!(refusal.reason, "server busy");
            }
            other => panic!("{other:?}"),
        }
        match admit(&packet, Some(Busy::Client)) {
            Admission::Refuse { refusal, busy, .. } => {
                assert_eq!(busy, Some(Busy::Client));
                assert_eq!(refusal.code, ErrorCode::NotDefined);
                assert!(refusal.client_message.contains("your address"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_address_counts_against_its_own_limit() {
        let a: IpAddr = "10.0.0.5".parse().unwrap();
        let b: IpAddr = "10.0.0.6".parse().unwrap();
        let mut clients = PerClient::new(2);
        assert!(clients.try_start(a));
        assert!(clients.try_start(a));
        assert!(!clients.try_start(a), "a third transfer for one address");
        assert!(clients.try_start(b), "another address is not affected");
        assert_eq!((clients.running(a), clients.running(b)), (2, 1));
        clients.end(a);
        assert!(clients.try_start(a));
        for _ in 0..5 {
            clients.end(a);
            clients.end(b);
        }
        assert_eq!(clients.clients(), 0, "ended clients leave no entry");
        assert_eq!(clients.running(a), 0);
    }

    #[test]
    fn writes_are_refused_and_stray_packets_ignored() {
        let mut wrq = rrq("evil", "octet");
        wrq[1] = 2;
        assert!(matches!(
            admit(&wrq, None),
            Admission::Refuse {
                refusal: Refusal {
                    code: ErrorCode::AccessViolation,
                    ..
                },
                ..
            }
        ));
        assert!(matches!(admit(&[0, 4, 0, 1], None), Admission::Ignore(_)));
        assert!(matches!(admit(b"\xff", None), Admission::Ignore(_)));
        assert!(matches!(admit(b"", None), Admission::Ignore(_)));
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
