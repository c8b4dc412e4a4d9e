//! Writing the configuration files and scripts peers are started with,
//! failing the test with the path when that is impossible.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `text` to `path`.
pub fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
}

/// Writes `text` to `path` and makes it executable (0755): hook scripts
/// that a peer runs.
pub fn write_executable(path: &Path, text: &str) {
    write_file(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
}
