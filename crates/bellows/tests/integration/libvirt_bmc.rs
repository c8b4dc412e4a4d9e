//! A BMC-driven network boot of a real VM: a private `libvirtd`, started by
//! hand (no systemd) inside the test's network namespace, runs a QEMU domain
//! (TCG) whose NIC is on the namespace's bridge; `sushy-emulator` with its
//! libvirt driver is the domain's Redfish BMC. `bellows netboot` powers the
//! domain off, sets PXE, powers it on, and the VM network-boots against
//! Bellows into the test OS, which reports over syslog. libvirt itself
//! (`virsh`, not our code) confirms the domain runs with the NIC first in
//! its boot order.
//!
//! The private libvirtd keeps nothing of the host's: it runs in its own mount
//! namespace where the test's directories are bind-mounted over
//! `/etc/libvirt`, `/run/libvirt`, `/var/lib/libvirt`, `/var/cache/libvirt`
//! and `/var/log/libvirt` (so no host domains, networks or firewall rules),
//! with `/etc/passwd` and `/etc/group` bind-mounted copies that add the
//! `libvirt-qemu` user the Debian build insists on resolving (QEMU itself
//! runs as root: `qemu.conf` says so). Clients reach it with
//! `qemu:///system?socket=<dir>/run/libvirt-sock`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use bellows_testkit::bmc::{PASSWORD, SUSHY_TOOLS_VERSION, USERNAME};
use bellows_testkit::files::write_file;
use bellows_testkit::netns::{Lab, can_run};
use bellows_testkit::packages::apt_install;
use bellows_testkit::{ChildGuard, run_checked, wait_until};

use crate::harness::{Server, ok};

const SERVER_IP: &str = "10.77.0.1";
const SUSHY_PORT: u16 = 8000;
const MAC: &str = "52:54:00:77:00:80";
const VM_IP: &str = "10.77.0.80";
const MACHINE: &str = "e2e-libvirt";
/// The machine is busy (parallel QEMU tests on two cores): bound waits
/// generously.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const LIBVIRTD_TIMEOUT: Duration = Duration::from_secs(300);

/// The Debian packages this test needs (scripts/test.sh installs them).
const PACKAGES: &[&str] = &[
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "python3-libvirt",
    "python3-venv",
    "qemu-system-x86",
    "ipxe-qemu",
    "curl",
    "openssl",
];

fn debian_python_has_libvirt() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import libvirt, venv"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn have_everything() -> bool {
    [
        "/usr/sbin/libvirtd",
        "/usr/bin/virsh",
        "/usr/bin/qemu-system-x86_64",
        "/usr/bin/curl",
        "/usr/bin/openssl",
    ]
    .iter()
    .all(|p| Path::new(p).exists())
        && debian_python_has_libvirt()
}

/// Installs the packages when something is missing.
fn ensure_packages() {
    if have_everything() {
        return;
    }
    apt_install(PACKAGES);
    assert!(
        have_everything(),
        "packages {PACKAGES:?} did not provide everything"
    );
}

/// A virtualenv with sushy-emulator that also sees Debian's libvirt
/// bindings (`python3-libvirt`), created once under /tmp with Debian's own
/// Python.
fn sushy_libvirt_venv() -> PathBuf {
    let venv = PathBuf::from("/tmp/bellows-bmc-libvirt-venv");
    let script = format!(
        "test -x {venv}/bin/sushy-emulator || {{ rm -rf {venv} && \
         /usr/bin/python3 -m venv --system-site-packages {venv} && \
         {venv}/bin/pip install --quiet --disable-pip-version-check sushy-tools=={SUSHY_TOOLS_VERSION}; }}",
        venv = venv.display()
    );
    run_checked(
        Command::new("flock").args(["/tmp/bellows-bmc-libvirt-venv.lock", "sh", "-c", &script]),
        "pip install sushy-tools (libvirt venv)",
    );
    run_checked(
        Command::new(venv.join("bin/python")).args(["-c", "import libvirt, sushy_tools, bcrypt"]),
        "the libvirt venv imports libvirt, sushy_tools and bcrypt",
    );
    venv
}

/// A private libvirtd in network namespace `ns`, its state under `dir`.
struct Libvirtd {
    uri: String,
    dir: PathBuf,
    _process: ChildGuard,
}

