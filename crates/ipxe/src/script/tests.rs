use super::*;

fn hw(netboot: serde_json::Value) -> Hardware {
    Hardware::from_value(serde_json::json!({
        "id": "m1",
        "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:00:01"}, "netboot": netboot}]}
    }))
    .unwrap()
}

/// A machine whose record says nothing but its NIC.
fn plain() -> Hardware {
    hw(serde_json::json!({}))
}

fn mac() -> MacAddr {
    "02:00:00:00:00:01".parse().unwrap()
}

fn os() -> InstallOs {
    InstallOs {
        kernel_url: "http://10.0.0.1:8080/osie/vmlinuz".into(),
        initrd_url: "http://10.0.0.1:8080/osie/initramfs.cpio.gz".into(),
        cmdline: "console=ttyS0 bellows.api=http://10.0.0.1:42113".into(),
        attempts: 3,
    }
}

/// Commands in iPXE's default build; `params`/`param` (PARAM_CMD) are not
/// among them, which is what broke Tinkerbell on OVH (seed 000).
const CORE: &[&str] = &[
    "#!ipxe", "echo", "kernel", "initrd", "boot", "chain", "goto", "exit", "sleep", "sanboot",
    "iseq", "imgfetch",
];

fn assert_core_only(script: &str) {
    for line in script.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        for part in line.split("&&").flat_map(|p| p.split("||")) {
            let Some(cmd) = part.split_whitespace().next() else {
                continue;
            };
            assert!(CORE.contains(&cmd), "non-core command {cmd:?} in {line:?}");
        }
    }
}

#[test]
fn choice_follows_overrides_permissions_and_work() {
    let m = mac();
    let allowed = serde_json::json!({"allow_pxe": true, "allow_workflow": true});
    assert_eq!(choose(&hw(allowed.clone()), m, true), ScriptChoice::Install);
    assert!(matches!(
        choose(&hw(allowed), m, false),
        ScriptChoice::LocalBoot(_)
    ));
    let no_pxe = serde_json::json!({"allow_pxe": false, "allow_workflow": true});
    assert!(
        matches!(choose(&hw(no_pxe), m, true), ScriptChoice::LocalBoot(w) if w.contains("allow_pxe"))
    );
    let no_wf = serde_json::json!({"allow_pxe": true, "allow_workflow": false});
    assert!(
        matches!(choose(&hw(no_wf), m, true), ScriptChoice::LocalBoot(w) if w.contains("allow_workflow"))
    );
    let inline = serde_json::json!({"ipxe": {"contents": "#!ipxe\necho hi\n"}});
    assert_eq!(
        choose(&hw(inline), m, false),
        ScriptChoice::Inline("#!ipxe\necho hi\n".into())
    );
    let chain = serde_json::json!({"ipxe": {"url": "http://x/menu.ipxe"}});
    assert_eq!(
        choose(&hw(chain), m, false),
        ScriptChoice::Chain("http://x/menu.ipxe".into())
    );
}

#[test]
fn install_script_boots_the_in_memory_os_with_retries() {
    let s = render(
        &ScriptChoice::Install,
        &plain(),
        mac(),
        &os(),
        &LocalBoot::Exit,
        None,
    );
    assert!(s.starts_with("#!ipxe\n"));
    assert_core_only(&s);
    let kernel_lines: Vec<&str> = s.lines().filter(|l| l.starts_with("kernel ")).collect();
    assert_eq!(kernel_lines.len(), 3, "three attempts:\n{s}");
    assert!(
        kernel_lines[0].contains("initrd=initramfs.cpio.gz"),
        "EFI stub needs initrd=<name>"
    );
    assert!(kernel_lines[0].contains("bellows.worker_id=02:00:00:00:00:01"));
    assert!(kernel_lines[0].contains("console=ttyS0"));
    assert_eq!(s.lines().filter(|l| l.starts_with("initrd ")).count(), 3);
    assert!(
        s.contains(":failed\n") && s.trim_end().ends_with("exit 1"),
        "falls back to local boot:\n{s}"
    );
    assert!(!s.contains("param"), "no params/param commands");
}

#[test]
fn local_boot_variants() {
    let why = ScriptChoice::LocalBoot("no pending workflow");
    let exit = render(&why, &plain(), mac(), &os(), &LocalBoot::Exit, None);
    assert_eq!(
        exit,
        "#!ipxe\necho Bellows: 02:00:00:00:00:01: no pending workflow; booting the local disk\nexit 1\n"
    );
    let san = render(&why, &plain(), mac(), &os(), &LocalBoot::Sanboot, None);
    assert!(san.contains("sanboot --no-describe --drive 0x80 || exit 1\n"));
    assert!(san.contains("iseq ${platform} efi && exit 1 ||\n"));
    assert_core_only(&san);
    let chained = render(
        &why,
        &plain(),
        mac(),
        &os(),
        &"chain:tftp://10.0.0.1/refind.ipxe".parse().unwrap(),
        None,
    );
    assert!(chained.contains("chain --autofree tftp://10.0.0.1/refind.ipxe || exit 1\n"));
    // Every way out is a failure, so UEFI firmware tries its next option.
    for script in [&exit, &san, &chained] {
        for line in script.lines() {
            let bare_exit = line
                .split("||")
                .chain(line.split("&&"))
                .any(|p| p.trim() == "exit");
            assert!(!bare_exit, "a bare exit (success) in {line:?}");
        }
    }
    assert!("bogus".parse::<LocalBoot>().is_err());
    assert!("chain:".parse::<LocalBoot>().is_err());
}

