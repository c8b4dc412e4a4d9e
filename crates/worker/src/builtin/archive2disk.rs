//! `archive2disk`: unpack a root filesystem (or any tree) from a tar archive
//! served over HTTP(S) onto a partition's filesystem.
//!
//! Environment, as Tinkerbell's `archive2disk` action reads it:
//!
//! - `ARCHIVE_URL`: the archive; required.
//! - `ARCHIVE_TYPE`: `tar` or `targz` (also `tarxz`, `tarzst`); optional:
//!   the archive's first bytes decide how it is decompressed (gzip, xz or
//!   zstd, else plain tar), and a type that disagrees is noted in the log.
//! - `TARFILE_CHECKSUM`: `sha256:<hex>` or `sha512:<hex>` of the file as
//!   downloaded; checked once it is unpacked (as Tinkerbell does), and a
//!   mismatch fails the action. Optional;
//!   `INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION` is accepted and changes
//!   nothing.
//! - `DEST_DISK`, `FS_TYPE`: the partition to mount and its filesystem;
//!   required.
//! - `DEST_PATH`: where in that filesystem to unpack (`/` for a root
//!   filesystem); required. Missing directories are made; a symlink on the
//!   way is refused (it could lead out of the partition).
//! - `HTTP_CLIENT_TIMEOUT_MINUTES`: accepted; the action's own `timeout`
//!   bounds the download instead.
//!
//! The download streams through the decompressor into `tar -x` (GNU tar or
//! busybox's, whichever the system has) with `--numeric-owner`, so files
//! get the owners the archive records, not whatever those names mean in the
//! in-memory OS. Nothing is stored in memory or on another disk on the way.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest as _, Sha256, Sha512};
use tokio::sync::mpsc;

use super::error_chain;
use super::image2disk::human;
use super::writefile::{Mount, MountError, relative_to_root};
use crate::runtime::{RunContext, RunResult, Stream};
use bellows_compression::{self as compression, Codec};

/// Downloaded chunks queued for the unpacker.
const QUEUE: usize = 64;
/// Progress reports at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A digest to check the download against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// SHA-256, lowercase hex.
    Sha256(String),
    /// SHA-512, lowercase hex.
    Sha512(String),
}

/// The action's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Where the archive is.
    pub url: reqwest::Url,
    /// The compression `ARCHIVE_TYPE` names, if any (`Raw` for `tar`).
    pub declared: Option<Codec>,
    /// Expected digest of the download.
    pub checksum: Option<Checksum>,
    /// Partition to mount.
    pub device: String,
    /// Its filesystem type.
    pub fs_type: String,
    /// `DEST_PATH` relative to the partition's root (empty for the root).
    pub dest: PathBuf,
}

impl Params {
    /// Reads the settings; errors name the variable at fault.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Params, String> {
        let get = |key: &str| env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let required = |key: &str| get(key).ok_or_else(|| format!("{key} is required"));
        let raw_url = required("ARCHIVE_URL")?;
        let url = reqwest::Url::parse(raw_url)
            .map_err(|e| format!("ARCHIVE_URL {raw_url:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("ARCHIVE_URL {raw_url:?} must be http or https"));
        }
        let declared = match get("ARCHIVE_TYPE").map(str::to_ascii_lowercase).as_deref() {
            None => None,
            Some("tar") => Some(Codec::Raw),
            Some("targz" | "tgz" | "tar.gz") => Some(Codec::Gzip),
            Some("tarxz" | "txz" | "tar.xz") => Some(Codec::Xz),
            Some("tarzst" | "tarzstd" | "tzst" | "tar.zst") => Some(Codec::Zstd),
            Some(other) => {
                return Err(format!(
                    "ARCHIVE_TYPE {other:?} is not one of tar, targz, tarxz, tarzst"
                ));
            }
        };
        let checksum = get("TARFILE_CHECKSUM").map(parse_checksum).transpose()?;
        let device = required("DEST_DISK")?.to_string();
        let fs_type = required("FS_TYPE")?.to_string();
        let dest = relative_to_root("DEST_PATH", required("DEST_PATH")?)?;
        Ok(Params {
            url,
            declared,
            checksum,
            device,
            fs_type,
            dest,
        })
    }
}

