//! What a copied database file gives away: no BMC password, no way to move
//! one to another record, and nothing readable by other users.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

use super::*;
use crate::{SecretError, SecretKey};

const PASSWORD: &str = "Sealed-Pa55word-4f9e";

fn key(byte: u8) -> SecretKey {
    SecretKey::from_bytes(&[byte; 32])
}

pub(super) fn hw(id: &str, mac: &str) -> Hardware {
    let doc = serde_json::json!({"id": id, "network": {"interfaces": [{"dhcp": {"mac": mac}}]}});
    Hardware::from_value(doc).unwrap()
}

pub(super) fn record(id: &str) -> BmcRecord {
    BmcRecord {
        hardware_id: id.into(),
        address: "10.0.0.9".into(),
        port: None,
        protocol: "redfish".into(),
        username: "admin".into(),
        insecure_tls: false,
        power_state: None,
        power_checked_at: None,
        power_error: None,
    }
}

/// Every byte of the database, its WAL and its shared memory.
fn raw_files(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in [DB_FILE, "bellows.db-wal", "bellows.db-shm"] {
        all.extend(std::fs::read(dir.join(name)).unwrap_or_default());
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

async fn with_bmcs(dir: &Path, key: SecretKey, ids: &[(&str, &str)]) -> SqlStore {
    let s = SqlStore::open_sqlite(dir, key).await.unwrap();
    for (i, (id, password)) in ids.iter().enumerate() {
        s.push_hardware(hw(id, &format!("02:00:00:00:0c:{i:02x}")))
            .await
            .unwrap();
        s.put_bmc(&record(id), &BmcSecret((*password).into()))
            .await
            .unwrap();
    }
    s
}

#[tokio::test]
async fn the_database_files_never_hold_a_bmc_password() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_bmcs(dir.path(), key(1), &[("m1", PASSWORD)]).await;
    s.set_power_state("m1", Some("on"), None, 5).await.unwrap();
    // Written: the WAL holds the row now.
    assert!(!contains(&raw_files(dir.path()), PASSWORD));
    let stored: String = sqlx::query_scalar("SELECT secret FROM bmc")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("v1:"), "{stored}");
    assert_eq!(
        s.bmc_with_secret("m1").await.unwrap().unwrap().1.0,
        PASSWORD
    );
    s.close().await;
    assert!(!contains(&raw_files(dir.path()), PASSWORD));
    // The sqlite3 shell (not our code) sees only the sealed value.
    let out = std::process::Command::new("sqlite3")
        .arg(dir.path().join(DB_FILE))
        .arg("SELECT secret FROM bmc")
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("v1:") && !text.contains(PASSWORD),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_store_opened_with_another_key_refuses_and_names_the_bmcs() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_bmcs(dir.path(), key(1), &[("m1", PASSWORD), ("m2", "other")]).await;
    s.close().await;
    drop(s);

    let e = SqlStore::open_sqlite(dir.path(), key(2))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, StoreError::WrongKey { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("m1")
            && text.contains("m2")
            && text.contains(key(1).fingerprint())
            && text.contains(key(2).fingerprint()),
        "{text}"
    );
    // The right key still opens everything: the refusal changed nothing.
    let s = SqlStore::open_sqlite(dir.path(), key(1)).await.unwrap();
    assert_eq!(
        s.bmc_with_secret("m1").await.unwrap().unwrap().1.0,
        PASSWORD
    );

    // With nothing sealed left, a new key is adopted.
    s.delete_bmc("m1").await.unwrap();
    s.delete_bmc("m2").await.unwrap();
    s.close().await;
    drop(s);
    let s = SqlStore::open_sqlite(dir.path(), key(3)).await.unwrap();
    s.put_bmc(&record("m1"), &BmcSecret(PASSWORD.into()))
        .await
        .unwrap();
    assert_eq!(
        s.bmc_with_secret("m1").await.unwrap().unwrap().1.0,
        PASSWORD
    );
}

