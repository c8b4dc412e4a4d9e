//! `qemuimg2disk` against real peers: qcow2 files made by `qemu-img`
//! (plain, compressed, small clusters so there are many L2 tables) served
//! with Range support by tower-http; the disk written must equal the raw
//! image `qemu-img` started from, byte for byte, on a regular file and on
//! a loop device first filled with 0xff (so clusters that read as zeros
//! must really be written).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bellows_testkit::packages::ensure_installed;
use bellows_worker::{
    ActionSpec, BuiltinOptions, BuiltinRuntime, LogSink, RunContext, RunOutcome, Runtime,
};
use tokio_util::sync::CancellationToken;

/// A raw disk of 24 MiB: data in a few places, zeros between.
fn raw_disk(path: &Path) -> Vec<u8> {
    let mut disk = vec![0u8; 24 << 20];
    for (start, len) in [
        (0usize, 70_000usize),
        (3 << 20, 1 << 20),
        (9_000_000, 5000),
        ((24 << 20) - 4096, 4096),
    ] {
        for (i, b) in disk[start..start + len].iter_mut().enumerate() {
            *b = ((i as u32).wrapping_mul(2_654_435_761) >> 11) as u8 | 1;
        }
    }
    std::fs::write(path, &disk).unwrap();
    disk
}

fn qemu_img(args: &[&str]) {
    let bin = ensure_installed("qemu-img", "qemu-utils");
    let out = Command::new(bin).args(args).output().expect("qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves `dir` (with Range support) on loopback; returns the base URL.
async fn serve(dir: &Path, ranges: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = if ranges {
        axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir))
    } else {
        let dir = dir.to_path_buf();
        axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let path = dir.join(uri.path().trim_start_matches('/'));
            async move { std::fs::read(path).unwrap_or_default() }
        })
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn run(url: &str, dest: &Path) -> bellows_worker::RunResult {
    let rt = BuiltinRuntime::new(BuiltinOptions::default());
    let spec = ActionSpec {
        name: "convert".into(),
        image: "quay.io/tinkerbell/actions/qemuimg2disk:latest".into(),
        environment: BTreeMap::from([
            ("IMG_URL".to_string(), url.to_string()),
            ("DEST_DISK".to_string(), dest.display().to_string()),
        ]),
        ..ActionSpec::default()
    };
    let ctx = RunContext {
        work_dir: std::env::temp_dir(),
        logs: LogSink::detached(),
        cancel: CancellationToken::new(),
    };
    tokio::time::timeout(Duration::from_secs(120), rt.run(&spec, &ctx))
        .await
        .expect("converted within 120 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_files_from_qemu_img_convert_to_the_raw_disk() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let disk = raw_disk(&raw);
    let raw_arg = raw.to_string_lossy().into_owned();
    let variants: [(&str, &[&str]); 3] = [
        ("plain.qcow2", &[]),
        ("compressed.qcow2", &["-c"]),
        ("small-clusters.qcow2", &["-c", "-o", "cluster_size=4096"]),
    ];
    for (name, extra) in variants {
        let out = dir.path().join(name).to_string_lossy().into_owned();
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&raw_arg, &out]);
        qemu_img(&args);
    }
    let base = serve(dir.path(), true).await;
    for (name, _) in variants {
        let dest = dir.path().join(format!("{name}.out"));
        let r = run(&format!("{base}/{name}"), &dest).await;
        assert_eq!(r.outcome, RunOutcome::Success, "{name}: {}", r.message);
        assert!(
            std::fs::read(&dest).unwrap() == disk,
            "{name}: the disk differs from the raw image"
        );
    }

    // A raw file is written as image2disk would.
    let dest = dir.path().join("raw.out");
    let r = run(&format!("{base}/disk.raw"), &dest).await;
    assert_eq!(r.outcome, RunOutcome::Success, "{}", r.message);
    assert!(std::fs::read(&dest).unwrap() == disk);

    // A server without Range support is refused by name.
    let plain = serve(dir.path(), false).await;
    let r = run(
        &format!("{plain}/compressed.qcow2"),
        &dir.path().join("x.out"),
    )
    .await;
    assert_eq!(r.outcome, RunOutcome::Failed);
    assert!(
        r.message.contains("ignores Range requests"),
        "{}",
        r.message
    );
}

/// On a block device every byte is written, zeros included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_device_gets_its_zeros_written() {
    if !bellows_testkit::netns::can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let disk = raw_disk(&raw);
    let image = dir.path().join("c.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-c",
        &raw.to_string_lossy(),
        &image.to_string_lossy(),
    ]);
    let backing = dir.path().join("loop.img");
    std::fs::write(&backing, vec![0xffu8; 32 << 20]).unwrap();
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    struct Detach(PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let _detach = Detach(device.clone());
    let base = serve(dir.path(), true).await;
    let r = run(&format!("{base}/c.qcow2"), &device).await;
    assert_eq!(r.outcome, RunOutcome::Success, "{}", r.message);
    let written = std::fs::read(&backing).unwrap();
    assert!(
        written[..disk.len()] == disk[..],
        "the device differs from the raw image"
    );
    assert!(
        written[disk.len()..].iter().all(|b| *b == 0xff),
        "wrote past the disk's end"
    );
}
