//! `rootio`: partition, format and mount disks from the machine's storage
//! layout (`metadata.instance.storage`, Equinix Metal's custom
//! partitioning format, which Tinkerbell's `rootio` reads), one step per
//! action as Tinkerbell runs it: `command: ["partition"]`, `["format"]`,
//! `["mount"]`.
//!
//! - **Where the layout comes from**: the server's metadata service,
//!   `GET /metadata` (hegel's document; the server answers by the caller's
//!   address). `MIRROR_HOST` names it as in Tinkerbell (`host` means port
//!   50061, hegel's; `host:port` as given); without it, the server this
//!   worker talks to.
//! - **partition**: a GUID partition table per disk ([`super::gpt`]):
//!   partitions in number order from 1 MiB, 1 MiB-aligned, `size` in
//!   512-byte sectors (as Tinkerbell's examples write it: `4096` is a
//!   2 MiB BIOS boot partition) or with a `K`/`M`/`G`/`T` suffix, `0` for the
//!   rest; the type from the label (`BIOS`, `EFI`/`ESP`, `SWAP`, else Linux
//!   data). `wipe_table` (or `wipeTable`) also clears the disk's first and
//!   last MiB first. The kernel re-reads the table.
//! - **format**: each `filesystems[].mount` with `mkfs.FORMAT` (`-F`
//!   for ext2/3/4, `-f` for xfs) or `mkswap` for swap, with
//!   `create.options` before the device.
//! - **mount**: each file system but swap, at `/mountAction` + `point`
//!   (Tinkerbell's place), type `format`.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error_chain;
use super::gpt::{self, PartitionSpec};
use crate::runtime::{RunContext, RunResult};

/// Where `mount` puts file systems (Tinkerbell's rootio's place).
pub const MOUNT_ROOT: &str = "/mountAction";

/// Hegel's port, for a `MIRROR_HOST` without one.
const HEGEL_PORT: u16 = 50061;

/// The layout's part this action reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Storage {
    /// Disks to partition.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// File systems to make and mount.
    #[serde(default)]
    pub filesystems: Vec<Filesystem>,
}

/// One disk.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Disk {
    /// Its device (`/dev/sda`).
    pub device: String,
    /// Clear the old table first.
    #[serde(default, alias = "wipeTable")]
    pub wipe_table: bool,
    /// Its partitions.
    #[serde(default)]
    pub partitions: Vec<Partition>,
}

/// One partition.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Partition {
    /// Its name (and, through it, its type).
    #[serde(default)]
    pub label: String,
    /// Its number.
    pub number: u32,
    /// Sectors as a number or text, or text with a size suffix; 0: the rest.
    #[serde(default)]
    pub size: serde_json::Value,
}

/// One file system.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Filesystem {
    /// What and where.
    pub mount: FsMount,
}

/// A file system's device, format and mount point.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct FsMount {
    /// The partition (`/dev/sda3`).
    pub device: String,
    /// `ext4`, `vfat`, `xfs`, `swap`, …
    pub format: String,
    /// Mount point in the installed system (`/`), or `none`.
    #[serde(default)]
    pub point: String,
    /// How to make it.
    #[serde(default)]
    pub create: Option<Create>,
}

/// Options for making a file system.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Create {
    /// Arguments before the device (`["-L", "ROOT"]`).
    #[serde(default)]
    pub options: Vec<String>,
}

/// Sectors of a partition's `size`.
pub fn sectors(size: &serde_json::Value) -> Result<u64, String> {
    let text = match size {
        serde_json::Value::Null => return Ok(0),
        serde_json::Value::Number(n) => {
            return n.as_u64().ok_or(format!("size {n} is not a whole number"));
        }
        serde_json::Value::String(s) => s.trim().to_string(),
        other => return Err(format!("size {other} is neither a number nor text")),
    };
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text.as_str(), ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("size {text:?} is not a number"))?;
    let bytes = |shift: u32| {
        n.checked_mul(1 << shift)
            .map(|b| b.div_ceil(gpt::SECTOR))
            .ok_or(format!("size {text:?} is too large"))
    };
    match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => Ok(n),
        "K" => bytes(10),
        "M" => bytes(20),
        "G" => bytes(30),
        "T" => bytes(40),
        _ => Err(format!("size {text:?}: unknown unit {unit:?}")),
    }
}

/// The layout in the metadata document (`storage`, or hegel's
/// `metadata.instance.storage`).
pub fn storage_from(document: &serde_json::Value) -> Result<Storage, String> {
    let found = document
        .pointer("/metadata/instance/storage")
        .or_else(|| document.get("storage"))
        .or_else(|| document.pointer("/instance/storage"))
        .ok_or("the machine's metadata has no storage layout (metadata.instance.storage)")?;
    serde_json::from_value(found.clone())
        .map_err(|e| format!("the storage layout is not valid: {e}"))
}