/// `TARFILE_CHECKSUM`: `algorithm:hex`.
fn parse_checksum(value: &str) -> Result<Checksum, String> {
    let (algorithm, digest) = value
        .split_once(':')
        .ok_or_else(|| format!("TARFILE_CHECKSUM {value:?} must be written sha256:<hex>"))?;
    let digest = digest.trim().to_ascii_lowercase();
    let (checksum, len) = match algorithm.trim().to_ascii_lowercase().as_str() {
        "sha256" => (Checksum::Sha256(digest.clone()), 64),
        "sha512" => (Checksum::Sha512(digest.clone()), 128),
        other => {
            return Err(format!(
                "TARFILE_CHECKSUM algorithm {other:?} is not supported (sha256 or sha512)"
            ));
        }
    };
    if digest.len() != len || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "TARFILE_CHECKSUM's {algorithm} digest must be {len} hexadecimal digits"
        ));
    }
    Ok(checksum)
}

/// Hashes the download as it arrives.
enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    fn for_checksum(checksum: &Checksum) -> Hasher {
        match checksum {
            Checksum::Sha256(_) => Hasher::Sha256(Sha256::new()),
            Checksum::Sha512(_) => Hasher::Sha512(Sha512::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Runs the action; `client` is the runtime's HTTP client, or why there is
/// none.
pub(crate) async fn run(
    client: Result<&reqwest::Client, String>,
    env: &BTreeMap<String, String>,
    ctx: &RunContext,
) -> RunResult {
    let params = match Params::from_env(env) {
        Ok(params) => params,
        Err(message) => return RunResult::failed(message),
    };
    let client = match client {
        Ok(client) => client,
        Err(e) => return RunResult::failed(e),
    };
    if ctx.cancel.is_cancelled() {
        return super::cancelled("archive2disk cancelled before it started");
    }
    let setup = params.clone();
    let (mount, dir) = match tokio::task::spawn_blocking(move || prepare(&setup)).await {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(message)) => return fail(ctx, message),
        Err(e) => return fail(ctx, format!("set-up stopped: {e}")),
    };
    let result = unpack(client, &params, &dir, ctx).await;
    let unmounted = tokio::task::spawn_blocking(move || mount.unmount()).await;
    let unmount_problem = match unmounted {
        Ok(Ok(())) => None,
        Ok(Err(MountError::Unmount { dir, errno })) => Some(format!(
            "DEST_DISK {} could not be unmounted from {dir}: {errno}",
            params.device
        )),
        Ok(Err(_)) => None,
        Err(e) => Some(format!("unmounting stopped: {e}")),
    };
    match (result, unmount_problem) {
        (Ok(message), None) => {
            ctx.logs.note(format!("archive2disk: {message}"));
            RunResult::success(message)
        }
        (Ok(_), Some(problem)) => fail(ctx, problem),
        (Err(Outcome::Cancelled(message)), _) => {
            ctx.logs.note(format!("archive2disk: {message}"));
            super::cancelled(message)
        }
        (Err(Outcome::Failed(message)), _) => fail(ctx, message),
    }
}

fn fail(ctx: &RunContext, message: String) -> RunResult {
    ctx.logs.note(format!("archive2disk failed: {message}"));
    RunResult::failed(message)
}

/// How an unpack that did not succeed ended.
enum Outcome {
    Cancelled(String),
    Failed(String),
}

/// Mounts `DEST_DISK` and makes `DEST_PATH` in it.
fn prepare(params: &Params) -> Result<(Mount, PathBuf), String> {
    let mount = Mount::new(
        &params.device,
        &params.fs_type,
        nix::mount::MsFlags::empty(),
    )
    .map_err(|e| match e {
        MountError::MountPoint(e) => format!("cannot create a mount point: {e}"),
        MountError::Mount(errno) => format!(
            "mounting DEST_DISK {} ({}) failed: {errno}",
            params.device, params.fs_type
        ),
        MountError::Unmount { dir, errno } => format!("unmounting {dir}: {errno}"),
    })?;
    let mut dir = mount.dir().to_path_buf();
    let mut shown = PathBuf::from("/");
    for part in params.dest.components() {
        dir.push(part);
        shown.push(part);
        match dir.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "DEST_PATH: {} is a symlink on DEST_DISK; unpacking through it could leave the partition",
                    shown.display()
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "DEST_PATH: {} exists on DEST_DISK and is not a directory",
                    shown.display()
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(&dir)
                .map_err(|e| format!("DEST_PATH: making {}: {e}", shown.display()))?,
            Err(e) => return Err(format!("DEST_PATH: {}: {e}", shown.display())),
        }
    }
    Ok((mount, dir))
}

/// Downloads the archive and unpacks it into `dir`; the success message.
async fn unpack(
    client: &reqwest::Client,
    params: &Params,
    dir: &Path,
    ctx: &RunContext,
) -> Result<String, Outcome> {
    let cancel = &ctx.cancel;
    let url = params.url.to_string();
    ctx.logs.note(format!(
        "archive2disk: unpacking {url} into {} on {}",
        Path::new("/").join(&params.dest).display(),
        params.device
    ));
    let failed = |what: String| Outcome::Failed(what);
    let mut response = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(Outcome::Cancelled("archive2disk cancelled".into())),
        r = client.get(params.url.clone()).send() => r
            .map_err(|e| failed(format!("fetching {url}: {}", error_chain(&e))))?,
    };
    if !response.status().is_success() {
        return Err(failed(format!(
            "fetching {url}: HTTP {}",
            response.status()
        )));
    }
    let total = response.content_length();
    let mut hasher = params.checksum.as_ref().map(Hasher::for_checksum);

    // The first chunk decides the decompressor.
    let first = next_chunk(&mut response, ctx, &url, 0).await?;
    let Some(first) = first else {
        return Err(failed(format!("{url} is empty")));
    };
    let by_magic = compression::codec_from_magic(&first);
    let format = match by_magic {
        Some(Codec::Bzip2) => {
            return Err(failed(
                "bzip2 archives are not supported by the built-in archive2disk; use gzip, xz or zstd"
                    .into(),
            ));
        }
        Some(format) => format,
        None => Codec::Raw,
    };
    if let Some(declared) = params.declared
        && declared != format
    {
        ctx.logs.note(format!(
            "ARCHIVE_TYPE says {} but the data is {}: unpacking it as {}",
            archive_name(declared),
            archive_name(format),
            archive_name(format)
        ));
    }

    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let tar_dir = dir.to_path_buf();
    let logs = ctx.logs.clone();
    let unpacker = tokio::task::spawn_blocking(move || untar(format, rx, &tar_dir, &logs));

    let started = Instant::now();
    let mut downloaded = 0u64;
    let mut last_report = Instant::now();
    let mut chunk = Some(first);
    let download: Result<(), Outcome> = async {
        while let Some(bytes) = chunk.take() {
            downloaded += bytes.len() as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&bytes);
            }
            let sent = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Outcome::Cancelled("archive2disk cancelled".into())),
                sent = tx.send(bytes) => sent.is_ok(),
            };
            if !sent {
                // The unpacker stopped; its error says why.
                return Ok(());
            }
            if last_report.elapsed() >= PROGRESS_EVERY {
                ctx.logs.progress(progress(downloaded, total, started.elapsed()));
                last_report = Instant::now();
            }
            chunk = next_chunk(&mut response, ctx, &url, downloaded).await?;
        }
        Ok(())
    }
    .await;
    drop(tx);
    let unpacked = unpacker
        .await
        .map_err(|e| failed(format!("unpacking stopped: {e}")))?;
    if cancel.is_cancelled() {
        return Err(Outcome::Cancelled(format!(
            "archive2disk cancelled after {} downloaded",
            human(downloaded)
        )));
    }
    download?;
    unpacked.map_err(failed)?;
    ctx.logs
        .progress(progress(downloaded, total, started.elapsed()));
    let mut message = format!(
        "unpacked {} ({}, {}) into {} on {} in {:.1} s",
        url,
        human(downloaded),
        archive_name(format),
        Path::new("/").join(&params.dest).display(),
        params.device,
        started.elapsed().as_secs_f64()
    );
    if let (Some(expected), Some(hasher)) = (&params.checksum, hasher) {
        let actual = hasher.hex();
        let (name, wanted) = match expected {
            Checksum::Sha256(hex) => ("sha256", hex),
            Checksum::Sha512(hex) => ("sha512", hex),
        };
        if *wanted != actual {
            return Err(failed(format!(
                "TARFILE_CHECKSUM mismatch: {url} is {name}:{actual}, expected {name}:{wanted} \
                 (its files are unpacked on {}; do not boot them)",
                params.device
            )));
        }
        message.push_str(&format!(", {name} verified"));
    }
    Ok(message)
}

