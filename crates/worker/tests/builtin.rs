//! The built-in actions against real peers: an HTTP server (axum) serving
//! images compressed by the real `gzip`, `xz` and `zstd`, `sha256sum` to
//! check what was written, and, as root, loop devices, `mkfs.ext4` and
//! `debugfs` to check what writefile put on a filesystem.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bellows_worker::builtin::{BuiltinOptions, BuiltinRuntime};
use bellows_worker::runtime::{LogSink, RunContext, RunOutcome, RunResult, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod support;
use support::{Loop, spec};

const MIB: usize = 1 << 20;

/// Compressible but not trivial: random 64 KiB blocks between zeros.
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        let block = (len - data.len()).min(64 << 10);
        if (data.len() / (64 << 10)) % 3 == 2 {
            data.resize(data.len() + block, 0);
        } else {
            for _ in 0..block {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                data.push((state >> 24) as u8);
            }
        }
    }
    data
}

/// SHA-256 of a file by `sha256sum`, or of a device's first `len` bytes.
fn sha256sum(path: &Path, len: Option<usize>) -> String {
    let output = match len {
        None => Command::new("sha256sum").arg(path).output().unwrap(),
        Some(len) => Command::new("sh")
            .arg("-c")
            .arg(format!("head -c {len} {} | sha256sum", path.display()))
            .output()
            .unwrap(),
    };
    assert!(output.status.success(), "sha256sum: {output:?}");
    String::from_utf8(output.stdout).unwrap()[..64].to_string()
}

/// Compresses `source` with a real tool into `dest`.
fn compress(tool: &str, source: &Path, dest: &Path) {
    let args: &[&str] = match tool {
        "gzip" => &["-c"],
        "xz" => &["-c", "-T1"],
        "zstd" => &["-q", "-c"],
        other => panic!("no tool {other}"),
    };
    let status = Command::new(tool)
        .args(args)
        .arg(source)
        .stdout(std::fs::File::create(dest).unwrap())
        .status()
        .unwrap_or_else(|e| panic!("{tool} (apt-get install {tool}): {e}"));
    assert!(status.success(), "{tool} failed");
}

/// An axum server for the files in a directory, under `/files/<name>`.
struct Server {
    dir: tempfile::TempDir,
    base: String,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let app = axum::Router::new()
            .route("/files/{name}", axum::routing::get(serve_file))
            .with_state(root);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server { dir, base }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self, name: &str) -> String {
        format!("{}/files/{name}", self.base)
    }

    /// Writes `data` as `name`, and `name.gz`/`.xz`/`.zst` made by the tools.
    fn publish(&self, name: &str, data: &[u8]) {
        std::fs::write(self.path(name), data).unwrap();
        for (tool, extension) in [("gzip", "gz"), ("xz", "xz"), ("zstd", "zst")] {
            compress(
                tool,
                &self.path(name),
                &self.path(&format!("{name}.{extension}")),
            );
        }
    }
}

async fn serve_file(
    State(root): State<PathBuf>,
    UrlPath(name): UrlPath<String>,
) -> axum::response::Response {
    match tokio::fs::read(root.join(&name)).await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// What a raw TCP peer does after reading the request.
#[derive(Clone)]
enum Misbehaviour {
    /// Declare `declared` bytes, send `data`, then keep the connection open.
    Stall { declared: usize, data: Vec<u8> },
    /// Declare `declared` bytes, send `data`, then close.
    Truncate { declared: usize, data: Vec<u8> },
    /// Send `data` in `piece`-sized writes `delay` apart.
    Slow {
        data: Vec<u8>,
        piece: usize,
        delay: Duration,
    },
}

/// A peer that misbehaves in the one way asked, on every connection.
async fn raw_server(behaviour: Misbehaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/image.raw", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = |len: usize| {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\r\n"
                    )
                };
                match behaviour {
                    Misbehaviour::Stall { declared, data } => {
                        let _ = socket.write_all(head(declared).as_bytes()).await;
                        let _ = socket.write_all(&data).await;
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    }
                    Misbehaviour::Truncate { declared, data } => {
                        let _ = socket.write_all(head(declared).as_bytes()).await;
                        let _ = socket.write_all(&data).await;
                        let _ = socket.shutdown().await;
                    }
                    Misbehaviour::Slow { data, piece, delay } => {
                        let _ = socket.write_all(head(data.len()).as_bytes()).await;
                        for chunk in data.chunks(piece) {
                            if socket.write_all(chunk).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            });
        }
    });
    url
}

struct Run {
    result: RunResult,
    logs: String,
    progress: Option<String>,
}

