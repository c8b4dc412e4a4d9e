//! DHCPv4 on the wire: a total parser for requests and a size-bounded
//! encoder for replies.
//!
//! Every byte here comes from a peer, so the parser never indexes past what
//! it checked, never panics, and rejects what it cannot read with a
//! [`WireError`]. (dhcproto 0.15, which the tests use as an independent
//! codec, panics on some hostile inputs in debug builds, and its
//! `Message::chaddr` panics on any `hlen` over 16; its encoder also orders
//! options by code, so it cannot honour a client's option 55 order or drop
//! the least wanted options to fit option 57.)

use std::net::Ipv4Addr;

use bellows_model::MacAddr;

/// BOOTP `op` of a client message.
pub const BOOTREQUEST: u8 = 1;
/// BOOTP `op` of a server message.
pub const BOOTREPLY: u8 = 2;
/// The four bytes that mark the options field as DHCP (RFC 2131 §3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header before the magic cookie.
const HEADER_LEN: usize = 236;
/// Header plus magic cookie: the shortest DHCP message.
pub const MIN_MESSAGE_LEN: usize = HEADER_LEN + 4;
/// Every DHCP client accepts IP datagrams of this size (RFC 2131 §2).
pub const MIN_DATAGRAM_LEN: usize = 576;
/// IPv4 header (no options) plus UDP header: what option 57 also counts.
pub const IP_UDP_HEADER_LEN: usize = 28;
/// BOOTP relays and old clients want at least this much (RFC 1542 §2.1).
const BOOTP_MIN_LEN: usize = 300;
/// Offset of the `sname` field.
const SNAME_OFFSET: usize = 44;
/// Offset of the `file` field.
const FILE_OFFSET: usize = 108;
/// `sname` is 64 bytes, `file` 128, both NUL-terminated.
pub const SNAME_LEN: usize = 64;
/// Size of the BOOTP `file` field.
pub const FILE_LEN: usize = 128;
/// The broadcast bit of `flags` (RFC 2131 §2).
pub const BROADCAST_FLAG: u16 = 0x8000;

/// DHCP option codes Bellows reads or writes.
pub mod code {
    /// Padding (no length byte).
    pub const PAD: u8 = 0;
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Default routers.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS_SERVERS: u8 = 6;
    /// Log (syslog) servers.
    pub const LOG_SERVERS: u8 = 7;
    /// Host name.
    pub const HOSTNAME: u8 = 12;
    /// Domain name.
    pub const DOMAIN_NAME: u8 = 15;
    /// Broadcast address.
    pub const BROADCAST_ADDRESS: u8 = 28;
    /// NTP servers.
    pub const NTP_SERVERS: u8 = 42;
    /// Vendor-specific information (PXE sub-options for PXE clients).
    pub const VENDOR_SPECIFIC: u8 = 43;
    /// Requested IP address.
    pub const REQUESTED_IP: u8 = 50;
    /// Lease time.
    pub const LEASE_TIME: u8 = 51;
    /// Option overload: more options in `file` (1), `sname` (2) or both (3).
    pub const OVERLOAD: u8 = 52;
    /// DHCP message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list.
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    /// Error message text (in NAKs).
    pub const MESSAGE: u8 = 56;
    /// Maximum DHCP message size the client accepts.
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    /// Renewal (T1) time.
    pub const RENEWAL_TIME: u8 = 58;
    /// Rebinding (T2) time.
    pub const REBINDING_TIME: u8 = 59;
    /// Vendor class identifier ("PXEClient…", "HTTPClient…").
    pub const VENDOR_CLASS: u8 = 60;
    /// TFTP server name.
    pub const TFTP_SERVER_NAME: u8 = 66;
    /// Boot file name.
    pub const BOOTFILE_NAME: u8 = 67;
    /// User class ("iPXE").
    pub const USER_CLASS: u8 = 77;
    /// Relay agent information, echoed back to relays (RFC 3046).
    pub const RELAY_AGENT_INFO: u8 = 82;
    /// Client system architecture (RFC 4578).
    pub const CLIENT_ARCH: u8 = 93;
    /// Client network interface identifier (RFC 4578).
    pub const CLIENT_NDI: u8 = 94;
    /// Client machine identifier, the UUID/GUID (RFC 4578).
    pub const CLIENT_UUID: u8 = 97;
    /// iPXE encapsulated options.
    pub const IPXE_ENCAPSULATED: u8 = 175;
    /// iPXE `no-pxedhcp` sub-option of 175.
    pub const IPXE_NO_PXEDHCP: u8 = 176;
    /// End of options.
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Client looks for servers.
    Discover,
    /// Server offers an address.
    Offer,
    /// Client asks for (or renews) an address.
    Request,
    /// Client found the address in use.
    Decline,
    /// Server confirms.
    Ack,
    /// Server refuses.
    Nak,
    /// Client gives the address back.
    Release,
    /// Client has an address and asks for the rest of its configuration.
    Inform,
    /// Anything else (lease query, forcerenew …), not served.
    Other(u8),
}

