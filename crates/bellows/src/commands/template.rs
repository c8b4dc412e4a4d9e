//! `bellows template`: workflow templates, stored by name.

use std::path::PathBuf;

use bellows_model::api::{List, NewTemplate, TemplateRecord, TemplateUpdate};
use bellows_model::time::rfc3339;
use clap::Subcommand;
use reqwest::Method;

use super::common::{read_text, show, template_resource};
use crate::client::{Client, segment};
use crate::error::CliError;
use crate::output::Format;
use crate::output::table;

/// `bellows template …`.
#[derive(Subcommand, Debug)]
pub enum TemplateCmd {
    /// Create a template from a YAML file; prints its id.
    Create {
        /// Template name (unique) [default: metadata.name of a Template
        /// resource].
        #[arg(short, long)]
        name: Option<String>,
        /// Template file (`-` for stdin): the template, or a whole
        /// Tinkerbell `Template` resource (its `spec.data`).
        #[arg(short, long)]
        path: PathBuf,
    },
    /// Show a template, by id or name.
    Get {
        /// Template id or name.
        id: String,
    },
    /// List templates.
    List,
    /// Replace a template's YAML (and optionally its name).
    Update {
        /// Template id or name.
        id: String,
        /// New template file; `-` for stdin.
        #[arg(short, long)]
        path: PathBuf,
        /// New name.
        #[arg(short, long)]
        name: Option<String>,
    },
    /// Delete a template. Workflows already created from it are unaffected.
    Delete {
        /// Template id or name.
        id: String,
    },
}

const HEADERS: &[&str] = &["ID", "NAME", "CREATED", "UPDATED"];

/// Runs one `template` subcommand.
pub async fn run(c: &Client, format: Format, cmd: TemplateCmd) -> Result<(), CliError> {
    match cmd {
        TemplateCmd::Create { name, path } => {
            let text = read_text(&path)?;
            let (name, data) = match template_resource(&text) {
                Some((resource_name, data)) => (name.or(resource_name), data),
                None => (name, text),
            };
            let name = name
                .ok_or_else(|| CliError::Usage("give the template a name with -n NAME".into()))?;
            let answer = c
                .send::<TemplateRecord>(
                    Method::POST,
                    "/api/v1/templates",
                    &NewTemplate { name, data },
                )
                .await?;
            show(format, answer, |t| println!("{}", t.id))?;
        }
        TemplateCmd::Get { id } => {
            let answer = c
                .get::<TemplateRecord>(&format!("/api/v1/templates/{}", segment(&id)))
                .await?;
            show(format, answer, |t| {
                print!("{}", table(HEADERS, &[row(&t)]));
                println!();
                print!("{}", t.data);
            })?;
        }
        TemplateCmd::List => {
            let answer = c.get::<List<TemplateRecord>>("/api/v1/templates").await?;
            show(format, answer, |list| {
                let rows: Vec<Vec<String>> = list.items.iter().map(row).collect();
                print!("{}", table(HEADERS, &rows));
            })?;
        }
        TemplateCmd::Update { id, path, name } => {
            let data = read_text(&path)?;
            let answer = c
                .send::<TemplateRecord>(
                    Method::PUT,
                    &format!("/api/v1/templates/{}", segment(&id)),
                    &TemplateUpdate { name, data },
                )
                .await?;
            show(format, answer, |t| println!("{}", t.id))?;
        }
        TemplateCmd::Delete { id } => {
            c.delete(&format!("/api/v1/templates/{}", segment(&id)))
                .await?;
            eprintln!("deleted template {id}");
        }
    }
    Ok(())
}

fn row(t: &TemplateRecord) -> Vec<String> {
    vec![
        t.id.clone(),
        t.name.clone(),
        rfc3339(t.created_at),
        rfc3339(t.updated_at),
    ]
}
