//! The whole provisioning lifecycle on a QEMU VM (TCG) with an empty disk:
//! power on → network boot into Bellows' in-memory OS → the worker runs the
//! workflow (image2disk a compressed bootable image, writefile a hostname
//! into it, cexec a suffix onto it, reboot) → the machine stops
//! network-booting → it boots from its
//! disk → the installed system calls back over syslog with the hostname the
//! workflow wrote. In BIOS mode (SeaBIOS + QEMU's iPXE ROM) and UEFI mode
//! (OVMF's own PXE).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use bellows_testkit::netns::{Lab, can_run};
use bellows_testkit::{ChildGuard, run_checked};

use crate::harness::{BIN, Server, ok};
use crate::vm::{Firmware, Order, VmSpec, file_tail};

const SERVER_IP: &str = "10.79.0.1";
const TIMEOUT: Duration = Duration::from_secs(600);

/// Whether QEMU, OVMF and the disk-image tools are here (CI: must be).
fn have_tools() -> bool {
    have(&[])
}

/// The same, and `extra`.
pub(crate) fn have(extra: &[&str]) -> bool {
    let needed = [
        "/usr/bin/qemu-system-x86_64",
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        "/usr/lib/syslinux/mbr/mbr.bin",
        "/usr/bin/zstd",
    ];
    let missing: Vec<&str> = needed
        .iter()
        .chain(extra)
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "missing {missing:?}; scripts/test.sh installs them"
        );
        eprintln!("skipped: missing {missing:?}");
        return false;
    }
    true
}

/// The in-memory OS, built by the documented command into the server's
/// default location.
pub(crate) fn build_osie(osie: &Path) {
    let out = run_checked(
        Command::new(BIN)
            .args(["image", "build", "--output-dir"])
            .arg(osie),
        "bellows image build",
    );
    eprintln!("{out}");
}

/// The disk image the workflow installs (built once per run), checksummed,
/// compressed, and put in `dir` as `installed.img.zst` (the server's
/// `/osie/`, or a mirror's directory). Its system calls back over syslog to
/// `callback` (an address, or `dhcp`: the server that answered its DHCP).
pub(crate) fn build_disk(dir: &Path, callback: &str) -> String {
    let img = crate::vm::installed_disk(callback, "EFI/BOOT/BOOTX64.EFI");
    let sum = run_checked(Command::new("sha256sum").arg(&img), "sha256sum");
    let sum = sum
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    run_checked(
        Command::new("zstd")
            .args(["-q", "-f", "-10", "-o"])
            .arg(dir.join("installed.img.zst"))
            .arg(&img),
        "zstd",
    );
    sum
}

fn start_vm(
    ns: &str,
    tap: &str,
    mac: &str,
    fw: Firmware,
    order: Order,
    work: &Path,
    disk: &Path,
) -> ChildGuard {
    crate::vm::start_vm(&VmSpec {
        ns,
        tap,
        mac,
        fw,
        work,
        memory_mib: 1024,
        reboot: true,
        disk: Some((disk, order)),
        disk_serial: None,
    })
}

/// The install: image2disk from `img_url` (checked against `sum`),
/// writefile and cexec the hostname `name`, then reboot (or kexec).
pub(crate) fn template(sum: &str, name: &str, img_url: &str, kexec: bool) -> String {
    let last = if kexec {
        // Straight into the installed kernel: no firmware, no second boot.
        "      - name: kexec
        image: bellows/kexec
        timeout: 120
        environment:
          BLOCK_DEVICE: /dev/vda1
          FS_TYPE: vfat
          KERNEL_PATH: /vmlinuz
          INITRD_PATH: /initrd.img
          CMD_LINE: console=ttyS0,115200 panic=10
"
    } else {
        "      - name: reboot
        image: bellows/reboot
        timeout: 60
"
    };
    format!(
        r#"
version: "0.1"
name: {name}
global_timeout: 900
tasks:
  - name: os-installation
    worker: "{{{{.device_1}}}}"
    volumes:
      - /dev:/dev
    actions:
      - name: stream-image
        image: bellows/image2disk
        timeout: 600
        environment:
          IMG_URL: {img_url}
          DEST_DISK: /dev/vda
          COMPRESSED: "true"
          CHECKSUM: sha256:{sum}
      - name: write-hostname
        image: bellows/writefile
        timeout: 120
        environment:
          DEST_DISK: /dev/vda1
          FS_TYPE: vfat
          DEST_PATH: /hostname
          CONTENTS: "{name}"
          MODE: "0644"
          DIRMODE: "0755"
      # Tinkerbell's image name: the in-memory OS has no container engine,
      # so the built-in cexec runs it, with the in-memory OS's busybox.
      - name: tag-hostname
        image: quay.io/tinkerbell/actions/cexec:latest
        timeout: 60
        environment:
          BLOCK_DEVICE: /dev/vda1
          FS_TYPE: vfat
          DEFAULT_INTERPRETER: /bin/sh -c
          CMD_LINE: "printf %s -cexec >> hostname"
{last}"#
    )
}

