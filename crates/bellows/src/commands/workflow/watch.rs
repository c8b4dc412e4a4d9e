//! `bellows workflow watch` and `bellows workflow logs --follow`: follow a
//! workflow through the REST API until it ends.
//!
//! On a terminal the view is redrawn in place; otherwise (a pipe, CI) only
//! changes are printed, one line each, so the output reads as a log.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bellows_model::api::{ActionLogRecord, List};
use bellows_model::workflow::{ActionStatus, TaskStatus};
use bellows_model::{State, Workflow};

use super::{colon, workflow_path};
use crate::client::{Answer, Client, segment};
use crate::error::CliError;
use crate::output::Format;
use crate::output::{duration, structured, table};

/// How often the server is asked for news.
const POLL: Duration = Duration::from_millis(500);

/// Exit status for a workflow's final state.
fn exit_code(state: State) -> ExitCode {
    match state {
        State::Success => ExitCode::SUCCESS,
        State::Failed => ExitCode::from(1),
        State::Timeout => ExitCode::from(2),
        State::Cancelled => ExitCode::from(3),
        State::Pending | State::Running => ExitCode::from(4),
    }
}

async fn fetch_workflow(c: &Client, id: &str) -> Result<Workflow, CliError> {
    c.get::<Workflow>(&workflow_path(id)).await?.decode()
}

async fn fetch_logs(
    c: &Client,
    id: &str,
    action: Option<&str>,
    after: i64,
    limit: u32,
) -> Result<Answer<List<ActionLogRecord>>, CliError> {
    let mut path = format!("{}/logs?after={after}&limit={limit}", workflow_path(id));
    if let Some(a) = action {
        path.push_str(&format!("&action={}", segment(a)));
    }
    c.get(&path).await
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
        let lines = fetch_logs(c, id, None, after, if first { 200 } else { 2000 })
            .await?
            .decode()?;
        first = false;
        for l in lines.items {
            after = after.max(l.seq);
            let key = format!("{}/{}", l.line.task, l.line.action);
            let text = format!("{} {}", stream_mark(&l.line.stream), l.line.line);
            if !tty {
                println!("  {key} | {text}");
            }
            let q = recent.entry(key).or_default();
            q.push_back(text);
            while q.len() > keep {
                q.pop_front();
            }
        }
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
        if wf.state.is_terminal() {
            println!(
                "workflow {id} {}{} (watched {:.1} s)",
                wf.state.as_str(),
                colon(wf.message.as_deref()),
                started.elapsed().as_secs_f64()
            );
            return Ok(exit_code(wf.state));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn stream_mark(stream: &str) -> &'static str {
    match stream {
        "stderr" => "!",
        "worker" => "*",
        _ => ">",
    }
}

/// Every action with its `task/action` key, in run order.
fn actions(wf: &Workflow) -> impl Iterator<Item = (&TaskStatus, &ActionStatus, String)> {
    wf.tasks.iter().flat_map(|task| {
        task.actions
            .iter()
            .map(move |a| (task, a, format!("{}/{}", task.name, a.name)))
    })
}

/// One line per action whose displayed state changed.
fn changes(wf: &Workflow) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (task, a, key) in actions(wf) {
        let detail = match a.state {
            State::Pending if a.attempts == 0 => continue,
            State::Pending => format!("waiting to retry (attempt {} failed)", a.attempts),
            State::Running => format!(
                "attempt {} on {}{}",
                // A running action has started at least once.
                a.attempts.max(1),
                task.worker,
                colon(a.progress.as_deref())
            ),
            _ => format!(
                "in {}{}",
                duration(a.duration_ms),
                colon(a.message.as_deref())
            ),
        };
        out.push((key.clone(), format!("{key} {} {detail}", a.state.as_str())));
    }
    out
}

fn draw(wf: &Workflow, recent: &BTreeMap<String, VecDeque<String>>) {
    println!(
        "workflow {}  template {}  {}",
        wf.id,
        wf.template_name,
        wf.state.as_str()
    );
    let mut rows = Vec::new();
    let mut running = None;
    for (task, a, key) in actions(wf) {
        if a.state == State::Running {
            running = Some(key.clone());
        }
        let note = a
            .progress
            .clone()
            .or_else(|| a.message.clone())
            .unwrap_or_default();
        rows.push(vec![
            key,
            task.worker.clone(),
            a.state.as_str().to_string(),
            // Zero attempts is left out on the wire, and blank here.
            if a.attempts == 0 {
                String::new()
            } else {
                a.attempts.to_string()
            },
            duration(a.duration_ms),
            note,
        ]);
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
        let answer = fetch_logs(c, id, action, after, if first { limit } else { 5000 }).await?;
        first = false;
        if !follow && structured(format, answer.raw())? {
            return Ok(ExitCode::SUCCESS);
        }
        let items = answer.decode()?.items;
        for l in &items {
            after = after.max(l.seq);
            println!(
                "{}/{} {} {}",
                l.line.task,
                l.line.action,
                stream_mark(&l.line.stream),
                l.line.line
            );
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        let wf = fetch_workflow(c, id).await?;
        if wf.state.is_terminal() && items.is_empty() {
            return Ok(exit_code(wf.state));
        }
        if items.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
}
