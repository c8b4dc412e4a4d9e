//! The built-in kexec action against a real kernel, as root: an ext4
//! filesystem on a loop device holding this machine's own kernel
//! (`/boot/vmlinuz-*`) and an initrd, loaded with `kexec_file_load`.
//!
//! Nothing is ever executed: when the kernel accepts the load, the test
//! checks `/sys/kernel/kexec_loaded` and unloads it again at once (also when
//! an assertion fails), so the machine is never left armed. When the running
//! kernel refuses kexec (no `CONFIG_KEXEC_FILE`, lockdown, sandboxes), the
//! test checks that the action's failure says so clearly instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use bellows_worker::builtin::kexec::kexec_file_unload;
use bellows_worker::builtin::{BuiltinOptions, BuiltinRuntime};
use bellows_worker::runtime::{AfterSuccess, LogSink, RunContext, RunOutcome, RunResult, Runtime};
use nix::errno::Errno;
use tokio_util::sync::CancellationToken;

mod support;
use support::Loop;

const MIB: u64 = 1 << 20;
const KEXEC_LOADED: &str = "/sys/kernel/kexec_loaded";

async fn run(image: &str, env: &[(&str, &str)]) -> (RunResult, String) {
    let runtime = BuiltinRuntime::new(BuiltinOptions::default());
    let ctx = RunContext {
        work_dir: std::env::temp_dir(),
        logs: LogSink::detached(),
        cancel: CancellationToken::new(),
    };
    let result = runtime.run(&support::spec(image, env), &ctx).await;
    (result, ctx.logs.tail())
}

fn assert_failed(result: &RunResult, needle: &str) {
    assert_eq!(result.outcome, RunOutcome::Failed, "{}", result.message);
    assert_eq!(result.after, AfterSuccess::Continue);
    assert!(
        result.message.contains(needle),
        "message {:?} lacks {needle:?}",
        result.message
    );
}

/// `/sys/kernel/kexec_loaded`: `None` when the kernel has no kexec at all.
fn kexec_loaded() -> Option<bool> {
    std::fs::read_to_string(KEXEC_LOADED)
        .ok()
        .map(|s| s.trim() == "1")
}

/// Unloads whatever the test may have loaded, also when it panics.
struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        if kexec_loaded() == Some(true)
            && let Err(e) = kexec_file_unload()
        {
            eprintln!("kexec_file_load(KEXEC_FILE_UNLOAD) failed: {e}; trying kexec -u");
            let _ = Command::new("kexec").arg("-u").status();
        }
        if kexec_loaded() == Some(true) {
            eprintln!("WARNING: a kexec kernel is still loaded; unload it with `kexec -u`");
        }
    }
}

use bellows_testkit::netns::is_root;
use bellows_testkit::packages::have;

/// This machine's kernel image, newest name first.
fn host_kernel() -> Option<PathBuf> {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
                && std::fs::File::open(p).is_ok()
        })
        .collect();
    kernels.sort();
    kernels.pop()
}

fn debugfs_write(device: &str, request: &str) {
    let output = Command::new("debugfs")
        .args(["-w", "-R", request, device])
        .output()
        .unwrap();
    assert!(output.status.success(), "debugfs {request}: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // debugfs exits 0 on most request errors; its banner is one line.
    assert!(stderr.lines().count() <= 1, "debugfs {request}: {stderr}");
}

fn mounted(device: &str) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|line| line.split_whitespace().next() == Some(device))
}

/// An ext4 filesystem with `/boot/vmlinuz-test` (the host's kernel),
/// `/boot/initrd.img-test`, `/boot/not-a-kernel`, and two absolute
/// symlinks: `/vmlinuz` to the kernel, `/hostname` to `/etc/hostname` (which
/// exists on the host but not in this filesystem).
fn boot_filesystem(kernel: &Path, scratch: &Path) -> Option<Loop> {
    let kernel_len = std::fs::metadata(kernel).unwrap().len();
    let disk = Loop::new(kernel_len + 24 * MIB)?;
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", &disk.device])
        .status()
        .unwrap();
    assert!(status.success());
    // The initrd is not looked into by kexec_file_load: any bytes do.
    let initrd = scratch.join("initrd");
    std::fs::write(&initrd, vec![0x5a_u8; MIB as usize]).unwrap();
    let not_kernel = scratch.join("not-a-kernel");
    std::fs::write(
        &not_kernel,
        b"#!/bin/sh\necho this is no kernel\n".repeat(100),
    )
    .unwrap();
    debugfs_write(&disk.device, "mkdir /boot");
    debugfs_write(
        &disk.device,
        &format!("write {} /boot/vmlinuz-test", kernel.display()),
    );
    debugfs_write(
        &disk.device,
        &format!("write {} /boot/initrd.img-test", initrd.display()),
    );
    debugfs_write(
        &disk.device,
        &format!("write {} /boot/not-a-kernel", not_kernel.display()),
    );
    debugfs_write(&disk.device, "symlink /vmlinuz /boot/vmlinuz-test");
    debugfs_write(&disk.device, "symlink /hostname /etc/hostname");
    Some(disk)
}

