//! `bellows workflow`: create workflows from templates, follow and cancel
//! them. Following (`watch`, `logs --follow`) is in [`watch`].

use bellows_model::api::{CancelWorkflow, EventRecord, List, NewWorkflow};
use bellows_model::time::rfc3339;
use bellows_model::workflow::{BootMode, BootOptions};
use bellows_model::{EventKind, Workflow};
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::common::show;
use crate::client::{Client, segment};
use crate::error::CliError;
use crate::output::Format;
use crate::output::{duration, table};

mod watch;

/// `bellows workflow …`.
#[derive(Subcommand, Debug)]
pub enum WorkflowCmd {
    /// Create a workflow from a template for the given machines; prints its id.
    Create {
        /// Template id or name.
        #[arg(short, long)]
        template: String,
        /// Hardware map as JSON, e.g. '{"device_1":"d0:50:99:d7:63:20"}'.
        #[arg(short = 'r', long = "hardware-map")]
        hardware_map: String,
        /// Hardware id exposed to the template as .Hardware [default: device_1's machine].
        #[arg(long)]
        hardware: Option<String>,
        /// Allow network boot now and turn it off when the workflow succeeds
        /// (Tinkerbell's toggleAllowNetboot).
        #[arg(long)]
        toggle_netboot: bool,
        /// Start the machine at once: power-cycle it into a network boot
        /// through its BMC (Tinkerbell's bootMode netboot).
        #[arg(long)]
        netboot: bool,
        /// With --netboot: boot in UEFI mode.
        #[arg(long, requires = "netboot")]
        efi: bool,
    },
    /// Show a workflow with each task's worker and each action's state.
    Get {
        /// Workflow id.
        id: String,
    },
    /// List workflows.
    List {
        /// Only this state (PENDING, RUNNING, SUCCESS, FAILED, TIMEOUT, CANCELLED).
        #[arg(long)]
        state: Option<String>,
        /// Only workflows for this machine (MAC, IP or id).
        #[arg(long)]
        hardware: Option<String>,
    },
    /// Show a workflow's event log.
    Events {
        /// Workflow id.
        id: String,
    },
    /// Delete a workflow and its events.
    Delete {
        /// Workflow id.
        id: String,
    },
    /// Follow a workflow live: each action's state, duration, progress and
    /// latest output, until it ends. Exit status: 0 SUCCESS, 1 FAILED,
    /// 2 TIMEOUT, 3 CANCELLED.
    Watch {
        /// Workflow id.
        id: String,
        /// Output lines shown under the running action.
        #[arg(long, default_value_t = 5)]
        lines: usize,
    },
    /// Print the output the workers streamed for a workflow's actions.
    Logs {
        /// Workflow id.
        id: String,
        /// Only this action.
        #[arg(long)]
        action: Option<String>,
        /// Keep printing new lines until the workflow ends.
        #[arg(short, long)]
        follow: bool,
        /// Newest N lines to start with.
        #[arg(short = 'n', long, default_value_t = 1000)]
        limit: u32,
    },
    /// Cancel a workflow; its worker stops the running action.
    Cancel {
        /// Workflow id.
        id: String,
        /// Why, for the event log.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs one `workflow` subcommand; `watch` and `logs --follow` exit with
/// the workflow's result.
pub async fn run(
    c: &Client,
    format: Format,
    cmd: WorkflowCmd,
) -> Result<std::process::ExitCode, CliError> {
    match cmd {
        WorkflowCmd::Create {
            template,
            hardware_map,
            hardware,
            toggle_netboot,
            netboot,
            efi,
        } => {
            // Sent as the operator wrote it: the server names a bad entry.
            let hardware_map: Value = serde_json::from_str(&hardware_map).map_err(|e| {
                CliError::Usage(format!(
                    "--hardware-map is not JSON ({e}); write it like '{{\"device_1\":\"d0:50:99:d7:63:20\"}}'"
                ))
            })?;
            let req = NewWorkflow {
                template,
                hardware_map,
                hardware,
                boot_options: BootOptions {
                    toggle_allow_netboot: toggle_netboot,
                    boot_mode: netboot.then_some(BootMode::Netboot),
                    efi,
                },
            };
            let answer = c
                .send::<Workflow>(Method::POST, "/api/v1/workflows", &req)
                .await?;
            show(format, answer, |wf| println!("{}", wf.id))?;
        }
        WorkflowCmd::Get { id } => {
            let answer = c.get::<Workflow>(&workflow_path(&id)).await?;
            show(format, answer, |wf| print_workflow(&wf))?;
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
            let answer = c.get::<List<Workflow>>(&path).await?;
            show(format, answer, |list| {
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|wf| {
                        let workers: Vec<&str> =
                            wf.tasks.iter().map(|t| t.worker.as_str()).collect();
                        vec![
                            wf.id.clone(),
                            wf.template_name.clone(),
                            wf.state.as_str().to_string(),
                            workers.join(","),
                            rfc3339(wf.created_at),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["ID", "TEMPLATE", "STATE", "WORKERS", "CREATED"], &rows)
                );
            })?;
        }
        WorkflowCmd::Events { id } => {
            let path = format!("{}/events", workflow_path(&id));
            let answer = c.get::<List<EventRecord>>(&path).await?;
            show(format, answer, |list| {
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            rfc3339(e.event.at),
                            e.event.kind.name().to_string(),
                            event_details(&e.event.kind),
                        ]
                    })
                    .collect();
                print!("{}", table(&["SEQ", "TIME", "EVENT", "DETAILS"], &rows));
            })?;
        }
        WorkflowCmd::Delete { id } => {
            c.delete(&workflow_path(&id)).await?;
            eprintln!("deleted workflow {id}");
        }
        WorkflowCmd::Watch { id, lines } => return watch::watch(c, &id, lines).await,
        WorkflowCmd::Logs {
            id,
            action,
            follow,
            limit,
        } => return watch::logs(c, format, &id, action.as_deref(), follow, limit).await,
        WorkflowCmd::Cancel { id, reason } => {
            let answer = c
                .send::<Workflow>(
                    Method::POST,
                    &format!("{}/cancel", workflow_path(&id)),
                    &CancelWorkflow { reason },
                )
                .await?;
            show(format, answer, |wf| {
                println!("workflow {id} is {}", wf.state.as_str());
            })?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn workflow_path(id: &str) -> String {
    format!("/api/v1/workflows/{}", segment(id))
}

/// `: message`, or nothing for no message.
fn colon(message: Option<&str>) -> String {
    match message {
        None | Some("") => String::new(),
        Some(m) => format!(": {m}"),
    }
}

/// A workflow, its tasks and actions, for `workflow get`.
fn print_workflow(wf: &Workflow) {
    let header = table(
        &["ID", "TEMPLATE", "STATE", "CREATED"],
        &[vec![
            wf.id.clone(),
            wf.template_name.clone(),
            wf.state.as_str().to_string(),
            rfc3339(wf.created_at),
        ]],
    );
    print!("{header}");
    if let Some(msg) = &wf.message {
        println!("message: {msg}");
    }
    println!();
    let mut rows = Vec::new();
    for task in &wf.tasks {
        for action in &task.actions {
            rows.push(vec![
                task.name.clone(),
                task.worker.clone(),
                action.name.clone(),
                action.image.clone(),
                action.state.as_str().to_string(),
                duration(action.duration_ms),
                action
                    .progress
                    .clone()
                    .or_else(|| action.message.clone())
                    .unwrap_or_default(),
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

fn event_details(kind: &EventKind) -> String {
    match kind {
        EventKind::Created {
            template_id,
            by: Some(by),
        } => format!("from template {template_id} by {by}"),
        EventKind::Created { template_id, .. } => format!("from template {template_id}"),
        EventKind::ActionStarted {
            task,
            action,
            worker,
            ..
        } => format!("{task}/{action} on {worker}"),
        EventKind::ActionFinished {
            task,
            action,
            state,
            message,
            ..
        } => format!(
            "{task}/{action} {}{}",
            state.as_str(),
            colon(message.as_deref())
        ),
        EventKind::BootRequested {
            hardware,
            ok,
            message,
        } => format!(
            "{hardware} {}: {message}",
            if *ok { "booted" } else { "not booted" }
        ),
        EventKind::ActionRetrying {
            task,
            action,
            next_attempt,
            of,
        } => format!("{task}/{action} will run again: attempt {next_attempt} of {of}"),
        EventKind::StateChanged { from, to, message } => {
            format!(
                "{} -> {}{}",
                from.as_str(),
                to.as_str(),
                colon(message.as_deref())
            )
        }
    }
}