/// The metadata URL: from `MIRROR_HOST`, else the worker's server.
fn metadata_url(env: &BTreeMap<String, String>, server: Option<&str>) -> Result<String, String> {
    match env
        .get("MIRROR_HOST")
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
    {
        Some(host) if host.starts_with("http://") || host.starts_with("https://") => {
            Ok(format!("{}/metadata", host.trim_end_matches('/')))
        }
        Some(host) if host.contains(':') && !host.starts_with('[') => {
            Ok(format!("http://{host}/metadata"))
        }
        Some(host) => Ok(format!("http://{host}:{HEGEL_PORT}/metadata")),
        None => server
            .map(|s| format!("{}/metadata", s.trim_end_matches('/')))
            .ok_or_else(|| "MIRROR_HOST is not set and the worker knows no server".to_string()),
    }
}

/// Runs the action; `server` is the boot server's plain-HTTP base URL.
pub(crate) async fn run(
    client: Result<&reqwest::Client, String>,
    server: Option<&str>,
    command: &[String],
    env: &BTreeMap<String, String>,
    ctx: &RunContext,
) -> RunResult {
    let step = command
        .iter()
        .flat_map(|c| c.split_whitespace())
        .next()
        .unwrap_or("")
        .to_string();
    let result = async {
        if !matches!(step.as_str(), "partition" | "format" | "mount") {
            return Err(format!(
                "rootio needs a command: partition, format or mount (got {command:?})"
            ));
        }
        let client = client?;
        let url = metadata_url(env, server)?;
        ctx.logs
            .note(format!("rootio {step}: storage layout from {url}"));
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("fetching {url}: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("{url} returned {}", response.status()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading {url}: {}", error_chain(&e)))?;
        if body.len() > 4 << 20 {
            return Err(format!("{url} sent more than 4 MiB"));
        }
        let document: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{url} is not JSON: {e}"))?;
        let storage = storage_from(&document)?;
        match step.as_str() {
            "partition" => partition(&storage, ctx).await,
            "format" => format(&storage, ctx).await,
            _ => mount(&storage, ctx),
        }
    }
    .await;
    match result {
        Ok(message) => {
            ctx.logs.note(format!("rootio {step}: {message}"));
            RunResult::success(message)
        }
        Err(message) => {
            ctx.logs.note(format!("rootio {step} failed: {message}"));
            RunResult::failed(message)
        }
    }
}

async fn partition(storage: &Storage, ctx: &RunContext) -> Result<String, String> {
    if storage.disks.is_empty() {
        return Err("the storage layout names no disks".into());
    }
    let mut done = Vec::new();
    for disk in &storage.disks {
        let mut parts = Vec::new();
        for p in &disk.partitions {
            let sectors = sectors(&p.size)
                .map_err(|e| format!("{} partition {}: {e}", disk.device, p.number))?;
            parts.push(PartitionSpec {
                number: p.number,
                label: p.label.clone(),
                sectors,
                type_guid: gpt::type_for_label(&p.label).to_string(),
                unique: *uuid::Uuid::new_v4().as_bytes(),
            });
        }
        let device = PathBuf::from(&disk.device);
        let wipe = disk.wipe_table;
        let disk_guid = *uuid::Uuid::new_v4().as_bytes();
        let extents =
            tokio::task::spawn_blocking(move || write_table(&device, wipe, disk_guid, &parts))
                .await
                .map_err(|e| e.to_string())??;
        ctx.logs.note(format!(
            "{}: {}",
            disk.device,
            extents
                .iter()
                .map(|(n, s, e)| format!("{n}: sectors {s}–{e}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        done.push(format!("{} ({} partitions)", disk.device, extents.len()));
    }
    Ok(format!("partitioned {}", done.join(", ")))
}

fn write_table(
    device: &Path,
    wipe: bool,
    disk_guid: [u8; 16],
    parts: &[PartitionSpec],
) -> Result<Vec<(u32, u64, u64)>, String> {
    let name = device.display();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(|e| format!("opening {name}: {e}"))?;
    let bytes = file
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("{name}: {e}"))?;
    let table =
        gpt::build(bytes / gpt::SECTOR, disk_guid, parts).map_err(|e| format!("{name}: {e}"))?;
    let io = |e: std::io::Error| format!("writing {name}: {e}");
    if wipe {
        let zeros = vec![0u8; 1 << 20];
        let n = (1u64 << 20).min(bytes) as usize;
        file.write_all_at(&zeros[..n], 0).map_err(io)?;
        file.write_all_at(&zeros[..n], bytes - n as u64)
            .map_err(io)?;
    }
    file.write_all_at(&table.primary, 0).map_err(io)?;
    file.write_all_at(&table.backup, table.backup_lba * gpt::SECTOR)
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    let _ = super::image2disk::reread_partitions(&file);
    Ok(table.extents)
}

async fn format(storage: &Storage, ctx: &RunContext) -> Result<String, String> {
    if storage.filesystems.is_empty() {
        return Err("the storage layout names no file systems".into());
    }
    let mut done = Vec::new();
    for fs in &storage.filesystems {
        let m = &fs.mount;
        let format = m.format.trim().to_ascii_lowercase();
        if format.is_empty() || !format.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "{}: format {:?} is not a file system name",
                m.device, m.format
            ));
        }
        let (program, force): (String, Option<&str>) = match format.as_str() {
            "swap" => ("mkswap".into(), None),
            "ext2" | "ext3" | "ext4" => (format!("mkfs.{format}"), Some("-F")),
            "xfs" => ("mkfs.xfs".into(), Some("-f")),
            other => (format!("mkfs.{other}"), None),
        };
        let mut command = tokio::process::Command::new(&program);
        command
            .args(force)
            .args(m.create.iter().flat_map(|c| c.options.iter()))
            .arg(&m.device);
        command
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = command.output().await.map_err(|e| {
            format!(
                "{program} for {}: {e} (is it in the in-memory OS?)",
                m.device
            )
        })?;
        for line in String::from_utf8_lossy(&output.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&output.stderr).lines())
        {
            ctx.logs.note(line.to_string());
        }
        if !output.status.success() {
            return Err(format!("{program} {} failed ({})", m.device, output.status));
        }
        done.push(format!("{} {format}", m.device));
    }
    Ok(format!("made {}", done.join(", ")))
}

