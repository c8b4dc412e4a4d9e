//! The one validation error shape every part of the model returns.

use std::fmt;

/// A problem with user input, tied to the field that caused it.
///
/// The API turns this into `{code, message, field}`; the CLI prints
/// `field: message`. Keeping the path separate lets callers highlight the
/// exact field without parsing the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// Dotted path to the offending field, e.g. `tasks[0].actions[2].image`.
    /// Empty when the document as a whole is wrong (e.g. not JSON at all).
    pub field: String,
    /// What is wrong and, where possible, what to do about it.
    pub message: String,
}

impl ValidationError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Joins a parent path and a child key the way error messages show them.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() || child.is_empty() || child.starts_with('[') {
        format!("{parent}{child}")
    } else {
        format!("{parent}.{child}")
    }
}

/// Appends a list index to a path: `tasks` + 2 → `tasks[2]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}
