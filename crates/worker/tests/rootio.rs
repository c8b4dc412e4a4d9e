//! `rootio` against real peers: a storage layout served as the metadata
//! service serves it, a loop device as the disk; util-linux's `sfdisk`
//! reads back (and verifies) the partition table `partition` wrote,
//! `blkid` the file systems `format` made (with e2fsprogs' mke2fs and
//! util-linux's mkswap), and `/proc/self/mounts` what `mount` mounted.
//! Needs root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use bellows_worker::{
    ActionSpec, BuiltinOptions, BuiltinRuntime, LogSink, RunContext, RunOutcome, RunResult, Runtime,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Loops(Vec<PathBuf>);

impl Drop for Loops {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-R")
            .arg("/mountAction")
            .status();
        for device in self.0.iter().rev() {
            let _ = Command::new("losetup").arg("-d").arg(device).status();
        }
    }
}

/// A loop device over `backing` (from `offset` for `size` bytes if given).
fn attach(loops: &mut Loops, backing: &Path, range: Option<(u64, u64)>) -> String {
    let mut c = Command::new("losetup");
    c.args(["--find", "--show"]);
    if let Some((offset, size)) = range {
        c.args(["-o", &offset.to_string(), "--sizelimit", &size.to_string()]);
    }
    let out = c.arg(backing).output().unwrap();
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
    loops.0.push(PathBuf::from(&device));
    device
}

/// Serves the document behind `doc` at `/metadata`, as the server does.
async fn serve(doc: Arc<Mutex<Value>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/metadata",
        axum::routing::get(move || {
            let d = doc.lock().unwrap().clone();
            async move { axum::Json(d) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("{addr}")
}

async fn step(rt: &BuiltinRuntime, mirror: &str, command: &str) -> RunResult {
    let spec = ActionSpec {
        name: command.into(),
        image: "quay.io/tinkerbell-actions/rootio:v1.0.0".into(),
        command: vec![command.into()],
        environment: BTreeMap::from([("MIRROR_HOST".to_string(), mirror.to_string())]),
        ..ActionSpec::default()
    };
    let ctx = RunContext {
        work_dir: std::env::temp_dir(),
        logs: LogSink::detached(),
        cancel: CancellationToken::new(),
    };
    rt.run(&spec, &ctx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootio_partitions_formats_and_mounts_a_layout() {
    if !bellows_testkit::netns::can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disk.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    let mut loops = Loops(Vec::new());
    let device = attach(&mut loops, &backing, None);
    // Tinkerbell's layout: BIOS boot, swap, the rest for /.
    let disks = json!([{"device": device, "wipe_table": true, "partitions": [
        {"label": "BIOS", "number": 1, "size": 4096},
        {"label": "SWAP", "number": 2, "size": "16M"},
        {"label": "ROOT", "number": 3, "size": 0}
    ]}]);
    let doc = Arc::new(Mutex::new(
        json!({"metadata": {"instance": {"storage": {"disks": disks}}}}),
    ));
    let mirror = serve(doc.clone()).await;
    let rt = BuiltinRuntime::new(BuiltinOptions::default());

    let r = step(&rt, &mirror, "partition").await;
    assert_eq!(r.outcome, RunOutcome::Success, "{}", r.message);
    let table = Command::new("sfdisk")
        .args(["--json", &device])
        .output()
        .unwrap();
    let table: Value = serde_json::from_slice(&table.stdout).expect("sfdisk reads the table");
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(table["partitiontable"]["label"], "gpt");
    assert_eq!(parts.len(), 3);
    assert_eq!(
        (parts[0]["start"].as_u64(), parts[0]["size"].as_u64()),
        (Some(2048), Some(4096))
    );
    assert_eq!(parts[0]["type"], "21686148-6449-6E6F-744E-656564454649");
    assert_eq!(parts[1]["size"].as_u64(), Some(32768));
    assert_eq!(parts[1]["type"], "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F");
    assert_eq!(parts[2]["name"], "ROOT");
    // sfdisk --verify finds no problem (backup header, CRCs, overlaps).
    let verify = Command::new("sfdisk")
        .args(["--verify", &device])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // This machine's loop driver makes no partition devices: each
    // partition gets a loop device of its own, where sfdisk says it is.
    let part = |i: usize| {
        let start = parts[i]["start"].as_u64().unwrap() * 512;
        let size = parts[i]["size"].as_u64().unwrap() * 512;
        (start, size)
    };
    let swap_dev = attach(&mut loops, &backing, Some(part(1)));
    let root_dev = attach(&mut loops, &backing, Some(part(2)));
    *doc.lock().unwrap() = json!({"metadata": {"instance": {"storage": {
        "disks": disks,
        "filesystems": [
            {"mount": {"device": root_dev, "format": "ext4", "point": "/", "create": {"options": ["-L", "ROOT"]}}},
            {"mount": {"device": swap_dev, "format": "swap", "point": "none", "create": {"options": ["-L", "SWAP"]}}}
        ]
    }}}});
    let r = step(&rt, &mirror, "format").await;
    assert_eq!(r.outcome, RunOutcome::Success, "{}", r.message);
    let blkid = |dev: &str| {
        let o = Command::new("blkid")
            .args(["-p", "-o", "export", dev])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let root = blkid(&root_dev);
    assert!(
        root.contains("TYPE=ext4") && root.contains("LABEL=ROOT"),
        "{root}"
    );
    let swap = blkid(&swap_dev);
    assert!(
        swap.contains("TYPE=swap") && swap.contains("LABEL=SWAP"),
        "{swap}"
    );

    let r = step(&rt, &mirror, "mount").await;
    assert_eq!(r.outcome, RunOutcome::Success, "{}", r.message);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with(&format!("{root_dev} /mountAction ext4"))),
        "{mounts}"
    );

    let r = step(&rt, &mirror, "dance").await;
    assert_eq!(r.outcome, RunOutcome::Failed);
    assert!(
        r.message.contains("partition, format or mount"),
        "{}",
        r.message
    );
}
