//! The SQL store: one [`Store`] for both backends, through sqlx's `Any`
//! driver and portable SQL (JSON as TEXT, times as integer Unix
//! milliseconds, `$n` parameters). SQLite (`sqlite.rs`) is the embedded
//! default, one WAL-mode file under the data directory; PostgreSQL
//! (`postgres.rs`) lets several servers share one state.
//!
//! What differs between the two is small and named here: SQLite has one
//! writer, so writes queue on a process lock; PostgreSQL has many, so rows
//! read-then-written are locked (`for_update!`), uniqueness races surface
//! as the constraint's conflict, and every committed change is announced
//! to the other replicas (`NOTIFY`) inside its own transaction.
//!
//! Why one file for the trait impl: a trait impl cannot be split across
//! files; its helpers and each backend's opening live beside it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bellows_model::discovery::rule::{MAX_RULES, Rule, RuleRecord};
use bellows_model::timeline::{BootEvent, Step};
use bellows_model::workflow::{Event, Transition};
use bellows_model::{Hardware, MacAddr, State, Workflow};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Row, Transaction};
use tokio::sync::{Mutex, MutexGuard, Semaphore, SemaphorePermit, broadcast};

use crate::active::{ActiveWorkflows, worker_keys};
use crate::credentials::Credentials;
use crate::secrets::SecretKey;
use crate::{
    ACTION_LOG_KEEP, ActionLogLine, ActionLogQuery, ActionLogRecord, BmcRecord, BmcSecret, Change,
    ChangeKind, ChangeOp, EventRecord, HardwareIndex, InventoryRecord, LogEntry, LogLimits,
    LogRecord, Pushed, Result, Store, StoreError, TemplateRecord, UNKNOWN_SENDER_PREFIX,
    WorkflowFilter, now_ms,
};

mod auth;
mod copy;
#[cfg(test)]
mod migrations;
mod postgres;
mod sqlite;

pub use copy::CopyReport;
pub use postgres::{PoolSettings, STORE_URL_SCHEMES, redact_url};
pub use sqlite::DB_FILE;

/// `bmc.secret_format` of a password stored before sealing existed.
const SECRET_CLEAR: i64 = 0;
/// `bmc.secret_format` of a password sealed by `SecretKey::seal` (`v1:`).
const SECRET_SEALED_V1: i64 = 1;

/// Which database a [`SqlStore`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded file: one server.
    Sqlite,
    /// A PostgreSQL server: one or several Bellows servers.
    Postgres,
}

/// The one SQL-backed [`Store`].
pub struct SqlStore {
    /// Reads (and, on PostgreSQL, writes). On SQLite only the rare
    /// whole-table loads (at open, after a copy): the frequent reads go
    /// through `readers`.
    pool: AnyPool,
    /// On SQLite, the connections reads run on (see [`ReadPool`]); None on
    /// PostgreSQL, which reads from `pool`.
    readers: Option<ReadPool>,
    /// Where write transactions run (see [`Writer`]).
    writer: Writer,
    backend: Backend,
    /// Foreground writers waiting for `write` (SQLite): background writes
    /// (the boot timeline, inventories) let them go first.
    foreground_waiting: Arc<AtomicUsize>,
    changes: broadcast::Sender<Change>,
    index: Arc<HardwareIndex>,
    /// On SQLite, the unfinished workflows by worker (see `active.rs`);
    /// None on PostgreSQL, whose other replicas write too.
    active: Option<ActiveWorkflows>,
    /// On SQLite, every worker credential (see `credentials.rs`); None on
    /// PostgreSQL.
    credentials: Option<Credentials>,
    /// Seals and opens BMC passwords.
    key: SecretKey,
    log_limits: LogLimits,
    /// On PostgreSQL: this replica's name in the change announcements, the
    /// follower of the other replicas' changes and the timer lease.
    replica: Option<postgres::Replica>,
    /// How long each write's commit took (see [`SqlStore::commit_latency`]).
    commit_seconds: Histogram,
}

/// Where write transactions run.
enum Writer {
    /// SQLite: one connection of its own, behind a lock. SQLite has one
    /// writer; taking the lock before `BEGIN` turns contention into an
    /// orderly queue instead of `SQLITE_BUSY` errors, and a writer never
    /// queues for a connection behind a boot storm's readers (WAL lets
    /// them run side by side). Not a pool: a pooled connection goes back
    /// through a task sqlx spawns on the runtime (with a ping), and under a
    /// boot storm that task waited 50-400 ms behind thousands of ready
    /// ones while the next writer, holding the lock, waited for it. None
    /// once the store is closed.
    Sqlite(Mutex<Option<AnyConnection>>),
    /// PostgreSQL: the pool reads use too; its row locks order writers
    /// (whose others are in other processes anyway).
    Pool(AnyPool),
}

/// SQLite's read connections, handed out and taken back without a task:
/// a connection from sqlx's pool goes back through a task spawned on the
/// runtime (with a ping), and under a boot storm the four readers each
/// waited 50-400 ms for that task, so reads queued for seconds (25,000
/// "slow acquire" warnings in one 10,000-machine storm) once the writes
/// stopped pacing them.
pub(crate) struct ReadPool {
    idle: std::sync::Mutex<Vec<AnyConnection>>,
    /// One permit per connection in `idle`.
    available: Semaphore,
}

impl ReadPool {
    /// A pool of these connections.
    pub(crate) fn new(connections: Vec<AnyConnection>) -> ReadPool {
        let available = Semaphore::new(connections.len());
        ReadPool {
            idle: std::sync::Mutex::new(connections),
            available,
        }
    }

    /// A connection, once one is free.
    async fn acquire(&self) -> Result<ReadConn<'_>> {
        let closed = || StoreError::Database(sqlx::Error::PoolClosed);
        let permit = self.available.acquire().await.map_err(|_| closed())?;
        let conn = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or_else(closed)?;
        Ok(ReadConn::Own {
            conn: Some(conn),
            pool: self,
            _permit: permit,
        })
    }

    /// Closes every connection; later reads fail.
    async fn close(&self) {
        self.available.close();
        let all = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for conn in all {
            let _ = conn.close().await;
        }
    }
}

/// A connection a read runs on.
enum ReadConn<'a> {
    /// One of SQLite's [`ReadPool`], back in it on drop.
    Own {
        conn: Option<AnyConnection>,
        pool: &'a ReadPool,
        _permit: SemaphorePermit<'a>,
    },
    /// One of PostgreSQL's pool.
    Pool(PoolConnection<Any>),
}

impl std::ops::Deref for ReadConn<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            // Always Some until drop.
            ReadConn::Own { conn, .. } => conn.as_ref().unwrap_or_else(|| unreachable!()),
            ReadConn::Pool(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for ReadConn<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            ReadConn::Own { conn, .. } => conn.as_mut().unwrap_or_else(|| unreachable!()),
            ReadConn::Pool(conn) => conn,
        }
    }
}

impl Drop for ReadConn<'_> {
    fn drop(&mut self) {
        // Back before the permit is released (fields drop after this).
        if let ReadConn::Own { conn, pool, .. } = self
            && let Some(conn) = conn.take()
        {
            pool.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
}

/// A write connection while a transaction uses it: the embedded store's
/// one writer under its lock, or a PostgreSQL connection from the pool.
enum WriteConn<'a> {
    Sqlite(MutexGuard<'a, Option<AnyConnection>>),
    Pool(PoolConnection<Any>),
}

impl WriteConn<'_> {
    /// Begins a transaction on the connection.
    async fn transaction(&mut self) -> Result<Transaction<'_, Any>> {
        let conn: &mut AnyConnection = match self {
            WriteConn::Sqlite(guard) => guard
                .as_mut()
                .ok_or(StoreError::Database(sqlx::Error::PoolClosed))?,
            WriteConn::Pool(conn) => conn,
        };
        Ok(conn.begin().await?)
    }
}

/// A row read to be written in the same transaction: on PostgreSQL the
/// statement locks it (`FOR UPDATE`) so two replicas cannot both read the
/// old value and overwrite each other; SQLite's single writer needs nothing.
macro_rules! for_update {
    ($store:expr, $sql:literal) => {
        match $store.backend {
            $crate::sql::Backend::Sqlite => $sql,
            $crate::sql::Backend::Postgres => concat!($sql, " FOR UPDATE"),
        }
    };
}
pub(crate) use for_update;

/// What a write changed, applied to the index and announced once its
/// transaction commits.
enum Written {
    /// A hardware record as now stored.
    Hardware(Box<Hardware>),
    /// A hardware record removed.
    HardwareDeleted(String),
    /// A template or workflow created, changed or deleted.
    Other(ChangeKind, String, ChangeOp),
    /// A workflow created or changed, as now stored, and whether the
    /// change is [`Change::quiet`].
    Workflow(Box<Workflow>, bool),
}

