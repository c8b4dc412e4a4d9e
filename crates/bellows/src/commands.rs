//! Client commands: each turns arguments into one or two API calls and
//! prints the result.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{BmcCmd, Cli, Command, Format, HardwareCmd, IpxeCmd, TemplateCmd, WorkflowCmd};
use crate::client::{Client, segment};
use crate::error::CliError;
use crate::output::{duration, s, structured, table, time};

/// Syslog severity names by number.
const SEVERITY: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Dispatches a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let format = cli.output;
    match cli.command {
        Command::Server(args) => crate::server::run(*args).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "bellows",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Hardware(cmd) => hardware(&Client::new(&cli.url)?, format, cmd).await,
        Command::DhcpConfig {
            format: target,
            interface,
        } => {
            let c = Client::new(&cli.url)?;
            let boot = boot_info(&c).await?;
            let list = c.call(Method::GET, "/api/v1/hardware", None).await?;
            let hardware: Vec<bellows_model::Hardware> =
                serde_json::from_value(list["items"].clone()).map_err(|e| {
                    CliError::Usage(format!("unexpected hardware list from the server: {e}"))
                })?;
            let (text, skipped) =
                crate::byo_dhcp::generate(target, &hardware, &boot, interface.as_deref());
            for s in skipped {
                eprintln!("warning: left out {s}");
            }
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Bmc(cmd) => bmc(&Client::new(&cli.url)?, format, cmd).await,
        Command::Power { action, machine } => {
            let c = Client::new(&cli.url)?;
            let path = format!("/api/v1/hardware/{}/power", segment(&machine));
            let v = if action == "status" {
                c.call(Method::GET, &path, None).await?
            } else {
                let action = action.replace('-', "_");
                c.call(Method::POST, &path, body(&json!({"action": action})))
                    .await?
            };
            if !structured(format, &v)? {
                print_job(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::BootDevice {
            device,
            machine,
            efi,
            persistent,
        } => {
            let c = Client::new(&cli.url)?;
            let req = json!({"device": device, "efi": efi, "persistent": persistent});
            let path = format!("/api/v1/hardware/{}/boot-device", segment(&machine));
            let v = c.call(Method::POST, &path, body(&req)).await?;
            if !structured(format, &v)? {
                print_job(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Netboot { machine, efi } => {
            let c = Client::new(&cli.url)?;
            let path = format!("/api/v1/hardware/{}/netboot", segment(&machine));
            let v = c
                .call(Method::POST, &path, body(&json!({"efi": efi})))
                .await?;
            if !structured(format, &v)? {
                print_job(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ipxe(IpxeCmd::OvhScript {
            public_nic,
            private_nic,
        }) => {
            let boot = boot_info(&Client::new(&cli.url)?).await?;
            print!(
                "{}",
                crate::byo_dhcp::ovh_script(&boot, &public_nic, &private_nic)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Template(cmd) => template(&Client::new(&cli.url)?, format, cmd).await,
        Command::Workflow(cmd) => workflow(&Client::new(&cli.url)?, format, cmd).await,
        Command::Worker(args) => crate::worker::run(*args).await,
        Command::Image(cmd) => crate::image::run(format, cmd),
    }
}

/// The server's view of where its boot services are.
async fn boot_info(c: &Client) -> Result<bellows_api::BootInfo, CliError> {
    let v = c.call(Method::GET, "/api/v1/boot", None).await?;
    serde_json::from_value(v)
        .map_err(|e| CliError::Usage(format!("unexpected boot info from the server: {e}")))
}

/// Reads a file, or stdin for `-`.
fn read_input(path: &Path) -> Result<Vec<u8>, CliError> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

pub(crate) fn body(v: &Value) -> Option<Vec<u8>> {
    Some(v.to_string().into_bytes())
}

fn hardware_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|h| {
            let ifaces = h.pointer("/network/interfaces").and_then(Value::as_array);
            let join = |ptr: &str| {
                ifaces
                    .map(|l| {
                        l.iter()
                            .map(|i| s(i, ptr))
                            .filter(|x| !x.is_empty())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            };
            let hostname = {
                let h1 = join("/dhcp/hostname");
                if h1.is_empty() {
                    s(h, "/metadata/instance/hostname")
                } else {
                    h1
                }
            };
            vec![
                s(h, "/id"),
                join("/dhcp/mac"),
                join("/dhcp/ip/address"),
                hostname,
            ]
        })
        .collect()
}

async fn hardware(c: &Client, format: Format, cmd: HardwareCmd) -> Result<ExitCode, CliError> {
    const HEADERS: &[&str] = &["ID", "MAC", "IP", "HOSTNAME"];
    match cmd {
        HardwareCmd::Push { file } => {
            let bytes = read_input(&file)?;
            let v = c
                .call(Method::POST, "/api/v1/hardware", Some(bytes))
                .await?;
            if !structured(format, &v)? {
                println!("{}", s(&v, "/id"));
            }
        }
        HardwareCmd::Get { id } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/api/v1/hardware/{}", segment(&id)),
                    None,
                )
                .await?;
            if !structured(format, &v)? {
                print!(
                    "{}",
                    table(HEADERS, &hardware_rows(std::slice::from_ref(&v)))
                );
            }
        }
        HardwareCmd::List => {
            let v = c.call(Method::GET, "/api/v1/hardware", None).await?;
            if !structured(format, &v)? {
                // The power column comes from the BMC poller's last reading.
                let bmcs = c.call(Method::GET, "/api/v1/bmcs", None).await?;
                let items = v["items"].as_array().cloned().unwrap_or_default();
                let mut rows = hardware_rows(&items);
                for (row, hw) in rows.iter_mut().zip(&items) {
                    let id = s(hw, "/id");
                    let power = bmcs["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|b| s(b, "/hardware_id") == id)
                        .map(|b| s(b, "/power_state"))
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "-".into());
                    row.push(power);
                }
                print!(
                    "{}",
                    table(&["ID", "MAC", "IP", "HOSTNAME", "POWER"], &rows)
                );
            }
        }
        HardwareCmd::Delete { id } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/hardware/{}", segment(&id)),
                None,
            )
            .await?;
            eprintln!("deleted hardware {id}");
        }
        HardwareCmd::Logs { id, limit } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/api/v1/hardware/{}/logs?limit={limit}", segment(&id)),
                    None,
                )
                .await?;
            if !structured(format, &v)? {
                let rows: Vec<Vec<String>> = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| {
                        let sev = l["severity"]
                            .as_u64()
                            .and_then(|n| SEVERITY.get(usize::try_from(n).ok()?));
                        vec![
                            time(l, "/at"),
                            sev.copied().unwrap_or("?").to_string(),
                            s(l, "/app"),
                            s(l, "/message"),
                        ]
                    })
                    .collect();
                print!("{}", table(&["TIME", "SEVERITY", "APP", "MESSAGE"], &rows));
            }
        }
        HardwareCmd::Inventory { id } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/api/v1/hardware/{}/inventory", segment(&id)),
                    None,
                )
                .await?;
            if !structured(format, &v)? {
                print_inventory(&v);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_inventory(v: &Value) {
    let f = &v["facts"];
    let gib = |b: Option<u64>| {
        b.map(|b| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)))
            .unwrap_or_default()
    };
    println!(
        "hardware {}  worker {}  reported {}",
        s(v, "/hardware_id"),
        s(v, "/worker"),
        time(v, "/updated_at")
    );
    println!(
        "host {}  kernel {}  arch {}",
        s(f, "/hostname"),
        s(f, "/kernel"),
        s(f, "/architecture")
    );
    println!(
        "cpu {} ({} threads, {} sockets)  memory {}",
        s(f, "/cpu/model"),
        s(f, "/cpu/threads"),
        s(f, "/cpu/sockets"),
        gib(f["memory_bytes"].as_u64())
    );
    let disks: Vec<Vec<String>> = f["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                s(d, "/name"),
                gib(d["size_bytes"].as_u64()),
                s(d, "/model"),
                s(d, "/serial"),
                if d["rotational"].as_bool() == Some(true) {
                    "hdd"
                } else {
                    "ssd"
                }
                .into(),
            ]
        })
        .collect();
    print!(
        "\n{}",
        table(&["DISK", "SIZE", "MODEL", "SERIAL", "KIND"], &disks)
    );
    let nics: Vec<Vec<String>> = f["nics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            vec![
                s(n, "/name"),
                s(n, "/mac"),
                s(n, "/driver"),
                s(n, "/speed_mbps"),
                if n["link_up"].as_bool() == Some(true) {
                    "up"
                } else {
                    "down"
                }
                .into(),
            ]
        })
        .collect();
    print!(
        "\n{}",
        table(&["NIC", "MAC", "DRIVER", "MBPS", "LINK"], &nics)
    );
}