impl Libvirtd {
    fn start(ns: &str, dir: &Path) -> Libvirtd {
        for sub in ["etc/qemu", "run", "lib", "cache", "log"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let log = dir.join("libvirtd.log");
        write_file(
            &dir.join("etc/libvirtd.conf"),
            &format!(
                "listen_tls = 0\nlisten_tcp = 0\n\
                 unix_sock_group = \"root\"\nunix_sock_rw_perms = \"0700\"\n\
                 auth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\n\
                 log_outputs = \"3:file:{}\"\n",
                log.display()
            ),
        );
        // QEMU as root, no virtlogd (console and log files written by QEMU
        // and libvirtd themselves), no cgroups, no private /dev, no
        // AppArmor/SELinux labelling.
        write_file(
            &dir.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\n\
             dynamic_ownership = 0\nremember_owner = 0\n\
             security_driver = \"none\"\nnamespaces = [ ]\n\
             cgroup_controllers = [ ]\nstdio_handler = \"file\"\n",
        );
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let group = std::fs::read_to_string("/etc/group").unwrap();
        write_file(
            &dir.join("passwd"),
            &format!(
                "{passwd}{}libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n",
                if passwd.ends_with('\n') { "" } else { "\n" }
            ),
        );
        write_file(
            &dir.join("group"),
            &format!(
                "{group}{}libvirt-qemu:x:64055:\n",
                if group.ends_with('\n') { "" } else { "\n" }
            ),
        );
        let d = dir.display();
        // `ip netns exec` and `unshare` exec in place, and so does the
        // shell: the child's PID is libvirtd's.
        let script = format!(
            "set -e\n\
             mkdir -p /etc/libvirt /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt\n\
             mount --bind {d}/passwd /etc/passwd\n\
             mount --bind {d}/group /etc/group\n\
             mount --bind {d}/etc /etc/libvirt\n\
             mount --bind {d}/run /run/libvirt\n\
             mount --bind {d}/lib /var/lib/libvirt\n\
             mount --bind {d}/cache /var/cache/libvirt\n\
             mount --bind {d}/log /var/log/libvirt\n\
             exec libvirtd --config /etc/libvirt/libvirtd.conf --pid-file /run/libvirt/libvirtd.pid\n"
        );
        let out_path = dir.join("libvirtd.out");
        let out = std::fs::File::create(&out_path).unwrap();
        let mut process = ChildGuard::spawn(
            "libvirtd",
            Command::new("ip")
                .args(["netns", "exec", ns, "unshare", "--mount"])
                .args(["--propagation", "private", "sh", "-c", &script])
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        );
        let uri = format!(
            "qemu:///system?socket={}",
            dir.join("run/libvirt-sock").display()
        );
        let started = Instant::now();
        // The first connection waits for QEMU's capabilities probe.
        wait_until(LIBVIRTD_TIMEOUT, "libvirtd", &out_path, || {
            process.assert_running(&out_path);
            dir.join("run/libvirt-sock").exists()
                && virsh_output(&uri, &["version"]).status.success()
        });
        eprintln!("libvirtd ready in {:.1} s", started.elapsed().as_secs_f64());
        Libvirtd {
            uri,
            dir: dir.to_path_buf(),
            _process: process,
        }
    }

    fn virsh(&self, args: &[&str]) -> String {
        let out = virsh_output(&self.uri, args);
        assert!(
            out.status.success(),
            "virsh {}: {}\n{}\nlibvirtd log:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            crate::vm::file_tail(&self.dir.join("libvirtd.log"), 3000)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `virsh` against the private daemon, bounded in time.
fn virsh_output(uri: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["120", "virsh", "-q", "-c", uri])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run virsh")
}

/// A defined domain, destroyed and undefined when dropped (before libvirtd
/// is stopped; the Lab then kills whatever is left in the namespace).
struct Domain {
    uri: String,
    name: String,
}

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = virsh_output(&self.uri, &["destroy", &self.name]);
        let _ = virsh_output(&self.uri, &["undefine", &self.name]);
    }
}

/// The domain: TCG, 512 MiB, no disk, the NIC (virtio, QEMU's iPXE ROM) on
/// the namespace's bridge, SeaBIOS set to boot the (absent) disk, so only
/// the BMC's boot override makes it boot from the network.
fn domain_xml(name: &str, console: &Path) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'>
      <source bridge='br0'/>
      <mac address='{MAC}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
",
        console = console.display()
    )
}

