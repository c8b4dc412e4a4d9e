//! The action contract every container runtime keeps, so an action image
//! behaves the same under Docker ([`crate::docker`]) and under the
//! in-memory OS's own runtime ([`crate::oci`]): where the per-workflow
//! directory appears, when images are pulled, and registry credentials.

use std::fmt;

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
    fn a_template_volume_takes_the_work_dir_target() {
        let mut spec = ActionSpec::default();
        assert_eq!(work_dir_targets(&spec), ["/worker", "/workflow"]);
        spec.volumes = vec!["/data:/workflow/".into(), "/dev:/dev".into()];
        assert_eq!(work_dir_targets(&spec), ["/worker"]);
    }
}
