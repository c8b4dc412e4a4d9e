//! `cexec`: run commands inside the provisioned OS, before it first boots
//! (install a boot loader, add a user, enable a service).
//!
//! Environment, as Tinkerbell's `cexec` action reads it:
//!
//! - `BLOCK_DEVICE`: the partition holding the provisioned root filesystem
//!   (`/dev/sda3`); required.
//! - `FS_TYPE`: its filesystem type (`ext4`, `xfs`, …); required.
//! - `CHROOT`: any non-empty value runs the commands with that filesystem as
//!   their root (`chroot`), with `/dev`, `/proc` and `/sys` mounted in it.
//!   Empty or unset: they run in the in-memory OS, in the mounted
//!   filesystem's directory (relative paths name its files).
//! - `CMD_LINE`: the commands; required. Without an interpreter, split at
//!   `;` into commands and each at whitespace into its arguments (no
//!   quoting, no pipes: that is what an interpreter is for).
//! - `DEFAULT_INTERPRETER`: e.g. `/bin/sh -c`; split at whitespace, with
//!   `CMD_LINE` appended as one last argument.
//! - `UPDATE_RESOLV_CONF`: `true` (Go's boolean spellings) puts the in-memory
//!   OS's `/etc/resolv.conf` in place of the provisioned one while the
//!   commands run (so `apt-get` can resolve names), then puts the original
//!   back, symlink or file.
//!
//! The commands get the action's environment, a standard `PATH` and
//! `HOME=/root`, not the worker's own environment. They run in a process
//! group of their own: when the command ends, times out or is cancelled,
//! whatever it left running in that group is killed, so nothing keeps
//! writing to the disk after the action. Everything mounted is unmounted,
//! also on failure; a mount still busy (a daemon that left the process
//! group) is detached lazily and the log says so.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::writefile::{Mount, MountError};
use crate::runtime::{RunContext, RunResult, Stream};

/// `PATH` of the commands (the action's environment may override it).
const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where the provisioned `resolv.conf` waits while the worker's is in place.
const RESOLV_BACKUP: &str = "resolv.conf.bellows-backup";
/// How long output may still trickle in after a command's process ended.
const DRAIN: Duration = Duration::from_secs(2);

/// The action's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Partition to mount.
    pub device: String,
    /// Its filesystem type.
    pub fs_type: String,
    /// Run with the partition as root.
    pub chroot: bool,
    /// Interpreter and its arguments; empty for none.
    pub interpreter: Vec<String>,
    /// `CMD_LINE` as given.
    pub cmd_line: String,
    /// Swap in the worker's `resolv.conf` while the commands run.
    pub update_resolv_conf: bool,
}

impl Params {
    /// Reads the settings; errors name the variable at fault.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Params, String> {
        let required = |key: &str| {
            env.get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| format!("{key} is required"))
        };
        let device = required("BLOCK_DEVICE")?;
        let fs_type = required("FS_TYPE")?;
        let cmd_line = required("CMD_LINE")?;
        let interpreter: Vec<String> = env
            .get("DEFAULT_INTERPRETER")
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let update_resolv_conf = match env.get("UPDATE_RESOLV_CONF").map(|v| v.trim()) {
            None | Some("") => false,
            Some(v) => parse_bool(v)
                .ok_or_else(|| format!("UPDATE_RESOLV_CONF {v:?} is not true or false"))?,
        };
        let chroot = env.get("CHROOT").is_some_and(|v| !v.trim().is_empty());
        if update_resolv_conf && !chroot {
            return Err("UPDATE_RESOLV_CONF needs CHROOT: without it the commands \
                        already use the in-memory OS's resolv.conf"
                .into());
        }
        let params = Params {
            device,
            fs_type,
            chroot,
            interpreter,
            cmd_line,
            update_resolv_conf,
        };
        if params.commands().is_empty() {
            return Err(format!("CMD_LINE {:?} holds no command", params.cmd_line));
        }
        Ok(params)
    }

    /// The argument vectors to run, in order.
    pub fn commands(&self) -> Vec<Vec<String>> {
        if !self.interpreter.is_empty() {
            let mut argv = self.interpreter.clone();
            argv.push(self.cmd_line.clone());
            return vec![argv];
        }
        self.cmd_line
            .split(';')
            .map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter(|argv| !argv.is_empty())
            .collect()
    }
}

