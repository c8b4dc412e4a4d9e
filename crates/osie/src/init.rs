//! The in-memory OS's `/init` (busybox sh, process 1) and udhcpc's event
//! script. The scripts live beside this file (`init.sh`, `udhcpc.sh`) so
//! they read as shell; the build fills in the kernel release and the
//! modules to load whatever the hardware.

/// The init script template.
const INIT: &str = include_str!("init.sh");

/// udhcpc's event script: applies a lease (address, route, DNS, host name).
pub const UDHCPC_SCRIPT: &str = include_str!("udhcpc.sh");

/// Where the udhcpc script goes in the image (the init script names it).
pub const UDHCPC_SCRIPT_PATH: &str = "usr/share/bellows/udhcpc.script";

/// What the init script is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    /// The kernel release the modules are for (`uname -r`).
    pub kernel_release: String,
    /// Modules loaded at boot whatever the hardware (file systems, their
    /// soft dependencies), in order.
    pub eager_modules: Vec<String>,
}

/// Why a value cannot go into the script.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Something that is not a plain word would need shell quoting.
    #[error("{what} {value:?} may hold only letters, digits and . _ - + characters")]
    NotAWord {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: String,
    },
}

fn word(what: &'static str, value: &str) -> Result<(), InitError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(InitError::NotAWord {
            what,
            value: value.to_string(),
        })
    }
}

