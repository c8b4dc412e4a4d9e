//! QEMU VMs (TCG) for the whole-boot tests: one way to start them on a tap
//! in a lab's namespace, and to kill them (by PID) even when a test fails.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process (QEMU, or a helper daemon), killed when dropped.
pub struct Vm(pub Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
}

/// Starts the VM in `spec.ns` on `spec.tap`.
pub fn start_vm(spec: &VmSpec<'_>) -> Vm {
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
                    &format!("virtio-blk-pci,drive=d0,bootindex={disk_index}"),
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
    Vm(cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu"))
}

/// The last `chars` characters of a text file, for failure messages.
pub fn file_tail(path: &Path, chars: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let skip = text.chars().count().saturating_sub(chars);
    text.chars().skip(skip).collect()
}
