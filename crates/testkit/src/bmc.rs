//! Real BMC emulators on 127.0.0.1 — OpenIPMI's `ipmi_sim` and
//! `sushy-emulator` (Redfish) — installed on first use, set up with known
//! credentials, and checked with tools we did not write (ipmitool, curl),
//! so the BMC clients are judged by independent implementations.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::files::{write_executable, write_file};
use crate::packages::ensure_programs;
use crate::ports::{free_tcp_port, free_udp_port};
use crate::process::{ChildGuard, run_checked, wait_until};

/// The password every emulator is set up with; tests grep for it.
pub const PASSWORD: &str = "Bellows-S3cret-9f2c";
/// The user name every emulator is set up with.
pub const USERNAME: &str = "admin";

/// The sushy-tools version the tests are written against.
pub const SUSHY_TOOLS_VERSION: &str = "2.2.0";

/// A virtualenv holding sushy-emulator, created once under /tmp.
pub fn sushy_venv() -> PathBuf {
    let venv = PathBuf::from(
        std::env::var("BELLOWS_BMC_VENV").unwrap_or_else(|_| "/tmp/bellows-bmc-venv".into()),
    );
    if venv.join("bin/sushy-emulator").exists() {
        return venv;
    }
    ensure_programs(
        &["python3", "flock"],
        &["python3", "python3-venv", "util-linux"],
    );
    let script = format!(
        "test -x {venv}/bin/sushy-emulator || {{ python3 -m venv {venv} && \
         {venv}/bin/pip install --quiet --disable-pip-version-check sushy-tools=={SUSHY_TOOLS_VERSION}; }}",
        venv = venv.display()
    );
    run_checked(
        Command::new("flock").args(["/tmp/bellows-bmc-venv.lock", "sh", "-c", &script]),
        "pip install sushy-tools",
    );
    venv
}

/// Asserts that no formatting of `value` contains the password.
pub fn assert_no_password(value: &(impl std::fmt::Debug + std::fmt::Display)) {
    for text in [
        format!("{value}"),
        format!("{value:?}"),
        format!("{value:#?}"),
    ] {
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
    }
}

/// An `ipmi_sim` with one lanplus LAN channel on 127.0.0.1 and a
/// `chassis_control` script that keeps power and boot device in files.
pub struct IpmiSim {
    /// Its UDP port on 127.0.0.1 (RMCP+).
    pub port: u16,
    /// Its configuration and the files the chassis script keeps state in;
    /// removed on drop.
    pub dir: tempfile::TempDir,
    _process: ChildGuard,
}

const CHASSIS_CONTROL: &str = r#"#!/bin/sh
# ipmi_sim chassis_control: <device> get <parm>... | <device> set <parm> <value>...
dir=$(dirname "$0")
device=$1; op=$2; shift 2
echo "$op $*" >> "$dir/calls.log"
case $op in
get)
  for parm in "$@"; do
    case $parm in
      power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)" ;;
      boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
      *) echo "Invalid parameter: $parm"; exit 1 ;;
    esac
  done ;;
set)
  while [ $# -ge 2 ]; do
    case $1 in
      power) echo "$2" > "$dir/power" ;;
      reset) echo reset >> "$dir/resets" ;;
      shutdown) echo 0 > "$dir/power" ;;   # the "OS" shuts down at once
      boot) echo "$2" > "$dir/boot" ;;
      identify) shift ;;
      *) echo "Invalid parameter: $1"; exit 1 ;;
    esac
    shift 2
  done ;;
*) echo "Unknown operation: $op"; exit 1 ;;
esac
"#;

