//! Bellows state: hardware, templates, workflows and their events.
//!
//! [`Store`] is what every service talks to. The embedded default is
//! [`SqlStore`] on SQLite (one WAL-mode file under the data directory); the
//! same [`SqlStore`] runs on PostgreSQL when several servers share the work,
//! with the same portable SQL (JSON as TEXT, times as integer Unix
//! milliseconds).
//!
//! Network services (DHCP, iPXE, metadata) must never wait on a query in
//! their packet path: they read the store's in-memory [`HardwareIndex`],
//! which every hardware write updates before it returns. Other subscribers
//! follow the [`Change`] notifications each committed write publishes.
//!
//! BMC passwords are sealed at rest under a [`SecretKey`] the store is
//! opened with (see `secrets`); the data directory and database files are
//! private to the server's user (see [`files`]).

use std::net::IpAddr;

use async_trait::async_trait;
use bellows_model::discovery::rule::{Rule, RuleRecord};
use bellows_model::timeline::BootEvent;
use bellows_model::workflow::{Event, Transition, TransitionError};
use bellows_model::{Hardware, MacAddr, State, Workflow};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

mod active;
pub mod auth;
mod credentials;
pub mod files;
pub mod group;
mod index;
mod secrets;
mod shared;
mod sql;

pub use auth::{AuthStore, CredentialLookup};
pub use bellows_model::time::now_ms;
pub use index::HardwareIndex;
pub use secrets::{KEY_LEN, SecretError, SecretKey, SecretKeyError};
pub use sql::{
    Backend, CopyReport, DB_FILE, PoolSettings, STORE_URL_SCHEMES, SqlStore, redact_url,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named object does not exist.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// "hardware", "template" or "workflow".
        kind: &'static str,
        /// The id or name asked for.
        id: String,
    },
    /// The write would break a uniqueness or reference rule.
    #[error("{message}")]
    Conflict {
        /// Field at fault (`network.interfaces[0].dhcp.mac`), if one.
        field: Option<String>,
        /// What clashes with what.
        message: String,
    },
    /// A workflow report that the state machine refuses.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// Stored data could not be decoded: a bug or a hand-edited database.
    #[error("stored {kind} {id:?} is corrupt: {source}")]
    Corrupt {
        /// Kind of row.
        kind: &'static str,
        /// Its id.
        id: String,
        /// Decode error.
        source: serde_json::Error,
    },
    /// The database itself failed (disk full, locked, gone).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A batch of writes (see [`Store::apply_transitions`]) failed together
    /// on a database error: nothing of it was written.
    #[error("{message}")]
    Batch {
        /// The database error, as text (each report of the batch gets one).
        message: String,
        /// Whether it was an outage ([`StoreError::is_unavailable`]).
        unavailable: bool,
    },
    /// Schema migration failed at open.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored BMC password cannot be opened (or a new one sealed).
    #[error("the BMC password of hardware {hardware_id:?} cannot be used: {reason}")]
    Secret {
        /// The machine whose BMC it is.
        hardware_id: String,
        /// Why.
        reason: SecretError,
    },
    /// The store was opened with another key than the one its BMC
    /// passwords were sealed with: refused at open, before any is needed.
    #[error(
        "the secret key (fingerprint {given}) is not the one the stored BMC passwords \
         were sealed with (fingerprint {expected}; BMCs of hardware {})",
        .hardware_ids.join(", ")
    )]
    WrongKey {
        /// Fingerprint recorded with the sealed passwords.
        expected: String,
        /// Fingerprint of the key given.
        given: String,
        /// Machines whose BMC passwords are sealed.
        hardware_ids: Vec<String>,
    },
    /// Keeping the stored password would send it somewhere, or as someone,
    /// it was not given for.
    #[error(
        "password: give the BMC password again to change its {}; the stored one \
         is only ever sent to the BMC it was given for",
        .fields.join(", ")
    )]
    PasswordRequired {
        /// The machine whose BMC it is.
        hardware_id: String,
        /// The endpoint fields that would change.
        fields: Vec<&'static str>,
    },
    /// Where the store was asked to live cannot be used (a malformed URL,
    /// a path the database driver cannot name).
    #[error("{0}")]
    Location(String),
    /// A file or directory could not be created or made private.
    #[error("cannot make {} private to this user: {source}", .path.display())]
    Permissions {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
}