impl Written {
    fn change(&self) -> Change {
        let (kind, id, op) = match self {
            Written::Hardware(hw) => (ChangeKind::Hardware, hw.id.clone(), ChangeOp::Upsert),
            Written::HardwareDeleted(id) => (ChangeKind::Hardware, id.clone(), ChangeOp::Delete),
            Written::Other(kind, id, op) => (*kind, id.clone(), *op),
            Written::Workflow(wf, _) => (ChangeKind::Workflow, wf.id.clone(), ChangeOp::Upsert),
        };
        let workers = match self {
            Written::Workflow(wf, _) => wf.workers(),
            _ => Vec::new(),
        };
        let quiet = matches!(self, Written::Workflow(_, true));
        Change {
            kind,
            id,
            op,
            workers,
            quiet,
        }
    }
}

impl SqlStore {
    /// The parts both backends share once their pool is open and migrated:
    /// the key check and the index.
    async fn finish_open(
        pool: AnyPool,
        readers: Option<ReadPool>,
        writer: Writer,
        backend: Backend,
        key: SecretKey,
    ) -> Result<SqlStore> {
        // Room for a group commit's worth of changes many times over: a
        // follower that falls behind makes every stream re-read.
        let (changes, _) = broadcast::channel(16_384);
        let mut store = SqlStore {
            pool,
            readers,
            writer,
            backend,
            foreground_waiting: Arc::new(AtomicUsize::new(0)),
            changes,
            index: Arc::new(HardwareIndex::new(Vec::new())),
            active: None,
            credentials: None,
            key,
            log_limits: LogLimits::default(),
            replica: None,
            commit_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
        };
        store.check_key().await?;
        store.index = Arc::new(HardwareIndex::new(store.list_hardware().await?));
        if backend == Backend::Sqlite {
            let active = ActiveWorkflows::default();
            active.replace_all(unfinished_workflows(&store.pool, None).await?);
            store.active = Some(active);
            let credentials = Credentials::default();
            credentials.replace_all(auth::all_worker_credentials(&store.pool).await?);
            store.credentials = Some(credentials);
        }
        Ok(store)
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Refuses a key whose fingerprint is not the one recorded with the
    /// sealed passwords; records it when there are none to protect.
    async fn check_key(&self) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let recorded: Option<String> = sqlx::query_scalar(for_update!(
            self,
            "SELECT fingerprint FROM secret_key WHERE id = 1"
        ))
        .fetch_optional(&mut *tx)
        .await?;
        let given = self.key.fingerprint();
        if recorded.as_deref() == Some(given) {
            return Ok(());
        }
        let sealed: Vec<String> = sqlx::query_scalar(
            "SELECT hardware_id FROM bmc WHERE secret_format = $1 ORDER BY hardware_id",
        )
        .bind(SECRET_SEALED_V1)
        .fetch_all(&mut *tx)
        .await?;
        // Among replicas a mismatch is refused even before any password is
        // sealed: two keys would each seal passwords the other cannot open.
        let shared = self.backend == Backend::Postgres;
        if let Some(expected) = recorded.filter(|_| shared || !sealed.is_empty()) {
            return Err(StoreError::WrongKey {
                expected,
                given: given.to_string(),
                hardware_ids: sealed,
            });
        }
        sqlx::query(
            "INSERT INTO secret_key (id, fingerprint) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint",
        )
        .bind(given)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(
            fingerprint = given,
            "BMC passwords are sealed with this secret key"
        );
        Ok(())
    }

    /// Seals the passwords an older Bellows stored in clear text; returns
    /// how many. (Only SQLite databases ever held clear text; the caller
    /// then rewrites the file so none is left in free pages.)
    async fn seal_clear_secrets(&self) -> Result<usize> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let rows = sqlx::query(for_update!(
            self,
            "SELECT hardware_id, body, secret FROM bmc WHERE secret_format = 0"
        ))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        for row in &rows {
            let id: String = row.try_get("hardware_id")?;
            let body: String = row.try_get("body")?;
            let clear: String = row.try_get("secret")?;
            let record: BmcRecord = decode("bmc", &id, &body)?;
            let sealed =
                self.key
                    .seal(&id, &record, &clear)
                    .map_err(|reason| StoreError::Secret {
                        hardware_id: id.clone(),
                        reason,
                    })?;
            sqlx::query("UPDATE bmc SET secret = $1, secret_format = $2 WHERE hardware_id = $3")
                .bind(sealed)
                .bind(SECRET_SEALED_V1)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        tracing::info!(
            count = rows.len(),
            "sealed BMC passwords that were stored in clear text"
        );
        Ok(rows.len())
    }

    /// Keeps syslog lines within `limits` from the next write on (the
    /// defaults otherwise).
    pub fn with_log_limits(mut self, limits: LogLimits) -> SqlStore {
        self.log_limits = limits;
        self
    }

    /// The time each write that changes records takes to commit (the
    /// durable part: SQLite's flush, PostgreSQL's round trip), 0.1 ms to
    /// 3.3 s; the server exports it as `bellows_store_commit_seconds`.
    /// A handle: observing through the store shows in every clone.
    pub fn commit_latency(&self) -> Histogram {
        self.commit_seconds.clone()
    }

    /// Stops following other replicas and closes the pool (checkpointing
    /// SQLite's WAL).
    pub async fn close(&self) {
        if let Some(replica) = &self.replica {
            replica.stop();
        }
        self.pool.close().await;
        if let Some(readers) = &self.readers {
            readers.close().await;
        }
        match &self.writer {
            Writer::Sqlite(conn) => {
                if let Some(conn) = conn.lock().await.take() {
                    let _ = conn.close().await;
                }
            }
            Writer::Pool(pool) => pool.close().await,
        }
    }

    /// Commits `tx` with what it wrote: on PostgreSQL the changes are
    /// announced to the other replicas inside the transaction (so they are
    /// heard if and only if it commits); then the index is brought up to
    /// date and local subscribers are told.
    async fn commit(&self, mut tx: Transaction<'_, Any>, written: Vec<Written>) -> Result<()> {
        if let Some(replica) = &self.replica {
            for w in &written {
                replica.announce(&mut tx, &w.change()).await?;
            }
        }
        let started = Instant::now();
        tx.commit().await?;
        self.commit_seconds.observe(started.elapsed().as_secs_f64());
        for w in written {
            let change = w.change();
            match w {
                Written::Hardware(hw) => self.index.upsert(*hw),
                Written::HardwareDeleted(id) => {
                    self.index.remove(&id);
                    if let Some(credentials) = &self.credentials {
                        credentials.remove_hardware(&id);
                    }
                }
                Written::Workflow(wf, _) => {
                    if let Some(active) = &self.active {
                        active.upsert(*wf);
                    }
                }
                Written::Other(ChangeKind::Workflow, id, ChangeOp::Delete) => {
                    if let Some(active) = &self.active {
                        active.remove(&id);
                    }
                }
                Written::Other(..) => {}
            }
            // No subscribers is fine: nobody needs to hear about it.
            let _ = self.changes.send(change);
        }
        Ok(())
    }

    /// A connection to read on (hold it for one statement, or one read
    /// transaction).
    async fn read(&self) -> Result<ReadConn<'_>> {
        match &self.readers {
            Some(readers) => readers.acquire().await,
            None => Ok(ReadConn::Pool(self.pool.acquire().await?)),
        }
    }

    /// The connection a write transaction runs on (begin it with
    /// [`WriteConn::transaction`]); on SQLite, once the writers before
    /// have finished.
    async fn begin(&self) -> Result<WriteConn<'_>> {
        Ok(match &self.writer {
            Writer::Sqlite(conn) => {
                let _waiting = Waiting::count(&self.foreground_waiting);
                WriteConn::Sqlite(conn.lock().await)
            }
            Writer::Pool(pool) => WriteConn::Pool(pool.acquire().await?),
        })
    }

    /// [`SqlStore::begin`] for a write nobody waits on (the boot timeline,
    /// inventories): on SQLite it first lets the foreground writers that
    /// are waiting go, for at most [`BACKGROUND_MAX_WAIT`]. In a boot storm
    /// the timeline's ~16 steps per machine took the single writer in turn
    /// with the workers' reports and credentials, and each of those waited
    /// 200-400 ms for the lock instead of ~20.
    async fn begin_background(&self) -> Result<WriteConn<'_>> {
        Ok(match &self.writer {
            Writer::Sqlite(conn) => {
                let deadline = Instant::now() + BACKGROUND_MAX_WAIT;
                loop {
                    let guard = conn.lock().await;
                    if self.foreground_waiting.load(Ordering::Acquire) == 0
                        || Instant::now() >= deadline
                    {
                        break WriteConn::Sqlite(guard);
                    }
                    // The lock is fair: let go, and queue again behind the
                    // foreground writers waiting now. (No timer: this runs
                    // on writer threads outside the runtime's workers,
                    // where a timer would panic once it shuts down.)
                    drop(guard);
                }
            }
            Writer::Pool(pool) => WriteConn::Pool(pool.acquire().await?),
        })
    }
}

