//! The TFTP wire format (RFC 1350, with RFC 2347's OACK): decoding and
//! encoding of single datagrams. No IO, no state.
//!
//! Decoding borrows from the datagram and never panics: every malformed input
//! is a [`DecodeError`] naming what is wrong. Encoding refuses only strings the
//! format cannot carry (an embedded NUL).

use std::borrow::Cow;
use std::fmt;

/// Smallest block size a client may ask for (RFC 2348).
pub const MIN_BLOCK_SIZE: u16 = 8;
/// Largest block size a client may ask for (RFC 2348): fits a 64 KiB IP datagram.
pub const MAX_BLOCK_SIZE: u16 = 65464;
/// Block size of a transfer that negotiates none (RFC 1350).
pub const DEFAULT_BLOCK_SIZE: u16 = 512;
/// Bytes before the payload of a DATA packet (opcode and block number).
pub const DATA_HEADER_LEN: usize = 4;

const OPCODE_RRQ: u16 = 1;
const OPCODE_WRQ: u16 = 2;
const OPCODE_DATA: u16 = 3;
const OPCODE_ACK: u16 = 4;
const OPCODE_ERROR: u16 = 5;
const OPCODE_OACK: u16 = 6;

/// TFTP error codes (RFC 1350, and 8 from RFC 2347), so callers never juggle
/// bare numbers; unknown codes a peer sends are kept in [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    NotDefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 3: disk full or allocation exceeded.
    DiskFull,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID (a packet from the wrong port).
    UnknownTransferId,
    /// 6: file already exists.
    FileExists,
    /// 7: no such user.
    NoSuchUser,
    /// 8: the client refuses the options the server acknowledged (RFC 2347).
    OptionsRefused,
    /// Any other code a peer sent.
    Other(u16),
}

impl ErrorCode {
    /// The code for the number on the wire.
    pub fn from_u16(code: u16) -> Self {
        match code {
            0 => Self::NotDefined,
            1 => Self::FileNotFound,
            2 => Self::AccessViolation,
            3 => Self::DiskFull,
            4 => Self::IllegalOperation,
            5 => Self::UnknownTransferId,
            6 => Self::FileExists,
            7 => Self::NoSuchUser,
            8 => Self::OptionsRefused,
            other => Self::Other(other),
        }
    }

    /// The number on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            Self::NotDefined => 0,
            Self::FileNotFound => 1,
            Self::AccessViolation => 2,
            Self::DiskFull => 3,
            Self::IllegalOperation => 4,
            Self::UnknownTransferId => 5,
            Self::FileExists => 6,
            Self::NoSuchUser => 7,
            Self::OptionsRefused => 8,
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// One `name=value` option of a request or an OACK (RFC 2347), as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TftpOption<'a> {
    /// The option name in the sender's spelling (compare case-insensitively).
    pub name: &'a str,
    /// The value, as text.
    pub value: &'a str,
}

/// A read or write request as the client sent it; the server interprets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The requested file name, unsanitised.
    pub filename: &'a str,
    /// The transfer mode (`octet`, `netascii`, `mail`, any case).
    pub mode: &'a str,
    /// RFC 2347 options in the order sent.
    pub options: Vec<TftpOption<'a>>,
}

/// One TFTP datagram, borrowing from the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// RRQ (opcode 1).
    ReadRequest(Request<'a>),
    /// WRQ (opcode 2).
    WriteRequest(Request<'a>),
    /// DATA (opcode 3).
    Data {
        /// Block number (wraps after 65535).
        block: u16,
        /// Payload.
        data: &'a [u8],
    },
    /// ACK (opcode 4).
    Ack {
        /// The block acknowledged (0 acknowledges an OACK).
        block: u16,
    },
    /// ERROR (opcode 5).
    Error {
        /// Error code.
        code: ErrorCode,
        /// Human-readable message (invalid UTF-8 is replaced, not refused).
        message: Cow<'a, str>,
    },
    /// OACK (opcode 6).
    OptionAck {
        /// The options the server accepted, with their final values.
        options: Vec<TftpOption<'a>>,
    },
}

/// Which NUL-terminated string of a packet a [`DecodeError`] or
/// [`EncodeError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The file name of a request.
    Filename,
    /// The mode of a request.
    Mode,
    /// An option name.
    OptionName,
    /// An option value.
    OptionValue,
    /// The message of an ERROR.
    ErrorMessage,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Filename => "file name",
            Self::Mode => "mode",
            Self::OptionName => "option name",
            Self::OptionValue => "option value",
            Self::ErrorMessage => "error message",
        })
    }
}

