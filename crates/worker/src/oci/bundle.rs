//! The OCI runtime configuration (`config.json`) of one action, without IO:
//! what Docker gives a Tinkerbell action — privileged (every capability,
//! the host's devices, `/sys` writable, no seccomp), the host's network,
//! its own mount, IPC and (unless `pid: host`) PID namespaces — with the
//! image's entrypoint, the action's command, the image's environment
//! overridden by the action's, and the task's then the action's volumes,
//! then the per-workflow directory.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::manifest::ImageConfig;
use crate::container::work_dir_targets;
use crate::runtime::ActionSpec;

/// Every capability a privileged container gets (Linux 6.1's list).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities in `mask` (bit N is capability N, as
/// `/proc/self/status` shows `CapBnd`): a privileged container gets every
/// one the worker itself may hold, as Docker gives it the daemon's.
pub fn capabilities_in(mask: u64) -> Vec<&'static str> {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The `CapBnd` mask in a `/proc/PID/status` text; every capability when
/// it cannot be read.
pub fn bounding_mask(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(u64::MAX)
}

/// `PATH` when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host files a container on the host's network sees, as Docker binds them.
pub const HOST_FILES: &[&str] = &["/etc/resolv.conf", "/etc/hosts"];

/// A volume as a template writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Host path.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Reads `host:container[:ro|rw]`; both paths absolute.
pub fn parse_volume(text: &str) -> Result<Volume, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        _ => {
            return Err(format!(
                "volume {text:?} is not HOST:CONTAINER or HOST:CONTAINER:ro"
            ));
        }
    };
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => {
            return Err(format!(
                "volume {text:?}: mode {other:?} is neither ro nor rw"
            ));
        }
    };
    for path in [source, target] {
        if !path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(format!(
                "volume {text:?}: {path:?} is not an absolute path without '..'"
            ));
        }
    }
    Ok(Volume {
        source: source.to_string(),
        target: target.to_string(),
        read_only,
    })
}

/// The process arguments: the image's entrypoint, then the action's
/// command, or the image's default command when the action gives none.
pub fn arguments(spec_command: &[String], image: &ImageConfig) -> Result<Vec<String>, String> {
    let mut args = image.entrypoint.clone();
    if spec_command.is_empty() {
        args.extend(image.cmd.iter().cloned());
    } else {
        args.extend(spec_command.iter().cloned());
    }
    if args.is_empty() {
        return Err("the image has no entrypoint or command and the action gives none".into());
    }
    Ok(args)
}

/// The image's environment, then the action's (same name: the action's
/// wins), with a `PATH` if neither sets one.
pub fn environment(image: &ImageConfig, action: &BTreeMap<String, String>) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| {
        if let Some(slot) = merged.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value.to_string();
        } else {
            merged.push((key.to_string(), value.to_string()));
        }
    };
    for entry in &image.env {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        set(k, v);
    }
    for (k, v) in action {
        set(k, v);
    }
    if !merged.iter().any(|(k, _)| k == "PATH") {
        merged.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    merged
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// The user id and group id for the image's `user` (`uid`, `uid:gid`, or
/// names looked up in the image's `/etc/passwd` and `/etc/group`).
pub fn user_ids(user: &str, passwd: &str, group: &str) -> Result<(u32, u32), String> {
    let user = user.trim();
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (name, grp) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = |file: &str, key: &str| -> Option<Vec<String>> {
        file.lines()
            .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
            .find(|f| f.first().map(String::as_str) == Some(key))
    };
    let (uid, default_gid) = match name.parse::<u32>() {
        Ok(uid) => (uid, uid_primary_gid(passwd, uid).unwrap_or(0)),
        Err(_) => {
            let fields = entry(passwd, name)
                .ok_or_else(|| format!("user {name:?} is not in the image's /etc/passwd"))?;
            let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
            match (num(2), num(3)) {
                (Some(u), Some(g)) => (u, g),
                _ => return Err(format!("user {name:?} has a malformed /etc/passwd line")),
            }
        }
    };
    let gid = match grp {
        None | Some("") => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entry(group, g)
                .and_then(|f| f.get(2).and_then(|x| x.parse().ok()))
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

fn uid_primary_gid(passwd: &str, uid: u32) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f.get(3)?.parse().ok())?
    })
}

/// What [`runtime_config`] needs besides the action.
#[derive(Debug, Clone)]
pub struct BundleInputs<'a> {
    /// The unpacked image.
    pub rootfs: &'a Path,
    /// The image's config.
    pub image: &'a ImageConfig,
    /// The per-workflow directory.
    pub work_dir: &'a Path,
    /// User and group ids to run as.
    pub ids: (u32, u32),
    /// Which of [`HOST_FILES`] exist on this machine.
    pub host_files: Vec<&'a str>,
    /// The capabilities to give ([`capabilities_in`]).
    pub capabilities: Vec<&'static str>,
}

