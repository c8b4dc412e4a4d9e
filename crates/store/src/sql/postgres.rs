//! Opening the PostgreSQL backend, and what several replicas on one
//! database need from each other:
//!
//! - **changes**: every write announces what it changed on the
//!   `bellows_change` channel inside its transaction (`pg_notify` is
//!   delivered at commit, and only then); each replica listens, re-reads
//!   what another changed into its hardware index and tells its own
//!   subscribers, so a worker streaming from replica A is woken by a
//!   workflow created through replica B. A lost listener connection is
//!   re-opened and the whole index reloaded, as the changes in between are
//!   not replayed.
//! - **timers**: deadlines, BMC polling and retention must run on one
//!   replica at a time. The replica holding a session advisory lock on a
//!   connection of its own leads; the lock goes with that connection, so a
//!   replica that dies (or loses the database) hands over within seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::{PgConnection, PgListener};
use sqlx::{Any, Connection, Executor, Row, Transaction};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::{Backend, SqlStore, all_hardware, hardware_row};
use crate::secrets::SecretKey;
use crate::{Change, ChangeKind, ChangeOp, HardwareIndex, Result, StoreError};

/// URL prefixes that name a PostgreSQL store (`--store`).
pub const STORE_URL_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// The channel changes are announced on.
const CHANNEL: &str = "bellows_change";

/// The most an announcement may carry: PostgreSQL refuses NOTIFY payloads
/// of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7900;

/// A replica's heartbeat to itself on [`CHANNEL`], followed by its id.
const HEARTBEAT: &str = "heartbeat:";
/// How often it is sent, and how long without hearing it back means the
/// listening connection is gone.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
const HEARTBEAT_LOST: Duration = Duration::from_secs(20);

/// Set on the lease's session: the database notices a vanished replica
/// within seconds (keepalives, unacknowledged data) and releases its lock,
/// instead of after the system's two-hour keepalive.
const LEASE_SESSION: &str = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
                             SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000";

/// The advisory lock whose holder runs the timers: any fixed number no
/// other program on the database uses ("bellows" in ASCII).
const TIMER_LOCK: i64 = 0x62_656c_6c6f_7773;

/// How often the leader checks it still holds the lock (and a follower
/// tries to take it), and how long a broken connection waits before the
/// next attempt.
const LEASE_TICK: Duration = Duration::from_secs(1);

/// Connection pool settings for PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections this server opens to the database (besides the
    /// two it keeps for change notifications and the timer lease).
    pub max_connections: u32,
    /// How long a request waits for a free connection (or for the
    /// database to accept one) before it fails with "unavailable".
    pub acquire_timeout: Duration,
    /// Longest any statement may run on the server (`statement_timeout`),
    /// so a stuck query cannot hold a connection for ever.
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl SqlStore {
    /// Opens the PostgreSQL database at `url` (`postgres://user:pass@host/db`,
    /// with `sslmode=` and the other libpq parameters sqlx understands),
    /// migrates it (one replica at a time: the migrator holds a lock), and
    /// joins the other replicas: this store hears their changes and takes
    /// its turn at the timers ([`crate::Store::leads_timers`]).
    pub async fn open_postgres(
        url: &str,
        key: SecretKey,
        settings: &PoolSettings,
    ) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        if !STORE_URL_SCHEMES.iter().any(|s| url.starts_with(s)) {
            return Err(StoreError::Location(format!(
                "{:?} is not a PostgreSQL URL (postgres://user:password@host/database)",
                redact_url(url)
            )));
        }
        let statement_timeout = format!(
            "SET statement_timeout = {}",
            settings.statement_timeout.as_millis().max(1)
        );
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(move |conn, _| {
                let set = statement_timeout.clone();
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(set)).await?;
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let mut store = SqlStore::finish_open(
            pool.clone(),
            None,
            super::Writer::Pool(pool),
            Backend::Postgres,
            key,
        )
        .await?;
        // Listening before the index is (re)loaded: nothing committed in
        // between is missed.
        let listener = listen(url).await?;
        store.index.replace_all(all_hardware(&store.pool).await?);
        store.replica = Some(Replica::start(
            url.to_string(),
            listener,
            store.pool.clone(),
            store.index.clone(),
            store.changes.clone(),
        ));
        Ok(store)
    }
}

