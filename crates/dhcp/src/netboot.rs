//! Network-boot decisions: which stage a client is in, and what it should
//! load next. Pure.
//!
//! The boot goes firmware PXE → iPXE binary (TFTP, or HTTP for UEFI HTTP
//! boot) → iPXE again, which must now get its script by HTTP instead of the
//! binary, or it would chainload itself forever.

use std::net::Ipv4Addr;

use bellows_model::hardware::{Dhcp, Interface};
use bellows_model::{MacAddr, boot};

use crate::config::{DhcpConfig, IpxeBinaries, valid_boot_file_name};
use crate::wire::{Request, code};

/// What kind of network-boot client sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// An ordinary DHCP client (an installed OS, dhclient …).
    Plain,
    /// Firmware PXE (option 60 starts with `PXEClient`): loads a binary
    /// by TFTP from `siaddr` + `file`.
    PxeFirmware,
    /// UEFI HTTP boot (option 60 starts with `HTTPClient`): loads a URL,
    /// and needs `HTTPClient` echoed in option 60.
    HttpFirmware,
    /// iPXE (user class `iPXE`, or option 175 present): wants its script.
    Ipxe {
        /// User class `Tinkerbell`: a Tinkerbell-built iPXE, which is
        /// always past the binary stage.
        tinkerbell: bool,
    },
}

/// A client's kind and firmware architecture (option 93).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetbootClient {
    /// Boot stage.
    pub kind: ClientKind,
    /// Option 93, if sent.
    pub arch: Option<u16>,
}

/// Does option 77 name `class`? iPXE sends the bare string; RFC 3004
/// clients send length-prefixed entries. Both are accepted.
fn user_class_has(value: &[u8], class: &[u8]) -> bool {
    if value == class {
        return true;
    }
    let mut rest = value;
    while let Some((&len, tail)) = rest.split_first() {
        let Some(entry) = tail.get(..usize::from(len)) else {
            return false;
        };
        if entry == class {
            return true;
        }
        rest = &tail[usize::from(len)..];
    }
    false
}

impl NetbootClient {
    /// Reads the client's boot stage from its options.
    pub fn classify(request: &Request) -> NetbootClient {
        let opts = &request.options;
        let user_class = opts.get(code::USER_CLASS).unwrap_or_default();
        let tinkerbell = user_class_has(user_class, b"Tinkerbell");
        let vendor = opts.get(code::VENDOR_CLASS).unwrap_or_default();
        let kind = if tinkerbell
            || user_class_has(user_class, b"iPXE")
            || opts.contains(code::IPXE_ENCAPSULATED)
        {
            ClientKind::Ipxe { tinkerbell }
        } else if vendor.starts_with(b"HTTPClient") {
            ClientKind::HttpFirmware
        } else if vendor.starts_with(b"PXEClient") {
            ClientKind::PxeFirmware
        } else {
            ClientKind::Plain
        };
        NetbootClient {
            kind,
            arch: request.client_arch(),
        }
    }

    /// Is this a network-boot client at all?
    pub fn is_netboot(&self) -> bool {
        self.kind != ClientKind::Plain
    }
}

/// RFC 4578 / IANA processor architecture types Bellows knows.
pub mod arch {
    /// x86 BIOS.
    pub const BIOS: u16 = 0;
    /// x86 (32-bit) UEFI.
    pub const EFI_IA32: u16 = 6;
    /// x86-64 UEFI (EFI BC).
    pub const EFI_BC: u16 = 7;
    /// x86-64 UEFI.
    pub const EFI_X64: u16 = 9;
    /// arm64 UEFI.
    pub const EFI_ARM64: u16 = 11;
    /// x86 UEFI HTTP boot.
    pub const EFI_IA32_HTTP: u16 = 15;
    /// x86-64 UEFI HTTP boot.
    pub const EFI_X64_HTTP: u16 = 16;
    /// arm64 UEFI HTTP boot.
    pub const EFI_ARM64_HTTP: u16 = 19;
}

/// What a netboot client is told to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootPlan {
    /// A binary by TFTP: `siaddr` + `file`.
    Tftp {
        /// TFTP server.
        next_server: Ipv4Addr,
        /// Binary name.
        file: String,
    },
    /// A binary by URL (UEFI HTTP boot).
    Http {
        /// Full URL.
        url: String,
    },
    /// The iPXE script for this machine.
    Script {
        /// Full URL.
        url: String,
    },
    /// No boot file; the reason is logged and, in proxy mode, means no reply.
    Nothing(String),
}

/// Per-request facts the plan depends on.
pub(crate) struct PlanInputs<'a> {
    pub client: NetbootClient,
    pub mac: MacAddr,
    pub interface: &'a Interface,
    pub server_id: Ipv4Addr,
}

/// Architecture from the record when option 93 is missing: `dhcp.arch`
/// and `dhcp.uefi` as Tinkerbell records carry them.
fn arch_from_record(dhcp: Option<&Dhcp>) -> Option<u16> {
    let dhcp = dhcp?;
    let uefi = dhcp.uefi.unwrap_or(false);
    let cpu = dhcp.arch.as_deref().unwrap_or("").to_ascii_lowercase();
    Some(match cpu.as_str() {
        "aarch64" | "arm64" => arch::EFI_ARM64,
        "i386" | "i686" | "x86" if uefi => arch::EFI_IA32,
        _ if uefi => arch::EFI_BC,
        "" if dhcp.uefi.is_none() => return None,
        _ => arch::BIOS,
    })
}

