//! `bellows bmc`, `power`, `boot-device` and `netboot`: a machine's BMC and
//! what the server does through it.

use bellows_model::api::{
    BmcJob, BmcView, BootDeviceRequest, List, NetbootRequest, PowerReading, PowerRequest, SetBmc,
};
use bellows_model::bmc::Operation;
use bellows_model::time::rfc3339;
use clap::{Args, Subcommand};
use reqwest::Method;

use super::common::show;
use crate::client::{Client, segment};
use crate::error::CliError;
use crate::output::Format;
use crate::output::table;

/// `bellows bmc …`.
#[derive(Subcommand, Debug)]
pub enum BmcCmd {
    /// Set a machine's BMC. The password is read from stdin
    /// (--password-stdin) or the BELLOWS_BMC_PASSWORD environment variable,
    /// never from the command line, where other users could see it. It is
    /// needed the first time and whenever the address, port, protocol,
    /// user or --insecure-tls changes; without one, the stored password is
    /// kept only for the same BMC.
    Set {
        /// Hardware id or MAC.
        machine: String,
        /// BMC host name or IP address.
        #[arg(long)]
        address: String,
        /// Port, if not the protocol's default.
        #[arg(long)]
        port: Option<u16>,
        /// ipmi, redfish or auto (try Redfish, then IPMI).
        #[arg(long, default_value = "auto")]
        protocol: String,
        /// BMC user name.
        #[arg(long, short = 'u')]
        username: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        /// Accept a self-signed Redfish certificate.
        #[arg(long)]
        insecure_tls: bool,
    },
    /// Show a machine's BMC (never the password).
    Get {
        /// Hardware id or MAC.
        machine: String,
    },
    /// List BMCs with their last power reading.
    List,
    /// Forget a machine's BMC.
    Delete {
        /// Hardware id or MAC.
        machine: String,
    },
}

/// `bellows power ACTION MACHINE`.
#[derive(Args, Debug)]
pub struct PowerArgs {
    /// on, off, soft-off, cycle, reset or status.
    #[arg(value_parser = ["on", "off", "soft-off", "cycle", "reset", "status"])]
    action: String,
    /// Hardware id or MAC.
    machine: String,
}

/// `bellows boot-device DEVICE MACHINE`.
#[derive(Args, Debug)]
pub struct BootDeviceArgs {
    /// pxe, disk, bios or cdrom.
    #[arg(value_parser = ["pxe", "disk", "bios", "cdrom"])]
    device: String,
    /// Hardware id or MAC.
    machine: String,
    /// Boot in UEFI mode.
    #[arg(long)]
    efi: bool,
    /// Keep this device for every boot, not only the next.
    #[arg(long)]
    persistent: bool,
}

/// `bellows netboot MACHINE`.
#[derive(Args, Debug)]
pub struct NetbootArgs {
    /// Hardware id or MAC.
    machine: String,
    /// Network-boot in UEFI mode.
    #[arg(long)]
    efi: bool,
}

const HEADERS: &[&str] = &["MACHINE", "ADDRESS", "PROTOCOL", "USER", "POWER", "CHECKED"];

/// Runs one `bmc` subcommand.
pub async fn run(c: &Client, format: Format, cmd: BmcCmd) -> Result<(), CliError> {
    match cmd {
        BmcCmd::Set {
            machine,
            address,
            port,
            protocol,
            username,
            password_stdin,
            insecure_tls,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map_err(|e| {
                    CliError::Usage(format!("cannot read the password from stdin: {e}"))
                })?;
                Some(line.trim_end_matches(['\n', '\r']).to_string())
            } else {
                std::env::var("BELLOWS_BMC_PASSWORD").ok()
            };
            let req = SetBmc {
                address,
                port,
                protocol: Some(protocol),
                username,
                // Empty means "keep the stored one", as when none is given.
                password: password.filter(|p| !p.is_empty()),
                insecure_tls,
            };
            let answer = c
                .send::<BmcView>(Method::PUT, &bmc_path(&machine), &req)
                .await?;
            show(format, answer, |b| {
                print!("{}", table(HEADERS, &[row(&b)]));
            })?;
        }
        BmcCmd::Get { machine } => {
            let answer = c.get::<BmcView>(&bmc_path(&machine)).await?;
            show(format, answer, |b| {
                print!("{}", table(HEADERS, &[row(&b)]));
            })?;
        }
        BmcCmd::List => {
            let answer = c.get::<List<BmcView>>("/api/v1/bmcs").await?;
            show(format, answer, |list| {
                let rows: Vec<Vec<String>> = list.items.iter().map(row).collect();
                print!("{}", table(HEADERS, &rows));
            })?;
        }
        BmcCmd::Delete { machine } => {
            c.delete(&bmc_path(&machine)).await?;
            eprintln!("deleted the BMC of {machine}");
        }
    }
    Ok(())
}

