//! The qcow2 format, read without IO: the header, and what each L1 and L2
//! table entry says about a guest cluster (QEMU's `docs/interop/qcow2.txt`).
//! `qemuimg2disk` turns that into range requests and writes.

/// The four bytes every qcow2 file starts with.
pub const MAGIC: &[u8; 4] = b"QFI\xfb";

/// Bytes of the file's start [`parse_header`] needs (the version 3 header
/// with its compression type fits easily).
pub const HEADER_BYTES: usize = 512;

/// Largest L1 table accepted, in entries (a 2 PiB disk with 64 KiB
/// clusters); bigger is a corrupt or hostile file.
pub const MAX_L1_ENTRIES: u64 = 4 << 20;

/// Why a file cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Qcow2Error {
    /// Too short, or a field out of range.
    #[error("not a valid qcow2 header: {0}")]
    Header(String),
    /// A feature this reader does not handle.
    #[error("qcow2 {0} is not supported")]
    Unsupported(String),
    /// A table entry points somewhere impossible.
    #[error("corrupt qcow2 table entry {entry:#018x}: {why}")]
    Entry {
        /// The raw entry.
        entry: u64,
        /// What is wrong.
        why: &'static str,
    },
}

/// What the header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// The disk's size in bytes.
    pub size: u64,
    /// Entries in the L1 table.
    pub l1_size: u64,
    /// Where the L1 table is.
    pub l1_offset: u64,
}

