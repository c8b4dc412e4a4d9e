//! `image2disk`: stream a raw disk image from an HTTP(S) server onto a disk.
//!
//! Environment, as Tinkerbell's `image2disk` action reads it:
//!
//! - `IMG_URL`: `http://` or `https://` URL of the image. Redirects are
//!   followed.
//! - `DEST_DISK`: the block device to write (`/dev/sda`, `/dev/nvme0n1`), or
//!   a regular file path, which is created or truncated (tests, images).
//!   A missing path under `/dev/` is an error, never a new file.
//! - `COMPRESSED`: Go's boolean spellings (`true`, `1`, `t`, `false`, …);
//!   unset or unparsable means false, as in Tinkerbell. When true the
//!   format comes from the URL's extension (`.gz`, `.xz`, `.zst`/`.zs`) and
//!   from the data's magic bytes, the bytes winning when they disagree.
//!   Unlike Tinkerbell, gzip, xz and zstd data is recognised by its magic
//!   bytes and decompressed **even when `COMPRESSED` is false** (a raw disk
//!   image starts with boot code or zeros, never with those numbers), with a
//!   note in the log. bzip2 is recognised and refused.
//!
//! Bellows' extras:
//!
//! - `CHECKSUM=sha256:<hex>` (or `IMG_SHA256=<hex>`): SHA-256 of the
//!   *decompressed* image, computed while writing and compared at the end;
//!   a mismatch fails the action naming both digests.
//!
//! Tinkerbell's `RETRY_ENABLED`/`RETRY_DURATION_MINUTES` are not read (the
//! action's `retries` in the template do that job), nor
//! `PROGRESS_INTERVAL_SECONDS`/`TEXT_LOGGING` (progress goes to the worker's
//! progress channel about twice a second).
//!
//! The body streams through a bounded queue into a blocking thread that
//! decompresses and writes in 4 MiB chunks, so memory stays bounded
//! whatever the image's size. At the end the destination is fsynced and, for
//! a block device, the kernel is asked to re-read its partition table
//! (`BLKRRPART`; failure is only a note, e.g. for a partition).
//!
//! Why one file of ~870 lines: one action, from URL to re-read partition
//! table, as a pipeline whose stages share the progress and error state;
//! the codecs are in `bellows-compression`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::choose_codec::{self, CodecError};
use super::error_chain;
use crate::runtime::{RunContext, RunResult};
use bellows_compression::{self as compression, Codec};

/// Size of the writes to the destination.
const CHUNK: usize = 4 << 20;
/// Least time between two progress updates.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// HTTP chunks queued between the download and the writer.
const QUEUE: usize = 32;

