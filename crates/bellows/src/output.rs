//! Printing results: aligned tables for people, JSON/YAML for scripts.

use clap::ValueEnum;
use serde_json::Value;

use crate::error::CliError;

/// How client commands print results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON, as the API returns it.
    Json,
    /// YAML, as the API returns it.
    Yaml,
}

/// Prints `value` as JSON or YAML; returns false when the caller should
/// print its table instead.
pub fn structured(format: Format, value: &Value) -> Result<bool, CliError> {
    match format {
        Format::Table => Ok(false),
        Format::Json => {
            let text = serde_json::to_string_pretty(value)
                .map_err(|e| CliError::Usage(format!("cannot print JSON: {e}")))?;
            println!("{text}");
            Ok(true)
        }
        Format::Yaml => {
            let text = serde_saphyr::to_string(value)
                .map_err(|e| CliError::Usage(format!("cannot print YAML: {e}")))?;
            print!("{text}");
            Ok(true)
        }
    }
}

/// Left-aligned columns separated by two spaces, like `kubectl get`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Milliseconds as a short duration: `850ms`, `12.3s`, `4m05s`.
pub fn duration(ms: Option<i64>) -> String {
    match ms {
        None => String::new(),
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "a".into()],
                vec!["12345".into(), "b".into()],
            ],
        );
        assert_eq!(t, "ID     NAME\n1      a\n12345  b\n");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Some(850)), "850ms");
        assert_eq!(duration(Some(12_345)), "12.3s");
        assert_eq!(duration(Some(245_000)), "4m05s");
        assert_eq!(duration(None), "");
    }
}