/// Why a datagram is not a TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the opcode and fixed fields need.
    #[error("datagram of {len} bytes is too short for this TFTP packet")]
    TooShort {
        /// Length of the datagram.
        len: usize,
    },
    /// The first two bytes are not opcode 1 to 6.
    #[error("unknown TFTP opcode {0}")]
    UnknownOpcode(u16),
    /// A string runs to the end of the datagram without its NUL.
    #[error("{0} is not terminated by a NUL byte")]
    Unterminated(Field),
    /// A string that must be text is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(Field),
}

/// Why a packet cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The format NUL-terminates strings, so a string cannot contain one.
    #[error("{0} contains a NUL byte")]
    ContainsNul(Field),
}

/// Splits off a NUL-terminated string, returning it and the rest.
fn take_cstr(bytes: &[u8], field: Field) -> Result<(&[u8], &[u8]), DecodeError> {
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(DecodeError::Unterminated(field))?;
    Ok((&bytes[..end], &bytes[end + 1..]))
}

fn take_str(bytes: &[u8], field: Field) -> Result<(&str, &[u8]), DecodeError> {
    let (raw, rest) = take_cstr(bytes, field)?;
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::NotUtf8(field))?;
    Ok((text, rest))
}

/// Parses `name\0value\0` pairs. Trailing NUL padding (an empty name) ends
/// the list: some boot ROMs pad requests.
fn decode_options(mut rest: &[u8]) -> Result<Vec<TftpOption<'_>>, DecodeError> {
    let mut options = Vec::new();
    while !rest.is_empty() {
        let (name, after_name) = take_str(rest, Field::OptionName)?;
        if name.is_empty() {
            break;
        }
        let (value, after_value) = take_str(after_name, Field::OptionValue)?;
        options.push(TftpOption { name, value });
        rest = after_value;
    }
    Ok(options)
}

fn decode_request(body: &[u8]) -> Result<Request<'_>, DecodeError> {
    let (filename, rest) = take_str(body, Field::Filename)?;
    let (mode, rest) = take_str(rest, Field::Mode)?;
    let options = decode_options(rest)?;
    Ok(Request {
        filename,
        mode,
        options,
    })
}

impl<'a> Packet<'a> {
    /// Decodes one datagram. Lenient where real peers are sloppy (bytes after
    /// an ACK, an ERROR message without its NUL, NUL padding after a
    /// request's options), strict elsewhere.
    pub fn decode(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        let too_short = DecodeError::TooShort {
            len: datagram.len(),
        };
        let (opcode, body) = match datagram {
            [hi, lo, body @ ..] => (u16::from_be_bytes([*hi, *lo]), body),
            _ => return Err(too_short),
        };
        let block_number = || match body {
            [hi, lo, rest @ ..] => Ok((u16::from_be_bytes([*hi, *lo]), rest)),
            _ => Err(too_short.clone()),
        };
        match opcode {
            OPCODE_RRQ => Ok(Self::ReadRequest(decode_request(body)?)),
            OPCODE_WRQ => Ok(Self::WriteRequest(decode_request(body)?)),
            OPCODE_DATA => {
                let (block, data) = block_number()?;
                Ok(Self::Data { block, data })
            }
            OPCODE_ACK => {
                let (block, _padding) = block_number()?;
                Ok(Self::Ack { block })
            }
            OPCODE_ERROR => {
                let (code, rest) = block_number()?;
                let text = match rest.iter().position(|&b| b == 0) {
                    Some(end) => &rest[..end],
                    None => rest,
                };
                Ok(Self::Error {
                    code: ErrorCode::from_u16(code),
                    message: String::from_utf8_lossy(text),
                })
            }
            OPCODE_OACK => Ok(Self::OptionAck {
                options: decode_options(body)?,
            }),
            other => Err(DecodeError::UnknownOpcode(other)),
        }
    }