impl MessageType {
    /// The option 53 byte.
    pub fn code(self) -> u8 {
        match self {
            MessageType::Discover => 1,
            MessageType::Offer => 2,
            MessageType::Request => 3,
            MessageType::Decline => 4,
            MessageType::Ack => 5,
            MessageType::Nak => 6,
            MessageType::Release => 7,
            MessageType::Inform => 8,
            MessageType::Other(c) => c,
        }
    }

    /// The message type an option 53 byte names.
    pub fn from_code(c: u8) -> MessageType {
        match c {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            other => MessageType::Other(other),
        }
    }
}

/// Why bytes are not a DHCP message Bellows can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the fixed header and magic cookie.
    #[error("{0} bytes is shorter than the 240 of a DHCP header")]
    TooShort(usize),
    /// A BOOTP message without DHCP's magic cookie, or garbage.
    #[error("no DHCP magic cookie (found {0:02x?})")]
    BadMagic([u8; 4]),
    /// `hlen` larger than the 16-byte `chaddr` field.
    #[error("hardware address length {0} exceeds the 16-byte chaddr field")]
    BadHardwareLength(u8),
    /// An option's length byte runs past the end of its field.
    #[error("option {code} at byte {offset} runs past the end of the packet")]
    TruncatedOption {
        /// Option code.
        code: u8,
        /// Offset of the option in its field.
        offset: usize,
    },
    /// An option Bellows interprets has a length its type cannot have.
    #[error("option {code} has length {len}, expected {expected}")]
    BadOptionLength {
        /// Option code.
        code: u8,
        /// Length found.
        len: usize,
        /// What the type requires.
        expected: &'static str,
    },
    /// Plain BOOTP: no option 53. Bellows serves DHCP clients only.
    #[error("no DHCP message type (option 53): plain BOOTP is not served")]
    NoMessageType,
}

/// Options of one message in first-seen order, each instance of a code
/// concatenated (RFC 3396), from `options` then `file` then `sname` when
/// option 52 says so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    entries: Vec<(u8, Vec<u8>)>,
}

impl Options {
    /// The value of option `code`, if present.
    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    /// Is option `code` present (even empty)?
    pub fn contains(&self, code: u8) -> bool {
        self.entries.iter().any(|(c, _)| *c == code)
    }

    /// All options in first-seen order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.entries.iter().map(|(c, v)| (*c, v.as_slice()))
    }

    fn append(&mut self, code: u8, data: &[u8]) {
        match self.entries.iter_mut().find(|(c, _)| *c == code) {
            Some((_, existing)) => existing.extend_from_slice(data),
            None => self.entries.push((code, data.to_vec())),
        }
    }
}

/// A decoded client message: the header fields and options the responder
/// needs, every one already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// BOOTP op (1 for client messages).
    pub op: u8,
    /// Hardware type (1 is Ethernet).
    pub htype: u8,
    /// Hardware address length, at most 16.
    pub hlen: u8,
    /// Relay hop count.
    pub hops: u8,
    /// Transaction id. Never unique across boots (Debian's ipxe.efi
    /// repeats it), so nothing keys state on it.
    pub xid: u32,
    /// Seconds since the client began.
    pub secs: u16,
    /// Flags; the top bit asks for broadcast replies.
    pub flags: u16,
    /// Client's current address (renewing, informing).
    pub ciaddr: Ipv4Addr,
    /// Relay agent address; non-zero when relayed.
    pub giaddr: Ipv4Addr,
    /// Client hardware address field, all 16 bytes as sent.
    pub chaddr: [u8; 16],
    /// The DHCP message type.
    pub message_type: MessageType,
    /// All options.
    pub options: Options,
}

