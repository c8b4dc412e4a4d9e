//! `writefile`: write one file onto a partition's filesystem.
//!
//! Environment, as Tinkerbell's `writefile` action reads it:
//!
//! - `DEST_DISK`: the partition to mount (`/dev/sda3`). Bellows' extension:
//!   empty or unset writes on the worker's own filesystem (the in-memory OS,
//!   tests).
//! - `FS_TYPE`: its filesystem type (`ext4`, `xfs`, `vfat`, …); required
//!   with `DEST_DISK`.
//! - `DEST_PATH`: absolute path of the file inside that filesystem; `..`
//!   components are refused.
//! - `CONTENTS`: the file's contents.
//! - `UID`, `GID`: owner of the file and of directories created for it
//!   (decimal). Unset keeps the owner a new file gets (the worker's).
//! - `MODE`: the file's permissions, octal (`0600`); default `0644`. It is
//!   set exactly (no umask), on new and existing files.
//! - `DIRMODE`: permissions of the directories created, octal; default
//!   `0755`. Existing directories are left as they are.
//!
//! Not supported: the variants of later Tinkerbell versions that render the
//! contents from elsewhere (`BOOTCONFIG`, `STATIC_NETPLAN`, `HEGEL_URLS`);
//! `BOOTCONFIG` set fails the action rather than write something else.
//!
//! The filesystem is mounted on a fresh directory under the temporary
//! directory and always unmounted, also on errors. Paths are resolved with
//! `openat2(RESOLVE_IN_ROOT)`, so a symlink in the target filesystem (say an
//! absolute `/etc/resolv.conf` link) resolves inside it, never into the
//! worker's own files. The file is fsynced, and so is its directory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;

use crate::runtime::{RunContext, RunResult};

/// Why the file could not be written; the runtime turns it into a failed
/// result naming the cause.
#[derive(Debug, thiserror::Error)]
pub enum WriteFileError {
    /// A setting is missing or malformed.
    #[error("{0}")]
    Invalid(String),
    /// A variant we do not implement.
    #[error("{0} is not supported by the built-in writefile (only CONTENTS is)")]
    Unsupported(&'static str),
    /// The mount point could not be made.
    #[error("cannot create a mount point: {0}")]
    MountPoint(io::Error),
    /// mount(2) failed.
    #[error("mounting DEST_DISK {device} ({fs_type}) failed: {errno}")]
    Mount {
        /// The partition.
        device: String,
        /// `FS_TYPE`.
        fs_type: String,
        /// Why.
        errno: Errno,
    },
    /// umount(2) failed after the file was written.
    #[error("DEST_DISK {device} could not be unmounted from {dir}: {errno}")]
    Unmount {
        /// The partition.
        device: String,
        /// Where it is still mounted.
        dir: String,
        /// Why.
        errno: Errno,
    },
    /// A directory on the way could not be opened or made.
    #[error("directory {path}: {detail}")]
    Directory {
        /// Path inside the target filesystem.
        path: String,
        /// Why.
        detail: String,
    },
    /// The file itself could not be written.
    #[error("file {path}: {detail}")]
    File {
        /// Path inside the target filesystem.
        path: String,
        /// Why.
        detail: String,
    },
    /// A blocking task died (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The action's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Partition to mount; `None` for the worker's own filesystem.
    pub device: Option<String>,
    /// Filesystem type for the mount.
    pub fs_type: String,
    /// Path of the file, relative to the filesystem's root, checked to have
    /// only normal components.
    pub path: PathBuf,
    /// What to write.
    pub contents: String,
    /// Owner to set, if any.
    pub uid: Option<u32>,
    /// Group to set, if any.
    pub gid: Option<u32>,
    /// File permissions.
    pub mode: u32,
    /// Permissions of created directories.
    pub dir_mode: u32,
}

impl Params {
    /// Reads and checks the environment.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Params, WriteFileError> {
        let get = |key: &str| env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let invalid = |m: String| WriteFileError::Invalid(m);
        if get("BOOTCONFIG").is_some() {
            return Err(WriteFileError::Unsupported("BOOTCONFIG"));
        }
        let device = get("DEST_DISK").map(str::to_string);
        let fs_type = get("FS_TYPE").unwrap_or_default().to_string();
        if device.is_some() && fs_type.is_empty() {
            return Err(invalid("FS_TYPE is required with DEST_DISK".into()));
        }
        let dest = get("DEST_PATH").ok_or_else(|| invalid("DEST_PATH is not set".into()))?;
        let path = relative_path(dest).map_err(invalid)?;
        let octal = |key: &str, default: u32| -> Result<u32, WriteFileError> {
            match get(key) {
                None => Ok(default),
                Some(v) => parse_mode(v)
                    .ok_or_else(|| invalid(format!("{key} {v:?} is not an octal mode like 0644"))),
            }
        };
        let id = |key: &str| -> Result<Option<u32>, WriteFileError> {
            get(key)
                .map(|v| {
                    v.parse::<u32>()
                        .map_err(|_| invalid(format!("{key} {v:?} is not a numeric id")))
                })
                .transpose()
        };
        Ok(Params {
            device,
            fs_type,
            path,
            // CONTENTS is taken as given: whitespace may matter.
            contents: env.get("CONTENTS").cloned().unwrap_or_default(),
            uid: id("UID")?,
            gid: id("GID")?,
            mode: octal("MODE", 0o644)?,
            dir_mode: octal("DIRMODE", 0o755)?,
        })
    }
}

