//! Helpers shared by the worker's root tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bellows_worker::runtime::ActionSpec;

/// A first-attempt action of `image` with environment `env`.
pub fn spec(image: &str, env: &[(&str, &str)]) -> ActionSpec {
    ActionSpec {
        workflow_id: "wf".into(),
        task: "task".into(),
        name: "action".into(),
        image: image.into(),
        environment: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        attempt: 1,
        max_attempts: 1,
        ..ActionSpec::default()
    }
}

/// A loop device over a temporary file, detached on drop.
pub struct Loop {
    pub device: String,
    _backing: tempfile::NamedTempFile,
}

impl Loop {
    pub fn new(bytes: u64) -> Option<Loop> {
        let backing = tempfile::NamedTempFile::new().unwrap();
        backing.as_file().set_len(bytes).unwrap();
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing.path())
            .output()
            .unwrap();
        if !output.status.success() {
            println!(
                "SKIPPED: losetup failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            return None;
        }
        Some(Loop {
            device: String::from_utf8(output.stdout).unwrap().trim().to_string(),
            _backing: backing,
        })
    }

    pub fn path(&self) -> &Path {
        Path::new(&self.device)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}
