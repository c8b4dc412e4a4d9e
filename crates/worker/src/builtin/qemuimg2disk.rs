//! `qemuimg2disk`: a qcow2 image (the format cloud images ship in) from an
//! HTTP(S) server, converted to raw onto a disk, without `qemu-img` and
//! without staging the file: the header, the L1 table and each L2 table
//! are fetched with `Range` requests, then the clusters they point to, in
//! host order and coalesced into requests of up to [`MAX_REQUEST`] bytes,
//! each written at its place on the disk. Compressed clusters (deflate, as
//! `qemu-img convert -c` and most cloud images have them) are inflated;
//! clusters that read as zeros are written as zeros on a block device
//! (left sparse in a regular file). Memory is bounded by one L2 table and
//! one request.
//!
//! Environment, as Tinkerbell's `qemuimg2disk` reads it: `IMG_URL`,
//! `DEST_DISK`. A file that is not qcow2 is written as `image2disk` would
//! write it (raw, or gzip/xz/zstd by its first bytes).
//!
//! The server must answer `Range` requests for qcow2 (nginx, Apache,
//! Bellows' own `/osie/` do); one that answers 200 with the whole file is
//! refused by name rather than downloaded whole into memory (a raw file
//! from it is still streamed). Every range answered must start where asked,
//! and tables and data clusters must be whole: a truncated file fails the
//! action instead of leaving stale bytes on the disk.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::error_chain;
use super::image2disk::{self, Source};
use super::qcow2::{self, Cluster, Header};
use crate::runtime::{RunContext, RunResult};

/// Longest range asked for at once.
pub const MAX_REQUEST: u64 = 8 << 20;

/// Gap between two clusters' bytes on the server below which one request
/// fetches both (and the bytes between).
const COALESCE_GAP: u64 = 64 << 10;

/// Zeros written at once on a block device.
const ZERO_CHUNK: usize = 4 << 20;

/// The action's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Where the image comes from.
    pub url: reqwest::Url,
    /// Where it goes.
    pub dest: PathBuf,
}

impl Params {
    /// Reads and checks the environment.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Params, String> {
        let get = |key: &str| env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let raw = get("IMG_URL").ok_or("IMG_URL is not set")?;
        let url = reqwest::Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| format!("IMG_URL {raw:?} is not an http:// or https:// URL"))?;
        let dest = PathBuf::from(get("DEST_DISK").ok_or("DEST_DISK is not set")?);
        Ok(Params { url, dest })
    }
}

/// Runs the action.
pub(crate) async fn run(
    client: Result<&reqwest::Client, String>,
    env: &BTreeMap<String, String>,
    ctx: &RunContext,
) -> RunResult {
    let result = match (Params::from_env(env), client) {
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(params), Ok(client)) => convert(client, &params, ctx).await,
    };
    match result {
        Ok(message) => {
            ctx.logs.note(format!("qemuimg2disk: {message}"));
            RunResult::success(message)
        }
        Err(message) if ctx.cancel.is_cancelled() => super::cancelled(message),
        Err(message) => {
            ctx.logs.note(format!("qemuimg2disk failed: {message}"));
            RunResult::failed(message)
        }
    }
}

/// Fetches byte ranges of one URL.
struct Ranges<'a> {
    client: &'a reqwest::Client,
    url: &'a reqwest::Url,
    shown: String,
    ctx: &'a RunContext,
    fetched: u64,
}

/// What a range request got.
enum Got {
    /// The bytes asked for (fewer only at the file's end).
    Range(Bytes),
    /// The server ignored `Range` and started sending the whole file;
    /// its first bytes.
    Whole(Bytes),
}

