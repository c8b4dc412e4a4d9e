//! Every worker credential in memory, by digest: the embedded store's
//! answer to the check every worker call makes, without a query.
//!
//! A booting machine's worker makes a call per report; in a boot storm
//! those checks were the most frequent read of all, each a round trip to
//! one of SQLite's reader threads. On SQLite every write passes through
//! this process under the store's write lock, so the map is exactly the
//! `worker_credential` table once a write returns. The table holds one row
//! per worker (a new boot replaces the last), so the map is bounded by the
//! number of machines. PostgreSQL replicas read the database instead:
//! another server may mint a machine's next credential.

use std::collections::HashMap;

use bellows_model::auth::WorkerCredential;

use crate::shared::Shared;

#[derive(Default)]
struct Maps {
    by_digest: HashMap<String, WorkerCredential>,
    /// Worker id → the digest of its one credential.
    digest_of: HashMap<String, String>,
}

impl Maps {
    fn put(&mut self, credential: WorkerCredential) {
        if let Some(old) = self
            .digest_of
            .insert(credential.worker.clone(), credential.digest.clone())
        {
            self.by_digest.remove(&old);
        }
        self.by_digest.insert(credential.digest.clone(), credential);
    }
}

/// The `worker_credential` table, mirrored by the embedded store.
#[derive(Default)]
pub(crate) struct Credentials {
    maps: Shared<Maps>,
}

impl Credentials {
    /// Replaces the whole content (at open, after a copy).
    pub(crate) fn replace_all(&self, all: Vec<WorkerCredential>) {
        let mut maps = Maps::default();
        for c in all {
            maps.put(c);
        }
        *self.maps.write() = maps;
    }

    /// A credential stored: it replaces its worker's previous one.
    pub(crate) fn put(&self, credential: WorkerCredential) {
        self.maps.write().put(credential);
    }

    /// A machine deleted: its credentials went with it (the table's
    /// `ON DELETE CASCADE`).
    pub(crate) fn remove_hardware(&self, hardware_id: &str) {
        let mut maps = self.maps.write();
        maps.by_digest.retain(|_, c| c.hardware_id != hardware_id);
        let Maps {
            by_digest,
            digest_of,
        } = &mut *maps;
        digest_of.retain(|_, digest| by_digest.contains_key(digest));
    }

    /// The credential with this digest.
    pub(crate) fn get(&self, digest: &str) -> Option<WorkerCredential> {
        self.maps.read().by_digest.get(digest).cloned()
    }
}
