//! `bellows workflow watch` and `bellows workflow logs --follow`: follow a
//! workflow through the REST API until it ends.
//!
//! On a terminal the view is redrawn in place; otherwise (a pipe, CI) only
//! changes are printed, one line each, so the output reads as a log.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::cli::Format;
use crate::client::{Client, segment};
use crate::error::CliError;
use crate::output::{duration, s, structured, table};

/// How often the server is asked for news.
const POLL: Duration = Duration::from_millis(500);

/// Exit status for a workflow's final state.
pub fn exit_code(state: &str) -> ExitCode {
    match state {
        "SUCCESS" => ExitCode::SUCCESS,
        "FAILED" => ExitCode::from(1),
        "TIMEOUT" => ExitCode::from(2),
        "CANCELLED" => ExitCode::from(3),
        _ => ExitCode::from(4),
    }
}

fn terminal(state: &str) -> bool {
    matches!(state, "SUCCESS" | "FAILED" | "TIMEOUT" | "CANCELLED")
}

async fn fetch_workflow(c: &Client, id: &str) -> Result<Value, CliError> {
    c.call(
        Method::GET,
        &format!("/api/v1/workflows/{}", segment(id)),
        None,
    )
    .await
}

async fn fetch_logs(
    c: &Client,
    id: &str,
    action: Option<&str>,
    after: i64,
    limit: u32,
) -> Result<Vec<Value>, CliError> {
    let mut path = format!(
        "/api/v1/workflows/{}/logs?after={after}&limit={limit}",
        segment(id)
    );
    if let Some(a) = action {
        path.push_str(&format!("&action={}", segment(a)));
    }
    let v = c.call(Method::GET, &path, None).await?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

/// Follows a workflow until it ends; the exit status is its result.
pub async fn watch(c: &Client, id: &str, keep: usize) -> Result<ExitCode, CliError> {
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut after = 0i64;
    let mut recent: BTreeMap<String, VecDeque<String>> = BTreeMap::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut first = true;
    loop {
        let wf = fetch_workflow(c, id).await?;
        let lines = fetch_logs(c, id, None, after, if first { 200 } else { 2000 }).await?;
        first = false;
        for l in &lines {
            after = after.max(l["seq"].as_i64().unwrap_or(after));
            let key = format!("{}/{}", s(l, "/task"), s(l, "/action"));
            let text = format!("{} {}", stream_mark(l), s(l, "/line"));
            if !tty {
                println!("  {key} | {text}");
            }
            let q = recent.entry(key).or_default();
            q.push_back(text);
            while q.len() > keep {
                q.pop_front();
            }
        }
        let state = s(&wf, "/state");
        if tty {
            print!("\x1b[H\x1b[2J");
            draw(&wf, &recent);
        } else {
            for (key, line) in changes(&wf) {
                if seen.get(&key) != Some(&line) {
                    println!("{line}");
                    seen.insert(key, line);
                }
            }
        }
        if terminal(&state) {
            let msg = s(&wf, "/message");
            println!(
                "workflow {id} {state}{} (watched {:.1} s)",
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                },
                started.elapsed().as_secs_f64()
            );
            return Ok(exit_code(&state));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn stream_mark(l: &Value) -> &'static str {
    match l["stream"].as_str() {
        Some("stderr") => "!",
        Some("worker") => "*",
        _ => ">",
    }
}

/// One line per action whose displayed state changed.
fn changes(wf: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in wf["tasks"].as_array().into_iter().flatten() {
        for a in task["actions"].as_array().into_iter().flatten() {
            let key = format!("{}/{}", s(task, "/name"), s(a, "/name"));
            let state = s(a, "/state");
            let detail = match state.as_str() {
                "PENDING" if a["attempts"].as_u64().unwrap_or(0) == 0 => continue,
                "PENDING" => format!("waiting to retry (attempt {} failed)", s(a, "/attempts")),
                "RUNNING" => {
                    let p = s(a, "/progress");
                    format!(
                        "attempt {} on {}{}",
                        a["attempts"].as_u64().unwrap_or(1),
                        s(task, "/worker"),
                        if p.is_empty() {
                            String::new()
                        } else {
                            format!(": {p}")
                        }
                    )
                }
                _ => {
                    let m = s(a, "/message");
                    format!(
                        "in {}{}",
                        duration(a["duration_ms"].as_i64()),
                        if m.is_empty() {
                            String::new()
                        } else {
                            format!(": {m}")
                        }
                    )
                }
            };
            out.push((key.clone(), format!("{key} {state} {detail}")));
        }
    }
    out
}

fn draw(wf: &Value, recent: &BTreeMap<String, VecDeque<String>>) {
    println!(
        "workflow {}  template {}  {}",
        s(wf, "/id"),
        s(wf, "/template_name"),
        s(wf, "/state")
    );
    let mut rows = Vec::new();
    let mut running = None;
    for task in wf["tasks"].as_array().into_iter().flatten() {
        for a in task["actions"].as_array().into_iter().flatten() {
            let key = format!("{}/{}", s(task, "/name"), s(a, "/name"));
            let state = s(a, "/state");
            if state == "RUNNING" {
                running = Some(key.clone());
            }
            let note = if a["progress"].is_string() {
                s(a, "/progress")
            } else {
                s(a, "/message")
            };
            rows.push(vec![
                key,
                s(task, "/worker"),
                state,
                s(a, "/attempts"),
                duration(a["duration_ms"].as_i64()),
                note,
            ]);
        }
    }
    print!(
        "{}",
        table(
            &[
                "ACTION",
                "WORKER",
                "STATE",
                "TRY",
                "DURATION",
                "PROGRESS / MESSAGE"
            ],
            &rows
        )
    );
    if let Some(key) = running
        && let Some(lines) = recent.get(&key)
    {
        println!("\n{key}:");
        for l in lines {
            println!("  {l}");
        }
    }
}

/// Prints a workflow's action output; with `follow`, until it ends.
pub async fn logs(
    c: &Client,
    format: Format,
    id: &str,
    action: Option<&str>,
    follow: bool,
    limit: u32,
) -> Result<ExitCode, CliError> {
    let mut after = 0i64;
    let mut first = true;
    loop {
        let items = fetch_logs(c, id, action, after, if first { limit } else { 5000 }).await?;
        first = false;
        if !follow && structured(format, &serde_json::json!({ "items": items }))? {
            return Ok(ExitCode::SUCCESS);
        }
        for l in &items {
            after = after.max(l["seq"].as_i64().unwrap_or(after));
            println!(
                "{}/{} {} {}",
                s(l, "/task"),
                s(l, "/action"),
                stream_mark(l),
                s(l, "/line")
            );
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        let wf = fetch_workflow(c, id).await?;
        let state = s(&wf, "/state");
        if terminal(&state) && items.is_empty() {
            return Ok(exit_code(&state));
        }
        if items.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
}