/// `bellows power`: a power change through the BMC, or its reading.
pub async fn power(c: &Client, format: Format, args: PowerArgs) -> Result<(), CliError> {
    let path = format!("/api/v1/hardware/{}/power", segment(&args.machine));
    if args.action == "status" {
        let answer = c.get::<PowerReading>(&path).await?;
        return show(format, answer, |r| println!("{}", r.power));
    }
    let req = PowerRequest {
        action: args.action.replace('-', "_"),
    };
    let answer = c.send::<BmcJob>(Method::POST, &path, &req).await?;
    show(format, answer, print_job)
}

/// `bellows boot-device`: the next boot device, through the BMC.
pub async fn boot_device(c: &Client, format: Format, args: BootDeviceArgs) -> Result<(), CliError> {
    let path = format!("/api/v1/hardware/{}/boot-device", segment(&args.machine));
    let req = BootDeviceRequest {
        device: args.device,
        efi: args.efi,
        persistent: args.persistent,
    };
    let answer = c.send::<BmcJob>(Method::POST, &path, &req).await?;
    show(format, answer, print_job)
}

/// `bellows netboot`: power off, network boot once, power on.
pub async fn netboot(c: &Client, format: Format, args: NetbootArgs) -> Result<(), CliError> {
    let path = format!("/api/v1/hardware/{}/netboot", segment(&args.machine));
    let req = NetbootRequest { efi: args.efi };
    let answer = c.send::<BmcJob>(Method::POST, &path, &req).await?;
    show(format, answer, print_job)
}

fn bmc_path(machine: &str) -> String {
    format!("/api/v1/hardware/{}/bmc", segment(machine))
}

fn row(b: &BmcView) -> Vec<String> {
    let b = &b.record;
    let address = match b.port {
        None => b.address.clone(),
        Some(port) => format!("{}:{port}", b.address),
    };
    let state = b.power_state.clone().unwrap_or_default();
    let power = match b.power_error.as_deref().unwrap_or_default() {
        "" if state.is_empty() => "unknown".to_string(),
        "" => state,
        error => format!(
            "{} ({error})",
            if state.is_empty() { "unknown" } else { &state }
        ),
    };
    vec![
        b.hardware_id.clone(),
        address,
        b.protocol.clone(),
        b.username.clone(),
        power,
        b.power_checked_at.map(rfc3339).unwrap_or_default(),
    ]
}

/// Prints a BMC job's steps.
fn print_job(job: BmcJob) {
    let rows: Vec<Vec<String>> = job
        .steps
        .into_iter()
        .map(|step| {
            let what = match step.operation {
                Operation::Power { action } => format!("power {}", action.as_str()),
                Operation::SetBootDevice { device, .. } => format!("boot device {device}"),
                Operation::InsertVirtualMedia { .. } => "insert virtual media".into(),
                Operation::EjectVirtualMedia => "eject virtual media".into(),
            };
            vec![
                what,
                step.state.as_str().to_string(),
                step.error.unwrap_or_default(),
            ]
        })
        .collect();
    print!("{}", table(&["STEP", "STATE", "ERROR"], &rows));
}