/// Go's `strconv.ParseBool` spellings, which Tinkerbell's action accepts.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Runs the action.
pub(crate) async fn run(env: &BTreeMap<String, String>, ctx: &RunContext) -> RunResult {
    let params = match Params::from_env(env) {
        Ok(params) => params,
        Err(message) => return RunResult::failed(message),
    };
    if ctx.cancel.is_cancelled() {
        return super::cancelled("cexec cancelled before it started");
    }
    let setup = params.clone();
    let prepared = match tokio::task::spawn_blocking(move || Prepared::new(&setup)).await {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(message)) => {
            ctx.logs.note(format!("cexec failed: {message}"));
            return RunResult::failed(message);
        }
        Err(e) => return RunResult::failed(format!("cexec set-up stopped: {e}")),
    };
    let root = prepared.root().to_path_buf();
    let result = run_commands(&params, &root, env, ctx).await;
    // Unmounting is quick, and runs to its end even if cancelled.
    match tokio::task::spawn_blocking(move || prepared.tear_down()).await {
        Ok(notes) => {
            for note in notes {
                ctx.logs.note(format!("cexec: {note}"));
            }
        }
        Err(e) => ctx.logs.note(format!("cexec: unmounting stopped: {e}")),
    }
    result
}

/// Runs the commands one after the other; the first failure ends the run.
async fn run_commands(
    params: &Params,
    root: &Path,
    env: &BTreeMap<String, String>,
    ctx: &RunContext,
) -> RunResult {
    let commands = params.commands();
    let count = commands.len();
    for (i, argv) in commands.iter().enumerate() {
        let shown = argv.join(" ");
        let which = if count > 1 {
            format!("command {}/{count} ({shown})", i + 1)
        } else {
            format!("command {shown:?}")
        };
        ctx.logs.note(format!("cexec: running {which}"));
        let mut command = if params.chroot {
            let mut c = tokio::process::Command::new("chroot");
            c.arg(root).args(argv);
            c
        } else {
            let mut c = tokio::process::Command::new(&argv[0]);
            c.args(&argv[1..]).current_dir(root);
            c
        };
        command
            .env_clear()
            .env("PATH", COMMAND_PATH)
            .env("HOME", "/root")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let status = match run_one(command, ctx).await {
            Ok(Some(status)) => status,
            Ok(None) => return super::cancelled(format!("cexec stopped during {which}")),
            Err(e) => {
                let message = format!("cexec could not start {which}: {e}");
                ctx.logs.note(&message);
                return RunResult::failed(message);
            }
        };
        if !status.success() {
            let how = match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => format!("was killed ({status})"),
            };
            let message = format!("cexec {which} {how}");
            ctx.logs.note(&message);
            return RunResult {
                exit_code: status.code().map(i64::from),
                ..RunResult::failed(message)
            };
        }
    }
    let what = if params.chroot {
        "in a chroot of"
    } else {
        "on"
    };
    RunResult::success(format!(
        "ran {count} command{} {what} {}",
        if count == 1 { "" } else { "s" },
        params.device
    ))
}

/// Runs one process to its end, its output into the log; `None` when
/// cancelled. Either way nothing of its process group is left running.
async fn run_one(
    mut command: tokio::process::Command,
    ctx: &RunContext,
) -> io::Result<Option<ExitStatus>> {
    let mut child = command.spawn()?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let stdout = child.stdout.take().map(|s| pump(s, Stream::Stdout, ctx));
    let stderr = child.stderr.take().map(|s| pump(s, Stream::Stderr, ctx));
    let status = tokio::select! {
        status = child.wait() => Some(status?),
        _ = ctx.cancel.cancelled() => None,
    };
    // What the command started in its group (and the command itself, when
    // cancelled) must not outlive the action.
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
    }
    if status.is_none() {
        // The command itself, should the group be gone or out of reach.
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    for pump in [stdout, stderr].into_iter().flatten() {
        if tokio::time::timeout(DRAIN, pump).await.is_err() {
            ctx.logs.note(
                "cexec: output still open after the command ended (a process outside its group?)",
            );
        }
    }
    Ok(status)
}

/// Copies lines of `reader` into the log until it closes.
fn pump(
    reader: impl AsyncRead + Unpin + Send + 'static,
    stream: Stream,
    ctx: &RunContext,
) -> tokio::task::JoinHandle<()> {
    let logs = ctx.logs.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => logs.line(stream, String::from_utf8_lossy(&line)),
            }
        }
    })
}

