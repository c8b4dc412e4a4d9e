//! Owner-only modes for the data directory (0700) and the database files
//! (0600): they hold user-data, tokens and sealed passwords. Modes are set
//! explicitly after creation, so the umask does not decide them, and looser
//! modes found on existing files are tightened and logged.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{Result, StoreError};

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every database file.
pub const FILE_MODE: u32 = 0o600;

fn failed(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Permissions {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and missing parents) as 0700, or tightens an existing
/// one that group or others may enter.
pub fn private_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) => tighten(dir, meta.permissions().mode(), DIR_MODE, "data directory"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(failed(dir))?;
            set(dir, DIR_MODE)
        }
        Err(e) => Err(failed(dir)(e)),
    }
}

/// Creates `file` empty as 0600 if it is missing (so SQLite, which gives
/// its `-wal` and `-shm` files the database's mode, never makes a looser
/// one), or tightens an existing one.
pub(crate) fn private_file(file: &Path) -> Result<()> {
    match std::fs::metadata(file) {
        Ok(meta) => tighten(file, meta.permissions().mode(), FILE_MODE, "database file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(FILE_MODE)
                .open(file)
                .map_err(failed(file))?;
            set(file, FILE_MODE)
        }
        Err(e) => Err(failed(file)(e)),
    }
}

/// Tightens `file` if it exists (the WAL and shared-memory files come and
/// go with SQLite).
pub(crate) fn tighten_if_present(file: &Path) -> Result<()> {
    match std::fs::metadata(file) {
        Ok(meta) => tighten(file, meta.permissions().mode(), FILE_MODE, "database file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed(file)(e)),
    }
}

fn tighten(path: &Path, mode: u32, want: u32, what: &str) -> Result<()> {
    let bits = mode & 0o7777;
    if bits == want {
        return Ok(());
    }
    set(path, want)?;
    if bits & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "{what} was mode {bits:04o}, open to other users; set to {want:04o}"
        );
    }
    Ok(())
}

fn set(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(failed(path))
}