/// Why an image could not be written. Each message names its cause for the
/// operator; the runtime turns it into a failed result.
#[derive(Debug, thiserror::Error)]
pub enum Image2DiskError {
    /// `IMG_URL` is missing.
    #[error("IMG_URL is not set")]
    MissingUrl,
    /// `IMG_URL` is no http(s) URL.
    #[error("IMG_URL {0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    /// `DEST_DISK` is missing.
    #[error("DEST_DISK is not set")]
    MissingDest,
    /// `CHECKSUM`/`IMG_SHA256` cannot be read.
    #[error("{0}")]
    BadChecksum(String),
    /// The destination device does not exist.
    #[error("DEST_DISK {0} does not exist")]
    DestMissing(String),
    /// The destination is a directory, character device, …
    #[error("DEST_DISK {0} is neither a block device nor a regular file")]
    DestKind(String),
    /// The destination could not be opened or created.
    #[error("DEST_DISK {path} cannot be opened for writing: {source}")]
    DestOpen {
        /// The path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// No HTTP client (TLS setup failed).
    #[error("HTTP client setup failed: {0}")]
    Client(String),
    /// The request failed before any response.
    #[error("could not fetch image URL {url}: {detail}")]
    Fetch {
        /// The URL (password hidden).
        url: String,
        /// Why.
        detail: String,
    },
    /// The server answered with an error status.
    #[error("image URL {url} returned {status}")]
    Status {
        /// The URL (password hidden).
        url: String,
        /// Status code and reason, e.g. "404 Not Found".
        status: String,
    },
    /// The server sent no bytes: surely not the image meant.
    #[error("image URL {0} returned an empty body")]
    Empty(String),
    /// The body broke off.
    #[error("download of {url} failed after {bytes} bytes: {detail}")]
    Download {
        /// The URL (password hidden).
        url: String,
        /// Bytes received before the failure.
        bytes: u64,
        /// Why.
        detail: String,
    },
    /// No decoder fits.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The compressed data does not decode.
    #[error("{format} data from {url} is corrupt or truncated: {detail}")]
    Corrupt {
        /// The format being decoded.
        format: Codec,
        /// The URL (password hidden).
        url: String,
        /// The decoder's complaint.
        detail: String,
    },
    /// The image does not fit on the block device.
    #[error("DEST_DISK {path} is too small: image needs more than {disk_bytes} bytes")]
    TooSmall {
        /// The device.
        path: String,
        /// The device's size.
        disk_bytes: u64,
    },
    /// The filesystem holding a file destination is full.
    #[error("no space left for DEST_DISK {path} after {bytes} bytes")]
    NoSpace {
        /// The file.
        path: String,
        /// Bytes written before.
        bytes: u64,
    },
    /// Writing failed for another reason.
    #[error("writing DEST_DISK {path} failed after {bytes} bytes: {source}")]
    Write {
        /// The destination.
        path: String,
        /// Bytes written before.
        bytes: u64,
        /// Why.
        source: io::Error,
    },
    /// fsync failed: the data may not be on the disk.
    #[error("flushing DEST_DISK {path} to stable storage failed: {source}")]
    Sync {
        /// The destination.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The written image's digest differs from `CHECKSUM`.
    #[error(
        "image written to {path} does not match CHECKSUM: expected sha256:{expected}, actual sha256:{actual}"
    )]
    Mismatch {
        /// The destination.
        path: String,
        /// From the environment.
        expected: String,
        /// Of the bytes written.
        actual: String,
    },
    /// `ctx.cancel` fired.
    #[error("cancelled after writing {bytes} bytes")]
    Cancelled {
        /// Bytes written before.
        bytes: u64,
    },
    /// A blocking task died (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The action's settings, read from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Where the image comes from.
    pub url: reqwest::Url,
    /// Where it goes.
    pub dest: PathBuf,
    /// `COMPRESSED` as Tinkerbell reads it.
    pub compressed: bool,
    /// Expected SHA-256 of the decompressed image, lowercase hex.
    pub sha256: Option<String>,
    /// Remarks about the settings, for the log.
    pub notes: Vec<String>,
}

impl Params {
    /// Reads and checks the environment.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Params, Image2DiskError> {
        let get = |key: &str| env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let raw_url = get("IMG_URL").ok_or(Image2DiskError::MissingUrl)?;
        let url = reqwest::Url::parse(raw_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| Image2DiskError::BadUrl(raw_url.to_string()))?;
        let dest = PathBuf::from(get("DEST_DISK").ok_or(Image2DiskError::MissingDest)?);
        let mut notes = Vec::new();
        let compressed = match get("COMPRESSED") {
            None => false,
            Some(value) => parse_go_bool(value).unwrap_or_else(|| {
                notes.push(format!(
                    "COMPRESSED={value:?} is not a boolean; taking it as false, as Tinkerbell does"
                ));
                false
            }),
        };
        let sha256 = parse_checksum(get("CHECKSUM"), get("IMG_SHA256"))
            .map_err(Image2DiskError::BadChecksum)?;
        Ok(Params {
            url,
            dest,
            compressed,
            sha256,
            notes,
        })
    }
}