impl Header {
    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries per L2 table (one cluster of 8-byte entries).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// Whether `head` starts like a qcow2 file.
pub fn is_qcow2(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// Reads the header from the file's first bytes.
pub fn parse_header(b: &[u8]) -> Result<Header, Qcow2Error> {
    let bad = |why: &str| Qcow2Error::Header(why.to_string());
    if b.len() < 72 || !is_qcow2(b) {
        return Err(bad("too short or no QFI magic"));
    }
    let version = be32(b, 4);
    if version != 2 && version != 3 {
        return Err(Qcow2Error::Unsupported(format!("version {version}")));
    }
    if be64(b, 8) != 0 {
        return Err(Qcow2Error::Unsupported(
            "with a backing file (flatten it first: qemu-img convert -O qcow2)".into(),
        ));
    }
    let cluster_bits = be32(b, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(bad("cluster size out of range"));
    }
    if be32(b, 32) != 0 {
        return Err(Qcow2Error::Unsupported("encryption".into()));
    }
    let size = be64(b, 24);
    let l1_size = u64::from(be32(b, 36));
    let l1_offset = be64(b, 40);
    if l1_size > MAX_L1_ENTRIES {
        return Err(bad("L1 table too large"));
    }
    let cluster = 1u64 << cluster_bits;
    // Each L1 entry covers cluster/8 clusters.
    let covered = l1_size
        .checked_mul(cluster / 8)
        .and_then(|c| c.checked_mul(cluster))
        .ok_or_else(|| bad("L1 table size overflows"))?;
    if covered < size {
        return Err(bad("L1 table too small for the disk size"));
    }
    if !l1_offset.is_multiple_of(cluster) {
        return Err(bad("L1 table not cluster-aligned"));
    }
    if version == 3 {
        if b.len() < 104 {
            return Err(bad("version 3 header too short"));
        }
        let incompatible = be64(b, 72);
        let header_length = be32(b, 100) as usize;
        for (bit, name) in [
            (1, "marked corrupt"),
            (2, "with an external data file"),
            (4, "with extended L2 entries"),
        ] {
            if incompatible & (1 << bit) != 0 {
                return Err(Qcow2Error::Unsupported(name.to_string()));
            }
        }
        if incompatible & !0b11111 != 0 {
            return Err(Qcow2Error::Unsupported(format!(
                "incompatible features {incompatible:#x}"
            )));
        }
        if incompatible & (1 << 3) != 0 && header_length > 104 && b.len() > 104 && b[104] != 0 {
            return Err(Qcow2Error::Unsupported(
                "zstd-compressed clusters (convert with -o compression_type=zlib)".into(),
            ));
        }
    }
    Ok(Header {
        version,
        cluster_bits,
        size,
        l1_size,
        l1_offset,
    })
}

/// Host offsets are bits 9–55 of table entries.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// The L2 table an L1 entry points to, if any.
pub fn l1_entry(raw: u64, header: &Header) -> Result<Option<u64>, Qcow2Error> {
    let offset = raw & OFFSET_MASK;
    if offset == 0 {
        return Ok(None);
    }
    if !offset.is_multiple_of(header.cluster_size()) {
        return Err(Qcow2Error::Entry {
            entry: raw,
            why: "L2 table not cluster-aligned",
        });
    }
    Ok(Some(offset))
}

/// Where a guest cluster's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    /// Reads as zeros (never written, or marked zero).
    Zero,
    /// A whole cluster at this host offset.
    Data {
        /// Host offset.
        offset: u64,
    },
    /// Deflate-compressed bytes, at most `len` of them, at `offset`.
    Compressed {
        /// Host offset.
        offset: u64,
        /// Upper bound of the compressed length.
        len: u64,
    },
}

/// What an L2 entry says.
pub fn l2_entry(raw: u64, header: &Header) -> Result<Cluster, Qcow2Error> {
    if raw & (1 << 62) != 0 {
        let x = 62 - (header.cluster_bits - 8);
        let offset = raw & ((1u64 << x) - 1);
        let sectors = (raw >> x) & ((1u64 << (62 - x)) - 1);
        let len = (sectors + 1) * 512 - (offset & 511);
        if offset == 0 {
            return Err(Qcow2Error::Entry {
                entry: raw,
                why: "compressed cluster at offset 0",
            });
        }
        return Ok(Cluster::Compressed { offset, len });
    }
    let offset = raw & OFFSET_MASK;
    if raw & 1 != 0 || offset == 0 {
        return Ok(Cluster::Zero);
    }
    if !offset.is_multiple_of(header.cluster_size()) {
        return Err(Qcow2Error::Entry {
            entry: raw,
            why: "data cluster not aligned",
        });
    }
    Ok(Cluster::Data { offset })
}

/// Big-endian table entries from bytes.
pub fn entries(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks_exact(8).map(|c| be64(c, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(version: u32, cluster_bits: u32, size: u64, l1_size: u32) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_BYTES];
        b[..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&version.to_be_bytes());
        b[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        b[24..32].copy_from_slice(&size.to_be_bytes());
        b[36..40].copy_from_slice(&l1_size.to_be_bytes());
        b[40..48].copy_from_slice(&(3u64 << cluster_bits).to_be_bytes());
        b[100..104].copy_from_slice(&104u32.to_be_bytes());
        b
    }

    #[test]
    fn headers_and_their_refusals() {
        let h = parse_header(&header_bytes(3, 16, 1 << 30, 2)).unwrap();
        assert_eq!(
            (h.cluster_size(), h.l2_entries(), h.l1_offset),
            (65536, 8192, 3 << 16)
        );
        assert!(parse_header(&header_bytes(2, 16, 1 << 30, 2)).is_ok());
        let e = parse_header(&header_bytes(3, 16, 1 << 40, 2)).unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
        let e = parse_header(&header_bytes(4, 16, 1 << 30, 2)).unwrap_err();
        assert_eq!(e.to_string(), "qcow2 version 4 is not supported");
        let mut backing = header_bytes(3, 16, 1 << 30, 2);
        backing[15] = 0x80;
        assert!(
            parse_header(&backing)
                .unwrap_err()
                .to_string()
                .contains("backing file")
        );
        let mut zstd = header_bytes(3, 16, 1 << 30, 2);
        zstd[79] = 1 << 3;
        zstd[100..104].copy_from_slice(&112u32.to_be_bytes());
        zstd[104] = 1;
        assert!(
            parse_header(&zstd)
                .unwrap_err()
                .to_string()
                .contains("zstd")
        );
        assert!(parse_header(b"QFI\xfb").is_err());
        assert!(parse_header(&header_bytes(3, 40, 1, 1)).is_err());
    }

    #[test]
    fn table_entries() {
        let h = parse_header(&header_bytes(3, 16, 1 << 30, 2)).unwrap();
        assert_eq!(l1_entry(0, &h).unwrap(), None);
        assert_eq!(l1_entry((5 << 16) | (1 << 63), &h).unwrap(), Some(5 << 16));
        assert!(l1_entry(5 << 12, &h).is_err());
        assert_eq!(l2_entry(0, &h).unwrap(), Cluster::Zero);
        assert_eq!(l2_entry((7 << 16) | 1, &h).unwrap(), Cluster::Zero);
        assert_eq!(
            l2_entry((7 << 16) | (1 << 63), &h).unwrap(),
            Cluster::Data { offset: 7 << 16 }
        );
        // Compressed, 64 KiB clusters: x = 54; two extra sectors at 0x10_0123.
        let raw = (1u64 << 62) | (2u64 << 54) | 0x10_0123;
        assert_eq!(
            l2_entry(raw, &h).unwrap(),
            Cluster::Compressed {
                offset: 0x10_0123,
                len: 3 * 512 - 0x123
            }
        );
    }
}
