//! `kexec`: boot the provisioned OS's kernel straight from the in-memory OS,
//! without going through the firmware again.
//!
//! Environment, as Tinkerbell's `kexec` action reads it:
//!
//! - `BLOCK_DEVICE`: the partition holding the kernel (`/dev/sda3`).
//! - `FS_TYPE`: its filesystem type (`ext4`, `xfs`, `vfat`, …).
//! - `KERNEL_PATH`: absolute path of the kernel inside that filesystem
//!   (`/boot/vmlinuz`).
//! - `INITRD_PATH`: absolute path of the initrd inside it; optional (the
//!   kernel is then loaded without one).
//! - `CMD_LINE`: the new kernel's command line (`root=/dev/sda3 ro`);
//!   optional.
//!
//! Not supported: Tinkerbell's fallback of reading the kernel, initrd and
//! command line from `grub.cfg` when `KERNEL_PATH` is unset (and so
//! `GRUBCFG_PATH`); `KERNEL_PATH` unset fails the action instead.
//!
//! The action only *loads* the kernel: the filesystem is mounted read-only
//! on a fresh directory, the kernel and initrd are opened with
//! `openat2(RESOLVE_IN_ROOT)` (so symlinks such as an absolute
//! `/boot/vmlinuz` resolve inside that filesystem), handed to
//! `kexec_file_load(2)`, and the filesystem is unmounted again. The action
//! then succeeds with [`AfterSuccess::Kexec`], and the worker jumps into the
//! loaded kernel only once the server has acknowledged the report, as it
//! does for `reboot`: the workflow's state is never lost with the machine's
//! memory. (Tinkerbell's action jumps from inside the action, before the
//! report is sent, and needs `pid: host` for that; here `pid` is
//! irrelevant.)
//!
//! `kexec_file_load` needs root (`CAP_SYS_BOOT`) and a kernel built with
//! `CONFIG_KEXEC_FILE`; kernels in lockdown (Secure Boot) accept only
//! signed images, or none.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::mount::MsFlags;

use super::writefile::{Mount, MountError, describe, open_in_root, path_in_root};
use crate::runtime::{AfterSuccess, RunContext, RunResult};

/// Why the kernel could not be loaded; the runtime turns it into a failed
/// result naming the cause.
#[derive(Debug, thiserror::Error)]
pub enum KexecError {
    /// A setting is missing or malformed.
    #[error("{0}")]
    Invalid(String),
    /// The mount point could not be made.
    #[error("cannot create a mount point: {0}")]
    MountPoint(std::io::Error),
    /// mount(2) failed.
    #[error("mounting BLOCK_DEVICE {device} ({fs_type}) read-only failed: {errno}")]
    Mount {
        /// The partition.
        device: String,
        /// `FS_TYPE`.
        fs_type: String,
        /// Why.
        errno: Errno,
    },
    /// umount(2) failed after loading.
    #[error("BLOCK_DEVICE {device} could not be unmounted from {dir}: {errno}")]
    Unmount {
        /// The partition.
        device: String,
        /// Where it is still mounted.
        dir: String,
        /// Why.
        errno: Errno,
    },
    /// The kernel or initrd could not be opened.
    #[error("{key} {path} on {device}: {detail}")]
    File {
        /// `KERNEL_PATH` or `INITRD_PATH`.
        key: &'static str,
        /// Path inside the filesystem.
        path: String,
        /// The partition.
        device: String,
        /// Why.
        detail: String,
    },
    /// kexec_file_load(2) refused.
    #[error("kexec_file_load failed: {}", load_failure(.0))]
    Load(Errno),
    /// A blocking task died (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// kexec_file_load's errors in words, with what to do about the common ones.
fn load_failure(errno: &Errno) -> String {
    let errno = *errno;
    let hint = match errno {
        Errno::EPERM => {
            "kexec not permitted: needs root and a kernel with kexec_file_load; \
             Secure Boot lockdown may forbid it (so does kernel.kexec_load_disabled=1)"
        }
        Errno::ENOEXEC => "kernel image is not a bzImage this kernel can kexec",
        Errno::ENOSYS => {
            "this kernel has no kexec_file_load (it was built without CONFIG_KEXEC_FILE)"
        }
        Errno::EKEYREJECTED | Errno::EBADMSG | Errno::ENOKEY => {
            "the running kernel requires a signed kernel image and rejected this one's signature"
        }
        Errno::EBUSY => "another kexec load or execution is in progress",
        Errno::EINVAL => "invalid argument (a CMD_LINE longer than the kernel allows is one cause)",
        Errno::ENOMEM => "not enough memory to hold the new kernel and initrd",
        _ => "",
    };
    if hint.is_empty() {
        errno.desc().to_string()
    } else {
        format!("{hint} ({})", errno.desc())
    }
}

/// The action's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Partition to mount.
    pub device: String,
    /// Filesystem type for the mount.
    pub fs_type: String,
    /// The kernel, relative to the filesystem's root.
    pub kernel: PathBuf,
    /// The initrd, relative to the filesystem's root, if any.
    pub initrd: Option<PathBuf>,
    /// The new kernel's command line.
    pub cmdline: CString,
}

