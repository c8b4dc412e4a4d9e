//! A GUID partition table, written without IO: the protective MBR, the
//! primary header and entries at the start of the disk, and their backup
//! at its end (UEFI 2.10, chapter 5), for `rootio partition`. Partitions
//! start on 1 MiB boundaries; a size of 0 takes the rest of the disk.

/// Bytes per logical sector this writer uses.
pub const SECTOR: u64 = 512;

/// Partition entries in the table (the usual 128 × 128 bytes = 32 sectors).
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

/// Partitions start on multiples of this many sectors (1 MiB).
pub const ALIGN: u64 = 2048;

/// Linux file system data.
pub const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// Linux swap.
pub const LINUX_SWAP: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";
/// BIOS boot partition (GRUB's core image on a GPT disk).
pub const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
/// EFI system partition.
pub const EFI_SYSTEM: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// Why the table cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    /// The partitions do not fit.
    #[error("partition {number} ({label}) does not fit on a disk of {disk_sectors} sectors")]
    NoRoom {
        /// Its number.
        number: u32,
        /// Its label.
        label: String,
        /// The disk's size.
        disk_sectors: u64,
    },
    /// Numbers must be 1–128, each once.
    #[error("partition number {0} is not 1–128, or is used twice")]
    Number(u32),
    /// Only the last partition may take the rest of the disk.
    #[error("partition {0} has size 0 (the rest of the disk) but is not the last")]
    RestNotLast(u32),
    /// A GUID that does not parse.
    #[error("{0:?} is not a GUID")]
    Guid(String),
}

/// One partition to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Its number (1-based), its place in the table.
    pub number: u32,
    /// Its name in the table (GPT's partition name).
    pub label: String,
    /// Size in sectors; 0 takes the rest of the disk.
    pub sectors: u64,
    /// Type GUID (e.g. [`LINUX_FS`]).
    pub type_guid: String,
    /// Its own GUID (random, from the caller).
    pub unique: [u8; 16],
}

/// The type a Tinkerbell layout's label implies: `BIOS` a BIOS boot
/// partition, `EFI`/`ESP`/`BOOT` with `efi` an EFI system partition,
/// `SWAP` swap, anything else Linux data.
pub fn type_for_label(label: &str) -> &'static str {
    match label.to_ascii_uppercase().as_str() {
        "BIOS" | "BIOS_BOOT" => BIOS_BOOT,
        "EFI" | "ESP" | "EFI-SYSTEM" | "EFI_SYSTEM" => EFI_SYSTEM,
        "SWAP" => LINUX_SWAP,
        _ => LINUX_FS,
    }
}

/// A GUID's on-disk bytes (the first three fields little-endian).
pub fn guid_bytes(text: &str) -> Result<[u8; 16], GptError> {
    let bad = || GptError::Guid(text.to_string());
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return Err(bad());
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Ok(b)
}

