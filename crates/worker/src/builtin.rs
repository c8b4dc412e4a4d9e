//! Built-in actions, for machines with no container runtime.
//!
//! The in-memory OS the worker runs in has no container engine, so the
//! actions most workflows need run here instead, as Rust code (`cexec` and
//! `archive2disk` also use the system's `chroot` and `tar`):
//!
//! | built-in | does | module |
//! |---|---|---|
//! | `image2disk` | streams a (gzip/xz/zstd) disk image from HTTP(S) onto a disk | [`image2disk`] |
//! | `writefile` | writes one file onto a partition's filesystem | [`writefile`] |
//! | `reboot` | reboots or powers off after the report is acknowledged | [`reboot`] |
//! | `kexec` | loads a partition's kernel; kexecs into it after the report is acknowledged | [`kexec`] |
//! | `cexec` | runs commands in a chroot of the provisioned OS | [`cexec`] |
//! | `archive2disk` | unpacks a (gzip/xz/zstd) tar archive from HTTP(S) onto a partition | [`archive2disk`] |
//! | `oci2disk` | streams a (compressed) disk image stored in a registry onto a disk | [`oci2disk`] |
//! | `qemuimg2disk` | converts a qcow2 image from HTTP(S) to raw onto a disk, by ranges | [`qemuimg2disk`] |
//! | `rootio` | partitions, formats or mounts disks from the machine's storage layout | [`rootio`] |
//!
//! Each takes the same environment variables as the Tinkerbell action of the
//! same name (see its module), so templates written for Tinkerbell run
//! unchanged.
//!
//! # Which images are built-ins
//!
//! [`builtin_for`] maps an action's `image` to a built-in by name alone:
//!
//! - `bellows/<name>` (also `docker.io/bellows/<name>`): always;
//! - Tinkerbell's published action images: `quay.io/tinkerbell-actions/<name>`,
//!   `quay.io/tinkerbell/actions/<name>`, `ghcr.io/tinkerbell/actions/<name>`
//!   and `public.ecr.aws/tinkerbell/actions/<name>`;
//!
//! where `<name>` is `image2disk`, `writefile`, `reboot`, `kexec`, `cexec`,
//! `archive2disk`, `oci2disk`, `qemuimg2disk` or `rootio`, with any tag or digest, in any case. A bare
//! `image2disk` is not a built-in (it names somebody's Docker Hub image), nor
//! is any other registry, path or name (`grub2disk`, … run in a container
//! runtime).

pub mod archive2disk;
pub mod cexec;
mod choose_codec;
pub mod gpt;
pub mod image2disk;
pub mod kexec;
mod names;
pub mod oci2disk;
pub mod qcow2;
pub mod qemuimg2disk;
pub mod reboot;
pub mod rootio;
pub mod writefile;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

pub use bellows_compression::Codec;
pub use choose_codec::CodecError;
pub use names::{Builtin, builtin_for};

use crate::runtime::{ActionSpec, AfterSuccess, RunContext, RunOutcome, RunResult, Runtime};

/// Settings of the built-in runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinOptions {
    /// Registries `oci2disk` pulls from (credentials, plain-HTTP hosts).
    pub registry: crate::oci::registry::RegistryOptions,
    /// The boot servers' plain-HTTP base URLs (one, or the replicas
    /// sharing a database, in order), where `rootio` reads the machine's
    /// storage layout when `MIRROR_HOST` is not set: the first that
    /// accepts a connection is asked.
    pub metadata_servers: Vec<String>,
    /// Time allowed to connect to an image server.
    pub http_connect_timeout: Duration,
    /// Time allowed without receiving a byte of a response. There is no
    /// limit on a whole download (images are large); the action's own
    /// timeout bounds it.
    pub http_read_timeout: Duration,
}

impl Default for BuiltinOptions {
    fn default() -> Self {
        BuiltinOptions {
            registry: crate::oci::registry::RegistryOptions::default(),
            metadata_servers: Vec::new(),
            http_connect_timeout: Duration::from_secs(30),
            http_read_timeout: Duration::from_secs(60),
        }
    }
}

/// Runs the built-in actions (see the module documentation for which
/// images those are).
pub struct BuiltinRuntime {
    options: BuiltinOptions,
    /// Made on first use, so that building the runtime cannot fail and a TLS
    /// set-up problem fails only the actions that download.
    client: OnceLock<Result<reqwest::Client, String>>,
    /// The same, for oci2disk's registry.
    registry: OnceLock<Result<crate::oci::registry::RegistryClient, String>>,
}

impl BuiltinRuntime {
    /// A runtime with these options.
    pub fn new(options: BuiltinOptions) -> BuiltinRuntime {
        BuiltinRuntime {
            options,
            client: OnceLock::new(),
            registry: OnceLock::new(),
        }
    }

    fn registry(&self) -> Result<&crate::oci::registry::RegistryClient, String> {
        self.registry
            .get_or_init(|| {
                crate::oci::registry::RegistryClient::new(self.options.registry.clone())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| http_client(&self.options))
            .as_ref()
            .map_err(Clone::clone)
    }
}

#[async_trait]
impl Runtime for BuiltinRuntime {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn handles(&self, image: &str) -> bool {
        builtin_for(image).is_some()
    }

