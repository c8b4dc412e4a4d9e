//! What the server may serve: request-path sanitising (with per-MAC prefixes),
//! the [`FileSource`] trait, and its implementations for a directory on disk
//! and for in-memory files.
//!
//! Paths are checked twice: [`sanitize_request_path`] refuses `..`, absolute
//! and control-character names before anything touches the disk, and
//! [`DirectorySource`] then refuses symlinks resolving outside its root and
//! anything that is not a regular file.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bellows_model::MacAddr;

/// The MAC of a path's first component (`01-aa-bb-cc-dd-ee-ff/file`),
/// reported so the caller can record which machine fetched what: every
/// spelling [`MacAddr`] parses, plus pxelinux's ARP-type prefix `01-` (or
/// `01:`) with the same separator throughout.
pub fn parse_path_mac(text: &str) -> Option<MacAddr> {
    if text.trim() != text {
        return None;
    }
    let bare = match (text.len(), text.as_bytes().get(2)) {
        (20, Some(separator @ (b'-' | b':'))) => {
            let rest = text.strip_prefix("01")?.get(1..)?;
            (rest.as_bytes().get(2) == Some(separator)).then_some(rest)?
        }
        _ => text,
    };
    bare.parse().ok()
}

/// A relative path with no `..`, no empty or `.` components and no control
/// characters, components joined by `/`. Only [`sanitize_request_path`]
/// makes one, so a [`FileSource`] never sees an unchecked name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SafePath(String);

impl SafePath {
    /// The path, `/`-separated, never starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sanitised request: the path to serve, and the MAC prefix if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// The path with any MAC prefix removed.
    pub path: SafePath,
    /// The MAC of a leading `<mac>/` component.
    pub mac: Option<MacAddr>,
    /// With a MAC prefix: the path as requested, tried first so a per-machine
    /// directory can override the shared file.
    pub with_mac_prefix: Option<SafePath>,
}

impl RequestPath {
    /// The paths to try, most specific first.
    pub fn candidates(&self) -> impl Iterator<Item = &SafePath> {
        self.with_mac_prefix
            .iter()
            .chain(std::iter::once(&self.path))
    }
}

/// Why a requested name is refused before looking at the disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing left after removing separators and a MAC prefix.
    #[error("the file name is empty")]
    Empty,
    /// A `..` component (refused even when it would stay inside the root).
    #[error("the path contains a '..' component")]
    ParentComponent,
    /// Still absolute after one leading `/` is removed (`//x`, `C:\x`).
    #[error("the path is absolute")]
    Absolute,
    /// Control characters have no place in a boot file name.
    #[error("the path contains a control character")]
    ControlCharacter,
}

/// Turns a requested file name into a [`RequestPath`]: `\` counts as `/`
/// (PXE ROMs send either), one leading `/` means the root of the served tree,
/// repeated `/` and `.` components are dropped, and a first component that is
/// a MAC address is split off (when something follows it).
pub fn sanitize_request_path(requested: &str) -> Result<RequestPath, PathError> {
    if requested.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    let normalized = requested.replace('\\', "/");
    let relative = normalized.strip_prefix('/').unwrap_or(&normalized);
    if relative.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let mut components = Vec::new();
    for component in relative.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(PathError::ParentComponent),
            other => components.push(other),
        }
    }
    let first = components.first().ok_or(PathError::Empty)?;
    let is_drive = first.len() == 2
        && first.ends_with(':')
        && first.starts_with(|c: char| c.is_ascii_alphabetic());
    if is_drive {
        return Err(PathError::Absolute);
    }
    let mac = (components.len() > 1)
        .then(|| parse_path_mac(first))
        .flatten();
    let full = SafePath(components.join("/"));
    Ok(match mac {
        Some(mac) => RequestPath {
            path: SafePath(components[1..].join("/")),
            mac: Some(mac),
            with_mac_prefix: Some(full),
        },
        None => RequestPath {
            path: full,
            mac: None,
            with_mac_prefix: None,
        },
    })
}

