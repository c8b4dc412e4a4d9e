//! The commands, one module per noun, in the manner of tokio's mini-redis:
//! each module holds its noun's arguments, its requests (the API's own
//! types from `bellows_model::api`) and its tables. This module only
//! dispatches a parsed command line.

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::client::Client;
use crate::error::CliError;

mod bmc;
mod common;
mod dhcp_config;
mod hardware;
mod ipxe;
mod template;
mod workflow;

pub use bmc::{BmcCmd, BootDeviceArgs, NetbootArgs, PowerArgs};
pub use dhcp_config::DhcpConfigArgs;
pub use hardware::HardwareCmd;
pub use ipxe::IpxeCmd;
pub use template::TemplateCmd;
pub use workflow::WorkflowCmd;

/// Dispatches a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let format = cli.output;
    let client = || Client::new(&cli.url);
    match cli.command {
        Command::Server(args) => return crate::server::run(*args).await,
        Command::Worker(args) => return crate::worker::run(*args).await,
        Command::Image(cmd) => return crate::image::run(format, cmd),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "bellows",
                &mut std::io::stdout(),
            );
        }
        Command::Hardware(cmd) => hardware::run(&client()?, format, cmd).await?,
        Command::Template(cmd) => template::run(&client()?, format, cmd).await?,
        Command::Workflow(cmd) => return workflow::run(&client()?, format, cmd).await,
        Command::Bmc(cmd) => bmc::run(&client()?, format, cmd).await?,
        Command::Power(args) => bmc::power(&client()?, format, args).await?,
        Command::BootDevice(args) => bmc::boot_device(&client()?, format, args).await?,
        Command::Netboot(args) => bmc::netboot(&client()?, format, args).await?,
        Command::DhcpConfig(args) => dhcp_config::run(&client()?, args).await?,
        Command::Ipxe(cmd) => ipxe::run(&client()?, cmd).await?,
    }
    Ok(ExitCode::SUCCESS)
}