fn mount(storage: &Storage, ctx: &RunContext) -> Result<String, String> {
    let mut done = Vec::new();
    // Shallow points first, so `/` is under `/boot`.
    let mut list: Vec<&FsMount> = storage
        .filesystems
        .iter()
        .map(|f| &f.mount)
        .filter(|m| m.format != "swap" && !m.point.is_empty() && m.point != "none")
        .collect();
    list.sort_by_key(|m| m.point.matches('/').count() - usize::from(m.point == "/"));
    for m in list {
        if m.point.split('/').any(|p| p == "..") || !m.point.starts_with('/') {
            return Err(format!(
                "{}: mount point {:?} is not an absolute path",
                m.device, m.point
            ));
        }
        let target = format!("{MOUNT_ROOT}{}", m.point.trim_end_matches('/'));
        std::fs::create_dir_all(&target).map_err(|e| format!("creating {target}: {e}"))?;
        nix::mount::mount(
            Some(m.device.as_str()),
            target.as_str(),
            Some(m.format.as_str()),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| format!("mounting {} ({}) at {target}: {e}", m.device, m.format))?;
        ctx.logs.note(format!("mounted {} at {target}", m.device));
        done.push(target);
    }
    Ok(format!("mounted {}", done.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_as_layouts_write_them() {
        assert_eq!(sectors(&json!(4096)).unwrap(), 4096);
        assert_eq!(sectors(&json!("3993600")).unwrap(), 3_993_600);
        assert_eq!(sectors(&json!(0)).unwrap(), 0);
        assert_eq!(sectors(&json!("512M")).unwrap(), 1 << 20);
        assert_eq!(sectors(&json!("1GiB")).unwrap(), 2 << 20);
        assert!(sectors(&json!("12Q")).is_err());
        assert!(sectors(&json!(-1)).is_err());
        assert!(sectors(&json!("99999999999999999999T")).is_err());
    }

    #[test]
    fn the_layout_is_found_where_hegel_and_equinix_put_it() {
        let storage = json!({"disks": [{"device": "/dev/sda", "wipeTable": true,
            "partitions": [{"label": "ROOT", "number": 1, "size": 0}]}]});
        for doc in [
            json!({"metadata": {"instance": {"storage": storage.clone()}}}),
            json!({"storage": storage.clone()}),
        ] {
            let s = storage_from(&doc).unwrap();
            assert!(s.disks[0].wipe_table);
            assert_eq!(s.disks[0].partitions[0].number, 1);
        }
        assert!(
            storage_from(&json!({}))
                .unwrap_err()
                .contains("no storage layout")
        );
    }

    #[test]
    fn the_metadata_service_is_found() {
        let env = |h: &str| BTreeMap::from([("MIRROR_HOST".to_string(), h.to_string())]);
        assert_eq!(
            metadata_url(&env("10.0.0.1"), None).unwrap(),
            "http://10.0.0.1:50061/metadata"
        );
        assert_eq!(
            metadata_url(&env("10.0.0.1:8080"), None).unwrap(),
            "http://10.0.0.1:8080/metadata"
        );
        assert_eq!(
            metadata_url(&BTreeMap::new(), Some("http://10.0.0.1:8080/")).unwrap(),
            "http://10.0.0.1:8080/metadata"
        );
        assert!(metadata_url(&BTreeMap::new(), None).is_err());
    }
}