impl IpmiSim {
    /// Installs OpenIPMI and ipmitool if missing, starts the simulator on a
    /// free port and waits until ipmitool can read its power status.
    pub fn start() -> IpmiSim {
        ensure_programs(
            &["ipmi_sim", "ipmitool", "flock"],
            &["openipmi", "ipmitool", "util-linux"],
        );
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let port = free_udp_port();
        let control = dir.path().join("chassis_control");
        write_executable(&control, CHASSIS_CONTROL);
        write_file(&dir.path().join("power"), "0\n");
        let lan_conf = dir.path().join("lan.conf");
        write_file(
            &lan_conf,
            &format!(
                r#"name "bellows-test"
set_working_mc 0x20
startlan 1
  addr 127.0.0.1 {port}
  priv_limit admin
  allowed_auths_callback none md2 md5 straight
  allowed_auths_user none md2 md5 straight
  allowed_auths_operator none md2 md5 straight
  allowed_auths_admin none md2 md5 straight
  guid a123456789abcdefa123456789abcdef
endlan
chassis_control "{control} 0x20"
user 1 true "" "" user 10 none md2 md5 straight
user 2 true "{USERNAME}" "{PASSWORD}" admin 10 none md2 md5 straight
"#,
                control = control.display()
            ),
        );
        let emu = dir.path().join("cmd.emu");
        write_file(
            &emu,
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             sel_enable 0x20 1000 0x0a\n\
             mc_enable 0x20\n",
        );
        let log_path = dir.path().join("ipmi_sim.log");
        let log = std::fs::File::create(&log_path).unwrap_or_else(|error| panic!("{error}"));
        let log_err = log.try_clone().unwrap_or_else(|error| panic!("{error}"));
        let mut process = ChildGuard::spawn(
            "ipmi_sim",
            Command::new("ipmi_sim")
                .arg("-c")
                .arg(&lan_conf)
                .arg("-f")
                .arg(&emu)
                .arg("-s")
                .arg(dir.path().join("state"))
                .arg("-n")
                .stdout(log)
                .stderr(log_err),
        );
        let sim = |process: &mut ChildGuard| {
            process.assert_running(&log_path);
        };
        wait_until(Duration::from_secs(15), "ipmi_sim", &log_path, || {
            sim(&mut process);
            ipmitool_raw(port, &["chassis", "power", "status"]).is_some()
        });
        IpmiSim {
            port,
            dir,
            _process: process,
        }
    }