/// File contents with a known size, readable at any offset (so a
/// retransmission rereads instead of the server keeping whole files).
/// Implementations block; the server calls them off the async threads.
pub trait FileContent: Send + Sync {
    /// Size in bytes, fixed for the life of the transfer.
    fn size(&self) -> u64;

    /// Reads into `buf` from `offset`, filling it unless the end comes first;
    /// returns the bytes read (0 at or past the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// The whole contents, when they are in memory already: the server then
    /// sends blocks straight from them, with no read buffer of its own and
    /// no trip to the blocking pool.
    fn in_memory(&self) -> Option<&[u8]> {
        None
    }
}

/// Why a [`FileSource`] could not open a path.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Nothing by that name.
    #[error("no such file")]
    NotFound,
    /// Exists but must not be served; the reason is for the operator's log.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The disk failed us.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Where served files come from: a directory, memory, or something computed
/// per request. Implementations block; the server calls them off the async
/// threads.
pub trait FileSource: Send + Sync {
    /// Opens a sanitised relative path.
    fn open(&self, path: &SafePath) -> Result<Arc<dyn FileContent>, OpenError>;
}

/// A regular file opened from disk, with its size taken at open time.
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    size: u64,
}

impl FileContent for DiskFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        // Never past the size taken at open: a file that grows meanwhile is
        // served as it was, and huge offsets never reach pread (EINVAL).
        let remaining = self.size.saturating_sub(offset);
        let wanted = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let buf = &mut buf[..wanted];
        let mut filled = 0;
        while filled < buf.len() {
            match self
                .file
                .read_at(&mut buf[filled..], offset + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

/// In-memory contents, for generated or embedded files.
impl FileContent for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn in_memory(&self) -> Option<&[u8]> {
        Some(self.as_slice())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.as_slice().read_at(offset, buf)
    }
}

/// In-memory contents, for generated or embedded files.
impl FileContent for Arc<[u8]> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn in_memory(&self) -> Option<&[u8]> {
        Some(self)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.as_ref().read_at(offset, buf)
    }
}

/// In-memory contents, for generated or embedded files.
impl FileContent for &'static [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn in_memory(&self) -> Option<&[u8]> {
        Some(self)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let bytes: &[u8] = self;
        bytes.read_at(offset, buf)
    }
}

impl FileContent for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn in_memory(&self) -> Option<&[u8]> {
        Some(self)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let available = &self[start..];
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        Ok(n)
    }
}

/// Serves the regular files under one directory, following symlinks only
/// while they stay inside it. Files up to [`CACHE_FILE_MAX`] are kept in
/// memory once read (boot loaders: a storm fetches the same few thousands
/// of times), and read again when their size, time or inode changes.
#[derive(Debug, Clone)]
pub struct DirectorySource {
    root: PathBuf,
    cache: Arc<std::sync::Mutex<HashMap<PathBuf, Cached>>>,
}

/// Largest file kept in memory.
pub const CACHE_FILE_MAX: u64 = 8 << 20;
/// Most bytes kept in memory over all files; beyond, files are read from
/// disk per transfer as before.
pub const CACHE_TOTAL_MAX: u64 = 64 << 20;

/// A file's contents and what identifies the version they are of.
#[derive(Debug)]
struct Cached {
    stamp: (u64, u64, i64, i64),
    bytes: Arc<[u8]>,
}

/// Size, inode and modification time (s, ns): a replaced or rewritten file
/// differs in one of them.
fn stamp(metadata: &std::fs::Metadata) -> (u64, u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (
        metadata.len(),
        metadata.ino(),
        metadata.mtime(),
        metadata.mtime_nsec(),
    )
}

