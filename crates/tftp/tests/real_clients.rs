//! Downloads with TFTP clients we did not write: tftp-hpa's `tftp`, `atftp`
//! and `curl`, all against a server on 127.0.0.1.

mod common;

use bellows_tftp::{ErrorCode, TftpConfig, TransferOutcome};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_hpa_downloads_every_size_byte_identical() {
    ensure_clients();
    let fx = Fixture::start(TftpConfig::default()).await;
    for (name, want) in &fx.files {
        let out = fx.out_path(name);
        let output = tftp_hpa_get(&fx, name, &out, &[], "binary").await;
        assert!(output.status.success(), "{name}: {}", describe(&output));
        assert_same_file(&out, want, &format!("tftp-hpa {name}"));
    }
    // Verbose mode, and netascii (tftp-hpa converts back, so any bytes
    // survive the round trip).
    let (name, want) = fx.files.iter().last().expect("files");
    let out = fx.out_path("verbose");
    let output = tftp_hpa_get(&fx, name, &out, &["-v"], "binary").await;
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("Received"),
        "{}",
        describe(&output)
    );
    assert_same_file(&out, want, "tftp-hpa -v");
    for (name, want) in fx
        .files
        .iter()
        .filter(|(n, _)| n.contains("-513") || n.contains("-1048576"))
    {
        let out = fx.out_path(&format!("ascii-{name}"));
        let output = tftp_hpa_get(&fx, name, &out, &[], "netascii").await;
        assert!(output.status.success(), "{}", describe(&output));
        assert_same_file(&out, want, &format!("tftp-hpa netascii {name}"));
    }
    let stats = fx.settled_stats(fx.files.len() + 3).await;
    assert_eq!(stats.completed, fx.files.len() as u64 + 3);
    assert_eq!(stats.failed, 0);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftp_downloads_with_blksize_and_windowsize() {
    ensure_clients();
    let fx = Fixture::start(TftpConfig::default()).await;
    let option_sets: [&[&str]; 6] = [
        &[],
        &["blksize 1468"],
        &["windowsize 8"],
        &["blksize 1468", "windowsize 8", "tsize 0"],
        &["blksize 65464", "windowsize 64"],
        &["blksize 512", "windowsize 4", "timeout 2"],
    ];
    for options in option_sets {
        for (name, want) in &fx.files {
            let out = fx.out_path(&format!("{name}-{}", options.join("_").replace(' ', "")));
            let output = atftp_get(&fx, name, &out, options).await;
            assert!(
                output.status.success(),
                "{name} {options:?}: {}",
                describe(&output)
            );
            assert_same_file(&out, want, &format!("atftp {options:?} {name}"));
        }
    }
    let stats = fx.settled_stats(option_sets.len() * fx.files.len()).await;
    assert_eq!(stats.failed, 0, "{stats:?}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_downloads_with_default_and_large_blocks() {
    ensure_clients();
    let fx = Fixture::start(TftpConfig::default()).await;
    let variants: [&[&str]; 3] = [&[], &["--tftp-blksize", "1468"], &["--tftp-no-options"]];
    for extra in variants {
        for (name, want) in &fx.files {
            let out = fx.out_path(&format!("{name}-{}", extra.join("")));
            let output = curl_get(&fx, name, &out, extra).await;
            assert!(
                output.status.success(),
                "{name} {extra:?}: {}",
                describe(&output)
            );
            assert_same_file(&out, want, &format!("curl {extra:?} {name}"));
        }
    }
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftp_options_take_effect() {
    ensure_clients();
    let fx = Fixture::start(TftpConfig::default()).await;
    let name = "file-1048576.bin";
    let want = fx.files[name].clone();
    let cases: [(&[&str], u16, u16); 3] = [
        (&["blksize 1468", "windowsize 8"], 1468, 8),
        (&["blksize 65464", "windowsize 65535"], 1468, 64),
        (&["windowsize 4"], 512, 4),
    ];
    for (i, (options, block_size, window_size)) in cases.into_iter().enumerate() {
        let out = fx.out_path(&format!("opt-{i}"));
        let output = atftp_get(&fx, name, &out, options).await;
        assert!(
            output.status.success(),
            "{options:?}: {}",
            describe(&output)
        );
        assert_same_file(&out, &want, &format!("atftp {options:?}"));
        let records = fx.wait_for_records(i + 1).await;
        let negotiated = records[i].negotiated.as_ref().expect("negotiated");
        assert_eq!(
            (negotiated.block_size, negotiated.window_size),
            (block_size, window_size),
            "{options:?}"
        );
        assert_eq!(
            records[i].outcome,
            TransferOutcome::Completed {
                bytes: want.len() as u64
            }
        );
    }
    fx.stop().await;
}

/// More than 65535 blocks of 512 bytes: the block number rolls over to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_number_rollover_with_real_clients() {
    ensure_clients();
    let size = 65_536 * 512 + 2 * 1024 * 1024 + 77; // 34 MiB and a bit
    let files = vec![("big.img".to_string(), random_bytes(size, 99))];
    let fx = Fixture::start_with(TftpConfig::default(), files).await;
    let want = fx.files["big.img"].clone();

    let out = fx.out_path("hpa");
    let output = tftp_hpa_get(&fx, "big.img", &out, &[], "binary").await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_same_file(&out, &want, "tftp-hpa rollover");
    std::fs::remove_file(&out).expect("rm");

    let out = fx.out_path("curl");
    let output = curl_get(&fx, "big.img", &out, &["--tftp-blksize", "512"]).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_same_file(&out, &want, "curl rollover");
    std::fs::remove_file(&out).expect("rm");

    let out = fx.out_path("atftp");
    let output = atftp_get(&fx, "big.img", &out, &["blksize 512", "windowsize 8"]).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_same_file(&out, &want, "atftp windowed rollover");

    let stats = fx.settled_stats(3).await;
    assert_eq!((stats.completed, stats.failed), (3, 0), "{stats:?}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_attempts_are_refused_with_an_error() {
    ensure_clients();
    let fx = Fixture::start(TftpConfig::default()).await;
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret"), b"do not serve").expect("write");
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        fx.root.path().join("link-out"),
    )
    .expect("symlink");
    std::fs::create_dir(fx.root.path().join("a")).expect("mkdir");
    let attempts = [
        ("../etc/passwd", 2),
        ("/etc/passwd", 1),
        ("link-out", 2),
        ("a/../../x", 2),
        ("..\\..\\etc\\passwd", 2),
        ("a", 2),
    ];
    for (name, code) in attempts {
        let out = fx.out_path(&format!("hpa-{name}"));
        let output = tftp_hpa_get(&fx, name, &out, &["-l"], "binary").await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            text.contains(&format!("Error code {code}")),
            "tftp-hpa {name}: {}",
            describe(&output)
        );
        assert!(
            std::fs::read(&out).map(|b| b.is_empty()).unwrap_or(true),
            "{name}: nothing downloaded"
        );

        let out = fx.out_path(&format!("atftp-{name}"));
        let output = atftp_get(&fx, name, &out, &[]).await;
        assert!(
            !output.status.success(),
            "atftp {name}: {}",
            describe(&output)
        );
        assert!(
            std::fs::read(&out).map(|b| b.is_empty()).unwrap_or(true),
            "{name}: nothing downloaded"
        );

        let out = fx.out_path(&format!("curl-{name}"));
        let output = curl_get(&fx, name, &out, &[]).await;
        assert!(
            !output.status.success(),
            "curl {name}: {}",
            describe(&output)
        );
    }
    let records = fx.wait_for_records(attempts.len() * 3).await;
    for record in &records {
        assert!(
            matches!(
                record.outcome,
                TransferOutcome::Refused {
                    code: ErrorCode::AccessViolation | ErrorCode::FileNotFound,
                    ..
                }
            ),
            "{record:?}"
        );
    }
    let stats = fx.settled_stats(attempts.len() * 3).await;
    assert_eq!(stats.completed, 0);
    assert_eq!(stats.data_bytes_sent, 0);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mac_prefixed_paths_are_served_and_reported() {
    ensure_clients();
    let fx = Fixture::start(TftpConfig::default()).await;
    let name = "file-513.bin";
    let want = fx.files[name].clone();
    let requests = [
        format!("01-aa-bb-cc-dd-ee-ff/{name}"),
        format!("aa:bb:cc:dd:ee:ff/{name}"),
        format!("AA-BB-CC-DD-EE-FF\\{name}"),
        format!("/aabbccddeeff/{name}"),
    ];
    for (i, request) in requests.iter().enumerate() {
        let out = fx.out_path(&format!("hpa-{i}"));
        let output = tftp_hpa_get(&fx, request, &out, &["-l"], "binary").await;
        assert!(output.status.success(), "{request}: {}", describe(&output));
        assert_same_file(&out, &want, &format!("tftp-hpa {request}"));
        let out = fx.out_path(&format!("atftp-{i}"));
        let output = atftp_get(&fx, request, &out, &["blksize 1468"]).await;
        assert!(output.status.success(), "{request}: {}", describe(&output));
        assert_same_file(&out, &want, &format!("atftp {request}"));
    }
    let out = fx.out_path("curl");
    let output = curl_get(&fx, &format!("aa:bb:cc:dd:ee:ff/{name}"), &out, &[]).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_same_file(&out, &want, "curl mac path");

    let records = fx.wait_for_records(requests.len() * 2 + 1).await;
    for record in &records {
        assert!(record.outcome.is_completed(), "{record:?}");
        assert_eq!(
            record.mac.map(|m| m.to_string()).as_deref(),
            Some("aa:bb:cc:dd:ee:ff")
        );
        assert_eq!(record.path.as_ref().map(|p| p.as_str()), Some(name));
    }
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_curl_downloads_are_identical() {
    ensure_clients();
    // Fifty machines, all at 127.0.0.1 here: lift the per-address limit.
    let config = TftpConfig {
        max_transfers_per_client: 50,
        ..TftpConfig::default()
    };
    let fx = Fixture::start(config).await;
    let name = "file-1048576.bin";
    let want = fx.files[name].clone();
    let mut downloads = tokio::task::JoinSet::new();
    for i in 0..50 {
        let out = fx.out_path(&format!("concurrent-{i}"));
        let url = format!("tftp://127.0.0.1:{}/{name}", fx.port());
        let blksize = if i % 2 == 0 { "1468" } else { "512" };
        downloads.spawn(async move {
            let args = [
                "-sS",
                "--max-time",
                "50",
                "--tftp-blksize",
                blksize,
                url.as_str(),
                "-o",
            ];
            let mut args: Vec<&str> = args.to_vec();
            let out_str = out.to_str().expect("utf-8").to_string();
            args.push(&out_str);
            let output = run_client("curl", &args, CLIENT_LIMIT).await;
            (out, output)
        });
    }
    let mut finished = 0;
    while let Some(joined) = downloads.join_next().await {
        let (out, output) = joined.expect("download task");
        assert!(output.status.success(), "{}", describe(&output));
        assert_same_file(&out, &want, "concurrent curl");
        finished += 1;
    }
    assert_eq!(finished, 50);
    let stats = fx.settled_stats(50).await;
    assert_eq!(
        (stats.completed, stats.failed, stats.active),
        (50, 0, 0),
        "{stats:?}"
    );
    fx.stop().await;
}
