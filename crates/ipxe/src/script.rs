//! Choosing and writing a machine's iPXE script. Pure: no IO.

use std::fmt::Write as _;
use std::str::FromStr;

use bellows_model::boot::{self, KernelArgs, REFIND_PATH};
use bellows_model::{Hardware, MacAddr};

/// How a machine with nothing to do boots its installed system.
///
/// Every way out that means "boot something else" is `exit 1`: a failure.
/// UEFI firmware treats a successful return (`exit`, status 0) as a boot
/// that is finished and opens its setup menu instead of trying the next
/// boot option; BIOS moves on either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalBoot {
    /// `exit 1`: hand back to the firmware, which tries the next boot device.
    Exit,
    /// `sanboot` the first BIOS disk (0x80); on UEFI, `exit 1` (iPXE cannot
    /// sanboot a local disk there).
    Sanboot,
    /// Chain a local bootloader by URL.
    Chain(String),
    /// rEFInd from Bellows' HTTP service on UEFI, as seed 004 does it: it
    /// scans the internal disks and boots what it finds, so a disk whose
    /// loader the firmware has no boot entry for still boots. BIOS
    /// machines `sanboot` their first disk.
    Refind,
}

/// Why a `--local-boot` value is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a local-boot mode: use exit, sanboot, refind or chain:URL")]
pub struct LocalBootParseError(String);

impl FromStr for LocalBoot {
    type Err = LocalBootParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exit" => Ok(LocalBoot::Exit),
            "sanboot" => Ok(LocalBoot::Sanboot),
            "refind" => Ok(LocalBoot::Refind),
            _ => match s.strip_prefix("chain:") {
                Some(url) if !url.is_empty() && !url.contains(['\n', '\r']) => {
                    Ok(LocalBoot::Chain(url.to_string()))
                }
                _ => Err(LocalBootParseError(s.to_string())),
            },
        }
    }
}

/// The in-memory OS a machine boots to run its workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOs {
    /// Kernel URL.
    pub kernel_url: String,
    /// Initrd URL.
    pub initrd_url: String,
    /// Kernel command line, without `initrd=` and the machine's own words
    /// (`KernelArgs::for_machine`: worker id, `hw_addr=`, `vlan_id=`,
    /// `facility=`), which are added here.
    pub cmdline: String,
    /// Download attempts for each of kernel and initrd before giving up.
    pub attempts: u32,
}

/// What a machine is told to do when it fetches its script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptChoice {
    /// The record carries its own script (`netboot.ipxe.contents`).
    Inline(String),
    /// The record names a script to chain (`netboot.ipxe.url`).
    Chain(String),
    /// Boot the in-memory OS: a workflow is waiting for this machine.
    Install,
    /// Nothing to do, or not allowed to: boot the local disk.
    LocalBoot(&'static str),
    /// A machine nobody registered (or one discovered and not yet
    /// enrolled): the in-memory OS in discovery mode, which reports the
    /// inventory and waits.
    Discover,
}

/// Picks the script for the machine's NIC `mac`.
///
/// Per-machine overrides win; then a machine may run a workflow only if it
/// is allowed to PXE-boot and to run workflows and one is waiting.
pub fn choose(hw: &Hardware, mac: MacAddr, workflow_waiting: bool) -> ScriptChoice {
    let netboot = hw.interface_by_mac(mac).and_then(|i| i.netboot.as_ref());
    if let Some(ipxe) = netboot.and_then(|n| n.ipxe.as_ref()) {
        if let Some(contents) = ipxe.contents.as_deref().filter(|c| !c.trim().is_empty()) {
            return ScriptChoice::Inline(contents.to_string());
        }
        if let Some(url) = ipxe.url.as_deref().filter(|u| !u.trim().is_empty()) {
            return ScriptChoice::Chain(url.trim().to_string());
        }
    }
    if !boot::netboot_allowed(hw.interface_by_mac(mac)) {
        return ScriptChoice::LocalBoot("netboot.allow_pxe is false");
    }
    if bellows_model::discovery::is_discovered(hw) {
        return ScriptChoice::Discover;
    }
    if netboot.and_then(|n| n.allow_workflow) == Some(false) {
        return ScriptChoice::LocalBoot("netboot.allow_workflow is false");
    }
    if !workflow_waiting {
        return ScriptChoice::LocalBoot("no pending workflow");
    }
    ScriptChoice::Install
}

/// iPXE treats `${`, newlines and some separators specially; values from
/// records go into scripts only through this check.
fn script_safe(s: &str) -> bool {
    !s.contains(['\n', '\r', '$', '\0'])
}

/// The last path segment of a URL, which iPXE uses as the image name (and
/// the EFI stub needs as `initrd=<name>`).
fn image_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("initrd")
}