/// Longest a background write defers to foreground writers: under a
/// steady stream of them it still goes about once a second (and takes
/// its whole backlog then).
const BACKGROUND_MAX_WAIT: Duration = Duration::from_secs(1);

/// One foreground writer counted in `foreground_waiting` while it waits
/// for the write lock; uncounted on drop, also when the wait is cancelled.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(counter: &'a AtomicUsize) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::AcqRel);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A transition that cannot change which action any worker runs next
/// (see [`Change::quiet`]).
fn is_quiet(transition: &Transition) -> bool {
    matches!(
        transition,
        Transition::ActionStarted { .. } | Transition::ActionProgress { .. }
    )
}

/// The unique-constraint failure of a write racing another server's, as
/// the conflict the check before it would have reported; other errors
/// unchanged.
fn conflict_on_unique(error: sqlx::Error, message: impl FnOnce() -> StoreError) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => message(),
        _ => StoreError::Database(error),
    }
}

/// The last item given for each key, in the order given: what an upsert
/// of many rows takes (one statement may not touch a row twice).
pub(crate) fn last_per_key<'a, T>(items: &'a [T], key: impl Fn(&'a T) -> &'a str) -> Vec<&'a T> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut last: Vec<&T> = items.iter().rev().filter(|i| seen.insert(key(i))).collect();
    last.reverse();
    last
}

impl Backend {
    /// Most parameters bound in one statement built for a batch. Every
    /// statement is a round trip to SQLite's thread, and under a boot
    /// storm each round trip waits for both threads to be scheduled, so
    /// SQLite takes big statements (its limit is 32,766 since 3.32; the
    /// bundled build is newer). PostgreSQL keeps a conservative size.
    pub(crate) fn max_bound(self) -> usize {
        match self {
            Backend::Sqlite => 8_192,
            Backend::Postgres => 900,
        }
    }

    /// Appends the placeholder of the `n`th (1-based) parameter of a
    /// statement built for a batch, whose parameters appear in the text in
    /// the order they are bound: `$n` on PostgreSQL, a bare `?` on SQLite.
    /// sqlx asks SQLite each parameter's name when binding, and SQLite finds
    /// a numbered one by a linear scan: binding 900 `$n` took ~400,000
    /// steps (2 % of a 10,000-machine storm's CPU); `?` has no name.
    pub(crate) fn push_param(self, sql: &mut String, n: usize) {
        match self {
            Backend::Sqlite => sql.push('?'),
            Backend::Postgres => {
                use std::fmt::Write as _;
                let _ = write!(sql, "${n}");
            }
        }
    }

    /// Appends `(p, p, …)`: one row of `width` placeholders, the first
    /// numbered `first`.
    pub(crate) fn push_row(self, sql: &mut String, first: usize, width: usize) {
        sql.push('(');
        for i in 0..width {
            if i > 0 {
                sql.push_str(", ");
            }
            self.push_param(sql, first + i);
        }
        sql.push(')');
    }
}

/// The `machine` values of unknown senders, as a half-open string range
/// (`ip:` ≤ machine < `ip;`, `;` following `:`).
const UNKNOWN_SENDERS_FROM: &str = UNKNOWN_SENDER_PREFIX;
const UNKNOWN_SENDERS_TO: &str = "ip;";

fn decode<T: serde::de::DeserializeOwned>(kind: &'static str, id: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|source| StoreError::Corrupt {
        kind,
        id: id.to_string(),
        source,
    })
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    // Serialising our own model types to JSON cannot fail: no maps with
    // non-string keys, no foreign Serialize impls.
    serde_json::to_string(value).unwrap_or_else(|e| unreachable!("model serialises: {e}"))
}

fn hardware_row(row: &AnyRow) -> Result<Hardware> {
    let id: String = row.try_get("id")?;
    let body: String = row.try_get("body")?;
    decode("hardware", &id, &body)
}

/// The unfinished workflows (in `state`, when given), oldest first, from
/// the database.
async fn unfinished_workflows(pool: &AnyPool, state: Option<State>) -> Result<Vec<Workflow>> {
    let rows = sqlx::query(
        "SELECT id, body FROM workflow w \
         WHERE w.state IN ('PENDING', 'RUNNING') \
           AND ($1 IS NULL OR w.state = $1) \
         ORDER BY created_at, id",
    )
    .bind(state.map(|s| s.as_str()))
    .fetch_all(pool)
    .await?;
    rows.iter().map(workflow_row).collect()
}

/// Every hardware record, by id: the listing, and what an index is
/// (re)built from.
async fn all_hardware(pool: &AnyPool) -> Result<Vec<Hardware>> {
    let rows = sqlx::query("SELECT id, body FROM hardware ORDER BY id")
        .fetch_all(pool)
        .await?;
    rows.iter().map(hardware_row).collect()
}

