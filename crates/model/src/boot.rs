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
use crate::hardware::{Hardware, Interface, VlanId};

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

/// The serial and screen consoles the in-memory OS writes to unless the
/// operator's `--kernel-args` add others: the screen, and the first serial
/// port (QEMU, most boards' COM1) at 115200 baud. The last `console=` on
/// the line becomes `/dev/console`, where the init writes its progress.
pub const DEFAULT_CONSOLES: &[&str] = &["tty0", "ttyS0,115200"];

/// The in-memory OS's kernel command line, as the words Bellows writes and
/// the in-memory OS reads: how its worker finds the server, who it is, where
/// it logs, and the machine facts Tinkerbell's smee also passes (`vlan_id=`,
/// `facility=`, `hw_addr=`, spelled as smee spells them so a record written
/// for Tinkerbell means the same here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelArgs {
    /// `bellows.api=`: the base URL of the worker service; several,
    /// comma-separated, when replicas share one database (the worker tries
    /// them in turn).
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
    /// `hw_addr=`: the MAC of the NIC the machine booted by; the init
    /// brings that NIC up.
    pub hw_addr: Option<MacAddr>,
    /// `vlan_id=`: the 802.1Q VLAN the boot NIC's traffic is tagged with
    /// (the record's `dhcp.vlan_id`). Read back from `vlan_id=`, else from
    /// `bellows.vlan=` (the server-wide default an operator may put in
    /// `--kernel-args`): the record knows its machine better.
    pub vlan: Option<VlanId>,
    /// `facility=`: the record's facility code, for actions that read the
    /// command line as they would under Tinkerbell.
    pub facility: Option<String>,
    /// `console=`, each in order (see [`DEFAULT_CONSOLES`]).
    pub consoles: Vec<String>,
    /// `bellows.discovery=1`: the machine is unknown; the worker reports
    /// its inventory and waits to be enrolled instead of running actions.
    pub discovery: bool,
}

/// The command-line words, in the order they are written.
const API: &str = "bellows.api=";
const SYSLOG: &str = "bellows.syslog=";
const WORKER_ID: &str = "bellows.worker_id=";
const TOKEN: &str = "bellows.token=";
const CA: &str = "bellows.ca=";
const HW_ADDR: &str = "hw_addr=";
const VLAN_ID: &str = "vlan_id=";
const FACILITY: &str = "facility=";
const CONSOLE: &str = "console=";
const DISCOVERY: &str = "bellows.discovery=";
/// Read only: the server-wide VLAN an operator gives in `--kernel-args`.
const BELLOWS_VLAN: &str = "bellows.vlan=";

/// Can `value` be one kernel command-line word inside an iPXE script? The
/// kernel splits on whitespace, and iPXE expands `${…}` and ends a command
/// at a newline: a record's value with any of them is left out rather than
/// let it change the line or the script.
fn writable(value: &str) -> bool {
    !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c.is_control() || c == '$')
}

impl KernelArgs {
    /// The words that come from the machine's own record, for the NIC
    /// `mac` it booted by: its worker id and `hw_addr=` (that MAC), the
    /// interface's VLAN and the record's facility. A VLAN that is not an
    /// id from 1 to 4094 is left out; [`crate::hardware::Dhcp::vlan`] says
    /// why, for the caller to show.
    pub fn for_machine(hw: &Hardware, mac: MacAddr) -> KernelArgs {
        KernelArgs {
            worker_id: Some(mac.to_string()),
            hw_addr: Some(mac),
            vlan: hw.vlan_of(mac).ok().flatten(),
            facility: hw.facility().filter(|f| writable(f)).map(str::to_string),
            ..KernelArgs::default()
        }
    }

