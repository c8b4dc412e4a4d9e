//! Property tests of the pure core: the decoder on arbitrary bytes, encode
//! and decode round trips, path sanitising, netascii, negotiation bounds,
//! and whole transfers to a simulated RFC 7440 client over a lossy network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bellows_tftp::netascii::NetasciiFile;
use bellows_tftp::packet::{Request, TftpOption};
use bellows_tftp::{
    ErrorCode, FileContent, Packet, ReadTransfer, TransferLimits, TransferOutcome, Transmit,
    negotiate, sanitize_request_path,
};
use proptest::prelude::*;

fn text_without_nul(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..max)
        .prop_map(|chars| chars.into_iter().collect())
}

fn nonempty_text_without_nul(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 1..max)
        .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = Packet::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_request_shaped_bytes(
        opcode in 0u16..8,
        body in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>(), Just(b'/')], 0..300),
    ) {
        let mut bytes = opcode.to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        if let Ok(Packet::ReadRequest(request)) = Packet::decode(&bytes) {
            let _ = sanitize_request_path(request.filename);
            let _ = negotiate(&request.options, Some(1), &TransferLimits::default());
        }
    }

    #[test]
    fn requests_round_trip(
        filename in text_without_nul(40),
        mode in text_without_nul(10),
        pairs in proptest::collection::vec((nonempty_text_without_nul(12), text_without_nul(12)), 0..6),
        write in any::<bool>(),
    ) {
        let request = Request {
            filename: &filename,
            mode: &mode,
            options: pairs.iter().map(|(n, v)| TftpOption { name: n, value: v }).collect(),
        };
        let packet = if write { Packet::WriteRequest(request) } else { Packet::ReadRequest(request) };
        let bytes = packet.to_bytes().expect("encodable");
        prop_assert_eq!(Packet::decode(&bytes), Ok(packet));
    }

    #[test]
    fn other_packets_round_trip(
        block in any::<u16>(),
        data in proptest::collection::vec(any::<u8>(), 0..600),
        code in any::<u16>(),
        message in text_without_nul(60),
        pairs in proptest::collection::vec((nonempty_text_without_nul(12), text_without_nul(12)), 0..6),
    ) {
        let options: Vec<TftpOption<'_>> =
            pairs.iter().map(|(n, v)| TftpOption { name: n, value: v }).collect();
        for packet in [
            Packet::Data { block, data: &data },
            Packet::Ack { block },
            Packet::Error { code: ErrorCode::from_u16(code), message: message.as_str().into() },
            Packet::OptionAck { options: options.clone() },
        ] {
            let bytes = packet.to_bytes().expect("encodable");
            prop_assert_eq!(Packet::decode(&bytes), Ok(packet));
        }
        prop_assert_eq!(ErrorCode::from_u16(code).as_u16(), code);
    }

    #[test]
    fn sanitised_paths_never_escape(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("..".to_string()), Just(".".to_string()), Just(String::new()),
                Just("aa:bb:cc:dd:ee:ff".to_string()), Just("C:".to_string()),
                "[a-z.]{1,4}", text_without_nul(5)
            ],
            0..6,
        ),
        separators in proptest::collection::vec(prop_oneof![Just('/'), Just('\\')], 6),
        leading in prop_oneof![Just(""), Just("/"), Just("\\"), Just("//")],
    ) {
        let mut name = leading.to_string();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                name.push(separators[i]);
            }
            name.push_str(part);
        }
        let has_parent = name.replace('\\', "/").split('/').any(|c| c == "..");
        if let Ok(request) = sanitize_request_path(&name) {
            prop_assert!(!has_parent, "{name:?} has '..' but was accepted");
            for path in request.candidates() {
                let path = path.as_str();
                prop_assert!(!path.starts_with('/'));
                prop_assert!(!path.contains('\\'));
                prop_assert!(!path.is_empty());
                for component in path.split('/') {
                    prop_assert!(!matches!(component, "" | "." | ".."), "{path:?}");
                }
            }
        }
    }

    #[test]
    fn negotiation_stays_within_limits(
        pairs in proptest::collection::vec(
            (prop_oneof![Just("blksize"), Just("windowsize"), Just("timeout"), Just("tsize"), Just("BLKSIZE")],
             prop_oneof!["[0-9]{1,7}", text_without_nul(8)]),
            0..8,
        ),
        max_block in 8u16..=65464,
        max_window in 1u16..=1000,
        size in any::<u64>(),
    ) {
        let options: Vec<TftpOption<'_>> =
            pairs.iter().map(|(n, v)| TftpOption { name: n, value: v }).collect();
        let limits = TransferLimits { max_block_size: max_block, max_window_size: max_window, ..TransferLimits::default() };
        let n = negotiate(&options, Some(size), &limits);
        prop_assert!(n.block_size >= 8 && (n.block_size <= max_block || n.block_size == 512));
        prop_assert!(n.window_size >= 1 && n.window_size <= max_window.max(1));
        prop_assert!(n.timeout >= Duration::from_secs(1) && n.timeout <= limits.max_timeout);
        prop_assert!(n.accepted.len() <= 4);
    }

    #[test]
    fn netascii_reads_match_a_reference_conversion(
        bytes in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..3000),
        reads in proptest::collection::vec((any::<u16>(), 1usize..700), 1..8),
    ) {
        let mut want = Vec::new();
        for &b in &bytes {
            match b {
                b'\n' => want.extend_from_slice(b"\r\n"),
                b'\r' => want.extend_from_slice(b"\r\0"),
                other => want.push(other),
            }
        }
        let file = NetasciiFile::new(Arc::new(bytes)).expect("scan");
        prop_assert_eq!(file.size(), want.len() as u64);
        for (offset, len) in reads {
            let offset = usize::from(offset) % (want.len() + 2);
            let mut buf = vec![0u8; len];
            let n = file.read_at(offset as u64, &mut buf).expect("read");
            let end = (offset + len).min(want.len());
            let expected = want.get(offset..end).unwrap_or(&[]);
            prop_assert_eq!(&buf[..n], expected);
        }
    }
}