impl Request {
    /// Parses a client message. Total: any input gives a value or an error.
    pub fn parse(bytes: &[u8]) -> Result<Request, WireError> {
        if bytes.len() < MIN_MESSAGE_LEN {
            return Err(WireError::TooShort(bytes.len()));
        }
        let magic = [bytes[236], bytes[237], bytes[238], bytes[239]];
        if magic != MAGIC_COOKIE {
            return Err(WireError::BadMagic(magic));
        }
        let hlen = bytes[2];
        if usize::from(hlen) > 16 {
            return Err(WireError::BadHardwareLength(hlen));
        }
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let u32_at =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&bytes[28..44]);

        let mut options = Options::default();
        let overload = parse_options(&bytes[MIN_MESSAGE_LEN..], &mut options, true)?;
        // RFC 3396: options field, then `file`, then `sname`.
        if overload & 1 != 0 {
            parse_options(
                &bytes[FILE_OFFSET..FILE_OFFSET + FILE_LEN],
                &mut options,
                false,
            )?;
        }
        if overload & 2 != 0 {
            parse_options(
                &bytes[SNAME_OFFSET..SNAME_OFFSET + SNAME_LEN],
                &mut options,
                false,
            )?;
        }

        let message_type = match options.get(code::MESSAGE_TYPE) {
            None => return Err(WireError::NoMessageType),
            Some([t]) => MessageType::from_code(*t),
            Some(other) => {
                return Err(WireError::BadOptionLength {
                    code: code::MESSAGE_TYPE,
                    len: other.len(),
                    expected: "1",
                });
            }
        };
        check_len(&options, code::REQUESTED_IP, |l| l == 4, "4")?;
        check_len(&options, code::SERVER_ID, |l| l == 4, "4")?;
        check_len(&options, code::MAX_MESSAGE_SIZE, |l| l == 2, "2")?;
        check_len(
            &options,
            code::CLIENT_ARCH,
            |l| l >= 2 && l % 2 == 0,
            "a non-empty multiple of 2",
        )?;

        Ok(Request {
            op: bytes[0],
            htype: bytes[1],
            hlen,
            hops: bytes[3],
            xid: u32_at(4),
            secs: u16_at(8),
            flags: u16_at(10),
            ciaddr: Ipv4Addr::from(u32_at(12)),
            giaddr: Ipv4Addr::from(u32_at(24)),
            chaddr,
            message_type,
            options,
        })
    }

    /// The client's MAC, when it is an Ethernet client (htype 1, hlen 6).
    pub fn mac(&self) -> Option<MacAddr> {
        if self.htype != 1 || self.hlen != 6 {
            return None;
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.chaddr[..6]);
        Some(MacAddr(mac))
    }

    /// Option 50.
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.ipv4_option(code::REQUESTED_IP)
    }

    /// Option 54: the server the client chose.
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.ipv4_option(code::SERVER_ID)
    }

    /// Option 57.
    pub fn max_message_size(&self) -> Option<u16> {
        match self.options.get(code::MAX_MESSAGE_SIZE)? {
            [a, b] => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }

    /// Option 55, in the client's order of preference.
    pub fn parameter_request_list(&self) -> &[u8] {
        self.options
            .get(code::PARAMETER_REQUEST_LIST)
            .unwrap_or_default()
    }

    /// The first architecture of option 93.
    pub fn client_arch(&self) -> Option<u16> {
        match self.options.get(code::CLIENT_ARCH)? {
            [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }

    /// Does the client want broadcast replies?
    pub fn broadcast_flag(&self) -> bool {
        self.flags & BROADCAST_FLAG != 0
    }

    fn ipv4_option(&self, c: u8) -> Option<Ipv4Addr> {
        match self.options.get(c)? {
            [a, b, c, d] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => None,
        }
    }
}

fn check_len(
    options: &Options,
    c: u8,
    ok: impl Fn(usize) -> bool,
    expected: &'static str,
) -> Result<(), WireError> {
    match options.get(c) {
        Some(v) if !ok(v.len()) => Err(WireError::BadOptionLength {
            code: c,
            len: v.len(),
            expected,
        }),
        _ => Ok(()),
    }
}

/// Walks one options field; returns the overload value (option 52) found
/// in it when `main` (overload inside `file`/`sname` is ignored).
fn parse_options(field: &[u8], options: &mut Options, main: bool) -> Result<u8, WireError> {
    let mut overload = 0u8;
    let mut i = 0usize;
    while let Some(&c) = field.get(i) {
        match c {
            code::PAD => i += 1,
            code::END => break,
            _ => {
                let len = usize::from(
                    *field
                        .get(i + 1)
                        .ok_or(WireError::TruncatedOption { code: c, offset: i })?,
                );
                let data = field
                    .get(i + 2..i + 2 + len)
                    .ok_or(WireError::TruncatedOption { code: c, offset: i })?;
                if c == code::OVERLOAD {
                    if main && let [v] = data {
                        overload = *v & 3;
                    }
                } else {
                    options.append(c, data);
                }
                i += 2 + len;
            }
        }
    }
    Ok(overload)
}

/// One option of a reply, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyOption {
    /// Option code.
    pub code: u8,
    /// Value; longer than 255 bytes is split into consecutive instances.
    pub data: Vec<u8>,
    /// Kept even when the reply has to shrink to fit the client's limit.
    pub required: bool,
}

/// A reply, ready to encode: header fields and options in the order they
/// should appear (which is also the order of importance: when the reply
/// must shrink, options are dropped from the end, required ones never).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyPacket {
    /// Copied from the request.
    pub htype: u8,
    /// Copied from the request.
    pub hlen: u8,
    /// Copied from the request.
    pub xid: u32,
    /// Copied from the request (broadcast bit).
    pub flags: u16,
    /// The client's own address, for ACKs to RENEW and INFORM.
    pub ciaddr: Ipv4Addr,
    /// The address offered or confirmed.
    pub yiaddr: Ipv4Addr,
    /// Next server (TFTP) address.
    pub siaddr: Ipv4Addr,
    /// Relay address, copied from the request.
    pub giaddr: Ipv4Addr,
    /// Copied from the request.
    pub chaddr: [u8; 16],
    /// BOOTP `file`: the boot file name; at most 127 bytes.
    pub file: Vec<u8>,
    /// Options in emission order, message type first.
    pub options: Vec<ReplyOption>,
}

