//! `bellows store copy`: moves a site's state between stores (the way up
//! from the embedded SQLite to PostgreSQL for several servers). Runs
//! beside the databases, not through the API: it reads and writes the
//! stores themselves, and checks the copy row by row.

use std::path::PathBuf;

use bellows_store::{PoolSettings, STORE_URL_SCHEMES, SecretKey, SqlStore, redact_url};
use clap::{Args, Subcommand};

use crate::error::CliError;

/// `bellows store …`
#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// Copy everything (hardware, templates, workflows with their events
    /// and logs, BMC records with their sealed passwords, tokens) into a
    /// new, empty store, then read both back and compare every table.
    /// Stop the server first, or copy its snapshot as of the start.
    Copy(CopyArgs),
}

/// `bellows store copy` flags.
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The store to read: `sqlite:DATA_DIR` (a server's data directory) or
    /// a PostgreSQL URL.
    #[arg(long)]
    pub from: String,
    /// The store to fill: a PostgreSQL URL (or `sqlite:DATA_DIR`); it must
    /// hold no hardware, templates, workflows or tokens.
    #[arg(long)]
    pub to: String,
    /// The secret key the BMC passwords are sealed with; the servers on
    /// the new store must use this same file [default:
    /// DATA_DIR/secret.key of a `sqlite:` source].
    #[arg(long)]
    pub secret_key_file: Option<PathBuf>,
}

/// Where a store is, as given on the command line.
enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

fn parse(text: &str, flag: &str) -> Result<Location, CliError> {
    if let Some(dir) = text.strip_prefix("sqlite:") {
        return Ok(Location::Sqlite(PathBuf::from(dir)));
    }
    if STORE_URL_SCHEMES.iter().any(|s| text.starts_with(s)) {
        return Ok(Location::Postgres(text.to_string()));
    }
    Err(CliError::Usage(format!(
        "--{flag}: {:?} is neither sqlite:DATA_DIR nor postgres://…",
        redact_url(text)
    )))
}

fn shown(location: &Location) -> String {
    match location {
        Location::Sqlite(dir) => format!("sqlite:{}", dir.display()),
        Location::Postgres(url) => redact_url(url),
    }
}

async fn open(location: &Location, key: SecretKey) -> Result<SqlStore, CliError> {
    let opened = match location {
        Location::Sqlite(dir) => {
            if !dir.join(bellows_store::DB_FILE).is_file() {
                return Err(CliError::Usage(format!(
                    "no database at {}",
                    dir.join(bellows_store::DB_FILE).display()
                )));
            }
            SqlStore::open_sqlite(dir, key).await
        }
        Location::Postgres(url) => {
            SqlStore::open_postgres(url, key, &PoolSettings::default()).await
        }
    };
    opened.map_err(|e| CliError::Server(format!("cannot open {}: {e}", shown(location))))
}

/// Runs `bellows store …`.
pub async fn run(cmd: StoreCmd) -> Result<(), CliError> {
    let StoreCmd::Copy(args) = cmd;
    let from = parse(&args.from, "from")?;
    let to = parse(&args.to, "to")?;
    let key_file = match (&args.secret_key_file, &from) {
        (Some(file), _) => file.clone(),
        (None, Location::Sqlite(dir)) => dir.join("secret.key"),
        (None, Location::Postgres(_)) => {
            return Err(CliError::Usage(
                "--secret-key-file: give the key the source's BMC passwords are sealed with".into(),
            ));
        }
    };
    if !key_file.is_file() {
        return Err(CliError::Usage(format!(
            "no secret key at {}: give --secret-key-file",
            key_file.display()
        )));
    }
    // Read once per store (a key is not copied in memory).
    let key = || {
        SecretKey::load_or_create(&key_file)
            .map(|(key, _)| key)
            .map_err(|e| CliError::Usage(format!("{}: {e}", key_file.display())))
    };
    let source = open(&from, key()?).await?;
    let target = open(&to, key()?).await?;
    let report = source
        .copy_into(&target)
        .await
        .map_err(|e| CliError::Server(format!("copy to {} failed: {e}", shown(&to))))?;
    source.close().await;
    target.close().await;
    for (table, rows) in &report.tables {
        println!("{table:<18} {rows:>9} rows copied and compared");
    }
    println!(
        "copied {} to {}: every table reads back the same. Start the servers with \
         --store {} --secret-key-file {}",
        shown(&from),
        shown(&to),
        shown(&to),
        key_file.display()
    );
    Ok(())
}