/// An octal permission mode (`0600`, `600`, `0o600`) of at most `07777`.
pub fn parse_mode(value: &str) -> Option<u32> {
    let digits = value.strip_prefix("0o").unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

/// `DEST_PATH` as a path relative to the filesystem's root: absolute, with a
/// file name, and no `..` that could climb out of it.
pub fn relative_path(dest: &str) -> Result<PathBuf, String> {
    path_in_root("DEST_PATH", dest)
}

/// The file path in setting `key` (an absolute path inside a mounted
/// filesystem) relative to that filesystem's root; errors name `key`.
pub(super) fn path_in_root(key: &str, dest: &str) -> Result<PathBuf, String> {
    let relative = relative_to_root(key, dest)?;
    if relative.as_os_str().is_empty() {
        return Err(format!("{key} {dest:?} has no file name"));
    }
    if dest.ends_with('/') {
        return Err(format!("{key} {dest:?} names a directory, not a file"));
    }
    Ok(relative)
}

/// The absolute path in setting `key` relative to a filesystem's root
/// (empty for `/` itself), refusing `..` that could climb out of it.
pub(super) fn relative_to_root(key: &str, value: &str) -> Result<PathBuf, String> {
    let path = Path::new(value);
    if !path.is_absolute() {
        return Err(format!("{key} {value:?} must be an absolute path"));
    }
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => relative.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("{key} {value:?} must not contain '..'"));
            }
        }
    }
    Ok(relative)
}

/// Runs the action.
pub(crate) async fn run(env: &BTreeMap<String, String>, ctx: &RunContext) -> RunResult {
    let params = match Params::from_env(env) {
        Ok(params) => params,
        Err(e) => return RunResult::failed(e.to_string()),
    };
    if ctx.cancel.is_cancelled() {
        return super::cancelled("writefile cancelled before it started");
    }
    // Mounting and writing one file take well under a second; the work
    // runs to its end (so the unmount always happens) even if cancelled.
    let result = tokio::task::spawn_blocking(move || write_file(&params))
        .await
        .map_err(|e| WriteFileError::Internal(e.to_string()))
        .and_then(|r| r);
    match result {
        Ok(message) => {
            ctx.logs.note(format!("writefile: {message}"));
            RunResult::success(message)
        }
        Err(e) => {
            let message = e.to_string();
            ctx.logs.note(format!("writefile failed: {message}"));
            RunResult::failed(message)
        }
    }
}

/// Mounts if asked, writes, unmounts.
fn write_file(params: &Params) -> Result<String, WriteFileError> {
    let shown = Path::new("/").join(&params.path).display().to_string();
    match &params.device {
        None => {
            write_under(Path::new("/"), params)?;
            Ok(format!("wrote {} bytes to {shown}", params.contents.len()))
        }
        Some(device) => {
            let mount = Mount::new(device, &params.fs_type, MsFlags::empty())
                .map_err(|e| mount_error(device, &params.fs_type, e))?;
            let written = write_under(mount.dir(), params);
            let unmounted = mount.unmount();
            written?;
            unmounted.map_err(|e| mount_error(device, &params.fs_type, e))?;
            Ok(format!(
                "wrote {} bytes to {shown} on {device}",
                params.contents.len()
            ))
        }
    }
}

