//! Whole network boots of a QEMU VM (TCG) inside a network namespace the
//! test creates: firmware PXE → iPXE → auto.ipxe → kernel + initramfs from
//! Bellows → the booted system finds itself in the metadata service and
//! reports over syslog.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Server, ok};
use crate::netns::{Lab, can_run};
use crate::vm::{Firmware, Vm, VmSpec, file_tail};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Builds the test OS (kernel + initramfs) once per test into `dir`.
fn test_os(dir: &Path) -> PathBuf {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/e2e/build-test-os.sh"
    );
    let out = Command::new(script)
        .arg(dir)
        .output()
        .expect("run build-test-os.sh");
    assert!(
        out.status.success(),
        "build-test-os.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

/// A diskless VM that powers off (no reboot) when its OS is done.
fn netboot_vm(ns: &str, tap: &str, mac: &str, fw: Firmware, work: &Path) -> Vm {
    crate::vm::start_vm(&VmSpec {
        ns,
        tap,
        mac,
        fw,
        work,
        memory_mib: 512,
        reboot: false,
        disk: None,
    })
}

/// Registers the VM and a workflow for it, so auto.ipxe boots the test OS.
pub(crate) fn register(s: &Server, ns: &str, mac: &str, ip: &str, hostname: &str) {
    register_machine(s, ns, mac, ip, hostname, true);
    let tmpl = std::fs::read(crate::harness::fixture("hello-world.tmpl")).unwrap();
    ok(&s.cli_netns(
        ns,
        &["template", "create", "-n", "e2e", "-p", "-"],
        Some(&tmpl),
    ));
    ok(&s.cli_netns(
        ns,
        &[
            "workflow",
            "create",
            "-t",
            "e2e",
            "-r",
            &format!("{{\"device_1\":\"{mac}\"}}"),
        ],
        None,
    ));
}

fn register_machine(s: &Server, ns: &str, mac: &str, ip: &str, hostname: &str, allow_pxe: bool) {
    let hw = json!({"id": hostname, "network": {"interfaces": [{
        "dhcp": {"mac": mac, "hostname": hostname, "lease_time": 600,
                 "ip": {"address": ip, "netmask": "255.255.255.0", "gateway": "10.77.0.1"}},
        "netboot": {"allow_pxe": allow_pxe, "allow_workflow": true}}]},
        "metadata": {"instance": {"hostname": hostname}}});
    ok(&s.cli_netns(
        ns,
        &["hardware", "push", "-f", "-"],
        Some(hw.to_string().as_bytes()),
    ));
}

/// The test OS's call-back says which worker id it booted with, that it got
/// its reserved address and that the metadata service named it.
pub(crate) fn assert_callback(line: &str, mac: &str, ip: &str, name: &str) {
    assert!(line.contains(&format!("worker={mac}")), "{line}");
    assert!(
        line.contains(&format!("ip={ip}")),
        "the VM got its reserved address: {line}"
    );
    assert!(
        line.contains(&format!("hostname={name}")),
        "metadata answered: {line}"
    );
}

/// Waits for the booted test OS's syslog report, filed under the machine.
fn wait_for_callback(s: &Server, ns: &str, machine: &str, vm: &mut Vm, work: &Path) -> String {
    let start = Instant::now();
    let mut exited_at: Option<Instant> = None;
    loop {
        let logs = ok(&s.cli_netns(ns, &["hardware", "logs", machine], None));
        if let Some(line) = logs.lines().find(|l| l.contains("booted worker=")) {
            eprintln!("booted in {:.1} s", start.elapsed().as_secs_f64());
            return line.to_string();
        }
        let exited = vm.0.try_wait().ok().flatten();
        if exited.is_some() && exited_at.is_none() {
            // The VM powers off right after sending; give the receiver's
            // batch a moment to land before judging.
            exited_at = Some(Instant::now());
        }
        let grace_over = exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3));
        if grace_over || start.elapsed() > BOOT_TIMEOUT {
            let tail = file_tail(&work.join("console.log"), 3000);
            panic!(
                "no call-back from the VM (exit: {exited:?}, {:?} elapsed)\nlogs:\n{logs}\nconsole tail:\n{tail}",
                start.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn have_qemu() -> bool {
    let ok = Path::new("/usr/bin/qemu-system-x86_64").exists()
        && Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "qemu-system-x86 and ovmf are required; scripts/test.sh installs them"
        );
        eprintln!("skipped: no qemu-system-x86_64 / OVMF");
    }
    ok
}

/// Bring your own DHCP (seed 003): dnsmasq, configured by
/// `bellows dhcp-config --format dnsmasq`, does the addressing; Bellows
/// serves TFTP, the script, the OS and the metadata.
fn boot_with_dnsmasq(fw: Firmware, mac: &str, ip: &str, name: &str) {
    boot_vm(fw, true, mac, ip, name);
}

/// One whole boot: Bellows (and dnsmasq, if asked) in the lab's server
/// namespace, a VM on its bridge, and the booted OS's report.
fn boot_vm(fw: Firmware, with_dnsmasq: bool, mac: &str, ip: &str, name: &str) {
    if !can_run() || !have_qemu() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let os = test_os(&work.path().join("os"));
    let tag = match (fw, with_dnsmasq) {
        (Firmware::Bios, true) => "nbd",
        (Firmware::Uefi, true) => "nud",
        (Firmware::Bios, false) => "nb",
        (Firmware::Uefi, false) => "nu",
    };
    let mut lab = Lab::new(tag, "10.77.0.1");
    let tap = lab.tap(1);
    let ns = lab.server_ns.clone();
    let s = Server::start_in_netns_with(
        &ns,
        "10.77.0.1",
        &work.path().join("data"),
        &[
            "--dhcp-mode",
            if with_dnsmasq { "off" } else { "reservation" },
            "--interface",
            "br0",
            "--tftp-listen",
            "10.77.0.1:69",
            "--osie-dir",
            os.to_str().unwrap(),
            "--osie-initrd",
            "initramfs",
            "--kernel-args",
            "e2e.http=http://10.77.0.1:8080",
        ],
    );
    register(&s, &ns, mac, ip, name);
    let _dnsmasq = with_dnsmasq.then(|| start_dnsmasq(&s, &ns, work.path()));
    let mut vm = netboot_vm(&ns, &tap, mac, fw, work.path());
    let line = wait_for_callback(&s, &ns, name, &mut vm, work.path());
    assert_callback(&line, mac, ip, name);
    if matches!(fw, Firmware::Uefi) {
        // OVMF's own PXE client fetched iPXE from Bellows' TFTP server.
        let tftp = s.wait_for_log("TFTP transfer ended", Duration::from_secs(2));
        assert!(
            tftp.as_deref().is_some_and(|l| l.contains("ipxe.efi")),
            "{tftp:?}"
        );
    }
}

/// dnsmasq with the configuration `bellows dhcp-config` writes.
fn start_dnsmasq(s: &Server, ns: &str, work: &Path) -> Vm {
    let conf = ok(&s.cli_netns(
        ns,
        &["dhcp-config", "--format", "dnsmasq", "--interface", "br0"],
        None,
    ));
    let conf_path = work.join("dnsmasq.conf");
    std::fs::write(
        &conf_path,
        format!(
            "{conf}bind-interfaces\nno-resolv\nno-hosts\ndhcp-leasefile={}\npid-file={}\nlog-dhcp\n",
            work.join("leases").display(),
            work.join("dnsmasq.pid").display()
        ),
    )
    .unwrap();
    let dnsmasq = Command::new("ip")
        .args(["netns", "exec", ns, "dnsmasq", "-k", "-C"])
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq");
    Vm(dnsmasq)
}

/// BIOS: SeaBIOS with QEMU's NIC ROM, which is iPXE: it asks for the
/// script at once.
#[test]
fn bios_vm_boots_with_dnsmasq_from_the_generated_config() {
    boot_with_dnsmasq(
        Firmware::Bios,
        "52:54:00:77:00:50",
        "10.77.0.50",
        "e2e-bios-dnsmasq",
    );
}

/// UEFI: OVMF with the NIC ROM disabled, so OVMF's own PXE client gets
/// `ipxe.efi` from Bellows over TFTP, which then fetches the script.
#[test]
fn uefi_vm_boots_with_dnsmasq_from_the_generated_config() {
    boot_with_dnsmasq(
        Firmware::Uefi,
        "52:54:00:77:00:51",
        "10.77.0.51",
        "e2e-uefi-dnsmasq",
    );
}

/// Bellows alone, BIOS: its DHCP answers QEMU's iPXE ROM with the script URL.
#[test]
fn bios_vm_boots_against_bellows_alone() {
    boot_vm(
        Firmware::Bios,
        false,
        "52:54:00:77:00:60",
        "10.77.0.60",
        "e2e-bios",
    );
}

/// Bellows alone, UEFI: OVMF's own PXE gets ipxe.efi over Bellows' TFTP,
/// then iPXE gets the script URL, all from Bellows' DHCP.
#[test]
fn uefi_vm_boots_against_bellows_alone() {
    boot_vm(
        Firmware::Uefi,
        false,
        "52:54:00:77:00:61",
        "10.77.0.61",
        "e2e-uefi",
    );
}

/// A machine with nothing to do gets the local-boot script, from Bellows
/// alone (its DHCP, then auto.ipxe by MAC).
#[test]
fn vm_without_a_workflow_gets_the_local_boot_script() {
    if !can_run() || !have_qemu() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut lab = Lab::new("nl", "10.77.0.1");
    let tap = lab.tap(1);
    let ns = lab.server_ns.clone();
    let s = Server::start_in_netns_with(
        &ns,
        "10.77.0.1",
        &work.path().join("data"),
        &[
            "--dhcp-mode",
            "reservation",
            "--interface",
            "br0",
            "--tftp-listen",
            "off",
        ],
    );
    let mac = "52:54:00:77:00:70";
    register_machine(&s, &ns, mac, "10.77.0.70", "e2e-idle", true);
    let _vm = netboot_vm(&ns, &tap, mac, Firmware::Bios, work.path());
    let served = s.wait_for_log("serving auto.ipxe", BOOT_TIMEOUT);
    let served = served.expect("the VM never fetched its script");
    assert!(
        served.contains(mac) && served.contains("LocalBoot(\"no pending workflow\")"),
        "{served}"
    );
}
