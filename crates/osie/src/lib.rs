//! Bellows' in-memory OS (Tinkerbell's "osie"/"hook"): the kernel and
//! initramfs a machine network-boots to run `bellows worker`, built from
//! what a Debian 12 machine has — Debian's kernel package (`/boot/vmlinuz-*`,
//! `/lib/modules/*`), busybox (`busybox-static`) and the bellows binary
//! itself — by `bellows image build`.
//!
//! The parts are pure and tested on their own: a cpio "newc" writer
//! ([`cpio`]), the file tree ([`tree`]), ELF reading for the loader,
//! libraries and module info ([`elf`]), module dependency resolution from
//! depmod's index ([`modules`]), the kernel release ([`kernel`]) and the init
//! script ([`init`]). [`build`] puts them together from files on disk.

pub mod build;
pub mod cpio;
pub mod elf;
pub mod init;
pub mod kernel;
pub mod modules;
pub mod tree;

pub use build::{BuildError, BuildOptions, BuildReport, build};

/// The drivers and file systems every image carries: virtio and common
/// server NICs and storage controllers, the file systems `writefile`
/// mounts, VLANs. Names that are built into the kernel are skipped; ones
/// this kernel lacks are reported, not fatal. Device drivers load only when
/// their hardware is present (matched through `modules.alias`).
pub const DEFAULT_MODULES: &[&str] = &[
    // NICs: virtual, Intel, Broadcom, Mellanox, Realtek.
    "virtio_net",
    "virtio_pci",
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "i40e",
    "ice",
    "bnxt_en",
    "mlx4_en",
    "mlx5_core",
    "tg3",
    "bnx2x",
    "r8169",
    // Storage: virtual, SATA, NVMe, LSI/Broadcom RAID and HBAs, SCSI disks.
    "virtio_blk",
    "virtio_scsi",
    "ahci",
    "ata_piix",
    "nvme",
    "megaraid_sas",
    "mpt3sas",
    "sd_mod",
    // File systems writefile mounts (FS_TYPE), and vfat's code pages.
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_ascii",
    "nls_utf8",
    "xfs",
    // Networking: VLANs (bellows.vlan=), raw sockets for DHCP, syslog's socket.
    "8021q",
    "af_packet",
    "unix",
];