impl Params {
    /// Reads and checks the environment.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Params, KexecError> {
        let get = |key: &str| env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let invalid = |m: String| KexecError::Invalid(m);
        let device = get("BLOCK_DEVICE")
            .ok_or_else(|| invalid("BLOCK_DEVICE is not set".into()))?
            .to_string();
        let fs_type = get("FS_TYPE")
            .ok_or_else(|| invalid("FS_TYPE is required with BLOCK_DEVICE".into()))?
            .to_string();
        let kernel = get("KERNEL_PATH").ok_or_else(|| {
            invalid(
                "KERNEL_PATH is not set (the built-in kexec does not read the kernel from grub.cfg)"
                    .into(),
            )
        })?;
        let kernel = path_in_root("KERNEL_PATH", kernel).map_err(invalid)?;
        let initrd = get("INITRD_PATH")
            .map(|p| path_in_root("INITRD_PATH", p))
            .transpose()
            .map_err(invalid)?;
        let cmdline = get("CMD_LINE").unwrap_or_default();
        let cmdline = CString::new(cmdline)
            .map_err(|_| invalid("CMD_LINE must not contain a NUL character".into()))?;
        Ok(Params {
            device,
            fs_type,
            kernel,
            initrd,
            cmdline,
        })
    }
}

/// Runs the action.
pub(crate) async fn run(env: &BTreeMap<String, String>, ctx: &RunContext) -> RunResult {
    let params = match Params::from_env(env) {
        Ok(params) => params,
        Err(e) => return RunResult::failed(e.to_string()),
    };
    if ctx.cancel.is_cancelled() {
        return super::cancelled("kexec cancelled before it started");
    }
    // Mounting and loading take a second or two; the work runs to its end
    // (so the unmount always happens) even if cancelled.
    let result = tokio::task::spawn_blocking(move || load(&params))
        .await
        .map_err(|e| KexecError::Internal(e.to_string()))
        .and_then(|r| r);
    match result {
        Ok(message) => {
            ctx.logs.note(format!("kexec: {message}"));
            RunResult {
                after: AfterSuccess::Kexec,
                ..RunResult::success(message)
            }
        }
        Err(e) => {
            let message = e.to_string();
            ctx.logs.note(format!("kexec failed: {message}"));
            RunResult::failed(message)
        }
    }
}

/// Mounts read-only, loads, unmounts.
fn load(params: &Params) -> Result<String, KexecError> {
    let mount_error = |error: MountError| match error {
        MountError::MountPoint(e) => KexecError::MountPoint(e),
        MountError::Mount(errno) => KexecError::Mount {
            device: params.device.clone(),
            fs_type: params.fs_type.clone(),
            errno,
        },
        MountError::Unmount { dir, errno } => KexecError::Unmount {
            device: params.device.clone(),
            dir,
            errno,
        },
    };
    let mount =
        Mount::new(&params.device, &params.fs_type, MsFlags::MS_RDONLY).map_err(mount_error)?;
    // The files are closed before the unmount (open files would keep the
    // filesystem busy).
    let loaded = load_from(mount.dir(), params);
    let unmounted = mount.unmount();
    let sizes = loaded?;
    if let Err(error) = unmounted {
        // A failed action must not leave the machine armed.
        let _ = kexec_file_unload();
        return Err(mount_error(error));
    }
    let shown = |p: &Path| Path::new("/").join(p).display().to_string();
    let initrd = match (&params.initrd, sizes.1) {
        (Some(path), Some(len)) => format!(" and initrd {} ({len} bytes)", shown(path)),
        _ => " (no initrd)".to_string(),
    };
    Ok(format!(
        "loaded kernel {} ({} bytes){initrd} from {} with command line {:?}; \
         the machine will kexec into it once the server has this report",
        shown(&params.kernel),
        sizes.0,
        params.device,
        params.cmdline.to_string_lossy(),
    ))
}

