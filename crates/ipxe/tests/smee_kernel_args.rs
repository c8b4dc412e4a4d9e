//! Tinkerbell compatibility: the in-memory OS's kernel command line against
//! smee's.
//!
//! For every hardware record from smee's tests (`smee/*.json` in the
//! compatibility corpus, `../shared/tinkerbell-compat/fixtures/`) that smee
//! boots into Hook, the corpus holds the script smee writes for it
//! (`hook-with-vlan.ipxe`, `hook-no-vlan.ipxe`). Bellows' script for the
//! same record is rendered here, and every word on smee's kernel line is a
//! row: the same word with the same value, a Bellows word carrying the same
//! value (`RENAMED`), or a deliberate difference (`DIFFERENCES`, each with
//! its reason). Any other row fails the test.
//!
//! The corpus is not part of the repository: it is found through
//! `BELLOWS_COMPAT_DIR`, else as `shared/tinkerbell-compat` beside one of
//! this crate's ancestor directories. Without it the test says so loudly
//! and passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bellows_ipxe::{InstallOs, LocalBoot, ScriptChoice, choose, render};
use bellows_model::boot::{DEFAULT_CONSOLES, KernelArgs};
use bellows_model::{Hardware, MacAddr};

/// The server settings smee's script test ran with (its syslog host and
/// Tink server `1.2.3.4:42113`), given to Bellows as its own: the boot
/// listener's URL and the syslog receiver on port 514.
const SYSLOG: &str = "1.2.3.4";
const API: &str = "http://1.2.3.4:42113";

/// smee words Bellows writes under its own name, with the same value.
const RENAMED: &[(&str, &str, &str)] = &[
    (
        "worker_id",
        "bellows.worker_id",
        "Bellows' worker reads its own namespaced words; the value (the MAC) is the same",
    ),
    (
        "syslog_host",
        "bellows.syslog",
        "the same HOST (or HOST:PORT when the receiver is not on 514)",
    ),
];

/// smee words Bellows deliberately does not write, or writes differently.
/// A key is a word (`modules`) or, for a word that repeats, `word=value`.
const DIFFERENCES: &[(&str, &str)] = &[
    (
        "tink_worker_image",
        "an extra parameter smee's test passes for Hook (the tink-worker container); Bellows' worker is built into its in-memory OS",
    ),
    (
        "tinkerbell",
        "an extra parameter smee's test passes (-extra-kernel-args); a site's own extras go in Bellows' --kernel-args",
    ),
    (
        "grpc_authority",
        "Tink's gRPC host:port; Bellows writes the worker service's URL as bellows.api=",
    ),
    (
        "tinkerbell_tls",
        "TLS follows bellows.api='s scheme (https://), with the CA pinned by bellows.ca=",
    ),
    (
        "tinkerbell_insecure_tls",
        "no unverified TLS: an https:// server is always checked (bellows.ca= pins its CA)",
    ),
    (
        "modules",
        "Hook mounts a squashfs root (loop, squashfs); Bellows' initramfs is the root and its init loads drivers by modalias; extra modules go in bellows.modules=",
    ),
    (
        "intel_iommu",
        "Hook's tuning, not needed to provision; an operator adds it with --kernel-args",
    ),
    (
        "iommu",
        "Hook's tuning, not needed to provision; an operator adds it with --kernel-args",
    ),
    (
        "initrd",
        "the EFI stub's initrd=NAME names the image iPXE loaded: Bellows' initrd has its own name",
    ),
    (
        "console=ttyS1,115200",
        "Bellows' serial console is the first port (ttyS0: QEMU, most boards' COM1); a site whose serial-over-LAN is COM2 adds console=ttyS1,115200 with --kernel-args",
    ),
];

