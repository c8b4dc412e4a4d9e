//! Tinkerbell users' real files (issue 13): every row of the corpus in
//! `../shared/tinkerbell-compat/fixtures/manifest.tsv`, and the environment
//! probes of `env/sources.tsv`, pushed through the CLI and the API of a
//! real server, each checked against what Tinkerbell does with the file.
//! The corpus is read where it lies, never copied into this repository.
//!
//! A row passes when Bellows does what the manifest says Tinkerbell does:
//! `accept` (hardware pushed), `valid` (template created, workflow
//! rendered, checks hold), `invalid` (refused at template or workflow
//! creation, with a message naming the line or the field). `n/a` rows are
//! shapes Bellows does not claim; they are reported, never failed.
//! [`DIFFERENCES`] lists the rows Bellows handles otherwise on purpose,
//! each with its reason (the README's "Templates and rendering" argues
//! them); a listed row that starts to pass fails the test, so the list
//! stays true.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bellows_model::template::{Strictness, Template};
use serde_json::{Value, json};

use crate::harness::{Server, http};

/// Rows Bellows handles differently from Tinkerbell on purpose.
const DIFFERENCES: &[(&str, &str)] = &[];

/// Where the corpus is: `BELLOWS_COMPAT_DIR`, else a `shared/tinkerbell-compat`
/// beside one of this repository's parent folders.
fn corpus() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BELLOWS_COMPAT_DIR") {
        return Some(PathBuf::from(dir));
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/tinkerbell-compat"))
        .find(|p| p.join("fixtures/manifest.tsv").is_file())
}

/// One manifest row.
struct Row {
    id: String,
    kind: String,
    file: String,
    expect: String,
    hardware: Vec<String>,
    hardware_map: String,
    checks: Vec<String>,
}

fn manifest(fixtures: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(fixtures.join("manifest.tsv")).expect("manifest");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let col: Vec<&str> = line.split('\t').collect();
            let get = |i: usize| col.get(i).copied().unwrap_or("").trim().to_string();
            Row {
                id: get(0),
                kind: get(1),
                file: get(2),
                expect: get(4),
                hardware: get(5)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                hardware_map: get(6),
                checks: get(7)
                    .split(';')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            }
        })
        .collect()
}

/// The section a row counts in.
fn section(row: &Row) -> &'static str {
    match row.kind.as_str() {
        "hw" => "hardware",
        "tmpl" => "templates",
        _ if row.id.starts_with("val-sprig") => "sprig functions",
        _ => "template validator",
    }
}