/// A deterministic coin for packet loss.
struct Coin(u64);

impl Coin {
    fn lose(&mut self, percent: u64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 100 < percent
    }
}

/// Runs one transfer of `file` to a simulated RFC 7440 receiver over a
/// network that loses `loss` percent of packets each way; returns what the
/// receiver stored and how the server side ended.
fn simulate(
    file: &[u8],
    options: &[(&str, &str)],
    loss: u64,
    seed: u64,
) -> (Vec<u8>, TransferOutcome, u64) {
    let peer: SocketAddr = "127.0.0.1:9999".parse().expect("addr");
    let limits = TransferLimits {
        max_retries: 60,
        // Heavy loss can stall a transfer for minutes of simulated time.
        max_stall: Duration::from_secs(365 * 24 * 3600),
        ..TransferLimits::default()
    };
    let options: Vec<TftpOption<'_>> = options
        .iter()
        .map(|&(name, value)| TftpOption { name, value })
        .collect();
    let negotiated = negotiate(&options, Some(file.len() as u64), &limits);
    let block_size = usize::from(negotiated.block_size);
    let window = u64::from(negotiated.window_size);
    let mut now = Instant::now();
    let (mut transfer, first) =
        ReadTransfer::start(peer, file.len() as u64, &negotiated, &limits, now);
    let mut coin = Coin(seed | 1);
    let mut to_client: std::collections::VecDeque<Transmit> = first.into();
    let mut received = Vec::new();
    let mut next_index: u64 = 1;
    let mut in_window: u64 = 0;
    let mut done = false;
    let mut events = 0u64;
    while !transfer.is_finished() {
        events += 1;
        assert!(events < 2_000_000, "simulation must end");
        let Some(transmit) = to_client.pop_front() else {
            let deadline = transfer
                .deadline()
                .expect("a running transfer has a deadline");
            now = deadline;
            to_client.extend(transfer.handle_timeout(now));
            continue;
        };
        if coin.lose(loss) {
            continue;
        }
        let ack = match transmit {
            Transmit::Packet { to, bytes } => {
                assert_eq!(to, peer);
                match Packet::decode(&bytes).expect("server packets decode") {
                    Packet::OptionAck { .. } => Some(0u16),
                    Packet::Error { .. } => None,
                    other => panic!("unexpected {other:?}"),
                }
            }
            Transmit::Data { block, offset, len } => {
                assert!(len <= block_size);
                if !done && block == next_index as u16 {
                    assert_eq!(offset, (next_index - 1) * block_size as u64);
                    received.extend_from_slice(&file[offset as usize..offset as usize + len]);
                    next_index += 1;
                    in_window += 1;
                    if len < block_size {
                        done = true;
                        Some(block)
                    } else if in_window == window {
                        in_window = 0;
                        Some(block)
                    } else {
                        None
                    }
                } else {
                    // Out of order or repeated: acknowledge the last block
                    // received in sequence, which restarts the window there.
                    in_window = 0;
                    Some((next_index - 1) as u16)
                }
            }
        };
        if let Some(block) = ack {
            if coin.lose(loss) {
                continue;
            }
            now += Duration::from_micros(50);
            let bytes = Packet::Ack { block }.to_bytes().expect("encode");
            to_client.extend(transfer.handle_datagram(peer, &bytes, now));
        }
    }
    (
        received,
        transfer.outcome().cloned().expect("outcome"),
        events,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn lossy_transfers_deliver_the_exact_file(
        size in prop_oneof![0usize..5000, Just(512), Just(1024), Just(1468 * 3)],
        block in prop_oneof![Just("512"), Just("8"), Just("1468"), Just("100")],
        window in 1u16..10,
        loss in 0u64..30,
        seed in any::<u64>(),
    ) {
        let file: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        let window = window.to_string();
        let (received, outcome, _) =
            simulate(&file, &[("blksize", block), ("windowsize", &window)], loss, seed);
        prop_assert_eq!(outcome, TransferOutcome::Completed { bytes: size as u64 });
        prop_assert!(received == file, "received {} bytes of {}", received.len(), size);
    }
}

#[test]
fn lossy_windowed_transfer_across_block_number_rollover() {
    // 70,000 blocks of 8 bytes: the block number wraps once, with loss.
    let file: Vec<u8> = (0..70_000 * 8 + 3)
        .map(|i: usize| (i % 253) as u8)
        .collect();
    let (received, outcome, _) = simulate(&file, &[("blksize", "8"), ("windowsize", "16")], 5, 42);
    assert_eq!(
        outcome,
        TransferOutcome::Completed {
            bytes: file.len() as u64
        }
    );
    assert!(received == file);
}
