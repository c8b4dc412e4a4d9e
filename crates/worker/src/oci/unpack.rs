//! Layers onto a root file system, bottom layer first, as the OCI image
//! spec's "applying changesets" says: each entry replaces what its path
//! held; `.wh.NAME` deletes `NAME` from the layers below; `.wh..wh..opq`
//! empties its directory of them. Paths are kept inside the root: `..` in
//! an entry is refused; the directories on an entry's way are resolved as
//! the container will see them (a symlink to `/usr/lib` means the image's
//! `/usr/lib`, never the host's); an existing file or symlink is removed
//! before an entry takes its place (never written through); hard links
//! point inside the root. Everything tar reads is counted against the
//! limit, so long names and headers cannot grow memory either.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::manifest::LayerCodec;

/// Prefix of a whiteout file's name.
const WHITEOUT: &str = ".wh.";
/// An opaque-directory marker's name.
const OPAQUE: &str = ".wh..wh..opq";

/// Bounds one image's unpacking.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of file contents, all layers together.
    pub max_bytes: u64,
    /// Total entries, all layers together.
    pub max_entries: u64,
}

/// What unpacking used so far (carried from layer to layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Bytes of file contents.
    pub bytes: u64,
    /// Entries.
    pub entries: u64,
    /// Bytes of tar stream read (headers and long names included).
    pub decompressed: u64,
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The archive or its compression is broken.
    #[error("layer {layer}: {source}")]
    Read {
        /// Which layer (1-based).
        layer: usize,
        /// Why.
        source: std::io::Error,
    },
    /// An entry tries to leave the root.
    #[error("layer {layer}: entry {path:?} points outside the image")]
    Escape {
        /// Which layer.
        layer: usize,
        /// The entry's path.
        path: String,
    },
    /// An entry could not be written.
    #[error("layer {layer}: writing {path:?}: {source}")]
    Write {
        /// Which layer.
        layer: usize,
        /// The entry's path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Unpacking was abandoned (the run was cancelled).
    #[error("unpacking was stopped")]
    Stopped,
    /// The image is larger than allowed.
    #[error("the image unpacks to more than {limit} {what}; refused")]
    TooLarge {
        /// Bytes or entries.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
}

/// Applies one layer (`layer` is its 1-based number, for messages).
/// `stop` is checked between entries: set it to abandon the layer.
pub fn apply_layer<R: Read + Send + 'static>(
    input: R,
    codec: LayerCodec,
    root: &Path,
    layer: usize,
    limits: Limits,
    usage: &mut Usage,
    stop: &AtomicBool,
) -> Result<(), UnpackError> {
    let codec = match codec {
        LayerCodec::Tar => bellows_compression::Codec::Raw,
        LayerCodec::Gzip => bellows_compression::Codec::Gzip,
        LayerCodec::Zstd => bellows_compression::Codec::Zstd,
    };
    let mut failure: Option<UnpackError> = None;
    let result = bellows_compression::decode(codec, input, &mut |decoded| {
        // Everything tar reads counts, headers and long names included, so
        // a small layer cannot decompress into more than the limit.
        let mut bounded = Bounded {
            inner: decoded,
            left: limits.max_bytes.saturating_sub(usage.decompressed),
            limit: limits.max_bytes,
        };
        let applied = apply_tar(&mut bounded, root, layer, limits, usage, stop);
        usage.decompressed = limits.max_bytes.saturating_sub(bounded.left);
        match applied {
            Ok(()) => Ok(()),
            Err(e) => {
                failure = Some(e);
                Err(std::io::Error::other("layer refused"))
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    result.map_err(|source| UnpackError::Read { layer, source })
}

/// A reader that fails once `left` bytes have been read.
struct Bounded<'a> {
    inner: &'a mut dyn Read,
    left: u64,
    limit: u64,
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(format!(
                "the image decompresses to more than {} bytes; refused",
                self.limit
            )));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn apply_tar(
    input: &mut dyn Read,
    root: &Path,
    layer: usize,
    limits: Limits,
    usage: &mut Usage,
    stop: &AtomicBool,
) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(is_root());
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let read = |source| UnpackError::Read { layer, source };
    for entry in archive.entries().map_err(read)? {
        if stop.load(Ordering::Relaxed) {
            return Err(UnpackError::Stopped);
        }
        let mut entry = entry.map_err(read)?;
        let raw = entry.path().map_err(read)?.into_owned();
        let shown = raw.display().to_string();
        let escape = || UnpackError::Escape {
            layer,
            path: shown.clone(),
        };
        let Some(relative) = clean(&raw) else {
            return Err(escape());
        };
        usage.entries += 1;
        usage.bytes = usage.bytes.saturating_add(entry.size());
        if usage.entries > limits.max_entries {
            return Err(UnpackError::TooLarge {
                what: "entries",
                limit: limits.max_entries,
            });
        }
        if usage.bytes > limits.max_bytes {
            return Err(UnpackError::TooLarge {
                what: "bytes",
                limit: limits.max_bytes,
            });
        }
        let Some(name) = relative.file_name().map(|n| n.to_os_string()) else {
            continue;
        };
        let write = |source| UnpackError::Write {
            layer,
            path: shown.clone(),
            source,
        };
        // The parent as the image sees it: symlinks followed inside the
        // root, never out of it; missing directories made.
        let parent = relative.parent().unwrap_or(Path::new(""));
        let dir = resolve_in_root(root, parent).map_err(write)?;
        let name_text = name.to_string_lossy();
        if name_text == OPAQUE {
            for child in std::fs::read_dir(&dir).map_err(write)? {
                remove(&child.map_err(write)?.path()).map_err(write)?;
            }
            continue;
        }
        if let Some(hidden) = name_text.strip_prefix(WHITEOUT) {
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(escape());
            }
            remove(&dir.join(hidden)).map_err(write)?;
            continue;
        }
        let dest = dir.join(&name);
        let kind = entry.header().entry_type();
        // Whatever the path held is replaced, never written through (a
        // symlink there is removed, not followed).
        if let Ok(existing) = std::fs::symlink_metadata(&dest)
            && !(kind.is_dir() && existing.is_dir())
        {
            remove(&dest).map_err(write)?;
        }
        if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(read)?
                .map(|t| t.into_owned())
                .ok_or_else(escape)?;
            let target = clean(&target).ok_or_else(escape)?;
            let target_dir =
                resolve_in_root(root, target.parent().unwrap_or(Path::new(""))).map_err(write)?;
            let target_name = target.file_name().ok_or_else(escape)?;
            std::fs::hard_link(target_dir.join(target_name), &dest).map_err(write)?;
            continue;
        }
        entry.unpack(&dest).map_err(write)?;
    }
    Ok(())
}