/// A database URL without its password, for messages and logs: the user
/// part's password (up to the last `@`, so a `/` or `?` in it cannot hide
/// the end) and any `password=` parameter are blanked; text that is not a
/// URL shows its scheme at most.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_string();
    };
    let (userinfo, tail) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let user = userinfo.map(|u| match u.split_once(':') {
        Some((user, _)) => format!("{user}:***@"),
        None => format!("{u}@"),
    });
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{}{tail}", user.unwrap_or_default())
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:pa/ss?x@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u@h/db?password=pw&sslmode=require",
                "postgres://u@h/db?password=***&sslmode=require",
            ),
            ("postgres://h/db", "postgres://h/db"),
            ("u:pw@h/db", "<not a URL>"),
        ] {
            assert_eq!(redact_url(url), shown);
            assert!(!redact_url(url).contains("pw"));
        }
    }
}

/// A change as announced to the other replicas.
#[derive(Serialize, Deserialize)]
struct Announcement {
    /// The replica that made it (which ignores its own).
    from: String,
    #[serde(flatten)]
    change: Change,
}

/// This server's part in a group of replicas sharing one database.
pub(super) struct Replica {
    id: String,
    leader: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Replica {
    fn start(
        url: String,
        listener: PgListener,
        pool: AnyPool,
        index: Arc<HardwareIndex>,
        changes: broadcast::Sender<Change>,
    ) -> Replica {
        let id = uuid::Uuid::new_v4().to_string();
        let leader = Arc::new(AtomicBool::new(false));
        let follower = Follower {
            url: url.clone(),
            me: id.clone(),
            pool,
            index,
            changes,
        };
        let tasks = vec![
            tokio::spawn(follower.run(listener)),
            tokio::spawn(hold_timer_lease(url, leader.clone())),
        ];
        Replica { id, leader, tasks }
    }

    /// Adds the change to `tx`'s announcements (sent if it commits).
    pub(super) async fn announce(
        &self,
        tx: &mut Transaction<'_, Any>,
        change: &Change,
    ) -> Result<()> {
        let mut announcement = Announcement {
            from: self.id.clone(),
            change: change.clone(),
        };
        let mut payload = serde_json::to_string(&announcement)
            .unwrap_or_else(|e| unreachable!("a change serialises: {e}"));
        // NOTIFY carries at most 8000 bytes: a workflow naming very many
        // workers goes without them (the listeners read it instead).
        if payload.len() > MAX_PAYLOAD {
            announcement.change.workers.clear();
            payload = serde_json::to_string(&announcement)
                .unwrap_or_else(|e| unreachable!("a change serialises: {e}"));
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// True while this replica holds the timer lease.
    pub(super) fn leads(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    pub(super) fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.leader.store(false, Ordering::SeqCst);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn listen(url: &str) -> Result<PgListener> {
    let mut listener = PgListener::connect(url).await?;
    // Reconnection is ours (to reload the index after a gap), not sqlx's.
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Follows the other replicas' announcements.
struct Follower {
    url: String,
    me: String,
    pool: AnyPool,
    index: Arc<HardwareIndex>,
    changes: broadcast::Sender<Change>,
}

impl Follower {
    async fn run(self, mut listener: PgListener) {
        // A connection that dies without a word (a firewall forgetting an
        // idle flow, a database failing over behind an address) never
        // ends `try_recv`: this replica sends itself a heartbeat on the
        // channel and rejoins when its own stops coming back.
        let heartbeat = format!("{HEARTBEAT}{}", self.me);
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        let mut last_heard = tokio::time::Instant::now();
        loop {
            let lost = tokio::select! {
                // `try_recv` reports a lost connection as `None` instead of
                // silently reconnecting and dropping what was sent meanwhile.
                note = listener.try_recv() => match note {
                    Ok(Some(note)) if note.payload() == heartbeat => {
                        last_heard = tokio::time::Instant::now();
                        false
                    }
                    Ok(Some(note)) => !self.heard(note.payload()).await,
                    Ok(None) | Err(_) => true,
                },
                _ = tick.tick() => {
                    let _ = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(CHANNEL)
                        .bind(&heartbeat)
                        .execute(&self.pool)
                        .await;
                    last_heard.elapsed() > HEARTBEAT_LOST
                }
            };
            if lost {
                tracing::warn!(
                    "lost the database's change notifications; reconnecting, then \
                     reloading every record"
                );
                listener = self.rejoin().await;
                last_heard = tokio::time::Instant::now();
            }
        }
    }

    /// Re-opens the listener (retrying each second for as long as the
    /// database is away) and catches up with everything it may have missed.
    async fn rejoin(&self) -> PgListener {
        loop {
            tokio::time::sleep(LEASE_TICK).await;
            let Ok(listener) = listen(&self.url).await else {
                continue;
            };
            match self.resync().await {
                Ok(()) => {
                    tracing::info!("following the other servers' changes again");
                    return listener;
                }
                Err(e) => tracing::warn!("reloading after a lost connection failed: {e}"),
            }
        }
    }

    /// Reloads the index and wakes whoever waits on an unfinished workflow.
    async fn resync(&self) -> Result<()> {
        self.index.replace_all(all_hardware(&self.pool).await?);
        let active: Vec<String> =
            sqlx::query_scalar("SELECT id FROM workflow WHERE state IN ('PENDING', 'RUNNING')")
                .fetch_all(&self.pool)
                .await?;
        for id in active {
            let _ = self.changes.send(Change {
                kind: ChangeKind::Workflow,
                id,
                op: ChangeOp::Upsert,
                workers: Vec::new(),
                quiet: false,
            });
        }
        Ok(())
    }

    /// Follows one announcement; false when a record could not be re-read
    /// (the caller then reloads everything).
    async fn heard(&self, payload: &str) -> bool {
        if payload.starts_with(HEARTBEAT) {
            return true; // another replica's heartbeat
        }
        let Ok(announcement) = serde_json::from_str::<Announcement>(payload) else {
            tracing::warn!("ignoring an unreadable change notification");
            return true;
        };
        let own = announcement.from == self.me;
        let change = announcement.change;
        if own && change.kind != ChangeKind::Hardware {
            return true;
        }
        // Hardware is re-read even after this replica's own writes: two
        // writes racing between commit and index update converge on what
        // is stored, whichever order they were applied in.
        if change.kind == ChangeKind::Hardware {
            let row = sqlx::query("SELECT id, body FROM hardware WHERE id = $1")
                .bind(&change.id)
                .fetch_optional(&self.pool)
                .await;
            match row
                .map_err(StoreError::from)
                .and_then(|r| r.as_ref().map(hardware_row).transpose())
            {
                Ok(Some(hw)) => self.index.upsert(hw),
                Ok(None) => self.index.remove(&change.id),
                Err(e) => {
                    tracing::warn!(
                        hardware = %change.id,
                        "cannot re-read hardware another server changed: {e}"
                    );
                    return false;
                }
            }
        }
        if !own {
            let _ = self.changes.send(change);
        }
        true
    }
}

/// Holds (or waits for) the timer lease on a connection of its own, for as
/// long as the store lives.
async fn hold_timer_lease(url: String, leader: Arc<AtomicBool>) {
    // Every step is bounded: a stuck connection means not leading.
    let bound = LEASE_TICK * 3;
    loop {
        let connected = tokio::time::timeout(bound, async {
            let mut conn = PgConnection::connect(&url).await?;
            conn.execute(LEASE_SESSION).await?;
            Ok::<_, sqlx::Error>(conn)
        })
        .await;
        let Ok(Ok(mut conn)) = connected else {
            leader.store(false, Ordering::SeqCst);
            tokio::time::sleep(LEASE_TICK).await;
            continue;
        };
        loop {
            let held = leader.load(Ordering::SeqCst);
            let asked = tokio::time::timeout(bound, async {
                if held {
                    // Still connected means still held: the lock lives as
                    // long as this session.
                    sqlx::query("SELECT true").fetch_one(&mut conn).await
                } else {
                    sqlx::query("SELECT pg_try_advisory_lock($1)")
                        .bind(TIMER_LOCK)
                        .fetch_one(&mut conn)
                        .await
                }
            })
            .await;
            let Ok(Ok(row)) = asked else { break };
            let now = row.try_get::<bool, _>(0).unwrap_or(false);
            if now != held {
                tracing::info!(
                    "{} the timers (deadlines, BMC polling) among the servers sharing this database",
                    if now {
                        "this server now runs"
                    } else {
                        "another server runs"
                    }
                );
            }
            leader.store(now, Ordering::SeqCst);
            tokio::time::sleep(LEASE_TICK).await;
        }
        if leader.swap(false, Ordering::SeqCst) {
            tracing::warn!("lost the database connection that held the timer lease");
        }
        tokio::time::sleep(LEASE_TICK).await;
    }
}
