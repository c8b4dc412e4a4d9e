//! The action contract every container runtime keeps, so an action image
//! behaves the same under Docker ([`crate::docker`]) and under the
//! in-memory OS's own runtime ([`crate::oci`]): where the per-workflow
//! directory appears, when images are pulled, and registry credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::RwLock;

use crate::reference::registry_key;
use crate::runtime::ActionSpec;

/// Where the per-workflow directory appears in every action container.
pub const WORK_DIR_TARGET: &str = "/worker";

/// The same directory where tink-worker mounts it, for Tinkerbell actions
/// that read or write `/workflow`.
pub const TINKERBELL_WORK_DIR_TARGET: &str = "/workflow";

/// When to pull an action's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull only when the engine does not have the image (under its own name
    /// or the mirror's): fast, and works offline once images are loaded.
    #[default]
    IfNotPresent,
    /// Pull before every run, to pick up a moved tag.
    Always,
    /// Never pull: the image must be loaded already (air-gapped machines).
    Never,
}

/// A username and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// Registry user name.
    pub username: String,
    /// Registry password or token.
    pub password: String,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Registry credentials by host: the worker's own (flags), and those the
/// server handed it (its hello); the worker's own win for the same host.
#[derive(Debug, Default)]
pub struct Credentials {
    local: BTreeMap<String, RegistryCredentials>,
    learned: RwLock<BTreeMap<String, RegistryCredentials>>,
}

impl Credentials {
    /// The worker's own, keyed by any spelling of the host.
    pub fn new(local: BTreeMap<String, RegistryCredentials>) -> Credentials {
        Credentials {
            local: local
                .into_iter()
                .map(|(k, v)| (registry_key(&k), v))
                .collect(),
            learned: RwLock::new(BTreeMap::new()),
        }
    }

    /// Replaces what the server gave.
    pub fn learn(&self, logins: &[(String, RegistryCredentials)]) {
        if let Ok(mut learned) = self.learned.write() {
            *learned = logins
                .iter()
                .map(|(host, c)| (registry_key(host), c.clone()))
                .collect();
        }
    }

    /// The credentials for `host` (normalised as [`registry_key`] does).
    pub fn get(&self, host: &str) -> Option<RegistryCredentials> {
        let key = registry_key(host);
        self.local
            .get(&key)
            .cloned()
            .or_else(|| self.learned.read().ok().and_then(|l| l.get(&key).cloned()))
    }

    /// Hosts with credentials, for logs.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.local.keys().cloned().collect();
        if let Ok(l) = self.learned.read() {
            hosts.extend(l.keys().cloned());
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// The result for a container that exited with `code`.
pub(crate) fn exited(code: i64) -> crate::runtime::RunResult {
    use crate::runtime::{AfterSuccess, RunOutcome, RunResult};
    let message = format!("container exited with status {code}");
    if code == 0 {
        RunResult::success(message)
    } else {
        RunResult {
            outcome: RunOutcome::Failed,
            exit_code: Some(code),
            message,
            after: AfterSuccess::Continue,
        }
    }
}

/// The targets the per-workflow directory is mounted at for `spec`:
/// [`WORK_DIR_TARGET`] and [`TINKERBELL_WORK_DIR_TARGET`], less any the
/// template binds itself (its own volume wins).
pub fn work_dir_targets(spec: &ActionSpec) -> Vec<&'static str> {
    let taken: Vec<&str> = spec
        .volumes
        .iter()
        .filter_map(|v| v.split(':').nth(1))
        .map(|t| t.trim_end_matches('/'))
        .collect();
    [WORK_DIR_TARGET, TINKERBELL_WORK_DIR_TARGET]
        .into_iter()
        .filter(|target| !taken.contains(target))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workers_own_credentials_win() {
        let mine = |u: &str| RegistryCredentials {
            username: u.into(),
            password: "p".into(),
        };
        let c = Credentials::new(BTreeMap::from([(
            "https://Quay.io/".to_string(),
            mine("local"),
        )]));
        c.learn(&[
            ("quay.io".into(), mine("server")),
            ("index.docker.io".into(), mine("hub")),
        ]);
        assert_eq!(c.get("quay.io").unwrap().username, "local");
        assert_eq!(c.get("docker.io").unwrap().username, "hub");
        assert!(c.get("ghcr.io").is_none());
        assert_eq!(c.hosts(), ["docker.io", "quay.io"]);
    }

    #[test]
    fn a_template_volume_takes_the_work_dir_target() {
        let mut spec = ActionSpec::default();
        assert_eq!(work_dir_targets(&spec), ["/worker", "/workflow"]);
        spec.volumes = vec!["/data:/workflow/".into(), "/dev:/dev".into()];
        assert_eq!(work_dir_targets(&spec), ["/worker"]);
    }
}