    /// The words to put on a kernel command line, space-separated (empty
    /// when nothing is set). Values the kernel would split or iPXE would
    /// expand are left out (see `writable`).
    pub fn to_cmdline(&self) -> String {
        let mut words: Vec<(&str, String)> = Vec::new();
        let text = |key, value: &Option<String>| value.clone().map(|v| (key, v));
        words.extend(text(API, &self.api));
        words.extend(text(SYSLOG, &self.syslog));
        words.extend(text(WORKER_ID, &self.worker_id));
        words.extend(text(TOKEN, &self.token));
        words.extend(text(CA, &self.ca));
        words.extend(self.hw_addr.map(|m| (HW_ADDR, m.to_string())));
        words.extend(self.vlan.map(|v| (VLAN_ID, v.to_string())));
        words.extend(text(FACILITY, &self.facility));
        words.extend(self.consoles.iter().map(|c| (CONSOLE, c.clone())));
        words.extend(self.discovery.then(|| (DISCOVERY, "1".to_string())));
        let mut out = String::new();
        for (key, value) in words.iter().filter(|(_, v)| writable(v)) {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "{key}{value}");
        }
        out
    }

    /// Reads the words from a whole kernel command line (as `/proc/cmdline`
    /// has it); other words are ignored, the last of a repeated word wins,
    /// as the kernel's own parameters do (`console=` keeps every one).
    /// Values that do not parse (a `hw_addr=` that is no MAC, a VLAN that
    /// is no id from 1 to 4094) read as absent. The VLAN comes from
    /// `vlan_id=` when there is one, else from `bellows.vlan=`.
    pub fn parse(cmdline: &str) -> KernelArgs {
        let mut args = KernelArgs::default();
        let (mut vlan_id, mut bellows_vlan) = (None, None);
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
            } else if let Some(v) = word.strip_prefix(HW_ADDR) {
                args.hw_addr = v.parse().ok();
            } else if let Some(v) = word.strip_prefix(VLAN_ID) {
                vlan_id = Some(v);
            } else if let Some(v) = word.strip_prefix(BELLOWS_VLAN) {
                bellows_vlan = Some(v);
            } else if let Some(v) = word.strip_prefix(FACILITY) {
                args.facility = Some(v.to_string());
            } else if let Some(v) = word.strip_prefix(CONSOLE) {
                args.consoles.push(v.to_string());
            } else if let Some(v) = word.strip_prefix(DISCOVERY) {
                args.discovery = matches!(v, "1" | "true" | "yes");
            }
        }
        // The init's rule too: the first non-empty of the two, then checked.
        args.vlan = vlan_id
            .filter(|v| !v.is_empty())
            .or(bellows_vlan)
            .and_then(|v| v.parse().ok());
        args
    }
}

/// Container settings an operator gives the in-memory OS's worker in the
/// server's `--kernel-args` (read here, never written by the server: they
/// are the site's, not the machine's). No credentials: the command line is
/// served in the clear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerArgs {
    /// `bellows.insecure_registry=HOST:PORT[,HOST:PORT]` (repeatable; also
    /// Hook's `insecure_registries=`): registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// `bellows.registry_mirror=HOST[:PORT][/PREFIX]`: a Docker Hub mirror.
    pub registry_mirror: Option<String>,
    /// `bellows.tinkerbell_actions=container`: run Tinkerbell's action
    /// images that have a built-in as containers (`builtin`, the default,
    /// keeps the built-in).
    pub tinkerbell_actions: Option<String>,
}

