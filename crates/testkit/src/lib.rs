//! Test plumbing shared by the crates' integration tests, so that every
//! test builds its lab networks, starts its peers and cleans up after
//! itself the same way.
//!
//! Everything here fails the test by panicking (a helper that cannot do its
//! job has no better answer) and undoes what it made in `Drop`, so that a
//! failing test leaves no namespace or process behind. Tests that need root
//! ask [`netns::can_run`] first: without root they are skipped, except in CI
//! (`CI` set), where a missing privilege is a failure.

pub mod bmc;
pub mod files;
pub mod netns;
pub mod packages;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod registry;

pub use process::{ChildGuard, run_checked, wait_for, wait_until};
