//! The Debian package (`scripts/package-deb.sh`), judged by dpkg and
//! systemd: it installs on this machine, `systemd-analyze verify` accepts
//! its unit, the server runs the way the unit runs it (its user, its
//! ambient capabilities and nothing else, its config file) and binds the
//! boot ports below 1024, and purging removes every file, the state and the
//! user. This machine's PID 1 is not systemd, so the unit's sandboxing is
//! verified, not enforced; the privileges are.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bellows_testkit::netns::{can_run, ip};
use bellows_testkit::process::{ChildGuard, run_checked, wait_until};

use crate::harness::BIN;

const UNIT: &str = "/usr/lib/systemd/system/bellows.service";
/// The lock the test kit takes around apt, so dpkg runs one at a time.
const APT_LOCK: &str = "/tmp/bellows-tests-apt.lock";

fn dpkg(args: &[&str]) -> std::process::Output {
    Command::new("flock")
        .args(["-w", "600", APT_LOCK, "dpkg"])
        .args(args)
        .output()
        .expect("run dpkg")
}

/// Purges the package (and the namespace) however the test ends, and
/// before it starts: a killed run may have left them.
struct Installed {
    ns: String,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = dpkg(&["--purge", "bellows"]);
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// `key=value` lines of the unit's `[Service]` section named `key`.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn the_deb_installs_verifies_runs_as_its_unit_and_purges_clean() {
    if !can_run() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("skipped: needs root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/package-deb.sh");
    let deb = run_checked(
        Command::new(&script)
            .arg(work.path())
            .env("BELLOWS_BIN", BIN)
            .env("DEB_COMPRESS", "none"),
        "scripts/package-deb.sh",
    );
    let deb = deb.trim().to_string();
    let contents = run_checked(
        Command::new("dpkg-deb").args(["--contents", &deb]),
        "dpkg-deb --contents",
    );
    for file in [
        "./usr/bin/bellows",
        "./usr/lib/systemd/system/bellows.service",
        "./etc/bellows/bellows.toml",
        "./usr/share/man/man1/bellows.1.gz",
        "./usr/share/man/man1/bellows-server.1.gz",
        "./usr/share/man/man1/bellows-hardware-push.1.gz",
        "./usr/share/bash-completion/completions/bellows",
        "./usr/share/zsh/vendor-completions/_bellows",
        "./usr/share/doc/bellows/copyright",
    ] {
        assert!(
            contents.contains(file),
            "{file} not in the package:\n{contents}"
        );
    }