impl Ranges<'_> {
    /// `len` bytes at `offset`: all of them when `exact`, else possibly
    /// fewer at the file's end.
    async fn get(&mut self, offset: u64, len: u64, exact: bool) -> Result<Bytes, String> {
        match self.fetch(offset, len).await? {
            Got::Range(bytes) if exact && (bytes.len() as u64) < len => Err(format!(
                "{} ended {} bytes into the {len} asked at offset {offset}: the file is truncated",
                self.shown,
                bytes.len()
            )),
            Got::Range(bytes) => Ok(bytes),
            Got::Whole(_) => Err(format!(
                "{} ignores Range requests (answered 200): qemuimg2disk reads qcow2 by ranges; serve it from a server that answers them",
                self.shown
            )),
        }
    }

    async fn fetch(&mut self, offset: u64, len: u64) -> Result<Got, String> {
        if len == 0 {
            return Ok(Got::Range(Bytes::new()));
        }
        let last = offset
            .checked_add(len - 1)
            .ok_or_else(|| format!("a table points past any file (offset {offset:#x})"))?;
        let request = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::RANGE, format!("bytes={offset}-{last}"))
            .send();
        let mut response = tokio::select! {
            biased;
            _ = self.ctx.cancel.cancelled() => return Err("cancelled".into()),
            r = request => r.map_err(|e| format!("could not fetch {}: {}", self.shown, error_chain(&e)))?,
        };
        match response.status().as_u16() {
            206 => {
                // The range must be the one asked for.
                let starts_right = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    == Some(offset);
                if !starts_right {
                    return Err(format!(
                        "{} answered a range other than the one asked (offset {offset})",
                        self.shown
                    ));
                }
            }
            200 => {
                let first = tokio::select! {
                    biased;
                    _ = self.ctx.cancel.cancelled() => return Err("cancelled".into()),
                    c = response.chunk() => c.map_err(|e| format!("reading {}: {}", self.shown, error_chain(&e)))?,
                };
                return Ok(Got::Whole(first.unwrap_or_default()));
            }
            416 => return Ok(Got::Range(Bytes::new())),
            code => return Err(format!("{} returned {code} for a range", self.shown)),
        }
        let mut out = Vec::with_capacity(len.min(MAX_REQUEST) as usize);
        loop {
            let chunk = tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => return Err("cancelled".into()),
                c = response.chunk() => c.map_err(|e| format!("reading {}: {}", self.shown, error_chain(&e)))?,
            };
            let Some(chunk) = chunk else { break };
            if out.len() as u64 + chunk.len() as u64 > len {
                return Err(format!("{} sent more than the range asked", self.shown));
            }
            out.extend_from_slice(&chunk);
        }
        self.fetched += out.len() as u64;
        Ok(Got::Range(Bytes::from(out)))
    }
}

/// A cluster to fetch: where it goes, where it is.
#[derive(Debug, Clone, Copy)]
struct Piece {
    guest: u64,
    cluster: Cluster,
}

impl Piece {
    fn host_range(&self, cluster_size: u64) -> (u64, u64) {
        match self.cluster {
            Cluster::Data { offset } => (offset, cluster_size),
            Cluster::Compressed { offset, len } => (offset, len),
            Cluster::Zero => (0, 0),
        }
    }
}

