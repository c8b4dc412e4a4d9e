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
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

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

/// Transfers running per client address, against the per-client limit,
/// and per client endpoint the requests they answer. Holds entries only
/// for transfers running, so it never has more than the server has slots.
#[derive(Debug)]
pub struct PerClient {
    limit: usize,
    running: HashMap<IpAddr, usize>,
    /// The [`fingerprint`] of each running transfer's request, by client
    /// address and port (more than one when a client starts a new fetch
    /// from the same port before the server has seen the previous end; at
    /// most `limit`).
    requests: HashMap<SocketAddr, Vec<u64>>,
}

/// A request datagram's fingerprint: equal for a retransmission, which
/// repeats the request byte for byte.
pub fn fingerprint(datagram: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    datagram.hash(&mut hasher);
    hasher.finish()
}

/// Whether a request may start a transfer for its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Counted: the transfer may run.
    Started,
    /// The client's address already runs `limit` transfers.
    AtLimit,
    /// A transfer for this very address and port runs already and answers
    /// the same request, byte for byte: this is the client's retransmission
    /// of its read request (firmware sends it again when the first answer
    /// is late), not a new fetch. Serving it would start a second transfer
    /// the client ignores, doubling the load exactly when the server is
    /// slow. (A different request from the same port is a new fetch.)
    Duplicate,
}

impl PerClient {
    /// Counts against `limit` transfers per address.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            running: HashMap::new(),
            requests: HashMap::new(),
        }
    }

    /// Counts one more transfer for `peer`, answering the request with
    /// this [`fingerprint`], unless its address is at its limit or one of
    /// `peer`'s running transfers answers that same request.
    pub fn try_start(&mut self, peer: SocketAddr, request: u64) -> Start {
        if self
            .requests
            .get(&peer)
            .is_some_and(|running| running.contains(&request))
        {
            return Start::Duplicate;
        }
        let running = self.running.entry(peer.ip()).or_insert(0);
        if *running >= self.limit {
            return Start::AtLimit;
        }
        *running += 1;
        self.requests.entry(peer).or_default().push(request);
        Start::Started
    }

    /// Counts `peer`'s transfer of `request` as ended.
    pub fn end(&mut self, peer: SocketAddr, request: u64) {
        let Some(running) = self.requests.get_mut(&peer) else {
            return;
        };
        let Some(at) = running.iter().position(|r| *r == request) else {
            return;
        };
        running.swap_remove(at);
        if running.is_empty() {
            self.requests.remove(&peer);
        }
        if let Some(running) = self.running.get_mut(&peer.ip()) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                self.running.remove(&peer.ip());
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
        let a = |port| SocketAddr::new("10.0.0.5".parse().unwrap(), port);
        let b = SocketAddr::new("10.0.0.6".parse().unwrap(), 1000);
        let mut clients = PerClient::new(2);
        assert_eq!(clients.try_start(a(1000), 1), Start::Started);
        assert_eq!(clients.try_start(a(1001), 1), Start::Started);
        assert_eq!(
            clients.try_start(a(1002), 1),
            Start::AtLimit,
            "a third transfer for one address"
        );
        assert_eq!(
            clients.try_start(b, 1),
            Start::Started,
            "another address is not affected"
        );
        assert_eq!(
            (clients.running(a(0).ip()), clients.running(b.ip())),
            (2, 1)
        );
        clients.end(a(1000), 1);
        assert_eq!(clients.try_start(a(1002), 1), Start::Started);
        for port in 1000..1005 {
            clients.end(a(port), 1);
            clients.end(b, 1);
        }
        assert_eq!(clients.clients(), 0, "ended clients leave no entry");
        assert_eq!(clients.running(a(0).ip()), 0);
    }

    #[test]
    fn a_retransmitted_request_is_not_a_second_transfer() {
        let peer = SocketAddr::new("10.0.0.5".parse().unwrap(), 2070);
        let first = fingerprint(&rrq("undionly.kpxe", "octet"));
        let other = fingerprint(&rrq("ipxe.efi", "octet"));
        assert_ne!(first, other);
        let mut clients = PerClient::new(8);
        assert_eq!(clients.try_start(peer, first), Start::Started);
        assert_eq!(clients.try_start(peer, first), Start::Duplicate);
        assert_eq!(
            clients.running(peer.ip()),
            1,
            "the duplicate is not counted"
        );
        // Another request from the same port is a new fetch: its client may
        // start it before the server has seen the first one end.
        assert_eq!(clients.try_start(peer, other), Start::Started);
        assert_eq!(clients.try_start(peer, other), Start::Duplicate);
        assert_eq!(clients.running(peer.ip()), 2);
        // A request that started nothing in the end (refused once decoded,
        // or not a request at all) leaves the running ones recognised.
        let stray = fingerprint(b"not a request");
        assert_eq!(clients.try_start(peer, stray), Start::Started);
        clients.end(peer, stray);
        assert_eq!(clients.try_start(peer, first), Start::Duplicate);
        assert_eq!(clients.try_start(peer, other), Start::Duplicate);
        // Ending what does not run changes nothing.
        clients.end(SocketAddr::new(peer.ip(), 2071), first);
        clients.end(peer, stray);
        assert_eq!(clients.running(peer.ip()), 2);
        clients.end(peer, first);
        assert_eq!(
            clients.try_start(peer, first),
            Start::Started,
            "once its transfer ended, the same port may fetch the same file again"
        );
        clients.end(peer, first);
        clients.end(peer, other);
        assert_eq!(clients.clients(), 0);
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
