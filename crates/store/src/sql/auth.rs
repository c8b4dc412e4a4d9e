//! [`AuthStore`] on the SQL store (both backends).

use async_trait::async_trait;
use bellows_model::auth::{AuditEntry, Role, TokenRecord, WorkerCredential};
use sqlx::Row;

use super::{SqlStore, conflict_on_unique, for_update};
use crate::auth::{AUDIT_KEEP, AuthStore, CredentialLookup};
use crate::{Result, StoreError};

fn token_row(row: &sqlx::any::AnyRow) -> Result<TokenRecord> {
    let name: String = row.try_get("name")?;
    let role: String = row.try_get("role")?;
    let role = role.parse::<Role>().map_err(|e| StoreError::Corrupt {
        kind: "api token",
        id: name.clone(),
        source: serde::de::Error::custom(e),
    })?;
    Ok(TokenRecord {
        name,
        role,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

fn credential_row(row: &sqlx::any::AnyRow) -> Result<WorkerCredential> {
    Ok(WorkerCredential {
        worker: row.try_get("worker")?,
        digest: row.try_get("digest")?,
        hardware_id: row.try_get("hardware_id")?,
        workflow_id: row.try_get("workflow_id")?,
        address: row.try_get("address")?,
        issued_at: row.try_get("issued_at")?,
    })
}

/// Every worker credential stored (one per worker), for the embedded
/// store's copy in memory.
pub(super) async fn all_worker_credentials(pool: &sqlx::AnyPool) -> Result<Vec<WorkerCredential>> {
    let rows = sqlx::query(
        "SELECT worker, digest, hardware_id, workflow_id, address, issued_at \
         FROM worker_credential",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(credential_row).collect()
}

#[async_trait]
impl AuthStore for SqlStore {
    async fn create_api_token(&self, record: &TokenRecord, digest: &str) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let taken: Option<i64> = sqlx::query_scalar("SELECT 1 FROM api_token WHERE name = $1")
            .bind(&record.name)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict {
                field: Some("name".into()),
                message: format!("a token named {:?} exists already", record.name),
            });
        }
        sqlx::query(
            "INSERT INTO api_token (name, digest, role, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&record.name)
        .bind(digest)
        .bind(record.role.as_str())
        .bind(&record.created_by)
        .bind(record.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            conflict_on_unique(e, || StoreError::Conflict {
                field: Some("name".into()),
                message: format!("a token named {:?} exists already", record.name),
            })
        })?;
        tx.commit().await?;
        Ok(())
    }

    async fn api_token_by_digest(&self, digest: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT name, role, created_by, created_at FROM api_token WHERE digest = $1",
        )
        .bind(digest)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        row.as_ref().map(token_row).transpose()
    }

    async fn list_api_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows =
            sqlx::query("SELECT name, role, created_by, created_at FROM api_token ORDER BY name")
                .fetch_all(&mut *self.read().await?)
                .await?;
        rows.iter().map(token_row).collect()
    }

    async fn revoke_api_token(&self, name: &str) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let role: Option<String> = sqlx::query_scalar("SELECT role FROM api_token WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(role) = role else {
            return Err(StoreError::NotFound {
                kind: "token",
                id: name.to_string(),
            });
        };
        if role == Role::Admin.as_str() {
            // Every admin row locked, so two servers revoking the last two
            // admins at once cannot both see the other one left.
            let admins: Vec<String> = sqlx::query_scalar(for_update!(
                self,
                "SELECT name FROM api_token WHERE role = 'admin'"
            ))
            .fetch_all(&mut *tx)
            .await?;
            if admins.len() <= 1 {
                return Err(StoreError::Conflict {
                    field: None,
                    message: format!(
                        "{name:?} is the last admin token; create another admin token first"
                    ),
                });
            }
        }
        sqlx::query("DELETE FROM api_token WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn count_api_tokens(&self, role: Role) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_token WHERE role = $1")
            .bind(role.as_str())
            .fetch_one(&mut *self.read().await?)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn put_worker_credential(&self, c: &WorkerCredential) -> Result<()> {
        self.put_worker_credentials(std::slice::from_ref(c)).await
    }

    async fn put_worker_credentials(&self, credentials: &[WorkerCredential]) -> Result<()> {
        // One row per worker (the last one given), or the upsert would
        // touch a row twice in one statement.
        let last = super::last_per_key(credentials, |c| c.worker.as_str());
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        for chunk in last.chunks(self.backend.max_bound() / 6) {
            let mut sql = String::from(
                "INSERT INTO worker_credential \
                 (worker, digest, hardware_id, workflow_id, address, issued_at) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                self.backend.push_row(&mut sql, i * 6 + 1, 6);
            }
            sql.push_str(
                " ON CONFLICT (worker) DO UPDATE SET digest = excluded.digest, \
                 hardware_id = excluded.hardware_id, workflow_id = excluded.workflow_id, \
                 address = excluded.address, issued_at = excluded.issued_at",
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for c in chunk {
                insert = insert
                    .bind(&c.worker)
                    .bind(&c.digest)
                    .bind(&c.hardware_id)
                    .bind(&c.workflow_id)
                    .bind(&c.address)
                    .bind(c.issued_at);
            }
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        // Still under the write lock: the copy in memory changes in the
        // order the table did.
        if let Some(mirror) = &self.credentials {
            for c in last {
                mirror.put(c.clone());
            }
        }
        Ok(())
    }

    async fn worker_credential(&self, digest: &str) -> Result<Option<CredentialLookup>> {
        // The embedded store answers from memory (see `credentials.rs`).
        if let (Some(credentials), Some(active)) = (&self.credentials, &self.active) {
            return Ok(credentials.get(digest).map(|credential| CredentialLookup {
                workflow_active: active.contains(&credential.workflow_id),
                credential,
            }));
        }
        let row = sqlx::query(
            "SELECT c.worker, c.digest, c.hardware_id, c.workflow_id, c.address, c.issued_at, \
             CAST(CASE WHEN w.state IN ('PENDING', 'RUNNING') THEN 1 ELSE 0 END AS BIGINT) AS active \
             FROM worker_credential c LEFT JOIN workflow w ON w.id = c.workflow_id \
             WHERE c.digest = $1",
        )
        .bind(digest)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let active: i64 = row.try_get("active")?;
        Ok(Some(CredentialLookup {
            credential: credential_row(&row)?,
            workflow_active: active == 1,
        }))
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        sqlx::query(
            "INSERT INTO audit (at, actor, method, path, status) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.method)
        .bind(&e.path)
        .bind(i64::from(e.status))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - $1")
            .bind(AUDIT_KEEP)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT at, actor, method, path, status FROM \
             (SELECT * FROM audit ORDER BY seq DESC LIMIT $1) AS newest ORDER BY seq",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *self.read().await?)
        .await?;
        rows.iter()
            .map(|row| {
                let status: i64 = row.try_get("status")?;
                Ok(AuditEntry {
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    method: row.try_get("method")?,
                    path: row.try_get("path")?,
                    status: u16::try_from(status).unwrap_or(0),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use bellows_model::auth::{Role, TokenRecord, WorkerCredential, token_digest};

    use super::*;
    use crate::sql::Backend;
    use crate::sql::tests::{Home, on_both_backends, store};

    on_both_backends!(
        tokens_are_found_by_digest_only_and_names_are_unique,
        a_new_boot_replaces_the_last_credential,
    );

    fn token(name: &str, role: Role) -> TokenRecord {
        TokenRecord {
            name: name.into(),
            role,
            created_at: 1,
            created_by: "test".into(),
        }
    }

    async fn tokens_are_found_by_digest_only_and_names_are_unique(backend: Backend) {
        let (home, store) = store(backend).await;
        store
            .create_api_token(&token("ops", Role::Operator), &token_digest("secret-1"))
            .await
            .expect("create");
        let again = store
            .create_api_token(&token("ops", Role::Admin), &token_digest("secret-2"))
            .await;
        assert!(
            matches!(again, Err(StoreError::Conflict { .. })),
            "{again:?}"
        );
        let found = store
            .api_token_by_digest(&token_digest("secret-1"))
            .await
            .expect("lookup");
        assert_eq!(found.map(|t| t.role), Some(Role::Operator));
        assert!(
            store
                .api_token_by_digest(&token_digest("secret-2"))
                .await
                .expect("lookup")
                .is_none()
        );
        assert_eq!(store.count_api_tokens(Role::Operator).await.expect("n"), 1);
        store.revoke_api_token("ops").await.expect("revoke");
        assert!(
            store
                .api_token_by_digest(&token_digest("secret-1"))
                .await
                .expect("lookup")
                .is_none()
        );
        assert!(matches!(
            store.revoke_api_token("ops").await,
            Err(StoreError::NotFound { .. })
        ));
        // The last admin stays; with a second one, either may go.
        store
            .create_api_token(&token("root", Role::Admin), &token_digest("secret-3"))
            .await
            .expect("create");
        assert!(matches!(
            store.revoke_api_token("root").await,
            Err(StoreError::Conflict { .. })
        ));
        store
            .create_api_token(&token("root2", Role::Admin), &token_digest("secret-4"))
            .await
            .expect("create");
        store.revoke_api_token("root").await.expect("revoke");
        assert!(matches!(
            store.revoke_api_token("root2").await,
            Err(StoreError::Conflict { .. })
        ));
        // The token itself is nowhere in the database.
        match &home {
            Home::Sqlite(dir) => {
                store.close().await;
                let bytes = std::fs::read(dir.path().join(super::super::DB_FILE)).expect("db");
                assert!(!bytes.windows(8).any(|w| w == b"secret-1"));
            }
            Home::Postgres(db) => {
                let out = bellows_testkit::postgres::psql(&db.url, "SELECT * FROM api_token");
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "{out:?}");
                assert!(
                    text.contains("root2") && !text.contains("secret-"),
                    "{text}"
                );
            }
        }
    }

    async fn a_new_boot_replaces_the_last_credential(backend: Backend) {
        let (home, store) = store(backend).await;
        let hw: bellows_model::Hardware = serde_json::from_value(serde_json::json!({
            "id": "m1",
            "network": {"interfaces": [{"dhcp": {"mac": "52:54:00:00:00:01"}}]}
        }))
        .expect("hw");
        crate::Store::push_hardware(&store, hw).await.expect("push");
        let cred = |digest: &str| WorkerCredential {
            digest: digest.into(),
            worker: "52:54:00:00:00:01".into(),
            hardware_id: "m1".into(),
            workflow_id: "wf".into(),
            address: Some("10.0.0.5".into()),
            issued_at: 1,
        };
        store.put_worker_credential(&cred("d1")).await.expect("put");
        store.put_worker_credential(&cred("d2")).await.expect("put");
        assert!(store.worker_credential("d1").await.expect("get").is_none());
        assert_eq!(
            store.worker_credential("d2").await.expect("get"),
            Some(CredentialLookup {
                credential: cred("d2"),
                // No workflow "wf" exists.
                workflow_active: false,
            })
        );
        // Several at once: for one worker the last stays; a credential of
        // an unfinished workflow says so.
        let wf = crate::sql::tests::workflow("wf", "52:54:00:00:00:01");
        crate::Store::create_workflow(&store, &wf)
            .await
            .expect("workflow");
        store
            .put_worker_credentials(&[cred("d3"), cred("d4")])
            .await
            .expect("put several");
        let d4_of_an_unfinished_workflow = Some(CredentialLookup {
            credential: cred("d4"),
            workflow_active: true,
        });
        assert!(store.worker_credential("d2").await.expect("get").is_none());
        assert!(store.worker_credential("d3").await.expect("get").is_none());
        assert_eq!(
            store.worker_credential("d4").await.expect("get"),
            d4_of_an_unfinished_workflow
        );
        // The same after a restart (the embedded store loads its copy in
        // memory at open).
        store.close().await;
        let store = home.open().await;
        assert!(store.worker_credential("d3").await.expect("get").is_none());
        assert_eq!(
            store.worker_credential("d4").await.expect("get"),
            d4_of_an_unfinished_workflow
        );
        // Deleting the machine (once its workflow is gone) deletes its
        // credential.
        crate::Store::delete_workflow(&store, "wf")
            .await
            .expect("delete workflow");
        crate::Store::delete_hardware(&store, "m1")
            .await
            .expect("delete");
        assert!(store.worker_credential("d4").await.expect("get").is_none());
    }
}