async fn convert(
    client: &reqwest::Client,
    params: &Params,
    ctx: &RunContext,
) -> Result<String, String> {
    let started = Instant::now();
    let mut shown = params.url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("****"));
    }
    let mut ranges = Ranges {
        client,
        url: &params.url,
        shown: shown.to_string(),
        ctx,
        fetched: 0,
    };
    ctx.logs.note(format!(
        "qemuimg2disk: writing {} to {}",
        ranges.shown,
        params.dest.display()
    ));
    let head = match ranges.fetch(0, qcow2::HEADER_BYTES as u64).await? {
        Got::Range(head) => head,
        Got::Whole(first) if !qcow2::is_qcow2(&first) => first,
        Got::Whole(_) => {
            return Err(format!(
                "{} ignores Range requests (answered 200): qemuimg2disk reads qcow2 by ranges; serve it from a server that answers them",
                ranges.shown
            ));
        }
    };
    if !qcow2::is_qcow2(&head) {
        ctx.logs
            .note("not a qcow2 image: writing it as image2disk would (raw or compressed)");
        return as_raw(client, params, &ranges.shown, ctx).await;
    }
    let header = qcow2::parse_header(&head).map_err(|e| e.to_string())?;
    let dest = image2disk::open(&params.dest)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(size) = dest.block_size()
        && size < header.size
    {
        return Err(format!(
            "DEST_DISK {} holds {} bytes; the image's disk is {} bytes",
            params.dest.display(),
            size,
            header.size
        ));
    }
    let is_block = dest.block_size().is_some();
    let file = Arc::new(dest.into_file());
    if !is_block {
        let (f, size) = (file.clone(), header.size);
        blocking(move || f.set_len(size)).await?;
    }
    ctx.logs.note(format!(
        "qcow2 v{}: {} disk, {} KiB clusters",
        header.version,
        image2disk::human(header.size),
        header.cluster_size() >> 10
    ));
    let l1 = ranges
        .get(header.l1_offset, header.l1_size * 8, true)
        .await?;
    let l1: Vec<u64> = qcow2::entries(&l1).collect();
    let cluster = header.cluster_size();
    let span = header.l2_entries() * cluster;
    let mut data_bytes = 0u64;
    for (i, raw) in l1.iter().enumerate() {
        let base = i as u64 * span;
        if base >= header.size {
            break;
        }
        let end = (base + span).min(header.size);
        let l2_offset = qcow2::l1_entry(*raw, &header).map_err(|e| e.to_string())?;
        let mut pieces = Vec::new();
        let mut zeros: Vec<(u64, u64)> = Vec::new();
        match l2_offset {
            None => zeros.push((base, end - base)),
            Some(offset) => {
                let table = ranges.get(offset, cluster, true).await?;
                for (j, raw) in qcow2::entries(&table).enumerate() {
                    let guest = base + j as u64 * cluster;
                    if guest >= end {
                        break;
                    }
                    match qcow2::l2_entry(raw, &header).map_err(|e| e.to_string())? {
                        Cluster::Zero => match zeros.last_mut() {
                            Some((start, len)) if *start + *len == guest => *len += cluster,
                            _ => zeros.push((guest, cluster)),
                        },
                        c => pieces.push(Piece { guest, cluster: c }),
                    }
                }
            }
        }
        if is_block {
            for (start, len) in zeros {
                let len = len.min(header.size - start);
                write_zeros(&file, start, len).await?;
            }
        }
        data_bytes += fetch_and_write(&mut ranges, &header, &file, pieces).await?;
        ctx.logs.progress(format!(
            "{} of {} converted, {} fetched",
            image2disk::human(end),
            image2disk::human(header.size),
            image2disk::human(ranges.fetched)
        ));
    }
    let f = file.clone();
    blocking(move || f.sync_all()).await?;
    if is_block && let Err(e) = image2disk::reread_partitions(&file) {
        ctx.logs
            .note(format!("re-reading the partition table failed: {e}"));
    }
    Ok(format!(
        "wrote {} ({} of data, {} fetched) to {} in {:.1} s",
        image2disk::human(header.size),
        image2disk::human(data_bytes),
        image2disk::human(ranges.fetched),
        params.dest.display(),
        started.elapsed().as_secs_f64()
    ))
}