/// The partition mounted, and in chroot mode what the commands need in it.
struct Prepared {
    device: Option<Mount>,
    root: PathBuf,
    /// Mounted inside `root`, in mounting order.
    inner: Vec<PathBuf>,
    /// `etc` of the root, when `resolv.conf` was swapped, and whether there
    /// was an original to put back.
    resolv: Option<(PathBuf, bool)>,
}

impl Prepared {
    fn new(params: &Params) -> Result<Prepared, String> {
        let device =
            Mount::new(&params.device, &params.fs_type, MsFlags::empty()).map_err(|e| match e {
                MountError::MountPoint(e) => format!("cannot create a mount point: {e}"),
                MountError::Mount(errno) => format!(
                    "mounting BLOCK_DEVICE {} ({}) failed: {errno}",
                    params.device, params.fs_type
                ),
                MountError::Unmount { dir, errno } => format!("unmounting {dir}: {errno}"),
            })?;
        let mut prepared = Prepared {
            root: device.dir().to_path_buf(),
            device: Some(device),
            inner: Vec::new(),
            resolv: None,
        };
        if params.chroot {
            // Dropping `prepared` on an error unmounts what was mounted.
            for (dir, fs_type, flags) in [
                ("dev", "devtmpfs", MsFlags::MS_NOSUID),
                ("proc", "proc", MsFlags::MS_NOSUID | MsFlags::MS_NODEV),
                (
                    "sys",
                    "sysfs",
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
                ),
            ] {
                let target = real_dir(&prepared.root, dir, &params.device)?;
                nix::mount::mount(Some(fs_type), &target, Some(fs_type), flags, None::<&str>)
                    .map_err(|errno| {
                        format!("mounting {fs_type} on /{dir} of the chroot: {errno}")
                    })?;
                prepared.inner.push(target);
            }
            if params.update_resolv_conf {
                prepared.swap_resolv_conf(&params.device)?;
            }
        }
        Ok(prepared)
    }

    fn root(&self) -> &Path {
        &self.root
    }

    /// Puts an empty file where `etc/resolv.conf` was (the original, a file
    /// or a symlink, renamed aside: a symlink is never followed out of the
    /// root) and binds the worker's `/etc/resolv.conf` onto it.
    fn swap_resolv_conf(&mut self, device: &str) -> Result<(), String> {
        let etc = real_dir(&self.root, "etc", device)?;
        let resolv = etc.join("resolv.conf");
        let backup = etc.join(RESOLV_BACKUP);
        if backup.symlink_metadata().is_ok() {
            return Err(format!(
                "/etc/{RESOLV_BACKUP} already exists on {device}: an earlier cexec was interrupted; \
                 put it back as /etc/resolv.conf first"
            ));
        }
        let had_original = resolv.symlink_metadata().is_ok();
        if had_original {
            std::fs::rename(&resolv, &backup)
                .map_err(|e| format!("moving /etc/resolv.conf aside on {device}: {e}"))?;
        }
        // From here on, tear_down puts the original back.
        self.resolv = Some((etc, had_original));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&resolv)
            .map(|_: File| ())
            .map_err(|e| format!("creating /etc/resolv.conf on {device}: {e}"))?;
        nix::mount::mount(
            Some("/etc/resolv.conf"),
            &resolv,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|errno| {
            format!("binding this system's /etc/resolv.conf into the chroot: {errno}")
        })?;
        self.inner.push(resolv);
        Ok(())
    }

    /// Unmounts everything and restores `resolv.conf`; returns notes on what
    /// could not be done cleanly.
    fn tear_down(mut self) -> Vec<String> {
        self.undo()
    }

    fn undo(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        while let Some(target) = self.inner.pop() {
            if let Some(note) = unmount(&target) {
                notes.push(note);
            }
        }
        if let Some((etc, had_original)) = self.resolv.take() {
            let resolv = etc.join("resolv.conf");
            if let Err(e) = std::fs::remove_file(&resolv)
                && e.kind() != io::ErrorKind::NotFound
            {
                notes.push(format!("removing the borrowed /etc/resolv.conf: {e}"));
            }
            if had_original && let Err(e) = std::fs::rename(etc.join(RESOLV_BACKUP), &resolv) {
                notes.push(format!(
                    "putting /etc/resolv.conf back (it is /etc/{RESOLV_BACKUP}): {e}"
                ));
            }
        }
        if let Some(device) = self.device.take()
            && let Err(MountError::Unmount { dir, errno }) = device.unmount()
        {
            // Mount's own drop detaches it lazily.
            notes.push(format!(
                "the partition was busy ({errno}) and is detached lazily from {dir}"
            ));
        }
        notes
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let _ = self.undo();
    }
}