/// The bytes to write, and where (in sectors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Sectors 0–33: protective MBR, primary header, entries.
    pub primary: Vec<u8>,
    /// The last 33 sectors: backup entries and header.
    pub backup: Vec<u8>,
    /// Where `backup` starts.
    pub backup_lba: u64,
    /// Each partition's first and last sector, by number.
    pub extents: Vec<(u32, u64, u64)>,
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// The table for `parts` on a disk of `disk_sectors`.
pub fn build(
    disk_sectors: u64,
    disk_guid: [u8; 16],
    parts: &[PartitionSpec],
) -> Result<Table, GptError> {
    let first_usable = 2 + ENTRY_SECTORS;
    let last_usable = disk_sectors
        .checked_sub(2 + ENTRY_SECTORS)
        .filter(|l| *l > first_usable)
        .ok_or(GptError::NoRoom {
            number: parts.first().map_or(0, |p| p.number),
            label: String::new(),
            disk_sectors,
        })?;
    let mut sorted: Vec<&PartitionSpec> = parts.iter().collect();
    sorted.sort_by_key(|p| p.number);
    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    let mut extents = Vec::new();
    let mut next = ALIGN;
    for (i, p) in sorted.iter().enumerate() {
        if p.number == 0
            || u64::from(p.number) > ENTRIES
            || sorted[..i].iter().any(|q| q.number == p.number)
        {
            return Err(GptError::Number(p.number));
        }
        let no_room = || GptError::NoRoom {
            number: p.number,
            label: p.label.clone(),
            disk_sectors,
        };
        let start = next;
        let end = if p.sectors == 0 {
            if i + 1 != sorted.len() {
                return Err(GptError::RestNotLast(p.number));
            }
            // The rest, down to a whole MiB.
            ((last_usable + 1) / ALIGN * ALIGN)
                .checked_sub(1)
                .ok_or_else(no_room)?
        } else {
            start.checked_add(p.sectors - 1).ok_or_else(no_room)?
        };
        if end > last_usable || end < start {
            return Err(no_room());
        }
        next = end.div_ceil(ALIGN).max(1) * ALIGN;
        if next == end {
            next += ALIGN;
        }
        let e =
            &mut entries[((p.number - 1) as u64 * ENTRY_SIZE) as usize..][..ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&guid_bytes(&p.type_guid)?);
        e[16..32].copy_from_slice(&p.unique);
        e[32..40].copy_from_slice(&start.to_le_bytes());
        e[40..48].copy_from_slice(&end.to_le_bytes());
        for (j, unit) in p.label.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
        extents.push((p.number, start, end));
    }
    let entries_crc = crc32(&entries);
    let header = |my_lba: u64, alternate: u64, entries_lba: u64| {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let last = disk_sectors - 1;
    let mut primary = vec![0u8; SECTOR as usize];
    // Protective MBR: one partition of type 0xEE over the disk.
    primary[446 + 4] = 0xEE;
    primary[446 + 1..446 + 4].copy_from_slice(&[0, 2, 0]);
    primary[446 + 5..446 + 8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    primary[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    let mbr_len = u32::try_from(last).unwrap_or(u32::MAX);
    primary[446 + 12..446 + 16].copy_from_slice(&mbr_len.to_le_bytes());
    primary[510] = 0x55;
    primary[511] = 0xAA;
    primary.extend(header(1, last, 2));
    primary.extend_from_slice(&entries);
    let backup_lba = last - ENTRY_SECTORS;
    let mut backup = entries.clone();
    backup.extend(header(last, 1, backup_lba));
    Ok(Table {
        primary,
        backup,
        backup_lba,
        extents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: u32, label: &str, sectors: u64) -> PartitionSpec {
        PartitionSpec {
            number,
            label: label.into(),
            sectors,
            type_guid: type_for_label(label).into(),
            unique: [number as u8; 16],
        }
    }

    #[test]
    fn a_tinkerbell_layout_fits_aligned() {
        let disk = 64 << 11; // 64 MiB
        let t = build(
            disk,
            [7; 16],
            &[
                part(1, "BIOS", 4096),
                part(2, "SWAP", 8192),
                part(3, "ROOT", 0),
            ],
        )
        .unwrap();
        assert_eq!(t.extents[0], (1, 2048, 6143));
        assert_eq!(t.extents[1], (2, 6144, 14335));
        assert_eq!(t.extents[2].1, 14336);
        assert_eq!((t.extents[2].2 + 1) % ALIGN, 0);
        assert_eq!(t.primary.len(), 34 * 512);
        assert_eq!(t.backup.len(), 33 * 512);
        assert_eq!(t.backup_lba, disk - 33);
        assert_eq!(&t.primary[512..520], b"EFI PART");
        assert_eq!(
            guid_bytes(LINUX_FS).unwrap()[..4],
            [0xAF, 0x3D, 0xC6, 0x0F],
            "mixed-endian GUID"
        );
    }

    #[test]
    fn impossible_layouts_are_named() {
        let e = build(64 << 11, [0; 16], &[part(1, "ROOT", 200 << 11)]).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
        let e = build(64 << 11, [0; 16], &[part(1, "A", 0), part(2, "B", 10)]).unwrap_err();
        assert!(e.to_string().contains("not the last"), "{e}");
        let e = build(64 << 11, [0; 16], &[part(1, "A", 10), part(1, "B", 10)]).unwrap_err();
        assert!(e.to_string().contains("used twice"), "{e}");
        assert!(build(40, [0; 16], &[part(1, "A", 0)]).is_err());
        assert!(guid_bytes("nope").is_err());
    }
}