impl DirectorySource {
    /// Serves `root`, which must be an existing directory; it is
    /// canonicalised now, so later renames of the path do not matter.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref().canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TFTP root {} is not a directory", root.display()),
            ));
        }
        Ok(Self {
            root,
            cache: Arc::default(),
        })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn classify(error: io::Error) -> OpenError {
        use nix::libc::{ELOOP, ENAMETOOLONG, ENOTDIR};
        match (error.kind(), error.raw_os_error()) {
            (io::ErrorKind::NotFound, _) | (_, Some(ENOTDIR | ENAMETOOLONG)) => OpenError::NotFound,
            (io::ErrorKind::PermissionDenied, _) => {
                OpenError::AccessDenied("permission denied by the file system".into())
            }
            (_, Some(ELOOP)) => OpenError::AccessDenied("too many levels of symbolic links".into()),
            _ => OpenError::Io(error),
        }
    }
}

impl FileSource for DirectorySource {
    fn open(&self, path: &SafePath) -> Result<Arc<dyn FileContent>, OpenError> {
        let joined = self.root.join(path.as_str());
        let resolved = joined.canonicalize().map_err(Self::classify)?;
        if !resolved.starts_with(&self.root) {
            return Err(OpenError::AccessDenied(format!(
                "resolves to {} outside the TFTP root {}",
                resolved.display(),
                self.root.display()
            )));
        }
        let metadata = resolved.metadata().map_err(Self::classify)?;
        if !metadata.is_file() {
            return Err(OpenError::AccessDenied(
                "not a regular file (directory, device, socket or FIFO)".into(),
            ));
        }
        // O_NONBLOCK: if the path was swapped for a FIFO since the check,
        // opening it must not hang; it does not affect regular-file reads.
        // O_NOFOLLOW: the resolved path has no symlinks left; one appearing
        // now is a race and is refused.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW)
            .open(&resolved)
            .map_err(Self::classify)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(OpenError::AccessDenied(
                "not a regular file (changed while opening)".into(),
            ));
        }
        let file = DiskFile {
            file,
            size: metadata.len(),
        };
        if metadata.len() > CACHE_FILE_MAX {
            return Ok(Arc::new(file));
        }
        let stamp = stamp(&metadata);
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hit) = cache.get(&resolved).filter(|c| c.stamp == stamp) {
            return Ok(Arc::new(Arc::clone(&hit.bytes)));
        }
        let held: u64 = cache
            .iter()
            .filter(|(path, _)| **path != resolved)
            .map(|(_, c)| c.bytes.len() as u64)
            .sum();
        if held + metadata.len() > CACHE_TOTAL_MAX {
            return Ok(Arc::new(file));
        }
        let size = usize::try_from(file.size).map_err(|_| io::Error::other("file too large"))?;
        let mut bytes = vec![0u8; size];
        if file.read_at(0, &mut bytes)? != size {
            return Err(OpenError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being read",
            )));
        }
        let bytes: Arc<[u8]> = bytes.into();
        cache.insert(
            resolved,
            Cached {
                stamp,
                bytes: Arc::clone(&bytes),
            },
        );
        Ok(Arc::new(bytes))
    }
}

/// Files held in memory by name (sanitised form, `/`-separated), for virtual
/// files the server generates and for tests.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    files: HashMap<String, Arc<[u8]>>,
}

impl MemorySource {
    /// An empty set of files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `name` (as a client would request it, e.g.
    /// `ipxe.efi` or `grub/grub.cfg`).
    pub fn insert(&mut self, name: &str, contents: impl Into<Arc<[u8]>>) {
        let key = sanitize_request_path(name)
            .map(|request| request.path.0)
            .unwrap_or_else(|_| name.to_string());
        self.files.insert(key, contents.into());
    }
}

