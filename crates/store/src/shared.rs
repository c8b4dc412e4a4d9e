//! The lock around the store's in-memory copies (the hardware index, the
//! unfinished workflows, the worker credentials): read by every request,
//! written by the store after each commit.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A reader-writer lock that stays usable after a panic elsewhere. Every
/// change the store makes to a copy is self-contained (one record in or
/// out, or the whole content replaced), so a panic while the lock was held
/// cannot have left half of one behind: the poison is ignored rather than
/// turned into a panic on every later request.
#[derive(Default)]
pub(crate) struct Shared<T>(RwLock<T>);

impl<T> Shared<T> {
    /// Shared access, for lookups.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Exclusive access, for the store's changes.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}