/// What `ARCHIVE_TYPE` would call `format`.
fn archive_name(format: Codec) -> &'static str {
    match format {
        Codec::Raw => "tar",
        Codec::Gzip => "targz",
        Codec::Xz => "tarxz",
        Codec::Zstd => "tarzst",
        Codec::Bzip2 => "tarbz2",
    }
}

fn progress(downloaded: u64, total: Option<u64>, elapsed: Duration) -> String {
    let rate = downloaded as f64 / elapsed.as_secs_f64().max(0.001);
    match total {
        Some(total) if total > 0 => format!(
            "{} of {} downloaded and unpacked ({}%), {}/s",
            human(downloaded),
            human(total),
            downloaded.saturating_mul(100) / total,
            human(rate as u64)
        ),
        _ => format!(
            "{} downloaded and unpacked, {}/s",
            human(downloaded),
            human(rate as u64)
        ),
    }
}

/// The next piece of the body, or `None` at its end.
async fn next_chunk(
    response: &mut reqwest::Response,
    ctx: &RunContext,
    url: &str,
    downloaded: u64,
) -> Result<Option<Bytes>, Outcome> {
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => Err(Outcome::Cancelled("archive2disk cancelled".into())),
        chunk = response.chunk() => chunk.map_err(|e| Outcome::Failed(format!(
            "downloading {url} failed after {}: {}",
            human(downloaded),
            error_chain(&e)
        ))),
    }
}