/// Go's `strconv.ParseBool`, which Tinkerbell's action uses.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The expected SHA-256 (lowercase hex) from `CHECKSUM=sha256:<hex>` and/or
/// `IMG_SHA256=<hex>`; both given must agree.
pub fn parse_checksum(
    checksum: Option<&str>,
    img_sha256: Option<&str>,
) -> Result<Option<String>, String> {
    let hex = |value: &str, what: &str| -> Result<String, String> {
        let value = value.trim().to_ascii_lowercase();
        if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(value)
        } else {
            Err(format!("{what} must be 64 hexadecimal digits (a SHA-256)"))
        }
    };
    let from_checksum = match checksum {
        None => None,
        Some(value) => {
            let (algorithm, digest) = value
                .split_once(':')
                .ok_or_else(|| format!("CHECKSUM {value:?} must be written sha256:<hex>"))?;
            if !algorithm.trim().eq_ignore_ascii_case("sha256") {
                return Err(format!(
                    "CHECKSUM algorithm {algorithm:?} is not supported (only sha256)"
                ));
            }
            Some(hex(digest, "CHECKSUM's digest")?)
        }
    };
    let from_img = img_sha256.map(|v| hex(v, "IMG_SHA256")).transpose()?;
    match (from_checksum, from_img) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "CHECKSUM (sha256:{a}) and IMG_SHA256 ({b}) disagree"
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// Bytes in binary units, short: "512 B", "40 MiB", "1.5 GiB".
pub fn human(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match bytes {
        b if b < KIB => format!("{b} B"),
        b if b < MIB => format!("{} KiB", b / KIB),
        b if b < GIB => format!("{} MiB", b / MIB),
        b => format!("{:.1} GiB", b as f64 / GIB as f64),
    }
}

/// The progress line: "written 40 MiB of 100 MiB (40%), 12.0 MiB/s" for raw
/// images; for compressed ones the percentage is of the download, whose size
/// is the only one known.
pub fn progress_text(
    written: u64,
    downloaded: u64,
    total: Option<u64>,
    raw: bool,
    elapsed: Duration,
) -> String {
    let rate = written as f64 / elapsed.as_secs_f64().max(0.001) / (1u64 << 20) as f64;
    let percent = |done: u64, total: u64| {
        if total == 0 {
            100
        } else {
            (done.min(total) as u128 * 100 / total as u128) as u64
        }
    };
    match (raw, total) {
        (true, Some(total)) => format!(
            "written {} of {} ({}%), {rate:.1} MiB/s",
            human(written),
            human(total),
            percent(written, total)
        ),
        (false, Some(total)) => format!(
            "written {}, downloaded {} of {} ({}%), {rate:.1} MiB/s",
            human(written),
            human(downloaded),
            human(total),
            percent(downloaded, total)
        ),
        (_, None) => format!("written {}, {rate:.1} MiB/s", human(written)),
    }
}

/// The URL for messages, without its password.
fn shown(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("****"));
    }
    url.to_string()
}

/// Runs the action; `client` is the runtime's HTTP client, or why there is
/// none.
pub(crate) async fn run(
    client: Result<&reqwest::Client, String>,
    env: &BTreeMap<String, String>,
    ctx: &RunContext,
) -> RunResult {
    let result = match Params::from_env(env) {
        Ok(params) => match client {
            Ok(client) => write_image(client, &params, ctx).await,
            Err(e) => Err(Image2DiskError::Client(e)),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(message) => {
            ctx.logs.note(format!("image2disk: {message}"));
            RunResult::success(message)
        }
        Err(Image2DiskError::Cancelled { bytes }) => {
            let message = format!("image2disk cancelled after writing {}", human(bytes));
            ctx.logs.note(&*message);
            super::cancelled(message)
        }
        Err(e) => {
            let message = e.to_string();
            ctx.logs.note(format!("image2disk failed: {message}"));
            RunResult::failed(message)
        }
    }
}

/// Downloads, decompresses and writes; returns the success message.
async fn write_image(
    client: &reqwest::Client,
    params: &Params,
    ctx: &RunContext,
) -> Result<String, Image2DiskError> {
    let url = shown(&params.url);
    for note in &params.notes {
        ctx.logs.note(note.as_str());
    }
    ctx.logs.note(format!(
        "image2disk: writing {url} to {}",
        params.dest.display()
    ));
    let dest = open(&params.dest).await?;
    let request = client.get(params.url.clone()).send();
    let response = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => return Err(Image2DiskError::Cancelled { bytes: 0 }),
        response = request => response.map_err(|e| Image2DiskError::Fetch {
            url: url.clone(),
            detail: error_chain(&e),
        })?,
    };
    let status = response.status();
    if !status.is_success() {
        return Err(Image2DiskError::Status {
            url,
            status: status.to_string(),
        });
    }
    let source = Source {
        name: url,
        extension: compression::codec_from_extension(params.url.path()),
        compressed: params.compressed,
        sha256: params.sha256.clone(),
        download_sha256: None,
    };
    write_stream(response, source, dest, &params.dest, ctx).await
}

