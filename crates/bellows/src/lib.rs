//! The `bellows` program: the server, the worker and the operator's CLI.
//!
//! A library with two thin binaries: `bellows` (everything) and
//! `bellows-worker` (only `bellows worker`, for the in-memory OS, so the
//! image does not carry the server's store and HTTP stack). Module layers,
//! top to bottom, never importing upwards:
//! - [`cli`]: the grammar; names every subcommand's arguments;
//! - [`server`], [`worker`], [`image`], [`commands`] (one module per CLI
//!   noun): each subcommand, with its own arguments;
//! - [`client`], [`output`], [`error`], [`byo_dhcp`]: what they share.

use std::future::Future;
use std::process::ExitCode;

use clap::CommandFactory;

pub mod byo_dhcp;
pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod image;
pub mod output;
pub mod server;
pub mod worker;

use cli::{Cli, Command};
use client::Client;
use commands::{bmc, dhcp_config, hardware, ipxe, rule, store, template, token, workflow};
use error::CliError;

/// Runs a parsed command line to its exit status.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let format = cli.output;
    let token = cli
        .token
        .clone()
        .or_else(|| client::local_admin_token(&cli.url));
    let client = || Client::new(&cli.url, token.clone(), cli.ca.as_deref());
    match cli.command {
        Command::Server(args) => return server::run(*args).await,
        Command::Doctor(args) => return server::doctor::run(*args, client().ok()).await,
        Command::Worker(mut args) => {
            // `bellows --token T worker` and BELLOWS_TOKEN work too.
            args.worker_token = args.worker_token.or(cli.token);
            args.server_ca = args.server_ca.or(cli.ca);
            return worker::run(*args).await;
        }
        Command::Image(cmd) => return image::run(format, cmd),
        Command::Store(cmd) => store::run(cmd).await?,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "bellows",
                &mut std::io::stdout(),
            );
        }
        Command::Manpages { dir } => write_manpages(&dir)?,
        Command::Hardware(cmd) => hardware::run(&client()?, format, cmd).await?,
        Command::Template(cmd) => template::run(&client()?, format, cmd).await?,
        Command::Rule(cmd) => rule::run(&client()?, format, cmd).await?,
        Command::Workflow(cmd) => return workflow::run(&client()?, format, cmd).await,
        Command::Bmc(cmd) => bmc::run(&client()?, format, cmd).await?,
        Command::Token(cmd) => token::run(&client()?, format, cmd).await?,
        Command::Power(args) => bmc::power(&client()?, format, args).await?,
        Command::BootDevice(args) => bmc::boot_device(&client()?, format, args).await?,
        Command::Netboot(args) => bmc::netboot(&client()?, format, args).await?,
        Command::DhcpConfig(args) => dhcp_config::run(&client()?, args).await?,
        Command::Ipxe(cmd) => ipxe::run(&client()?, cmd).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes one manual page per command and visible subcommand
/// (`bellows-hardware-push.1`), as packages install them.
fn write_manpages(dir: &std::path::Path) -> Result<(), CliError> {
    fn write(cmd: &clap::Command, name: &str, dir: &std::path::Path) -> std::io::Result<usize> {
        let page = cmd.clone().name(name.to_string());
        let mut bytes = Vec::new();
        clap_mangen::Man::new(page).render(&mut bytes)?;
        std::fs::write(dir.join(format!("{name}.1")), bytes)?;
        let mut written = 1;
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            written += write(sub, &format!("{name}-{}", sub.get_name()), dir)?;
        }
        Ok(written)
    }
    let failed = |e: std::io::Error| CliError::Io(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut cli = Cli::command();
    cli.build();
    let written = write(&cli, "bellows", dir).map_err(failed)?;
    eprintln!("wrote {written} manual pages to {}", dir.display());
    Ok(())
}

/// What both binaries' `main` does: install the TLS provider, run `task`
/// on a multi-threaded runtime, print its error as `error: …`.
pub fn block_on(task: impl Future<Output = Result<ExitCode, CliError>>) -> ExitCode {
    // One TLS crypto provider for every HTTP client in the process (the CLI,
    // the worker's image downloads and the Redfish client): rustls on ring.
    // Fails only if one is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    match runtime.block_on(task) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