/// `path` without `.` and leading `/`; `None` if it has `..`.
fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Symlinks followed on the way to a directory, at most.
const MAX_LINKS: usize = 40;

/// The host path of directory `relative` as the image sees it: each
/// symlink on the way is followed as it would be inside the container
/// (an absolute target starts again at `root`, `..` stops at `root`), so
/// the result is always inside `root`; missing directories are made.
fn resolve_in_root(root: &Path, relative: &Path) -> std::io::Result<PathBuf> {
    let mut current = root.to_path_buf();
    let mut depth: Vec<PathBuf> = Vec::new();
    let mut todo: Vec<std::ffi::OsString> = relative
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            if let Some(up) = depth.pop() {
                current = up;
            }
            continue;
        }
        let next = current.join(&part);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(std::io::Error::other("too many levels of symbolic links"));
                }
                let target = std::fs::read_link(&next)?;
                if target.is_absolute() {
                    current = root.to_path_buf();
                    depth.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => todo.push(p.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(meta) if meta.is_dir() => {
                depth.push(std::mem::replace(&mut current, next));
            }
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a directory",
                    part.to_string_lossy()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&next)?;
                depth.push(std::mem::replace(&mut current, next));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(current)
}

/// Removes a file, symlink or directory tree; absent is fine.
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header owned by root with time 0 (tar refuses blank numbers).
    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h
    }

    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, contents) in entries {
            match contents {
                Some(text) => {
                    let mut h = header(tar::EntryType::Regular, text.len() as u64, 0o644);
                    b.append_data(&mut h, path, text.as_bytes()).unwrap();
                }
                None => {
                    let mut h = header(tar::EntryType::Directory, 0, 0o755);
                    b.append_data(&mut h, path, std::io::empty()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn symlink_layer(path: &str, target: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Symlink, 0, 0o777);
        b.append_link(&mut h, path, target).unwrap();
        b.into_inner().unwrap()
    }

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };

    fn apply(root: &Path, bytes: Vec<u8>) -> Result<(), UnpackError> {
        apply_as(root, bytes, LayerCodec::Tar, 1)
    }

    /// Applies `bytes` as layer number `n` in `codec`, with the test limits.
    fn apply_as(
        root: &Path,
        bytes: Vec<u8>,
        codec: LayerCodec,
        n: usize,
    ) -> Result<(), UnpackError> {
        apply_layer(
            std::io::Cursor::new(bytes),
            codec,
            root,
            n,
            LIMITS,
            &mut Usage::default(),
            &AtomicBool::new(false),
        )
    }

    #[test]
    fn whiteouts_delete_and_opaque_directories_empty() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        apply(
            root,
            layer(&[
                ("etc/", None),
                ("etc/a", Some("a")),
                ("etc/b", Some("b")),
                ("var/", None),
                ("var/x", Some("x")),
            ]),
        )
        .unwrap();
        apply(
            root,
            layer(&[
                ("etc/.wh.a", Some("")),
                ("var/.wh..wh..opq", Some("")),
                ("var/y", Some("y")),
                ("etc/b", Some("b2")),
            ]),
        )
        .unwrap();
        assert!(!root.join("etc/a").exists());
        assert_eq!(std::fs::read_to_string(root.join("etc/b")).unwrap(), "b2");
        assert!(!root.join("var/x").exists());
        assert_eq!(std::fs::read_to_string(root.join("var/y")).unwrap(), "y");
        assert!(!root.join("etc/.wh.a").exists());
    }

    #[test]
    fn a_layer_cannot_write_or_delete_outside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let out = outside.path();
        std::fs::write(out.join("victim"), "safe").unwrap();
        std::fs::create_dir(out.join("tree")).unwrap();
        std::fs::write(out.join("tree/leaf"), "safe").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        let target = out.to_str().unwrap();
        // A symlink to the outside (absolute) and one climbing out of it.
        apply(&root, symlink_layer("etc", target)).unwrap();
        apply(&root, symlink_layer("up", "../../../../../../../..")).unwrap();
        // Files, a directory and whiteouts "through" them.
        apply(
            &root,
            layer(&[
                ("etc/victim", Some("owned")),
                ("etc/tree", Some("owned")),
                ("etc/.wh.victim", Some("")),
                ("up/etc/.wh..wh..opq", Some("")),
            ]),
        )
        .unwrap();
        apply(
            &root,
            layer(&[(&format!("up{target}/victim"), Some("owned"))]),
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(out.join("victim")).unwrap(), "safe");
        assert_eq!(
            std::fs::read_to_string(out.join("tree/leaf")).unwrap(),
            "safe"
        );
        // They landed where the container sees them: inside the root.
        let inside = root.join(target.trim_start_matches('/'));
        assert_eq!(
            std::fs::read_to_string(inside.join("victim")).unwrap(),
            "owned"
        );
        // A whiteout naming its own directory or its parent is refused.
        for bad in ["x/.wh..", "x/.wh..."] {
            let e = apply(&root, layer(&[(bad, Some(""))])).unwrap_err();
            assert!(e.to_string().contains("outside the image"), "{bad}: {e}");
        }
        assert!(root.exists());
        // A file replacing a symlink to the outside replaces the link.
        let victim = out.join("victim");
        apply(&root, symlink_layer("v", victim.to_str().unwrap())).unwrap();
        apply(&root, layer(&[("v", Some("owned"))])).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "safe");
        assert_eq!(std::fs::read_to_string(root.join("v")).unwrap(), "owned");
    }

    #[test]
    fn hard_links_stay_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        apply(root, layer(&[("data", Some("image"))])).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for (name, target) in [
            ("copy", "data".to_string()),
            ("stolen", format!("{}/secret", outside.path().display())),
        ] {
            let mut h = header(tar::EntryType::Link, 0, 0o644);
            b.append_link(&mut h, name, &target).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let e = apply(root, bytes).unwrap_err();
        assert_eq!(std::fs::read_to_string(root.join("copy")).unwrap(), "image");
        assert!(!root.join("stolen").exists(), "{e}");
    }

    #[test]
    fn a_small_layer_cannot_decompress_into_a_large_one() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        // A GNU long name of 2 MiB: tar reads it into memory whole.
        let mut plain = Vec::new();
        let mut h = header(tar::EntryType::GNULongName, 2 << 20, 0o644);
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_cksum();
        plain.extend_from_slice(h.as_bytes());
        plain.extend(std::iter::repeat_n(b'a', 2 << 20));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&plain).unwrap();
        let e = apply_as(dir.path(), gz.finish().unwrap(), LayerCodec::Gzip, 1).unwrap_err();
        assert!(e.to_string().contains("more than 1048576 bytes"), "{e}");
    }

    #[test]
    fn dot_dot_and_oversized_images_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..12].copy_from_slice(b"../escape.tx");
        h.set_size(1);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'x'; 512]);
        bytes.extend_from_slice(&[0; 1024]);
        let e = apply(dir.path(), bytes).unwrap_err();
        assert!(e.to_string().contains("outside the image"), "{e}");

        let big = "x".repeat(600 << 10);
        let e = apply(dir.path(), layer(&[("a", Some(&big)), ("b", Some(&big))])).unwrap_err();
        assert!(e.to_string().contains("more than 1048576 bytes"), "{e}");
    }

    #[test]
    fn a_gzip_layer_and_a_broken_one() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer(&[("hello", Some("world"))])).unwrap();
        let gz = gz.finish().unwrap();
        apply_as(dir.path(), gz.clone(), LayerCodec::Gzip, 2).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hello")).unwrap(),
            "world"
        );
        let e = apply_as(dir.path(), gz[..gz.len() / 2].to_vec(), LayerCodec::Gzip, 2).unwrap_err();
        assert!(e.to_string().starts_with("layer 2:"), "{e}");
    }
}