    async fn run(&self, spec: &ActionSpec, ctx: &RunContext) -> RunResult {
        let Some(builtin) = builtin_for(&spec.image) else {
            return RunResult::failed(format!(
                "{:?} is not a built-in action (built-ins: image2disk, writefile, reboot, kexec, cexec, archive2disk, oci2disk, qemuimg2disk, rootio)",
                spec.image
            ));
        };
        if ctx.cancel.is_cancelled() {
            return cancelled(format!("{builtin} cancelled before it started"));
        }
        if !spec.command.is_empty() && builtin != Builtin::RootIo {
            ctx.logs.note(format!(
                "{builtin} is built in: its command {:?} is ignored",
                spec.command
            ));
        }
        let env = &spec.environment;
        match builtin {
            Builtin::Image2Disk => image2disk::run(self.client(), env, ctx).await,
            Builtin::WriteFile => writefile::run(env, ctx).await,
            Builtin::Reboot => reboot::run(env),
            Builtin::Kexec => kexec::run(env, ctx).await,
            Builtin::Cexec => cexec::run(env, ctx).await,
            Builtin::Archive2Disk => archive2disk::run(self.client(), env, ctx).await,
            Builtin::Oci2Disk => oci2disk::run(self.registry(), env, ctx).await,
            Builtin::QemuImg2Disk => qemuimg2disk::run(self.client(), env, ctx).await,
            Builtin::RootIo => {
                let server = first_reachable(&self.options.metadata_servers).await;
                rootio::run(self.client(), server, &spec.command, env, ctx).await
            }
        }
    }

    fn learn_registry_logins(&self, logins: &[(String, crate::container::RegistryCredentials)]) {
        if let Ok(registry) = self.registry() {
            registry.learn(logins);
        }
    }
}

/// The result of a run stopped by `ctx.cancel`.
fn cancelled(message: impl Into<String>) -> RunResult {
    RunResult {
        outcome: RunOutcome::Cancelled,
        exit_code: None,
        message: message.into(),
        after: AfterSuccess::Continue,
    }
}

/// The HTTP client for image downloads.
fn http_client(options: &BuiltinOptions) -> Result<reqwest::Client, String> {
    https_client(options.http_connect_timeout, options.http_read_timeout)
}

/// An HTTP client on rustls with `ring`, verifying servers against the
/// system's trust store (as `crates/bmc` does): image downloads, registries.
pub(crate) fn https_client(
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .user_agent(concat!("bellows-worker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client set-up: {}", error_chain(&e)))
}

/// An error and its sources, "outer: inner: root", without repeats.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// An action environment from pairs, for the built-ins' unit tests.
#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The first of `urls` (`http://HOST:PORT…`) whose host accepts a TCP
/// connection within two seconds, else the first (whose error then names
/// the problem).
async fn first_reachable(urls: &[String]) -> Option<&str> {
    for url in urls {
        let authority = url
            .split_once("://")
            .map_or(url.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        let connect = tokio::net::TcpStream::connect(authority);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
            return Some(url);
        }
    }
    urls.first().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::LogSink;
    use std::collections::BTreeMap;
    use tokio_util::sync::CancellationToken;

    fn ctx() -> RunContext {
        RunContext {
            work_dir: std::env::temp_dir(),
            logs: LogSink::detached(),
            cancel: CancellationToken::new(),
        }
    }

    #[test]
    fn handles_only_builtins() {
        let runtime = BuiltinRuntime::new(BuiltinOptions::default());
        assert_eq!(runtime.name(), "builtin");
        assert!(runtime.handles("quay.io/tinkerbell/actions/image2disk:latest"));
        assert!(runtime.handles("bellows/reboot"));
        assert!(!runtime.handles("hello-world"));
        assert!(runtime.handles("quay.io/tinkerbell/actions/kexec:latest"));
        assert!(runtime.handles("quay.io/tinkerbell/actions/cexec:latest"));
        assert!(runtime.handles("quay.io/tinkerbell/actions/oci2disk:latest"));
        assert!(!runtime.handles("quay.io/tinkerbell/actions/grub2disk:latest"));
    }

    #[tokio::test]
    async fn reboot_through_the_runtime() {
        let runtime = BuiltinRuntime::new(BuiltinOptions::default());
        let spec = ActionSpec {
            image: "ghcr.io/tinkerbell/actions/reboot:v1".into(),
            environment: BTreeMap::from([("ACTION".into(), "poweroff".into())]),
            ..ActionSpec::default()
        };
        let result = runtime.run(&spec, &ctx()).await;
        assert_eq!(result.outcome, RunOutcome::Success);
        assert_eq!(result.after, AfterSuccess::PowerOff);
    }

    #[tokio::test]
    async fn unknown_image_and_early_cancel() {
        let runtime = BuiltinRuntime::new(BuiltinOptions::default());
        let spec = ActionSpec {
            image: "alpine".into(),
            ..ActionSpec::default()
        };
        let result = runtime.run(&spec, &ctx()).await;
        assert_eq!(result.outcome, RunOutcome::Failed);
        assert!(result.message.contains("not a built-in"));

        let ctx = ctx();
        ctx.cancel.cancel();
        let spec = ActionSpec {
            image: "bellows/reboot".into(),
            ..ActionSpec::default()
        };
        assert_eq!(
            runtime.run(&spec, &ctx).await.outcome,
            RunOutcome::Cancelled
        );
    }

    #[test]
    fn error_chains_skip_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("request failed: {0}")]
        struct Outer(#[source] std::io::Error);
        let outer = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&outer), "request failed: connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("request failed")]
        struct Terse(#[source] std::io::Error);
        let terse = Terse(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&terse), "request failed: connection refused");
    }
}