/// A per-machine binary name override: `netboot.ipxe_binary` (or
/// `ipxeBinary` in resource-shaped files), kept in the record's extras.
fn binary_override(interface: &Interface) -> Option<&str> {
    let extra = &interface.netboot.as_ref()?.extra;
    extra
        .get("ipxe_binary")
        .or_else(|| extra.get("ipxeBinary"))?
        .as_str()
}

/// The binary name for a firmware architecture, and whether it is fetched
/// over HTTP.
fn binary_for_arch(arch: u16, files: &IpxeBinaries) -> Result<(&str, bool), String> {
    fn optional<'f>(name: &'f Option<String>, what: &str, arch: u16) -> Result<&'f str, String> {
        name.as_deref()
            .ok_or_else(|| format!("no iPXE binary is configured for {what} (architecture {arch})"))
    }
    Ok(match arch {
        arch::BIOS => (files.bios.as_str(), false),
        arch::EFI_BC | arch::EFI_X64 => (files.efi_x64.as_str(), false),
        arch::EFI_IA32 => (optional(&files.efi_ia32, "32-bit UEFI", arch)?, false),
        arch::EFI_ARM64 => (optional(&files.efi_arm64, "arm64 UEFI", arch)?, false),
        arch::EFI_X64_HTTP => (files.efi_x64.as_str(), true),
        arch::EFI_IA32_HTTP => (optional(&files.efi_ia32, "32-bit UEFI HTTP", arch)?, true),
        arch::EFI_ARM64_HTTP => (optional(&files.efi_arm64, "arm64 UEFI HTTP", arch)?, true),
        other => return Err(format!("client architecture {other} has no iPXE binary")),
    })
}

/// Base of HTTP URLs for this request.
pub(crate) fn http_base(cfg: &DhcpConfig, server_id: Ipv4Addr) -> String {
    match &cfg.http_base_url {
        Some(base) => base.clone(),
        None => format!("http://{server_id}:{}", cfg.http_port),
    }
}

/// Chooses what the client loads next.
pub(crate) fn plan(cfg: &DhcpConfig, inputs: &PlanInputs<'_>) -> BootPlan {
    let client = inputs.client;
    let dhcp = inputs.interface.dhcp.as_ref();
    let base = http_base(cfg, inputs.server_id);
    let next_server = cfg.tftp_server.unwrap_or(inputs.server_id);

    if let ClientKind::Ipxe { .. } = client.kind {
        return BootPlan::Script {
            url: boot::script_url(&base, inputs.mac),
        };
    }

    let default_arch = match client.kind {
        ClientKind::HttpFirmware => arch::EFI_X64_HTTP,
        // A PXE ROM without option 93 is a legacy BIOS one.
        _ => arch::BIOS,
    };
    let arch = client
        .arch
        .or_else(|| arch_from_record(dhcp))
        .unwrap_or(default_arch);
    let http_arch = matches!(
        arch,
        arch::EFI_IA32_HTTP | arch::EFI_X64_HTTP | arch::EFI_ARM64_HTTP
    );
    let (name, over_http) = match binary_override(inputs.interface) {
        Some(name) if valid_boot_file_name(name) => (name, http_arch),
        Some(name) => {
            return BootPlan::Nothing(format!(
                "netboot.ipxe_binary {name:?} is not a plain file name"
            ));
        }
        None => match binary_for_arch(arch, &cfg.ipxe_binaries) {
            Ok(found) => found,
            Err(why) => return BootPlan::Nothing(why),
        },
    };
    if over_http || client.kind == ClientKind::HttpFirmware {
        BootPlan::Http {
            url: boot::binary_url(&base, name),
        }
    } else {
        BootPlan::Tftp {
            next_server,
            file: name.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_class_accepts_raw_and_rfc3004_forms() {
        assert!(user_class_has(b"iPXE", b"iPXE"));
        assert!(user_class_has(b"\x04iPXE", b"iPXE"));
        assert!(user_class_has(b"\x03abc\x0aTinkerbell", b"Tinkerbell"));
        assert!(!user_class_has(b"\x09iPXE", b"iPXE"));
        assert!(!user_class_has(b"", b"iPXE"));
    }

    #[test]
    fn record_hints_pick_an_architecture() {
        let dhcp = |arch: Option<&str>, uefi: Option<bool>| {
            serde_json::from_value::<Dhcp>(serde_json::json!({
                "mac": "02:00:00:00:00:01", "arch": arch, "uefi": uefi
            }))
            .expect("dhcp")
        };
        assert_eq!(
            arch_from_record(Some(&dhcp(Some("x86_64"), Some(true)))),
            Some(7)
        );
        assert_eq!(
            arch_from_record(Some(&dhcp(Some("x86_64"), Some(false)))),
            Some(0)
        );
        assert_eq!(
            arch_from_record(Some(&dhcp(Some("aarch64"), None))),
            Some(11)
        );
        assert_eq!(
            arch_from_record(Some(&dhcp(Some("i386"), Some(true)))),
            Some(6)
        );
        assert_eq!(arch_from_record(Some(&dhcp(None, None))), None);
    }
}