/// sushy-emulator (libvirt driver) in the namespace, on the bridge address,
/// exposing only the test's domain.
fn start_sushy(ns: &str, dir: &Path, uri: &str, uuid: &str) -> ChildGuard {
    let venv = sushy_libvirt_venv();
    std::fs::create_dir_all(dir).unwrap();
    let hash = run_checked(
        Command::new(venv.join("bin/python")).args([
            "-c",
            "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt()).decode())",
            PASSWORD,
        ]),
        "bcrypt",
    );
    let htpasswd = dir.join("htpasswd");
    write_file(&htpasswd, &format!("{USERNAME}:{hash}"));
    let config = dir.join("sushy.conf");
    // Its Legacy boot mode writes a ROM loader; give it SeaBIOS' path (the
    // default, none, is a domain libvirt refuses).
    write_file(
        &config,
        &format!(
            "SUSHY_EMULATOR_LIBVIRT_URI = {uri:?}\n\
             SUSHY_EMULATOR_AUTH_FILE = {htpasswd:?}\n\
             SUSHY_EMULATOR_LISTEN_IP = {SERVER_IP:?}\n\
             SUSHY_EMULATOR_LISTEN_PORT = {SUSHY_PORT}\n\
             SUSHY_EMULATOR_STATE_DIR = {state:?}\n\
             SUSHY_EMULATOR_ALLOWED_INSTANCES = [{uuid:?}]\n\
             SUSHY_EMULATOR_BOOT_LOADER_MAP = {{\n\
             \x20   'Legacy': {{'x86_64': '/usr/share/seabios/bios-256k.bin'}},\n\
             \x20   'UEFI': {{'x86_64': '/usr/share/OVMF/OVMF_CODE_4M.fd'}},\n\
             }}\n",
            state = dir.join("state"),
        ),
    );
    // HTTPS, as Bellows speaks Redfish, with a fresh self-signed certificate.
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_checked(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", &format!("/CN={SERVER_IP}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl req",
    );
    let log_path = dir.join("sushy.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut process = ChildGuard::spawn(
        "sushy-emulator",
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(venv.join("bin/sushy-emulator"))
            .arg("--config")
            .arg(&config)
            .arg("--ssl-certificate")
            .arg(&cert)
            .arg("--ssl-key")
            .arg(&key)
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    let url = format!("https://{SERVER_IP}:{SUSHY_PORT}/redfish/v1/");
    wait_until(
        Duration::from_secs(120),
        "sushy-emulator",
        &log_path,
        || {
            process.assert_running(&log_path);
            curl(ns, &url).is_some()
        },
    );
    process
}

/// GETs a Redfish resource with curl (not our code) inside the namespace.
fn curl(ns: &str, url: &str) -> Option<Value> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-skf", "-m", "20"])
        .args(["-u", &format!("{USERNAME}:{PASSWORD}"), url])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn power_status(s: &Server, ns: &str) -> String {
    ok(&s.cli_netns(ns, &["power", "status", MACHINE], None))
        .trim()
        .to_string()
}

#[test]
fn bellows_netboot_powers_on_a_libvirt_vm_through_redfish_and_it_network_boots() {
    if !can_run() {
        return;
    }
    ensure_packages();
    let work = tempfile::tempdir().unwrap();
    let os = crate::vm::test_os();
    let lab = Lab::new("lv", &format!("{SERVER_IP}/24"));
    let ns = lab.server_ns.clone();

    let libvirtd = Libvirtd::start(&ns, &work.path().join("libvirt"));
    let console = work.path().join("console.log");
    let name = format!("bellows-e2e-{}", std::process::id());
    let xml_path = work.path().join("domain.xml");
    write_file(&xml_path, &domain_xml(&name, &console));
    libvirtd.virsh(&["define", xml_path.to_str().unwrap()]);
    let _domain = Domain {
        uri: libvirtd.uri.clone(),
        name: name.clone(),
    };
    let uuid = libvirtd.virsh(&["domuuid", &name]).trim().to_string();
    assert_eq!(libvirtd.virsh(&["domstate", &name]).trim(), "shut off");

    let started = Instant::now();
    let _sushy = start_sushy(&ns, &work.path().join("sushy"), &libvirtd.uri, &uuid);
    eprintln!(
        "sushy-emulator ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let system_url = format!("https://{SERVER_IP}:{SUSHY_PORT}/redfish/v1/Systems/{uuid}");

    let s = Server::start_on_lab_bridge(
        &ns,
        SERVER_IP,
        &work.path().join("data"),
        "reservation",
        &[
            "--osie-dir",
            os.to_str().unwrap(),
            "--osie-initrd",
            "initramfs",
            "--kernel-args",
            &format!("e2e.http=http://{SERVER_IP}:8080"),
        ],
    );
    crate::netboot::register(&s, &ns, MAC, VM_IP, MACHINE);
    ok(&s.cli_netns(
        &ns,
        &[
            "bmc",
            "set",
            MACHINE,
            "--address",
            SERVER_IP,
            "--port",
            &SUSHY_PORT.to_string(),
            "--protocol",
            "redfish",
            "-u",
            USERNAME,
            "--password-stdin",
            "--insecure-tls",
        ],
        Some(format!("{PASSWORD}\n").as_bytes()),
    ));
    assert_eq!(power_status(&s, &ns), "off");

    // Power off (already off), PXE once, power on; the job waits until the
    // BMC reports the domain on.
    let started = Instant::now();
    let job: Value = serde_json::from_str(&ok(&s.cli_netns(
        &ns,
        &["netboot", MACHINE, "-o", "json"],
        None,
    )))
    .expect("netboot -o json");
    eprintln!(
        "bellows netboot done in {:.1} s: {job}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    let boot_started = Instant::now();

    // The VM's test OS powers off after reporting, so look while it boots.
    assert_eq!(power_status(&s, &ns), "on");
    assert_eq!(libvirtd.virsh(&["domstate", &name]).trim(), "running");
    // The override reached the domain: libvirt's own description (of the
    // running domain and of its stored definition) puts the NIC first and
    // no longer boots the disk.
    for xml in [
        libvirtd.virsh(&["dumpxml", &name]),
        libvirtd.virsh(&["dumpxml", "--inactive", &name]),
    ] {
        let nic = xml
            .split("<interface")
            .nth(1)
            .and_then(|rest| rest.split("</interface>").next())
            .unwrap_or_else(|| panic!("no interface in\n{xml}"));
        assert!(
            nic.contains(MAC) && nic.contains("<boot order='1'/>"),
            "the NIC is not first in the boot order:\n{xml}"
        );
        assert!(!xml.contains("<boot dev='hd'/>"), "{xml}");
    }
    let system = curl(&ns, &system_url).expect("GET the Redfish system");
    assert_eq!(
        system["Boot"]["BootSourceOverrideTarget"], "Pxe",
        "{system}"
    );
    assert_eq!(system["PowerState"], "On", "{system}");

    // The VM network-boots against Bellows and calls back over syslog.
    let line = loop {
        let logs = ok(&s.cli_netns(&ns, &["hardware", "logs", MACHINE], None));
        if let Some(line) = logs.lines().find(|l| l.contains("booted worker=")) {
            break line.to_string();
        }
        if boot_started.elapsed() > BOOT_TIMEOUT {
            let state = virsh_output(&libvirtd.uri, &["domstate", &name]);
            panic!(
                "no call-back from the VM within {BOOT_TIMEOUT:?} (domain {})\nlogs:\n{logs}\n\
                 console tail:\n{}\nqemu log:\n{}\nsushy log:\n{}",
                String::from_utf8_lossy(&state.stdout).trim(),
                crate::vm::file_tail(&console, 3000),
                crate::vm::file_tail(&libvirtd.dir.join(format!("log/qemu/{name}.log")), 2000),
                crate::vm::file_tail(&work.path().join("sushy/sushy.log"), 2000),
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!(
        "VM booted and called back {:.1} s after power-on: {line}",
        boot_started.elapsed().as_secs_f64()
    );
    crate::netboot::assert_callback(&line, MAC, VM_IP, MACHINE);

    // The test OS then powers off; libvirt and the BMC both see it. While
    // libvirt takes the domain down, sushy-emulator can answer 500
    // ("domain is not running", seen in CI): that reading is retried.
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let out = s.cli_netns(&ns, &["power", "status", MACHINE], None);
        last = if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            String::from_utf8_lossy(&out.stderr).trim().to_string()
        };
        if last == "off" {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(last, "off", "the VM did not power off after reporting");
    assert_eq!(libvirtd.virsh(&["domstate", &name]).trim(), "shut off");
    for line in s.drain_log() {
        assert!(!line.contains(PASSWORD), "the password leaked: {line}");
    }
}
