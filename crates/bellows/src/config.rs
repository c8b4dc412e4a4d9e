//! `bellows server` configuration: defaults, TOML file, environment, flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use bellows_metadata::Cidr;

use crate::cli::{DEFAULT_HTTP_LISTEN, DEFAULT_LISTEN, ServerArgs};

/// Keys accepted in the TOML file. Unknown keys are an error, so a typo
/// does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    metadata_listen: Option<Vec<SocketAddr>>,
    trusted_proxies: Option<Vec<String>>,
    log: Option<String>,
}

/// The resolved server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// API address.
    pub listen: SocketAddr,
    /// HTTP boot service address.
    pub http_listen: SocketAddr,
    /// Extra metadata-only addresses.
    pub metadata_listen: Vec<SocketAddr>,
    /// Trusted proxies for X-Forwarded-For.
    pub trusted_proxies: Vec<Cidr>,
    /// Log filter.
    pub log: String,
}

/// Why the configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// A value is malformed.
    #[error("{0}")]
    Value(String),
    /// The file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// Parser message, naming the key.
        message: String,
    },
}

/// Flags and environment (already merged by clap) over the file over defaults.
pub fn resolve(args: &ServerArgs) -> Result<ServerConfig, ConfigError> {
    let file = match &args.config {
        Some(path) => load(path)?,
        None => File::default(),
    };
    let default = |s: &str| -> SocketAddr {
        s.parse()
            .unwrap_or_else(|e| unreachable!("default address {s} parses: {e}"))
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| default(DEFAULT_LISTEN));
    let http_listen = args
        .http_listen
        .or(file.http_listen)
        .unwrap_or_else(|| default(DEFAULT_HTTP_LISTEN));
    let metadata_listen = if args.metadata_listen.is_empty() {
        file.metadata_listen.unwrap_or_default()
    } else {
        args.metadata_listen.clone()
    };
    let proxies = if args.trusted_proxies.is_empty() {
        file.trusted_proxies.unwrap_or_default()
    } else {
        args.trusted_proxies.clone()
    };
    let trusted_proxies = proxies
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.parse::<Cidr>()
                .map_err(|e| ConfigError::Value(format!("trusted_proxies: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ServerConfig {
        data_dir: args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("bellows-data")),
        listen,
        http_listen,
        metadata_listen,
        trusted_proxies,
        log: args
            .log
            .clone()
            .or(file.log)
            .unwrap_or_else(|| "info".to_string()),
    })
}

fn load(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_flags() {
        let cfg = resolve(&ServerArgs::default()).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("bellows-data"));
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            "data_dir = \"/srv/bellows\"\nlisten = \"0.0.0.0:9000\"\n",
        )
        .unwrap();
        let mut args = ServerArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let cfg = resolve(&args).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/bellows"));
        assert_eq!(cfg.listen.to_string(), "0.0.0.0:9000");

        args.listen = Some("127.0.0.1:1".parse().unwrap());
        assert_eq!(resolve(&args).unwrap().listen.to_string(), "127.0.0.1:1");

        args.trusted_proxies = vec!["10.0.0.0/33".into()];
        let e = resolve(&args).unwrap_err().to_string();
        assert!(
            e.contains("trusted_proxies") && e.contains("10.0.0.0/33"),
            "{e}"
        );
        args.trusted_proxies.clear();

        std::fs::write(&path, "data-dir = \"x\"\n").unwrap();
        let e = resolve(&args).unwrap_err().to_string();
        assert!(e.contains("data-dir"), "{e}");
    }
}
