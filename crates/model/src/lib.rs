//! The Bellows domain model: hardware records, workflow templates, their
//! rendering, and the workflow state machine.
//!
//! Pure code only: no IO, no clocks (callers pass times in), no async. Every
//! other crate depends on this one, and this one depends on none of ours, so
//! the rules here are the same for the API, the store and the boot services.

pub mod api;
pub mod auth;
pub mod bmc;
pub mod boot;
pub mod discovery;
pub mod error;
pub mod hardware;
pub mod mac;
pub mod registry;
pub mod render;
pub mod template;
pub mod time;
pub mod timeline;
pub mod workflow;

pub use api::LogEntry;
pub use error::ValidationError;
pub use hardware::Hardware;
pub use mac::MacAddr;
pub use render::{RenderContext, render};
pub use template::{Strictness, Template};
pub use workflow::{Event, EventKind, Outcome, State, Transition, TransitionError, Workflow};