/// Creates the missing directories and writes the file, resolving every
/// path inside `root`.
fn write_under(root: &Path, params: &Params) -> Result<(), WriteFileError> {
    let root_fd = File::open(root).map_err(|e| WriteFileError::Directory {
        path: root.display().to_string(),
        detail: e.to_string(),
    })?;
    let in_root =
        |relative: &Path, flags: OFlag, mode: u32| open_in_root(&root_fd, relative, flags, mode);
    let shown = |relative: &Path| Path::new("/").join(relative).display().to_string();
    let dir_error = |relative: &Path, detail: String| WriteFileError::Directory {
        path: shown(relative),
        detail,
    };

    // Walk down the parents, making what is missing.
    let parent = params.path.parent().unwrap_or(Path::new(""));
    let mut current = PathBuf::new();
    let mut dir = in_root(Path::new("."), OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)
        .map_err(|e| dir_error(Path::new(""), describe(e)))?;
    for component in parent.components() {
        current.push(component);
        dir = match in_root(&current, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0) {
            Ok(existing) => existing,
            Err(Errno::ENOENT) => {
                make_dir(&dir, component.as_os_str(), params)
                    .map_err(|e| dir_error(&current, describe(e)))?;
                in_root(&current, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)
                    .map_err(|e| dir_error(&current, describe(e)))?
            }
            Err(Errno::ENOTDIR) => {
                return Err(dir_error(&current, "exists and is not a directory".into()));
            }
            Err(e) => return Err(dir_error(&current, describe(e))),
        };
    }

    let file_error = |detail: String| WriteFileError::File {
        path: shown(&params.path),
        detail,
    };
    let mut file = in_root(
        &params.path,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOCTTY,
        params.mode,
    )
    .map_err(|e| file_error(describe(e)))?;
    file.write_all(params.contents.as_bytes())
        .map_err(|e| file_error(format!("write failed: {e}")))?;
    // Owner first: chown clears set-id bits that MODE may ask for.
    if params.uid.is_some() || params.gid.is_some() {
        std::os::unix::fs::fchown(&file, params.uid, params.gid)
            .map_err(|e| file_error(format!("cannot set owner: {e}")))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(params.mode))
        .map_err(|e| file_error(format!("cannot set mode: {e}")))?;
    file.sync_all()
        .map_err(|e| file_error(format!("fsync failed: {e}")))?;
    dir.sync_all()
        .map_err(|e| dir_error(parent, format!("fsync failed: {e}")))?;
    Ok(())
}

/// Opens `relative` under the directory `root` with `openat2(RESOLVE_IN_ROOT)`:
/// `..` and symlinks (absolute ones too) resolve as if `root` were `/`, so
/// nothing outside it can be reached. `O_CLOEXEC` is always added.
pub(super) fn open_in_root(
    root: &File,
    relative: &Path,
    flags: OFlag,
    mode: u32,
) -> nix::Result<File> {
    openat2(
        root,
        relative,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(Mode::from_bits_truncate(mode))
            .resolve(ResolveFlag::RESOLVE_IN_ROOT),
    )
    .map(File::from)
}

/// Makes one directory in `parent` with `DIRMODE` and the owner asked for.
fn make_dir(parent: &File, name: &std::ffi::OsStr, params: &Params) -> nix::Result<()> {
    match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(params.dir_mode)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let made = File::from(nix::fcntl::openat(
        parent,
        name,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?);
    if params.uid.is_some() || params.gid.is_some() {
        std::os::unix::fs::fchown(&made, params.uid, params.gid)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    }
    made.set_permissions(std::fs::Permissions::from_mode(params.dir_mode))
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    Ok(())
}

/// An errno in words, with a hint for the one that means an old kernel.
pub(super) fn describe(errno: Errno) -> String {
    match errno {
        Errno::ENOSYS => "openat2 is not available (Linux 5.6 or later is needed)".into(),
        e => e.desc().to_string(),
    }
}

/// A [`Mount`] failure, turned into each action's own error by the caller.
#[derive(Debug)]
pub(super) enum MountError {
    /// The mount point could not be made.
    MountPoint(io::Error),
    /// mount(2) failed.
    Mount(Errno),
    /// umount(2) failed; the filesystem is still mounted on `dir`.
    Unmount {
        /// Where it is still mounted.
        dir: String,
        /// Why.
        errno: Errno,
    },
}

/// `DEST_DISK`'s [`MountError`] as writefile reports it.
fn mount_error(device: &str, fs_type: &str, error: MountError) -> WriteFileError {
    match error {
        MountError::MountPoint(e) => WriteFileError::MountPoint(e),
        MountError::Mount(errno) => WriteFileError::Mount {
            device: device.to_string(),
            fs_type: fs_type.to_string(),
            errno,
        },
        MountError::Unmount { dir, errno } => WriteFileError::Unmount {
            device: device.to_string(),
            dir,
            errno,
        },
    }
}

/// A filesystem mounted on a directory of its own; unmounted on drop if
/// [`Mount::unmount`] was not called.
pub(super) struct Mount {
    dir: PathBuf,
    mounted: bool,
}

impl Mount {
    /// Mounts `device` (`fs_type`) with `flags` (`MS_RDONLY`, …) on a new
    /// directory under the temporary directory.
    pub(super) fn new(device: &str, fs_type: &str, flags: MsFlags) -> Result<Mount, MountError> {
        let dir = mount_point().map_err(MountError::MountPoint)?;
        let mounted = nix::mount::mount(Some(device), &dir, Some(fs_type), flags, None::<&str>);
        if let Err(errno) = mounted {
            let _ = std::fs::remove_dir(&dir);
            return Err(MountError::Mount(errno));
        }
        Ok(Mount { dir, mounted: true })
    }

    /// Where the filesystem is mounted.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmounts and removes the mount point.
    pub(super) fn unmount(mut self) -> Result<(), MountError> {
        nix::mount::umount(&self.dir).map_err(|errno| MountError::Unmount {
            dir: self.dir.display().to_string(),
            errno,
        })?;
        self.mounted = false;
        // Only an empty directory: never anything recursive near a mount.
        let _ = std::fs::remove_dir(&self.dir);
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let detached = nix::mount::umount(&self.dir)
                .or_else(|_| nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH));
            if detached.is_ok() {
                let _ = std::fs::remove_dir(&self.dir);
            }
        }
    }
}

