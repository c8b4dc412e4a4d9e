//! The in-memory OS end to end: `bellows image build` writes it into the
//! server's data directory; a QEMU VM (TCG) on a bridge in a namespace the
//! test creates network-boots it from Bellows (DHCP reservation → iPXE →
//! kernel + initramfs), its init brings up the network and starts
//! `bellows worker`, which runs the machine's workflow — a file written in
//! the in-memory OS, a file written onto the VM's ext4 disk, a root
//! filesystem tarball unpacked onto it and a command run in a chroot of it
//! (Tinkerbell's archive2disk and cexec image names, run by the built-ins
//! with the in-memory OS's busybox tar and chroot), a power-off — while the
//! kernel, init and worker logs reach Bellows' syslog receiver. Then
//! e2fsprogs' `debugfs` reads the results back from the disk image.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use bellows_testkit::ChildGuard;
use bellows_testkit::netns::{Lab, can_run};

use crate::harness::{BIN, Server, ok};

/// Power-on to the worker's first call, generously bounded for TCG.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// Worker connected to the workflow's end.
const WORKFLOW_TIMEOUT: Duration = Duration::from_secs(300);
/// The last action's power-off to QEMU's exit.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(60);

const TEMPLATE: &str = r#"version: "0.1"
name: osie
global_timeout: 900
tasks:
  - name: provision
    worker: "{{.device_1}}"
    actions:
      - name: write-in-memory
        image: bellows/writefile
        timeout: 60
        environment:
          DEST_PATH: /tmp/x
          CONTENTS: hi
      - name: write-disk
        image: bellows/writefile
        timeout: 120
        environment:
          DEST_DISK: /dev/vda
          FS_TYPE: ext4
          DEST_PATH: /etc/bellows/hello
          CONTENTS: written by the in-memory OS
          MODE: "0600"
      - name: unpack-rootfs
        image: quay.io/tinkerbell/actions/archive2disk:v3.0.0
        timeout: 120
        environment:
          ARCHIVE_URL: "@HTTP_BASE@/osie/rootfs.tar.gz"
          ARCHIVE_TYPE: targz
          DEST_DISK: /dev/vda
          FS_TYPE: ext4
          DEST_PATH: /
      - name: configure-in-chroot
        image: quay.io/tinkerbell/actions/cexec:v3.0.0
        timeout: 60
        environment:
          BLOCK_DEVICE: /dev/vda
          FS_TYPE: ext4
          CHROOT: y
          DEFAULT_INTERPRETER: /bin/sh -c
          CMD_LINE: "echo configured in $(cat /etc/marker) > /etc/chroot-ok; test -r /proc/self/status && echo proc mounted"
      - name: power-off
        image: bellows/reboot
        timeout: 60
        environment:
          ACTION: poweroff
"#;

fn have_tools() -> bool {
    let ok = Path::new("/usr/bin/qemu-system-x86_64").exists()
        && Command::new("mkfs.ext4").arg("-V").output().is_ok()
        && Command::new("debugfs").arg("-V").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "qemu-system-x86 and e2fsprogs are required; scripts/test.sh installs them"
        );
        eprintln!("skipped: no qemu-system-x86_64 / mkfs.ext4 / debugfs");
    }
    ok
}

