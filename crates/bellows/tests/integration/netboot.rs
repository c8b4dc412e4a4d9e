//! Whole network boots of a QEMU VM (TCG) inside a network namespace the
//! test creates: firmware PXE → iPXE → auto.ipxe → kernel + initramfs from
//! Bellows → the booted system finds itself in the metadata service and
//! reports over syslog.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use bellows_testkit::ChildGuard;
use bellows_testkit::netns::{Lab, can_run};

use crate::harness::{Server, ok};
use crate::vm::{Firmware, VmSpec, file_tail};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// A diskless VM that powers off (no reboot) when its OS is done.
fn netboot_vm(ns: &str, tap: &str, mac: &str, fw: Firmware, work: &Path) -> ChildGuard {
    crate::vm::start_vm(&VmSpec {
        ns,
        tap,
        mac,
        fw,
        work,
        memory_mib: 512,
        reboot: false,
        disk: None,
        disk_serial: None,
    })
}

/// Registers the VM and a workflow for it, so auto.ipxe boots the test OS.
pub(crate) fn register(s: &Server, ns: &str, mac: &str, ip: &str, hostname: &str) {
    s.push_machine(ns, hostname, mac, ip, "10.77.0.1", true);
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
fn wait_for_callback(
    s: &Server,
    ns: &str,
    machine: &str,
    vm: &mut ChildGuard,
    work: &Path,
) -> String {
    wait_for_log_line(s, ns, machine, "booted worker=", vm, work)
}

/// Waits for a syslog line containing `needle` filed under `machine`;
/// panics with the console's tail if the VM powers off without one.
pub(crate) fn wait_for_log_line(
    s: &Server,
    ns: &str,
    machine: &str,
    needle: &str,
    vm: &mut ChildGuard,
    work: &Path,
) -> String {
    let start = Instant::now();
    let mut exited_at: Option<Instant> = None;
    loop {
        let logs = ok(&s.cli_netns(ns, &["hardware", "logs", machine], None));
        if let Some(line) = logs.lines().find(|l| l.contains(needle)) {
            eprintln!("booted in {:.1} s", start.elapsed().as_secs_f64());
            return line.to_string();
        }
        let exited = vm.try_wait();
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

pub(crate) fn have_qemu() -> bool {
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

/// Who hands out addresses and boot files in a boot test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Site {
    /// Bellows' own DHCP server, reservation mode.
    Bellows,
    /// The site's dnsmasq, Kea or ISC dhcpd, configured by `bellows
    /// dhcp-config` (seed 003); Bellows' DHCP is off.
    Generated(&'static str),
    /// A plain site DHCP server (addresses only) on another host of the
    /// network, and `bellows server --dhcp-mode proxy` for the boot files.
    ProxyOtherHost,
    /// The same, with the site's DHCP server on Bellows' own host and
    /// address (they share the server identifier).
    ProxySameHost,
}

impl Site {
    fn dhcp_mode(self) -> &'static str {
        match self {
            Site::Bellows => "reservation",
            Site::Generated(_) => "off",
            Site::ProxyOtherHost | Site::ProxySameHost => "proxy",
        }
    }
}

/// One whole boot: Bellows (and the site's DHCP server, if any) in the
/// lab, a VM on its bridge, and the booted OS's report.
fn boot_vm(fw: Firmware, site: Site, tag: &str, mac: &str, ip: &str, name: &str) {
    if !can_run() || !have_qemu() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let os = crate::vm::test_os();
    let mut lab = Lab::new(tag, "10.77.0.1/24");
    let tap = lab.tap(1);
    let ns = lab.server_ns.clone();
    let s = Server::start_on_lab_bridge(
        &ns,
        "10.77.0.1",
        &work.path().join("data"),
        site.dhcp_mode(),
        &[
            "--osie-dir",
            os.to_str().unwrap(),
            "--osie-initrd",
            "initramfs",
            "--kernel-args",
            "e2e.http=http://10.77.0.1:8080",
        ],
    );
    register(&s, &ns, mac, ip, name);
    let site_log = work.path().join("site-dhcp.log");
    let _site_dhcp = match site {
        Site::Bellows => None,
        Site::Generated(format) => Some(start_generated(&s, &ns, format, work.path())),
        Site::ProxyOtherHost => {
            let host = lab.host("dhcp").addr("10.77.0.2/24").add();
            Some(start_plain_dnsmasq(
                &host.ns,
                &host.ifname,
                mac,
                ip,
                work.path(),
            ))
        }
        Site::ProxySameHost => Some(start_plain_dnsmasq(&ns, "br0", mac, ip, work.path())),
    };
    let mut vm = netboot_vm(&ns, &tap, mac, fw, work.path());
    let line = wait_for_callback(&s, &ns, name, &mut vm, work.path());
    assert_callback(&line, mac, ip, name);
    if matches!(fw, Firmware::Uefi) {
        // OVMF's own PXE client fetched iPXE from Bellows' TFTP server.
        let tftp = s.wait_for_log("TFTP transfer complete", Duration::from_secs(2));
        assert!(
            tftp.as_deref().is_some_and(|l| l.contains("snponly.efi")),
            "{tftp:?}"
        );
    }
    if matches!(site, Site::ProxyOtherHost | Site::ProxySameHost) {
        // The lease came from the site's server, taken once: no reply of
        // Bellows' was mistaken for an ACK of it.
        let log = std::fs::read_to_string(&site_log).unwrap_or_default();
        assert!(log.contains("DHCPACK("), "site dnsmasq log:\n{log}");
        assert!(!log.contains("DHCPDECLINE"), "site dnsmasq log:\n{log}");
    }
}

/// The site's DHCP server with the configuration `bellows dhcp-config
/// --format FORMAT` writes, run as the site would run it.
fn start_generated(s: &Server, ns: &str, format: &str, work: &Path) -> ChildGuard {
    let conf = ok(&s.cli_netns(
        ns,
        &["dhcp-config", "--format", format, "--interface", "br0"],
        None,
    ));
    let log = std::fs::File::create(work.join("site-dhcp.log")).expect("site log");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    match format {
        "dnsmasq" => {
            let path = work.join("dnsmasq.conf");
            std::fs::write(
                &path,
                format!(
                    "{conf}bind-interfaces\nno-resolv\nno-hosts\ndhcp-leasefile={}\npid-file={}\nlog-dhcp\nlog-facility={}\n",
                    work.join("leases").display(),
                    work.join("dnsmasq.pid").display(),
                    work.join("site-dhcp.log").display(),
                ),
            )
            .unwrap();
            cmd.args(["dnsmasq", "-k", "-C"]).arg(&path);
        }
        "kea" => {
            let mut v: serde_json::Value = serde_json::from_str(&conf).expect("kea JSON");
            // Run-time paths of this test, not the system's.
            v["Dhcp4"]["lease-database"] = json!({"type": "memfile", "persist": false});
            v["Dhcp4"]["loggers"] = json!([{"name": "kea-dhcp4", "severity": "INFO",
                "output_options": [{"output": "stdout"}]}]);
            let path = work.join("kea.json");
            std::fs::write(&path, v.to_string()).unwrap();
            cmd.args(["kea-dhcp4", "-c"])
                .arg(&path)
                .env("KEA_PIDFILE_DIR", work)
                .env("KEA_LOCKFILE_DIR", work);
        }
        "isc" => {
            let path = work.join("dhcpd.conf");
            std::fs::write(&path, &conf).unwrap();
            let leases = work.join("dhcpd.leases");
            std::fs::write(&leases, "").unwrap();
            cmd.args(["dhcpd", "-f", "-d", "-4", "-cf"])
                .arg(&path)
                .arg("-lf")
                .arg(&leases)
                .arg("-pf")
                .arg(work.join("dhcpd.pid"))
                .arg("br0");
        }
        other => panic!("no site DHCP server {other}"),
    }
    let err = log.try_clone().expect("site log");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start the site's {format}: {e}"));
    std::thread::sleep(Duration::from_secs(1));
    started(child, format, &work.join("site-dhcp.log"))
}

/// The site daemon, checked to be still running (a configuration it
/// refuses fails the test here, with its log, not at the boot timeout).
fn started(mut child: std::process::Child, what: &str, log: &Path) -> ChildGuard {
    if let Ok(Some(status)) = child.try_wait() {
        panic!(
            "the site's {what} exited ({status}):\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    ChildGuard::adopt(what, child)
}

/// A site DHCP server that knows nothing of network boot: dnsmasq handing
/// out addresses (the VM's reserved one) and no boot file, on `iface`.
fn start_plain_dnsmasq(ns: &str, iface: &str, mac: &str, ip: &str, work: &Path) -> ChildGuard {
    let path = work.join("site-dnsmasq.conf");
    std::fs::write(
        &path,
        format!(
            "interface={iface}\nbind-interfaces\nport=0\nno-resolv\nno-hosts\n\
             dhcp-range=10.77.0.100,10.77.0.200,255.255.255.0,10m\n\
             dhcp-host={mac},{ip}\ndhcp-authoritative\n\
             dhcp-leasefile={}\npid-file={}\nlog-dhcp\nlog-facility={}\n",
            work.join("site-leases").display(),
            work.join("site-dnsmasq.pid").display(),
            work.join("site-dhcp.log").display(),
        ),
    )
    .unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "dnsmasq", "-k", "-C"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the site's dnsmasq");
    std::thread::sleep(Duration::from_millis(500));
    started(child, "dnsmasq", &work.join("site-dhcp.log"))
}

/// BIOS: SeaBIOS with QEMU's NIC ROM, which is iPXE: it asks for the
/// script at once.
#[test]
fn bios_vm_boots_with_dnsmasq_from_the_generated_config() {
    boot_vm(
        Firmware::Bios,
        Site::Generated("dnsmasq"),
        "nbd",
        "52:54:00:77:00:50",
        "10.77.0.50",
        "e2e-bios-dnsmasq",
    );
}

/// UEFI: OVMF with the NIC ROM disabled, so OVMF's own PXE client gets
/// `snponly.efi` from Bellows over TFTP, which then fetches the script.
#[test]
fn uefi_vm_boots_with_dnsmasq_from_the_generated_config() {
    boot_vm(
        Firmware::Uefi,
        Site::Generated("dnsmasq"),
        "nud",
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
        Site::Bellows,
        "nb",
        "52:54:00:77:00:60",
        "10.77.0.60",
        "e2e-bios",
    );
}

/// Bellows alone, UEFI: OVMF's own PXE gets snponly.efi over Bellows' TFTP,
/// then iPXE gets the script URL, all from Bellows' DHCP.
#[test]
fn uefi_vm_boots_against_bellows_alone() {
    boot_vm(
        Firmware::Uefi,
        Site::Bellows,
        "nu",
        "52:54:00:77:00:61",
        "10.77.0.61",
        "e2e-uefi",
    );
}

/// The site's Kea, configured by `bellows dhcp-config --format kea`.
#[test]
fn bios_vm_boots_with_kea_from_the_generated_config() {
    boot_vm(
        Firmware::Bios,
        Site::Generated("kea"),
        "nbk",
        "52:54:00:77:00:52",
        "10.77.0.52",
        "e2e-bios-kea",
    );
}

#[test]
fn uefi_vm_boots_with_kea_from_the_generated_config() {
    boot_vm(
        Firmware::Uefi,
        Site::Generated("kea"),
        "nuk",
        "52:54:00:77:00:53",
        "10.77.0.53",
        "e2e-uefi-kea",
    );
}

/// The site's ISC dhcpd, configured by `bellows dhcp-config --format isc`.
#[test]
fn bios_vm_boots_with_isc_dhcpd_from_the_generated_config() {
    boot_vm(
        Firmware::Bios,
        Site::Generated("isc"),
        "nbi",
        "52:54:00:77:00:54",
        "10.77.0.54",
        "e2e-bios-isc",
    );
}

#[test]
fn uefi_vm_boots_with_isc_dhcpd_from_the_generated_config() {
    boot_vm(
        Firmware::Uefi,
        Site::Generated("isc"),
        "nui",
        "52:54:00:77:00:55",
        "10.77.0.55",
        "e2e-uefi-isc",
    );
}

/// Proxy mode: a plain site DHCP server on another host gives the address,
/// Bellows only the boot files (ProxyDHCP on 67 and 4011). QEMU's iPXE ROM
/// takes a ProxyDHCP reply only with next-server and a file name.
#[test]
fn bios_vm_boots_through_proxy_dhcp_beside_a_plain_site_server() {
    boot_vm(
        Firmware::Bios,
        Site::ProxyOtherHost,
        "npb",
        "52:54:00:77:00:56",
        "10.77.0.56",
        "e2e-bios-proxy",
    );
}

/// Proxy mode under UEFI: OVMF's PXE gets snponly.efi from the proxy's
/// reply, then iPXE its script the same way.
#[test]
fn uefi_vm_boots_through_proxy_dhcp_beside_a_plain_site_server() {
    boot_vm(
        Firmware::Uefi,
        Site::ProxyOtherHost,
        "npu",
        "52:54:00:77:00:57",
        "10.77.0.57",
        "e2e-uefi-proxy",
    );
}

/// Proxy mode on the site DHCP server's own host: one address for both,
/// so the client's lease REQUEST names Bellows' identifier too; Bellows
/// must not answer it (OVMF would decline its lease).
#[test]
fn bios_vm_boots_through_proxy_dhcp_on_the_site_servers_host() {
    boot_vm(
        Firmware::Bios,
        Site::ProxySameHost,
        "nsb",
        "52:54:00:77:00:58",
        "10.77.0.58",
        "e2e-bios-proxy-same",
    );
}

#[test]
fn uefi_vm_boots_through_proxy_dhcp_on_the_site_servers_host() {
    boot_vm(
        Firmware::Uefi,
        Site::ProxySameHost,
        "nsu",
        "52:54:00:77:00:59",
        "10.77.0.59",
        "e2e-uefi-proxy-same",
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
    let mut lab = Lab::new("nl", "10.77.0.1/24");
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
    s.push_machine(&ns, "e2e-idle", mac, "10.77.0.70", "10.77.0.1", true);
    let _vm = netboot_vm(&ns, &tap, mac, Firmware::Bios, work.path());
    let served = s.wait_for_log("serving auto.ipxe", BOOT_TIMEOUT);
    let served = served.expect("the VM never fetched its script");
    assert!(
        served.contains(mac) && served.contains("LocalBoot(\"no pending workflow\")"),
        "{served}"
    );
}
