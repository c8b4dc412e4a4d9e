//! Layers onto a root file system, bottom layer first, as the OCI image
//! spec's "applying changesets" says: each entry replaces what its path
//! held; `.wh.NAME` deletes `NAME` from the layers below; `.wh..wh..opq`
//! empties its directory of them. Paths are kept inside the root: `..` is
//! refused, an existing file or symlink is removed before an entry takes
//! its place (so a symlink from an earlier layer is never written
//! through), and `tar` refuses parents that resolve outside the root.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

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
pub fn apply_layer<R: Read + Send + 'static>(
    input: R,
    codec: LayerCodec,
    root: &Path,
    layer: usize,
    limits: Limits,
    usage: &mut Usage,
) -> Result<(), UnpackError> {
    let codec = match codec {
        LayerCodec::Tar => bellows_compression::Codec::Raw,
        LayerCodec::Gzip => bellows_compression::Codec::Gzip,
        LayerCodec::Zstd => bellows_compression::Codec::Zstd,
    };
    let mut failure: Option<UnpackError> = None;
    let result = bellows_compression::decode(codec, input, &mut |decoded| match apply_tar(
        decoded, root, layer, limits, usage,
    ) {
        Ok(()) => Ok(()),
        Err(e) => {
            failure = Some(e);
            Err(std::io::Error::other("layer refused"))
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    result.map_err(|source| UnpackError::Read { layer, source })
}

fn apply_tar(
    input: &mut dyn Read,
    root: &Path,
    layer: usize,
    limits: Limits,
    usage: &mut Usage,
) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(is_root());
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let read = |source| UnpackError::Read { layer, source };
    for entry in archive.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        let raw = entry.path().map_err(read)?.into_owned();
        let shown = raw.display().to_string();
        let Some(relative) = clean(&raw) else {
            return Err(UnpackError::Escape { layer, path: shown });
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
        if relative.as_os_str().is_empty() {
            continue;
        }
        let write = |source| UnpackError::Write {
            layer,
            path: shown.clone(),
            source,
        };
        let name = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = relative.parent().unwrap_or(Path::new(""));
        if name == OPAQUE {
            let dir = inside(root, parent).ok_or_else(|| UnpackError::Escape {
                layer,
                path: shown.clone(),
            })?;
            if dir.is_dir() {
                for child in std::fs::read_dir(&dir).map_err(write)? {
                    remove(&child.map_err(write)?.path()).map_err(write)?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            let dir = inside(root, parent).ok_or_else(|| UnpackError::Escape {
                layer,
                path: shown.clone(),
            })?;
            remove(&dir.join(hidden)).map_err(write)?;
            continue;
        }
        let dest = root.join(&relative);
        let is_dir = entry.header().entry_type().is_dir();
        if let Ok(existing) = std::fs::symlink_metadata(&dest)
            && !(is_dir && existing.is_dir())
        {
            remove(&dest).map_err(write)?;
        }
        match entry.unpack_in(root) {
            Ok(true) => {}
            Ok(false) => {
                return Err(UnpackError::Escape { layer, path: shown });
            }
            Err(e) => return Err(write(e)),
        }
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

/// `root/relative` when it resolves inside `root` (symlinks followed);
/// a path that does not exist yet resolves to itself.
fn inside(root: &Path, relative: &Path) -> Option<PathBuf> {
    let root = std::fs::canonicalize(root).ok()?;
    let joined = root.join(relative);
    match std::fs::canonicalize(&joined) {
        Ok(real) if real.starts_with(&root) => Some(real),
        Ok(_) => None,
        Err(_) => Some(joined),
    }
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

    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, contents) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match contents {
                Some(text) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(text.len() as u64);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, path, text.as_bytes()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, path, std::io::empty()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn symlink_layer(path: &str, target: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, path, target).unwrap();
        b.into_inner().unwrap()
    }

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };

    fn apply(root: &Path, bytes: Vec<u8>) -> Result<(), UnpackError> {
        apply_layer(
            std::io::Cursor::new(bytes),
            LayerCodec::Tar,
            root,
            1,
            LIMITS,
            &mut Usage::default(),
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
    fn a_layer_cannot_write_outside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        // A symlink to the outside, then a file written "through" it.
        apply(
            &root,
            symlink_layer("etc", outside.path().to_str().unwrap()),
        )
        .unwrap();
        let e = apply(&root, layer(&[("etc/passwd", Some("owned"))]));
        assert!(
            e.is_err(),
            "a write through a symlink to the outside was allowed"
        );
        assert!(!outside.path().join("passwd").exists());
        // A file replacing a symlink to the outside replaces the link.
        std::fs::write(outside.path().join("victim"), "safe").unwrap();
        let victim = outside.path().join("victim");
        apply(&root, symlink_layer("v", victim.to_str().unwrap())).unwrap();
        apply(&root, layer(&[("v", Some("owned"))])).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "safe");
        assert_eq!(std::fs::read_to_string(root.join("v")).unwrap(), "owned");
        // A whiteout through the outside link deletes nothing there.
        std::fs::write(outside.path().join("keep"), "k").unwrap();
        let e = apply(&root, layer(&[("etc/.wh.keep", Some(""))])).unwrap_err();
        assert!(e.to_string().contains("outside the image"), "{e}");
        assert!(outside.path().join("keep").exists());
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
        apply_layer(
            std::io::Cursor::new(gz.clone()),
            LayerCodec::Gzip,
            dir.path(),
            2,
            LIMITS,
            &mut Usage::default(),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hello")).unwrap(),
            "world"
        );
        let e = apply_layer(
            std::io::Cursor::new(gz[..gz.len() / 2].to_vec()),
            LayerCodec::Gzip,
            dir.path(),
            2,
            LIMITS,
            &mut Usage::default(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("layer 2:"), "{e}");
    }
}