/// What [`ReplyPacket::encode`] had to leave out to respect the size limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    /// The datagram payload.
    pub bytes: Vec<u8>,
    /// Codes of options dropped to fit.
    pub dropped: Vec<u8>,
}

/// Encoded size of one option (with RFC 3396 splitting).
pub fn option_wire_len(data: &[u8]) -> usize {
    if data.is_empty() {
        2
    } else {
        data.len() + 2 * data.len().div_ceil(255)
    }
}

fn write_option(out: &mut Vec<u8>, c: u8, data: &[u8]) {
    if data.is_empty() {
        out.extend_from_slice(&[c, 0]);
        return;
    }
    for chunk in data.chunks(255) {
        out.push(c);
        // chunks(255) never yields more than 255 bytes.
        out.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(chunk);
    }
}

impl ReplyPacket {
    /// Encodes the reply in at most `max_len` bytes (at least the 300 of
    /// BOOTP, padded), dropping optional options from the end until it fits.
    pub fn encode(&self, max_len: usize) -> Encoded {
        let fixed = MIN_MESSAGE_LEN + 1; // header, cookie, END
        let mut keep: Vec<bool> = vec![true; self.options.len()];
        let mut total: usize = fixed
            + self
                .options
                .iter()
                .map(|o| option_wire_len(&o.data))
                .sum::<usize>();
        let mut dropped = Vec::new();
        for (idx, opt) in self.options.iter().enumerate().rev() {
            if total <= max_len {
                break;
            }
            if !opt.required {
                keep[idx] = false;
                total -= option_wire_len(&opt.data);
                dropped.push(opt.code);
            }
        }
        dropped.reverse();

        let mut out = Vec::with_capacity(total.max(BOOTP_MIN_LEN));
        out.push(BOOTREPLY);
        out.push(self.htype);
        out.push(self.hlen);
        out.push(0); // hops
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes()); // secs
        out.extend_from_slice(&self.flags.to_be_bytes());
        for addr in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&addr.octets());
        }
        out.extend_from_slice(&self.chaddr);
        out.extend_from_slice(&[0u8; SNAME_LEN]);
        let mut file = [0u8; FILE_LEN];
        let n = self.file.len().min(FILE_LEN - 1);
        file[..n].copy_from_slice(&self.file[..n]);
        out.extend_from_slice(&file);
        out.extend_from_slice(&MAGIC_COOKIE);
        for (opt, _) in self.options.iter().zip(&keep).filter(|(_, k)| **k) {
            write_option(&mut out, opt.code, &opt.data);
        }
        out.push(code::END);
        if out.len() < BOOTP_MIN_LEN {
            out.resize(BOOTP_MIN_LEN, code::PAD);
        }
        Encoded {
            bytes: out,
            dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(options: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; MIN_MESSAGE_LEN];
        p[0] = BOOTREQUEST;
        p[1] = 1;
        p[2] = 6;
        p[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        p[236..240].copy_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(options);
        p
    }

    #[test]
    fn parses_a_discover_with_split_and_overloaded_options() {
        // Option 12 split in two instances (RFC 3396); option 52 = 1 puts
        // option 60 in the `file` field.
        let mut p = minimal(&[53, 1, 1, 12, 2, b'a', b'b', 12, 1, b'c', 52, 1, 1, 255]);
        p[FILE_OFFSET..FILE_OFFSET + 6].copy_from_slice(&[60, 3, b'P', b'X', b'E', 255]);
        let r = Request::parse(&p).expect("parses");
        assert_eq!(r.message_type, MessageType::Discover);
        assert_eq!(r.options.get(12), Some(&b"abc"[..]));
        assert_eq!(r.options.get(60), Some(&b"PXE"[..]));
        assert_eq!(
            r.mac().map(|m| m.to_string()).as_deref(),
            Some("02:00:00:00:00:01")
        );
    }

    #[test]
    fn refuses_malformed_input_without_panicking() {
        assert_eq!(Request::parse(&[]), Err(WireError::TooShort(0)));
        let mut bad_magic = minimal(&[53, 1, 1, 255]);
        bad_magic[236] = 0;
        assert!(matches!(
            Request::parse(&bad_magic),
            Err(WireError::BadMagic(_))
        ));
        let mut big_hlen = minimal(&[53, 1, 1, 255]);
        big_hlen[2] = 200;
        assert_eq!(
            Request::parse(&big_hlen),
            Err(WireError::BadHardwareLength(200))
        );
        assert!(matches!(
            Request::parse(&minimal(&[53, 1, 1, 12, 10, b'a'])),
            Err(WireError::TruncatedOption { code: 12, .. })
        ));
        assert!(matches!(
            Request::parse(&minimal(&[53])),
            Err(WireError::TruncatedOption { code: 53, .. })
        ));
        assert_eq!(
            Request::parse(&minimal(&[12, 1, b'a', 255])),
            Err(WireError::NoMessageType)
        );
        assert!(matches!(
            Request::parse(&minimal(&[53, 2, 1, 1, 255])),
            Err(WireError::BadOptionLength { code: 53, .. })
        ));
        assert!(matches!(
            Request::parse(&minimal(&[53, 1, 1, 50, 3, 1, 2, 3, 255])),
            Err(WireError::BadOptionLength { code: 50, .. })
        ));
        assert!(matches!(
            Request::parse(&minimal(&[53, 1, 1, 93, 1, 0, 255])),
            Err(WireError::BadOptionLength { code: 93, .. })
        ));
    }

    #[test]
    fn non_ethernet_clients_have_no_mac() {
        let mut p = minimal(&[53, 1, 1, 255]);
        p[1] = 32; // InfiniBand
        p[2] = 0;
        assert_eq!(Request::parse(&p).map(|r| r.mac()), Ok(None));
    }

    #[test]
    fn encoder_drops_optional_options_from_the_end_to_fit() {
        let reply = ReplyPacket {
            htype: 1,
            hlen: 6,
            xid: 7,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 0, 0, 2),
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [0; 16],
            file: Vec::new(),
            options: vec![
                ReplyOption {
                    code: 53,
                    data: vec![2],
                    required: true,
                },
                ReplyOption {
                    code: 15,
                    data: vec![b'x'; 200],
                    required: false,
                },
                ReplyOption {
                    code: 12,
                    data: vec![b'y'; 200],
                    required: false,
                },
                ReplyOption {
                    code: 99,
                    data: vec![b'z'; 300],
                    required: true,
                },
            ],
        };
        let all = reply.encode(2000);
        assert!(all.dropped.is_empty());
        // 300 bytes of option 99 go out as two instances.
        let limited = reply.encode(548);
        assert!(limited.bytes.len() <= 548, "{}", limited.bytes.len());
        assert_eq!(limited.dropped, vec![15, 12]);
        let tiny = reply.encode(100);
        assert_eq!(
            tiny.dropped,
            vec![15, 12],
            "required options stay even over the limit"
        );
    }
}