fn template_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|t| {
            vec![
                s(t, "/id"),
                s(t, "/name"),
                time(t, "/created_at"),
                time(t, "/updated_at"),
            ]
        })
        .collect()
}

fn utf8(bytes: Vec<u8>, what: &Path) -> Result<String, CliError> {
    String::from_utf8(bytes)
        .map_err(|_| CliError::Usage(format!("{} is not UTF-8 text", what.display())))
}

async fn template(c: &Client, format: Format, cmd: TemplateCmd) -> Result<ExitCode, CliError> {
    const HEADERS: &[&str] = &["ID", "NAME", "CREATED", "UPDATED"];
    match cmd {
        TemplateCmd::Create { name, path } => {
            let data = utf8(read_input(&path)?, &path)?;
            let v = c
                .call(
                    Method::POST,
                    "/api/v1/templates",
                    body(&json!({"name": name, "data": data})),
                )
                .await?;
            if !structured(format, &v)? {
                println!("{}", s(&v, "/id"));
            }
        }
        TemplateCmd::Get { id } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/api/v1/templates/{}", segment(&id)),
                    None,
                )
                .await?;
            if !structured(format, &v)? {
                print!(
                    "{}",
                    table(HEADERS, &template_rows(std::slice::from_ref(&v)))
                );
                println!();
                print!("{}", s(&v, "/data"));
            }
        }
        TemplateCmd::List => {
            let v = c.call(Method::GET, "/api/v1/templates", None).await?;
            if !structured(format, &v)? {
                let items = v["items"].as_array().cloned().unwrap_or_default();
                print!("{}", table(HEADERS, &template_rows(&items)));
            }
        }
        TemplateCmd::Update { id, path, name } => {
            let data = utf8(read_input(&path)?, &path)?;
            let mut req = json!({"data": data});
            if let Some(name) = name {
                req["name"] = Value::String(name);
            }
            let v = c
                .call(
                    Method::PUT,
                    &format!("/api/v1/templates/{}", segment(&id)),
                    body(&req),
                )
                .await?;
            if !structured(format, &v)? {
                println!("{}", s(&v, "/id"));
            }
        }
        TemplateCmd::Delete { id } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/templates/{}", segment(&id)),
                None,
            )
            .await?;
            eprintln!("deleted template {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print_workflow(v: &Value) {
    let header = table(
        &["ID", "TEMPLATE", "STATE", "CREATED"],
        &[vec![
            s(v, "/id"),
            s(v, "/template_name"),
            s(v, "/state"),
            time(v, "/created_at"),
        ]],
    );
    print!("{header}");
    if let Some(msg) = v.get("message").and_then(Value::as_str) {
        println!("message: {msg}");
    }
    println!();
    let mut rows = Vec::new();
    for task in v["tasks"].as_array().into_iter().flatten() {
        for action in task["actions"].as_array().into_iter().flatten() {
            rows.push(vec![
                s(task, "/name"),
                s(task, "/worker"),
                s(action, "/name"),
                s(action, "/image"),
                s(action, "/state"),
                duration(action["duration_ms"].as_i64()),
                if action["progress"].is_string() {
                    s(action, "/progress")
                } else {
                    s(action, "/message")
                },
            ]);
        }
    }
    print!(
        "{}",
        table(
            &[
                "TASK", "WORKER", "ACTION", "IMAGE", "STATE", "DURATION", "MESSAGE"
            ],
            &rows
        )
    );
}

