//! The server over real sockets, driven by a raw client so each protocol
//! rule can be checked packet by packet: transfer IDs, OACK contents, the
//! error-8 probe, busy, WRQ, malformed datagrams, retransmission, give-up
//! and shutdown.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bellows_tftp::packet::{Request, TftpOption, error_packet};
use bellows_tftp::{ErrorCode, Packet, TftpConfig, TransferLimits, TransferOutcome};
use common::*;
use tokio::net::UdpSocket;

/// A raw client socket on 127.0.0.1.
struct Raw {
    socket: UdpSocket,
    buffer: Vec<u8>,
}

/// An owned copy of a received packet, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Data(u16, Vec<u8>),
    Oack(Vec<(String, String)>),
    Error(ErrorCode, String),
    Other(String),
}

impl Raw {
    async fn new() -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("bind client"),
            buffer: vec![0; 70_000],
        }
    }

    async fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket.send_to(bytes, to).await.expect("send");
    }

    async fn rrq(&self, to: SocketAddr, name: &str, mode: &str, options: &[(&str, &str)]) {
        let packet = Packet::ReadRequest(Request {
            filename: name,
            mode,
            options: options
                .iter()
                .map(|&(name, value)| TftpOption { name, value })
                .collect(),
        });
        self.send(to, &packet.to_bytes().expect("encode")).await;
    }

    async fn ack(&self, to: SocketAddr, block: u16) {
        self.send(to, &Packet::Ack { block }.to_bytes().expect("encode"))
            .await;
    }

    /// Next packet within `limit`, or None.
    async fn recv_within(&mut self, limit: Duration) -> Option<(SocketAddr, Got)> {
        let (len, from) = tokio::time::timeout(limit, self.socket.recv_from(&mut self.buffer))
            .await
            .ok()?
            .expect("recv");
        let got = match Packet::decode(&self.buffer[..len]) {
            Ok(Packet::Data { block, data }) => Got::Data(block, data.to_vec()),
            Ok(Packet::OptionAck { options }) => Got::Oack(
                options
                    .iter()
                    .map(|o| (o.name.to_string(), o.value.to_string()))
                    .collect(),
            ),
            Ok(Packet::Error { code, message }) => Got::Error(code, message.into_owned()),
            other => Got::Other(format!("{other:?}")),
        };
        Some((from, got))
    }

    async fn recv(&mut self) -> (SocketAddr, Got) {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("a packet within 5 s")
    }

    /// Downloads in lockstep after the first DATA/OACK; returns the bytes.
    async fn download(
        &mut self,
        server: SocketAddr,
        name: &str,
        options: &[(&str, &str)],
    ) -> Vec<u8> {
        self.rrq(server, name, "octet", options).await;
        let mut data = Vec::new();
        let mut expected: u16 = 1;
        let mut block_size = 512;
        for _ in 0..100_000 {
            let (from, got) = self.recv().await;
            match got {
                Got::Oack(options) => {
                    if let Some((_, v)) = options
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("blksize"))
                    {
                        block_size = v.parse().expect("blksize");
                    }
                    self.ack(from, 0).await;
                }
                Got::Data(block, payload) => {
                    assert_eq!(block, expected);
                    data.extend_from_slice(&payload);
                    self.ack(from, block).await;
                    if payload.len() < block_size {
                        return data;
                    }
                    expected = expected.wrapping_add(1);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("download did not end");
    }
}

fn fast_limits() -> TftpConfig {
    TftpConfig {
        limits: TransferLimits {
            default_timeout: Duration::from_millis(200),
            max_retransmit_interval: Duration::from_millis(800),
            max_retries: 3,
            ..TransferLimits::default()
        },
        ..TftpConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oack_reports_clamped_and_actual_values_and_ignores_unknown_options() {
    let fx = Fixture::start(TftpConfig::default()).await;
    let mut client = Raw::new().await;
    client
        .rrq(
            fx.addr,
            "file-2936.bin",
            "OCTET",
            &[
                ("BlkSize", "65464"),
                ("tsize", "0"),
                ("windowsize", "500"),
                ("timeout", "2"),
                ("x-unknown", "1"),
            ],
        )
        .await;
    let (from, got) = client.recv().await;
    assert_ne!(from, fx.addr, "the transfer runs on its own port");
    assert_eq!(
        from.ip(),
        fx.addr.ip(),
        "from the address the request reached"
    );
    assert_eq!(
        got,
        Got::Oack(vec![
            ("BlkSize".into(), "1468".into()),
            ("tsize".into(), "2936".into()),
            ("windowsize".into(), "64".into()),
            ("timeout".into(), "2".into()),
        ])
    );
    client.ack(from, 0).await;
    let want = &fx.files["file-2936.bin"];
    // 2936 = 2 * 1468: two full blocks and an empty one, in one window.
    assert_eq!(
        client.recv().await,
        (from, Got::Data(1, want[..1468].to_vec()))
    );
    assert_eq!(
        client.recv().await,
        (from, Got::Data(2, want[1468..].to_vec()))
    );
    assert_eq!(client.recv().await, (from, Got::Data(3, Vec::new())));
    client.ack(from, 3).await;
    let records = fx.wait_for_records(1).await;
    assert_eq!(
        records[0].outcome,
        TransferOutcome::Completed { bytes: 2936 }
    );
    assert_eq!(records[0].bytes_sent, 2936);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_source_port_gets_error_5_and_the_transfer_continues() {
    let fx = Fixture::start(TftpConfig::default()).await;
    let mut client = Raw::new().await;
    let mut intruder = Raw::new().await;
    client.rrq(fx.addr, "file-1024.bin", "octet", &[]).await;
    let (port, first) = client.recv().await;
    assert!(matches!(first, Got::Data(1, _)));
    intruder.ack(port, 1).await;
    let (from, got) = intruder.recv().await;
    assert_eq!(from, port);
    assert!(
        matches!(got, Got::Error(ErrorCode::UnknownTransferId, _)),
        "{got:?}"
    );
    // The intruder's ACK did not advance anything.
    assert!(
        client
            .recv_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    client.ack(port, 1).await;
    assert!(matches!(client.recv().await.1, Got::Data(2, _)));
    client.ack(port, 2).await;
    assert_eq!(client.recv().await.1, Got::Data(3, Vec::new()));
    client.ack(port, 3).await;
    let records = fx.wait_for_records(1).await;
    assert!(records[0].outcome.is_completed());
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_probe_aborted_with_error_8_ends_quietly() {
    let fx = Fixture::start(TftpConfig::default()).await;
    let mut client = Raw::new().await;
    // OVMF: tsize probe, abort with error 8, then the real download.
    client
        .rrq(
            fx.addr,
            "file-1048576.bin",
            "octet",
            &[("tsize", "0"), ("blksize", "1468")],
        )
        .await;
    let (port, got) = client.recv().await;
    assert_eq!(
        got,
        Got::Oack(vec![
            ("tsize".into(), "1048576".into()),
            ("blksize".into(), "1468".into())
        ])
    );
    client
        .send(
            port,
            &error_packet(ErrorCode::OptionsRefused, "User aborted"),
        )
        .await;
    assert!(
        client
            .recv_within(Duration::from_millis(1500))
            .await
            .is_none(),
        "nothing more is sent"
    );
    let data = client
        .download(fx.addr, "file-1048576.bin", &[("blksize", "1468")])
        .await;
    assert_eq!(&data, &fx.files["file-1048576.bin"]);
    let stats = fx.settled_stats(2).await;
    assert_eq!(
        (stats.declined, stats.completed, stats.failed),
        (1, 1, 0),
        "{stats:?}"
    );
    let records = fx.wait_for_records(2).await;
    assert!(matches!(
        records[0].outcome,
        TransferOutcome::OptionsDeclined { .. }
    ));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packets_are_retransmitted_with_backoff_then_given_up() {
    let fx = Fixture::start(fast_limits()).await;
    let mut client = Raw::new().await;
    let started = Instant::now();
    client.rrq(fx.addr, "file-513.bin", "octet", &[]).await;
    let mut arrivals = Vec::new();
    let mut last = None;
    for _ in 0..10 {
        match client.recv_within(Duration::from_secs(3)).await {
            Some((_, got)) => {
                arrivals.push(started.elapsed());
                last = Some(got);
                if matches!(last, Some(Got::Error(..))) {
                    break;
                }
            }
            None => break,
        }
    }
    // DATA 1 at 0, resent at ~0.2, ~0.6, ~1.4 s (200, 400, 800 ms), then an
    // ERROR after the last 800 ms interval.
    assert_eq!(arrivals.len(), 5, "{arrivals:?}");
    let gaps: Vec<u128> = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    for (gap, want) in gaps.iter().zip([200u128, 400, 800, 800]) {
        assert!(*gap + 20 >= want && *gap < want + 400, "gaps {gaps:?}");
    }
    assert!(
        matches!(last, Some(Got::Error(ErrorCode::NotDefined, _))),
        "{last:?}"
    );
    let records = fx.wait_for_records(1).await;
    assert_eq!(records[0].outcome, TransferOutcome::TimedOut { retries: 3 });
    assert_eq!(records[0].bytes_sent, 4 * 512);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_transfer_recovers_from_a_gap() {
    let fx = Fixture::start(fast_limits()).await;
    let mut client = Raw::new().await;
    let want = fx.files["file-1048576.bin"].clone();
    client
        .rrq(fx.addr, "file-1048576.bin", "octet", &[("windowsize", "4")])
        .await;
    let (port, got) = client.recv().await;
    assert_eq!(got, Got::Oack(vec![("windowsize".into(), "4".into())]));
    client.ack(port, 0).await;
    let mut window = Vec::new();
    for _ in 0..4 {
        window.push(client.recv().await.1);
    }
    assert_eq!(
        window.iter().filter(|g| matches!(g, Got::Data(..))).count(),
        4
    );
    // Pretend block 3 was lost: ACK 2, the next window starts at 3.
    client.ack(port, 2).await;
    for block in 3..=6u16 {
        let offset = (block as usize - 1) * 512;
        assert_eq!(
            client.recv().await.1,
            Got::Data(block, want[offset..offset + 512].to_vec())
        );
    }
    client
        .send(port, &error_packet(ErrorCode::NotDefined, "enough"))
        .await;
    let records = fx.wait_for_records(1).await;
    assert!(matches!(
        records[0].outcome,
        TransferOutcome::ClientError { .. }
    ));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_requests_unknown_modes_and_malformed_datagrams() {
    let fx = Fixture::start(TftpConfig::default()).await;
    let mut client = Raw::new().await;
    let wrq = Packet::WriteRequest(Request {
        filename: "x",
        mode: "octet",
        options: vec![],
    });
    client.send(fx.addr, &wrq.to_bytes().expect("encode")).await;
    let (_, got) = client.recv().await;
    assert!(
        matches!(got, Got::Error(ErrorCode::AccessViolation, _)),
        "{got:?}"
    );

    client.rrq(fx.addr, "file-1.bin", "mail", &[]).await;
    let (_, got) = client.recv().await;
    assert!(
        matches!(got, Got::Error(ErrorCode::IllegalOperation, _)),
        "{got:?}"
    );

    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x01no-terminator",
        b"\x00\x01name\x00",
        b"\x00\x09????",
        b"\x00\x04\x00\x01",
        b"\x00\x01\xff\xfe\x00octet\x00",
    ] {
        client.send(fx.addr, junk).await;
    }
    assert!(
        client
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "junk gets no reply"
    );
    let data = client.download(fx.addr, "file-1469.bin", &[]).await;
    assert_eq!(&data, &fx.files["file-1469.bin"]);
    let stats = fx.settled_stats(3).await;
    assert_eq!(stats.malformed, 7, "{stats:?}");
    assert_eq!(stats.requests, 3, "{stats:?}");
    assert_eq!((stats.completed, stats.failed), (1, 2), "{stats:?}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_transfers_are_told_the_server_is_busy() {
    let config = TftpConfig {
        max_transfers: 2,
        ..TftpConfig::default()
    };
    let fx = Fixture::start(config).await;
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut holder = Raw::new().await;
        holder.rrq(fx.addr, "file-1048576.bin", "octet", &[]).await;
        let (port, got) = holder.recv().await;
        assert!(matches!(got, Got::Data(1, _)));
        holders.push((holder, port));
    }
    let mut late = Raw::new().await;
    late.rrq(fx.addr, "01-aa-bb-cc-dd-ee-ff/file-1.bin", "octet", &[])
        .await;
    let (from, got) = late.recv().await;
    assert_eq!(from, fx.addr);
    assert_eq!(
        got,
        Got::Error(ErrorCode::NotDefined, "Server busy, try again later".into())
    );
    let records = fx.wait_for_records(1).await;
    assert_eq!(
        records[0].mac.map(|m| m.to_string()).as_deref(),
        Some("aa:bb:cc:dd:ee:ff")
    );
    let stats = fx.stats.snapshot();
    assert_eq!((stats.busy, stats.active), (1, 2), "{stats:?}");
    // Once a slot frees, requests are served again.
    let (holder, port) = &holders[0];
    holder
        .send(*port, &error_packet(ErrorCode::NotDefined, "cancelled"))
        .await;
    fx.wait_for_records(2).await;
    let data = late.download(fx.addr, "file-1.bin", &[]).await;
    assert_eq!(&data, &fx.files["file-1.bin"]);
    let (holder, port) = &holders[1];
    holder
        .send(*port, &error_packet(ErrorCode::NotDefined, "cancelled"))
        .await;
    let stats = fx.settled_stats(4).await;
    assert_eq!(
        (stats.completed, stats.failed, stats.busy),
        (1, 3, 1),
        "{stats:?}"
    );
    fx.stop().await;
}

/// Firmware sends its read request again, from the same port, when the
/// answer is late (a busy server, a boot storm). That is the same fetch: a
/// second transfer beside the first would double the server's work exactly
/// when it is slow, and the client ignores its packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_request_does_not_start_a_second_transfer() {
    let fx = Fixture::start(TftpConfig::default()).await;
    let mut client = Raw::new().await;
    client.rrq(fx.addr, "file-2936.bin", "octet", &[]).await;
    // `download` sends the request again, then takes every block in order
    // from whichever port answers: a second transfer's block 1 would fail it.
    let data = client.download(fx.addr, "file-2936.bin", &[]).await;
    assert_eq!(&data, &fx.files["file-2936.bin"]);
    assert!(
        client
            .recv_within(Duration::from_millis(1500))
            .await
            .is_none(),
        "nothing more arrives once the file is whole"
    );
    let stats = fx.settled_stats(1).await;
    assert_eq!(
        (
            stats.requests,
            stats.duplicates,
            stats.completed,
            stats.failed
        ),
        (1, 1, 1, 0),
        "{stats:?}"
    );
    // Once that transfer ended, the same port may fetch again.
    let again = client.download(fx.addr, "file-1.bin", &[]).await;
    assert_eq!(&again, &fx.files["file-1.bin"]);
    assert_eq!(fx.settled_stats(2).await.completed, 2);
    fx.stop().await;
}

/// The attack of issue 12: one address opens many transfers with
/// `timeout=255` and never acknowledges, to hold every slot. It gets at
/// most its own share, with the long timeout declined, and another address
/// is served a whole file meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_transfers_cannot_starve_another() {
    let config = TftpConfig {
        max_transfers: 12,
        ..TftpConfig::default()
    };
    let per_client = config.max_transfers_per_client;
    assert_eq!(per_client, bellows_tftp::DEFAULT_MAX_TRANSFERS_PER_CLIENT);
    let fx = Fixture::start(config).await;
    let attempts = 20;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..attempts {
        let mut attacker = Raw::new().await;
        attacker
            .rrq(
                fx.addr,
                "file-1048576.bin",
                "octet",
                &[("timeout", "255"), ("blksize", "1024")],
            )
            .await;
        match attacker.recv().await {
            (from, Got::Oack(options)) => {
                assert_ne!(from, fx.addr, "a transfer answers from its own port");
                // RFC 2349: the server may not change the timeout, so an
                // oversized one is left out and the default applies.
                assert_eq!(options, [("blksize".to_string(), "1024".to_string())]);
                held.push(attacker);
            }
            (from, Got::Error(code, message)) => {
                assert_eq!(from, fx.addr);
                assert_eq!(code, ErrorCode::NotDefined);
                assert_eq!(
                    message,
                    "Too many transfers from your address, try again later"
                );
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(held.len(), per_client);
    assert_eq!(refused, attempts - per_client);
    let stats = fx.stats.snapshot();
    assert_eq!(
        (stats.active, stats.client_busy, stats.busy),
        (per_client as u64, refused as u64, 0),
        "{stats:?}"
    );

    // Another machine, at another address, still gets a whole file.
    let mut good = Raw {
        socket: UdpSocket::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2"),
        buffer: vec![0; 70_000],
    };
    let data = good
        .download(fx.addr, "file-2936.bin", &[("blksize", "512")])
        .await;
    assert_eq!(&data, &fx.files["file-2936.bin"]);
    let served = fx.wait_for_records(refused + 1).await;
    assert!(
        served
            .iter()
            .any(|r| r.peer.ip().to_string() == "127.0.0.2" && r.outcome.is_completed()),
        "{served:?}"
    );
    // Still one slot per held transfer, none leaked by the refusals.
    assert_eq!(fx.stats.snapshot().active, per_client as u64);
    fx.stop().await;
}

/// A held transfer is given up by the stall limit, whatever the client asked
/// for, and its slot is then free for the same address again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_loses_its_slot_within_the_stall_limit() {
    let config = TftpConfig {
        max_transfers_per_client: 1,
        limits: TransferLimits {
            max_stall: Duration::from_millis(1500),
            ..TransferLimits::default()
        },
        ..TftpConfig::default()
    };
    let fx = Fixture::start(config).await;
    let mut silent = Raw::new().await;
    let started = Instant::now();
    silent
        .rrq(fx.addr, "file-1048576.bin", "octet", &[("timeout", "5")])
        .await;
    assert!(matches!(silent.recv().await.1, Got::Oack(_)));
    let mut second = Raw::new().await;
    second.rrq(fx.addr, "file-1.bin", "octet", &[]).await;
    assert!(matches!(second.recv().await.1, Got::Error(..)));
    // The OACK is not resent (its 5 s timeout is past the stall limit):
    // the next thing the silent client hears is that it was given up.
    let (_, got) = silent
        .recv_within(Duration::from_secs(4))
        .await
        .expect("a timeout notice");
    assert!(
        matches!(got, Got::Error(ErrorCode::NotDefined, _)),
        "{got:?}"
    );
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(1400) && held < Duration::from_millis(2500),
        "{held:?}"
    );
    let records = fx.wait_for_records(2).await;
    assert!(
        records
            .iter()
            .any(|r| matches!(r.outcome, TransferOutcome::TimedOut { retries: 0 })),
        "{records:?}"
    );
    let data = second.download(fx.addr, "file-1.bin", &[]).await;
    assert_eq!(&data, &fx.files["file-1.bin"]);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_transfers_then_aborts_them() {
    let config = TftpConfig {
        shutdown_grace: Duration::from_millis(500),
        ..TftpConfig::default()
    };
    let fx = Fixture::start(config).await;
    let mut client = Raw::new().await;
    client
        .rrq(fx.addr, "file-1048576.bin", "octet", &[("timeout", "5")])
        .await;
    let (port, got) = client.recv().await;
    assert!(matches!(got, Got::Oack(_)));
    client.ack(port, 0).await;
    assert!(matches!(client.recv().await.1, Got::Data(1, _)));
    let addr = fx.addr;
    let started = Instant::now();
    let stopping = tokio::spawn(async move {
        fx.stop().await;
    });
    // The transfer keeps working during the grace period...
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.ack(port, 1).await;
    assert!(matches!(client.recv().await.1, Got::Data(2, _)));
    // ...new requests are not served...
    let mut late = Raw::new().await;
    late.rrq(addr, "file-1.bin", "octet", &[]).await;
    assert!(late.recv_within(Duration::from_millis(200)).await.is_none());
    // ...and when it expires the client is told.
    let (from, got) = client
        .recv_within(Duration::from_secs(3))
        .await
        .expect("abort notice");
    assert_eq!(from, port);
    assert_eq!(
        got,
        Got::Error(ErrorCode::NotDefined, "Server shutting down".into())
    );
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("run returns")
        .expect("stop task");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_nothing_running_is_immediate() {
    let fx = Fixture::start(TftpConfig::default()).await;
    let started = Instant::now();
    fx.stop().await;
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_and_busy_port_are_typed_errors() {
    use bellows_tftp::{MemorySource, TftpError, TftpServer};
    use std::sync::Arc;
    let source = Arc::new(MemorySource::new());
    let mut config = TftpConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..TftpConfig::default()
    };
    config.limits.max_block_size = 70_00;
    config.limits.max_window_size = 0;
    let result = TftpServer::bind(config, source.clone()).await;
    assert!(matches!(result, Err(TftpError::InvalidConfig(_))));
    let taken = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let config = TftpConfig {
        listen: taken.local_addr().expect("addr"),
        ..TftpConfig::default()
    };
    let result = TftpServer::bind(config, source).await;
    assert!(
        matches!(result, Err(TftpError::Bind { .. })),
        "{:?}",
        result.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_sources_are_served() {
    use bellows_tftp::{MemorySource, TftpServer};
    use std::sync::Arc;
    let mut source = MemorySource::new();
    let script = b"#!ipxe\nchain http://127.0.0.1/auto.ipxe\n".to_vec();
    source.insert("auto.ipxe", script.clone());
    let config = TftpConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..TftpConfig::default()
    };
    let server = TftpServer::bind(config, Arc::new(source))
        .await
        .expect("bind");
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let mut client = Raw::new().await;
    let data = client
        .download(addr, "aa:bb:cc:dd:ee:ff/auto.ipxe", &[])
        .await;
    assert_eq!(data, script);
    client.rrq(addr, "missing", "octet", &[]).await;
    assert!(matches!(
        client.recv().await.1,
        Got::Error(ErrorCode::FileNotFound, _)
    ));
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("task")
        .expect("run");
}
