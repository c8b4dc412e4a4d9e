//! `bellows`: the server and the operator's CLI, in one binary.

use std::process::ExitCode;

mod byo_dhcp;
mod cli;
mod client;
mod commands;
mod error;
mod image;
mod output;
mod server;
mod worker;

use clap::Parser;

fn main() -> ExitCode {
    // One TLS crypto provider for every HTTP client in the process (the CLI
    // and the Redfish client): rustls on ring. Fails only if one is already
    // installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
