//! `bellows store copy`: a site's whole state moved from one store to
//! another (SQLite to PostgreSQL, the way up to several servers), then
//! read back from both and compared, so "nothing was lost" is checked, not
//! hoped. Rows are copied as stored: ids, sequence numbers and sealed BMC
//! passwords (which the same secret key opens on either side) unchanged.

use ring::digest::{Context, SHA256};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Backend, SqlStore};
use crate::{Result, StoreError};

/// A column's type, to read and bind it through the `Any` driver.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    OptText,
    Int,
}

/// A table, its columns, and the column it is paged by (`None`: a small
/// table with a composite key, read whole).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    key: Option<&'static str>,
    /// Its identity column, whose sequence must continue after the copy.
    serial: bool,
}

use Kind::{Int, OptText, Text};

/// Every table, parents before children (foreign keys hold at each insert).
const TABLES: &[Table] = &[
    Table {
        name: "hardware",
        columns: &[
            ("id", Text),
            ("body", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        key: Some("id"),
        serial: false,
    },
    Table {
        name: "hardware_mac",
        columns: &[("mac", Text), ("hardware_id", Text)],
        key: Some("mac"),
        serial: false,
    },
    Table {
        name: "hardware_ip",
        columns: &[("ip", Text), ("hardware_id", Text)],
        key: Some("ip"),
        serial: false,
    },
    Table {
        name: "template",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("data", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        key: Some("id"),
        serial: false,
    },
    Table {
        name: "workflow",
        columns: &[
            ("id", Text),
            ("template_id", Text),
            ("hardware_id", OptText),
            ("state", Text),
            ("body", Text),
            ("version", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        key: Some("id"),
        serial: false,
    },
    Table {
        name: "workflow_worker",
        columns: &[("workflow_id", Text), ("worker", Text)],
        key: None,
        serial: false,
    },
    Table {
        name: "workflow_event",
        columns: &[
            ("seq", Int),
            ("workflow_id", Text),
            ("at", Int),
            ("body", Text),
        ],
        key: Some("seq"),
        serial: true,
    },
    Table {
        name: "machine_log",
        columns: &[("seq", Int), ("machine", Text), ("at", Int), ("body", Text)],
        key: Some("seq"),
        serial: true,
    },
    Table {
        name: "boot_event",
        columns: &[
            ("seq", Int),
            ("hardware_id", Text),
            ("at", Int),
            ("step", Text),
            ("detail", Text),
        ],
        key: Some("seq"),
        serial: true,
    },
    Table {
        name: "bmc",
        columns: &[
            ("hardware_id", Text),
            ("body", Text),
            ("secret", Text),
            ("secret_format", Int),
            ("updated_at", Int),
        ],
        key: Some("hardware_id"),
        serial: false,
    },
    Table {
        name: "action_log",
        columns: &[
            ("seq", Int),
            ("workflow_id", Text),
            ("action", Text),
            ("at", Int),
            ("body", Text),
        ],
        key: Some("seq"),
        serial: true,
    },
    Table {
        name: "inventory",
        columns: &[
            ("hardware_id", Text),
            ("worker", Text),
            ("body", Text),
            ("updated_at", Int),
        ],
        key: Some("hardware_id"),
        serial: false,
    },
    Table {
        name: "api_token",
        columns: &[
            ("name", Text),
            ("digest", Text),
            ("role", Text),
            ("created_by", Text),
            ("created_at", Int),
        ],
        key: Some("name"),
        serial: false,
    },
    Table {
        name: "worker_credential",
        columns: &[
            ("worker", Text),
            ("digest", Text),
            ("hardware_id", Text),
            ("workflow_id", Text),
            ("address", OptText),
            ("issued_at", Int),
        ],
        key: Some("worker"),
        serial: false,
    },
    Table {
        name: "audit",
        columns: &[
            ("seq", Int),
            ("at", Int),
            ("actor", Text),
            ("method", Text),
            ("path", Text),
            ("status", Int),
        ],
        key: Some("seq"),
        serial: true,
    },
];

/// Rows read per page.
const PAGE: i64 = 2000;

/// One value as read, for binding and hashing.
#[derive(Clone)]
enum Value {
    Text(Option<String>),
    Int(i64),
}

/// What a copy moved: rows per table, each checked on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// (table, rows), in copy order.
    pub tables: Vec<(&'static str, u64)>,
}

impl SqlStore {
    /// Copies everything stored here into `target`, which must hold no
    /// hardware, templates, workflows or tokens yet, in one transaction on
    /// the target; then reads every table back from both and compares row
    /// by row (a digest of each table in key order). Open both stores with
    /// the same secret key: the BMC passwords move sealed.
    pub async fn copy_into(&self, target: &SqlStore) -> Result<CopyReport> {
        for table in ["hardware", "template", "workflow", "api_token"] {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&target.pool)
                .await?;
            if n > 0 {
                return Err(StoreError::Conflict {
                    field: None,
                    message: format!(
                        "the target store is not empty ({n} rows in {table}); copy into a new database"
                    ),
                });
            }
        }
        // One read transaction: a consistent snapshot even if a server is
        // still writing to the source.
        let mut source = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // One snapshot for every page of every table (SQLite's read
            // transaction is one already).
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *source)
                .await?;
        }
        let mut conn = target.begin().await?;
        let mut tx = conn.transaction().await?;
        // Rows the target made at open (its first admin token has not been
        // made yet, but its key fingerprint has) are replaced by ours.
        let mut report = Vec::new();
        for table in TABLES {
            let rows = copy_table(table, &mut source, &mut tx).await?;
            if table.serial && target.backend == Backend::Postgres {
                // The identity sequence continues after the copied numbers.
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', 'seq'), \
                     GREATEST((SELECT MAX(seq) FROM {0}), 1))",
                    table.name
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await?;
            }
            report.push((table.name, rows));
        }
        // Compared before the copy commits: the snapshot read against what
        // the target transaction holds; a difference leaves nothing behind.
        for table in TABLES {
            let mine = table_digest(table, &mut source).await?;
            let theirs = table_digest(table, &mut tx).await?;
            if mine != theirs {
                return Err(StoreError::Conflict {
                    field: None,
                    message: format!(
                        "table {} differs after the copy ({} rows here, {} there): \
                         the target is not a faithful copy; do not use it",
                        table.name, mine.0, theirs.0
                    ),
                });
            }
        }
        tx.commit().await?;
        drop(source);
        target
            .index
            .replace_all(super::all_hardware(&self.pool).await?);
        if let Some(active) = &target.active {
            active.replace_all(super::unfinished_workflows(&self.pool, None).await?);
        }
        if let Some(credentials) = &target.credentials {
            credentials.replace_all(super::auth::all_worker_credentials(&self.pool).await?);
        }
        Ok(CopyReport { tables: report })
    }
}

fn select(table: &Table, after: bool) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let columns = columns.join(", ");
    match table.key {
        Some(key) if after => format!(
            "SELECT {columns} FROM {} WHERE {key} > $1 ORDER BY {key} LIMIT $2",
            table.name
        ),
        Some(key) => format!(
            "SELECT {columns} FROM {} ORDER BY {key} LIMIT $1",
            table.name
        ),
        None => format!("SELECT {columns} FROM {} ORDER BY {columns}", table.name),
    }
}

fn values(table: &Table, row: &AnyRow) -> Result<Vec<Value>> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            Ok(match kind {
                Text => Value::Text(Some(row.try_get::<String, _>(i)?)),
                OptText => Value::Text(row.try_get::<Option<String>, _>(i)?),
                Int => Value::Int(row.try_get::<i64, _>(i)?),
            })
        })
        .collect()
}