async fn workflow(c: &Client, format: Format, cmd: WorkflowCmd) -> Result<ExitCode, CliError> {
    match cmd {
        WorkflowCmd::Create {
            template,
            hardware_map,
            hardware,
            toggle_netboot,
            netboot,
            efi,
        } => {
            let map: Value = serde_json::from_str(&hardware_map).map_err(|e| {
                CliError::Usage(format!(
                    "--hardware-map is not JSON ({e}); write it like '{{\"device_1\":\"d0:50:99:d7:63:20\"}}'"
                ))
            })?;
            let mut req = json!({"template": template, "hardware_map": map});
            if let Some(hw) = hardware {
                req["hardware"] = Value::String(hw);
            }
            if toggle_netboot || netboot {
                let mut opts = json!({"toggle_allow_netboot": toggle_netboot, "efi": efi});
                if netboot {
                    opts["boot_mode"] = Value::String("netboot".into());
                }
                req["boot_options"] = opts;
            }
            let v = c
                .call(Method::POST, "/api/v1/workflows", body(&req))
                .await?;
            if !structured(format, &v)? {
                println!("{}", s(&v, "/id"));
            }
        }
        WorkflowCmd::Get { id } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/api/v1/workflows/{}", segment(&id)),
                    None,
                )
                .await?;
            if !structured(format, &v)? {
                print_workflow(&v);
            }
        }
        WorkflowCmd::List { state, hardware } => {
            let mut path = "/api/v1/workflows".to_string();
            let mut sep = '?';
            for (k, val) in [("state", state), ("hardware", hardware)] {
                if let Some(val) = val {
                    path.push_str(&format!("{sep}{k}={}", segment(&val)));
                    sep = '&';
                }
            }
            let v = c.call(Method::GET, &path, None).await?;
            if !structured(format, &v)? {
                let rows: Vec<Vec<String>> = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        let workers: Vec<String> = w["tasks"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|t| s(t, "/worker"))
                            .collect();
                        vec![
                            s(w, "/id"),
                            s(w, "/template_name"),
                            s(w, "/state"),
                            workers.join(","),
                            time(w, "/created_at"),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["ID", "TEMPLATE", "STATE", "WORKERS", "CREATED"], &rows)
                );
            }
        }
        WorkflowCmd::Events { id } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/api/v1/workflows/{}/events", segment(&id)),
                    None,
                )
                .await?;
            if !structured(format, &v)? {
                let rows: Vec<Vec<String>> = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            s(e, "/seq"),
                            time(e, "/at"),
                            s(e, "/type"),
                            event_details(e),
                        ]
                    })
                    .collect();
                print!("{}", table(&["SEQ", "TIME", "EVENT", "DETAILS"], &rows));
            }
        }
        WorkflowCmd::Delete { id } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/workflows/{}", segment(&id)),
                None,
            )
            .await?;
            eprintln!("deleted workflow {id}");
        }
        WorkflowCmd::Watch { id, lines } => return crate::watch::watch(c, &id, lines).await,
        WorkflowCmd::Logs {
            id,
            action,
            follow,
            limit,
        } => return crate::watch::logs(c, format, &id, action.as_deref(), follow, limit).await,
        WorkflowCmd::Cancel { id, reason } => {
            let v = c
                .call(
                    Method::POST,
                    &format!("/api/v1/workflows/{}/cancel", segment(&id)),
                    body(&json!({ "reason": reason })),
                )
                .await?;
            if !structured(format, &v)? {
                println!("workflow {id} is {}", s(&v, "/state"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn event_details(e: &Value) -> String {
    match e["type"].as_str() {
        Some("created") => format!("from template {}", s(e, "/template_id")),
        Some("action_started") => format!(
            "{}/{} on {}",
            s(e, "/task"),
            s(e, "/action"),
            s(e, "/worker")
        ),
        Some("action_finished") => {
            let msg = s(e, "/message");
            format!(
                "{}/{} {}{}",
                s(e, "/task"),
                s(e, "/action"),
                s(e, "/state"),
                if msg.is_empty() {
                    msg
                } else {
                    format!(": {msg}")
                }
            )
        }
        Some("boot_requested") => format!(
            "{} {}: {}",
            s(e, "/hardware"),
            if e["ok"].as_bool() == Some(true) {
                "booted"
            } else {
                "not booted"
            },
            s(e, "/message")
        ),
        Some("action_retrying") => format!(
            "{}/{} will run again: attempt {} of {}",
            s(e, "/task"),
            s(e, "/action"),
            s(e, "/next_attempt"),
            s(e, "/of")
        ),
        Some("state_changed") => {
            let msg = s(e, "/message");
            format!(
                "{} -> {}{}",
                s(e, "/from"),
                s(e, "/to"),
                if msg.is_empty() {
                    msg
                } else {
                    format!(": {msg}")
                }
            )
        }
        _ => String::new(),
    }
}

fn bmc_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|b| {
            let port = s(b, "/port");
            let address = if port.is_empty() {
                s(b, "/address")
            } else {
                format!("{}:{port}", s(b, "/address"))
            };
            let power = match (s(b, "/power_state"), s(b, "/power_error")) {
                (p, e) if !e.is_empty() => {
                    format!("{} ({e})", if p.is_empty() { "unknown".into() } else { p })
                }
                (p, _) if p.is_empty() => "unknown".into(),
                (p, _) => p,
            };
            vec![
                s(b, "/hardware_id"),
                address,
                s(b, "/protocol"),
                s(b, "/username"),
                power,
                time(b, "/power_checked_at"),
            ]
        })
        .collect()
}

async fn bmc(c: &Client, format: Format, cmd: BmcCmd) -> Result<ExitCode, CliError> {
    const HEADERS: &[&str] = &["MACHINE", "ADDRESS", "PROTOCOL", "USER", "POWER", "CHECKED"];
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
            let mut req = json!({"address": address, "protocol": protocol, "username": username, "insecure_tls": insecure_tls});
            if let Some(port) = port {
                req["port"] = json!(port);
            }
            if let Some(p) = password.filter(|p| !p.is_empty()) {
                req["password"] = json!(p);
            }
            let v = c
                .call(
                    Method::PUT,
                    &format!("/api/v1/hardware/{}/bmc", segment(&machine)),
                    body(&req),
                )
                .await?;
            if !structured(format, &v)? {
                print!("{}", table(HEADERS, &bmc_rows(std::slice::from_ref(&v))));
            }
        }
        BmcCmd::Get { machine } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/api/v1/hardware/{}/bmc", segment(&machine)),
                    None,
                )
                .await?;
            if !structured(format, &v)? {
                print!("{}", table(HEADERS, &bmc_rows(std::slice::from_ref(&v))));
            }
        }
        BmcCmd::List => {
            let v = c.call(Method::GET, "/api/v1/bmcs", None).await?;
            if !structured(format, &v)? {
                let items = v["items"].as_array().cloned().unwrap_or_default();
                print!("{}", table(HEADERS, &bmc_rows(&items)));
            }
        }
        BmcCmd::Delete { machine } => {
            c.call(
                Method::DELETE,
                &format!("/api/v1/hardware/{}/bmc", segment(&machine)),
                None,
            )
            .await?;
            eprintln!("deleted the BMC of {machine}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a power reading or a BMC job's steps.
fn print_job(v: &Value) {
    if let Some(power) = v.get("power").and_then(Value::as_str) {
        println!("{power}");
        return;
    }
    let rows: Vec<Vec<String>> = v["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|step| {
            let op = &step["operation"];
            let what = match op["op"].as_str() {
                Some("power") => format!("power {}", s(op, "/action")),
                Some("set_boot_device") => format!("boot device {}", s(op, "/device")),
                Some(other) => other.replace('_', " "),
                None => String::new(),
            };
            vec![what, s(step, "/state"), s(step, "/error")]
        })
        .collect();
    print!("{}", table(&["STEP", "STATE", "ERROR"], &rows));
}
