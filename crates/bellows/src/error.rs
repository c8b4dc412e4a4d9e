//! The one error type every subcommand returns; `main` prints it as
//! `error: …` and picks the exit code.

/// Everything a command can fail with, printed as `error: …`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server refused the request.
    #[error("{}{message} (HTTP {status})", field.as_deref().map(|f| if message.starts_with(f) { String::new() } else { format!("{f}: ") }).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// Server's message.
        message: String,
        /// Field at fault.
        field: Option<String>,
    },
    /// The server answered in a shape this CLI does not know.
    #[error("unexpected answer from the server to {path}: {error}")]
    Unexpected {
        /// The request's path.
        path: String,
        /// What did not fit.
        error: String,
    },
    /// No server to talk to.
    #[error("{0}")]
    Connect(String),
    /// Bad arguments or local input.
    #[error("{0}")]
    Usage(String),
    /// The server could not start or run.
    #[error("{0}")]
    Server(String),
    /// A local file could not be written.
    #[error("{0}")]
    Io(String),
}