/// Where the corpus is, or every place it was looked for.
fn corpus() -> Result<PathBuf, Vec<PathBuf>> {
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("BELLOWS_COMPAT_DIR") {
        let dir = PathBuf::from(dir);
        if dir.join("fixtures").is_dir() {
            return Ok(dir);
        }
        tried.push(dir);
    }
    for ancestor in Path::new(env!("CARGO_MANIFEST_DIR")).ancestors() {
        let dir = ancestor.join("shared/tinkerbell-compat");
        if dir.join("fixtures").is_dir() {
            return Ok(dir);
        }
        tried.push(dir);
    }
    Err(tried)
}

/// The words of the first `kernel` command in an iPXE script (with its
/// `\` continuation lines), after the kernel's URL, up to `&&`/`||`.
fn kernel_words(script: &str) -> Vec<String> {
    let joined = script.replace("\\\n", " ");
    let Some(line) = joined
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kernel "))
    else {
        return Vec::new();
    };
    line.split_whitespace()
        .skip(2)
        .take_while(|w| *w != "&&" && *w != "||")
        .map(str::to_string)
        .collect()
}

fn split(word: &str) -> (&str, &str) {
    word.split_once('=').unwrap_or((word, ""))
}

/// Which of smee's scripts a record gets, as smee decides it: custom
/// scripts and `allow_pxe: false` get none of Hook's; otherwise the VLAN
/// script when the NIC has a `vlan_id`.
fn smee_expectation(hw: &Hardware, mac: MacAddr) -> Option<&'static str> {
    let iface = hw.interface_by_mac(mac)?;
    let netboot = iface.netboot.as_ref();
    if netboot.and_then(|n| n.allow_pxe) != Some(true)
        || netboot.and_then(|n| n.ipxe.as_ref()).is_some()
    {
        return None;
    }
    let vlan = iface
        .dhcp
        .as_ref()
        .and_then(|d| d.vlan_id.as_deref())
        .is_some_and(|v| !v.is_empty());
    Some(if vlan {
        "hook-with-vlan.ipxe"
    } else {
        "hook-no-vlan.ipxe"
    })
}

/// Bellows' in-memory OS as the server describes it (`install_os`), with
/// smee's test settings.
fn install_os() -> InstallOs {
    let server = KernelArgs {
        api: Some(API.into()),
        syslog: Some(SYSLOG.into()),
        consoles: DEFAULT_CONSOLES.iter().map(|c| c.to_string()).collect(),
        ..KernelArgs::default()
    };
    InstallOs {
        kernel_url: "http://1.2.3.4:8080/osie/vmlinuz".into(),
        initrd_url: "http://1.2.3.4:8080/osie/initramfs".into(),
        cmdline: server.to_cmdline(),
        attempts: 3,
    }
}

#[derive(Default)]
struct Counts {
    same: usize,
    renamed: usize,
    listed: usize,
    failed: usize,
}

