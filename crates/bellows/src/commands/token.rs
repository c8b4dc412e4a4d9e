//! `bellows token`: operator tokens (admin only) and the audit log.

use bellows_model::api::List;
use bellows_model::auth::{AuditEntry, CreatedToken, NewToken, Role, TokenRecord};
use bellows_model::time::rfc3339;
use clap::Subcommand;
use reqwest::Method;

use super::common::show;
use crate::client::{Client, segment};
use crate::error::CliError;
use crate::output::Format;
use crate::output::table;

/// `bellows token …`.
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token; prints it once (it cannot be shown again).
    Create {
        /// Unique name, recorded with every change the token makes.
        #[arg(short, long)]
        name: String,
        /// admin (everything), operator (all but tokens and BMC
        /// credentials) or viewer (read only, no user-data or secrets).
        #[arg(short, long)]
        role: Role,
    },
    /// List tokens (names and roles, never the tokens).
    List,
    /// Revoke a token at once.
    Revoke {
        /// Token name.
        name: String,
    },
    /// The newest changes made through the API, and who made them.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// Runs one `token` subcommand.
pub async fn run(c: &Client, format: Format, cmd: TokenCmd) -> Result<(), CliError> {
    match cmd {
        TokenCmd::Create { name, role } => {
            let answer = c
                .send::<CreatedToken>(Method::POST, "/api/v1/tokens", &NewToken { name, role })
                .await?;
            show(format, answer, |t| {
                eprintln!(
                    "created {} token {:?}; it is shown only now:",
                    t.record.role, t.record.name
                );
                println!("{}", t.token);
            })?;
        }
        TokenCmd::List => {
            let answer = c.get::<List<TokenRecord>>("/api/v1/tokens").await?;
            show(format, answer, |list| {
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.role.to_string(),
                            t.created_by.clone(),
                            rfc3339(t.created_at),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["NAME", "ROLE", "CREATED BY", "CREATED"], &rows)
                );
            })?;
        }
        TokenCmd::Revoke { name } => {
            c.delete(&format!("/api/v1/tokens/{}", segment(&name)))
                .await?;
            eprintln!("revoked token {name}");
        }
        TokenCmd::Audit { limit } => {
            let answer = c
                .get::<List<AuditEntry>>(&format!("/api/v1/audit?limit={limit}"))
                .await?;
            show(format, answer, |list| {
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|e| {
                        vec![
                            rfc3339(e.at),
                            e.actor.clone(),
                            e.method.clone(),
                            e.path.clone(),
                            e.status.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["AT", "ACTOR", "METHOD", "PATH", "STATUS"], &rows)
                );
            })?;
        }
    }
    Ok(())
}