/// Fetches the clusters of one L2 table in host order, coalescing near
/// ones, and writes each at its guest offset; returns the bytes written.
async fn fetch_and_write(
    ranges: &mut Ranges<'_>,
    header: &Header,
    file: &Arc<File>,
    mut pieces: Vec<Piece>,
) -> Result<u64, String> {
    let cluster = header.cluster_size();
    pieces.sort_by_key(|p| p.host_range(cluster).0);
    let mut written = 0;
    let mut i = 0;
    while i < pieces.len() {
        let (start, first_len) = pieces[i].host_range(cluster);
        let mut end = start + first_len;
        let mut j = i + 1;
        while j < pieces.len() {
            let (s, l) = pieces[j].host_range(cluster);
            if s > end + COALESCE_GAP || s + l - start > MAX_REQUEST {
                break;
            }
            end = end.max(s + l);
            j += 1;
        }
        // Only a compressed cluster may end with the file.
        let last_is_data = matches!(pieces[j - 1].cluster, Cluster::Data { .. });
        let bytes = ranges.get(start, end - start, last_is_data).await?;
        let group: Vec<Piece> = pieces[i..j].to_vec();
        let f = file.clone();
        let cluster_bytes = cluster as usize;
        let disk_size = header.size;
        written += blocking(move || -> std::io::Result<u64> {
            let mut written = 0;
            let mut inflated = vec![0u8; cluster_bytes];
            for piece in group {
                let (s, l) = piece.host_range(cluster);
                let from = (s - start) as usize;
                let to = ((s + l - start) as usize).min(bytes.len());
                if from >= to {
                    return Err(std::io::Error::other(format!(
                        "the file ends before the cluster at {s:#x}"
                    )));
                }
                let data: &[u8] = match piece.cluster {
                    Cluster::Data { .. } if to - from < l as usize => {
                        return Err(std::io::Error::other(format!(
                            "the file ends inside the cluster at {s:#x}"
                        )));
                    }
                    Cluster::Data { .. } => &bytes[from..to],
                    Cluster::Compressed { .. } => {
                        inflate(&bytes[from..to], &mut inflated)?;
                        &inflated
                    }
                    Cluster::Zero => continue,
                };
                // The last cluster may reach past the disk's end.
                let room = (disk_size - piece.guest).min(data.len() as u64) as usize;
                let data = &data[..room];
                f.write_all_at(data, piece.guest)?;
                written += data.len() as u64;
            }
            Ok(written)
        })
        .await?;
        i = j;
    }
    Ok(written)
}

/// Inflates one compressed cluster (raw deflate) into `out`, which it fills.
fn inflate(compressed: &[u8], out: &mut [u8]) -> std::io::Result<()> {
    let mut decoder = flate2::read::DeflateDecoder::new(compressed);
    decoder
        .read_exact(out)
        .map_err(|e| std::io::Error::other(format!("a compressed cluster does not inflate: {e}")))
}

async fn write_zeros(file: &Arc<File>, start: u64, len: u64) -> Result<(), String> {
    let f = file.clone();
    blocking(move || -> std::io::Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK];
        let mut at = start;
        while at < start + len {
            let n = (start + len - at).min(ZERO_CHUNK as u64) as usize;
            f.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    })
    .await
}

async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("writing the disk: {e}"))
}

/// Not qcow2: image2disk's path, from a fresh request.
async fn as_raw(
    client: &reqwest::Client,
    params: &Params,
    shown: &str,
    ctx: &RunContext,
) -> Result<String, String> {
    let dest = image2disk::open(&params.dest)
        .await
        .map_err(|e| e.to_string())?;
    let response = client
        .get(params.url.clone())
        .send()
        .await
        .map_err(|e| format!("could not fetch {shown}: {}", error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!("{shown} returned {}", response.status()));
    }
    let source = Source {
        name: shown.to_string(),
        extension: bellows_compression::codec_from_extension(params.url.path()),
        compressed: false,
        sha256: None,
        download_sha256: None,
    };
    image2disk::write_stream(response, source, dest, Path::new(&params.dest), ctx)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::test_env;

    #[test]
    fn settings() {
        let p = Params::from_env(&test_env(&[
            ("IMG_URL", "https://cloud-images.example/jammy.img"),
            ("DEST_DISK", "/dev/sda"),
        ]))
        .unwrap();
        assert_eq!(p.dest, PathBuf::from("/dev/sda"));
        let e = Params::from_env(&test_env(&[("IMG_URL", "ftp://x/y")])).unwrap_err();
        assert!(e.contains("not an http"), "{e}");
    }
}