/// A root filesystem tarball packed by GNU tar and gzip: Debian's static
/// busybox as `/bin/sh` and a few applets, `/etc/marker`, and the mount
/// points a chroot needs.
fn rootfs_tarball(dest: &Path) {
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    for dir in ["bin", "dev", "proc", "sys", "etc", "tmp"] {
        std::fs::create_dir(root.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    for applet in ["sh", "cat", "echo", "test"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/marker"), "the unpacked root\n").unwrap();
    ok(&Command::new("tar")
        .args(["-c", "-z", "-f"])
        .arg(dest)
        .arg("-C")
        .arg(root)
        .arg(".")
        .output()
        .unwrap());
}

fn console_tail(work: &Path) -> String {
    crate::vm::file_tail(&work.join("console.log"), 6000)
}

fn workflow_state(s: &Server, ns: &str, id: &str) -> Value {
    let out = ok(&s.cli_netns(ns, &["workflow", "get", id, "-o", "json"], None));
    serde_json::from_str(&out).expect("workflow JSON")
}

/// One VM booting the in-memory OS from a server in a lab of its own.
/// Fields drop in order: QEMU first, then the server, then the lab (its
/// namespaces and anything left in them), then the files.
struct Boot {
    vm: ChildGuard,
    _relay: Option<ChildGuard>,
    s: Server,
    _lab: Lab,
    ns: String,
    id: String,
    work: tempfile::TempDir,
    power_on: Instant,
}

/// How a VM is set up.
struct Setup<'a> {
    tag: &'a str,
    mac: &'a str,
    ip: &'a str,
    name: &'a str,
    template: &'a str,
    /// `--kernel-args` for the server.
    kernel_args: Option<&'a str>,
    /// A 64 MiB ext4 disk (virtio) for the VM.
    disk: bool,
    /// Put the VM behind `vlan_relay.py`: (VLAN id, its subnet, the
    /// server's address in it).
    vlan: Option<(u16, &'a str, &'a str)>,
    /// Extra fields of the machine's record: merged into its `dhcp` object
    /// and, as `metadata`, at the top.
    dhcp_extra: Option<Value>,
    metadata: Option<Value>,
}

impl Boot {
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.work.path().join(name)
    }

    fn console_tail(&self) -> String {
        console_tail(self.work.path())
    }

    /// Builds the image with `bellows image build` into the server's data
    /// directory, starts the server and registers the machine and its
    /// workflow, then powers the VM on.
    fn start(setup: &Setup<'_>) -> Boot {
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("data");
        let started = Instant::now();
        let built = Command::new(BIN)
            .args(["image", "build", "--data-dir"])
            .arg(&data)
            .output()
            .expect("run bellows image build");
        let report = ok(&built);
        eprintln!(
            "bellows image build ({:.1} s):\n{report}",
            started.elapsed().as_secs_f64()
        );
        assert!(report.contains("initramfs"), "{report}");
        assert!(data.join("osie/vmlinuz").is_file() && data.join("osie/initramfs").is_file());

        let disk = work.path().join("disk.img");
        if setup.disk {
            std::fs::File::create(&disk)
                .unwrap()
                .set_len(64 << 20)
                .unwrap();
            ok(&Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "bellows-test"])
                .arg(&disk)
                .output()
                .unwrap());
        }

        let mut lab = Lab::new(setup.tag, "10.77.0.1/24");
        let tap = lab.tap(1);
        let ns = lab.server_ns.clone();
        let relay = setup.vlan.map(|(vid, subnet, gateway)| {
            let out = Command::new("ip")
                .args(["-n", &ns, "addr", "add", gateway, "dev", "br0"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/integration/vlan_relay.py"
            );
            let mut child = Command::new("ip")
                .args(["netns", "exec", &ns, "python3", script, &tap])
                .args([RELAY_VM_PORT, RELAY_PORT, &vid.to_string(), subnet])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start vlan_relay.py");
            let mut line = String::new();
            use std::io::BufRead;
            let stdout = child.stdout.take().expect("relay stdout");
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "relay ready");
            ChildGuard::adopt("vlan_relay.py", child)
        });
        // The image is found at the default --osie-dir, DATA_DIR/osie.
        let mut args = vec![
            "--dhcp-mode",
            "reservation",
            "--interface",
            "br0",
            "--tftp-listen",
            "off",
        ];
        if let Some(k) = setup.kernel_args {
            args.extend(["--kernel-args", k]);
        }
        if setup.vlan.is_some() {
            // The worker calls from its VLAN address, not the reserved one
            // it booted by: a routed network, so credentials cannot be
            // bound to the reservation (see SECURITY.md).
            args.push("--allow-script-from-any-address");
        }
        if setup.disk {
            // Served by Bellows beside the in-memory OS, at /osie/.
            rootfs_tarball(&data.join("osie/rootfs.tar.gz"));
        }
        let s = Server::start_in_netns_with(&ns, "10.77.0.1", &data, &args);
        let template = setup.template.replace("@HTTP_BASE@", &s.http_url);
        let mut hw = json!({"id": setup.name, "network": {"interfaces": [{
            "dhcp": {"mac": setup.mac, "hostname": setup.name, "lease_time": 600,
                     "ip": {"address": setup.ip, "netmask": "255.255.255.0", "gateway": "10.77.0.1"}},
            "netboot": {"allow_pxe": true, "allow_workflow": true}}]}});
        if let (Some(Value::Object(extra)), Some(Value::Object(dhcp))) = (
            setup.dhcp_extra.clone(),
            hw.pointer_mut("/network/interfaces/0/dhcp"),
        ) {
            dhcp.extend(extra);
        }
        if let Some(metadata) = setup.metadata.clone() {
            hw["metadata"] = metadata;
        }
        ok(&s.cli_netns(
            &ns,
            &["hardware", "push", "-f", "-"],
            Some(hw.to_string().as_bytes()),
        ));
        ok(&s.cli_netns(
            &ns,
            &["template", "create", "-n", setup.tag, "-p", "-"],
            Some(template.as_bytes()),
        ));
        let created = ok(&s.cli_netns(
            &ns,
            &[
                "workflow",
                "create",
                "-t",
                setup.tag,
                "-r",
                &format!("{{\"device_1\":\"{}\"}}", setup.mac),
            ],
            None,
        ));
        let id = created.trim().to_string();

        let mut qemu = Command::new("ip");
        qemu.args(["netns", "exec", &ns, "qemu-system-x86_64"])
            .args(["-accel", "tcg", "-m", "1024", "-smp", "1"])
            .args([
                "-nographic",
                "-no-reboot",
                "-display",
                "none",
                "-monitor",
                "none",
            ])
            .arg("-serial")
            .arg(format!(
                "file:{}",
                work.path().join("console.log").display()
            ))
            .args(["-boot", "n"])
            .arg("-netdev")
            .arg(if relay.is_some() {
                format!(
                    "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={RELAY_VM_PORT},\
                     remote.type=inet,remote.host=127.0.0.1,remote.port={RELAY_PORT}"
                )
            } else {
                format!("tap,id=n0,ifname={tap},script=no,downscript=no")
            })
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={}", setup.mac),
            ]);
        if setup.disk {
            qemu.arg("-drive")
                .arg(format!("file={},if=virtio,format=raw", disk.display()));
        }
        let power_on = Instant::now();
        let vm = ChildGuard::spawn("qemu", qemu.stdout(Stdio::null()).stderr(Stdio::null()));
        Boot {
            vm,
            _relay: relay,
            s,
            _lab: lab,
            ns,
            id,
            work,
            power_on,
        }
    }

    /// Waits for the worker's first call; returns the time from power-on.
    fn wait_connected(&mut self, mac: &str) -> Duration {
        let connected = self.s.wait_for_log("worker connected", CONNECT_TIMEOUT);
        let exited = self.vm.try_wait();
        assert!(
            connected.as_deref().is_some_and(|l| l.contains(mac)),
            "no worker connected within {CONNECT_TIMEOUT:?} (qemu exit: {exited:?}): {connected:?}\nconsole tail:\n{}",
            self.console_tail()
        );
        self.power_on.elapsed()
    }

    /// Waits for the workflow to end; asserts SUCCESS; returns the time.
    fn wait_success(&self) -> Duration {
        let deadline = Instant::now() + WORKFLOW_TIMEOUT;
        let wf = loop {
            let wf = workflow_state(&self.s, &self.ns, &self.id);
            let state = wf["state"].as_str().unwrap_or("").to_string();
            if ["SUCCESS", "FAILED", "TIMEOUT"].contains(&state.as_str()) {
                break wf;
            }
            assert!(
                Instant::now() < deadline,
                "workflow still {state} after {WORKFLOW_TIMEOUT:?}: {wf:#}\nconsole tail:\n{}",
                self.console_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        assert_eq!(
            wf["state"],
            "SUCCESS",
            "{wf:#}\nconsole tail:\n{}",
            self.console_tail()
        );
        self.power_on.elapsed()
    }

    /// Waits for QEMU to exit because the worker powered the VM off;
    /// returns the time and the console.
    fn wait_poweroff(&mut self) -> (Duration, String) {
        let deadline = Instant::now() + POWEROFF_TIMEOUT;
        let status = loop {
            if let Some(status) = self.vm.try_wait() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the VM did not power off within {POWEROFF_TIMEOUT:?}\nconsole tail:\n{}",
                self.console_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let t = self.power_on.elapsed();
        let console = std::fs::read_to_string(self.path("console.log")).unwrap_or_default();
        assert!(status.success(), "qemu: {status}");
        assert!(
            console.contains("reboot: Power down"),
            "a power-off, not a reboot or a crash:\n{}",
            self.console_tail()
        );
        // The init's own account of the boot, with kernel uptimes.
        for line in console.lines().filter(|l| l.starts_with("bellows-osie: [")) {
            eprintln!("console: {line}");
        }
        (t, console)
    }
}

fn report_timings(connected: Duration, success: Duration, off: Duration, console: &str) {
    let init_at = console
        .lines()
        .find(|l| l.starts_with("bellows-osie: [") && l.contains("in-memory OS"))
        .and_then(|l| l.split_once('[')?.1.split_once(']'))
        .map_or("?", |(t, _)| t);
    eprintln!(
        "timings from power-on: worker connected {:.1} s, workflow SUCCESS {:.1} s, powered off {:.1} s (kernel uptime at /init: {init_at} s)",
        connected.as_secs_f64(),
        success.as_secs_f64(),
        off.as_secs_f64(),
    );
}

const MAC: &str = "52:54:00:77:00:80";
/// UDP ports (inside the lab's namespace) of QEMU's dgram netdev and the relay.
const RELAY_VM_PORT: &str = "40100";
const RELAY_PORT: &str = "40101";

/// DHCP from Bellows' reservation, a workflow that writes into the
/// in-memory OS and onto the VM's ext4 disk and powers off, syslog and
/// inventory from the booted machine.
#[test]
fn the_in_memory_os_boots_and_its_worker_runs_a_workflow() {
    if !can_run() || !have_tools() {
        return;
    }
    let name = "osie-vm";
    let mut b = Boot::start(&Setup {
        tag: "os",
        mac: MAC,
        ip: "10.77.0.80",
        name,
        template: TEMPLATE,
        kernel_args: None,
        disk: true,
        vlan: None,
        dhcp_extra: None,
        metadata: None,
    });
    let connected = b.wait_connected(MAC);
    let success = b.wait_success();
    let (off, console) = b.wait_poweroff();
    report_timings(connected, success, off, &console);
    assert!(
        console.contains("DHCP: 10.77.0.80 on eth0"),
        "the reserved address"
    );

    // The file on the VM's disk, read by e2fsprogs.
    let disk = b.path("disk.img");
    let cat = ok(&Command::new("debugfs")
        .args(["-R", "cat /etc/bellows/hello"])
        .arg(&disk)
        .output()
        .unwrap());
    assert_eq!(cat, "written by the in-memory OS");
    let stat = ok(&Command::new("debugfs")
        .args(["-R", "stat /etc/bellows/hello"])
        .arg(&disk)
        .output()
        .unwrap());
    assert!(stat.contains("Mode:  0600"), "{stat}");
    // archive2disk unpacked the tarball; cexec ran in a chroot of it.
    let configured = ok(&Command::new("debugfs")
        .args(["-R", "cat /etc/chroot-ok"])
        .arg(&disk)
        .output()
        .unwrap());
    assert_eq!(configured, "configured in the unpacked root\n");

    // Syslog: the kernel's, the init's and the worker's lines, filed under
    // the machine by its reserved address.
    let (s, ns) = (&b.s, b.ns.as_str());
    // The chroot command's own output, in the workflow's action log.
    let action_log = ok(&s.cli_netns(
        ns,
        &["workflow", "logs", &b.id, "--action", "configure-in-chroot"],
        None,
    ));
    assert!(
        action_log
            .lines()
            .any(|l| l.ends_with("proc mounted") && !l.contains("echo")),
        "{action_log}"
    );
    let logs = ok(&s.cli_netns(ns, &["hardware", "logs", name, "--limit", "10000"], None));
    if std::env::var_os("BELLOWS_TEST_SHOW_LOGS").is_some() {
        eprintln!("{logs}\n{console}");
    }
    for (app, what) in [
        ("bellows-osie", "the init"),
        ("bellows-worker", "the worker"),
        ("kernel", "klogd"),
    ] {
        assert!(
            logs.lines().any(|l| l.contains(app)),
            "no syslog lines from {what} ({app}):\n{logs}"
        );
    }
    assert!(logs.contains("worker starting"), "{logs}");
    assert!(
        logs.contains("Linux version"),
        "the kernel log from its start: {logs}"
    );

    // Inventory from the worker: this VM's virtio disk and NIC.
    let inv: Value = serde_json::from_str(&ok(&s.cli_netns(
        ns,
        &["hardware", "inventory", name, "-o", "json"],
        None,
    )))
    .unwrap();
    let facts = &inv["facts"];
    let disks = facts["disks"].as_array().cloned().unwrap_or_default();
    assert!(
        disks
            .iter()
            .any(|d| d["name"] == "vda" && d["size_bytes"].as_u64() == Some(64 << 20)),
        "{inv:#}"
    );
    let nics = facts["nics"].as_array().cloned().unwrap_or_default();
    assert!(
        nics.iter()
            .any(|n| n["mac"] == MAC && n["driver"] == "virtio_net"),
        "{inv:#}"
    );
    assert_eq!(facts["hostname"], name, "the host name from DHCP: {inv:#}");
    let table = ok(&s.cli_netns(ns, &["hardware", "inventory", name], None));
    assert!(table.contains("vda") && table.contains(MAC), "{table}");
}

/// No DHCP for the OS: a static address in the kernel's `ip=` format on
/// VLAN 100, the only way to the server: `vlan_relay.py` stands between
/// the VM and the bridge as a switch port (untagged for iPXE's own DHCP
/// boot, VLAN 100 tagged for the 10.78.0.0/24 subnet; frames from that
/// subnet without the tag are dropped). The VLAN is the hardware record's
/// `dhcp.vlan_id`, as Tinkerbell records carry it: the server's script
/// writes `vlan_id=100` (and the record's facility) on the kernel line,
/// where the init finds it; `--kernel-args` give only the address.
#[test]
fn the_in_memory_os_takes_a_static_address_on_a_vlan() {
    if !can_run() || !have_tools() {
        return;
    }
    let mac = "52:54:00:77:00:81";
    let template = r#"version: "0.1"
name: vlan
global_timeout: 600
tasks:
  - name: provision
    worker: "{{.device_1}}"
    actions:
      - name: write
        image: bellows/writefile
        timeout: 60
        environment:
          DEST_PATH: /tmp/x
          CONTENTS: hi
      - name: power-off
        image: bellows/reboot
        timeout: 60
        environment:
          ACTION: poweroff
"#;
    let mut b = Boot::start(&Setup {
        tag: "ov",
        mac,
        ip: "10.77.0.81",
        name: "vlan-vm",
        template,
        kernel_args: Some("ip=10.78.0.81::10.78.0.1:255.255.255.0:static-vm"),
        disk: false,
        vlan: Some((100, "10.78.0.0/24", "10.78.0.1/24")),
        dhcp_extra: Some(json!({"vlan_id": "100"})),
        metadata: Some(json!({"facility": {"facility_code": "onprem"}})),
    });
    let connected = b.wait_connected(mac);
    let success = b.wait_success();
    let (off, console) = b.wait_poweroff();
    report_timings(connected, success, off, &console);
    // The kernel's own account of its command line: the record's words.
    let cmdline = console
        .lines()
        .find(|l| l.contains("Command line:"))
        .unwrap_or_default();
    let hw_addr = format!(" hw_addr={mac}");
    for word in [" vlan_id=100", " facility=onprem", hw_addr.as_str()] {
        assert!(cmdline.contains(word), "{word} missing: {cmdline}");
    }
    assert!(!cmdline.contains("bellows.vlan"), "{cmdline}");
    assert!(
        console.contains("VLAN 100 on eth0.100 (vlan_id=)"),
        "{}",
        b.console_tail()
    );
    assert!(
        console.contains("static address 10.78.0.81/24 gateway 10.78.0.1 on eth0.100"),
        "{}",
        b.console_tail()
    );
    assert!(
        !console.contains("DHCP on"),
        "no DHCP with a static address"
    );
    // The worker reported from the VLAN address, under the host name ip= gave.
    let inv: Value = serde_json::from_str(&ok(&b.s.cli_netns(
        &b.ns,
        &["hardware", "inventory", "vlan-vm", "-o", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(inv["facts"]["hostname"], "static-vm", "{inv:#}");
    let addrs = inv["facts"].to_string();
    assert!(addrs.contains("10.78.0.81"), "{inv:#}");
}