/// What the kernel says to a kexec_file_load, learned without loading
/// anything: `KEXEC_FILE_UNLOAD` with nothing loaded (checked first) is a
/// no-op where kexec works and fails the way a load would where it does not.
fn probe() -> Result<(), Errno> {
    kexec_file_unload()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kexec_loads_a_kernel_from_a_partition_and_never_leaves_it_armed() {
    if !is_root() {
        println!("SKIPPED: not root (mounting and kexec_file_load need it)");
        return;
    }
    for tool in ["losetup", "mkfs.ext4", "debugfs"] {
        if !have(tool) {
            println!("SKIPPED: {tool} is not installed");
            return;
        }
    }
    let Some(kernel) = host_kernel() else {
        println!("SKIPPED: no readable /boot/vmlinuz-* to load");
        return;
    };
    if kexec_loaded() == Some(true) {
        println!("SKIPPED: a kexec kernel is already loaded here; not touching it");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let Some(disk) = boot_filesystem(&kernel, scratch.path()) else {
        return;
    };
    let device = disk.device.as_str();
    let _disarm = Disarm;
    let support = probe();
    println!(
        "kernel {}: {KEXEC_LOADED} {}, kexec_file_load probe: {}",
        kernel.display(),
        match kexec_loaded() {
            None => "absent".to_string(),
            Some(loaded) => format!("reads {}", u8::from(loaded)),
        },
        match support {
            Ok(()) => "available".to_string(),
            Err(e) => format!("refused ({e})"),
        }
    );

    let env = |kernel: &'static str, initrd: Option<&'static str>| {
        let mut env = vec![
            ("BLOCK_DEVICE", device),
            ("FS_TYPE", "ext4"),
            ("KERNEL_PATH", kernel),
            ("CMD_LINE", "root=/dev/sda3 ro console=ttyS0"),
        ];
        if let Some(initrd) = initrd {
            env.push(("INITRD_PATH", initrd));
        }
        env
    };
    // The message a refused load must carry, by the probe's errno.
    let refusal = |errno: Errno| -> &'static str {
        match errno {
            Errno::ENOSYS => "this kernel has no kexec_file_load",
            Errno::EPERM => {
                "needs root and a kernel with kexec_file_load; Secure Boot lockdown may forbid it"
            }
            _ => "kexec_file_load failed: ",
        }
    };

    // Kernel and initrd, the kernel through an absolute symlink.
    let (result, logs) = run(
        "quay.io/tinkerbell/actions/kexec:latest",
        &env("/vmlinuz", Some("/boot/initrd.img-test")),
    )
    .await;
    assert!(!mounted(device), "left mounted");
    match support {
        Ok(()) if result.outcome == RunOutcome::Success => {
            assert_eq!(result.after, AfterSuccess::Kexec);
            assert!(
                result.message.contains("loaded kernel /vmlinuz"),
                "{}",
                result.message
            );
            assert!(logs.contains("kexec: loaded kernel"), "{logs}");
            assert_eq!(kexec_loaded(), Some(true), "{KEXEC_LOADED} after the load");
            kexec_file_unload().expect("unloading");
            assert_eq!(
                kexec_loaded(),
                Some(false),
                "{KEXEC_LOADED} after unloading"
            );
            println!("loaded and unloaded: {}", result.message);

            // Without an initrd.
            let (result, _) = run("bellows/kexec", &env("/boot/vmlinuz-test", None)).await;
            assert_eq!(result.outcome, RunOutcome::Success, "{}", result.message);
            assert_eq!(result.after, AfterSuccess::Kexec);
            assert!(result.message.contains("(no initrd)"), "{}", result.message);
            assert_eq!(kexec_loaded(), Some(true));
            kexec_file_unload().expect("unloading");
            assert_eq!(kexec_loaded(), Some(false));

            // Not a kernel.
            let (result, _) = run("bellows/kexec", &env("/boot/not-a-kernel", None)).await;
            assert_failed(
                &result,
                "kernel image is not a bzImage this kernel can kexec",
            );
            assert_eq!(kexec_loaded(), Some(false));
        }
        Ok(()) => {
            // kexec exists but this load was refused (lockdown wants signed
            // images, say): the message must still name the syscall.
            assert_failed(&result, "kexec_file_load failed: ");
            println!(
                "kexec available but this kernel was refused: {}",
                result.message
            );
        }
        Err(errno) => {
            assert_failed(&result, refusal(errno));
            assert!(
                logs.contains("kexec failed: kexec_file_load failed"),
                "{logs}"
            );
            println!("kexec refused here, as expected: {}", result.message);
            let (result, _) = run("bellows/kexec", &env("/boot/not-a-kernel", None)).await;
            assert_failed(&result, refusal(errno));
        }
    }
    assert!(!mounted(device), "left mounted");

    // Errors before the syscall, the same on every kernel.
    let (result, _) = run("bellows/kexec", &env("/boot/missing", None)).await;
    assert_failed(
        &result,
        &format!("KERNEL_PATH /boot/missing on {device}: No such file or directory"),
    );
    let (result, _) = run(
        "bellows/kexec",
        &env("/boot/vmlinuz-test", Some("/boot/missing-initrd")),
    )
    .await;
    assert_failed(
        &result,
        &format!("INITRD_PATH /boot/missing-initrd on {device}: No such file or directory"),
    );
    // An absolute symlink resolves inside the filesystem, never on the host
    // (where /etc/hostname exists).
    let (result, _) = run("bellows/kexec", &env("/hostname", None)).await;
    assert_failed(
        &result,
        &format!("KERNEL_PATH /hostname on {device}: No such file or directory"),
    );
    let (result, _) = run("bellows/kexec", &env("/boot", None)).await;
    assert_failed(&result, "KERNEL_PATH /boot on");
    assert_failed(&result, "is not a regular file");
    assert!(!mounted(device), "left mounted after an error");

    // The wrong filesystem type.
    let mut wrong = env("/vmlinuz", None);
    wrong[1] = ("FS_TYPE", "xfs");
    let (result, _) = run("bellows/kexec", &wrong).await;
    assert_failed(
        &result,
        &format!("mounting BLOCK_DEVICE {device} (xfs) read-only failed"),
    );
    assert_ne!(kexec_loaded(), Some(true), "left armed");
}
