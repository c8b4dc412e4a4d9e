//! The worker protocol, generated from `proto/bellows/worker/v1/worker.proto`.
//!
//! Server and worker share these types so the wire format has one source.

#![allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]

/// Version 1 of the worker protocol.
pub mod v1 {
    tonic::include_proto!("bellows.worker.v1");
}

pub use v1::worker_client::WorkerClient;
pub use v1::worker_server::{Worker, WorkerServer};
