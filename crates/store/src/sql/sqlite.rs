//! Opening the embedded backend: one SQLite file in WAL mode under the data
//! directory, private to the server's user.

use std::path::Path;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, Connection, Executor};

use super::{Backend, ReadPool, SqlStore, WriteConn, Writer};
use crate::secrets::SecretKey;
use crate::{Result, StoreError, files};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "bellows.db";

/// Set on every connection. `synchronous = FULL`: a write acknowledged to a
/// client survives power loss, not only a crashed process.
const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                       PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;";

impl SqlStore {
    /// Opens (creating if needed) `data_dir/bellows.db` and migrates it.
    /// The directory is made 0700 and the database files 0600. BMC
    /// passwords are sealed with `key`: a key other than the one they were
    /// sealed with is refused (`WrongKey`), and passwords stored in clear
    /// text by an older Bellows are sealed now.
    pub async fn open_sqlite(data_dir: &Path, key: SecretKey) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        files::private_dir(data_dir)?;
        let db = data_dir.join(DB_FILE);
        files::private_file(&db)?;
        let url = format!("sqlite://{}?mode=rwc", url_path(&db)?);
        // The readers in a pool, the one writer on a connection of its
        // own (see `Writer`): WAL lets them run side by side.
        let mut writer = AnyConnection::connect(&url).await?;
        writer.execute(PRAGMAS).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer)
            .await?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let mut conn = AnyConnection::connect(&url).await?;
            conn.execute(PRAGMAS).await?;
            readers.push(conn);
        }
        // Whole-table loads (at open, after a copy) only: its connection
        // closes when idle.
        let pool = pool_of(1)
            .min_connections(0)
            .idle_timeout(Some(std::time::Duration::from_secs(30)))
            .connect_lazy(&url)?;
        let writer = Writer::Sqlite(tokio::sync::Mutex::new(Some(writer)));
        let store = SqlStore::finish_open(
            pool,
            Some(ReadPool::new(readers)),
            writer,
            Backend::Sqlite,
            key,
        )
        .await?;
        if store.seal_clear_secrets().await? > 0 {
            // Rewrite the file and empty the WAL so that the clear text is
            // not left behind in free pages.
            let mut conn = store.begin().await?;
            if let WriteConn::Sqlite(guard) = &mut conn
                && let Some(conn) = guard.as_mut()
            {
                sqlx::query("VACUUM").execute(&mut *conn).await?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut *conn)
                    .await?;
            }
        }
        for suffix in ["-wal", "-shm"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            files::tighten_if_present(Path::new(&name))?;
        }
        Ok(store)
    }
}

/// Connections that only read (each statement runs on its connection's
/// own thread).
const READERS: usize = 4;

/// Pool options of `max` connections, each set up with [`PRAGMAS`].
fn pool_of(max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(PRAGMAS).await?;
                Ok(())
            })
        })
}

/// A file path as the path of a `sqlite://` URL: `%`, `?` and `#` (which
/// the URL would read as an escape, the query or the fragment) escaped.
fn url_path(path: &Path) -> Result<String> {
    let Some(text) = path.to_str() else {
        return Err(StoreError::Location(format!(
            "the database path {} is not UTF-8; choose a data directory whose name is",
            path.display()
        )));
    };
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory whose name holds URL syntax still opens where it
    /// says, not a truncated path.
    #[tokio::test]
    async fn odd_directory_names_open_where_they_say() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a?b#c%20d");
        let store = SqlStore::open_sqlite(&dir, SecretKey::from_bytes(&[1; 32]))
            .await
            .unwrap();
        store.close().await;
        assert!(dir.join(DB_FILE).is_file());
        assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 1);
    }
}
