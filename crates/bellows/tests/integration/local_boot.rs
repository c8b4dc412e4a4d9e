//! A machine with nothing to do boots its installed disk through the
//! local-boot script, on real firmware: rEFInd served by Bellows on UEFI
//! (seed 004), and the first disk on BIOS under the same setting. (UEFI by
//! `exit 1` after a whole install is in `lifecycle.rs`.)

use std::path::Path;

use bellows_testkit::netns::{Lab, can_run};

use crate::harness::Server;
use crate::netboot::{have_qemu, wait_for_log_line};
use crate::vm::{Firmware, Order, VmSpec, installed_disk};

const SERVER_IP: &str = "10.78.0.1";
const REFIND: &str = "/usr/share/refind/refind/refind_x64.efi";

/// A VM with an installed disk (its UEFI loader at `efi_path`), network
/// first in its boot order, no workflow, and Bellows with `--local-boot
/// refind`: the installed system must call back.
fn boots_its_disk_under_refind(fw: Firmware, efi_path: &str, tag: &str, mac: &str, ip: &str) {
    if !can_run() || !have_qemu() {
        return;
    }
    if !Path::new(REFIND).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{REFIND} missing: scripts/test.sh installs Debian's refind"
        );
        eprintln!("skipped: no rEFInd");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("disk.img");
    std::fs::copy(installed_disk(SERVER_IP, efi_path), &disk).expect("copy the installed disk");
    let mut lab = Lab::new(tag, &format!("{SERVER_IP}/24"));
    let tap = lab.tap(1);
    let ns = lab.server_ns.clone();
    let s = Server::start_on_lab_bridge(
        &ns,
        SERVER_IP,
        &work.path().join("data"),
        "reservation",
        &["--local-boot", "refind"],
    );
    let name = format!("refind-{tag}");
    s.push_machine(&ns, &name, mac, ip, SERVER_IP, true);
    let mut vm = crate::vm::start_vm(&VmSpec {
        ns: &ns,
        tap: &tap,
        mac,
        fw,
        work: work.path(),
        memory_mib: 512,
        reboot: false,
        disk: Some((&disk, Order::NetworkFirst)),
        disk_serial: None,
    });
    let line = wait_for_log_line(&s, &ns, &name, "installed hostname=", &mut vm, work.path());
    assert!(line.contains(&format!("ip={ip}")), "{line}");
    let console = String::from_utf8_lossy(
        &std::fs::read(work.path().join("console.log")).unwrap_or_default(),
    )
    .into_owned();
    if fw == Firmware::Uefi {
        // iPXE fetched both files from Bellows, and rEFInd booted the disk.
        for seen in [
            "/refind/refind.conf... ok",
            "/refind/x86_64/refind.efi... ok",
            "rEFInd - Booting OS",
        ] {
            assert!(
                console.contains(seen),
                "{seen:?} not on the console:\n{console}"
            );
        }
    }
    let served = s
        .drain_log()
        .into_iter()
        .find(|l| l.contains("serving auto.ipxe") && l.contains(mac));
    assert!(
        served
            .as_deref()
            .is_some_and(|l| l.contains("no pending workflow")),
        "the local-boot script was served: {served:?}"
    );
}

/// UEFI: the loader is not at the removable-media path, so the firmware
/// alone would not find it; rEFInd, fetched and chained by iPXE from
/// Bellows, scans the disk and boots it.
#[test]
fn uefi_vm_boots_a_disk_the_firmware_cannot_through_refind() {
    boots_its_disk_under_refind(
        Firmware::Uefi,
        "EFI/bellows/installed.efi",
        "rfu",
        "52:54:00:78:00:10",
        "10.78.0.10",
    );
}

/// BIOS under the same setting: iPXE sanboots the first disk (syslinux).
#[test]
fn bios_vm_boots_its_first_disk_under_the_refind_setting() {
    boots_its_disk_under_refind(
        Firmware::Bios,
        "EFI/bellows/installed.efi",
        "rfb",
        "52:54:00:78:00:11",
        "10.78.0.11",
    );
}