impl StoreError {
    /// True when the database could not be reached or is restarting (a
    /// PostgreSQL outage, no free connection in time): the request may
    /// succeed once it is back, so the API answers 503, not 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE class 08 (connection exception) and 57P
                // (operator intervention: shutdown, starting up).
                // A transaction the database chose to abort (deadlock,
                // serialisation) is as good as an outage to the caller: a
                // retry succeeds.
                sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                    c.starts_with("08") || c.starts_with("57P") || c == "40P01" || c == "40001"
                }),
                _ => false,
            },
            StoreError::Batch { unavailable, .. } => *unavailable,
            _ => false,
        }
    }
}

/// Convenience alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

// The records the API also sends live in the model, so the CLI reads the
// same types the server writes; they are re-exported here for the store's
// users.
pub use bellows_model::api::{
    ActionLogLine, ActionLogRecord, BmcRecord, EventRecord, InventoryRecord, LogEntry, LogRecord,
    TemplateRecord, UNKNOWN_SENDER_PREFIX,
};

/// A BMC password. Its Debug output is redacted so it cannot reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct BmcSecret(pub String);

impl std::fmt::Debug for BmcSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BmcSecret(<redacted>)")
    }
}

/// Log lines kept per machine; older ones are dropped as new ones arrive.
pub const MACHINE_LOG_KEEP: i64 = 10_000;

/// Boot-timeline steps kept per machine: ~10 a boot, so the last twenty
/// boots or so.
pub const BOOT_EVENTS_PER_MACHINE: i64 = 200;

/// Log lines kept for all senders that are not a known machine together
/// (those filed as [`UNKNOWN_SENDER_PREFIX`]`<address>`): anyone can send
/// syslog from any number of addresses, so they share one bucket.
pub const UNKNOWN_SENDERS_LOG_KEEP: i64 = 10_000;

/// Log lines kept in all, whoever sent them; the oldest go first.
pub const TOTAL_LOG_KEEP: i64 = 1_000_000;

/// How many syslog lines the store keeps ([`Default`]: the constants above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Per known machine.
    pub per_machine: i64,
    /// For every unknown sender together.
    pub unknown_senders: i64,
    /// In all.
    pub total: i64,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            per_machine: MACHINE_LOG_KEEP,
            unknown_senders: UNKNOWN_SENDERS_LOG_KEEP,
            total: TOTAL_LOG_KEEP,
        }
    }
}

/// Action output lines kept per workflow; older ones are dropped first.
pub const ACTION_LOG_KEEP: i64 = 50_000;

/// Which action log lines to read.
#[derive(Debug, Clone, Default)]
pub struct ActionLogQuery {
    /// Only this action's lines.
    pub action: Option<String>,
    /// Only lines after this sequence number.
    pub after: i64,
    /// At most this many lines (the latest ones when `after` is 0).
    pub limit: u32,
}

/// What changed, published after each committed write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Kind of object.
    pub kind: ChangeKind,
    /// Its id.
    pub id: String,
    /// Whether it now exists.
    pub op: ChangeOp,
    /// For a workflow written: the workers it names, so that the streams
    /// to wake are known without reading it back (empty: read it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
    /// For a workflow written: the write cannot change which action any
    /// worker runs next (an action started, or its progress), so no
    /// stream needs waking. A boot storm's RUNNING reports are half of
    /// all its writes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quiet: bool,
}

/// Object kinds that publish changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A hardware record.
    Hardware,
    /// A template.
    Template,
    /// A workflow.
    Workflow,
}

/// Created/updated or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// Created or updated: re-read it.
    Upsert,
    /// Gone: drop it from any index.
    Delete,
}

/// Outcome of a hardware push.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    /// The record as stored (with its id filled in).
    pub hardware: Hardware,
    /// True if no record existed before.
    pub created: bool,
}

/// Filters for workflow listings.
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    /// Only workflows in this state.
    pub state: Option<State>,
    /// Only workflows with a task for this worker (case-insensitive).
    pub worker: Option<String>,
    /// Only workflows that have not ended (PENDING or RUNNING).
    pub active: bool,
}

