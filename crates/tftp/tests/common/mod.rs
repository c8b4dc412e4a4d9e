//! Shared test harness: a server on 127.0.0.1 with a temporary root of known
//! files, the real clients we drive, and a small raw client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bellows_tftp::{DirectorySource, StatsHandle, TftpConfig, TftpServer, TransferRecord};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The standard set of test files: edge sizes around 512 and 1468.
pub fn standard_files() -> Vec<(String, Vec<u8>)> {
    [
        0usize,
        1,
        511,
        512,
        513,
        1024,
        1467,
        1468,
        1469,
        2936,
        1 << 20,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, size)| (format!("file-{size}.bin"), random_bytes(size, i as u64 + 1)))
    .collect()
}

/// A running server over a temporary root.
pub struct Fixture {
    pub root: tempfile::TempDir,
    pub out: tempfile::TempDir,
    pub addr: SocketAddr,
    pub stats: StatsHandle,
    pub records: Arc<Mutex<Vec<TransferRecord>>>,
    pub files: BTreeMap<String, Vec<u8>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), bellows_tftp::TftpError>>>,
}

impl Fixture {
    /// Starts a server with the standard files and `config` (its listen
    /// address is replaced by 127.0.0.1:0).
    pub async fn start(config: TftpConfig) -> Self {
        Self::start_with(config, standard_files()).await
    }

    pub async fn start_with(mut config: TftpConfig, files: Vec<(String, Vec<u8>)>) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        let mut map = BTreeMap::new();
        for (name, bytes) in files {
            let path = root.path().join(&name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&path, &bytes).expect("write fixture");
            map.insert(name, bytes);
        }
        config.listen = "127.0.0.1:0".parse().expect("addr");
        let source = Arc::new(DirectorySource::new(root.path()).expect("root"));
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&records);
        let server = TftpServer::bind(config, source)
            .await
            .expect("bind")
            .with_transfer_hook(move |record| {
                sink.lock().expect("records").push(record.clone());
            });
        let addr = server.local_addr();
        let stats = server.stats();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            root,
            out,
            addr,
            stats,
            records,
            files: map,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    pub fn out_path(&self, name: &str) -> PathBuf {
        self.out.path().join(name.replace(['/', ':', '\\'], "_"))
    }

    /// Stops the server and waits (bounded) for `run` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("server result");
        }
    }

    /// Waits (bounded) until the hook has seen `count` records.
    pub async fn wait_for_records(&self, count: usize) -> Vec<TransferRecord> {
        for _ in 0..500 {
            {
                let records = self.records.lock().expect("records");
                if records.len() >= count {
                    return records.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "expected {count} transfer records, got {:?}",
            self.records.lock().expect("records")
        );
    }
}

impl Fixture {
    /// Counters once `records` requests have ended and no transfer runs
    /// (clients may exit before the server has processed their final ACK).
    pub async fn settled_stats(&self, records: usize) -> bellows_tftp::TftpStats {
        self.wait_for_records(records).await;
        for _ in 0..500 {
            let stats = self.stats.snapshot();
            if stats.active == 0 {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("transfers still active: {:?}", self.stats.snapshot());
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Makes sure the real clients are installed (apt-get, once, under a lock
/// so parallel test processes do not fight over dpkg).
pub fn ensure_clients() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let have = |tool: &str| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if ["tftp", "atftp", "curl"].iter().all(|t| have(t)) {
            return;
        }
        let lock = std::fs::File::create(std::env::temp_dir().join("bellows-tftp-apt.lock"))
            .expect("lock file");
        lock.lock().expect("lock");
        if ["tftp", "atftp", "curl"].iter().all(|t| have(t)) {
            return;
        }
        let run = |args: &[&str]| {
            let status = std::process::Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .expect("apt-get runs (the real-client tests need root and apt)");
            assert!(status.success(), "apt-get {args:?} failed");
        };
        run(&["update", "-q"]);
        run(&[
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "tftp-hpa",
            "atftp",
            "curl",
        ]);
        assert!(["tftp", "atftp", "curl"].iter().all(|t| have(t)));
    });
}

/// Runs a client with a hard time limit; the process is killed if it
/// overruns.
pub async fn run_client(program: &str, args: &[&str], limit: Duration) -> Output {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(output) => output.expect("client output"),
        Err(_) => panic!("{program} {args:?} did not finish within {limit:?}"),
    }
}

pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts a downloaded file is byte-identical to the original.
pub fn assert_same_file(path: &Path, want: &[u8], context: &str) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{context}: no output file: {e}"));
    assert!(
        got.len() == want.len() && got == want,
        "{context}: got {} bytes, want {} (first difference at {:?})",
        got.len(),
        want.len(),
        got.iter().zip(want).position(|(a, b)| a != b)
    );
}

pub const CLIENT_LIMIT: Duration = Duration::from_secs(60);

/// tftp-hpa: `tftp -m MODE 127.0.0.1 PORT [-v] [-l] -c get NAME OUT`.
pub async fn tftp_hpa_get(
    fx: &Fixture,
    name: &str,
    out: &Path,
    extra: &[&str],
    mode: &str,
) -> Output {
    let out = out.to_str().expect("utf-8 path");
    let port = fx.port();
    let mut args = vec!["-m", mode, "127.0.0.1", &port];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-c", "get", name, out]);
    run_client("tftp", &args, CLIENT_LIMIT).await
}

/// atftp: `atftp -g -r NAME -l OUT [--option "k v"]... 127.0.0.1 PORT`.
pub async fn atftp_get(fx: &Fixture, name: &str, out: &Path, options: &[&str]) -> Output {
    let out = out.to_str().expect("utf-8 path");
    let port = fx.port();
    let mut args = vec!["-g", "-r", name, "-l", out];
    for option in options {
        args.push("--option");
        args.push(option);
    }
    args.extend_from_slice(&["127.0.0.1", &port]);
    run_client("atftp", &args, CLIENT_LIMIT).await
}

/// curl: `curl -sS --path-as-is [extra] tftp://127.0.0.1:PORT/NAME -o OUT`.
pub async fn curl_get(fx: &Fixture, name: &str, out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().expect("utf-8 path");
    let url = format!("tftp://127.0.0.1:{}/{name}", fx.port());
    let mut args = vec!["-sS", "--path-as-is", "--max-time", "50"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[url.as_str(), "-o", out]);
    run_client("curl", &args, CLIENT_LIMIT).await
}