/// Writes the script for `choice`, for the machine `hw` booting by its NIC
/// `mac`. Its record's words (`KernelArgs::for_machine`) go on the kernel
/// command line, with the per-boot `credential` when the server minted one.
pub fn render(
    choice: &ScriptChoice,
    hw: &Hardware,
    mac: MacAddr,
    os: &InstallOs,
    local: &LocalBoot,
    credential: Option<&str>,
) -> String {
    let mut s = String::from("#!ipxe\n");
    match choice {
        ScriptChoice::Inline(contents) => {
            // Serve it as written, adding the magic line only if missing.
            if contents.trim_start().starts_with("#!ipxe") {
                return contents.clone();
            }
            s.push_str(contents);
            if !contents.ends_with('\n') {
                s.push('\n');
            }
        }
        ScriptChoice::Chain(url) if script_safe(url) => {
            let _ = writeln!(s, "echo Bellows: chaining the script set for {mac}");
            let _ = writeln!(s, "chain --autofree {url} || goto failed");
            s.push_str(":failed\necho Bellows: chain failed; booting the local disk\n");
            local_boot(&mut s, local);
        }
        ScriptChoice::Chain(_) => {
            s.push_str("echo Bellows: the record's ipxe.url is unsafe; booting the local disk\n");
            local_boot(&mut s, local);
        }
        ScriptChoice::LocalBoot(why) => {
            let _ = writeln!(s, "echo Bellows: {mac}: {why}; booting the local disk");
            local_boot(&mut s, local);
        }
        ScriptChoice::Install => install(&mut s, hw, mac, os, local, credential, false),
        ScriptChoice::Discover => install(&mut s, hw, mac, os, local, credential, true),
    }
    s
}

fn install(
    s: &mut String,
    hw: &Hardware,
    mac: MacAddr,
    os: &InstallOs,
    local: &LocalBoot,
    credential: Option<&str>,
    discovery: bool,
) {
    let initrd_name = image_name(&os.initrd_url);
    let machine = KernelArgs {
        token: credential.map(str::to_string),
        discovery,
        ..KernelArgs::for_machine(hw, mac)
    };
    let cmdline = format!(
        "initrd={initrd_name} {} {}",
        os.cmdline.trim(),
        machine.to_cmdline()
    );
    let attempts = os.attempts.max(1);
    if discovery {
        let _ = writeln!(
            s,
            "echo Bellows: {mac} is not enrolled; booting the in-memory OS to report its inventory"
        );
    } else {
        let _ = writeln!(
            s,
            "echo Bellows: {mac} has a workflow; booting the in-memory OS"
        );
    }
    // A VLAN the record names but no interface can carry: the machine boots
    // untagged, and its console says why (without the value: iPXE would
    // read `&&` or `${` in it).
    if hw.vlan_of(mac).is_err() {
        s.push_str(
            "echo Bellows: ignoring dhcp.vlan_id: not a VLAN id from 1 to 4094; booting untagged\n",
        );
    }
    // Unrolled retries: `kernel` replaces any image fetched by a failed try.
    for i in 1..=attempts {
        let _ = writeln!(
            s,
            "kernel {} {cmdline} && goto kernel_ok || echo Bellows: kernel download {i}/{attempts} failed",
            os.kernel_url
        );
        if i < attempts {
            let _ = writeln!(s, "sleep {}", i.min(5));
        }
    }
    s.push_str("goto failed\n:kernel_ok\n");
    for i in 1..=attempts {
        let _ = writeln!(
            s,
            "initrd {} && goto initrd_ok || echo Bellows: initrd download {i}/{attempts} failed",
            os.initrd_url
        );
        if i < attempts {
            let _ = writeln!(s, "sleep {}", i.min(5));
        }
    }
    s.push_str("goto failed\n:initrd_ok\nboot || goto failed\n");
    s.push_str(":failed\necho Bellows: could not boot the in-memory OS; booting the local disk\n");
    local_boot(s, local);
}

fn local_boot(s: &mut String, local: &LocalBoot) {
    match local {
        LocalBoot::Exit => s.push_str("exit 1\n"),
        LocalBoot::Sanboot => s.push_str(
            "iseq ${platform} efi && exit 1 ||\nsanboot --no-describe --drive 0x80 || exit 1\n",
        ),
        LocalBoot::Chain(url) => {
            let _ = writeln!(s, "chain --autofree {url} || exit 1");
        }
        LocalBoot::Refind => {
            // rEFInd reads refind.conf from the directory it was loaded
            // from: iPXE shows it every image it holds, by name. Paths are
            // absolute on this server, resolved against the script's URL.
            s.push_str("iseq ${platform} efi && goto refind ||\n");
            s.push_str("sanboot --no-describe --drive 0x80 || exit 1\n");
            s.push_str(":refind\n");
            let _ = writeln!(
                s,
                "imgfetch --name refind.conf {REFIND_PATH}/refind.conf || exit 1"
            );
            let _ = writeln!(
                s,
                "chain --name refind.efi {REFIND_PATH}/${{buildarch}}/refind.efi || exit 1"
            );
        }
    }
}

#[cfg(test)]
mod tests;
