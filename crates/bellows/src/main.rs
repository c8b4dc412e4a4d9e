//! `bellows`: the server, the worker and the operator's CLI, in one binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = bellows::cli::Cli::parse();
    bellows::block_on(bellows::run(args))
}