/// Opens the kernel and initrd inside `root` and loads them; returns their
/// sizes.
fn load_from(root: &Path, params: &Params) -> Result<(u64, Option<u64>), KexecError> {
    let root_fd = File::open(root).map_err(|e| KexecError::Internal(format!("{root:?}: {e}")))?;
    let open = |key: &'static str, relative: &Path| -> Result<(File, u64), KexecError> {
        let error = |detail: String| KexecError::File {
            key,
            path: Path::new("/").join(relative).display().to_string(),
            device: params.device.clone(),
            detail,
        };
        let file = open_in_root(&root_fd, relative, OFlag::O_RDONLY | OFlag::O_NOCTTY, 0)
            .map_err(|errno| error(describe(errno)))?;
        let meta = file.metadata().map_err(|e| error(e.to_string()))?;
        if !meta.is_file() {
            return Err(error("is not a regular file".into()));
        }
        if meta.len() == 0 {
            return Err(error("is empty".into()));
        }
        Ok((file, meta.len()))
    };
    let (kernel, kernel_len) = open("KERNEL_PATH", &params.kernel)?;
    let initrd = params
        .initrd
        .as_deref()
        .map(|p| open("INITRD_PATH", p))
        .transpose()?;
    let initrd_fd = initrd.as_ref().map(|(f, _)| f.as_raw_fd());
    kexec_file_load(kernel.as_raw_fd(), initrd_fd, &params.cmdline, 0).map_err(KexecError::Load)?;
    Ok((kernel_len, initrd.map(|(_, len)| len)))
}

/// `kexec_file_load`'s number: x86-64's own table, and the generic table
/// (`asm-generic/unistd.h`) for aarch64, riscv64 and loongarch64.
#[cfg(target_arch = "x86_64")]
const SYS_KEXEC_FILE_LOAD: Option<libc::c_long> = Some(libc::SYS_kexec_file_load);
#[cfg(any(
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
))]
const SYS_KEXEC_FILE_LOAD: Option<libc::c_long> = Some(294);
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
)))]
const SYS_KEXEC_FILE_LOAD: Option<libc::c_long> = None;

/// Loads `kernel` (and `initrd`, or none with `KEXEC_FILE_NO_INITRAMFS`)
/// with `cmdline` for a later `reboot(RB_KEXEC)`. `flags` adds
/// `KEXEC_FILE_*` flags. Nothing is executed.
pub fn kexec_file_load(
    kernel: RawFd,
    initrd: Option<RawFd>,
    cmdline: &CString,
    flags: libc::c_int,
) -> Result<(), Errno> {
    let Some(number) = SYS_KEXEC_FILE_LOAD else {
        return Err(Errno::ENOSYS);
    };
    let (initrd_fd, flags) = match initrd {
        Some(fd) => (fd, flags),
        None => (-1, flags | libc::KEXEC_FILE_NO_INITRAMFS),
    };
    let cmdline = cmdline.as_bytes_with_nul();
    // SAFETY: the descriptors are open for the call's duration, and the
    // command line is a live NUL-terminated buffer of exactly the length
    // given; the kernel only reads from it.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            number,
            libc::c_long::from(kernel),
            libc::c_long::from(initrd_fd),
            cmdline.len() as libc::c_ulong,
            cmdline.as_ptr(),
            flags as libc::c_ulong,
        )
    };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// Unloads a loaded kexec kernel (`KEXEC_FILE_UNLOAD`); succeeds also when