fn context() -> (RunContext, watch::Receiver<Option<String>>) {
    let (logs, progress) = LogSink::new(None);
    (
        RunContext {
            work_dir: std::env::temp_dir(),
            logs,
            cancel: CancellationToken::new(),
        },
        progress,
    )
}

async fn run(image: &str, env: &[(&str, &str)]) -> Run {
    let runtime = BuiltinRuntime::new(BuiltinOptions::default());
    let (ctx, progress) = context();
    let result = runtime.run(&spec(image, env), &ctx).await;
    Run {
        result,
        logs: ctx.logs.tail(),
        progress: progress.borrow().clone(),
    }
}

async fn image2disk(url: &str, dest: &Path, extra: &[(&str, &str)]) -> Run {
    let dest = dest.display().to_string();
    let mut env = vec![("IMG_URL", url), ("DEST_DISK", dest.as_str())];
    env.extend_from_slice(extra);
    run("quay.io/tinkerbell/actions/image2disk:latest", &env).await
}

fn assert_success(run: &Run) {
    assert_eq!(
        run.result.outcome,
        RunOutcome::Success,
        "{}\n{}",
        run.result.message,
        run.logs
    );
}

fn assert_failed(run: &Run, needle: &str) {
    eprintln!("failed as expected: {}", run.result.message);
    assert_eq!(run.result.outcome, RunOutcome::Failed, "{}", run.logs);
    assert!(
        run.result.message.contains(needle),
        "message {:?} lacks {needle:?}",
        run.result.message
    );
}

