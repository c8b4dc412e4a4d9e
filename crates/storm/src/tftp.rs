//! TFTP as PXE firmware fetches iPXE: one read request with `blksize`,
//! `tsize` and (UEFI) `windowsize`, an ACK per block or per window, the
//! firmware's retransmission on silence.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bellows_tftp::Packet;
use bellows_tftp::packet::{Request, TftpOption};
use sha2::{Digest, Sha256};
use tokio::net::UdpSocket;

use crate::Error;

/// How the client asks.
#[derive(Clone, Copy, Debug)]
pub struct Ask {
    /// Block size option (None: the RFC 1350 512 bytes, no option).
    pub blksize: Option<u16>,
    /// RFC 7440 window size (None: lockstep, no option).
    pub windowsize: Option<u16>,
}

/// What a finished transfer gave.
pub struct Fetched {
    /// Bytes received.
    pub bytes: u64,
    /// SHA-256 of them, when asked to check the data.
    pub sha256: Option<[u8; 32]>,
}

/// Silence before the client sends its last packet again, and how often.
const TIMEOUT: Duration = Duration::from_secs(2);
const TRIES: u32 = 5;

/// Fetches `file` from `server` port 69, from `local` (the machine's
/// address).
pub async fn fetch(
    local: Ipv4Addr,
    server: Ipv4Addr,
    file: &str,
    ask: Ask,
    hash: bool,
) -> Result<Fetched, Error> {
    let socket = UdpSocket::bind((local, 0)).await?;
    let (blksize, windowsize) = (
        ask.blksize.map(|b| b.to_string()),
        ask.windowsize.map(|w| w.to_string()),
    );
    let mut options = vec![TftpOption {
        name: "tsize",
        value: "0",
    }];
    if let Some(b) = &blksize {
        options.push(TftpOption {
            name: "blksize",
            value: b,
        });
    }
    if let Some(w) = &windowsize {
        options.push(TftpOption {
            name: "windowsize",
            value: w,
        });
    }
    let rrq = Packet::ReadRequest(Request {
        filename: file,
        mode: "octet",
        options,
    })
    .to_bytes()
    .map_err(|e| Error::msg(format!("TFTP request: {e}")))?;

    let mut block_size = 512usize;
    let mut window = 1u16;
    let mut expected_size: Option<u64> = None;
    let mut peer: Option<SocketAddr> = None;
    let mut last_sent = rrq;
    let mut next: u16 = 1;
    let mut received_in_window = 0u16;
    let mut bytes = 0u64;
    let mut hasher = hash.then(Sha256::new);
    let mut buf = vec![0u8; 65536];
    let mut tries = 0;
    socket.send_to(&last_sent, (server, 69)).await?;
    loop {
        let (n, from) = match tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                tries += 1;
                if tries >= TRIES {
                    return Err(Error::msg(format!(
                        "TFTP {file}: no answer after {TRIES} tries (block {next})"
                    )));
                }
                let to = peer.unwrap_or(SocketAddr::from((server, 69)));
                socket.send_to(&last_sent, to).await?;
                received_in_window = 0;
                continue;
            }
        };
        match peer {
            None if from.ip() == server => peer = Some(from),
            Some(p) if p == from => {}
            _ => continue, // not our transfer
        }
        let packet = match Packet::decode(&buf[..n]) {
            Ok(p) => p,
            Err(e) => return Err(Error::msg(format!("TFTP {file}: bad packet: {e}"))),
        };
        match packet {
            Packet::OptionAck { options } => {
                for o in options {
                    let value: u64 = o.value.parse().unwrap_or(0);
                    match o.name.to_ascii_lowercase().as_str() {
                        "blksize" => block_size = value as usize,
                        "windowsize" => window = value.max(1) as u16,
                        "tsize" => expected_size = Some(value),
                        _ => {}
                    }
                }
                last_sent = ack(0);
                socket.send_to(&last_sent, from).await?;
                tries = 0;
            }
            Packet::Data { block, data } => {
                if block != next {
                    // Out of order or a repeat: ask again from what we have.
                    last_sent = ack(next.wrapping_sub(1));
                    socket.send_to(&last_sent, from).await?;
                    received_in_window = 0;
                    continue;
                }
                tries = 0;
                bytes += data.len() as u64;
                if let Some(h) = &mut hasher {
                    h.update(data);
                }
                let last = data.len() < block_size;
                next = next.wrapping_add(1);
                received_in_window += 1;
                if last || received_in_window >= window {
                    last_sent = ack(block);
                    socket.send_to(&last_sent, from).await?;
                    received_in_window = 0;
                }
                if last {
                    if let Some(size) = expected_size.filter(|s| *s != bytes) {
                        return Err(Error::msg(format!(
                            "TFTP {file}: tsize said {size} bytes, got {bytes}"
                        )));
                    }
                    return Ok(Fetched {
                        bytes,
                        sha256: hasher.map(|h| h.finalize().into()),
                    });
                }
            }
            Packet::Error { code, message } => {
                return Err(Error::msg(format!(
                    "TFTP {file}: error {code:?}: {message}"
                )));
            }
            _ => {}
        }
    }
}

fn ack(block: u16) -> Vec<u8> {
    let mut v = vec![0, 4];
    v.extend_from_slice(&block.to_be_bytes());
    v
}