impl FileSource for MemorySource {
    fn open(&self, path: &SafePath) -> Result<Arc<dyn FileContent>, OpenError> {
        match self.files.get(path.as_str()) {
            Some(contents) => Ok(Arc::new(Arc::clone(contents))),
            None => Err(OpenError::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sanitized(name: &str) -> (String, Option<String>) {
        let request = sanitize_request_path(name).unwrap();
        (
            request.path.as_str().to_string(),
            request.mac.map(|m| m.to_string()),
        )
    }

    #[test]
    fn mac_spellings() {
        let want = Some(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]));
        for spelling in [
            "aa:bb:cc:dd:ee:ff",
            "AA:BB:CC:DD:EE:FF",
            "aa-bb-cc-dd-ee-ff",
            "01-aa-bb-cc-dd-ee-ff",
            "01:aa:bb:cc:dd:ee:ff",
            "aabbccddeeff",
            "aabb.ccdd.eeff",
        ] {
            assert_eq!(parse_path_mac(spelling), want, "{spelling}");
        }
        for not_mac in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "02-aa-bb-cc-dd-ee-ff",
            "01-aa:bb:cc:dd:ee:ff",
            " aa:bb:cc:dd:ee:ff",
            "aa:bb-cc:dd:ee:ff",
            "gg:bb:cc:dd:ee:ff",
            "aabbccddeef",
            "aabb.ccdd.eeffx",
            "a:bb:cc:dd:ee:fff",
            "+a:bb:cc:dd:ee:ff",
            "pxelinux.0",
            "ａａ:bb:cc:dd:ee:ff",
        ] {
            assert_eq!(parse_path_mac(not_mac), None, "{not_mac}");
        }
        assert_eq!(
            MacAddr([0, 1, 0xab, 3, 4, 5]).to_string(),
            "00:01:ab:03:04:05"
        );
    }

    #[test]
    fn separators_and_leading_slash_are_normalised() {
        assert_eq!(sanitized("pxelinux.0").0, "pxelinux.0");
        assert_eq!(sanitized("/pxelinux.0").0, "pxelinux.0");
        assert_eq!(
            sanitized("\\boot\\x64\\wdsnbp.com").0,
            "boot/x64/wdsnbp.com"
        );
        assert_eq!(sanitized("a//b/./c").0, "a/b/c");
        assert_eq!(sanitized("/etc/passwd").0, "etc/passwd");
        assert_eq!(sanitized("...").0, "...");
        assert_eq!(sanitized("a/..b").0, "a/..b");
    }

    #[test]
    fn escapes_are_refused() {
        for (name, error) in [
            ("../etc/passwd", PathError::ParentComponent),
            ("a/../../x", PathError::ParentComponent),
            ("a/../b", PathError::ParentComponent),
            ("..\\..\\windows", PathError::ParentComponent),
            ("//etc/passwd", PathError::Absolute),
            ("\\\\server\\share", PathError::Absolute),
            ("C:\\boot.ini", PathError::Absolute),
            ("c:/x", PathError::Absolute),
            ("", PathError::Empty),
            ("/", PathError::Empty),
            ("./.", PathError::Empty),
            ("a\nb", PathError::ControlCharacter),
            ("a\u{7f}", PathError::ControlCharacter),
        ] {
            assert_eq!(sanitize_request_path(name), Err(error), "{name:?}");
        }
    }

    #[test]
    fn mac_prefixes_are_split_off() {
        assert_eq!(
            sanitized("01-aa-bb-cc-dd-ee-ff/ipxe.efi"),
            ("ipxe.efi".into(), Some("aa:bb:cc:dd:ee:ff".into()))
        );
        assert_eq!(
            sanitized("/AA:BB:CC:DD:EE:FF/grub/grub.cfg"),
            ("grub/grub.cfg".into(), Some("aa:bb:cc:dd:ee:ff".into()))
        );
        assert_eq!(
            sanitized("aabbccddeeff\\undionly.kpxe"),
            ("undionly.kpxe".into(), Some("aa:bb:cc:dd:ee:ff".into()))
        );
        // A MAC alone, or later in the path, is just a name.
        assert_eq!(sanitized("aabbccddeeff"), ("aabbccddeeff".into(), None));
        assert_eq!(
            sanitized("pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"),
            ("pxelinux.cfg/01-aa-bb-cc-dd-ee-ff".into(), None)
        );
        let request = sanitize_request_path("aa-bb-cc-dd-ee-ff/x").unwrap();
        let candidates: Vec<&str> = request.candidates().map(SafePath::as_str).collect();
        assert_eq!(candidates, ["aa-bb-cc-dd-ee-ff/x", "x"]);
        // A MAC followed by `..` is still refused.
        assert_eq!(
            sanitize_request_path("aa-bb-cc-dd-ee-ff/../x"),
            Err(PathError::ParentComponent)
        );
    }