/// Reads `table` a page at a time, in key order, handing each page on.
async fn for_each_page<F>(table: &Table, conn: &mut sqlx::AnyConnection, mut each: F) -> Result<()>
where
    F: AsyncFnMut(Vec<Vec<Value>>) -> Result<()>,
{
    let Some(_) = table.key else {
        let rows = sqlx::query(sqlx::AssertSqlSafe(select(table, false)))
            .fetch_all(&mut *conn)
            .await?;
        let page = rows
            .iter()
            .map(|r| values(table, r))
            .collect::<Result<_>>()?;
        return each(page).await;
    };
    let mut last: Option<Value> = None;
    loop {
        let query = sqlx::query(sqlx::AssertSqlSafe(select(table, last.is_some())));
        let query = match &last {
            Some(Value::Int(k)) => query.bind(*k),
            Some(Value::Text(k)) => query.bind(k.clone()),
            None => query,
        };
        let rows = query.bind(PAGE).fetch_all(&mut *conn).await?;
        let page: Vec<Vec<Value>> = rows
            .iter()
            .map(|r| values(table, r))
            .collect::<Result<_>>()?;
        let key_at = table
            .columns
            .iter()
            .position(|(c, _)| Some(*c) == table.key)
            .unwrap_or(0);
        let full = page.len() as i64 == PAGE;
        last = page.last().map(|row| row[key_at].clone());
        each(page).await?;
        if !full {
            return Ok(());
        }
    }
}

