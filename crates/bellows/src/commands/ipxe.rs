//! `bellows ipxe`: iPXE scripts for other programs to serve.

use clap::Subcommand;

use super::common::boot_info;
use crate::client::Client;
use crate::error::CliError;

/// `bellows ipxe …`.
#[derive(Subcommand, Debug)]
pub enum IpxeCmd {
    /// Print the customer iPXE script for OVH's `POST /me/ipxeScript`
    /// (seed 000): close the public NIC, DHCP on the private one (vRack),
    /// chain this server's script, exit (boot normally) on failure.
    OvhScript {
        /// NIC to close (the public one).
        #[arg(long, default_value = "net0")]
        public_nic: String,
        /// NIC on the private network.
        #[arg(long, default_value = "net1")]
        private_nic: String,
    },
}

/// Runs one `ipxe` subcommand.
pub async fn run(c: &Client, cmd: IpxeCmd) -> Result<(), CliError> {
    match cmd {
        IpxeCmd::OvhScript {
            public_nic,
            private_nic,
        } => {
            let boot = boot_info(c).await?;
            print!(
                "{}",
                crate::byo_dhcp::ovh_script(&boot, &public_nic, &private_nic)
            );
        }
    }
    Ok(())
}
