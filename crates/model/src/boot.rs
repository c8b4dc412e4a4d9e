//! The boot contract: everything a machine and the services agree on while
//! it network-boots, written once.
//!
//! DHCP hands out the URLs below, the HTTP boot service routes them, the
//! iPXE script writes the kernel command line, the in-memory OS's worker
//! reads it back. When one side spelled these strings and another parsed
//! them, a typo broke boots that every unit test passed; now both sides
//! call this module. Pure: no IO.

use std::fmt::Write as _;

use crate::MacAddr;
use crate::hardware::Interface;

/// Where the HTTP boot service serves iPXE binaries and per-machine scripts.
pub const IPXE_PATH: &str = "/ipxe";

/// The file name of a machine's iPXE script.
pub const SCRIPT_NAME: &str = "auto.ipxe";

/// The script found by the caller's address, for DHCP servers that cannot
/// put the MAC into the URL (a site's dnsmasq, Kea or ISC dhcpd).
pub const SCRIPT_BY_SOURCE_PATH: &str = "/auto.ipxe";

/// Where rEFInd and its `refind.conf` are served (`--local-boot refind`).
pub const REFIND_PATH: &str = "/refind";

/// Where the in-memory OS's files are served.
pub const OSIE_PATH: &str = "/osie";

/// The path of `mac`'s script: `/ipxe/<mac>/auto.ipxe`.
pub fn script_path(mac: MacAddr) -> String {
    format!("{IPXE_PATH}/{mac}/{SCRIPT_NAME}")
}

/// The URL of `mac`'s script under the HTTP boot service at `base`
/// (`http://IP:PORT`, no trailing slash).
pub fn script_url(base: &str, mac: MacAddr) -> String {
    format!("{base}{}", script_path(mac))
}

/// The URL of the script found by source address under `base`.
pub fn script_by_source_url(base: &str) -> String {
    format!("{base}{SCRIPT_BY_SOURCE_PATH}")
}

/// The URL of iPXE binary `name` under `base`.
pub fn binary_url(base: &str, name: &str) -> String {
    format!("{base}{IPXE_PATH}/{name}")
}

/// May the machine behind this interface network-boot now? Only an
/// explicit `netboot.allow_pxe: false` forbids it: records from Tinkerbell
/// often leave it out, and a missing value has always meant yes there.
/// DHCP (whether to send a boot file) and the script (whether to boot the
/// in-memory OS) both ask this.
pub fn netboot_allowed(interface: Option<&Interface>) -> bool {
    interface
        .and_then(|i| i.netboot.as_ref())
        .and_then(|n| n.allow_pxe)
        != Some(false)
}

/// The Bellows words of the in-memory OS's kernel command line: how its
/// worker finds the server, who it is, and where it logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelArgs {
    /// `bellows.api=`: the base URL of the worker service.
    pub api: Option<String>,
    /// `bellows.syslog=`: `HOST` or `HOST:PORT` of the syslog receiver.
    pub syslog: Option<String>,
    /// `bellows.worker_id=`: the worker id (the MAC the machine booted by).
    pub worker_id: Option<String>,
    /// `bellows.token=`: the per-boot credential the worker presents on
    /// every call (see SECURITY.md, "Worker identity").
    pub token: Option<String>,
    /// `bellows.ca=`: hex SHA-256 of the CA certificate the worker pins
    /// when `api` is `https://` (see SECURITY.md, "Transport").
    pub ca: Option<String>,
}

/// The command-line words, in the order they are written.
const API: &str = "bellows.api=";
const SYSLOG: &str = "bellows.syslog=";
const WORKER_ID: &str = "bellows.worker_id=";
const TOKEN: &str = "bellows.token=";
const CA: &str = "bellows.ca=";

