//! `bellows hardware`: push, show, list and delete machines, and read what
//! they reported (syslog lines, the worker's inventory).

use std::path::PathBuf;

use bellows_model::Hardware;
use bellows_model::api::{BmcView, Facts, InventoryRecord, List, LogRecord};
use bellows_model::time::rfc3339;
use bellows_model::timeline::BootEvent;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::common::{hardware_documents, read_input, show};
use crate::client::{Client, segment};
use crate::error::CliError;
use crate::output::Format;
use crate::output::{structured, table};

/// `bellows hardware …`.
#[derive(Subcommand, Debug)]
pub enum HardwareCmd {
    /// Create or update hardware from a JSON file (flat Tinkerbell or
    /// resource shape). An existing id or MAC is updated in place.
    Push {
        /// File to read (`-` for stdin): JSON, or YAML with one or more
        /// `---` documents, each a record or a Tinkerbell `Hardware`
        /// resource; one push per record, in order.
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Show one machine, by id or MAC.
    Get {
        /// Hardware id or MAC.
        id: String,
    },
    /// List machines.
    List {
        /// Only machines in this state: discovered (waiting for a rule or
        /// `hardware enroll`), enrolled (discovered, then enrolled) or
        /// registered (pushed by hand).
        #[arg(long, value_parser = ["discovered", "enrolled", "registered"])]
        state: Option<String>,
    },
    /// Enrol a discovered machine by hand: it becomes an ordinary machine,
    /// with a workflow of TEMPLATE (device_1 = its MAC) if given, and
    /// reboots into it at its next report.
    Enroll {
        /// Hardware id or MAC.
        id: String,
        /// Template (name or id) of the workflow to create.
        #[arg(short, long)]
        template: Option<String>,
    },
    /// Delete a machine, by id or MAC.
    Delete {
        /// Hardware id or MAC.
        id: String,
    },
    /// Show the syslog lines a machine sent while booting (iPXE, the
    /// in-memory OS, the worker), oldest first.
    Logs {
        /// Hardware id or MAC, or ip:ADDRESS for an unknown sender.
        id: String,
        /// Newest N lines.
        #[arg(short = 'n', long, default_value_t = 200)]
        limit: u32,
    },
    /// Show the machine's boot timeline with the time between steps: DHCP,
    /// TFTP, the iPXE script, downloads, its worker, each action, metadata.
    /// Where a boot stopped is its last line.
    Timeline {
        /// Hardware id or MAC.
        id: String,
        /// Newest N steps.
        #[arg(short = 'n', long, default_value_t = 200)]
        limit: u32,
    },
    /// Show the facts the machine's worker reported (CPU, memory, disks, NICs).
    Inventory {
        /// Hardware id or MAC.
        id: String,
    },
}

/// Syslog severity names by number.
const SEVERITY: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

const HEADERS: &[&str] = &["ID", "MAC", "IP", "HOSTNAME"];

/// Runs one `hardware` subcommand.
pub async fn run(c: &Client, format: Format, cmd: HardwareCmd) -> Result<(), CliError> {
    match cmd {
        HardwareCmd::Push { file } => {
            for body in hardware_documents(&read_input(&file)?)? {
                let answer = c
                    .send_bytes::<Hardware>(Method::POST, "/api/v1/hardware", body)
                    .await?;
                show(format, answer, |hw| println!("{}", hw.id))?;
            }
        }
        HardwareCmd::Get { id } => {
            let answer = c
                .get::<Hardware>(&format!("/api/v1/hardware/{}", segment(&id)))
                .await?;
            show(format, answer, |hw| {
                print!("{}", table(HEADERS, &[row(&hw)]));
            })?;
        }
        HardwareCmd::Enroll { id, template } => {
            let answer = c
                .send::<bellows_model::api::Enrolled>(
                    Method::POST,
                    &format!("/api/v1/hardware/{}/enroll", segment(&id)),
                    &bellows_model::api::EnrollRequest { template },
                )
                .await?;
            show(format, answer, |e| match &e.workflow {
                Some(wf) => println!("{} enrolled; workflow {}", e.hardware.id, wf.id),
                None => println!("{} enrolled", e.hardware.id),
            })?;
        }
        HardwareCmd::List { state } => {
            let path = match &state {
                Some(s) => format!("/api/v1/hardware?state={}", segment(s)),
                None => "/api/v1/hardware".to_string(),
            };
            let answer = c.get::<List<Hardware>>(&path).await?;
            if !structured(format, answer.raw())? {
                let list = answer.decode()?;
                // The power column comes from the BMC poller's last reading.
                let bmcs = c.get::<List<BmcView>>("/api/v1/bmcs").await?.decode()?;
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|hw| {
                        let power = bmcs
                            .items
                            .iter()
                            .find(|b| b.record.hardware_id == hw.id)
                            .and_then(|b| b.record.power_state.clone())
                            .filter(|p| !p.is_empty())
                            .unwrap_or_else(|| "-".into());
                        let mut row = row(hw);
                        row.push(bellows_model::discovery::hardware_state(hw).to_string());
                        row.push(power);
                        row
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["ID", "MAC", "IP", "HOSTNAME", "STATE", "POWER"], &rows)
                );
            }
        }
        HardwareCmd::Delete { id } => {
            c.delete(&format!("/api/v1/hardware/{}", segment(&id)))
                .await?;
            eprintln!("deleted hardware {id}");
        }
        HardwareCmd::Logs { id, limit } => {
            let answer = c
                .get::<List<LogRecord>>(&format!(
                    "/api/v1/hardware/{}/logs?limit={limit}",
                    segment(&id)
                ))
                .await?;
            show(format, answer, |list| {
                let rows: Vec<Vec<String>> = list
                    .items
                    .into_iter()
                    .map(|l| {
                        let sev = SEVERITY.get(usize::from(l.entry.severity));
                        vec![
                            rfc3339(l.entry.at),
                            sev.copied().unwrap_or("?").to_string(),
                            l.entry.app,
                            l.entry.message,
                        ]
                    })
                    .collect();
                print!("{}", table(&["TIME", "SEVERITY", "APP", "MESSAGE"], &rows));
            })?;
        }
        HardwareCmd::Timeline { id, limit } => {
            let answer = c
                .get::<List<BootEvent>>(&format!(
                    "/api/v1/hardware/{}/timeline?limit={limit}",
                    segment(&id)
                ))
                .await?;
            show(format, answer, |list| {
                let mut previous = None;
                let rows: Vec<Vec<String>> = list
                    .items
                    .into_iter()
                    .map(|e| {
                        let since = previous.map_or_else(String::new, |p: i64| {
                            format!("+{:.3} s", (e.at - p) as f64 / 1000.0)
                        });
                        previous = Some(e.at);
                        vec![rfc3339(e.at), since, e.step.to_string(), e.detail]
                    })
                    .collect();
                print!("{}", table(&["TIME", "AFTER", "STEP", "DETAIL"], &rows));
            })?;
        }
        HardwareCmd::Inventory { id } => {
            let path = format!("/api/v1/hardware/{}/inventory", segment(&id));
            let answer = c.get::<InventoryRecord>(&path).await?;
            if !structured(format, answer.raw())? {
                let record = answer.decode()?;
                let facts: Facts = serde_json::from_value(record.facts.clone()).map_err(|e| {
                    CliError::Unexpected {
                        path,
                        error: format!("facts: {e}"),
                    }
                })?;
                print_inventory(&record, &facts);
            }
        }
    }
    Ok(())
}