#[test]
fn overrides_are_served_safely() {
    let inline = render(
        &ScriptChoice::Inline("#!ipxe\nshell\n".into()),
        &plain(),
        mac(),
        &os(),
        &LocalBoot::Exit,
        None,
    );
    assert_eq!(inline, "#!ipxe\nshell\n", "verbatim");
    let bare = render(
        &ScriptChoice::Inline("echo hi".into()),
        &plain(),
        mac(),
        &os(),
        &LocalBoot::Exit,
        None,
    );
    assert_eq!(bare, "#!ipxe\necho hi\n");
    let chain = render(
        &ScriptChoice::Chain("http://x/menu.ipxe".into()),
        &plain(),
        mac(),
        &os(),
        &LocalBoot::Exit,
        None,
    );
    assert!(chain.contains("chain --autofree http://x/menu.ipxe || goto failed"));
    assert_core_only(&chain);
    let evil = render(
        &ScriptChoice::Chain("http://x/\nshell".into()),
        &plain(),
        mac(),
        &os(),
        &LocalBoot::Exit,
        None,
    );
    assert!(!evil.contains("shell"), "{evil}");
}

#[test]
fn refind_local_boot_chains_refind_on_uefi_and_the_first_disk_on_bios() {
    let local: LocalBoot = "refind".parse().unwrap();
    assert_eq!(local, LocalBoot::Refind);
    let s = render(
        &ScriptChoice::LocalBoot("no pending workflow"),
        &plain(),
        mac(),
        &os(),
        &local,
        None,
    );
    assert_core_only(&s);
    assert_eq!(
        s,
        "#!ipxe\n\
         echo Bellows: 02:00:00:00:00:01: no pending workflow; booting the local disk\n\
         iseq ${platform} efi && goto refind ||\n\
         sanboot --no-describe --drive 0x80 || exit 1\n\
         :refind\n\
         imgfetch --name refind.conf /refind/refind.conf || exit 1\n\
         chain --name refind.efi /refind/${buildarch}/refind.efi || exit 1\n"
    );
}

#[test]
fn the_credential_rides_on_the_kernel_line_only_for_an_install() {
    let token = "bellows_boot_0123abcd";
    let s = render(
        &ScriptChoice::Install,
        &plain(),
        mac(),
        &os(),
        &LocalBoot::Exit,
        Some(token),
    );
    let kernel = s
        .lines()
        .find(|l| l.starts_with("kernel "))
        .expect("kernel line");
    let args = KernelArgs::parse(kernel);
    assert_eq!(args.token.as_deref(), Some(token));
    assert_eq!(args.worker_id.as_deref(), Some("02:00:00:00:00:01"));
    let local = render(
        &ScriptChoice::LocalBoot("no pending workflow"),
        &plain(),
        mac(),
        &os(),
        &LocalBoot::Exit,
        Some(token),
    );
    assert!(!local.contains(token));
}

#[test]
fn the_records_vlan_and_facility_reach_the_kernel_line() {
    let record = |vlan: &str| {
        Hardware::from_value(serde_json::json!({
            "id": "m1",
            "metadata": {"facility": {"facility_code": "onprem"}},
            "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:00:01", "vlan_id": vlan}}]}
        }))
        .unwrap()
    };
    let kernel_args = |s: &str| {
        let line = s
            .lines()
            .find(|l| l.starts_with("kernel "))
            .expect("kernel line");
        KernelArgs::parse(line)
    };
    let s = render(
        &ScriptChoice::Install,
        &record("100"),
        mac(),
        &os(),
        &LocalBoot::Exit,
        None,
    );
    let args = kernel_args(&s);
    assert_eq!(args.vlan.map(|v| v.get()), Some(100), "{s}");
    assert_eq!(args.facility.as_deref(), Some("onprem"));
    assert_eq!(args.hw_addr, Some(mac()));
    assert!(s.contains(" vlan_id=100 "), "{s}");
    assert!(!s.contains("ignoring"), "{s}");
    // A VLAN no interface can carry: untagged, and the console says so
    // without echoing what the record holds.
    let s = render(
        &ScriptChoice::Install,
        &record("7 && shell"),
        mac(),
        &os(),
        &LocalBoot::Exit,
        None,
    );
    assert_eq!(kernel_args(&s).vlan, None);
    assert!(s.contains("echo Bellows: ignoring dhcp.vlan_id"), "{s}");
    assert!(!s.contains("shell"), "{s}");
    assert_core_only(&s);
}
