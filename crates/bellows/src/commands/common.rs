//! What every noun's commands share: printing an answer in the chosen
//! format, and reading the operator's input files.

use std::io::Read;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::client::{Answer, Client};
use crate::error::CliError;
use crate::output::Format;
use crate::output::structured;

/// Prints `answer` as the server sent it for `-o json`/`-o yaml`; for a
/// table, reads it as its API type and hands it to `table`.
pub fn show<T: DeserializeOwned>(
    format: Format,
    answer: Answer<T>,
    table: impl FnOnce(T),
) -> Result<(), CliError> {
    if !structured(format, answer.raw())? {
        table(answer.decode()?);
    }
    Ok(())
}

/// Reads a file, or stdin for `-`.
pub fn read_input(path: &Path) -> Result<Vec<u8>, CliError> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

/// Reads a text file (or stdin for `-`) that must be UTF-8.
pub fn read_text(path: &Path) -> Result<String, CliError> {
    String::from_utf8(read_input(path)?)
        .map_err(|_| CliError::Usage(format!("{} is not UTF-8 text", path.display())))
}

/// The server's view of where its boot services are, for the commands
/// that write configuration for other programs.
pub async fn boot_info(c: &Client) -> Result<bellows_model::api::BootInfo, CliError> {
    c.get("/api/v1/boot").await?.decode()
}

/// The hardware records in a file, each as the JSON body of one push: a
/// JSON object or array as it is (the server reads every shape), or YAML
/// with one or more `---` documents, each a record or a `kubectl`-style
/// `Hardware` resource, or a `…List` with `items` (a rack in one file).
/// Empty documents are skipped; a document of another `kind` is an error
/// naming it, rather than a record pushed by mistake.
pub fn hardware_documents(bytes: &[u8]) -> Result<Vec<Vec<u8>>, CliError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| CliError::Usage("the hardware file is not UTF-8 text".into()))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return Ok(vec![bytes.to_vec()]);
    }
    if trimmed.starts_with('[') {
        let items: Vec<serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| CliError::Usage(format!("the hardware file is not valid JSON: {e}")))?;
        return items.iter().map(to_body).collect();
    }
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|e| {
        CliError::Usage(format!("the hardware file is not valid JSON or YAML: {e}"))
    })?;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        match (&doc, kind) {
            (serde_json::Value::Null, _) => {}
            (_, k) if k.ends_with("List") => match doc.get("items") {
                Some(serde_json::Value::Array(items)) => {
                    for item in items {
                        out.push(to_body(item)?);
                    }
                }
                _ => {
                    return Err(CliError::Usage(format!(
                        "document {}: a {k} needs an `items` list",
                        i + 1
                    )));
                }
            },
            (_, "" | "Hardware") => out.push(to_body(&doc)?),
            (_, other) => {
                return Err(CliError::Usage(format!(
                    "document {}: kind {other:?} is not hardware (push templates with `bellows template create`)",
                    i + 1
                )));
            }
        }
    }
    if out.is_empty() {
        return Err(CliError::Usage("the hardware file holds no record".into()));
    }
    Ok(out)
}

fn to_body(doc: &serde_json::Value) -> Result<Vec<u8>, CliError> {
    serde_json::to_vec(doc).map_err(|e| CliError::Usage(format!("cannot encode the record: {e}")))
}

/// A whole `kubectl`-style `Template` resource (`kind: Template`, the
/// template in `spec.data`): its name and template text. None for a plain
/// template file, which is sent as it is written.
pub fn template_resource(text: &str) -> Option<(Option<String>, String)> {
    let doc: serde_json::Value = serde_saphyr::from_str(text).ok()?;
    if doc.get("kind")?.as_str()? != "Template" {
        return None;
    }
    let data = doc.get("spec")?.get("data")?.as_str()?.to_string();
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    Some((name, data))
}