    fn safe(name: &str) -> SafePath {
        sanitize_request_path(name).unwrap().path
    }

    #[test]
    fn directory_source_keeps_small_files_in_memory_until_they_change() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("ipxe.efi");
        std::fs::write(&path, b"first version").unwrap();
        let source = DirectorySource::new(root.path()).unwrap();
        let a = source.open(&safe("ipxe.efi")).unwrap();
        let b = source.open(&safe("ipxe.efi")).unwrap();
        assert_eq!(a.in_memory(), Some(&b"first version"[..]));
        // The same bytes, not a second copy.
        assert_eq!(
            a.in_memory().map(<[u8]>::as_ptr),
            b.in_memory().map(<[u8]>::as_ptr)
        );
        // Replaced (a new inode, as an upgrade's rename does): read again.
        let next = root.path().join("ipxe.efi.new");
        std::fs::write(&next, b"second").unwrap();
        std::fs::rename(&next, &path).unwrap();
        let c = source.open(&safe("ipxe.efi")).unwrap();
        assert_eq!(c.in_memory(), Some(&b"second"[..]));
        // The earlier transfer keeps the version it started with.
        assert_eq!(a.in_memory(), Some(&b"first version"[..]));
        // Larger than the cache takes: read from disk per transfer.
        let big = root.path().join("big.img");
        File::create(&big)
            .unwrap()
            .set_len(CACHE_FILE_MAX + 1)
            .unwrap();
        let d = source.open(&safe("big.img")).unwrap();
        assert!(d.in_memory().is_none());
        assert_eq!(d.size(), CACHE_FILE_MAX + 1);
    }

    #[test]
    fn directory_source_serves_regular_files_inside_the_root_only() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("boot.bin"), b"0123456789").unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(root.path().join("sub/inner"), b"x").unwrap();
        std::os::unix::fs::symlink("sub/inner", root.path().join("inside-link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("escape"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape-dir")).unwrap();
        std::os::unix::fs::symlink("loop", root.path().join("loop")).unwrap();
        let source = DirectorySource::new(root.path()).unwrap();

        let file = source.open(&safe("boot.bin")).unwrap();
        assert_eq!(file.size(), 10);
        let mut buf = [0u8; 4];
        assert_eq!(file.read_at(8, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"89");
        assert_eq!(file.read_at(10, &mut buf).unwrap(), 0);
        assert_eq!(file.read_at(u64::MAX - 1, &mut buf).unwrap(), 0);
        assert_eq!(source.open(&safe("inside-link")).unwrap().size(), 1);

        for name in ["escape", "escape-dir/secret", "sub", "loop"] {
            assert!(
                matches!(source.open(&safe(name)), Err(OpenError::AccessDenied(_))),
                "{name}"
            );
        }
        for name in ["missing", "boot.bin/x", "sub/missing"] {
            assert!(
                matches!(source.open(&safe(name)), Err(OpenError::NotFound)),
                "{name}"
            );
        }
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let root = tempfile::tempdir().unwrap();
        let fifo = root.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let source = DirectorySource::new(root.path()).unwrap();
        assert!(matches!(
            source.open(&safe("fifo")),
            Err(OpenError::AccessDenied(_))
        ));
    }

    #[test]
    fn memory_source_and_slices() {
        let mut source = MemorySource::new();
        source.insert("/dir\\file", b"abc".to_vec());
        let file = source.open(&safe("dir/file")).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(file.read_at(1, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"bc");
        assert!(matches!(
            source.open(&safe("other")),
            Err(OpenError::NotFound)
        ));
        let stat: &'static [u8] = b"xyz";
        assert_eq!(stat.read_at(5, &mut buf).unwrap(), 0);
    }
}
