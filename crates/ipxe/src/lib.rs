//! iPXE: the per-machine boot script, and the HTTP routes that serve it,
//! the iPXE binaries and the in-memory OS.
//!
//! Scripts use only core iPXE commands (`kernel`, `initrd`, `boot`, `chain`,
//! `sanboot`, `goto`, `echo`, `sleep`, `iseq`, `exit`): OVH's firmware iPXE is
//! built without `params`/`param` (seed 000), so anything beyond the core
//! set would break the machines this project exists for. Retries are
//! unrolled rather than counted, because arithmetic on settings is not
//! core either.

mod file;
pub mod http;
pub mod script;

pub use script::{InstallOs, LocalBoot, ScriptChoice, choose, render};