    /// The power line the chassis_control script last received ("0"/"1").
    pub fn power_file(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("power"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Every chassis_control call so far.
    pub fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default()
    }

    /// The emulator's boot flags as ipmitool (not our code) reads them.
    pub fn boot_flags(&self) -> String {
        ipmitool_raw(self.port, &["chassis", "bootparam", "get", "5"]).unwrap_or_default()
    }
}

/// Runs ipmitool directly against the emulator (an independent check).
pub fn ipmitool_raw(port: u16, command: &[&str]) -> Option<String> {
    let output = Command::new("ipmitool")
        .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", USERNAME, "-E", "-C", "3", "-N", "1", "-R", "1"])
        .args(command)
        .env("IPMI_PASSWORD", PASSWORD)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A sushy-emulator with its fake driver and HTTP basic auth on 127.0.0.1.
pub struct Sushy {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Its configuration, password file and state; removed on drop.
    pub dir: tempfile::TempDir,
    _process: ChildGuard,
}

impl Sushy {
    /// Starts it over plain HTTP (see [`Sushy::start_with`]).
    pub fn start() -> Sushy {
        Sushy::start_with(false)
    }

    /// Installs sushy-tools into a virtualenv if missing, starts the
    /// emulator on a free port and waits until its service root answers.
    /// With `tls`, serves HTTPS with a fresh self-signed certificate.
    pub fn start_with(tls: bool) -> Sushy {
        let venv = sushy_venv();
        ensure_programs(&["curl"], &["curl"]);
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let port = free_tcp_port();
        let htpasswd = dir.path().join("htpasswd");
        let hash = Command::new(venv.join("bin/python"))
            .args([
                "-c",
                "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt()).decode())",
                PASSWORD,
            ])
            .output()
            .unwrap_or_else(|error| panic!("bcrypt: {error}"));
        assert!(hash.status.success(), "bcrypt hashing failed");
        write_file(
            &htpasswd,
            &format!("{USERNAME}:{}", String::from_utf8_lossy(&hash.stdout)),
        );
        let config = dir.path().join("sushy.conf");
        write_file(
            &config,
            &format!(
                "SUSHY_EMULATOR_FAKE_DRIVER = True\n\
                 SUSHY_EMULATOR_AUTH_FILE = {htpasswd:?}\n\
                 SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
                 SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
                 SUSHY_EMULATOR_STATE_DIR = {state:?}\n",
                state = dir.path().join("state"),
            ),
        );
        let mut tls_arguments = Vec::new();
        if tls {
            ensure_programs(&["openssl"], &["openssl"]);
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            run_checked(
                Command::new("openssl")
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    ])
                    .args(["-subj", "/CN=127.0.0.1", "-keyout"])
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert),
                "openssl req",
            );
            tls_arguments = vec![
                "--ssl-certificate".into(),
                cert.into_os_string(),
                "--ssl-key".into(),
                key.into_os_string(),
            ];
        }
        let log_path = dir.path().join("sushy.log");
        let log = std::fs::File::create(&log_path).unwrap_or_else(|error| panic!("{error}"));
        let log_err = log.try_clone().unwrap_or_else(|error| panic!("{error}"));
        let mut process = ChildGuard::spawn(
            "sushy-emulator",
            Command::new(venv.join("bin/sushy-emulator"))
                .arg("--config")
                .arg(&config)
                .args(&tls_arguments)
                .stdout(log)
                .stderr(log_err),
        );
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}/redfish/v1/");
        wait_until(Duration::from_secs(30), "sushy-emulator", &log_path, || {
            process.assert_running(&log_path);
            // The service root is readable without credentials, as Redfish requires.
            curl_status(&url) == Some(200)
        });
        Sushy {
            port,
            scheme,
            dir,
            _process: process,
        }
    }

    /// Its base URL, as a BMC address is given to Bellows.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// GETs a resource with curl (not our code) and parses it.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let output = Command::new("curl")
            .args(["-skf", "-m", "10", "-u", &format!("{USERNAME}:{PASSWORD}")])
            .arg(format!("{}{path}", self.url()))
            .output()
            .unwrap_or_else(|error| panic!("curl: {error}"));
        assert!(output.status.success(), "curl GET {path} failed");
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    /// The first system's path, found with curl.
    pub fn system_path(&self) -> String {
        let systems = self.get("/redfish/v1/Systems");
        systems
            .pointer("/Members/0/@odata.id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_else(|| panic!("no system in {systems}"))
            .to_owned()
    }
}

fn curl_status(url: &str) -> Option<u16> {
    let output = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "2",
            url,
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// A static HTTP server (Python's) serving `dir` on 127.0.0.1.
pub struct FileServer {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    _process: ChildGuard,
}

impl FileServer {
    /// Serves `dir` (logging to `dir/http.log`) on a free port and waits
    /// until it answers: a place for a BMC to fetch virtual media from.
    pub fn start(dir: &Path) -> FileServer {
        let port = free_tcp_port();
        let log_path = dir.join("http.log");
        let log = std::fs::File::create(&log_path).unwrap_or_else(|error| panic!("{error}"));
        let log_err = log.try_clone().unwrap_or_else(|error| panic!("{error}"));
        let mut process = ChildGuard::spawn(
            "http.server",
            Command::new("python3")
                .args(["-m", "http.server", "--bind", "127.0.0.1"])
                .arg(port.to_string())
                .arg("--directory")
                .arg(dir)
                .stdout(log)
                .stderr(log_err),
        );
        let url = format!("http://127.0.0.1:{port}/");
        wait_until(Duration::from_secs(15), "http.server", &log_path, || {
            process.assert_running(&log_path);
            curl_status(&url) == Some(200)
        });
        FileServer {
            port,
            _process: process,
        }
    }
}
