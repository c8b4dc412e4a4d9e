//! The peers tests run against (dhclient, dnsmasq, ipmi_sim, …) are Debian
//! packages; a test installs what is missing itself, so that one test can
//! be run alone on a fresh machine.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::process::run_checked;

/// One apt at a time across the test processes nextest runs in parallel
/// (and across crates): dpkg's own lock would fail the second one.
const APT_LOCK: &str = "/tmp/bellows-tests-apt.lock";

/// Whether `program` is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Installs Debian `packages` (without recommends) under the shared apt
/// lock; refreshes the package lists only when installing from the current
/// ones fails, since that is slow.
pub fn apt_install(packages: &[&str]) {
    let packages = packages.join(" ");
    let install = format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {packages}"
    );
    let script = format!("{install} || (apt-get update -q && {install})");
    run_checked(
        Command::new("flock").args(["-w", "600", APT_LOCK, "sh", "-c", &script]),
        &format!("apt-get install {packages}"),
    );
}

/// Installs `packages` unless every one of `programs` is already on the
/// PATH.
pub fn ensure_programs(programs: &[&str], packages: &[&str]) {
    if !programs.iter().all(|program| have(program)) {
        apt_install(packages);
    }
}

/// The full path of `binary` (looked for in the sbin and bin directories,
/// which root's PATH may lack), installing `package` first if it is
/// missing.
pub fn ensure_installed(binary: &str, package: &str) -> String {
    let find = || {
        ["/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"]
            .iter()
            .map(|dir| format!("{dir}{binary}"))
            .find(|p| Path::new(p).exists())
    };
    if let Some(path) = find() {
        return path;
    }
    apt_install(&[package]);
    find().unwrap_or_else(|| panic!("{package} installed but {binary} not found"))
}