/// Decompresses the queued download into `tar -x` in `dir` (on a blocking
/// thread); tar's complaints go to the log.
fn untar(
    format: Codec,
    rx: mpsc::Receiver<Bytes>,
    dir: &Path,
    logs: &crate::runtime::LogSink,
) -> Result<(), String> {
    let mut child = Command::new("tar")
        .args(["-x", "-f", "-", "--numeric-owner", "-C"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let stderr = child.stderr.take().map(|err| {
        let logs = logs.clone();
        std::thread::spawn(move || {
            let mut last = Vec::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                logs.line(Stream::Stderr, &line);
                last.push(line);
                if last.len() > 3 {
                    last.remove(0);
                }
            }
            last.join("; ")
        })
    });
    let fed = match child.stdin.take() {
        Some(mut stdin) => {
            let reader = QueueReader {
                rx,
                current: Bytes::new(),
            };
            let fed = compression::decode(format, reader, &mut |from| {
                io::copy(from, &mut stdin).map(drop)
            });
            let _ = stdin.flush();
            fed
            // stdin closes here: tar sees the end of the archive.
        }
        None => Err(io::Error::other("tar has no stdin")),
    };
    let status = child.wait().map_err(|e| format!("waiting for tar: {e}"))?;
    let said = stderr
        .and_then(|t| t.join().ok())
        .filter(|s| !s.is_empty())
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    if !status.success() {
        return Err(format!("tar -x {status}{said}"));
    }
    fed.map_err(|e| format!("the {} stream is corrupt: {e}", archive_name(format)))
}

/// The queued download as a blocking [`Read`].
struct QueueReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for QueueReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if buf.is_empty() {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(bytes) => self.current = bytes,
                // Sender dropped: the end of the body, or a stopped download
                // (then the download side reports the error first).
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::builtin::test_env as env;

    const BASE: [(&str, &str); 5] = [
        ("ARCHIVE_URL", "http://10.0.0.1/ubuntu.tar.gz"),
        ("ARCHIVE_TYPE", "targz"),
        ("DEST_DISK", "/dev/sda3"),
        ("FS_TYPE", "ext4"),
        ("DEST_PATH", "/"),
    ];

    #[test]
    fn settings_as_tinkerbell_spells_them() {
        let p = Params::from_env(&env(&BASE)).unwrap();
        assert_eq!(p.declared, Some(Codec::Gzip));
        assert_eq!(p.dest, PathBuf::new());
        assert_eq!(p.checksum, None);
        let mut pairs = BASE.to_vec();
        let sha512 = "A".repeat(128);
        let value = format!("sha512:{sha512}");
        pairs.push(("TARFILE_CHECKSUM", &value));
        pairs[4] = ("DEST_PATH", "/srv/./www");
        let p = Params::from_env(&env(&pairs)).unwrap();
        assert_eq!(p.checksum, Some(Checksum::Sha512("a".repeat(128))));
        assert_eq!(p.dest, PathBuf::from("srv/www"));
    }

    #[test]
    fn bad_settings_are_named() {
        for (key, value, needle) in [
            ("ARCHIVE_URL", "", "ARCHIVE_URL is required"),
            ("ARCHIVE_URL", "ftp://x/y.tar", "must be http or https"),
            ("ARCHIVE_TYPE", "zip", "ARCHIVE_TYPE \"zip\""),
            ("DEST_PATH", "srv", "must be an absolute path"),
            ("DEST_PATH", "/srv/../..", "must not contain '..'"),
            ("TARFILE_CHECKSUM", "md5:abc", "\"md5\" is not supported"),
            ("TARFILE_CHECKSUM", "sha256:abc", "64 hexadecimal digits"),
            ("TARFILE_CHECKSUM", "abc", "sha256:<hex>"),
            ("FS_TYPE", " ", "FS_TYPE is required"),
        ] {
            let mut pairs: Vec<_> = BASE.iter().copied().filter(|(k, _)| *k != key).collect();
            pairs.push((key, value));
            let e = Params::from_env(&env(&pairs)).unwrap_err();
            assert!(e.contains(needle), "{key}={value}: {e}");
        }
    }
}
