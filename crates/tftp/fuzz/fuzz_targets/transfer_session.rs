//! A read transfer fed arbitrary datagrams (from the peer or a stranger) and
//! timer events: it must never panic, never describe DATA outside the file,
//! and always end within its retry budget once the peer goes quiet.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bellows_tftp::packet::TftpOption;
use bellows_tftp::{ReadTransfer, TransferLimits, Transmit, negotiate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let [size_hi, size_lo, block, window, with_options, rest @ ..] = input else {
        return;
    };
    let size = u64::from(u16::from_be_bytes([*size_hi, *size_lo])) * 3;
    let block_size = (u16::from(*block) * 8).max(8).to_string();
    let window_size = (*window).max(1).to_string();
    let options: Vec<TftpOption<'_>> = if *with_options & 1 == 1 {
        vec![
            TftpOption {
                name: "blksize",
                value: &block_size,
            },
            TftpOption {
                name: "windowsize",
                value: &window_size,
            },
            TftpOption {
                name: "tsize",
                value: "0",
            },
        ]
    } else {
        Vec::new()
    };
    let limits = TransferLimits::default();
    let negotiated = negotiate(&options, Some(size), &limits);
    let peer: SocketAddr = ([127, 0, 0, 1], 4000).into();
    let stranger: SocketAddr = ([127, 0, 0, 1], 4001).into();
    let mut now = Instant::now();
    let (mut transfer, first) = ReadTransfer::start(peer, size, &negotiated, &limits, now);
    let check = |transmits: &[Transmit]| {
        for transmit in transmits {
            if let Transmit::Data { offset, len, .. } = transmit {
                assert!(*len <= usize::from(negotiated.block_size));
                assert!(offset + *len as u64 <= size);
            }
        }
    };
    check(&first);
    // Events: [kind, len, bytes...]: kind 0-1 from the peer, 2 from a
    // stranger, 3 a timer tick.
    let mut events = rest;
    while let [kind, len, tail @ ..] = events {
        let len = usize::from(*len).min(tail.len());
        let (datagram, after) = tail.split_at(len);
        events = after;
        now += Duration::from_millis(u64::from(*kind) * 7);
        let out = match kind % 4 {
            0 | 1 => transfer.handle_datagram(peer, datagram, now),
            2 => transfer.handle_datagram(stranger, datagram, now),
            _ => match transfer.deadline() {
                Some(deadline) => {
                    now = now.max(deadline);
                    transfer.handle_timeout(now)
                }
                None => Vec::new(),
            },
        };
        check(&out);
    }
    // A silent peer: the transfer gives up after at most max_retries + 1
    // timer events.
    for _ in 0..=limits.max_retries {
        let Some(deadline) = transfer.deadline() else {
            break;
        };
        now = deadline;
        check(&transfer.handle_timeout(now));
    }
    assert!(transfer.is_finished() && transfer.deadline().is_none());
});