/// The installed system's call-back (`installed hostname=…`) among the
/// syslog lines filed under `machine`, if it has come.
pub(crate) fn callback_line(server: &Server, ns: &str, machine: &str) -> Option<Value> {
    let logs = ok(&server.cli_netns(
        ns,
        &["hardware", "logs", machine, "-o", "json", "-n", "2000"],
        None,
    ));
    let logs: Value = serde_json::from_str(&logs).unwrap_or(Value::Null);
    logs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("installed hostname="))
        })
        .cloned()
}

/// Unix milliseconds of a server log line (tracing's RFC 3339 prefix).
pub(crate) fn log_time(line: &str) -> Option<i64> {
    let stamp = line.split_whitespace().next()?;
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

#[test]
fn log_stamps_parse() {
    assert_eq!(
        log_time("2026-11-21T14:31:45.343091Z  INFO x"),
        Some(1_795_271_505_343)
    );
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Setup {
    _work: tempfile::TempDir,
    work: PathBuf,
    _lab: Lab,
    ns: String,
    tap: String,
    server: Server,
    sum: String,
}

fn setup(tag: &str, mac: &str, ip: &str, name: &str, allow_pxe: bool) -> Option<Setup> {
    if !can_run() || !have_tools() {
        return None;
    }
    let work_dir = tempfile::tempdir().unwrap();
    let work = work_dir.path().to_path_buf();
    let data = work.join("data");
    let osie = data.join("osie");
    std::fs::create_dir_all(&osie).unwrap();
    let built = Instant::now();
    build_osie(&osie);
    let sum = build_disk(&osie, SERVER_IP);
    eprintln!("images built in {:.1} s", built.elapsed().as_secs_f64());
    let mut lab = Lab::new(tag, &format!("{SERVER_IP}/24"));
    let tap = lab.tap(1);
    let ns = lab.server_ns.clone();
    let server = Server::start_on_lab_bridge(&ns, SERVER_IP, &data, "reservation", &[]);
    server.push_machine(&ns, name, mac, ip, SERVER_IP, allow_pxe);
    Some(Setup {
        _work: work_dir,
        work,
        _lab: lab,
        ns,
        tap,
        server,
        sum,
    })
}

fn create_workflow(
    s: &Setup,
    name: &str,
    mac: &str,
    img_url: &str,
    toggle: bool,
    kexec: bool,
) -> String {
    let t = template(&s.sum, name, img_url, kexec);
    ok(&s.server.cli_netns(
        &s.ns,
        &["template", "create", "-n", name, "-p", "-"],
        Some(t.as_bytes()),
    ));
    let map = format!("{{\"device_1\":\"{mac}\"}}");
    let mut args = vec!["workflow", "create", "-t", name, "-r", &map];
    if toggle {
        args.push("--toggle-netboot");
    }
    ok(&s.server.cli_netns(&s.ns, &args, None))
        .trim()
        .to_string()
}

fn workflow(s: &Setup, id: &str) -> Value {
    let out = ok(&s
        .server
        .cli_netns(&s.ns, &["workflow", "get", id, "-o", "json"], None));
    serde_json::from_str(&out).expect("workflow JSON")
}

fn console_tail(work: &Path) -> String {
    file_tail(&work.join("console.log"), 4000)
}

/// How the machine is kept from re-installing after the workflow succeeds.
#[derive(Clone, Copy, Debug, PartialEq)]
enum After {
    /// `--toggle-netboot`: PXE is switched off; the firmware finds no boot
    /// file and falls through to the disk.
    NetbootOff,
    /// PXE stays on; with no workflow left, iPXE gets the local-boot script.
    LocalBootScript,
    /// No second boot at all: the last action kexecs the installed kernel.
    Kexec,
}

fn lifecycle(fw: Firmware, order: Order, after: After, tag: &str, mac: &str, ip: &str, name: &str) {
    let toggle = after == After::NetbootOff;
    let Some(s) = setup(tag, mac, ip, name, !toggle) else {
        return;
    };
    let img_url = format!("http://{SERVER_IP}:8080/osie/installed.img.zst");
    let id = create_workflow(&s, name, mac, &img_url, toggle, after == After::Kexec);
    let disk = s.work.join("vm-disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(256 << 20))
        .expect("empty disk");
    let powered_on = SystemTime::now();
    let start = Instant::now();
    let mut vm = start_vm(&s.ns, &s.tap, mac, fw, order, &s.work, &disk);
    let mut log: Vec<String> = Vec::new();
    let mut success_at: Option<i64> = None;
    let callback = loop {
        log.extend(s.server.drain_log());
        let wf = workflow(&s, &id);
        match wf["state"].as_str() {
            Some("SUCCESS") => success_at = success_at.or(wf["stopped_at"].as_i64()),
            Some("FAILED") | Some("TIMEOUT") | Some("CANCELLED") => panic!(
                "workflow ended {}: {wf:#}\nconsole:\n{}",
                wf["state"],
                console_tail(&s.work)
            ),
            _ => {}
        }
        if let Some(line) = callback_line(&s.server, &s.ns, name) {
            break line;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "no call-back from the installed system within {TIMEOUT:?}; workflow {wf:#}\nconsole:\n{}",
            console_tail(&s.work)
        );
        if let Some(status) = vm.try_wait() {
            std::thread::sleep(Duration::from_secs(3));
            log.extend(s.server.drain_log());
            let logs = ok(&s.server.cli_netns(&s.ns, &["hardware", "logs", name], None));
            if !logs.contains("installed hostname=") {
                panic!(
                    "VM exited ({status}) without a call-back; workflow {wf:#}\nlogs:\n{logs}\nconsole:\n{}",
                    console_tail(&s.work)
                );
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let message = callback["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("installed hostname={name}-cexec ip=")),
        "the installed system read the hostname the workflow wrote (writefile, then cexec): {message}"
    );
    assert!(message.contains(&format!("ip={ip}")), "{message}");
    let wf = workflow(&s, &id);
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    // With the toggle, the success turned netboot off; without it, it is on.
    let hw = ok(&s
        .server
        .cli_netns(&s.ns, &["hardware", "get", name, "-o", "json"], None));
    let hw: Value = serde_json::from_str(&hw).unwrap();
    assert_eq!(
        hw["network"]["interfaces"][0]["netboot"]["allow_pxe"],
        !toggle
    );
    log.extend(s.server.drain_log());
    if after == After::LocalBootScript {
        // The second network boot was answered with the local-boot script.
        assert!(
            log.iter().any(|l| l.contains("serving auto.ipxe")
                && l.contains(mac)
                && l.contains("no pending workflow")),
            "no local-boot script served after the install"
        );
    }
    // Timings from the server's own log stamps.
    log.extend(s.server.drain_log());
    let t0 = unix_ms(powered_on);
    let first = |needle: &str| {
        log.iter()
            .filter(|l| l.contains(needle) && l.contains(mac))
            .find_map(|l| log_time(l))
    };
    let dhcp = first("DHCP reply");
    let connected = first("worker connected");
    let called_back = callback["at"].as_i64();
    let secs = |t: Option<i64>| {
        t.map(|t| format!("{:6.1} s", (t - t0) as f64 / 1000.0))
            .unwrap_or_else(|| "     ?".into())
    };
    eprintln!(
        "LIFECYCLE {fw:?} {after:?}: power-on → first DHCP {} → worker connected {} → workflow SUCCESS {} → installed system's call-back {}",
        secs(dhcp),
        secs(connected),
        secs(success_at),
        secs(called_back)
    );
    for a in wf["tasks"][0]["actions"].as_array().into_iter().flatten() {
        eprintln!(
            "LIFECYCLE {fw:?} {after:?}:   action {} {} ms",
            a["name"].as_str().unwrap_or(""),
            a["duration_ms"].as_i64().unwrap_or(-1)
        );
    }
    assert!(dhcp.is_some() && connected.is_some(), "log lines missing");
    assert!(dhcp < connected && connected < success_at && success_at < called_back);
    let _ = vm.wait();
}

/// BIOS: SeaBIOS tries the NIC (QEMU's iPXE ROM) first, then the disk.
/// After the install the machine still network-boots, and gets the
/// local-boot script.
#[test]
fn bios_vm_is_installed_end_to_end() {
    lifecycle(
        Firmware::Bios,
        Order::NetworkFirst,
        After::LocalBootScript,
        "lb",
        "52:54:00:79:00:10",
        "10.79.0.10",
        "installed-bios",
    );
}

/// UEFI: the blank disk first, so OVMF falls through to its own PXE
/// (snponly.efi over TFTP); after the install the disk boots, and the success
/// has switched network boot off (`--toggle-netboot`).
#[test]
fn uefi_vm_is_installed_end_to_end() {
    lifecycle(
        Firmware::Uefi,
        Order::DiskFirst,
        After::NetbootOff,
        "lu",
        "52:54:00:79:00:11",
        "10.79.0.11",
        "installed-uefi",
    );
}

/// UEFI with the network first and no `--toggle-netboot`: after the
/// install iPXE gets the local-boot script, whose `exit 1` is a failed boot
/// option to OVMF, which goes on to the installed disk (a bare `exit` would
/// be a success, and OVMF would stop in its setup menu).
#[test]
fn uefi_vm_network_first_boots_its_disk_after_the_install() {
    lifecycle(
        Firmware::Uefi,
        Order::NetworkFirst,
        After::LocalBootScript,
        "ln",
        "52:54:00:79:00:14",
        "10.79.0.14",
        "installed-uefi-net",
    );
}

/// The last action kexecs into the installed kernel (`bellows/kexec`): the
/// in-memory OS hands over without firmware or a second network boot.
#[test]
fn bios_vm_is_installed_and_kexecs_into_it() {
    lifecycle(
        Firmware::Bios,
        Order::NetworkFirst,
        After::Kexec,
        "lk",
        "52:54:00:79:00:13",
        "10.79.0.13",
        "installed-kexec",
    );
}

/// A failure in the middle (the image URL answers 404) ends the workflow
/// FAILED naming the cause, and leaves the machine able to retry: netboot
/// stays allowed and a new workflow boots the installer again.
#[test]
fn a_missing_image_fails_the_workflow_with_the_cause_and_the_machine_can_retry() {
    let (mac, ip, name) = ("52:54:00:79:00:12", "10.79.0.12", "install-404");
    let Some(s) = setup("lf", mac, ip, name, false) else {
        return;
    };
    let bad = format!("http://{SERVER_IP}:8080/osie/no-such-image.img.zst");
    let id = create_workflow(&s, name, mac, &bad, true, false);
    let disk = s.work.join("vm-disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(256 << 20))
        .expect("empty disk");
    let mut vm = start_vm(
        &s.ns,
        &s.tap,
        mac,
        Firmware::Bios,
        Order::NetworkFirst,
        &s.work,
        &disk,
    );
    let start = Instant::now();
    let wf = loop {
        let wf = workflow(&s, &id);
        if wf["state"] == "FAILED" || wf["state"] == "SUCCESS" {
            break wf;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "workflow did not end: {wf:#}\nconsole:\n{}",
            console_tail(&s.work)
        );
        if let Some(st) = vm.try_wait() {
            panic!(
                "VM exited ({st}) first\nconsole:\n{}",
                console_tail(&s.work)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(wf["state"], "FAILED", "{wf:#}");
    let msg = wf["message"].as_str().unwrap_or_default();
    assert!(msg.contains("404") && msg.contains("stream-image"), "{msg}");
    // Able to retry: netboot still allowed, the next boot gets the installer.
    let hw = ok(&s
        .server
        .cli_netns(&s.ns, &["hardware", "get", name, "-o", "json"], None));
    let hw: Value = serde_json::from_str(&hw).unwrap();
    assert_eq!(hw["network"]["interfaces"][0]["netboot"]["allow_pxe"], true);
    let good = format!("http://{SERVER_IP}:8080/osie/installed.img.zst");
    let retry = create_workflow(&s, &format!("{name}-2"), mac, &good, true, false);
    // The worker in the still-running in-memory OS picks the new workflow
    // up at once and installs: the retry needs no reboot.
    let start = Instant::now();
    loop {
        let wf2 = workflow(&s, &retry);
        if wf2["state"] == "SUCCESS" {
            break;
        }
        assert!(
            wf2["state"] == "RUNNING" || wf2["state"] == "PENDING",
            "retry failed: {wf2:#}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "retry did not finish: {wf2:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