/// Crosses the 4 MiB write size and ends mid-chunk.
const IMAGE_LEN: usize = 5 * MIB + 12_345;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_written_byte_exact() {
    let server = Server::start().await;
    let data = image(IMAGE_LEN, 7);
    server.publish("disk.raw", &data);
    let expected = sha256sum(&server.path("disk.raw"), None);
    let out = tempfile::tempdir().unwrap();
    for (name, compressed) in [
        ("disk.raw", "false"),
        ("disk.raw.gz", "true"),
        ("disk.raw.xz", "true"),
        ("disk.raw.zst", "true"),
        // Tinkerbell's spelling of a zstd extension.
        ("disk.raw.zs", "true"),
    ] {
        if name.ends_with(".zs") {
            std::fs::copy(server.path("disk.raw.zst"), server.path(name)).unwrap();
        }
        let dest = out.path().join(format!("{name}.out"));
        let run = image2disk(&server.url(name), &dest, &[("COMPRESSED", compressed)]).await;
        assert_success(&run);
        assert_eq!(sha256sum(&dest, None), expected, "{name}");
        assert!(run.logs.contains("image2disk: writing"), "{}", run.logs);
        assert!(
            run.logs.contains(&format!("{IMAGE_LEN} bytes")),
            "{}",
            run.logs
        );
        let progress = run.progress.expect("progress reported");
        assert!(
            progress.starts_with("written 5 MiB") && progress.contains("(100%)"),
            "{progress}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magic_bytes_decide_without_compressed_or_extension() {
    let server = Server::start().await;
    let data = image(MIB + 3, 11);
    server.publish("plain", &data);
    let expected = sha256sum(&server.path("plain"), None);
    let out = tempfile::tempdir().unwrap();
    // xz data behind a name without extension, COMPRESSED unset.
    std::fs::rename(server.path("plain.xz"), server.path("opaque")).unwrap();
    let dest = out.path().join("a");
    let run = image2disk(&server.url("opaque"), &dest, &[]).await;
    assert_success(&run);
    assert_eq!(sha256sum(&dest, None), expected);
    assert!(
        run.logs
            .contains("xz magic bytes although COMPRESSED is not true")
    );
    // zstd data named .gz.
    std::fs::rename(server.path("plain.zst"), server.path("wrong.gz")).unwrap();
    let run = image2disk(&server.url("wrong.gz"), &dest, &[("COMPRESSED", "1")]).await;
    assert_success(&run);
    assert_eq!(sha256sum(&dest, None), expected);
    assert!(
        run.logs
            .contains("extension says gzip but the data is zstd")
    );
    // Raw data that COMPRESSED=true cannot place.
    let run = image2disk(&server.url("plain"), &dest, &[("COMPRESSED", "true")]).await;
    assert_failed(
        &run,
        "COMPRESSED is true but IMG_URL has no known compression extension",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concatenated_streams_are_all_written() {
    let server = Server::start().await;
    let first = image(MIB, 1);
    let second = image(2 * MIB + 5, 2);
    server.publish("one", &first);
    server.publish("two", &second);
    let both = [first, second].concat();
    std::fs::write(server.path("both"), &both).unwrap();
    let expected = sha256sum(&server.path("both"), None);
    let out = tempfile::tempdir().unwrap();
    for extension in ["gz", "xz", "zst"] {
        let joined = [
            std::fs::read(server.path(&format!("one.{extension}"))).unwrap(),
            std::fs::read(server.path(&format!("two.{extension}"))).unwrap(),
        ]
        .concat();
        let name = format!("both.{extension}");
        std::fs::write(server.path(&name), joined).unwrap();
        let dest = out.path().join(&name);
        let run = image2disk(&server.url(&name), &dest, &[("COMPRESSED", "true")]).await;
        assert_success(&run);
        assert_eq!(sha256sum(&dest, None), expected, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_is_verified() {
    let server = Server::start().await;
    server.publish("disk.raw", &image(2 * MIB, 3));
    let digest = sha256sum(&server.path("disk.raw"), None);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("disk");
    let checksum = format!("sha256:{digest}");
    let run = image2disk(
        &server.url("disk.raw.xz"),
        &dest,
        &[("COMPRESSED", "true"), ("CHECKSUM", &checksum)],
    )
    .await;
    assert_success(&run);
    assert!(
        run.result
            .message
            .contains(&format!("sha256:{digest} verified"))
    );
    let run = image2disk(
        &server.url("disk.raw.gz"),
        &dest,
        &[("IMG_SHA256", &digest)],
    )
    .await;
    assert_success(&run);

    let wrong = "0".repeat(64);
    let run = image2disk(
        &server.url("disk.raw.gz"),
        &dest,
        &[("CHECKSUM", &format!("sha256:{wrong}"))],
    )
    .await;
    assert_failed(
        &run,
        &format!("does not match CHECKSUM: expected sha256:{wrong}, actual sha256:{digest}"),
    );
    let run = image2disk(&server.url("disk.raw"), &dest, &[("CHECKSUM", "md5:abc")]).await;
    assert_failed(&run, "not supported (only sha256)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_name_the_url() {
    let server = Server::start().await;
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("disk");
    let url = server.url("missing.raw");
    let run = image2disk(&url, &dest, &[]).await;
    assert_failed(&run, &format!("image URL {url} returned 404 Not Found"));

    std::fs::write(server.path("empty.raw"), b"").unwrap();
    let url = server.url("empty.raw");
    let run = image2disk(&url, &dest, &[]).await;
    assert_failed(&run, &format!("image URL {url} returned an empty body"));

    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}/disk.raw");
    let run = image2disk(&url, &dest, &[]).await;
    assert_failed(&run, &format!("could not fetch image URL {url}"));

    // The body breaks off after 1 MiB of a declared 8.
    let url = raw_server(Misbehaviour::Truncate {
        declared: 8 * MIB,
        data: image(MIB, 5),
    })
    .await;
    let run = image2disk(&url, &dest, &[]).await;
    assert_failed(&run, &format!("download of {url} failed after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_streams_are_reported() {
    let server = Server::start().await;
    server.publish("disk.raw", &image(3 * MIB, 9));
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("disk");
    for (extension, format) in [("gz", "gzip"), ("xz", "xz"), ("zst", "zstd")] {
        let good = std::fs::read(server.path(&format!("disk.raw.{extension}"))).unwrap();
        // Damaged in the middle.
        let mut damaged = good.clone();
        let middle = damaged.len() / 2;
        for byte in &mut damaged[middle..middle + 64] {
            *byte = !*byte;
        }
        let name = format!("damaged.{extension}");
        std::fs::write(server.path(&name), damaged).unwrap();
        let url = server.url(&name);
        let run = image2disk(&url, &dest, &[("COMPRESSED", "true")]).await;
        assert_failed(
            &run,
            &format!("{format} data from {url} is corrupt or truncated"),
        );
        // Cut short.
        let name = format!("short.{extension}");
        std::fs::write(server.path(&name), &good[..good.len() / 2]).unwrap();
        let url = server.url(&name);
        let run = image2disk(&url, &dest, &[("COMPRESSED", "true")]).await;
        assert_failed(
            &run,
            &format!("{format} data from {url} is corrupt or truncated"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_stalled_download() {
    let url = raw_server(Misbehaviour::Stall {
        declared: 64 * MIB,
        data: image(MIB, 4),
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("disk").display().to_string();
    let runtime = BuiltinRuntime::new(BuiltinOptions::default());
    let (ctx, _progress) = context();
    let action = spec(
        "bellows/image2disk",
        &[("IMG_URL", &url), ("DEST_DISK", &dest)],
    );
    let cancel = ctx.cancel.clone();
    let task = tokio::spawn(async move { runtime.run(&action, &ctx).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished(), "the download should be stalled");
    let cancelled_at = Instant::now();
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("cancel is honoured promptly")
        .unwrap();
    assert_eq!(result.outcome, RunOutcome::Cancelled, "{}", result.message);
    assert!(cancelled_at.elapsed() < Duration::from_secs(2));
    assert!(result.message.contains("cancelled"), "{}", result.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_reported_while_writing() {
    let data = image(6 * MIB, 8);
    let url = raw_server(Misbehaviour::Slow {
        data: data.clone(),
        piece: 128 << 10,
        delay: Duration::from_millis(40),
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("disk");
    let dest_text = dest.display().to_string();
    let runtime = BuiltinRuntime::new(BuiltinOptions::default());
    let (ctx, mut progress) = context();
    let action = spec(
        "bellows/image2disk",
        &[("IMG_URL", &url), ("DEST_DISK", &dest_text)],
    );
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while progress.changed().await.is_ok() {
            if let Some(text) = progress.borrow_and_update().clone() {
                seen.push(text);
            }
        }
        seen
    });
    let started = Instant::now();
    let result = runtime.run(&action, &ctx).await;
    let took = started.elapsed();
    drop(ctx);
    let seen = watcher.await.unwrap();
    assert_eq!(result.outcome, RunOutcome::Success, "{}", result.message);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen[0].contains("of 6 MiB"), "{seen:?}");
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .any(|p| !p.starts_with("written 0 B")),
        "progress moves before the end: {seen:?}"
    );
    let last = seen.last().unwrap();
    assert!(last.starts_with("written 6 MiB of 6 MiB (100%)"), "{last}");
    // At most about twice a second, plus the final one.
    let allowed = (took.as_millis() / 500) as usize + 1;
    assert!(
        seen.len() <= allowed,
        "{} updates in {took:?}: {seen:?}",
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_checked() {
    let server = Server::start().await;
    server.publish("disk.raw", &image(MIB, 1));
    let run = image2disk(
        &server.url("disk.raw"),
        Path::new("/dev/bellows-no-such-disk"),
        &[],
    )
    .await;
    assert_failed(&run, "DEST_DISK /dev/bellows-no-such-disk does not exist");
    let run = image2disk(&server.url("disk.raw"), Path::new("/no/such/dir/disk"), &[]).await;
    assert_failed(
        &run,
        "DEST_DISK /no/such/dir/disk cannot be opened for writing",
    );
    let run = run_env("bellows/image2disk", &[("DEST_DISK", "/dev/sda")]).await;
    assert_failed(&run, "IMG_URL is not set");
}

async fn run_env(image: &str, env: &[(&str, &str)]) -> Run {
    run(image, env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writefile_on_the_workers_own_filesystem() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/nested/hello.conf");
    let dest = path.display().to_string();
    let run = run(
        "ghcr.io/tinkerbell/actions/writefile:v1",
        &[
            ("DEST_PATH", &dest),
            ("CONTENTS", "hello-world\n"),
            ("MODE", "0600"),
            ("DIRMODE", "0700"),
        ],
    )
    .await;
    assert_success(&run);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello-world\n");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("new")), 0o700);
    assert_eq!(mode(&dir.path().join("new/nested")), 0o700);

    // Overwrite: truncated, mode set again.
    let run = run_env(
        "bellows/writefile",
        &[("DEST_PATH", &dest), ("CONTENTS", "x"), ("MODE", "644")],
    )
    .await;
    assert_success(&run);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
    assert_eq!(mode(&path), 0o644);

    // A file where a directory must go.
    let blocked = dir
        .path()
        .join("new/nested/hello.conf/below")
        .display()
        .to_string();
    let run = run_env(
        "bellows/writefile",
        &[("DEST_PATH", &blocked), ("CONTENTS", "x")],
    )
    .await;
    assert_failed(&run, "exists and is not a directory");
}

// ---- As root: loop devices, mkfs.ext4 and debugfs. ----

/// Why root-only tests cannot run here, if they cannot.
fn root_skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    for tool in ["losetup", "mkfs.ext4", "debugfs"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

macro_rules! require_root {
    () => {
        if let Some(reason) = root_skip_reason() {
            println!("SKIPPED: {reason}");
            return;
        }
    };
}

fn debugfs(device: &str, request: &str, write: bool) -> String {
    let mut command = Command::new("debugfs");
    if write {
        command.arg("-w");
    }
    let output = command.args(["-R", request, device]).output().unwrap();
    assert!(output.status.success(), "debugfs {request}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn mounted(device: &str) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|line| line.split_whitespace().next() == Some(device))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image2disk_onto_a_loop_device() {
    require_root!();
    let Some(disk) = Loop::new(4 * MIB as u64) else {
        return;
    };
    let server = Server::start().await;
    let fits = image(3 * MIB, 21);
    server.publish("fits.raw", &fits);
    let run = image2disk(&server.url("fits.raw.zst"), disk.path(), &[]).await;
    assert_success(&run);
    assert_eq!(
        sha256sum(disk.path(), Some(fits.len())),
        sha256sum(&server.path("fits.raw"), None)
    );
    // No partition table on it: the re-read is refused, which is a note.
    assert!(run.logs.contains("did not re-read"), "{}", run.logs);

    let too_small = format!(
        "DEST_DISK {} is too small: image needs more than {} bytes",
        disk.device,
        4 * MIB
    );
    server.publish("big.raw", &image(5 * MIB, 22));
    // Raw with a Content-Length: refused before writing.
    let run = image2disk(&server.url("big.raw"), disk.path(), &[]).await;
    assert_failed(&run, &too_small);
    // Compressed: found out when the device is full.
    let run = image2disk(&server.url("big.raw.gz"), disk.path(), &[]).await;
    assert_failed(&run, &too_small);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writefile_onto_an_ext4_partition() {
    require_root!();
    let Some(disk) = Loop::new(16 * MIB as u64) else {
        return;
    };
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", &disk.device])
        .status()
        .unwrap();
    assert!(status.success());
    // An absolute symlink in the target filesystem must resolve inside it.
    debugfs(&disk.device, "mkdir /etc", true);
    debugfs(&disk.device, "mkdir /run", true);
    debugfs(&disk.device, "mkdir /run/bellows-test", true);
    debugfs(
        &disk.device,
        "symlink /etc/resolv.conf /run/bellows-test/resolv.conf",
        true,
    );

    let run = run(
        "quay.io/tinkerbell-actions/writefile:v1.0.0",
        &[
            ("DEST_DISK", &disk.device),
            ("FS_TYPE", "ext4"),
            ("DEST_PATH", "/etc/myconfig/foo"),
            ("CONTENTS", "hello-world\nsecond line\n"),
            ("UID", "1000"),
            ("GID", "1001"),
            ("MODE", "0640"),
            ("DIRMODE", "0750"),
        ],
    )
    .await;
    assert_success(&run);
    assert!(!mounted(&disk.device), "left mounted");
    assert_eq!(
        debugfs(&disk.device, "cat /etc/myconfig/foo", false),
        "hello-world\nsecond line\n"
    );
    let file = debugfs(&disk.device, "stat /etc/myconfig/foo", false);
    assert!(file.contains("Mode:  0640"), "{file}");
    assert!(file.contains("User:  1000   Group:  1001"), "{file}");
    let dir = debugfs(&disk.device, "stat /etc/myconfig", false);
    assert!(dir.contains("Mode:  0750"), "{dir}");
    assert!(dir.contains("User:  1000   Group:  1001"), "{dir}");

    let run = run_env(
        "bellows/writefile",
        &[
            ("DEST_DISK", &disk.device),
            ("FS_TYPE", "ext4"),
            ("DEST_PATH", "/etc/resolv.conf"),
            ("CONTENTS", "nameserver 192.0.2.53\n"),
        ],
    )
    .await;
    assert_success(&run);
    assert!(!mounted(&disk.device), "left mounted");
    assert_eq!(
        debugfs(&disk.device, "cat /run/bellows-test/resolv.conf", false),
        "nameserver 192.0.2.53\n"
    );
    assert!(!Path::new("/run/bellows-test/resolv.conf").exists());

    // Errors still unmount.
    let run = run_env(
        "bellows/writefile",
        &[
            ("DEST_DISK", &disk.device),
            ("FS_TYPE", "ext4"),
            ("DEST_PATH", "/etc/myconfig/foo/below"),
            ("CONTENTS", "x"),
        ],
    )
    .await;
    assert_failed(&run, "exists and is not a directory");
    assert!(!mounted(&disk.device), "left mounted after an error");

    // The wrong filesystem type.
    let run = run_env(
        "bellows/writefile",
        &[
            ("DEST_DISK", &disk.device),
            ("FS_TYPE", "xfs"),
            ("DEST_PATH", "/x"),
        ],
    )
    .await;
    assert_failed(
        &run,
        &format!("mounting DEST_DISK {} (xfs) failed", disk.device),
    );
}

/// An ext4 partition holding a minimal root filesystem: Debian's static
/// busybox as `/bin/sh` and friends, `/etc/marker`, and an absolute
/// `/etc/resolv.conf` symlink as systemd-resolved leaves it.
fn busybox_root_partition() -> Option<Loop> {
    if !Path::new("/bin/busybox").exists() {
        println!("SKIPPED: /bin/busybox missing (apt-get install busybox-static)");
        return None;
    }
    let disk = Loop::new(32 * MIB as u64)?;
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    for dir in ["bin", "dev", "proc", "sys", "etc", "tmp", "root"] {
        std::fs::create_dir(root.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "test", "sleep", "touch", "false", "ls"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/marker"), "target-root\n").unwrap();
    std::os::unix::fs::symlink(
        "/run/systemd/resolve/stub-resolv.conf",
        root.join("etc/resolv.conf"),
    )
    .unwrap();
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(root)
        .arg(&disk.device)
        .status()
        .unwrap();
    assert!(status.success(), "mkfs.ext4 -d");
    Some(disk)
}

/// Processes whose command line is exactly `words`.
fn processes_running(words: &str) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", "-x", words])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cexec_runs_in_a_chroot_of_the_partition_and_cleans_up() {
    require_root!();
    let Some(disk) = busybox_root_partition() else {
        return;
    };
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let first_nameserver = host_resolv
        .lines()
        .find(|l| l.starts_with("nameserver"))
        .unwrap_or("")
        .to_string();
    let run = run(
        "quay.io/tinkerbell-actions/cexec:v1.0.0",
        &[
            ("BLOCK_DEVICE", &disk.device),
            ("FS_TYPE", "ext4"),
            ("CHROOT", "y"),
            ("DEFAULT_INTERPRETER", "/bin/sh -c"),
            ("UPDATE_RESOLV_CONF", "true"),
            ("GREETING", "hello from the template"),
            (
                "CMD_LINE",
                "echo \"root says $(cat /etc/marker)\"; \
                 test -r /proc/self/status && echo proc-ok; \
                 test -c /dev/null && echo dev-ok; \
                 test -d /sys/class && echo sys-ok; \
                 echo \"$GREETING\" > /etc/from-cexec; \
                 echo \"path=$PATH home=$HOME\"; \
                 test -z \"$DOCKER_HOST$BELLOWS_URL\" && echo env-clean; \
                 cat /etc/resolv.conf; \
                 sleep 61.25 & echo started-a-leftover",
            ),
        ],
    )
    .await;
    assert_success(&run);
    for expected in [
        "root says target-root",
        "proc-ok",
        "dev-ok",
        "sys-ok",
        "path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin home=/root",
        "env-clean",
        "started-a-leftover",
    ] {
        assert!(
            run.logs.lines().any(|l| l == expected),
            "{expected:?} not in\n{}",
            run.logs
        );
    }
    if !first_nameserver.is_empty() {
        assert!(
            run.logs.lines().any(|l| l == first_nameserver),
            "the chroot did not see this system's resolv.conf:\n{}",
            run.logs
        );
    }
    // The leftover in the command's process group is gone, and with it
    // anything that kept the partition busy.
    assert_eq!(
        processes_running("sleep 61.25"),
        0,
        "leftover still running"
    );
    assert!(!mounted(&disk.device), "left mounted");
    assert!(!run.logs.contains("detached lazily"), "{}", run.logs);
    // Mount points are named after the worker's PID (this test process).
    let ours = format!("bellows-mount-{}-", std::process::id());
    assert!(
        !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(&ours),
        "a /dev, /proc, /sys or resolv.conf mount was left behind"
    );
    // What the command wrote, and the symlink put back as it was.
    assert_eq!(
        debugfs(&disk.device, "cat /etc/from-cexec", false),
        "hello from the template\n"
    );
    let link = debugfs(&disk.device, "stat /etc/resolv.conf", false);
    assert!(
        link.contains("Fast link dest: \"/run/systemd/resolve/stub-resolv.conf\""),
        "{link}"
    );
    let etc = debugfs(&disk.device, "ls /etc", false);
    assert!(!etc.contains("bellows-backup"), "{etc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cexec_failures_name_the_command_and_still_unmount() {
    require_root!();
    let Some(disk) = busybox_root_partition() else {
        return;
    };
    // Without an interpreter: `;` separates commands; the first failure ends
    // the action with its status, after the earlier commands ran.
    let result = run(
        "bellows/cexec",
        &[
            ("BLOCK_DEVICE", &disk.device),
            ("FS_TYPE", "ext4"),
            ("CHROOT", "y"),
            ("CMD_LINE", "touch /etc/first; false; touch /etc/never"),
        ],
    )
    .await;
    assert_failed(&result, "command 2/3 (false) exited with status 1");
    assert_eq!(result.result.exit_code, Some(1));
    assert!(!mounted(&disk.device), "left mounted after a failure");
    let etc = debugfs(&disk.device, "ls /etc", false);
    assert!(etc.contains("first") && !etc.contains("never"), "{etc}");

    // An interpreter the provisioned OS does not have.
    let result = run(
        "bellows/cexec",
        &[
            ("BLOCK_DEVICE", &disk.device),
            ("FS_TYPE", "ext4"),
            ("CHROOT", "y"),
            ("DEFAULT_INTERPRETER", "/bin/bash -c"),
            ("CMD_LINE", "echo unreachable"),
        ],
    )
    .await;
    assert_failed(&result, "exited with status 127");
    assert!(result.logs.contains("/bin/bash"), "{}", result.logs);
    assert!(!mounted(&disk.device));

    // No CHROOT: the in-memory OS's own tools, in the partition's directory.
    let result = run(
        "bellows/cexec",
        &[
            ("BLOCK_DEVICE", &disk.device),
            ("FS_TYPE", "ext4"),
            ("CMD_LINE", "cat etc/marker"),
        ],
    )
    .await;
    assert_success(&result);
    assert!(
        result.logs.lines().any(|l| l == "target-root"),
        "{}",
        result.logs
    );
    assert!(!mounted(&disk.device));

    // The wrong filesystem type names the device.
    let result = run(
        "bellows/cexec",
        &[
            ("BLOCK_DEVICE", &disk.device),
            ("FS_TYPE", "xfs"),
            ("CMD_LINE", "true"),
        ],
    )
    .await;
    assert_failed(
        &result,
        &format!("mounting BLOCK_DEVICE {} (xfs) failed", disk.device),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cexec_cancelled_kills_the_command_and_unmounts() {
    require_root!();
    let Some(disk) = busybox_root_partition() else {
        return;
    };
    let runtime = BuiltinRuntime::new(BuiltinOptions::default());
    let (ctx, _progress) = context();
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let spec = spec(
        "bellows/cexec",
        &[
            ("BLOCK_DEVICE", &disk.device),
            ("FS_TYPE", "ext4"),
            ("CHROOT", "y"),
            ("DEFAULT_INTERPRETER", "/bin/sh -c"),
            ("CMD_LINE", "echo waiting; sleep 62.25; echo not-reached"),
        ],
    );
    let result = tokio::time::timeout(Duration::from_secs(30), runtime.run(&spec, &ctx))
        .await
        .expect("a cancelled cexec returns within 30 s");
    assert_eq!(result.outcome, RunOutcome::Cancelled, "{}", ctx.logs.tail());
    assert!(started.elapsed() < Duration::from_secs(10));
    let logs = ctx.logs.tail();
    // Whole lines: the worker's note quotes the command line itself.
    assert!(logs.lines().any(|l| l == "waiting"), "{logs}");
    assert!(!logs.lines().any(|l| l == "not-reached"), "{logs}");
    assert_eq!(processes_running("sleep 62.25"), 0);
    assert!(!mounted(&disk.device), "left mounted after a cancel");
}

/// A tree packed by GNU tar: a file owned by 1234:4321, a 0750 directory,
/// an absolute symlink (must stay a link into the unpacked system).
fn tar_tree(dir: &Path) -> Vec<u8> {
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    std::fs::create_dir_all(root.join("etc/app")).unwrap();
    std::fs::create_dir(root.join("private")).unwrap();
    std::fs::write(root.join("etc/hostname"), "unpacked\n").unwrap();
    std::fs::write(root.join("etc/app/big"), image(3 * MIB, 31)).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("etc/hostname-link")).unwrap();
    std::os::unix::fs::chown(root.join("etc/hostname"), Some(1234), Some(4321)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("private"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let archive = dir.join("tree.tar");
    let status = Command::new("tar")
        .args(["-c", "-f"])
        .arg(&archive)
        .arg("-C")
        .arg(root)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "GNU tar -c");
    std::fs::read(&archive).unwrap()
}

async fn archive2disk(url: &str, disk: &str, extra: &[(&str, &str)]) -> Run {
    let mut env = vec![
        ("ARCHIVE_URL", url),
        ("DEST_DISK", disk),
        ("FS_TYPE", "ext4"),
        ("DEST_PATH", "/"),
    ];
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k, v));
    }
    run("quay.io/tinkerbell-actions/archive2disk:v1.0.0", &env).await
}

fn mkfs_ext4(device: &str) {
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", device])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive2disk_unpacks_every_format_onto_an_ext4_partition() {
    require_root!();
    let Some(disk) = Loop::new(32 * MIB as u64) else {
        return;
    };
    let server = Server::start().await;
    let work = tempfile::tempdir().unwrap();
    let tar = tar_tree(work.path());
    server.publish("tree.tar", &tar);
    let big = image(3 * MIB, 31);
    for (name, archive_type, dest) in [
        ("tree.tar", "tar", "/"),
        ("tree.tar.gz", "targz", "/"),
        ("tree.tar.xz", "tarxz", "/srv/www"),
        ("tree.tar.zst", "", "/"),
    ] {
        mkfs_ext4(&disk.device);
        let sum = format!("sha256:{}", sha256sum(&server.path(name), None));
        let run = archive2disk(
            &server.url(name),
            &disk.device,
            &[
                ("ARCHIVE_TYPE", archive_type),
                ("TARFILE_CHECKSUM", &sum),
                ("DEST_PATH", dest),
            ],
        )
        .await;
        assert_success(&run);
        assert!(run.result.message.contains("sha256 verified"), "{name}");
        assert!(!mounted(&disk.device), "{name}: left mounted");
        let at = |p: &str| format!("{}/{p}", dest.trim_end_matches('/'));
        assert_eq!(
            debugfs(&disk.device, &format!("cat {}", at("etc/hostname")), false),
            "unpacked\n",
            "{name}"
        );
        let owner = debugfs(&disk.device, &format!("stat {}", at("etc/hostname")), false);
        assert!(
            owner.contains("User:  1234   Group:  4321"),
            "{name}: {owner}"
        );
        let link = debugfs(
            &disk.device,
            &format!("stat {}", at("etc/hostname-link")),
            false,
        );
        assert!(
            link.contains("Fast link dest: \"/etc/hostname\""),
            "{name}: {link}"
        );
        let private = debugfs(&disk.device, &format!("stat {}", at("private")), false);
        assert!(private.contains("Mode:  0750"), "{name}: {private}");
        let copy = work.path().join("big.out");
        debugfs(
            &disk.device,
            &format!("dump {} {}", at("etc/app/big"), copy.display()),
            false,
        );
        assert_eq!(std::fs::read(&copy).unwrap(), big, "{name}: big file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive2disk_failures_name_the_cause_and_unmount() {
    require_root!();
    let Some(disk) = Loop::new(16 * MIB as u64) else {
        return;
    };
    mkfs_ext4(&disk.device);
    let server = Server::start().await;
    let work = tempfile::tempdir().unwrap();
    server.publish("tree.tar", &tar_tree(work.path()));

    let wrong = format!("sha512:{}", "0".repeat(128));
    let run = archive2disk(
        &server.url("tree.tar.gz"),
        &disk.device,
        &[("TARFILE_CHECKSUM", &wrong)],
    )
    .await;
    assert_failed(&run, "TARFILE_CHECKSUM mismatch");
    assert!(!mounted(&disk.device));

    let run = archive2disk(&server.url("missing.tar"), &disk.device, &[]).await;
    assert_failed(&run, "HTTP 404");
    assert!(!mounted(&disk.device));

    // Not a tar archive: tar itself says so.
    server.publish("noise.tar", &image(64 << 10, 32));
    let run = archive2disk(&server.url("noise.tar.gz"), &disk.device, &[]).await;
    assert_failed(&run, "tar -x exit status");
    assert!(!mounted(&disk.device));

    // A symlink on the way to DEST_PATH could lead off the partition.
    debugfs(&disk.device, "symlink /escape /tmp", true);
    let run = archive2disk(
        &server.url("tree.tar"),
        &disk.device,
        &[("DEST_PATH", "/escape/inside")],
    )
    .await;
    assert_failed(&run, "DEST_PATH: /escape is a symlink");
    assert!(!Path::new("/tmp/inside").exists());
    assert!(!mounted(&disk.device));

    // A download cut short is reported as such.
    let tar = std::fs::read(server.path("tree.tar")).unwrap();
    let url = raw_server(Misbehaviour::Truncate {
        declared: tar.len(),
        data: tar[..tar.len() / 2].to_vec(),
    })
    .await;
    let run = archive2disk(&url, &disk.device, &[]).await;
    assert_failed(&run, "downloading");
    assert!(!mounted(&disk.device));
}