/// none was loaded.
pub fn kexec_file_unload() -> Result<(), Errno> {
    let Some(number) = SYS_KEXEC_FILE_LOAD else {
        return Err(Errno::ENOSYS);
    };
    // SAFETY: with KEXEC_FILE_UNLOAD the kernel ignores the descriptors and
    // reads no command line (length 0, null pointer).
    let no_fd: libc::c_long = -1;
    let no_len: libc::c_ulong = 0;
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            number,
            no_fd,
            no_fd,
            no_len,
            std::ptr::null::<libc::c_char>(),
            libc::KEXEC_FILE_UNLOAD as libc::c_ulong,
        )
    };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::builtin::test_env as env;

    const FULL: &[(&str, &str)] = &[
        ("BLOCK_DEVICE", "/dev/sda3"),
        ("FS_TYPE", "ext4"),
        ("KERNEL_PATH", "/boot/vmlinuz"),
        ("INITRD_PATH", "/boot/initrd"),
        ("CMD_LINE", "root=/dev/sda3 ro"),
    ];

    #[test]
    fn params_like_tinkerbell() {
        let params = Params::from_env(&env(FULL)).unwrap();
        assert_eq!(
            params,
            Params {
                device: "/dev/sda3".into(),
                fs_type: "ext4".into(),
                kernel: PathBuf::from("boot/vmlinuz"),
                initrd: Some(PathBuf::from("boot/initrd")),
                cmdline: CString::new("root=/dev/sda3 ro").unwrap(),
            }
        );
        let minimal = Params::from_env(&env(&[
            ("BLOCK_DEVICE", "/dev/vda1"),
            ("FS_TYPE", "vfat"),
            ("KERNEL_PATH", "/vmlinuz"),
            ("INITRD_PATH", "  "),
        ]))
        .unwrap();
        assert_eq!(minimal.initrd, None);
        assert_eq!(minimal.cmdline.as_bytes_with_nul(), b"\0");
    }

    #[test]
    fn bad_params_are_named() {
        let error = |drop: &str, set: &[(&str, &str)]| {
            let mut env = env(FULL);
            env.remove(drop);
            for (k, v) in set {
                env.insert(k.to_string(), v.to_string());
            }
            Params::from_env(&env).unwrap_err().to_string()
        };
        assert_eq!(error("BLOCK_DEVICE", &[]), "BLOCK_DEVICE is not set");
        assert_eq!(
            error("FS_TYPE", &[]),
            "FS_TYPE is required with BLOCK_DEVICE"
        );
        assert!(error("KERNEL_PATH", &[]).contains("KERNEL_PATH is not set"));
        assert!(error("", &[("KERNEL_PATH", "boot/vmlinuz")]).contains("absolute"));
        assert_eq!(
            error("", &[("INITRD_PATH", "/boot/../../initrd")]),
            "INITRD_PATH \"/boot/../../initrd\" must not contain '..'"
        );
        assert!(error("", &[("KERNEL_PATH", "/boot/")]).contains("names a directory"));
        assert_eq!(
            error("", &[("CMD_LINE", "a\0b")]),
            "CMD_LINE must not contain a NUL character"
        );
    }

    #[test]
    fn load_errors_say_what_to_do() {
        let text = |errno| KexecError::Load(errno).to_string();
        assert!(
            text(Errno::EPERM).contains(
                "needs root and a kernel with kexec_file_load; Secure Boot lockdown may forbid it"
            ),
            "{}",
            text(Errno::EPERM)
        );
        assert!(
            text(Errno::ENOEXEC).contains("kernel image is not a bzImage this kernel can kexec")
        );
        assert!(text(Errno::ENOSYS).contains("CONFIG_KEXEC_FILE"));
        assert_eq!(
            text(Errno::EIO),
            format!("kexec_file_load failed: {}", Errno::EIO.desc())
        );
    }

    #[tokio::test]
    async fn invalid_settings_fail_before_mounting() {
        let ctx = RunContext {
            work_dir: std::env::temp_dir(),
            logs: crate::runtime::LogSink::detached(),
            cancel: tokio_util::sync::CancellationToken::new(),
        };
        let result = run(&env(&[("FS_TYPE", "ext4")]), &ctx).await;
        assert_eq!(result.outcome, crate::runtime::RunOutcome::Failed);
        assert_eq!(result.after, AfterSuccess::Continue);
        assert_eq!(result.message, "BLOCK_DEVICE is not set");
    }
}
