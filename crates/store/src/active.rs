//! The unfinished workflows in memory, by worker: the embedded store's
//! answer to "which workflows wait for this worker?" without a query.
//!
//! Every worker stream asks that on each wake-up and the deadline check
//! asks for all of them every second; in a boot storm that was two reads
//! per report, each a round trip to one of SQLite's reader threads, and
//! thousands of them queued behind each other. On SQLite every write
//! passes through this process, under the store's write lock, so the map
//! is exactly what is stored once a write returns. PostgreSQL replicas do
//! not keep one (another server's write would reach it only later) and
//! read the database instead.

use std::collections::{BTreeSet, HashMap};

use bellows_model::{State, Workflow};

use crate::shared::Shared;

/// The keys a workflow is found under by worker, as the `workflow_worker`
/// table holds them: each task's worker and the hardware id, lowercased,
/// sorted, without repeats.
pub(crate) fn worker_keys(wf: &Workflow) -> Vec<String> {
    let mut keys: Vec<String> = wf.tasks.iter().map(|t| t.worker.to_lowercase()).collect();
    if let Some(hw) = &wf.hardware_id {
        keys.push(hw.to_lowercase());
    }
    keys.sort();
    keys.dedup();
    keys
}

/// PENDING or RUNNING: the workflows a listing with `active` returns.
fn is_active(state: State) -> bool {
    matches!(state, State::Pending | State::Running)
}

/// A listing's order: creation time, then id (as `ORDER BY created_at, id`).
type Order = (i64, String);

#[derive(Default)]
struct Maps {
    by_id: HashMap<String, Workflow>,
    by_worker: HashMap<String, BTreeSet<Order>>,
}

impl Maps {
    fn remove(&mut self, id: &str) {
        let Some(old) = self.by_id.remove(id) else {
            return;
        };
        let order = (old.created_at, old.id.clone());
        for key in worker_keys(&old) {
            if let Some(ids) = self.by_worker.get_mut(&key) {
                ids.remove(&order);
                if ids.is_empty() {
                    self.by_worker.remove(&key);
                }
            }
        }
    }

    fn upsert(&mut self, wf: Workflow) {
        self.remove(&wf.id);
        if !is_active(wf.state) {
            return;
        }
        for key in worker_keys(&wf) {
            self.by_worker
                .entry(key)
                .or_default()
                .insert((wf.created_at, wf.id.clone()));
        }
        self.by_id.insert(wf.id.clone(), wf);
    }
}

/// The unfinished workflows, kept by the embedded store after each commit.
#[derive(Default)]
pub(crate) struct ActiveWorkflows {
    maps: Shared<Maps>,
}

impl ActiveWorkflows {
    /// Replaces the whole content with the active ones of `all`.
    pub(crate) fn replace_all(&self, all: Vec<Workflow>) {
        let mut maps = Maps::default();
        for wf in all {
            maps.upsert(wf);
        }
        *self.maps.write() = maps;
    }

    /// A workflow as now stored: kept while unfinished, dropped once ended.
    pub(crate) fn upsert(&self, wf: Workflow) {
        self.maps.write().upsert(wf);
    }

    /// A workflow deleted.
    pub(crate) fn remove(&self, id: &str) {
        self.maps.write().remove(id);
    }

    /// Workflow `id` as stored, when it is unfinished.
    pub(crate) fn get(&self, id: &str) -> Option<Workflow> {
        self.maps.read().by_id.get(id).cloned()
    }

    /// True when workflow `id` is unfinished.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.maps.read().by_id.contains_key(id)
    }

    /// The unfinished workflows (of `worker`, compared case-insensitively,
    /// when given; in `state`, when given), oldest first.
    pub(crate) fn list(&self, worker: Option<&str>, state: Option<State>) -> Vec<Workflow> {
        let maps = self.maps.read();
        let wanted = |wf: &&Workflow| state.is_none_or(|s| wf.state == s);
        match worker {
            Some(worker) => maps
                .by_worker
                .get(&worker.to_lowercase())
                .into_iter()
                .flatten()
                .filter_map(|(_, id)| maps.by_id.get(id))
                .filter(wanted)
                .cloned()
                .collect(),
            None => {
                let mut all: Vec<&Workflow> = maps.by_id.values().filter(wanted).collect();
                all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
                all.into_iter().cloned().collect()
            }
        }
    }
}
