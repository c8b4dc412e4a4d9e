//! QEMU VMs (TCG) for the whole-boot tests: one way to start them on a tap
//! in a lab's namespace, guarded so they are killed (by PID) even when a
//! test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bellows_testkit::{ChildGuard, run_checked};

/// Which firmware boots the VM.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's iPXE NIC ROM.
    Bios,
    /// OVMF with the NIC ROM disabled: OVMF's own UEFI PXE, then TFTP.
    Uefi,
}

/// Boot order when the VM has a disk: the NIC first (network boot
/// decides: installer or local disk), or the disk first with the network
/// as the fallback for a blank disk — the usual choice for UEFI fleets,
/// because OVMF (like much UEFI firmware) tries PXEv6 and HTTP boot for
/// minutes before the disk when a network boot declines.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Order {
    NetworkFirst,
    DiskFirst,
}

/// How to start one VM.
pub struct VmSpec<'a> {
    pub ns: &'a str,
    pub tap: &'a str,
    pub mac: &'a str,
    pub fw: Firmware,
    /// Serial console goes to `work/console.log`; OVMF's variables live here.
    pub work: &'a Path,
    pub memory_mib: u32,
    /// Let a guest reboot restart the VM (else QEMU exits).
    pub reboot: bool,
    /// A raw virtio disk and the boot order; without one, network only.
    pub disk: Option<(&'a Path, Order)>,
    /// The disk's serial number (what the machine reads in sysfs).
    pub disk_serial: Option<&'a str>,
}

/// Starts the VM in `spec.ns` on `spec.tap`.
pub fn start_vm(spec: &VmSpec<'_>) -> ChildGuard {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", spec.ns, "qemu-system-x86_64"])
        .args(["-accel", "tcg", "-m", &spec.memory_mib.to_string()])
        .args(["-nographic", "-display", "none", "-monitor", "none"])
        .args([
            "-netdev",
            &format!("tap,id=n0,ifname={},script=no,downscript=no", spec.tap),
        ])
        .arg("-serial")
        .arg(format!("file:{}", spec.work.join("console.log").display()));
    if !spec.reboot {
        cmd.arg("-no-reboot");
    }
    // UEFI: the firmware's own PXE, so no iPXE option ROM on the NIC.
    let rom = match spec.fw {
        Firmware::Bios => "",
        Firmware::Uefi => ",romfile=",
    };
    match spec.disk {
        Some((disk, order)) => {
            let (net_index, disk_index) = match order {
                Order::NetworkFirst => (1, 2),
                Order::DiskFirst => (2, 1),
            };
            cmd.arg("-drive")
                .arg(format!("if=none,id=d0,format=raw,file={}", disk.display()))
                .args([
                    "-device",
                    &format!(
                        "virtio-net-pci,netdev=n0,mac={}{rom},bootindex={net_index}",
                        spec.mac
                    ),
                    "-device",
                    &format!(
                        "virtio-blk-pci,drive=d0,bootindex={disk_index}{}",
                        spec.disk_serial
                            .map(|s| format!(",serial={s}"))
                            .unwrap_or_default()
                    ),
                ]);
        }
        None => {
            if spec.fw == Firmware::Bios {
                cmd.args(["-boot", "n"]);
            }
            cmd.args([
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={}{rom}", spec.mac),
            ]);
        }
    }
    if spec.fw == Firmware::Uefi {
        let vars = spec.work.join("OVMF_VARS.fd");
        std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("OVMF vars");
        cmd.args([
            "-drive",
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        ])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ));
    }
    ChildGuard::spawn("qemu", cmd.stdout(Stdio::null()).stderr(Stdio::null()))
}

/// The last `chars` characters of a text file, for failure messages.
pub fn file_tail(path: &Path, chars: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let skip = text.chars().count().saturating_sub(chars);
    text.chars().skip(skip).collect()
}

/// Runs `build(dir)` once for all the test processes of a run (nextest
/// runs each test in its own process) and returns `dir`: the result is kept
/// under the target directory, keyed by the contents of `inputs` (the build
/// scripts), `args` and the installed kernels, and built under a file lock
/// so parallel tests wait for one build instead of racing it.
pub fn built_once(
    name: &str,
    inputs: &[&Path],
    args: &[&str],
    build: impl FnOnce(&Path),
) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for input in inputs {
        std::fs::read(input)
            .unwrap_or_else(|e| panic!("read {}: {e}", input.display()))
            .hash(&mut h);
    }
    args.hash(&mut h);
    let mut kernels: Vec<String> = std::fs::read_dir("/boot")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("vmlinuz-"))
                .collect()
        })
        .unwrap_or_default();
    kernels.sort();
    kernels.hash(&mut h);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-images");
    std::fs::create_dir_all(&root).expect("create the image cache");
    let dir = root.join(format!("{name}-{:016x}", h.finish()));
    let lock = std::fs::File::create(root.join(format!("{name}.lock"))).expect("lock file");
    lock.lock().expect("lock the image cache");
    let done = dir.join(".built");
    if !done.exists() {
        // A build a killed run left half-done: start over.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the image directory");
        let started = std::time::Instant::now();
        build(&dir);
        std::fs::write(&done, b"").expect("mark the image built");
        eprintln!("built {name} in {:.1} s", started.elapsed().as_secs_f64());
    }
    drop(lock);
    dir
}

/// Path of a script under `tests/e2e/`.
pub fn e2e_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/e2e")
        .join(name)
}

/// The network-boot tests' OS (kernel + initramfs), built once per run.
pub fn test_os() -> PathBuf {
    let script = e2e_script("build-test-os.sh");
    built_once("test-os", &[&script, &e2e_script("lib.sh")], &[], |dir| {
        run_checked(Command::new(&script).arg(dir), "build-test-os.sh");
    })
}

/// An already-installed disk image (see `build-installed-disk.sh`) whose
/// system calls back to `syslog_ip`, with its UEFI loader at `efi_path`;
/// built once per run. Returns the image file (copy it before booting).
pub fn installed_disk(syslog_ip: &str, efi_path: &str) -> PathBuf {
    let script = e2e_script("build-installed-disk.sh");
    let dir = built_once(
        "installed-disk",
        &[&script, &e2e_script("lib.sh")],
        &[syslog_ip, efi_path],
        |dir| {
            let img = dir.join("installed.img");
            let out = run_checked(
                Command::new(&script).arg(&img).args([syslog_ip, efi_path]),
                "build-installed-disk.sh",
            );
            eprintln!("{out}");
        },
    );
    dir.join("installed.img")
}