/// The `config.json` for `spec`.
pub fn runtime_config(spec: &ActionSpec, inputs: &BundleInputs<'_>) -> Result<Value, String> {
    let args = arguments(&spec.command, inputs.image)?;
    let env = environment(inputs.image, &spec.environment);
    let cwd = if inputs.image.working_dir.is_empty() {
        "/".to_string()
    } else {
        inputs.image.working_dir.clone()
    };
    let bind = |source: &str, target: &str, read_only: bool| {
        let mut options = vec!["rbind", "rprivate"];
        options.push(if read_only { "ro" } else { "rw" });
        json!({"destination": target, "type": "bind", "source": source, "options": options})
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        bind("/dev", "/dev", false),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "rw"]}),
    ];
    for file in &inputs.host_files {
        mounts.push(bind(file, file, true));
    }
    for text in &spec.volumes {
        let v = parse_volume(text)?;
        mounts.push(bind(&v.source, &v.target, v.read_only));
    }
    let work = inputs
        .work_dir
        .to_str()
        .ok_or_else(|| format!("work directory {} is not UTF-8", inputs.work_dir.display()))?;
    for target in work_dir_targets(spec) {
        mounts.push(bind(work, target, false));
    }
    let mut namespaces = vec![json!({"type": "mount"}), json!({"type": "ipc"})];
    let host_pid = spec.pid.as_deref().map(str::trim) == Some("host");
    if !host_pid {
        namespaces.push(json!({"type": "pid"}));
    }
    let rootfs = inputs
        .rootfs
        .to_str()
        .ok_or_else(|| format!("root file system {} is not UTF-8", inputs.rootfs.display()))?;
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": inputs.ids.0, "gid": inputs.ids.1},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": inputs.capabilities,
                "effective": inputs.capabilities,
                "permitted": inputs.capabilities,
                "inheritable": inputs.capabilities,
                "ambient": inputs.capabilities,
            },
            "noNewPrivileges": false
        },
        "root": {"path": rootfs, "readonly": false},
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": [],
            "readonlyPaths": []
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo default".into()],
            ..ImageConfig::default()
        }
    }

    #[test]
    fn command_and_environment_as_docker_merges_them() {
        assert_eq!(
            arguments(&[], &image()).unwrap(),
            ["/bin/sh", "-c", "echo default"]
        );
        assert_eq!(
            arguments(&["echo mine".into()], &image()).unwrap(),
            ["/bin/sh", "-c", "echo mine"]
        );
        let e = arguments(&[], &ImageConfig::default()).unwrap_err();
        assert!(e.contains("no entrypoint or command"), "{e}");
        let action = BTreeMap::from([("MODE".to_string(), "action".to_string())]);
        assert_eq!(environment(&image(), &action), ["PATH=/bin", "MODE=action"]);
        assert_eq!(
            environment(&ImageConfig::default(), &BTreeMap::new()),
            [format!("PATH={DEFAULT_PATH}")]
        );
    }

    #[test]
    fn volumes_are_checked() {
        assert_eq!(
            parse_volume("/dev:/dev").unwrap(),
            Volume {
                source: "/dev".into(),
                target: "/dev".into(),
                read_only: false
            }
        );
        assert!(parse_volume("/a:/b:ro").unwrap().read_only);
        for bad in [
            "/a",
            "a:/b",
            "/a:b",
            "/a:/b:x",
            "/a/../etc:/b",
            "/a:/b:ro:z",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn capabilities_follow_the_bounding_set() {
        let status = "Name:\tx\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(capabilities_in(bounding_mask(status)).len(), 41);
        let status = "CapBnd:\t00000000a80425fb\n";
        let caps = capabilities_in(bounding_mask(status));
        assert!(caps.contains(&"CAP_CHOWN") && !caps.contains(&"CAP_SYS_ADMIN"));
        assert_eq!(bounding_mask("garbage"), u64::MAX);
    }

    #[test]
    fn users_by_number_or_name() {
        let passwd = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65533::/:/bin/false\n";
        let group = "root:x:0:\nadm:x:4:\n";
        assert_eq!(user_ids("", passwd, group).unwrap(), (0, 0));
        assert_eq!(user_ids("nobody", passwd, group).unwrap(), (65534, 65533));
        assert_eq!(user_ids("65534", passwd, group).unwrap(), (65534, 65533));
        assert_eq!(user_ids("1000:adm", passwd, group).unwrap(), (1000, 4));
        assert!(user_ids("ghost", passwd, group).is_err());
        assert!(user_ids("root:ghosts", passwd, group).is_err());
    }

    #[test]
    fn the_config_is_privileged_on_the_host_network_with_the_work_dir() {
        let mut spec = ActionSpec {
            command: vec!["true".into()],
            volumes: vec!["/dev:/dev".into(), "/srv:/workflow:ro".into()],
            ..ActionSpec::default()
        };
        let img = image();
        let inputs = BundleInputs {
            rootfs: Path::new("/state/c1/rootfs"),
            image: &img,
            work_dir: Path::new("/var/lib/bellows-worker/wf1"),
            ids: (0, 0),
            host_files: vec!["/etc/resolv.conf"],
            capabilities: capabilities_in(u64::MAX),
        };
        let c = runtime_config(&spec, &inputs).unwrap();
        let types: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["mount", "ipc", "pid"], "no network namespace");
        let targets: Vec<&str> = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            targets,
            [
                "/proc",
                "/dev",
                "/sys",
                "/etc/resolv.conf",
                "/dev",
                "/workflow",
                "/worker"
            ]
        );
        assert_eq!(c["mounts"][5]["options"][2], "ro");
        assert_eq!(
            c["process"]["capabilities"]["bounding"][21],
            "CAP_SYS_ADMIN"
        );
        spec.pid = Some("host".into());
        let c = runtime_config(&spec, &inputs).unwrap();
        assert_eq!(c["linux"]["namespaces"].as_array().unwrap().len(), 2);
        spec.volumes = vec!["relative:/x".into()];
        assert!(runtime_config(&spec, &inputs).is_err());
    }
}
