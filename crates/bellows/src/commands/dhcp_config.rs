//! `bellows dhcp-config`: a configuration for the site's own DHCP server,
//! written from the machines the server knows.

use bellows_model::Hardware;
use bellows_model::api::List;
use clap::Args;

use super::common::boot_info;
use crate::client::Client;
use crate::error::CliError;

/// `bellows dhcp-config --format …`.
#[derive(Args, Debug)]
pub struct DhcpConfigArgs {
    /// Which DHCP server.
    #[arg(long, value_enum)]
    format: crate::byo_dhcp::SiteDhcp,
    /// Interface the DHCP server should listen on.
    #[arg(long)]
    interface: Option<String>,
}

/// Prints the configuration; machines it cannot describe are named on
/// stderr.
pub async fn run(c: &Client, args: DhcpConfigArgs) -> Result<(), CliError> {
    let boot = boot_info(c).await?;
    let list = c
        .get::<List<Hardware>>("/api/v1/hardware")
        .await?
        .decode()?;
    let (text, skipped) =
        crate::byo_dhcp::generate(args.format, &list.items, &boot, args.interface.as_deref());
    for s in skipped {
        eprintln!("warning: left out {s}");
    }
    print!("{text}");
    Ok(())
}