/// A new, empty directory to mount on.
fn mount_point() -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "bellows-mount-{}-{nanos}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free mount point name",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::builtin::test_env as env;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0600"), Some(0o600));
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("0o755"), Some(0o755));
        assert_eq!(parse_mode("4755"), Some(0o4755));
        assert_eq!(parse_mode("0"), Some(0));
        assert_eq!(parse_mode("0800"), None);
        assert_eq!(parse_mode("rw-r--r--"), None);
        assert_eq!(parse_mode(""), None);
        assert_eq!(parse_mode("17777"), None);
    }

    #[test]
    fn paths_stay_inside() {
        assert_eq!(
            relative_path("/etc/myconfig/foo"),
            Ok(PathBuf::from("etc/myconfig/foo"))
        );
        assert_eq!(relative_path("//etc/./foo"), Ok(PathBuf::from("etc/foo")));
        assert!(relative_path("etc/foo").unwrap_err().contains("absolute"));
        assert!(relative_path("/etc/../../foo").unwrap_err().contains(".."));
        assert!(relative_path("/").unwrap_err().contains("no file name"));
        assert!(relative_path("/etc/").unwrap_err().contains("directory"));
    }

    #[test]
    fn params_like_tinkerbell() {
        let params = Params::from_env(&env(&[
            ("DEST_DISK", "/dev/sda3"),
            ("FS_TYPE", "ext4"),
            ("DEST_PATH", "/etc/myconfig/foo"),
            ("CONTENTS", "hello-world\n"),
            ("UID", "0"),
            ("GID", "0"),
            ("MODE", "0600"),
            ("DIRMODE", "0700"),
        ]))
        .unwrap();
        assert_eq!(
            params,
            Params {
                device: Some("/dev/sda3".into()),
                fs_type: "ext4".into(),
                path: PathBuf::from("etc/myconfig/foo"),
                contents: "hello-world\n".into(),
                uid: Some(0),
                gid: Some(0),
                mode: 0o600,
                dir_mode: 0o700,
            }
        );
        let defaults = Params::from_env(&env(&[("DEST_PATH", "/tmp/x")])).unwrap();
        assert_eq!(defaults.device, None);
        assert_eq!((defaults.uid, defaults.gid), (None, None));
        assert_eq!((defaults.mode, defaults.dir_mode), (0o644, 0o755));
    }

    #[test]
    fn bad_params_are_named() {
        let error = |pairs: &[(&str, &str)]| Params::from_env(&env(pairs)).unwrap_err().to_string();
        assert_eq!(
            error(&[("DEST_DISK", "/dev/sda1"), ("DEST_PATH", "/a")]),
            "FS_TYPE is required with DEST_DISK"
        );
        assert_eq!(error(&[("FS_TYPE", "ext4")]), "DEST_PATH is not set");
        assert!(error(&[("DEST_PATH", "/a"), ("MODE", "rw")]).contains("MODE \"rw\""));
        assert!(error(&[("DEST_PATH", "/a"), ("UID", "root")]).contains("UID \"root\""));
        assert_eq!(
            error(&[("DEST_PATH", "/a"), ("BOOTCONFIG", "x")]),
            "BOOTCONFIG is not supported by the built-in writefile (only CONTENTS is)"
        );
    }
}