fn template_row(row: &AnyRow) -> Result<TemplateRecord> {
    Ok(TemplateRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        data: row.try_get("data")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn rule_row(row: &AnyRow) -> Result<RuleRecord> {
    let name: String = row.try_get("name")?;
    let body: String = row.try_get("body")?;
    let enrolled: i64 = row.try_get("enrolled")?;
    Ok(RuleRecord {
        rule: decode("rule", &name, &body)?,
        enrolled: u64::try_from(enrolled).unwrap_or(0),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn workflow_row(row: &AnyRow) -> Result<Workflow> {
    let id: String = row.try_get("id")?;
    let body: String = row.try_get("body")?;
    decode("workflow", &id, &body)
}

/// Finds the interface path of a MAC or IP, for conflict messages.
fn field_of(hw: &Hardware, mac: Option<MacAddr>, ip: Option<IpAddr>) -> Option<String> {
    let base = if hw.resource.is_some() {
        "spec.interfaces"
    } else {
        "network.interfaces"
    };
    hw.network
        .interfaces
        .iter()
        .enumerate()
        .find_map(|(i, iface)| {
            let d = iface.dhcp.as_ref()?;
            if mac == Some(d.mac) {
                return Some(format!("{base}[{i}].dhcp.mac"));
            }
            if ip.is_some() && d.ip.as_ref().map(|x| x.address) == ip {
                return Some(format!("{base}[{i}].dhcp.ip.address"));
            }
            None
        })
}

impl SqlStore {
    /// Runs a one-row DELETE in its own transaction; `NotFound` (and no
    /// commit) when no row matched.
    /// Runs a one-row DELETE in its own transaction; `NotFound` (and no
    /// commit) when no row matched; else commits with what it changed.
    async fn delete_one(
        &self,
        sql: &'static str,
        kind: &'static str,
        id: &str,
        written: Option<Written>,
    ) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let done = sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind,
                id: id.to_string(),
            });
        }
        self.commit(tx, written.into_iter().collect()).await
    }

    /// One report inside `tx`: the workflow's row locked, the state machine
    /// applied, the row and its events written; what changed goes on
    /// `written` for the commit. A repeated report writes nothing.
    async fn transition_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        id: &str,
        transition: &Transition,
        written: &mut Vec<Written>,
    ) -> Result<Workflow> {
        // Locked: reports and deadlines for one workflow, from whichever
        // replica, apply one after the other to the state each left.
        let row = sqlx::query(for_update!(
            self,
            "SELECT id, body FROM workflow WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                kind: "workflow",
                id: id.to_string(),
            });
        };
        let current = workflow_row(&row)?;
        // Refusals come here, before anything is written: a refused report
        // in a batch leaves the transaction as it found it.
        let (next, events) = current.apply(transition)?;
        if next == current {
            // A repeated report: nothing to write, nothing to announce.
            return Ok(next);
        }
        // Turning netboot off can still meet a conflict after the
        // workflow's row is written: only then is a savepoint needed.
        let toggle =
            next.boot_options.toggle_allow_netboot && Workflow::just_succeeded(&current, &next);
        if toggle {
            sqlx::query("SAVEPOINT toggle").execute(&mut **tx).await?;
        }
        let written_before = written.len();
        let result = self
            .write_transition(tx, id, &next, &events, toggle, written)
            .await;
        if toggle {
            if result.is_err() {
                written.truncate(written_before);
                sqlx::query("ROLLBACK TO SAVEPOINT toggle")
                    .execute(&mut **tx)
                    .await?;
            }
            sqlx::query("RELEASE SAVEPOINT toggle")
                .execute(&mut **tx)
                .await?;
        }
        result?;
        let quiet = is_quiet(transition);
        written.push(Written::Workflow(Box::new(next.clone()), quiet));
        Ok(next)
    }

    /// The writes of one report: the workflow's row, its events (one
    /// statement: each is a round trip to SQLite's thread) and, when it just
    /// succeeded with the toggle, its machines' netboot.
    async fn write_transition(
        &self,
        tx: &mut Transaction<'_, Any>,
        id: &str,
        next: &Workflow,
        events: &[Event],
        toggle: bool,
        written: &mut Vec<Written>,
    ) -> Result<()> {
        Self::update_workflows(self.backend, tx, &[(id, next)]).await?;
        let events: Vec<(String, Event)> =
            events.iter().map(|e| (id.to_string(), e.clone())).collect();
        Self::insert_events(self.backend, tx, &events).await?;
        // Installed: the next boot must come from disk. Same transaction, so
        // a crash cannot leave a succeeded workflow with netboot still on.
        if toggle {
            for hw in self.set_netboot(tx, next, false).await? {
                written.push(Written::Hardware(Box::new(hw)));
            }
        }
        Ok(())
    }

    /// The workflows `ids` (sorted), locked on PostgreSQL, by id.
    async fn workflows_for_update(
        &self,
        tx: &mut Transaction<'_, Any>,
        ids: &[&str],
    ) -> Result<HashMap<String, Workflow>> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(self.backend.max_bound()) {
            let mut sql = String::from("SELECT id, body FROM workflow WHERE id IN (");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                self.backend.push_param(&mut sql, i + 1);
            }
            sql.push_str(") ORDER BY id");
            if self.backend == Backend::Postgres {
                sql.push_str(" FOR UPDATE");
            }
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut **tx).await? {
                let wf = workflow_row(&row)?;
                found.insert(wf.id.clone(), wf);
            }
        }
        Ok(found)
    }

    /// Writes workflows' rows (row id, as now) inside `tx`, in as few
    /// statements as the bound-parameter limit allows: a group commit of
    /// reports was one statement per workflow, each a round trip to
    /// SQLite's thread (the writer's slowest part under a boot storm).
    async fn update_workflows(
        backend: Backend,
        tx: &mut Transaction<'_, Any>,
        rows: &[(&str, &Workflow)],
    ) -> Result<()> {
        for chunk in rows.chunks(backend.max_bound() / 4) {
            // `VALUES` names its columns column1.. on both backends.
            let mut sql = String::from(
                "UPDATE workflow SET state = v.column2, body = v.column3, \
                 version = version + 1, updated_at = v.column4 FROM (VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                backend.push_row(&mut sql, i * 4 + 1, 4);
            }
            sql.push_str(") AS v WHERE workflow.id = v.column1");
            let mut update = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, wf) in chunk {
                update = update
                    .bind(*id)
                    .bind(wf.state.as_str())
                    .bind(encode(*wf))
                    .bind(wf.updated_at);
            }
            update.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Appends events (workflow id, event), in order, in as few statements
    /// as the bound-parameter limit allows.
    async fn insert_events(
        backend: Backend,
        tx: &mut Transaction<'_, Any>,
        events: &[(String, Event)],
    ) -> Result<()> {
        for chunk in events.chunks(backend.max_bound() / 3) {
            let mut sql =
                String::from("INSERT INTO workflow_event (workflow_id, at, body) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                backend.push_row(&mut sql, i * 3 + 1, 3);
            }
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, event) in chunk {
                insert = insert.bind(id).bind(event.at).bind(encode(event));
            }
            insert.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Writes `record` inside `tx`; false (nothing written) when its
    /// hardware record does not exist.
    async fn upsert_inventory(
        tx: &mut Transaction<'_, Any>,
        record: &InventoryRecord,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO inventory (hardware_id, worker, body, updated_at) \
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM hardware WHERE id = $1) \
             ON CONFLICT (hardware_id) DO UPDATE SET worker = excluded.worker, \
             body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(&record.hardware_id)
        .bind(&record.worker)
        .bind(encode(&record.facts))
        .bind(record.updated_at)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets `allow_pxe` on every machine a workflow names (its workers and
    /// its `.Hardware`), inside `tx`; returns the records it changed, for the
    /// index once the transaction commits.
    async fn set_netboot(
        &self,
        tx: &mut Transaction<'_, Any>,
        wf: &Workflow,
        allow: bool,
    ) -> Result<Vec<Hardware>> {
        let mut names: Vec<String> = wf.tasks.iter().map(|t| t.worker.clone()).collect();
        names.extend(wf.hardware_id.clone());
        // One order for every transaction that locks several machines, so
        // two workflows over the same machines cannot deadlock.
        names.sort();
        names.dedup();
        let mut changed: Vec<Hardware> = Vec::new();
        for name in names {
            let by_mac = name.parse::<MacAddr>().ok().map(|m| m.to_string());
            let row = sqlx::query(for_update!(
                self,
                "SELECT h.id, h.body FROM hardware h WHERE h.id = $1 \
                 OR h.id = (SELECT hardware_id FROM hardware_mac WHERE mac = $2)"
            ))
            .bind(&name)
            .bind(by_mac)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(row) = row else { continue };
            let mut hw = hardware_row(&row)?;
            if changed.iter().any(|c| c.id == hw.id) || !hw.set_allow_pxe(allow) {
                continue;
            }
            let id = hw.id.clone();
            Self::write_hardware(tx, &id, &hw, now_ms()).await?;
            changed.push(hw);
        }
        Ok(changed)
    }

    /// A new workflow's rows inside `tx` (the workflow, its workers, its
    /// first event, netboot switched on when it asks): what changed, for
    /// the commit.
    async fn insert_workflow(
        &self,
        tx: &mut Transaction<'_, Any>,
        wf: &Workflow,
    ) -> Result<Vec<Written>> {
        sqlx::query(
            "INSERT INTO workflow (id, template_id, hardware_id, state, body, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7)",
        )
        .bind(&wf.id)
        .bind(&wf.template_id)
        .bind(&wf.hardware_id)
        .bind(wf.state.as_str())
        .bind(encode(wf))
        .bind(wf.created_at)
        .bind(wf.updated_at)
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            conflict_on_unique(e, || StoreError::Conflict {
                field: Some("id".into()),
                message: format!("a workflow with id {:?} already exists", wf.id),
            })
        })?;
        for worker in worker_keys(wf) {
            sqlx::query("INSERT INTO workflow_worker (workflow_id, worker) VALUES ($1, $2)")
                .bind(&wf.id)
                .bind(worker)
                .execute(&mut **tx)
                .await?;
        }
        let created = wf.created_event();
        sqlx::query("INSERT INTO workflow_event (workflow_id, at, body) VALUES ($1, $2, $3)")
            .bind(&wf.id)
            .bind(created.at)
            .bind(encode(&created))
            .execute(&mut **tx)
            .await?;
        let netboot = if wf.boot_options.toggle_allow_netboot {
            self.set_netboot(tx, wf, true).await?
        } else {
            Vec::new()
        };
        let mut written: Vec<Written> = netboot
            .into_iter()
            .map(|hw| Written::Hardware(Box::new(hw)))
            .collect();
        written.push(Written::Workflow(Box::new(wf.clone()), false));
        Ok(written)
    }

    /// Writes `hw` under `id` inside `tx`, enforcing MAC/IP ownership.
    async fn write_hardware(
        tx: &mut Transaction<'_, Any>,
        id: &str,
        hw: &Hardware,
        now: i64,
    ) -> Result<bool> {
        for mac in hw.macs() {
            let owner: Option<String> =
                sqlx::query_scalar("SELECT hardware_id FROM hardware_mac WHERE mac = $1")
                    .bind(mac.to_string())
                    .fetch_optional(&mut **tx)
                    .await?;
            if let Some(owner) = owner.filter(|o| o != id) {
                return Err(StoreError::Conflict {
                    field: field_of(hw, Some(mac), None),
                    message: format!("MAC {mac} already belongs to hardware {owner:?}"),
                });
            }
        }
        for ip in hw.ips() {
            let owner: Option<String> =
                sqlx::query_scalar("SELECT hardware_id FROM hardware_ip WHERE ip = $1")
                    .bind(ip.to_string())
                    .fetch_optional(&mut **tx)
                    .await?;
            if let Some(owner) = owner.filter(|o| o != id) {
                return Err(StoreError::Conflict {
                    field: field_of(hw, None, Some(ip)),
                    message: format!("IP {ip} is already reserved for hardware {owner:?}"),
                });
            }
        }
        let existed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM hardware WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO hardware (id, body, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(encode(hw))
        .bind(now)
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM hardware_mac WHERE hardware_id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM hardware_ip WHERE hardware_id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        // The checks above saw every committed owner; a record another
        // server is writing at this moment meets the primary key instead.
        for mac in hw.macs() {
            sqlx::query("INSERT INTO hardware_mac (mac, hardware_id) VALUES ($1, $2)")
                .bind(mac.to_string())
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(|e| {
                    conflict_on_unique(e, || StoreError::Conflict {
                        field: field_of(hw, Some(mac), None),
                        message: format!("MAC {mac} is being given to another record right now"),
                    })
                })?;
        }
        for ip in hw.ips() {
            sqlx::query("INSERT INTO hardware_ip (ip, hardware_id) VALUES ($1, $2)")
                .bind(ip.to_string())
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(|e| {
                    conflict_on_unique(e, || StoreError::Conflict {
                        field: field_of(hw, None, Some(ip)),
                        message: format!("IP {ip} is being reserved for another record right now"),
                    })
                })?;
        }
        Ok(existed.is_none())
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn push_hardware(&self, mut hw: Hardware) -> Result<Pushed> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        if hw.id.is_empty() {
            let mut owner = None;
            for mac in hw.macs() {
                owner = sqlx::query_scalar::<_, String>(
                    "SELECT hardware_id FROM hardware_mac WHERE mac = $1",
                )
                .bind(mac.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                if owner.is_some() {
                    break;
                }
            }
            hw.id = owner.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        }
        let id = hw.id.clone();
        let created = Self::write_hardware(&mut tx, &id, &hw, now_ms()).await?;
        self.commit(tx, vec![Written::Hardware(Box::new(hw.clone()))])
            .await?;
        Ok(Pushed {
            hardware: hw,
            created,
        })
    }

    async fn replace_hardware(&self, id: &str, mut hw: Hardware) -> Result<Hardware> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        // Locked: a delete committing on another replica meanwhile must not
        // be undone by the upsert below.
        let exists: Option<i64> =
            sqlx::query_scalar(for_update!(self, "SELECT 1 FROM hardware WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                kind: "hardware",
                id: id.to_string(),
            });
        }
        hw.id = id.to_string();
        Self::write_hardware(&mut tx, id, &hw, now_ms()).await?;
        self.commit(tx, vec![Written::Hardware(Box::new(hw.clone()))])
            .await?;
        Ok(hw)
    }

    async fn hardware(&self, id: &str) -> Result<Option<Hardware>> {
        let row = sqlx::query("SELECT id, body FROM hardware WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.as_ref().map(hardware_row).transpose()
    }

    async fn hardware_by_mac(&self, mac: MacAddr) -> Result<Option<Hardware>> {
        let row = sqlx::query(
            "SELECT h.id, h.body FROM hardware h JOIN hardware_mac m ON m.hardware_id = h.id \
             WHERE m.mac = $1",
        )
        .bind(mac.to_string())
        .fetch_optional(&mut *self.read().await?)
        .await?;
        row.as_ref().map(hardware_row).transpose()
    }

    async fn hardware_by_ip(&self, ip: IpAddr) -> Result<Option<Hardware>> {
        let row = sqlx::query(
            "SELECT h.id, h.body FROM hardware h JOIN hardware_ip i ON i.hardware_id = h.id \
             WHERE i.ip = $1",
        )
        .bind(ip.to_string())
        .fetch_optional(&mut *self.read().await?)
        .await?;
        row.as_ref().map(hardware_row).transpose()
    }

    async fn list_hardware(&self) -> Result<Vec<Hardware>> {
        all_hardware(&self.pool).await
    }

    async fn delete_hardware(&self, id: &str) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let row = sqlx::query(for_update!(
            self,
            "SELECT id, body FROM hardware WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                kind: "hardware",
                id: id.to_string(),
            });
        };
        let hw = hardware_row(&row)?;
        let mut workers: Vec<String> = hw.macs().map(|m| m.to_string()).collect();
        workers.push(id.to_lowercase());
        for worker in workers {
            let active: Option<String> = sqlx::query_scalar(
                "SELECT w.id FROM workflow w JOIN workflow_worker ww ON ww.workflow_id = w.id \
                 WHERE ww.worker = $1 AND w.state IN ('PENDING', 'RUNNING') LIMIT 1",
            )
            .bind(&worker)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(wf) = active {
                return Err(StoreError::Conflict {
                    field: None,
                    message: format!(
                        "hardware {id:?} has an unfinished workflow {wf:?}; delete or finish it first"
                    ),
                });
            }
        }
        sqlx::query("DELETE FROM hardware WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM boot_event WHERE hardware_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM machine_log WHERE machine = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx, vec![Written::HardwareDeleted(id.to_string())])
            .await?;
        Ok(())
    }

    async fn create_template(&self, name: &str, data: &str) -> Result<TemplateRecord> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let taken: Option<String> = sqlx::query_scalar("SELECT id FROM template WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(other) = taken {
            return Err(StoreError::Conflict {
                field: Some("name".into()),
                message: format!("a template named {name:?} already exists (id {other})"),
            });
        }
        let now = now_ms();
        let record = TemplateRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            data: data.to_string(),
            created_at: now,
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO template (id, name, data, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&record.id)
        .bind(&record.name)
        .bind(&record.data)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            conflict_on_unique(e, || StoreError::Conflict {
                field: Some("name".into()),
                message: format!("a template named {name:?} already exists"),
            })
        })?;
        let written = Written::Other(ChangeKind::Template, record.id.clone(), ChangeOp::Upsert);
        self.commit(tx, vec![written]).await?;
        Ok(record)
    }

    async fn template(&self, id_or_name: &str) -> Result<Option<TemplateRecord>> {
        let row = sqlx::query(
            "SELECT id, name, data, created_at, updated_at FROM template \
             WHERE id = $1 OR name = $1 ORDER BY (id = $1) DESC LIMIT 1",
        )
        .bind(id_or_name)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        row.as_ref().map(template_row).transpose()
    }

    async fn list_templates(&self) -> Result<Vec<TemplateRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, data, created_at, updated_at FROM template ORDER BY name",
        )
        .fetch_all(&mut *self.read().await?)
        .await?;
        rows.iter().map(template_row).collect()
    }

    async fn update_template(
        &self,
        id: &str,
        name: Option<&str>,
        data: &str,
    ) -> Result<TemplateRecord> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let row = sqlx::query(for_update!(
            self,
            "SELECT id, name, data, created_at, updated_at FROM template WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                kind: "template",
                id: id.to_string(),
            });
        };
        let mut record = template_row(&row)?;
        if let Some(name) = name.filter(|n| *n != record.name) {
            let taken: Option<String> =
                sqlx::query_scalar("SELECT id FROM template WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(other) = taken {
                return Err(StoreError::Conflict {
                    field: Some("name".into()),
                    message: format!("a template named {name:?} already exists (id {other})"),
                });
            }
            record.name = name.to_string();
        }
        record.data = data.to_string();
        record.updated_at = now_ms();
        sqlx::query("UPDATE template SET name = $1, data = $2, updated_at = $3 WHERE id = $4")
            .bind(&record.name)
            .bind(&record.data)
            .bind(record.updated_at)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                conflict_on_unique(e, || StoreError::Conflict {
                    field: Some("name".into()),
                    message: format!("a template named {:?} already exists", record.name),
                })
            })?;
        let written = Written::Other(ChangeKind::Template, id.to_string(), ChangeOp::Upsert);
        self.commit(tx, vec![written]).await?;
        Ok(record)
    }

    async fn delete_template(&self, id: &str) -> Result<()> {
        let written = Written::Other(ChangeKind::Template, id.to_string(), ChangeOp::Delete);
        self.delete_one(
            "DELETE FROM template WHERE id = $1",
            "template",
            id,
            Some(written),
        )
        .await
    }

    async fn create_workflow(&self, wf: &Workflow) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let written = self.insert_workflow(&mut tx, wf).await?;
        self.commit(tx, written).await?;
        Ok(())
    }

    async fn workflow(&self, id: &str) -> Result<Option<Workflow>> {
        // An unfinished one from memory on the embedded store (exactly the
        // row, see `active.rs`): a worker's stream asks after each action.
        if let Some(wf) = self.active.as_ref().and_then(|a| a.get(id)) {
            return Ok(Some(wf));
        }
        let row = sqlx::query("SELECT id, body FROM workflow WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.as_ref().map(workflow_row).transpose()
    }

    async fn list_workflows(&self, filter: &WorkflowFilter) -> Result<Vec<Workflow>> {
        // The embedded store answers the dispatch path's question from
        // memory (see `active.rs`).
        if filter.active
            && let Some(active) = &self.active
        {
            return Ok(active.list(filter.worker.as_deref(), filter.state));
        }
        // Two statements rather than one with an optional filter, so SQLite
        // uses the worker index: a worker's stream asks this on every wake,
        // and a scan of every workflow ever stored grows without bound.
        let rows = match &filter.worker {
            Some(worker) => {
                sqlx::query(
                    "SELECT w.id, w.body FROM workflow_worker ww \
                     JOIN workflow w ON w.id = ww.workflow_id \
                     WHERE ww.worker = $1 \
                       AND ($2 IS NULL OR w.state = $2) \
                       AND ($3 = 0 OR w.state IN ('PENDING', 'RUNNING')) \
                     ORDER BY w.created_at, w.id",
                )
                .bind(worker.to_lowercase())
                .bind(filter.state.map(|s| s.as_str()))
                .bind(i64::from(filter.active))
                .fetch_all(&mut *self.read().await?)
                .await?
            }
            // The deadline check asks for every unfinished workflow each
            // second: by state index, not a scan of finished ones.
            None if filter.active => {
                return unfinished_workflows(&self.pool, filter.state).await;
            }
            None => {
                sqlx::query(
                    "SELECT id, body FROM workflow w \
                     WHERE ($1 IS NULL OR w.state = $1) \
                     ORDER BY created_at, id",
                )
                .bind(filter.state.map(|s| s.as_str()))
                .fetch_all(&mut *self.read().await?)
                .await?
            }
        };
        rows.iter().map(workflow_row).collect()
    }

    async fn count_workflows_by_state(&self) -> Result<Vec<(State, u64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM workflow GROUP BY state")
            .fetch_all(&mut *self.read().await?)
            .await?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            // A state this build does not know (a newer replica wrote it)
            // is left out rather than miscounted.
            if let Some(state) = State::parse(&name) {
                counts.push((state, u64::try_from(n).unwrap_or(0)));
            }
        }
        Ok(counts)
    }

    async fn delete_workflow(&self, id: &str) -> Result<()> {
        let written = Written::Other(ChangeKind::Workflow, id.to_string(), ChangeOp::Delete);
        self.delete_one(
            "DELETE FROM workflow WHERE id = $1",
            "workflow",
            id,
            Some(written),
        )
        .await
    }

    async fn workflow_events(&self, id: &str) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT seq, workflow_id, body FROM workflow_event WHERE workflow_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&mut *self.read().await?)
        .await?;
        rows.iter()
            .map(|row| {
                let body: String = row.try_get("body")?;
                Ok(EventRecord {
                    seq: row.try_get("seq")?,
                    workflow_id: row.try_get("workflow_id")?,
                    event: decode("workflow event", id, &body)?,
                })
            })
            .collect()
    }

    async fn apply_transition(&self, id: &str, transition: &Transition) -> Result<Workflow> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let mut written = Vec::new();
        let next = self
            .transition_in(&mut tx, id, transition, &mut written)
            .await?;
        if !written.is_empty() {
            self.commit(tx, written).await?;
        }
        Ok(next)
    }

    async fn apply_transitions(&self, batch: &[(String, Transition)]) -> Vec<Result<Workflow>> {
        // In lock order (by workflow id), so that two replicas' batches
        // cannot wait on each other's rows.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by(|a, b| batch[*a].0.cmp(&batch[*b].0));
        let mut results: Vec<Option<Result<Workflow>>> = (0..batch.len()).map(|_| None).collect();
        let database_failure = async {
            let mut conn = self.begin().await?;
            let mut tx = conn.transaction().await?;
            let mut written = Vec::new();
            let mut ids: Vec<&str> = order.iter().map(|&i| batch[i].0.as_str()).collect();
            ids.dedup();
            // Every workflow of the batch in one read, then each report
            // applied in memory, then one write per changed workflow and
            // one for all the events: each statement is a round trip to
            // SQLite's thread.
            let mut current = self.workflows_for_update(&mut tx, &ids).await?;
            let mut changed: Vec<(String, bool)> = Vec::new();
            let mut events: Vec<(String, Event)> = Vec::new();
            for &i in &order {
                let (id, transition) = &batch[i];
                let Some(before) = current.get(id) else {
                    results[i] = Some(Err(StoreError::NotFound {
                        kind: "workflow",
                        id: id.clone(),
                    }));
                    continue;
                };
                let (next, new_events) = match before.apply(transition) {
                    Ok(applied) => applied,
                    Err(e) => {
                        results[i] = Some(Err(e.into()));
                        continue;
                    }
                };
                if next == *before {
                    // A repeated report: nothing to write.
                    results[i] = Some(Ok(next));
                    continue;
                }
                // Installed: the next boot must come from disk, in the same
                // transaction. A conflict there refuses this report alone.
                if next.boot_options.toggle_allow_netboot && Workflow::just_succeeded(before, &next)
                {
                    sqlx::query("SAVEPOINT toggle").execute(&mut *tx).await?;
                    match self.set_netboot(&mut tx, &next, false).await {
                        Ok(hardware) => {
                            sqlx::query("RELEASE SAVEPOINT toggle")
                                .execute(&mut *tx)
                                .await?;
                            written.extend(
                                hardware
                                    .into_iter()
                                    .map(|hw| Written::Hardware(Box::new(hw))),
                            );
                        }
                        Err(e) if !matches!(e, StoreError::Database(_)) => {
                            sqlx::query("ROLLBACK TO SAVEPOINT toggle")
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query("RELEASE SAVEPOINT toggle")
                                .execute(&mut *tx)
                                .await?;
                            results[i] = Some(Err(e));
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                let quiet = is_quiet(transition);
                match changed.iter_mut().find(|(c, _)| c == id) {
                    Some((_, all_quiet)) => *all_quiet &= quiet,
                    None => changed.push((id.clone(), quiet)),
                }
                events.extend(new_events.into_iter().map(|e| (id.clone(), e)));
                results[i] = Some(Ok(next.clone()));
                current.insert(id.clone(), next);
            }
            let rows: Vec<(&str, &Workflow)> = changed
                .iter()
                .filter_map(|(id, _)| Some((id.as_str(), current.get(id)?)))
                .collect();
            Self::update_workflows(self.backend, &mut tx, &rows).await?;
            Self::insert_events(self.backend, &mut tx, &events).await?;
            for (id, quiet) in changed {
                if let Some(wf) = current.remove(&id) {
                    written.push(Written::Workflow(Box::new(wf), quiet));
                }
            }
            if !written.is_empty() {
                self.commit(tx, written).await?;
            }
            Ok::<(), StoreError>(())
        }
        .await
        .err();
        match database_failure {
            None => results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(StoreError::Batch {
                            message: "the report was not applied".into(),
                            unavailable: false,
                        })
                    })
                })
                .collect(),
            // Nothing was committed: every report fails alike, and is sent again.
            Some(e) => {
                let (message, unavailable) = (e.to_string(), e.is_unavailable());
                (0..batch.len())
                    .map(|_| {
                        Err(StoreError::Batch {
                            message: message.clone(),
                            unavailable,
                        })
                    })
                    .collect()
            }
        }
    }

    async fn append_event(&self, id: &str, event: &Event) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let done = sqlx::query(
            "INSERT INTO workflow_event (workflow_id, at, body) \
             SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM workflow WHERE id = $1)",
        )
        .bind(id)
        .bind(event.at)
        .bind(encode(event))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "workflow",
                id: id.to_string(),
            });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn append_action_logs(&self, lines: &[ActionLogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        if self.backend == Backend::Postgres {
            // Lines of one workflow are numbered in commit order, so a
            // follower reading "after seq N" never misses one that another
            // replica committed later with a lower number.
            let mut ids: Vec<&str> = lines.iter().map(|l| l.workflow_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let mut workflows: Vec<&str> = Vec::new();
        for l in lines {
            // Skip lines for workflows that no longer exist instead of
            // failing the whole batch on the foreign key.
            sqlx::query(
                "INSERT INTO action_log (workflow_id, action, at, body) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM workflow WHERE id = $1)",
            )
            .bind(&l.workflow_id)
            .bind(&l.action)
            .bind(l.at)
            .bind(encode(l))
            .execute(&mut *tx)
            .await?;
            if !workflows.contains(&l.workflow_id.as_str()) {
                workflows.push(&l.workflow_id);
            }
        }
        for wf in workflows {
            sqlx::query(
                "DELETE FROM action_log WHERE workflow_id = $1 AND seq <= \
                 (SELECT seq FROM action_log WHERE workflow_id = $1 ORDER BY seq DESC \
                  LIMIT 1 OFFSET $2)",
            )
            .bind(wf)
            .bind(ACTION_LOG_KEEP)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn action_logs(
        &self,
        workflow_id: &str,
        query: &ActionLogQuery,
    ) -> Result<Vec<ActionLogRecord>> {
        let limit = i64::from(query.limit.max(1));
        // Following (`after` > 0) reads forwards; a first look reads the
        // newest lines.
        let sql = if query.after > 0 {
            "SELECT seq, body FROM action_log WHERE workflow_id = $1 AND seq > $2 \
             AND ($3 IS NULL OR action = $3) ORDER BY seq LIMIT $4"
        } else {
            "SELECT seq, body FROM (SELECT seq, body FROM action_log WHERE workflow_id = $1 \
             AND seq > $2 AND ($3 IS NULL OR action = $3) ORDER BY seq DESC LIMIT $4) AS newest \
             ORDER BY seq"
        };
        let rows = sqlx::query(sql)
            .bind(workflow_id)
            .bind(query.after)
            .bind(query.action.as_deref())
            .bind(limit)
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter()
            .map(|row| {
                let body: String = row.try_get("body")?;
                Ok(ActionLogRecord {
                    seq: row.try_get("seq")?,
                    line: decode("action log line", workflow_id, &body)?,
                })
            })
            .collect()
    }

    async fn put_inventory(&self, record: &InventoryRecord) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        if !Self::upsert_inventory(&mut tx, record).await? {
            return Err(StoreError::NotFound {
                kind: "hardware",
                id: record.hardware_id.clone(),
            });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn put_inventories(&self, records: &[InventoryRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // One row per machine (the last one given), or the upsert would
        // touch a row twice in one statement.
        let last = last_per_key(records, |r| r.hardware_id.as_str());
        let mut conn = self.begin_background().await?;
        let mut tx = conn.transaction().await?;
        // A statement per group of rows, not per row: each is a round trip
        // to SQLite's thread while holding the single writer.
        for chunk in last.chunks(self.backend.max_bound() / 4) {
            let mut sql = String::from(
                "INSERT INTO inventory (hardware_id, worker, body, updated_at) \
                 SELECT v.column1, v.column2, v.column3, v.column4 FROM (VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                self.backend.push_row(&mut sql, i * 4 + 1, 4);
            }
            // Hardware deleted meanwhile: nothing to attach it to.
            sql.push_str(
                ") AS v WHERE EXISTS (SELECT 1 FROM hardware WHERE id = v.column1) \
                 ON CONFLICT (hardware_id) DO UPDATE SET worker = excluded.worker, \
                 body = excluded.body, updated_at = excluded.updated_at",
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                insert = insert
                    .bind(&r.hardware_id)
                    .bind(&r.worker)
                    .bind(encode(&r.facts))
                    .bind(r.updated_at);
            }
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn inventory(&self, hardware_id: &str) -> Result<Option<InventoryRecord>> {
        let row = sqlx::query(
            "SELECT hardware_id, worker, body, updated_at FROM inventory WHERE hardware_id = $1",
        )
        .bind(hardware_id)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let body: String = row.try_get("body")?;
        Ok(Some(InventoryRecord {
            hardware_id: row.try_get("hardware_id")?,
            worker: row.try_get("worker")?,
            facts: decode("inventory", hardware_id, &body)?,
            updated_at: row.try_get("updated_at")?,
        }))
    }

    async fn append_logs(&self, entries: &[LogEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let limits = self.log_limits;
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let mut machines: Vec<&str> = Vec::new();
        let mut unknown = false;
        for e in entries {
            sqlx::query("INSERT INTO machine_log (machine, at, body) VALUES ($1, $2, $3)")
                .bind(&e.machine)
                .bind(e.at)
                .bind(encode(e))
                .execute(&mut *tx)
                .await?;
            if e.machine.starts_with(UNKNOWN_SENDER_PREFIX) {
                unknown = true;
            } else if !machines.contains(&e.machine.as_str()) {
                machines.push(&e.machine);
            }
        }
        for machine in machines {
            sqlx::query(
                "DELETE FROM machine_log WHERE machine = $1 AND seq <= \
                 (SELECT seq FROM machine_log WHERE machine = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)",
            )
            .bind(machine)
            .bind(limits.per_machine)
            .execute(&mut *tx)
            .await?;
        }
        if unknown {
            // Every `ip:` sender in one bucket: a range of the (machine,
            // seq) index, so only that bucket's rows are read.
            sqlx::query(
                "DELETE FROM machine_log WHERE machine >= $1 AND machine < $2 AND seq <= \
                 (SELECT seq FROM machine_log WHERE machine >= $1 AND machine < $2 \
                  ORDER BY seq DESC LIMIT 1 OFFSET $3)",
            )
            .bind(UNKNOWN_SENDERS_FROM)
            .bind(UNKNOWN_SENDERS_TO)
            .bind(limits.unknown_senders)
            .execute(&mut *tx)
            .await?;
        }
        // The global budget. Rows number at most the span of sequence
        // numbers, read in O(log n); only past the budget is the table
        // walked to find the oldest line to keep.
        let (lowest, highest): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT min(seq), max(seq) FROM machine_log")
                .fetch_one(&mut *tx)
                .await?;
        if let (Some(lowest), Some(highest)) = (lowest, highest)
            && highest - lowest >= limits.total
        {
            sqlx::query(
                "DELETE FROM machine_log WHERE seq <= \
                 (SELECT seq FROM machine_log ORDER BY seq DESC LIMIT 1 OFFSET $1)",
            )
            .bind(limits.total)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn append_boot_events(&self, events: &[(String, BootEvent)]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.begin_background().await?;
        let mut tx = conn.transaction().await?;
        // A boot storm writes ~16 steps per machine: one statement per
        // group of rows, and one prune for all the machines of a group,
        // not one of each per row (every statement is a round trip to
        // the database's thread, holding the one writer).
        for chunk in events.chunks(self.backend.max_bound() / 4) {
            let mut sql =
                String::from("INSERT INTO boot_event (hardware_id, at, step, detail) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                self.backend.push_row(&mut sql, i * 4 + 1, 4);
            }
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (hardware_id, event) in chunk {
                insert = insert
                    .bind(hardware_id)
                    .bind(event.at)
                    .bind(event.step.as_str())
                    .bind(&event.detail);
            }
            insert.execute(&mut *tx).await?;
        }
        let mut machines: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
        machines.sort_unstable();
        machines.dedup();
        for chunk in machines.chunks(self.backend.max_bound()) {
            let mut list = String::new();
            for i in 0..chunk.len() {
                if i > 0 {
                    list.push_str(", ");
                }
                self.backend.push_param(&mut list, i + 1);
            }
            // Each machine's rows newest first; past the limit they go. The
            // limit is a constant of ours, written in the text.
            let sql = format!(
                "DELETE FROM boot_event WHERE seq IN (SELECT seq FROM \
                 (SELECT seq, ROW_NUMBER() OVER (PARTITION BY hardware_id ORDER BY seq DESC) AS newer \
                 FROM boot_event WHERE hardware_id IN ({list})) AS ranked WHERE newer > {})",
                crate::BOOT_EVENTS_PER_MACHINE
            );
            let mut prune = sqlx::query(sqlx::AssertSqlSafe(sql));
            for machine in chunk {
                prune = prune.bind(*machine);
            }
            prune.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn boot_events(&self, hardware_id: &str, limit: u32) -> Result<Vec<BootEvent>> {
        let rows = sqlx::query(
            "SELECT at, step, detail FROM (SELECT seq, at, step, detail FROM boot_event \
             WHERE hardware_id = $1 ORDER BY seq DESC LIMIT $2) AS newest ORDER BY seq",
        )
        .bind(hardware_id)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.read().await?)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let step: String = row.try_get("step")?;
            // A step this build does not know (a newer replica wrote it)
            // is left out.
            if let Some(step) = Step::parse(&step) {
                events.push(BootEvent {
                    at: row.try_get("at")?,
                    step,
                    detail: row.try_get("detail")?,
                });
            }
        }
        Ok(events)
    }

    async fn machine_logs(&self, machine: &str, limit: u32) -> Result<Vec<LogRecord>> {
        let rows = sqlx::query(
            "SELECT seq, body FROM (SELECT seq, body FROM machine_log WHERE machine = $1 \
             ORDER BY seq DESC LIMIT $2) AS newest ORDER BY seq",
        )
        .bind(machine)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.read().await?)
        .await?;
        rows.iter()
            .map(|row| {
                let body: String = row.try_get("body")?;
                Ok(LogRecord {
                    seq: row.try_get("seq")?,
                    entry: decode("log line", machine, &body)?,
                })
            })
            .collect()
    }

    async fn put_bmc(&self, record: &BmcRecord, secret: &BmcSecret) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM hardware WHERE id = $1")
            .bind(&record.hardware_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                kind: "hardware",
                id: record.hardware_id.clone(),
            });
        }
        let sealed = self
            .key
            .seal(&record.hardware_id, record, &secret.0)
            .map_err(|reason| StoreError::Secret {
                hardware_id: record.hardware_id.clone(),
                reason,
            })?;
        sqlx::query(
            "INSERT INTO bmc (hardware_id, body, secret, secret_format, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (hardware_id) DO UPDATE SET body = excluded.body, secret = excluded.secret, \
             secret_format = excluded.secret_format, updated_at = excluded.updated_at",
        )
        .bind(&record.hardware_id)
        .bind(encode(record))
        .bind(sealed)
        .bind(SECRET_SEALED_V1)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_bmc(&self, record: &BmcRecord) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let body: Option<String> = sqlx::query_scalar(for_update!(
            self,
            "SELECT body FROM bmc WHERE hardware_id = $1"
        ))
        .bind(&record.hardware_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(body) = body else {
            return Err(StoreError::NotFound {
                kind: "bmc",
                id: record.hardware_id.clone(),
            });
        };
        let stored: BmcRecord = decode("bmc", &record.hardware_id, &body)?;
        let fields = stored.endpoint_changes(record);
        if !fields.is_empty() {
            return Err(StoreError::PasswordRequired {
                hardware_id: record.hardware_id.clone(),
                fields,
            });
        }
        sqlx::query("UPDATE bmc SET body = $1, updated_at = $2 WHERE hardware_id = $3")
            .bind(encode(record))
            .bind(now_ms())
            .bind(&record.hardware_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn bmc(&self, hardware_id: &str) -> Result<Option<BmcRecord>> {
        // The record alone: showing a BMC never needs (or fails on) its key.
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM bmc WHERE hardware_id = $1")
                .bind(hardware_id)
                .fetch_optional(&mut *self.read().await?)
                .await?;
        body.map(|body| decode("bmc", hardware_id, &body))
            .transpose()
    }

    async fn bmc_with_secret(&self, hardware_id: &str) -> Result<Option<(BmcRecord, BmcSecret)>> {
        let row = sqlx::query("SELECT body, secret, secret_format FROM bmc WHERE hardware_id = $1")
            .bind(hardware_id)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let body: String = row.try_get("body")?;
        let stored: String = row.try_get("secret")?;
        let format: i64 = row.try_get("secret_format")?;
        let record: BmcRecord = decode("bmc", hardware_id, &body)?;
        let unusable = |reason| StoreError::Secret {
            hardware_id: hardware_id.to_string(),
            reason,
        };
        let password = match format {
            SECRET_SEALED_V1 => self
                .key
                .open(hardware_id, &record, &stored)
                .map_err(unusable)?,
            // Written by an older Bellows after this one opened the
            // database; sealed at the next open.
            SECRET_CLEAR => stored,
            _ => return Err(unusable(crate::SecretError::Format)),
        };
        Ok(Some((record, BmcSecret(password))))
    }

    async fn list_bmcs(&self) -> Result<Vec<BmcRecord>> {
        let rows = sqlx::query("SELECT hardware_id, body FROM bmc ORDER BY hardware_id")
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("hardware_id")?;
                let body: String = row.try_get("body")?;
                decode("bmc", &id, &body)
            })
            .collect()
    }

    async fn set_power_state(
        &self,
        hardware_id: &str,
        state: Option<&str>,
        error: Option<&str>,
        at: i64,
    ) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let body: Option<String> = sqlx::query_scalar(for_update!(
            self,
            "SELECT body FROM bmc WHERE hardware_id = $1"
        ))
        .bind(hardware_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(body) = body else { return Ok(()) };
        let mut record: BmcRecord = decode("bmc", hardware_id, &body)?;
        if let Some(state) = state {
            record.power_state = Some(state.to_string());
        }
        record.power_error = error.map(str::to_string);
        record.power_checked_at = Some(at);
        sqlx::query("UPDATE bmc SET body = $1 WHERE hardware_id = $2")
            .bind(encode(&record))
            .bind(hardware_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_bmc(&self, hardware_id: &str) -> Result<()> {
        self.delete_one(
            "DELETE FROM bmc WHERE hardware_id = $1",
            "bmc",
            hardware_id,
            None,
        )
        .await
    }

    async fn put_rule(&self, rule: &Rule) -> Result<bool> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let existed: Option<i64> =
            sqlx::query_scalar(for_update!(self, "SELECT 1 FROM rule WHERE name = $1"))
                .bind(&rule.name)
                .fetch_optional(&mut *tx)
                .await?;
        if existed.is_none() {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rule")
                .fetch_one(&mut *tx)
                .await?;
            if count >= MAX_RULES as i64 {
                return Err(StoreError::Conflict {
                    field: Some("name".into()),
                    message: format!(
                        "there are already {MAX_RULES} rules; delete one first (every discovered machine is tried against each)"
                    ),
                });
            }
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO rule (name, body, enrolled, created_at, updated_at) VALUES ($1, $2, 0, $3, $3) \
             ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(&rule.name)
        .bind(encode(rule))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.commit(tx, Vec::new()).await?;
        Ok(existed.is_none())
    }

    async fn list_rules(&self) -> Result<Vec<RuleRecord>> {
        let rows = sqlx::query(
            "SELECT name, body, enrolled, created_at, updated_at FROM rule ORDER BY name",
        )
        .fetch_all(&mut *self.read().await?)
        .await?;
        let mut rules = rows.iter().map(rule_row).collect::<Result<Vec<_>>>()?;
        rules.sort_by(|a, b| {
            a.rule
                .priority
                .cmp(&b.rule.priority)
                .then_with(|| a.rule.name.cmp(&b.rule.name))
        });
        Ok(rules)
    }

    async fn rule(&self, name: &str) -> Result<Option<RuleRecord>> {
        let row = sqlx::query(
            "SELECT name, body, enrolled, created_at, updated_at FROM rule WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        row.as_ref().map(rule_row).transpose()
    }

    async fn delete_rule(&self, name: &str) -> Result<()> {
        self.delete_one("DELETE FROM rule WHERE name = $1", "rule", name, None)
            .await
    }

    async fn next_rule_counter(&self, name: &str) -> Result<u64> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let done = sqlx::query("UPDATE rule SET enrolled = enrolled + 1 WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "rule",
                id: name.to_string(),
            });
        }
        let n: i64 = sqlx::query_scalar("SELECT enrolled FROM rule WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        self.commit(tx, Vec::new()).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn replace_discovered(&self, hw: &Hardware, wf: Option<&Workflow>) -> Result<()> {
        let mut conn = self.begin().await?;
        let mut tx = conn.transaction().await?;
        let row = sqlx::query(for_update!(
            self,
            "SELECT id, body FROM hardware WHERE id = $1"
        ))
        .bind(&hw.id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                kind: "hardware",
                id: hw.id.clone(),
            });
        };
        let current = hardware_row(&row)?;
        if !bellows_model::discovery::is_discovered(&current) {
            return Err(StoreError::Conflict {
                field: None,
                message: format!(
                    "hardware {:?} is {}, not discovered: it was enrolled already",
                    hw.id,
                    bellows_model::discovery::hardware_state(&current)
                ),
            });
        }
        Self::write_hardware(&mut tx, &hw.id, hw, now_ms()).await?;
        let mut written = vec![Written::Hardware(Box::new(hw.clone()))];
        if let Some(wf) = wf {
            written.extend(self.insert_workflow(&mut tx, wf).await?);
        }
        self.commit(tx, written).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn index(&self) -> Arc<HardwareIndex> {
        self.index.clone()
    }

    fn leads_timers(&self) -> bool {
        self.replica.as_ref().is_none_or(|r| r.leads())
    }
}

#[cfg(test)]
mod at_rest_tests;
#[cfg(test)]
mod replica_tests;
#[cfg(test)]
pub(crate) mod tests;
