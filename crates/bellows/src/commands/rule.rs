//! `bellows rule`: enrolment rules for discovered machines, what a rule
//! would do to a machine (`rule test`), and workflow sets (`rule apply`:
//! one template for every machine a selector takes).

use std::path::PathBuf;

use bellows_model::api::{
    List, RuleSource, RuleTest, RuleTestRequest, WorkflowSet, WorkflowSetRequest,
};
use bellows_model::discovery::rule::RuleRecord;
use bellows_model::time::rfc3339;
use clap::Subcommand;
use reqwest::Method;

use super::common::{read_text, show};
use crate::client::{Client, segment};
use crate::error::CliError;
use crate::output::{Format, table};

/// `bellows rule …`.
#[derive(Subcommand, Debug)]
pub enum RuleCmd {
    /// Create a rule from a YAML file, or replace the rule of that name.
    Create {
        /// Rule file (`-` for stdin).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List rules, in the order they are tried.
    List,
    /// Show a rule.
    Get {
        /// Rule name.
        name: String,
    },
    /// Delete a rule.
    Delete {
        /// Rule name.
        name: String,
    },
    /// Which rule would enrol a machine, and the record and workflow it
    /// would make; changes nothing.
    Test {
        /// Hardware id or MAC.
        machine: String,
        /// A rule file to try as if it were stored (replacing a stored
        /// rule of the same name).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
    /// A workflow set: create a workflow of TEMPLATE for every machine the
    /// selector takes (enrolled or registered ones; device_1 is each
    /// machine's MAC), e.g. to reinstall a rack.
    Apply {
        /// Template id or name.
        #[arg(short, long)]
        template: String,
        /// Which machines, as a rule's `match` in YAML:
        /// `{tags: [rack-12], facility: ams1}`.
        #[arg(short, long)]
        selector: String,
        /// Only list the machines it would take.
        #[arg(long)]
        dry_run: bool,
    },
}

const HEADERS: &[&str] = &["NAME", "PRIORITY", "ENROLLED", "WORKFLOW", "UPDATED"];

/// Runs one `rule` subcommand.
pub async fn run(c: &Client, format: Format, cmd: RuleCmd) -> Result<(), CliError> {
    match cmd {
        RuleCmd::Create { file } => {
            let data = read_text(&file)?;
            let answer = c
                .send::<RuleRecord>(Method::POST, "/api/v1/rules", &RuleSource { data })
                .await?;
            show(format, answer, |r| println!("{}", r.rule.name))?;
        }
        RuleCmd::List => {
            let answer = c.get::<List<RuleRecord>>("/api/v1/rules").await?;
            show(format, answer, |list| {
                let rows: Vec<Vec<String>> = list.items.iter().map(row).collect();
                print!("{}", table(HEADERS, &rows));
            })?;
        }
        RuleCmd::Get { name } => {
            let answer = c
                .get::<RuleRecord>(&format!("/api/v1/rules/{}", segment(&name)))
                .await?;
            show(format, answer, |r| {
                print!("{}", table(HEADERS, &[row(&r)]));
                if let Ok(text) = serde_json::to_string_pretty(&r.rule) {
                    println!("{text}");
                }
            })?;
        }
        RuleCmd::Delete { name } => {
            c.delete(&format!("/api/v1/rules/{}", segment(&name)))
                .await?;
            eprintln!("deleted rule {name}");
        }
        RuleCmd::Test { machine, file } => {
            let data = file.map(|f| read_text(&f)).transpose()?;
            let answer = c
                .send::<RuleTest>(
                    Method::POST,
                    "/api/v1/rules/test",
                    &RuleTestRequest {
                        hardware: machine.clone(),
                        data,
                    },
                )
                .await?;
            show(format, answer, |t| print_test(&machine, &t))?;
        }
        RuleCmd::Apply {
            template,
            selector,
            dry_run,
        } => {
            let answer = c
                .send::<WorkflowSet>(
                    Method::POST,
                    "/api/v1/workflow-sets",
                    &WorkflowSetRequest {
                        template,
                        selector,
                        dry_run,
                    },
                )
                .await?;
            show(format, answer, |set| {
                if dry_run {
                    println!("would take {} machines:", set.machines.len());
                    for m in &set.machines {
                        println!("  {m}");
                    }
                } else {
                    for wf in &set.workflows {
                        println!("{} {}", wf.hardware_id.as_deref().unwrap_or("-"), wf.id);
                    }
                }
            })?;
        }
    }
    Ok(())
}

fn print_test(machine: &str, t: &RuleTest) {
    let rows: Vec<Vec<String>> = t
        .verdicts
        .iter()
        .map(|v| {
            vec![
                v.rule.clone(),
                v.priority.to_string(),
                if v.matches { "yes" } else { "no" }.to_string(),
                v.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!("{}", table(&["RULE", "PRIORITY", "MATCHES", "WHY"], &rows));
    match &t.winner {
        Some(rule) => println!("{machine}: rule {rule} would enrol it"),
        None => println!("{machine}: no rule would enrol it"),
    }
    if let Some(hw) = &t.hardware {
        println!(
            "  hostname {}, facility {}",
            hw.hostname().unwrap_or("-"),
            hw.facility().unwrap_or("-")
        );
    }
    if let Some(wf) = &t.workflow {
        let map: Vec<String> = wf
            .hardware_map
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("  workflow: template {} ({})", wf.template, map.join(", "));
    }
    if let Some(note) = &t.note {
        println!("  {note}");
    }
}

fn row(r: &RuleRecord) -> Vec<String> {
    vec![
        r.rule.name.clone(),
        r.rule.priority.to_string(),
        r.enrolled.to_string(),
        r.rule
            .workflow
            .as_ref()
            .map_or_else(|| "-".to_string(), |w| w.template.clone()),
        rfc3339(r.updated_at),
    ]
}
