//! `bellows-worker`: `bellows worker` alone, for the in-memory OS. The same
//! command line as the full binary's `worker` subcommand (the image runs it
//! as `/usr/bin/bellows worker`), linked without the server, the store and
//! the CLI's other nouns, so the image is smaller and boots sooner.

use std::process::ExitCode;

use bellows::worker::WorkerArgs;
use clap::{Parser, Subcommand};

/// The worker on a machine being provisioned.
#[derive(Parser, Debug)]
#[command(name = "bellows", version, propagate_version = true)]
struct WorkerOnly {
    #[command(subcommand)]
    command: Only,
}

/// The one subcommand this build has.
#[derive(Subcommand, Debug)]
enum Only {
    /// Run the worker: receive this machine's actions from the server, run
    /// them, report each state.
    Worker(Box<WorkerArgs>),
}

fn main() -> ExitCode {
    let Only::Worker(args) = WorkerOnly::parse().command;
    bellows::block_on(bellows::worker::run(*args))
}
