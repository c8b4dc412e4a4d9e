//! The credentials port: operator tokens, per-boot worker credentials and
//! the audit log. A trait of its own, beside [`crate::Store`], because only
//! the API's authentication needs it.

use async_trait::async_trait;
use bellows_model::auth::{AuditEntry, Role, TokenRecord, WorkerCredential};

use crate::Result;

/// Audit entries kept; older ones are dropped as new ones arrive.
pub const AUDIT_KEEP: i64 = 100_000;

/// A worker credential as a call's check reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialLookup {
    /// The credential.
    pub credential: WorkerCredential,
    /// Its workflow exists and is PENDING or RUNNING: the credential is
    /// good without reading the workflow. Otherwise the caller reads it
    /// (an ended workflow's credential keeps a short grace).
    pub workflow_active: bool,
}

/// Where tokens and worker credentials are kept. Tokens are stored only as
/// their digest ([`bellows_model::auth::token_digest`]).
#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Stores a new operator token; a taken name is a conflict.
    async fn create_api_token(&self, record: &TokenRecord, digest: &str) -> Result<()>;
    /// The token with this digest.
    async fn api_token_by_digest(&self, digest: &str) -> Result<Option<TokenRecord>>;
    /// Every token, by name.
    async fn list_api_tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Removes a token by name; `NotFound` when there is none, `Conflict`
    /// when it is the last admin token (the server would have no one left
    /// to make new ones). Checked and done in one transaction, so two
    /// admins revoking each other cannot both succeed.
    async fn revoke_api_token(&self, name: &str) -> Result<()>;
    /// How many tokens have `role` (a server refuses to revoke the last admin).
    async fn count_api_tokens(&self, role: Role) -> Result<u64>;

    /// Stores a worker's credential, replacing its previous one: each boot
    /// gets a new credential and the last boot's stops working.
    async fn put_worker_credential(&self, credential: &WorkerCredential) -> Result<()>;
    /// Stores several at once, in one transaction (all or none); of two
    /// for the same worker the later one stays.
    async fn put_worker_credentials(&self, credentials: &[WorkerCredential]) -> Result<()>;
    /// The credential with this digest, and whether its workflow is still
    /// unfinished, in one read: a worker's every call asks.
    async fn worker_credential(&self, digest: &str) -> Result<Option<CredentialLookup>>;

    /// Records a change made through the API, keeping the newest
    /// [`AUDIT_KEEP`].
    async fn append_audit(&self, entry: &AuditEntry) -> Result<()>;
    /// The newest `limit` entries, oldest first.
    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>>;
}