async fn copy_table(
    table: &Table,
    source: &mut Transaction<'_, Any>,
    target: &mut Transaction<'_, Any>,
) -> Result<u64> {
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        table.name,
        columns.join(", "),
        params.join(", ")
    );
    let mut copied = 0u64;
    for_each_page(table, &mut *source, async |page| {
        for row in page {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(insert.clone()));
            for value in row {
                query = match value {
                    Value::Text(t) => query.bind(t),
                    Value::Int(i) => query.bind(i),
                };
            }
            query.execute(&mut **target).await?;
            copied += 1;
        }
        Ok(())
    })
    .await?;
    Ok(copied)
}

/// Rows and a SHA-256 over every value of every row, in key order.
async fn table_digest(table: &Table, conn: &mut sqlx::AnyConnection) -> Result<(u64, Vec<u8>)> {
    let mut hash = Context::new(&SHA256);
    let mut rows = 0u64;
    for_each_page(table, conn, async |page| {
        for row in page {
            rows += 1;
            for value in row {
                match value {
                    Value::Text(None) => hash.update(&[0u8]),
                    Value::Text(Some(t)) => {
                        hash.update(&[1u8]);
                        hash.update(&(t.len() as u64).to_le_bytes());
                        hash.update(t.as_bytes());
                    }
                    Value::Int(i) => {
                        hash.update(&[2u8]);
                        hash.update(&i.to_le_bytes());
                    }
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok((rows, hash.finish().as_ref().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::at_rest_tests::record;
    use crate::sql::tests::{Home, hw, workflow};
    use crate::{BmcSecret, LogEntry, Store};
    use bellows_model::workflow::Transition;

    /// A site's state on SQLite, moved to PostgreSQL: every record reads
    /// back the same there, the BMC password opens, new rows number after
    /// the copied ones; a second copy into the same database is refused.
    #[tokio::test]
    async fn a_sqlite_site_moves_to_postgresql_whole() {
        let from_home = Home::new(Backend::Sqlite);
        let from = from_home.open().await;
        for i in 0..30u8 {
            from.push_hardware(hw(
                &format!("m{i}"),
                &format!("02:00:00:00:0d:{i:02x}"),
                &format!("10.0.13.{}", i + 1),
            ))
            .await
            .unwrap();
        }
        from.create_template("t", "version: \"0.1\"").await.unwrap();
        from.create_workflow(&workflow("wf1", "02:00:00:00:0d:01"))
            .await
            .unwrap();
        let started = Transition::ActionStarted {
            task: "a".into(),
            action: "one".into(),
            worker: "02:00:00:00:0d:01".into(),
            attempt: 1,
            at: 5,
        };
        from.apply_transition("wf1", &started).await.unwrap();
        from.put_bmc(&record("m3"), &BmcSecret("pa55-moved".into()))
            .await
            .unwrap();
        // More log lines than a page, so paging is exercised.
        let lines: Vec<LogEntry> = (0..(PAGE + 123))
            .map(|i| LogEntry {
                machine: "m1".into(),
                at: i,
                source: "10.0.13.2".into(),
                facility: 1,
                severity: 6,
                hostname: String::new(),
                app: "ipxe".into(),
                message: format!("line {i}"),
            })
            .collect();
        from.append_logs(&lines).await.unwrap();

        let to_home = Home::new(Backend::Postgres);
        let to = to_home.open().await;
        let report = from.copy_into(&to).await.unwrap();
        let rows = |t: &str| report.tables.iter().find(|(n, _)| *n == t).unwrap().1;
        assert_eq!(rows("hardware"), 30);
        assert_eq!(rows("machine_log"), (PAGE + 123) as u64);
        assert_eq!(rows("workflow_event"), 3, "{report:?}");

        assert_eq!(
            to.list_hardware().await.unwrap(),
            from.list_hardware().await.unwrap()
        );
        assert_eq!(
            to.workflow("wf1").await.unwrap(),
            from.workflow("wf1").await.unwrap()
        );
        assert_eq!(
            to.workflow_events("wf1").await.unwrap(),
            from.workflow_events("wf1").await.unwrap()
        );
        let (_, secret) = to.bmc_with_secret("m3").await.unwrap().unwrap();
        assert_eq!(secret.0, "pa55-moved");
        let mac = "02:00:00:00:0d:07".parse().unwrap();
        assert_eq!(
            to.index().by_mac(mac).unwrap().id,
            "m7",
            "the index follows"
        );
        // The sequences continue after the copied numbers.
        to.append_event(
            "wf1",
            &bellows_model::workflow::Event {
                at: 9,
                kind: bellows_model::workflow::EventKind::BootRequested {
                    hardware: "m1".into(),
                    ok: true,
                    message: "test".into(),
                },
            },
        )
        .await
        .unwrap();
        let events = to.workflow_events("wf1").await.unwrap();
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq), "{events:?}");

        let again = from.copy_into(&to).await.unwrap_err();
        assert!(again.to_string().contains("not empty"), "{again}");
    }
}