#[tokio::test]
async fn a_sealed_password_moved_or_repointed_behind_the_store_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_bmcs(dir.path(), key(1), &[("m1", PASSWORD), ("m2", "other")]).await;
    // Swap the two sealed values, as someone with write access to the file.
    let sealed: Vec<(String, String)> =
        sqlx::query_as("SELECT hardware_id, secret FROM bmc ORDER BY hardware_id")
            .fetch_all(&s.pool)
            .await
            .unwrap();
    for ((id, _), (_, value)) in sealed.iter().zip(sealed.iter().rev()) {
        sqlx::query("UPDATE bmc SET secret = $1 WHERE hardware_id = $2")
            .bind(value)
            .bind(id)
            .execute(&s.pool)
            .await
            .unwrap();
    }
    for id in ["m1", "m2"] {
        match s.bmc_with_secret(id).await {
            Err(e @ StoreError::Secret { .. }) => {
                let text = e.to_string();
                assert!(text.contains(id) && text.contains("another key"), "{text}");
                assert!(!text.contains(PASSWORD) && !text.contains("other\""));
            }
            other => panic!("{id}: {:?}", other.map(|o| o.map(|(r, _)| r))),
        }
        // The record itself is still shown.
        assert!(s.bmc(id).await.unwrap().is_some());
    }
    // Re-pointing a record in the file, keeping its sealed value: refused.
    s.put_bmc(&record("m1"), &BmcSecret(PASSWORD.into()))
        .await
        .unwrap();
    let mut evil = record("m1");
    evil.address = "10.6.6.6".into();
    sqlx::query("UPDATE bmc SET body = $1 WHERE hardware_id = 'm1'")
        .bind(encode(&evil))
        .execute(&s.pool)
        .await
        .unwrap();
    assert!(matches!(
        s.bmc_with_secret("m1").await,
        Err(StoreError::Secret {
            reason: SecretError::Mismatch,
            ..
        })
    ));
}

#[tokio::test]
async fn keeping_the_password_is_only_for_the_same_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_bmcs(dir.path(), key(1), &[("m1", PASSWORD)]).await;
    let mut same = record("m1");
    same.power_state = Some("off".into());
    s.update_bmc(&same).await.unwrap();
    assert_eq!(s.bmc("m1").await.unwrap().unwrap(), same);
    assert_eq!(
        s.bmc_with_secret("m1").await.unwrap().unwrap().1.0,
        PASSWORD
    );

    type Edit = fn(&mut BmcRecord);
    let changes: [(&str, Edit); 5] = [
        ("address", |r| r.address = "10.6.6.6".into()),
        ("port", |r| r.port = Some(8443)),
        ("protocol", |r| r.protocol = "ipmi".into()),
        ("username", |r| r.username = "root".into()),
        ("insecure_tls", |r| r.insecure_tls = true),
    ];
    for (field, change) in changes {
        let mut moved = same.clone();
        change(&mut moved);
        match s.update_bmc(&moved).await {
            Err(StoreError::PasswordRequired { fields, .. }) => assert_eq!(fields, [field]),
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(s.bmc("m1").await.unwrap().unwrap(), same, "{field}");
    }
    assert!(matches!(
        s.update_bmc(&record("nobody")).await,
        Err(StoreError::NotFound { kind: "bmc", .. })
    ));
}

/// A database written before sealing existed: its clear-text password is
/// sealed at open, readable as before, and gone from the file.
#[tokio::test]
async fn clear_text_passwords_from_before_are_sealed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    let mut names: Vec<_> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    names.sort();
    for path in names.iter().filter(|p| p.file_name().unwrap() < "0005") {
        std::fs::copy(path, old.path().join(path.file_name().unwrap())).unwrap();
    }
    {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(old.path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO hardware (id, body, created_at, updated_at) VALUES ('m1', $1, 0, 0)",
        )
        .bind(encode(&hw("m1", "02:00:00:00:0c:01")))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO bmc (hardware_id, body, secret, updated_at) VALUES ('m1', $1, $2, 0)",
        )
        .bind(encode(&record("m1")))
        .bind(PASSWORD)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    assert!(
        contains(&raw_files(dir.path()), PASSWORD),
        "the old file holds it"
    );

    let s = SqlStore::open_sqlite(dir.path(), key(1)).await.unwrap();
    assert_eq!(
        s.bmc_with_secret("m1").await.unwrap().unwrap().1.0,
        PASSWORD
    );
    assert!(!contains(&raw_files(dir.path()), PASSWORD));
    s.close().await;
    assert!(!contains(&raw_files(dir.path()), PASSWORD));
    // And it stays readable (sealed, not sealed twice) at the next open.
    let s = SqlStore::open_sqlite(dir.path(), key(1)).await.unwrap();
    assert_eq!(
        s.bmc_with_secret("m1").await.unwrap().unwrap().1.0,
        PASSWORD
    );
}

#[tokio::test]
async fn the_data_directory_and_database_files_are_private() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("new/data");
    let s = with_bmcs(&dir, key(1), &[("m1", PASSWORD)]).await;
    assert_eq!(mode(&dir), 0o700);
    for name in [DB_FILE, "bellows.db-wal", "bellows.db-shm"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    s.close().await;
    drop(s);

    // An existing directory and files left open to others are tightened.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join(DB_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = SqlStore::open_sqlite(&dir, key(1)).await.unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(DB_FILE)), 0o600);
    for name in ["bellows.db-wal", "bellows.db-shm"] {
        if dir.join(name).exists() {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
    }
    drop(s);
}