#[test]
fn smee_kernel_arguments() {
    let dir = match corpus() {
        Ok(dir) => dir,
        Err(tried) => {
            eprintln!(
                "\n!!!!!!!! SKIPPED: the Tinkerbell compatibility corpus is not here. Looked in:"
            );
            for t in tried {
                eprintln!("!!!!!!!!   {}", t.display());
            }
            eprintln!("!!!!!!!! Set BELLOWS_COMPAT_DIR to the tinkerbell-compat directory.\n");
            return;
        }
    };
    let smee = dir.join("fixtures/smee");
    let mut records: Vec<PathBuf> = std::fs::read_dir(&smee)
        .unwrap_or_else(|e| panic!("{}: {e}", smee.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    records.sort();
    assert!(!records.is_empty(), "no smee/*.json in {}", smee.display());

    let os = install_os();
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut compared = 0;
    println!(
        "{:<22} {:<20} {:<26} {:<8} detail",
        "record", "script", "smee word", "result"
    );
    for path in &records {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let hw = Hardware::from_json(&bytes)
            .unwrap_or_else(|e| panic!("{name}: Bellows refuses it: {e}"));
        let mac = hw.macs().next().unwrap_or_else(|| panic!("{name}: no NIC"));
        let choice = choose(&hw, mac, true);
        let Some(expect_name) = smee_expectation(&hw, mac) else {
            // smee serves these no Hook script; neither does Bellows boot
            // its in-memory OS for them.
            println!(
                "{name:<22} {:<20} {:<26} {:<8} Bellows: {choice:?}",
                "-", "-", "n/a"
            );
            assert_ne!(
                choice,
                ScriptChoice::Install,
                "{name}: smee would not boot Hook"
            );
            continue;
        };
        let expect_path = smee.join(expect_name);
        let Ok(expected) = std::fs::read_to_string(&expect_path) else {
            println!("{name:<22} {expect_name:<20} (expectation missing: not compared)");
            continue;
        };
        compared += 1;
        assert_eq!(
            choice,
            ScriptChoice::Install,
            "{name}: Bellows must boot its OS"
        );
        let ours = kernel_words(&render(&choice, &hw, mac, &os, &LocalBoot::Exit, None));
        let theirs = kernel_words(&expected);
        assert!(!theirs.is_empty(), "{expect_name}: no kernel line");
        // smee's script test renders both scripts for its own NIC: a word
        // whose value is the MAC it wrote as hw_addr= means "the machine's
        // MAC", which for this record is `mac`.
        let their_mac = theirs
            .iter()
            .map(|w| split(w))
            .find(|(k, _)| *k == "hw_addr")
            .map(|(_, v)| v.to_string());
        if their_mac.as_deref().is_some_and(|m| m != mac.to_string()) {
            println!(
                "{name:<22} {expect_name:<20} note: smee rendered this for NIC {}, the record's is {mac}; MAC-valued words are compared with the record's",
                their_mac.as_deref().unwrap_or("?")
            );
        }
        let has = |key: &str, value: &str| ours.iter().any(|w| split(w) == (key, value));
        for word in &theirs {
            let (key, value) = split(word);
            let value = if their_mac.as_deref() == Some(value) {
                mac.to_string()
            } else {
                value.to_string()
            };
            let row = counts.entry(key.to_string()).or_default();
            let renamed = RENAMED.iter().find(|(k, _, _)| *k == key);
            let listed = DIFFERENCES
                .iter()
                .find(|(k, _)| *k == key || *k == word.as_str());
            let (result, detail) = if has(key, &value) {
                row.same += 1;
                ("same", format!("{key}={value}"))
            } else if let Some((_, ours_key, why)) = renamed.filter(|(_, o, _)| has(o, &value)) {
                row.renamed += 1;
                ("renamed", format!("{ours_key}={value}: {why}"))
            } else if let Some((_, why)) = listed {
                row.listed += 1;
                ("listed", why.to_string())
            } else {
                row.failed += 1;
                let found: Vec<&String> = ours.iter().filter(|w| split(w).0 == key).collect();
                failures.push(format!("{name}: {word} (Bellows has {found:?})"));
                ("FAIL", format!("Bellows has {found:?}"))
            };
            println!("{name:<22} {expect_name:<20} {word:<26} {result:<8} {detail}");
        }
    }
    assert!(compared > 0, "no record had a matching smee script");

    println!(
        "\n{:<26} {:>5} {:>8} {:>7} {:>7}",
        "smee word", "same", "renamed", "listed", "FAIL"
    );
    let mut total = Counts::default();
    for (key, c) in &counts {
        println!(
            "{key:<26} {:>5} {:>8} {:>7} {:>7}",
            c.same, c.renamed, c.listed, c.failed
        );
        total.same += c.same;
        total.renamed += c.renamed;
        total.listed += c.listed;
        total.failed += c.failed;
    }
    let rows = total.same + total.renamed + total.listed + total.failed;
    println!(
        "smee kernel arguments: {}/{rows} passing ({} same, {} renamed), {} deliberate differences, {} failing",
        total.same + total.renamed,
        total.same,
        total.renamed,
        total.listed,
        total.failed
    );
    assert!(
        failures.is_empty(),
        "smee kernel arguments neither passing nor listed as deliberate:\n{}",
        failures.join("\n")
    );
}