/// A machine's table row: id, then its interfaces' MACs, IPs and hostnames
/// (the metadata's hostname when no interface names one).
fn row(hw: &Hardware) -> Vec<String> {
    let dhcp = || hw.network.interfaces.iter().filter_map(|i| i.dhcp.as_ref());
    let join = |cells: Vec<String>| {
        cells
            .into_iter()
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
            .join(",")
    };
    let macs = join(dhcp().map(|d| d.mac.to_string()).collect());
    let ips = join(
        dhcp()
            .filter_map(|d| d.ip.as_ref().map(|ip| ip.address.to_string()))
            .collect(),
    );
    let mut hostname = join(dhcp().filter_map(|d| d.hostname.clone()).collect());
    if hostname.is_empty() {
        // Metadata is free-form JSON: a hostname there may be any value.
        hostname = match hw.metadata.pointer("/instance/hostname") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
    }
    vec![hw.id.clone(), macs, ips, hostname]
}

fn print_inventory(record: &InventoryRecord, f: &Facts) {
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30));
    println!(
        "hardware {}  worker {}  reported {}",
        record.hardware_id,
        record.worker,
        rfc3339(record.updated_at)
    );
    println!(
        "host {}  kernel {}  arch {}",
        f.hostname, f.kernel, f.architecture
    );
    let cpu = |field: fn(&bellows_model::api::CpuFacts) -> String| {
        f.cpu.as_ref().map(field).unwrap_or_default()
    };
    println!(
        "cpu {} ({} threads, {} sockets)  memory {}",
        cpu(|c| c.model.clone()),
        cpu(|c| c.threads.to_string()),
        cpu(|c| c.sockets.to_string()),
        gib(f.memory_bytes)
    );
    let disks: Vec<Vec<String>> = f
        .disks
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                gib(d.size_bytes),
                d.model.clone(),
                d.serial.clone(),
                if d.rotational { "hdd" } else { "ssd" }.into(),
            ]
        })
        .collect();
    print!(
        "\n{}",
        table(&["DISK", "SIZE", "MODEL", "SERIAL", "KIND"], &disks)
    );
    let nics: Vec<Vec<String>> = f
        .nics
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.mac.clone(),
                n.driver.clone(),
                n.speed_mbps.to_string(),
                if n.link_up { "up" } else { "down" }.into(),
            ]
        })
        .collect();
    print!(
        "\n{}",
        table(&["NIC", "MAC", "DRIVER", "MBPS", "LINK"], &nics)
    );
}