/// The persistence interface every Bellows service uses.
///
/// Every method that writes is one transaction: it either happens whole or
/// not at all, and a refused write leaves the store exactly as it was.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or replaces a hardware record. The target is `hw.id` if set,
    /// else the record that already owns one of its MACs, else a new id.
    /// MACs and IPs owned by another record are a conflict.
    async fn push_hardware(&self, hw: Hardware) -> Result<Pushed>;
    /// Replaces an existing record; `NotFound` if there is none.
    async fn replace_hardware(&self, id: &str, hw: Hardware) -> Result<Hardware>;
    /// By id.
    async fn hardware(&self, id: &str) -> Result<Option<Hardware>>;
    /// By any of its MACs.
    async fn hardware_by_mac(&self, mac: MacAddr) -> Result<Option<Hardware>>;
    /// By any of its reserved IPs.
    async fn hardware_by_ip(&self, ip: IpAddr) -> Result<Option<Hardware>>;
    /// All records, ordered by id.
    async fn list_hardware(&self) -> Result<Vec<Hardware>>;
    /// Deletes a record; refused while a PENDING/RUNNING workflow targets it.
    async fn delete_hardware(&self, id: &str) -> Result<()>;

    /// Stores a new template; its name must be unique.
    async fn create_template(&self, name: &str, data: &str) -> Result<TemplateRecord>;
    /// By id or name.
    async fn template(&self, id_or_name: &str) -> Result<Option<TemplateRecord>>;
    /// All templates, ordered by name.
    async fn list_templates(&self) -> Result<Vec<TemplateRecord>>;
    /// Replaces the source (and optionally renames). Existing workflows keep
    /// the text they were rendered from.
    async fn update_template(
        &self,
        id: &str,
        name: Option<&str>,
        data: &str,
    ) -> Result<TemplateRecord>;
    /// Deletes a template. Workflows made from it are unaffected.
    async fn delete_template(&self, id: &str) -> Result<()>;

    /// Stores a new workflow and its `created` event.
    async fn create_workflow(&self, wf: &Workflow) -> Result<()>;
    /// By id.
    async fn workflow(&self, id: &str) -> Result<Option<Workflow>>;
    /// Workflows matching the filter, oldest first.
    async fn list_workflows(&self, filter: &WorkflowFilter) -> Result<Vec<Workflow>>;
    /// How many workflows are in each state (states with none left out),
    /// for metrics: one grouped count, not a listing.
    async fn count_workflows_by_state(&self) -> Result<Vec<(State, u64)>>;
    /// Deletes a workflow and its events.
    async fn delete_workflow(&self, id: &str) -> Result<()>;
    /// The workflow's event log in order.
    async fn workflow_events(&self, id: &str) -> Result<Vec<EventRecord>>;
    /// Applies a report through the state machine and logs its events, in
    /// one transaction. Illegal reports change nothing; a repeated report
    /// writes nothing and publishes no change.
    async fn apply_transition(&self, id: &str, transition: &Transition) -> Result<Workflow>;

    /// Applies many reports, each as [`Store::apply_transition`] would, in
    /// as few transactions as the store can: the group commit that lets a
    /// boot storm's thousands of reports share one disk flush. Results
    /// come in the order of `batch`; a refused report does not stop the
    /// others; a database failure fails them all, with nothing written.
    async fn apply_transitions(&self, batch: &[(String, Transition)]) -> Vec<Result<Workflow>> {
        let mut results = Vec::with_capacity(batch.len());
        for (id, transition) in batch {
            results.push(self.apply_transition(id, transition).await);
        }
        results
    }

    /// Appends an event that is not a state transition (a BMC boot request).
    async fn append_event(&self, id: &str, event: &Event) -> Result<()>;

    /// Appends action output lines, dropping the oldest beyond
    /// [`ACTION_LOG_KEEP`] per workflow. Lines for unknown workflows are
    /// skipped: a worker may still be flushing a deleted workflow's output.
    async fn append_action_logs(&self, lines: &[ActionLogLine]) -> Result<()>;
    /// Reads a workflow's action output, oldest first.
    async fn action_logs(
        &self,
        workflow_id: &str,
        query: &ActionLogQuery,
    ) -> Result<Vec<ActionLogRecord>>;
    /// Records the facts a worker reported for a hardware record.
    async fn put_inventory(&self, record: &InventoryRecord) -> Result<()>;
    /// Stores many inventories in as few transactions as the store can
    /// (workers connecting in a storm); records whose hardware is gone are
    /// skipped.
    async fn put_inventories(&self, records: &[InventoryRecord]) -> Result<()> {
        for record in records {
            match self.put_inventory(record).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    /// The facts last reported for a hardware record.
    async fn inventory(&self, hardware_id: &str) -> Result<Option<InventoryRecord>>;

    /// Stores log lines (one transaction), keeping the newest
    /// [`MACHINE_LOG_KEEP`] per machine, [`UNKNOWN_SENDERS_LOG_KEEP`] for
    /// all unknown senders together and [`TOTAL_LOG_KEEP`] in all (or the
    /// store's [`LogLimits`]).
    async fn append_logs(&self, entries: &[LogEntry]) -> Result<()>;
    /// The newest `limit` lines of a machine, oldest first.
    async fn machine_logs(&self, machine: &str, limit: u32) -> Result<Vec<LogRecord>>;
    /// Adds steps to machines' boot timelines, keeping the newest
    /// [`BOOT_EVENTS_PER_MACHINE`] of each.
    async fn append_boot_events(&self, events: &[(String, BootEvent)]) -> Result<()>;
    /// The newest `limit` steps of a machine's timeline, oldest first.
    async fn boot_events(&self, hardware_id: &str, limit: u32) -> Result<Vec<BootEvent>>;

    /// Creates or replaces a machine's BMC record and password.
    async fn put_bmc(&self, record: &BmcRecord, secret: &BmcSecret) -> Result<()>;
    /// Replaces a machine's BMC record, keeping its stored password: only
    /// when the address, port, protocol, user name and TLS setting stay
    /// the same (else `PasswordRequired`, and nothing changes), so a
    /// password is never sent where it was not given for. `NotFound` when
    /// the machine has no BMC.
    async fn update_bmc(&self, record: &BmcRecord) -> Result<()>;
    /// A machine's BMC record (without the password).
    async fn bmc(&self, hardware_id: &str) -> Result<Option<BmcRecord>>;
    /// A machine's BMC record with its password, for the BMC client only.
    async fn bmc_with_secret(&self, hardware_id: &str) -> Result<Option<(BmcRecord, BmcSecret)>>;
    /// Every BMC record, for the power poller.
    async fn list_bmcs(&self) -> Result<Vec<BmcRecord>>;
    /// Records the latest power reading.
    async fn set_power_state(
        &self,
        hardware_id: &str,
        state: Option<&str>,
        error: Option<&str>,
        at: i64,
    ) -> Result<()>;
    /// Removes a machine's BMC record.
    async fn delete_bmc(&self, hardware_id: &str) -> Result<()>;

    /// Creates or replaces the rule named `rule.name` (its enrolment count
    /// kept); `true` when it is new. At most `MAX_RULES` rules are kept.
    async fn put_rule(&self, rule: &Rule) -> Result<bool>;
    /// Every rule, in the order they are tried.
    async fn list_rules(&self) -> Result<Vec<RuleRecord>>;
    /// The rule named `name`.
    async fn rule(&self, name: &str) -> Result<Option<RuleRecord>>;
    /// Deletes the rule named `name`.
    async fn delete_rule(&self, name: &str) -> Result<()>;
    /// Adds one to the rule's enrolment count and returns it (the
    /// `{counter}` of the machine it is enrolling; a failed enrolment
    /// leaves a gap, never a repeat).
    async fn next_rule_counter(&self, name: &str) -> Result<u64>;
    /// Replaces a record that is still `discovered` with `hw`, and creates
    /// `wf` if any, in one transaction; refused (Conflict) when the stored
    /// record is no longer discovered. Enrolment is this with `hw` marked
    /// enrolled (a machine two servers, or a rule and an operator, enrol at
    /// once is enrolled once); a new report of a waiting machine is this
    /// with its inventory (it never undoes an enrolment).
    async fn replace_discovered(&self, hw: &Hardware, wf: Option<&Workflow>) -> Result<()>;

    /// Change notifications for writes committed from now on.
    fn subscribe(&self) -> broadcast::Receiver<Change>;

    /// The in-memory hardware index, current as soon as a write returns.
    fn index(&self) -> std::sync::Arc<HardwareIndex>;

    /// Whether this server runs the timers (deadlines, BMC power polling)
    /// now. Always on a store of its own; among servers sharing one
    /// database, true on exactly one at a time, moving to another within
    /// seconds when it stops.
    fn leads_timers(&self) -> bool {
        true
    }
}