    /// Appends the wire form of this packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        fn put_str(out: &mut Vec<u8>, text: &str, field: Field) -> Result<(), EncodeError> {
            if text.as_bytes().contains(&0) {
                return Err(EncodeError::ContainsNul(field));
            }
            out.extend_from_slice(text.as_bytes());
            out.push(0);
            Ok(())
        }
        fn put_options(out: &mut Vec<u8>, options: &[TftpOption<'_>]) -> Result<(), EncodeError> {
            for option in options {
                put_str(out, option.name, Field::OptionName)?;
                put_str(out, option.value, Field::OptionValue)?;
            }
            Ok(())
        }
        fn put_request(
            out: &mut Vec<u8>,
            opcode: u16,
            request: &Request<'_>,
        ) -> Result<(), EncodeError> {
            out.extend_from_slice(&opcode.to_be_bytes());
            put_str(out, request.filename, Field::Filename)?;
            put_str(out, request.mode, Field::Mode)?;
            put_options(out, &request.options)
        }

        let start = out.len();
        let result = match self {
            Self::ReadRequest(request) => put_request(out, OPCODE_RRQ, request),
            Self::WriteRequest(request) => put_request(out, OPCODE_WRQ, request),
            Self::Data { block, data } => {
                out.extend_from_slice(&data_header(*block));
                out.extend_from_slice(data);
                Ok(())
            }
            Self::Ack { block } => {
                out.extend_from_slice(&OPCODE_ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                Ok(())
            }
            Self::Error { code, message } => {
                out.extend_from_slice(&OPCODE_ERROR.to_be_bytes());
                out.extend_from_slice(&code.as_u16().to_be_bytes());
                put_str(out, message, Field::ErrorMessage)
            }
            Self::OptionAck { options } => {
                out.extend_from_slice(&OPCODE_OACK.to_be_bytes());
                put_options(out, options)
            }
        };
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The wire form of this packet as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// The four bytes before a DATA payload, so senders can build DATA packets
/// in place without a borrowed [`Packet`].
pub fn data_header(block: u16) -> [u8; DATA_HEADER_LEN] {
    let [op_hi, op_lo] = OPCODE_DATA.to_be_bytes();
    let [block_hi, block_lo] = block.to_be_bytes();
    [op_hi, op_lo, block_hi, block_lo]
}

/// An ERROR packet that cannot fail to encode: the message is cut at its
/// first NUL, if any. For the server's own messages.
pub fn error_packet(code: ErrorCode, message: &str) -> Vec<u8> {
    let message = message.split('\0').next().unwrap_or_default();
    let mut out = Vec::with_capacity(5 + message.len());
    out.extend_from_slice(&OPCODE_ERROR.to_be_bytes());
    out.extend_from_slice(&code.as_u16().to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_pxe_style_request_with_options_and_padding() {
        let bytes = b"\x00\x01pxelinux.0\x00octet\x00tsize\x000\x00blksize\x001456\x00\x00\x00";
        let packet = Packet::decode(bytes).expect("valid request");
        let Packet::ReadRequest(request) = packet else {
            panic!("expected RRQ, got {packet:?}");
        };
        assert_eq!(request.filename, "pxelinux.0");
        assert_eq!(request.mode, "octet");
        assert_eq!(
            request.options,
            vec![
                TftpOption {
                    name: "tsize",
                    value: "0"
                },
                TftpOption {
                    name: "blksize",
                    value: "1456"
                },
            ]
        );
    }

    #[test]
    fn refuses_malformed_requests_with_typed_errors() {
        assert_eq!(Packet::decode(b""), Err(DecodeError::TooShort { len: 0 }));
        assert_eq!(
            Packet::decode(b"\x00"),
            Err(DecodeError::TooShort { len: 1 })
        );
        assert_eq!(
            Packet::decode(b"\x00\x09abc"),
            Err(DecodeError::UnknownOpcode(9))
        );
        assert_eq!(
            Packet::decode(b"\x00\x01file"),
            Err(DecodeError::Unterminated(Field::Filename))
        );
        assert_eq!(
            Packet::decode(b"\x00\x01file\x00octet"),
            Err(DecodeError::Unterminated(Field::Mode))
        );
        assert_eq!(
            Packet::decode(b"\x00\x01file\x00octet\x00blksize\x00"),
            Err(DecodeError::Unterminated(Field::OptionValue))
        );
        assert_eq!(
            Packet::decode(b"\x00\x01file\x00octet\x00blksize"),
            Err(DecodeError::Unterminated(Field::OptionName))
        );
        assert_eq!(
            Packet::decode(b"\x00\x01f\xffe\x00octet\x00"),
            Err(DecodeError::NotUtf8(Field::Filename))
        );
        assert_eq!(
            Packet::decode(b"\x00\x04\x00"),
            Err(DecodeError::TooShort { len: 3 })
        );
    }

    #[test]
    fn tolerates_sloppy_ack_and_error_packets() {
        assert_eq!(
            Packet::decode(b"\x00\x04\x12\x34\x00\x00"),
            Ok(Packet::Ack { block: 0x1234 })
        );
        assert_eq!(
            Packet::decode(b"\x00\x05\x00\x08no thanks"),
            Ok(Packet::Error {
                code: ErrorCode::OptionsRefused,
                message: Cow::Borrowed("no thanks")
            })
        );
        let lossy = Packet::decode(b"\x00\x05\x00\x63bad \xff\x00");
        assert_eq!(
            lossy,
            Ok(Packet::Error {
                code: ErrorCode::Other(99),
                message: Cow::Owned("bad \u{fffd}".to_string())
            })
        );
    }

    #[test]
    fn encodes_every_kind_and_round_trips() {
        let packets = [
            Packet::ReadRequest(Request {
                filename: "a/b",
                mode: "octet",
                options: vec![TftpOption {
                    name: "windowsize",
                    value: "4",
                }],
            }),
            Packet::WriteRequest(Request {
                filename: "x",
                mode: "netascii",
                options: vec![],
            }),
            Packet::Data {
                block: 65535,
                data: b"hello",
            },
            Packet::Ack { block: 7 },
            Packet::Error {
                code: ErrorCode::UnknownTransferId,
                message: Cow::Borrowed("Unknown transfer ID"),
            },
            Packet::OptionAck {
                options: vec![TftpOption {
                    name: "tsize",
                    value: "123",
                }],
            },
        ];
        for packet in packets {
            let bytes = packet.to_bytes().expect("encodable");
            assert_eq!(Packet::decode(&bytes), Ok(packet));
        }
        assert_eq!(
            Packet::Data {
                block: 0x0102,
                data: b"z"
            }
            .to_bytes(),
            Ok(b"\x00\x03\x01\x02z".to_vec())
        );
    }

    #[test]
    fn refuses_to_encode_embedded_nul_and_leaves_buffer_unchanged() {
        let mut out = b"keep".to_vec();
        let bad = Packet::ReadRequest(Request {
            filename: "a\0b",
            mode: "octet",
            options: vec![],
        });
        assert_eq!(
            bad.encode(&mut out),
            Err(EncodeError::ContainsNul(Field::Filename))
        );
        assert_eq!(out, b"keep");
        assert_eq!(
            error_packet(ErrorCode::AccessViolation, "no\0tail"),
            b"\x00\x05\x00\x02no\x00".to_vec()
        );
    }
}