/// Opens the destination (a block device or a regular file).
pub(crate) async fn open(path: &Path) -> Result<Destination, Image2DiskError> {
    let dest_path = path.to_path_buf();
    tokio::task::spawn_blocking(move || open_destination(&dest_path))
        .await
        .map_err(|e| Image2DiskError::Internal(e.to_string()))?
}

/// Where a body comes from, and what to check it against.
pub(crate) struct Source {
    /// For messages (a URL without its password, an image reference).
    pub name: String,
    /// The codec its name suggests.
    pub extension: Option<Codec>,
    /// `COMPRESSED` as Tinkerbell reads it.
    pub compressed: bool,
    /// Expected SHA-256 of the decompressed bytes, lowercase hex.
    pub sha256: Option<String>,
    /// Expected SHA-256 of the bytes as downloaded, lowercase hex (a
    /// registry blob's digest).
    pub download_sha256: Option<String>,
}

/// Decompresses `response`'s body as it arrives and writes it to `dest`;
/// returns the success message.
pub(crate) async fn write_stream(
    mut response: reqwest::Response,
    source: Source,
    dest: Destination,
    dest_path: &Path,
    ctx: &RunContext,
) -> Result<String, Image2DiskError> {
    let logs = &ctx.logs;
    let cancel = &ctx.cancel;
    let url = source.name.clone();
    let dest_name = dest_path.display().to_string();
    let total = response.content_length();

    // The first bytes decide the decoder.
    let mut pending = Vec::new();
    let mut head = Vec::with_capacity(compression::HEAD_BYTES);
    let mut downloaded = 0u64;
    let mut body_done = false;
    while head.len() < compression::HEAD_BYTES {
        match next_chunk(&mut response, cancel, &url, downloaded).await? {
            Some(chunk) => {
                downloaded += chunk.len() as u64;
                let take = chunk.len().min(compression::HEAD_BYTES - head.len());
                head.extend_from_slice(&chunk[..take]);
                pending.push(chunk);
            }
            None => {
                body_done = true;
                break;
            }
        }
    }
    if head.is_empty() {
        return Err(Image2DiskError::Empty(url));
    }
    let (format, note) = choose_codec::choose(
        source.compressed,
        source.extension,
        compression::codec_from_magic(&head),
    )?;
    if let Some(note) = note {
        logs.note(note);
    }
    if let (Codec::Raw, DestKind::Block { size }, Some(total)) = (format, &dest.kind, total)
        && total > *size
    {
        return Err(Image2DiskError::TooSmall {
            path: dest_name,
            disk_bytes: *size,
        });
    }
    logs.note(format!(
        "{format} image, {} to download",
        total.map_or_else(|| "size unknown".to_string(), human)
    ));

    let started = Instant::now();
    let written = Arc::new(AtomicU64::new(0));
    let writer = DiskWriter::new(
        dest,
        source.sha256.is_some(),
        written.clone(),
        cancel.clone(),
    );
    let (tx, rx) = mpsc::channel(QUEUE);
    let pipeline_url = url.clone();
    let pipeline = tokio::task::spawn_blocking(move || pipeline(format, rx, writer, &pipeline_url));

    let raw = format == Codec::Raw;
    let report = |downloaded: u64| {
        logs.progress(progress_text(
            written.load(Ordering::Relaxed),
            downloaded,
            total,
            raw,
            started.elapsed(),
        ));
    };
    let mut download_hash = source.download_sha256.as_ref().map(|_| Sha256::new());
    let download = async {
        let mut last_report = Instant::now();
        for chunk in pending {
            if let Some(h) = download_hash.as_mut() {
                h.update(&chunk);
            }
            if !send(&tx, Piece::Data(chunk), cancel, &written).await? {
                return Ok(());
            }
        }
        if !body_done {
            while let Some(chunk) = next_chunk(&mut response, cancel, &url, downloaded).await? {
                downloaded += chunk.len() as u64;
                if let Some(h) = download_hash.as_mut() {
                    h.update(&chunk);
                }
                if !send(&tx, Piece::Data(chunk), cancel, &written).await? {
                    return Ok(());
                }
                if last_report.elapsed() >= PROGRESS_EVERY {
                    report(downloaded);
                    last_report = Instant::now();
                }
            }
        }
        send(&tx, Piece::End, cancel, &written).await.map(drop)
    };
    let downloaded_result: Result<(), Image2DiskError> = download.await;
    drop(tx);
    let written_result = pipeline
        .await
        .map_err(|e| Image2DiskError::Internal(e.to_string()))?;

    let done = match (downloaded_result, written_result) {
        (Ok(()), Ok(done)) => done,
        _ if cancel.is_cancelled() => {
            return Err(Image2DiskError::Cancelled {
                bytes: written.load(Ordering::Relaxed),
            });
        }
        (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
    };
    report(downloaded);
    if let Some(note) = &done.partition_note {
        logs.note(note.as_str());
    }
    let mut message = format!(
        "wrote {} ({} bytes, {format}) to {dest_name} in {:.1} s",
        human(done.bytes),
        done.bytes,
        started.elapsed().as_secs_f64()
    );
    if let (Some(expected), Some(hash)) = (&source.download_sha256, download_hash) {
        let actual: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if *expected != actual {
            return Err(Image2DiskError::Mismatch {
                path: format!("{url} (as downloaded)"),
                expected: expected.clone(),
                actual,
            });
        }
        message.push_str(&format!(", download sha256:{actual} verified"));
    }
    if let (Some(expected), Some(actual)) = (&source.sha256, done.sha256) {
        if *expected != actual {
            return Err(Image2DiskError::Mismatch {
                path: dest_name,
                expected: expected.clone(),
                actual,
            });
        }
        message.push_str(&format!(", sha256:{actual} verified"));
    }
    Ok(message)
}

/// The next piece of the body, or `None` at its end.
async fn next_chunk(
    response: &mut reqwest::Response,
    cancel: &CancellationToken,
    url: &str,
    downloaded: u64,
) -> Result<Option<Bytes>, Image2DiskError> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Image2DiskError::Cancelled { bytes: 0 }),
        chunk = response.chunk() => chunk.map_err(|e| Image2DiskError::Download {
            url: url.to_string(),
            bytes: downloaded,
            detail: error_chain(&e),
        }),
    }
}