impl ContainerArgs {
    /// Reads them from a whole kernel command line.
    pub fn parse(cmdline: &str) -> ContainerArgs {
        let mut args = ContainerArgs::default();
        for word in cmdline.split_whitespace() {
            if let Some(v) = word
                .strip_prefix("bellows.insecure_registry=")
                .or_else(|| word.strip_prefix("insecure_registries="))
            {
                args.insecure_registries.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map(str::to_string),
                );
            } else if let Some(v) = word.strip_prefix("bellows.registry_mirror=") {
                args.registry_mirror = Some(v.to_string()).filter(|v| !v.is_empty());
            } else if let Some(v) = word.strip_prefix("bellows.tinkerbell_actions=") {
                args.tinkerbell_actions = Some(v.to_string());
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
    fn container_settings_from_the_command_line() {
        let args = ContainerArgs::parse(
            "quiet bellows.insecure_registry=10.0.0.1:5000,lab:5000 insecure_registries=x:1 \
             bellows.registry_mirror=mirror:5000/hub bellows.tinkerbell_actions=container",
        );
        assert_eq!(
            args.insecure_registries,
            ["10.0.0.1:5000", "lab:5000", "x:1"]
        );
        assert_eq!(args.registry_mirror.as_deref(), Some("mirror:5000/hub"));
        assert_eq!(args.tinkerbell_actions.as_deref(), Some("container"));
        assert_eq!(ContainerArgs::parse("ro"), ContainerArgs::default());
    }

    #[test]
    fn kernel_args_round_trip_through_a_real_command_line() {
        let args = KernelArgs {
            api: Some("http://10.0.0.1:8080".into()),
            syslog: Some("10.0.0.1".into()),
            worker_id: Some("52:54:00:00:00:01".into()),
            token: Some("bellows_boot_00ff".into()),
            ca: Some("ab".repeat(32)),
            hw_addr: Some(mac()),
            vlan: Some(VlanId::new(16).expect("vlan")),
            facility: Some("onprem".into()),
            consoles: vec!["tty0".into(), "ttyS1,115200".into()],
            discovery: true,
        };
        let cmdline = format!("BOOT_IMAGE=x initrd=initramfs {} quiet", args.to_cmdline());
        assert_eq!(KernelArgs::parse(&cmdline), args);
        // Every console= is kept, in order (the last is /dev/console).
        assert_eq!(
            KernelArgs::parse(&format!("{cmdline} console=ttyS0")).consoles,
            ["tty0", "ttyS1,115200", "ttyS0"]
        );
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
    fn the_record_vlan_wins_over_the_server_wide_one() {
        let vlan = |line: &str| KernelArgs::parse(line).vlan.map(VlanId::get);
        assert_eq!(vlan("vlan_id=16"), Some(16));
        assert_eq!(vlan("bellows.vlan=100"), Some(100));
        assert_eq!(vlan("bellows.vlan=100 vlan_id=16"), Some(16));
        assert_eq!(vlan("vlan_id=16 bellows.vlan=100"), Some(16));
        // An empty vlan_id= is no VLAN word; a bad one is not replaced.
        assert_eq!(vlan("vlan_id= bellows.vlan=100"), Some(100));
        assert_eq!(vlan("vlan_id=4095 bellows.vlan=100"), None);
        for bad in ["0", "4095", "16,17", "-1", "x", "+16", "00016"] {
            assert_eq!(vlan(&format!("vlan_id={bad}")), None, "{bad}");
        }
        assert_eq!(
            KernelArgs::parse("hw_addr=nonsense hw_addr=52:54:00:00:00:01").hw_addr,
            Some(mac())
        );
        assert_eq!(KernelArgs::parse("hw_addr=nonsense").hw_addr, None);
    }

    #[test]
    fn the_machine_words_come_from_its_record() {
        let hw = Hardware::from_value(serde_json::json!({
            "id": "m",
            "metadata": {"facility": {"facility_code": "onprem"}},
            "network": {"interfaces": [
                {"dhcp": {"mac": "52:54:00:00:00:01", "vlan_id": "16"}},
                {"dhcp": {"mac": "52:54:00:00:00:02", "vlan_id": "4096"}},
                {"dhcp": {"mac": "52:54:00:00:00:03", "vlan_id": "0"}}
            ]}
        }))
        .expect("hardware");
        let args = KernelArgs::for_machine(&hw, mac());
        assert_eq!(
            args.to_cmdline(),
            "bellows.worker_id=52:54:00:00:00:01 hw_addr=52:54:00:00:00:01 vlan_id=16 facility=onprem"
        );
        // Per interface: the one the machine booted by.
        let other: MacAddr = "52:54:00:00:00:02".parse().expect("mac");
        assert_eq!(KernelArgs::for_machine(&hw, other).vlan, None);
        let untagged: MacAddr = "52:54:00:00:00:03".parse().expect("mac");
        assert_eq!(KernelArgs::for_machine(&hw, untagged).vlan, None);
        // A facility that would change the line or the script is left out.
        for evil in ["on prem", "x\nboot", "${net0/mac}", ""] {
            let hw = Hardware::from_value(serde_json::json!({
                "metadata": {"facility": {"facility_code": evil}},
                "network": {"interfaces": [{"dhcp": {"mac": "52:54:00:00:00:01"}}]}
            }))
            .expect("hardware");
            let line = KernelArgs::for_machine(&hw, mac()).to_cmdline();
            assert!(!line.contains("facility"), "{evil:?}: {line}");
        }
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