    let ns = format!("btpkg{}", std::process::id() % 100_000);
    let _ = dpkg(&["--purge", "bellows"]);
    let guard = Installed { ns: ns.clone() };
    let installed = dpkg(&["-i", &deb]);
    assert!(
        installed.status.success(),
        "dpkg -i: {}{}",
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr)
    );
    let user = Command::new("getent")
        .args(["passwd", "bellows"])
        .output()
        .unwrap();
    assert!(user.status.success(), "no bellows user after install");

    // systemd's own reading of the unit: no error, and no warning either.
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    // Run it as the unit would: its user, its ambient capabilities as the
    // only ones, no new privileges, its working directory and command, in
    // a namespace of its own (so the boot ports are free) with an address
    // on a veth.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let service_user = unit_values(&unit, "User").pop().expect("User=");
    let exec = unit_values(&unit, "ExecStart").pop().expect("ExecStart=");
    let workdir = unit_values(&unit, "WorkingDirectory")
        .pop()
        .expect("WorkingDirectory=");
    let caps: Vec<String> = unit_values(&unit, "AmbientCapabilities")
        .join(" ")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(
        caps,
        ["+net_bind_service", "+net_raw"],
        "the unit's privileges"
    );
    let caps = format!("-all,{}", caps.join(","));
    ip(&["netns", "add", &ns]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&[
        "-n", &ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]);
    ip(&["-n", &ns, "addr", "add", "10.93.0.1/24", "dev", "v0"]);
    ip(&["-n", &ns, "link", "set", "v0", "up"]);
    ip(&["-n", &ns, "link", "set", "v1", "up"]);
    let log = work.path().join("server.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns, "env", "BELLOWS_PUBLIC_IP=10.93.0.1"])
        .arg("setpriv")
        .args([
            format!("--reuid={service_user}"),
            format!("--regid={service_user}"),
            "--init-groups".to_string(),
            "--no-new-privs".to_string(),
            format!("--inh-caps={caps}"),
            format!("--ambient-caps={caps}"),
            format!("--bounding-set={caps}"),
        ])
        .args([
            "sh",
            "-c",
            &format!("cd {workdir} && umask 077 && exec {exec}"),
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut server = ChildGuard::adopt("bellows server (as its unit)", child);
    wait_until(Duration::from_secs(30), "the packaged server", &log, || {
        server.assert_running(&log);
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("boot URLs start with"))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    for bound in [
        "DHCP server listening on udp://0.0.0.0:67",
        "TFTP server listening on udp://0.0.0.0:69",
        "syslog receiver listening on udp://0.0.0.0:514",
        "bellows API listening on https://127.0.0.1:42113",
    ] {
        assert!(text.contains(bound), "{bound:?} not in:\n{text}");
    }
    let health = run_checked(
        Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            "/var/lib/bellows/tls/ca.crt",
            "https://127.0.0.1:42113/healthz",
        ]),
        "curl /healthz",
    );
    assert!(health.contains("ok"), "{health}");
    // Its state belongs to its user, private.
    let owner = run_checked(
        Command::new("stat").args([
            "-c",
            "%U %a",
            "/var/lib/bellows",
            "/var/lib/bellows/bellows.db",
        ]),
        "stat",
    );
    assert_eq!(
        owner.lines().collect::<Vec<_>>(),
        ["bellows 700", "bellows 600"]
    );
    // SIGTERM, as systemd stops it: a clean exit.
    let pid = Command::new("pgrep")
        .args(["-f", "-u", "bellows", "bellows server --config"])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    assert!(!pid.is_empty(), "no server process of user bellows");
    run_checked(Command::new("kill").args(["-TERM", &pid]), "kill -TERM");
    let status = server.wait_timeout(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}"
    );

    // Purge: nothing of it is left.
    let purged = dpkg(&["--purge", "bellows"]);
    assert!(
        purged.status.success(),
        "{}",
        String::from_utf8_lossy(&purged.stderr)
    );
    for gone in [
        "/usr/bin/bellows",
        UNIT,
        "/etc/bellows",
        "/var/lib/bellows",
        "/usr/share/man/man1/bellows.1.gz",
        "/usr/share/bash-completion/completions/bellows",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    let user = Command::new("getent")
        .args(["passwd", "bellows"])
        .output()
        .unwrap();
    assert!(!user.status.success(), "the bellows user left after purge");
    drop(guard);
}

/// The container image (`scripts/package-oci.sh`), run by the private
/// Docker engine the tests start: the server starts in it as its
/// unprivileged user, with no configuration, and the CLI inside the same
/// container (loopback only: `--network none`) reaches it over TLS.
#[test]
fn the_container_image_runs_the_server_as_an_unprivileged_user() {
    if std::env::var_os("DOCKER_HOST").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI starts a Docker engine (scripts/docker-test-daemon.sh)"
        );
        eprintln!("skipped: no DOCKER_HOST (eval \"$(scripts/docker-test-daemon.sh)\")");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/package-oci.sh");
    let image = run_checked(
        Command::new(&script).env("BELLOWS_BIN", BIN),
        "scripts/package-oci.sh",
    );
    let image = image.trim().to_string();
    let name = format!("bellows-oci-test-{}", std::process::id());
    let docker = |args: &[&str]| Command::new("docker").args(args).output().expect("docker");
    let _ = docker(&["rm", "-f", &name]);
    struct Removed(String);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", &self.0])
                .output();
        }
    }
    let _removed = Removed(name.clone());
    let started = docker(&["run", "-d", "--name", &name, "--network", "none", &image]);
    assert!(
        started.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let logs = || {
        let out = docker(&["logs", &name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(
        bellows_testkit::process::wait_for(Duration::from_secs(30), || logs()
            .contains("boot URLs start with")),
        "the server in the image did not start:\n{}",
        logs()
    );
    // Not root: the image's user.
    let user = docker(&["exec", &name, "/usr/bin/bellows", "--version"]);
    assert!(
        user.status.success(),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );
    let inspect = docker(&["inspect", "-f", "{{.Config.User}}", &name]);
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "65532:65532"
    );
    // The CLI in the same container, against the server's own CA and the
    // admin token it wrote in its state directory.
    let listed = docker(&[
        "exec",
        &name,
        "/usr/bin/bellows",
        "--url",
        "https://127.0.0.1:42113",
        "--ca",
        "/var/lib/bellows/tls/ca.crt",
        "hardware",
        "list",
        "-o",
        "json",
    ]);
    assert!(
        listed.status.success(),
        "bellows hardware list in the container: {}{}\n{}",
        String::from_utf8_lossy(&listed.stdout),
        String::from_utf8_lossy(&listed.stderr),
        logs()
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"items\""));
    // It stops on SIGTERM (docker stop) with status 0.
    let stopped = docker(&["stop", "-t", "20", &name]);
    assert!(stopped.status.success());
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert_eq!(
        String::from_utf8_lossy(&code.stdout).trim(),
        "0",
        "{}",
        logs()
    );
}