/// Queues a piece for the writer; false when the writer has stopped (its
/// own error then tells why).
async fn send(
    tx: &mpsc::Sender<Piece>,
    piece: Piece,
    cancel: &CancellationToken,
    written: &AtomicU64,
) -> Result<bool, Image2DiskError> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Image2DiskError::Cancelled {
            bytes: written.load(Ordering::Relaxed),
        }),
        sent = tx.send(piece) => Ok(sent.is_ok()),
    }
}

/// What the download hands the writer.
enum Piece {
    /// More of the body.
    Data(Bytes),
    /// The body ended normally.
    End,
}

/// A destination opened for writing.
pub(crate) struct Destination {
    file: File,
    path: String,
    kind: DestKind,
}

impl Destination {
    /// The size of a block device; `None` for a regular file.
    pub(crate) fn block_size(&self) -> Option<u64> {
        match self.kind {
            DestKind::Block { size } => Some(size),
            DestKind::File => None,
        }
    }

    /// The open file, for positioned writes.
    pub(crate) fn into_file(self) -> File {
        self.file
    }
}

/// What kind of thing the destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DestKind {
    /// A block device of this many bytes.
    Block { size: u64 },
    /// A regular file (created or truncated).
    File,
}

/// Opens `DEST_DISK`: a block device as it is, a regular file truncated.
fn open_destination(path: &Path) -> Result<Destination, Image2DiskError> {
    let name = path.display().to_string();
    let open_error = |source: io::Error| Image2DiskError::DestOpen {
        path: name.clone(),
        source,
    };
    let create = || {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(open_error)
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_block_device() => {
            let mut file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(open_error)?;
            let size = file.seek(SeekFrom::End(0)).map_err(open_error)?;
            file.seek(SeekFrom::Start(0)).map_err(open_error)?;
            Ok(Destination {
                file,
                path: name.clone(),
                kind: DestKind::Block { size },
            })
        }
        Ok(meta) if meta.is_file() => Ok(Destination {
            file: create()?,
            path: name.clone(),
            kind: DestKind::File,
        }),
        Ok(_) => Err(Image2DiskError::DestKind(name.clone())),
        Err(e) if e.kind() == io::ErrorKind::NotFound && path.starts_with("/dev") => {
            Err(Image2DiskError::DestMissing(name.clone()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Destination {
            file: create()?,
            path: name.clone(),
            kind: DestKind::File,
        }),
        Err(e) => Err(open_error(e)),
    }
}

/// The end of a successful write.
struct Done {
    bytes: u64,
    sha256: Option<String>,
    partition_note: Option<String>,
}

/// Decodes the queued body into the writer (runs on a blocking thread).
fn pipeline(
    format: Codec,
    rx: mpsc::Receiver<Piece>,
    mut writer: DiskWriter,
    url: &str,
) -> Result<Done, Image2DiskError> {
    let reader = ChannelReader {
        rx,
        current: Bytes::new(),
        ended: false,
    };
    let decoded = compression::decode(format, reader, &mut |from| writer.pump(from));
    match decoded {
        Ok(()) => writer.finish(),
        Err(e) => Err(writer.failure.take().unwrap_or_else(|| {
            if writer.cancel.is_cancelled() {
                Image2DiskError::Cancelled {
                    bytes: writer.written,
                }
            } else {
                Image2DiskError::Corrupt {
                    format,
                    url: url.to_string(),
                    detail: error_chain(&e),
                }
            }
        })),
    }
}

/// The download as a blocking [`Read`].
struct ChannelReader {
    rx: mpsc::Receiver<Piece>,
    current: Bytes,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(bytes)) => self.current = bytes,
                Some(Piece::End) => self.ended = true,
                // The download failed or was cancelled; it says why.
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the download stopped",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Marker for an error the writer recorded in [`DiskWriter::failure`].
const WRITER_FAILED: &str = "writing the destination failed";

/// Collects decoded bytes into large chunks and writes them out.
struct DiskWriter {
    dest: Destination,
    buffer: Vec<u8>,
    filled: usize,
    written: u64,
    hasher: Option<Sha256>,
    progress: Arc<AtomicU64>,
    cancel: CancellationToken,
    failure: Option<Image2DiskError>,
}

impl DiskWriter {
    fn new(
        dest: Destination,
        hash: bool,
        progress: Arc<AtomicU64>,
        cancel: CancellationToken,
    ) -> DiskWriter {
        DiskWriter {
            dest,
            buffer: vec![0; CHUNK],
            filled: 0,
            written: 0,
            hasher: hash.then(Sha256::new),
            progress,
            cancel,
            failure: None,
        }
    }

    /// Reads `from` to its end, writing as the buffer fills.
    fn pump(&mut self, from: &mut dyn Read) -> io::Result<()> {
        loop {
            if self.filled == self.buffer.len() {
                self.flush_or_record()?;
            }
            match from.read(&mut self.buffer[self.filled..]) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    self.filled += n;
                    // Progress counts bytes decoded: the disk lags by at
                    // most one chunk, and the page cache blurs it anyway.
                    self.progress
                        .store(self.written + self.filled as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn flush_or_record(&mut self) -> io::Result<()> {
        self.flush().map_err(|e| {
            self.failure = Some(e);
            io::Error::other(WRITER_FAILED)
        })
    }

    /// Writes the buffer out.
    fn flush(&mut self) -> Result<(), Image2DiskError> {
        if self.cancel.is_cancelled() {
            return Err(Image2DiskError::Cancelled {
                bytes: self.written,
            });
        }
        if self.filled == 0 {
            return Ok(());
        }
        let data = &self.buffer[..self.filled];
        let too_small = |disk_bytes| Image2DiskError::TooSmall {
            path: self.dest.path.clone(),
            disk_bytes,
        };
        if let DestKind::Block { size } = self.dest.kind
            && self.written + data.len() as u64 > size
        {
            return Err(too_small(size));
        }
        if let Err(source) = self.dest.file.write_all(data) {
            return Err(match (self.dest.kind, source.raw_os_error()) {
                (DestKind::Block { size }, Some(code)) if code == ENOSPC => too_small(size),
                (DestKind::Block { size }, _) if source.kind() == io::ErrorKind::WriteZero => {
                    too_small(size)
                }
                (DestKind::File, Some(code)) if code == ENOSPC => Image2DiskError::NoSpace {
                    path: self.dest.path.clone(),
                    bytes: self.written,
                },
                _ => Image2DiskError::Write {
                    path: self.dest.path.clone(),
                    bytes: self.written,
                    source,
                },
            });
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(data);
        }
        self.written += data.len() as u64;
        self.filled = 0;
        Ok(())
    }

    /// Writes the rest, fsyncs, and has the kernel re-read partitions.
    fn finish(mut self) -> Result<Done, Image2DiskError> {
        self.flush()?;
        self.dest
            .file
            .sync_all()
            .map_err(|source| Image2DiskError::Sync {
                path: self.dest.path.clone(),
                source,
            })?;
        let partition_note = match self.dest.kind {
            DestKind::Block { .. } => reread_partitions(&self.dest.file).err().map(|e| {
                format!(
                    "the kernel did not re-read {}'s partition table ({e}); \
                     normal for a partition, or when a partition is in use",
                    self.dest.path
                )
            }),
            DestKind::File => None,
        };
        Ok(Done {
            bytes: self.written,
            sha256: self.hasher.map(|h| {
                h.finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            }),
            partition_note,
        })
    }
}

/// `ENOSPC`: no space left on device.
const ENOSPC: i32 = nix::errno::Errno::ENOSPC as i32;

mod ioctl {
    nix::ioctl_none!(
        /// `BLKRRPART` from `<linux/fs.h>`: `_IO(0x12, 95)`.
        blkrrpart,
        0x12,
        95
    );
}

/// `BLKRRPART`: re-read the partition table of the disk open as `file`.
#[allow(unsafe_code)]
pub(crate) fn reread_partitions(file: &File) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: BLKRRPART takes no argument; the fd is open for the call.
    unsafe { ioctl::blkrrpart(file.as_raw_fd()) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::builtin::test_env as env;

    #[test]
    fn go_booleans() {
        for v in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(v), Some(true), "{v}");
        }
        for v in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(v), Some(false), "{v}");
        }
        assert_eq!(parse_go_bool("yes"), None);
        assert_eq!(parse_go_bool("tRUE"), None);
    }

    #[test]
    fn params_from_env() {
        let params = Params::from_env(&env(&[
            ("IMG_URL", "http://10.0.0.1/ubuntu.raw.gz"),
            ("DEST_DISK", "/dev/sda"),
            ("COMPRESSED", "true"),
        ]))
        .unwrap();
        assert_eq!(params.dest, PathBuf::from("/dev/sda"));
        assert!(params.compressed);
        assert_eq!(params.sha256, None);

        let params = Params::from_env(&env(&[
            ("IMG_URL", "https://example.invalid/a.raw"),
            ("DEST_DISK", "/dev/sda"),
            ("COMPRESSED", "yes"),
        ]))
        .unwrap();
        assert!(!params.compressed);
        assert!(params.notes[0].contains("not a boolean"));

        let missing = Params::from_env(&env(&[("DEST_DISK", "/dev/sda")])).unwrap_err();
        assert_eq!(missing.to_string(), "IMG_URL is not set");
        let ftp = Params::from_env(&env(&[
            ("IMG_URL", "ftp://host/a.raw"),
            ("DEST_DISK", "/dev/sda"),
        ]))
        .unwrap_err();
        assert!(ftp.to_string().contains("not an http:// or https:// URL"));
        let no_dest = Params::from_env(&env(&[
            ("IMG_URL", "http://host/a.raw"),
            ("DEST_DISK", " "),
        ]))
        .unwrap_err();
        assert_eq!(no_dest.to_string(), "DEST_DISK is not set");
    }

    #[test]
    fn checksums() {
        let digest = "A".repeat(64);
        let lower = "a".repeat(64);
        assert_eq!(
            parse_checksum(Some(&format!("sha256:{digest}")), None),
            Ok(Some(lower.clone()))
        );
        assert_eq!(parse_checksum(None, Some(&lower)), Ok(Some(lower.clone())));
        assert_eq!(
            parse_checksum(Some(&format!("SHA256:{lower}")), Some(&digest)),
            Ok(Some(lower.clone()))
        );
        assert_eq!(parse_checksum(None, None), Ok(None));
        assert!(
            parse_checksum(Some(&format!("sha256:{lower}")), Some(&"b".repeat(64)))
                .unwrap_err()
                .contains("disagree")
        );
        assert!(
            parse_checksum(Some(&format!("md5:{lower}")), None)
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            parse_checksum(Some(&lower), None)
                .unwrap_err()
                .contains("sha256:<hex>")
        );
        assert!(parse_checksum(Some("sha256:abc"), None).is_err());
        assert!(parse_checksum(None, Some(&"g".repeat(64))).is_err());
    }

    #[test]
    fn sizes_and_progress() {
        assert_eq!(human(100), "100 B");
        assert_eq!(human(3 << 10), "3 KiB");
        assert_eq!(human(40 << 20), "40 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(
            progress_text(
                40 << 20,
                40 << 20,
                Some(100 << 20),
                true,
                Duration::from_secs(4)
            ),
            "written 40 MiB of 100 MiB (40%), 10.0 MiB/s"
        );
        assert_eq!(
            progress_text(
                120 << 20,
                25 << 20,
                Some(100 << 20),
                false,
                Duration::from_secs(12)
            ),
            "written 120 MiB, downloaded 25 MiB of 100 MiB (25%), 10.0 MiB/s"
        );
        assert_eq!(
            progress_text(1 << 20, 1 << 20, None, true, Duration::from_secs(1)),
            "written 1 MiB, 1.0 MiB/s"
        );
        assert_eq!(
            progress_text(0, 0, Some(0), true, Duration::ZERO),
            "written 0 B of 0 B (100%), 0.0 MiB/s"
        );
    }

    #[test]
    fn passwords_are_hidden() {
        let url = reqwest::Url::parse("http://user:secret@host/a.raw").unwrap();
        assert_eq!(shown(&url), "http://user:****@host/a.raw");
        let url = reqwest::Url::parse("http://host/a.raw").unwrap();
        assert_eq!(shown(&url), "http://host/a.raw");
    }

    #[test]
    fn missing_devices_are_not_created() {
        let error = open_destination(Path::new("/dev/bellows-no-such-disk"))
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            "DEST_DISK /dev/bellows-no-such-disk does not exist"
        );
        assert!(!Path::new("/dev/bellows-no-such-disk").exists());
        let error = open_destination(Path::new("/")).err().unwrap();
        assert!(error.to_string().contains("neither a block device"));
    }
}