impl KernelArgs {
    /// The words to put on a kernel command line, space-separated (empty
    /// when nothing is set). Values with whitespace are left out: the
    /// kernel would split them into other words.
    pub fn to_cmdline(&self) -> String {
        let mut out = String::new();
        for (key, value) in [
            (API, &self.api),
            (SYSLOG, &self.syslog),
            (WORKER_ID, &self.worker_id),
            (TOKEN, &self.token),
            (CA, &self.ca),
        ] {
            let Some(value) = value.as_deref() else {
                continue;
            };
            if value.is_empty() || value.contains(char::is_whitespace) {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "{key}{value}");
        }
        out
    }

    /// Reads the Bellows words from a whole kernel command line (as
    /// `/proc/cmdline` has it); other words are ignored, the last of a
    /// repeated word wins, as the kernel's own parameters do.
    pub fn parse(cmdline: &str) -> KernelArgs {
        let mut args = KernelArgs::default();
        for word in cmdline.split_whitespace() {
            if let Some(v) = word.strip_prefix(API) {
                args.api = Some(v.to_string());
            } else if let Some(v) = word.strip_prefix(SYSLOG) {
                args.syslog = Some(v.to_string());
            } else if let Some(v) = word.strip_prefix(WORKER_ID) {
                args.worker_id = Some(v.to_string());
            } else if let Some(v) = word.strip_prefix(TOKEN) {
                args.token = Some(v.to_string());
            } else if let Some(v) = word.strip_prefix(CA) {
                args.ca = Some(v.to_string());
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> MacAddr {
        "52:54:00:00:00:01".parse().expect("mac")
    }

    #[test]
    fn urls_are_the_routes_the_boot_service_serves() {
        assert_eq!(
            script_url("http://10.0.0.1:8080", mac()),
            "http://10.0.0.1:8080/ipxe/52:54:00:00:00:01/auto.ipxe"
        );
        assert_eq!(
            script_by_source_url("http://10.0.0.1:8080"),
            "http://10.0.0.1:8080/auto.ipxe"
        );
        assert_eq!(
            binary_url("http://10.0.0.1:8080", "snponly.efi"),
            "http://10.0.0.1:8080/ipxe/snponly.efi"
        );
    }

    #[test]
    fn kernel_args_round_trip_through_a_real_command_line() {
        let args = KernelArgs {
            api: Some("http://10.0.0.1:8080".into()),
            syslog: Some("10.0.0.1".into()),
            worker_id: Some("52:54:00:00:00:01".into()),
            token: Some("bellows_boot_00ff".into()),
            ca: Some("ab".repeat(32)),
        };
        let cmdline = format!(
            "BOOT_IMAGE=x initrd=initramfs {} console=ttyS0 quiet",
            args.to_cmdline()
        );
        assert_eq!(KernelArgs::parse(&cmdline), args);
        assert_eq!(KernelArgs::parse("quiet"), KernelArgs::default());
        assert_eq!(KernelArgs::default().to_cmdline(), "");
        // A value the kernel would split is not written.
        let spaced = KernelArgs {
            worker_id: Some("a b".into()),
            ..KernelArgs::default()
        };
        assert_eq!(spaced.to_cmdline(), "");
        // The last of a repeated word wins.
        assert_eq!(
            KernelArgs::parse("bellows.api=a bellows.api=b")
                .api
                .as_deref(),
            Some("b")
        );
    }

    #[test]
    fn only_an_explicit_false_forbids_netboot() {
        let iface = |netboot: serde_json::Value| -> Interface {
            serde_json::from_value(serde_json::json!({
                "dhcp": {"mac": "52:54:00:00:00:01"}, "netboot": netboot
            }))
            .expect("interface")
        };
        assert!(netboot_allowed(None));
        assert!(netboot_allowed(Some(&iface(serde_json::json!({})))));
        assert!(netboot_allowed(Some(&iface(
            serde_json::json!({"allow_pxe": true})
        ))));
        assert!(!netboot_allowed(Some(&iface(
            serde_json::json!({"allow_pxe": false})
        ))));
    }
}