/// Runs the CLI; Ok(stdout) or Err(stderr).
fn cli(s: &Server, args: &[&str]) -> Result<String, String> {
    let out = s.cli(args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether a refusal names where the problem is: a line, or a field path
/// below the template (`data.tasks[0].name`) or in the hardware map.
fn names_the_place(message: &str) -> bool {
    let line = message
        .match_indices("line ")
        .any(|(i, m)| message[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
    line || message.contains("data.") || message.contains("hardware_map")
}

/// Creates a workflow from template `name` with a map given as raw JSON
/// text (a malformed map is part of the corpus): (status, body).
fn create_workflow(s: &Server, name: &str, map: &str) -> (u16, Value) {
    let map = if map.is_empty() { "{}" } else { map };
    let body = format!("{{\"template\": {}, \"hardware_map\": {map}}}", json!(name));
    http(
        "POST",
        &format!("{}/api/v1/workflows", s.url),
        Some(body.as_bytes()),
    )
}

/// Every action's environment (the task's under the action's), in run
/// order, as the worker receives it: the stored rendering, parsed as the
/// server parses it when it hands the action out.
fn environments(rendered: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let Ok(t) = Template::parse(rendered, Strictness::Rendered) else {
        return Vec::new();
    };
    t.actions()
        .map(|(task, action)| {
            let mut env = task.environment.clone();
            env.extend(action.environment.clone());
            (action.name.clone(), env)
        })
        .collect()
}

/// Checks `wf` against the manifest's checks; the failures.
fn check(wf: &Value, checks: &[String]) -> Vec<String> {
    let rendered = wf["rendered"].as_str().unwrap_or("");
    let envs = environments(rendered);
    let actions: Vec<&Value> = wf["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["actions"].as_array().into_iter().flatten())
        .collect();
    let mut failed = Vec::new();
    for c in checks {
        let Some((key, want)) = c.split_once('=') else {
            failed.push(format!("unreadable check {c:?}"));
            continue;
        };
        let ok = if let Some(var) = key.strip_prefix("env:") {
            envs.iter()
                .any(|(_, env)| env.get(var).map(String::as_str) == Some(want))
        } else if let Some((task, field)) = key.strip_prefix("task").and_then(|r| r.split_once('.'))
        {
            let i: usize = task.parse().unwrap_or(usize::MAX);
            wf["tasks"][i][field].as_str() == Some(want)
        } else if let Some((action, field)) =
            key.strip_prefix("action").and_then(|r| r.split_once('.'))
        {
            let i: usize = action.parse().unwrap_or(usize::MAX);
            actions.get(i).and_then(|a| a[field].as_str()) == Some(want)
        } else {
            false
        };
        if !ok {
            let seen = if let Some(var) = key.strip_prefix("env:") {
                envs.iter()
                    .filter_map(|(a, env)| env.get(var).map(|v| format!("{a}: {v:?}")))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                String::new()
            };
            failed.push(format!("{c} (seen: {seen})"));
        }
    }
    failed
}

/// Forgets every workflow and machine: each row starts as on a fresh
/// Tinkerbell (fixtures from different projects reuse the same MACs).
fn reset(s: &Server) {
    for (list, item) in [("workflows", "workflows"), ("hardware", "hardware")] {
        let (_, all) = http("GET", &format!("{}/api/v1/{list}", s.url), None);
        for record in all["items"].as_array().into_iter().flatten() {
            if let Some(id) = record["id"].as_str() {
                http(
                    "DELETE",
                    &format!("{}/api/v1/{item}/{}", s.url, crate::harness::segment(id)),
                    None,
                );
            }
        }
    }
}

/// Runs one row; Ok when Bellows does what Tinkerbell does (with the
/// refusal's message for an invalid file).
fn run_row(s: &Server, fixtures: &Path, row: &Row) -> Result<String, String> {
    reset(s);
    let file = fixtures.join(&row.file);
    let file_arg = file.to_str().ok_or("path")?;
    if row.kind == "hw" {
        return match (
            cli(s, &["hardware", "push", "-f", file_arg]),
            row.expect.as_str(),
        ) {
            (Ok(_), "accept") => Ok(String::new()),
            (Err(e), "accept") => Err(format!("refused: {}", e.trim())),
            (Ok(_), other) => Err(format!("accepted; Tinkerbell: {other}")),
            (Err(e), _) => Ok(e.trim().to_string()),
        };
    }
    for hw in &row.hardware {
        let path = fixtures.join(hw);
        cli(s, &["hardware", "push", "-f", path.to_str().ok_or("path")?])
            .map_err(|e| format!("pushing {hw}: {}", e.trim()))?;
    }
    let name = row.id.clone();
    let created = cli(s, &["template", "create", "-n", &name, "-p", file_arg]);
    let invalid = row.expect == "invalid";
    if let Err(e) = created {
        return if invalid {
            if names_the_place(&e) {
                Ok(e.trim().to_string())
            } else {
                Err(format!("refused without naming the place: {}", e.trim()))
            }
        } else {
            Err(format!("template refused: {}", e.trim()))
        };
    }
    let (status, wf) = create_workflow(s, &name, &row.hardware_map);
    let outcome = if status == 201 {
        if invalid {
            Err("workflow created; Tinkerbell refuses it".to_string())
        } else {
            let failed = check(&wf, &row.checks);
            if failed.is_empty() {
                Ok(String::new())
            } else {
                Err(format!("checks failed: {}", failed.join("; ")))
            }
        }
    } else {
        let message = wf["message"].as_str().unwrap_or("").to_string();
        let field = wf["field"].as_str().unwrap_or("");
        if invalid {
            if names_the_place(&format!("{field} {message}")) {
                Ok(format!("{field}: {message}"))
            } else {
                Err(format!("refused without naming the place: {message}"))
            }
        } else {
            Err(format!("workflow refused ({status}): {message}"))
        }
    };
    if let Some(id) = wf["id"].as_str() {
        http("DELETE", &format!("{}/api/v1/workflows/{id}", s.url), None);
    }
    outcome
}

/// The environment lines of each action in `env/probe.yaml`, read as
/// text (not by a YAML parser): `KEY: value` on one line, quotes removed.
fn probe_expectations(probe: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut action = None::<String>;
    let mut env_indent = None::<usize>;
    for line in probe.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if let Some(name) = text.strip_prefix("- name: ") {
            action = Some(name.trim_matches('"').to_string());
            env_indent = None;
            continue;
        }
        if text == "environment:" {
            env_indent = Some(indent);
            continue;
        }
        let (Some(a), Some(ei)) = (&action, env_indent) else {
            continue;
        };
        if indent <= ei {
            env_indent = None;
            continue;
        }
        if text.starts_with('#') || indent != ei + 2 {
            continue;
        }
        let Some((key, value)) = text.split_once(':') else {
            continue;
        };
        let value = value.trim();
        // Block scalars and values with comments are not single scalars;
        // a template expression is rendered, not passed as written.
        if value.starts_with('|')
            || value.starts_with('>')
            || value.contains(" #")
            || value.contains("{{")
        {
            continue;
        }
        let value = if (value.starts_with('"') && value.ends_with('"') && value.len() >= 2)
            || (value.starts_with('\'') && value.ends_with('\'') && value.len() >= 2)
        {
            value[1..value.len() - 1].to_string()
        } else {
            value.to_string()
        };
        out.entry(a.clone())
            .or_default()
            .insert(key.trim().to_string(), value);
    }
    out
}

#[test]
fn tinkerbell_files_from_the_field_behave_as_in_tinkerbell() {
    let Some(root) = corpus() else {
        eprintln!(
            "\n*** compat: the Tinkerbell corpus was not found (set BELLOWS_COMPAT_DIR, or put \
             shared/tinkerbell-compat beside this repository); nothing was checked ***\n"
        );
        return;
    };
    let fixtures = root.join("fixtures");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let rows = manifest(&fixtures);
    assert!(rows.len() > 100, "the manifest has {} rows", rows.len());

    let mut by_section: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut refusals = Vec::new();
    let mut unexpected = Vec::new();
    let mut informational = Vec::new();
    let mut stale = Vec::new();
    for row in &rows {
        let result = run_row(&s, &fixtures, row);
        let counts = by_section.entry(section(row)).or_default();
        if row.expect != "n/a" {
            counts.1 += 1;
        }
        let listed = DIFFERENCES.iter().find(|(id, _)| *id == row.id);
        match (&result, row.expect.as_str(), listed) {
            (Ok(_), "n/a", _) => informational.push(format!("{}: taken, not claimed", row.id)),
            (Ok(note), _, None) => {
                counts.0 += 1;
                if row.expect == "invalid" {
                    refusals.push(format!("{}: {}", row.id, note.replace('\n', " ")));
                }
            }
            (Ok(_), _, Some(_)) => stale.push(row.id.clone()),
            (Err(e), "n/a", _) => informational.push(format!("{}: {e}", row.id)),
            (Err(_), _, Some((_, why))) => {
                informational.push(format!("{}: differs on purpose: {why}", row.id))
            }
            (Err(e), _, None) => unexpected.push(format!("{} ({}): {e}", row.id, row.file)),
        }
    }

    // Environment values reach the action as written (env/sources.tsv).
    let probe_path = fixtures.join("env/probe.yaml");
    let probe = std::fs::read_to_string(&probe_path).expect("env/probe.yaml");
    let expected = probe_expectations(&probe);
    let mut env_counts = (0, 0);
    let hw = fixtures.join("hardware/lab-val-machine.json");
    reset(&s);
    crate::harness::ok(&s.cli(&["hardware", "push", "-f", hw.to_str().unwrap()]));
    crate::harness::ok(&s.cli(&[
        "template",
        "create",
        "-n",
        "env-probe",
        "-p",
        probe_path.to_str().unwrap(),
    ]));
    let (status, wf) = create_workflow(&s, "env-probe", r#"{"device_1":"08:00:27:00:00:01"}"#);
    assert_eq!(status, 201, "env probe workflow: {wf}");
    let got: BTreeMap<String, BTreeMap<String, String>> =
        environments(wf["rendered"].as_str().unwrap_or(""))
            .into_iter()
            .collect();
    for (action, env) in &expected {
        for (key, want) in env {
            env_counts.1 += 1;
            let seen = got.get(action).and_then(|e| e.get(key));
            if seen == Some(want) {
                env_counts.0 += 1;
            } else {
                unexpected.push(format!(
                    "env {action}.{key}: Tinkerbell passes {want:?}, Bellows {seen:?}"
                ));
            }
        }
    }

    eprintln!("\nTinkerbell compatibility corpus ({})", root.display());
    eprintln!("{:<22} {:>6} {:>6}", "section", "pass", "rows");
    for (name, (pass, total)) in &by_section {
        eprintln!("{name:<22} {pass:>6} {total:>6}");
    }
    eprintln!(
        "{:<22} {:>6} {:>6}",
        "environment values", env_counts.0, env_counts.1
    );
    for line in &informational {
        eprintln!("  (not counted) {line}");
    }
    for line in &refusals {
        eprintln!(
            "  refused, as by Tinkerbell: {}",
            line.chars().take(240).collect::<String>()
        );
    }
    for line in &unexpected {
        eprintln!("  FAIL {line}");
    }
    assert!(env_counts.1 > 30, "the probe has {} values", env_counts.1);
    assert!(
        stale.is_empty(),
        "rows listed as deliberate differences now pass; remove them from DIFFERENCES: {stale:?}"
    );
    assert!(
        unexpected.is_empty(),
        "{} corpus rows differ from Tinkerbell (see the table above)",
        unexpected.len()
    );
}
