//! The first admin token: made on the first start, written where the CLI
//! on the same machine finds it, so the README's two commands work with no
//! configuration and nothing is open meanwhile.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use bellows_api::auth::Authenticator;
use bellows_model::auth::Role;

use crate::error::CliError;

/// The admin token's file in the data directory (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The admin token file of `data_dir`.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

/// Creates the first admin token when the store has none, and writes it to
/// `DATA_DIR/admin.token` (0600). Later starts leave tokens alone.
pub async fn first_admin_token(auth: &Authenticator, data_dir: &Path) -> Result<(), CliError> {
    let admins = auth
        .tokens()
        .count_api_tokens(Role::Admin)
        .await
        .map_err(|e| CliError::Server(format!("cannot read tokens: {e}")))?;
    let path = admin_token_path(data_dir);
    if admins > 0 {
        if !path.exists() {
            tracing::info!(
                "no {} in the data directory: the CLI needs --token or BELLOWS_TOKEN",
                ADMIN_TOKEN_FILE
            );
        }
        return Ok(());
    }
    let name = format!("admin-{}", bellows_model::time::now_ms());
    let created = auth
        .create_token(&name, Role::Admin, "bootstrap")
        .await
        .map_err(|e| CliError::Server(format!("cannot create the first admin token: {e}")))?;
    write_private(&path, &created.token)
        .map_err(|e| CliError::Server(format!("cannot write {}: {e}", path.display())))?;
    tracing::info!(
        token = %name,
        "created the first admin token in {}: the CLI on this machine finds it there; elsewhere give it as BELLOWS_TOKEN, or make narrower ones with `bellows token create`",
        path.display()
    );
    Ok(())
}

/// Writes `contents` to a new file readable by its owner only (replacing
/// any old file, whose mode could have been looser).
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_token_file_is_private_even_over_a_loose_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&path, "bellows_api_x").expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "bellows_api_x\n"
        );
    }
}