/// `root/name` when it is a directory itself, not a symlink (a mount on a
/// symlink would land wherever it points, outside the root).
fn real_dir(root: &Path, name: &str, device: &str) -> Result<PathBuf, String> {
    let path = root.join(name);
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => Err(format!(
            "/{name} on {device} is not a directory (a symlink?); cannot chroot into it"
        )),
        Err(e) => Err(format!(
            "/{name} on {device}: {e}; is it a root filesystem?"
        )),
    }
}

/// Unmounts `target`, lazily when busy; a note when not clean.
fn unmount(target: &Path) -> Option<String> {
    match nix::mount::umount(target) {
        Ok(()) => None,
        Err(errno) => match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => Some(format!(
                "{} was busy ({errno}); detached lazily",
                target.display()
            )),
            Err(e) => Some(format!("{} is still mounted: {e}", target.display())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::builtin::test_env as env;

    const BASE: [(&str, &str); 3] = [
        ("BLOCK_DEVICE", "/dev/sda3"),
        ("FS_TYPE", "ext4"),
        ("CMD_LINE", "grub-install --root-directory=/boot /dev/sda"),
    ];

    #[test]
    fn required_settings_are_named() {
        for missing in ["BLOCK_DEVICE", "FS_TYPE", "CMD_LINE"] {
            let pairs: Vec<_> = BASE
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let e = Params::from_env(&env(&pairs)).unwrap_err();
            assert_eq!(e, format!("{missing} is required"));
        }
        let e = Params::from_env(&env(&[
            ("BLOCK_DEVICE", "/dev/sda3"),
            ("FS_TYPE", "ext4"),
            ("CMD_LINE", " ; ;"),
        ]))
        .unwrap_err();
        assert!(e.contains("holds no command"), "{e}");
    }

    #[test]
    fn commands_split_like_tinkerbells_action() {
        let p = Params::from_env(&env(&BASE)).unwrap();
        assert!(!p.chroot && !p.update_resolv_conf);
        assert_eq!(
            p.commands(),
            [vec!["grub-install", "--root-directory=/boot", "/dev/sda"]]
        );
        let mut pairs = BASE.to_vec();
        pairs[2] = ("CMD_LINE", "apt-get -y update;  apt-get -y upgrade ;");
        pairs.push(("CHROOT", "y"));
        let p = Params::from_env(&env(&pairs)).unwrap();
        assert!(p.chroot);
        assert_eq!(
            p.commands(),
            [
                vec!["apt-get", "-y", "update"],
                vec!["apt-get", "-y", "upgrade"]
            ]
        );
        pairs.push(("DEFAULT_INTERPRETER", "/bin/sh  -c"));
        let p = Params::from_env(&env(&pairs)).unwrap();
        assert_eq!(
            p.commands(),
            [vec![
                "/bin/sh",
                "-c",
                "apt-get -y update;  apt-get -y upgrade ;"
            ]]
        );
    }

    #[test]
    fn resolv_conf_flag() {
        let mut pairs = BASE.to_vec();
        pairs.push(("CHROOT", "y"));
        for (value, expected) in [("true", true), ("1", true), ("False", false), ("", false)] {
            let mut p = pairs.clone();
            p.push(("UPDATE_RESOLV_CONF", value));
            assert_eq!(
                Params::from_env(&env(&p)).unwrap().update_resolv_conf,
                expected,
                "{value}"
            );
        }
        let mut p = pairs.clone();
        p.push(("UPDATE_RESOLV_CONF", "yes"));
        let e = Params::from_env(&env(&p)).unwrap_err();
        assert!(e.contains("UPDATE_RESOLV_CONF \"yes\""), "{e}");
        let mut p = BASE.to_vec();
        p.push(("UPDATE_RESOLV_CONF", "true"));
        let e = Params::from_env(&env(&p)).unwrap_err();
        assert!(e.contains("needs CHROOT"), "{e}");
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("yes"), None);
    }
}
