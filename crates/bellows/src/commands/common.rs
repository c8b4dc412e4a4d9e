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