/// The `/init` text for `config`. Values are checked to be plain words,
/// so nothing needs quoting inside the script's single quotes.
pub fn render_init(config: &InitConfig) -> Result<String, InitError> {
    word("kernel release", &config.kernel_release)?;
    for m in &config.eager_modules {
        word("module name", m)?;
    }
    Ok(INIT
        .replace("@KERNEL_RELEASE@", &config.kernel_release)
        .replace("@EAGER_MODULES@", &config.eager_modules.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn config() -> InitConfig {
        InitConfig {
            kernel_release: "6.1.0-18-amd64".into(),
            eager_modules: vec!["crc32c_generic".into(), "ext4".into()],
        }
    }

    #[test]
    fn placeholders_are_filled() {
        let text = render_init(&config()).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"));
        assert!(
            !text.contains("@KERNEL_RELEASE@") && !text.contains("@EAGER_MODULES@"),
            "a placeholder is left"
        );
        assert!(text.contains("KERNEL_RELEASE='6.1.0-18-amd64'"));
        assert!(text.contains("EAGER_MODULES='crc32c_generic ext4'"));
        // The worker runs in built-in mode and is restarted forever.
        assert!(text.contains("\"$WORKER\" worker --container-runtime auto"));
        assert!(text.contains(UDHCPC_SCRIPT_PATH));
    }

    #[test]
    fn values_that_need_quoting_are_refused() {
        let mut c = config();
        c.kernel_release = "6.1'; reboot -f; '".into();
        assert!(render_init(&c).is_err());
        let mut c = config();
        c.eager_modules.push("ext4 $(reboot)".into());
        assert!(render_init(&c).is_err());
        let mut c = config();
        c.eager_modules.clear();
        assert!(render_init(&c).unwrap().contains("EAGER_MODULES=''"));
    }

    /// Runs `script` with the init's functions loaded in a real shell;
    /// `None` if the shell is not installed here.
    pub(crate) fn sh(shell: &str, cmdline: &str, script: &str) -> Option<(bool, String)> {
        if !std::path::Path::new(shell).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{shell} is needed (busybox-static); scripts/test.sh installs it"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init");
        std::fs::write(&init, render_init(&config()).unwrap()).unwrap();
        let mut cmd = Command::new(shell);
        if shell.ends_with("busybox") {
            cmd.arg("sh");
        }
        let out = cmd
            .arg("-c")
            .arg(format!(
                ". {}; CMDLINE=\"$TEST_CMDLINE\"; {script}",
                init.display()
            ))
            .env("BELLOWS_INIT_TEST", "1")
            .env("TEST_CMDLINE", cmdline)
            .env("TEST_RUN", dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        Some((out.status.success(), text))
    }

    const BUSYBOX: &str = "/bin/busybox";

    #[test]
    fn the_scripts_parse_in_busybox_sh_and_dash() {
        for shell in [BUSYBOX, "/bin/dash"] {
            for text in [render_init(&config()).unwrap(), UDHCPC_SCRIPT.to_string()] {
                let dir = tempfile::tempdir().unwrap();
                let f = dir.path().join("s");
                std::fs::write(&f, text).unwrap();
                if !std::path::Path::new(shell).exists() {
                    continue;
                }
                let mut cmd = Command::new(shell);
                if shell == BUSYBOX {
                    cmd.arg("sh");
                }
                let out = cmd.arg("-n").arg(&f).output().unwrap();
                assert!(
                    out.status.success(),
                    "{shell}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    #[test]
    fn run_as_a_plain_program_it_refuses() {
        if !std::path::Path::new(BUSYBOX).exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("init");
        std::fs::write(&f, render_init(&config()).unwrap()).unwrap();
        let out = Command::new(BUSYBOX).arg("sh").arg(&f).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("process 1"));
    }

    #[test]
    fn command_line_values() {
        let line = "BOOT_IMAGE=x initrd=initramfs bellows.api=http://10.0.0.1:8080 \
                    bellows.worker_id=D0:50:99:D7:63:20 console=ttyS0,115200 bellows.debug \
                    bellows.syslog=10.0.0.1 quiet=1 path=/a*";
        let Some((ok, out)) = sh(
            BUSYBOX,
            line,
            "cmdline_arg bellows.api; cmdline_arg console; cmdline_arg missing; \
             cmdline_arg path; boot_mac; cmdline_flag bellows.debug && echo debug; \
             cmdline_flag quiet && echo quiet; cmdline_flag nope || echo no-nope; \
             syslog_target \"$(cmdline_arg bellows.syslog)\"; syslog_target 10.0.0.1:5514",
        ) else {
            return;
        };
        assert!(ok, "{out}");
        assert_eq!(
            out,
            "http://10.0.0.1:8080\nttyS0,115200\n\n/a*\nd0:50:99:d7:63:20\ndebug\nquiet\nno-nope\n10.0.0.1:514\n10.0.0.1:5514"
        );
    }

    #[test]
    fn bootif_names_the_nic_when_the_worker_id_is_no_mac() {
        let Some((_, out)) = sh(
            BUSYBOX,
            "bellows.worker_id=node-7 BOOTIF=01-AA-BB-CC-DD-EE-0F",
            "boot_mac",
        ) else {
            return;
        };
        assert_eq!(out, "aa:bb:cc:dd:ee:0f");
        let (_, out) = sh(BUSYBOX, "bellows.worker_id=node-7 BOOTIF=junk", "boot_mac").unwrap();
        assert_eq!(out, "");
    }

    #[test]
    fn netmasks() {
        let Some((_, out)) = sh(
            BUSYBOX,
            "",
            "for m in 255.255.255.0 255.255.252.0 255.0.0.0 0.0.0.0 255.255.255.255 24 32; do \
               mask_to_prefix $m; done; \
             for m in 255.0.255.0 255.255.255.1 33 abc ''; do mask_to_prefix \"$m\" || echo bad; done",
        ) else {
            return;
        };
        assert_eq!(out, "24\n22\n8\n0\n32\n24\n32\nbad\nbad\nbad\nbad\nbad");
    }

    fn net(cmdline: &str) -> Option<String> {
        sh(
            BUSYBOX,
            cmdline,
            "net_from_cmdline; echo \"$NET_MODE|$NET_ADDR|$NET_PREFIX|$NET_GW|$NET_DNS|$NET_HOST|$NET_DEV\"",
        )
        .map(|(ok, out)| {
            assert!(ok, "{out}");
            out
        })
    }

    #[test]
    fn static_addresses_from_the_command_line() {
        let Some(out) = net("ip=10.0.0.5::10.0.0.1:255.255.255.0:node1:eth1:off:10.0.0.53:1.1.1.1")
        else {
            return;
        };
        assert_eq!(
            out,
            "static|10.0.0.5|24|10.0.0.1|10.0.0.53 1.1.1.1|node1|eth1"
        );
        assert_eq!(
            net("ip=10.0.0.5::10.0.0.1:255.255.0.0").unwrap(),
            "static|10.0.0.5|16|10.0.0.1|||"
        );
        assert_eq!(net("ip=dhcp").unwrap(), "dhcp||||||");
        assert_eq!(net("").unwrap(), "dhcp||||||");
        // Autoconfiguration on a named device.
        assert_eq!(net("ip=:::::eth2:dhcp").unwrap(), "dhcp||||||eth2");
        // bellows.ip wins over ip=.
        assert_eq!(
            net("ip=10.0.0.5::10.0.0.1:255.255.255.0 bellows.ip=192.168.7.9/23 bellows.gw=192.168.6.1 bellows.dns=9.9.9.9,8.8.8.8").unwrap(),
            "static|192.168.7.9|23|192.168.6.1|9.9.9.9 8.8.8.8||"
        );
        // Unusable values fall back to DHCP rather than half-configure.
        assert_eq!(net("bellows.ip=10.0.0/24").unwrap(), "dhcp|10.0.0|24||||");
        assert!(
            net("ip=10.0.0.5::10.0.0.1:255.0.255.0")
                .unwrap()
                .starts_with("dhcp|")
        );
    }

    #[test]
    fn vlans_and_restart_pauses() {
        let Some((_, out)) = sh(
            BUSYBOX,
            "",
            "vlan_ifname eth0 100; vlan_ifname enp129s0f1np1 4094; \
             for v in 1 4094 0 4095 x ''; do valid_vlan \"$v\" && echo y || echo n; done; \
             for n in 1 2 3 4 5 6 20; do worker_pause $n; done",
        ) else {
            return;
        };
        assert_eq!(
            out,
            "eth0.100\nvlan4094\ny\ny\nn\nn\nn\nn\n2\n4\n8\n16\n30\n30\n30"
        );
    }

    /// The init and the boot contract read the same VLAN and boot NIC from
    /// the same command line: the words `KernelArgs` writes, the server-wide
    /// `bellows.vlan=`, both, and values neither accepts.
    #[test]
    fn the_init_reads_vlan_and_nic_as_the_contract_does() {
        use bellows_model::boot::KernelArgs;
        use bellows_model::hardware::VlanId;
        let written = KernelArgs {
            hw_addr: Some("52:54:00:AB:00:01".parse().unwrap()),
            vlan: Some(VlanId::new(16).unwrap()),
            ..KernelArgs::default()
        }
        .to_cmdline();
        let lines = [
            written.as_str(),
            "bellows.vlan=100",
            "bellows.vlan=100 vlan_id=16",
            "vlan_id=16 bellows.vlan=100",
            "vlan_id= bellows.vlan=100",
            "vlan_id=4095 bellows.vlan=100",
            "vlan_id=16,17",
            "vlan_id=0",
            "vlan_id=x",
            "bellows.worker_id=52:54:00:00:00:09 hw_addr=52:54:00:00:00:01",
            "",
        ];
        for line in lines {
            let Some((ok, out)) = sh(
                BUSYBOX,
                line,
                "v=$(boot_vlan); id=${v#*=}; valid_vlan \"$id\" || id=''; echo \"$id|$(boot_mac)\"",
            ) else {
                return;
            };
            assert!(ok, "{line}: {out}");
            let contract = KernelArgs::parse(line);
            let vlan = contract.vlan.map(|v| v.to_string()).unwrap_or_default();
            let mac = contract
                .worker_id
                .filter(|w| w.parse::<bellows_model::MacAddr>().is_ok())
                .or(contract.hw_addr.map(|m| m.to_string()))
                .unwrap_or_default();
            assert_eq!(out, format!("{vlan}|{mac}"), "{line:?}");
        }
        let (_, out) = sh(BUSYBOX, "bellows.vlan=100 vlan_id=16", "boot_vlan").unwrap();
        assert_eq!(out, "vlan_id=16", "the record's word wins");
        // BOOTIF= is the firmware's word, read by the init alone, last.
        let (_, out) = sh(
            BUSYBOX,
            "hw_addr=nonsense BOOTIF=01-aa-bb-cc-dd-ee-0f",
            "boot_mac",
        )
        .unwrap();
        assert_eq!(out, "aa:bb:cc:dd:ee:0f");
    }
}
