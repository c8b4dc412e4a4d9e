//! The worker: the agent on a machine being provisioned.
//!
//! It subscribes to the server over gRPC, receives its next action the
//! moment there is one, runs it through a [`runtime::Runtime`] (a container
//! engine, or built-in code for machines without one) and reports each state
//! until the server acknowledges it. On an unknown machine it runs
//! [`discovery`] instead: it reports the machine's inventory until the
//! server enrols it, then reboots.

pub mod agent;
pub mod builtin;
pub mod container;
pub mod discovery;
pub mod docker;
pub mod facts;
mod lines;
pub mod lldp;
pub mod oci;
mod reference;
pub mod runtime;
pub mod tls;

pub use builtin::{BuiltinOptions, BuiltinRuntime};
pub use runtime::{ActionSpec, LogSink, RunContext, RunOutcome, RunResult, Runtime};
