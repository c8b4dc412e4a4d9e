//! A cpio "newc" archive writer: the format the Linux kernel unpacks as an
//! initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Every entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex
//! fields), the NUL-terminated name padded to a multiple of four bytes, and
//! the data padded likewise; a `TRAILER!!!` entry ends the archive. Names are
//! relative (`bin/busybox`); the kernel does not create missing parent
//! directories, so a writer must emit each directory before what it holds
//! ([`crate::tree::Tree`] does).

use std::io::{self, Write};

/// `S_IFMT` file-type bits of a cpio mode.
pub const S_IFDIR: u32 = 0o040_000;
/// Regular file.
pub const S_IFREG: u32 = 0o100_000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120_000;
/// Character device.
pub const S_IFCHR: u32 = 0o020_000;
/// Block device.
pub const S_IFBLK: u32 = 0o060_000;

/// Why an entry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// Writing to the output failed.
    #[error("writing the archive: {0}")]
    Io(#[from] io::Error),
    /// The entry's name cannot be stored.
    #[error("archive entry {path:?}: {reason}")]
    BadPath {
        /// The name as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// newc stores sizes in 32 bits.
    #[error("archive entry {path:?} is {size} bytes; cpio newc holds at most 4 GiB - 1 per file")]
    TooLarge {
        /// The name.
        path: String,
        /// Its size.
        size: u64,
    },
}

/// Writes a newc archive entry by entry. Inode numbers are assigned in
/// order; owner is root, every entry has the same modification time, so the
/// same inputs give the same bytes.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    mtime: u32,
    written: u64,
}

/// The fields of one header that vary between entries.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
}

impl<W: Write> CpioWriter<W> {
    /// A writer whose entries carry modification time `mtime` (seconds
    /// since the epoch).
    pub fn new(out: W, mtime: u32) -> CpioWriter<W> {
        CpioWriter {
            out,
            next_ino: 1,
            mtime,
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// A directory with permission bits `mode` (e.g. `0o755`).
    pub fn directory(&mut self, path: &str, mode: u32) -> Result<(), CpioError> {
        let name = clean(path)?;
        self.entry(
            Header {
                name: &name,
                mode: S_IFDIR | (mode & 0o7777),
                nlink: 2,
                size: 0,
                rdev: (0, 0),
            },
            &[],
        )
    }

    /// A regular file with permission bits `mode` and contents `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), CpioError> {
        let name = clean(path)?;
        let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge {
            path: path.to_string(),
            size: data.len() as u64,
        })?;
        self.entry(
            Header {
                name: &name,
                mode: S_IFREG | (mode & 0o7777),
                nlink: 1,
                size,
                rdev: (0, 0),
            },
            data,
        )
    }

    /// A symbolic link at `path` pointing to `target` (stored as the data,
    /// without a terminating NUL, as GNU cpio and the kernel expect).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        let name = clean(path)?;
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::BadPath {
                path: path.to_string(),
                reason: "a symlink target must be non-empty and free of NUL bytes",
            });
        }
        self.entry(
            Header {
                name: &name,
                mode: S_IFLNK | 0o777,
                nlink: 1,
                size: target.len() as u32,
                rdev: (0, 0),
            },
            target.as_bytes(),
        )
    }

    /// A character (`block == false`) or block device node.
    pub fn device(
        &mut self,
        path: &str,
        block: bool,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let name = clean(path)?;
        let kind = if block { S_IFBLK } else { S_IFCHR };
        self.entry(
            Header {
                name: &name,
                mode: kind | (mode & 0o7777),
                nlink: 1,
                size: 0,
                rdev: (major, minor),
            },
            &[],
        )
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> Result<W, CpioError> {
        let header = Header {
            name: "TRAILER!!!",
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        };
        self.write_header(&header, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, header: Header<'_>, data: &[u8]) -> Result<(), CpioError> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.write_header(&header, ino)?;
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()?;
        Ok(())
    }

    fn write_header(&mut self, h: &Header<'_>, ino: u32) -> Result<(), CpioError> {
        let namesize = h.name.len() + 1;
        let header = format!(
            "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
             {devmajor:08x}{devminor:08x}{rmajor:08x}{rminor:08x}{namesize:08x}{check:08x}",
            mode = h.mode,
            uid = 0,
            gid = 0,
            nlink = h.nlink,
            mtime = if h.name == "TRAILER!!!" {
                0
            } else {
                self.mtime
            },
            size = h.size,
            devmajor = 0,
            devminor = 0,
            rmajor = h.rdev.0,
            rminor = h.rdev.1,
            check = 0,
        );
        debug_assert_eq!(header.len(), 110);
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(h.name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += (110 + namesize) as u64;
        self.pad()?;
        Ok(())
    }

    /// Pads the output to a multiple of four bytes.
    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..n])?;
        self.written += n as u64;
        Ok(())
    }
}

/// An archive name: relative, no empty, `.` or `..` components, no NUL.
pub fn clean(path: &str) -> Result<String, CpioError> {
    let bad = |reason| CpioError::BadPath {
        path: path.to_string(),
        reason,
    };
    if path.contains('\0') {
        return Err(bad("NUL byte in name"));
    }
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("empty name"));
    }
    for part in trimmed.split('/') {
        match part {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("`.` or `..` component")),
            _ => {}
        }
    }
    if trimmed == "TRAILER!!!" {
        return Err(bad("reserved name"));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back one header: (name, mode, nlink, size, rdev, data, next offset).
    fn parse(buf: &[u8], at: usize) -> (String, u32, u32, Vec<u8>, (u32, u32), usize) {
        let h = std::str::from_utf8(&buf[at..at + 110]).unwrap();
        assert_eq!(&h[..6], "070701");
        let field = |i: usize| u32::from_str_radix(&h[6 + 8 * i..14 + 8 * i], 16).unwrap();
        let (mode, nlink, size, rmaj, rmin, namesize) =
            (field(1), field(4), field(6), field(9), field(10), field(11));
        let name_start = at + 110;
        let name = std::str::from_utf8(&buf[name_start..name_start + namesize as usize - 1])
            .unwrap()
            .to_string();
        assert_eq!(
            buf[name_start + namesize as usize - 1],
            0,
            "name is NUL-terminated"
        );
        let data_start = (name_start + namesize as usize).next_multiple_of(4);
        let data = buf[data_start..data_start + size as usize].to_vec();
        let next = (data_start + size as usize).next_multiple_of(4);
        (name, mode, nlink, data, (rmaj, rmin), next)
    }

    #[test]
    fn entries_round_trip_with_alignment() {
        let mut w = CpioWriter::new(Vec::new(), 1_700_000_000);
        w.directory("/bin/", 0o755).unwrap();
        w.file("bin/a", 0o644, b"hello").unwrap();
        w.file("bin/empty", 0o600, b"").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.device("dev/console", false, 0o600, 5, 1).unwrap();
        let written = w.written();
        let buf = w.finish().unwrap();
        assert!(written < buf.len() as u64, "trailer follows");
        assert_eq!(buf.len() % 4, 0);

        let mut at = 0;
        let mut seen = Vec::new();
        while at < buf.len() {
            let (name, mode, nlink, data, rdev, next) = parse(&buf, at);
            assert_eq!(at % 4, 0, "{name} starts aligned");
            seen.push((name.clone(), mode, nlink, data, rdev));
            at = next;
            if name == "TRAILER!!!" {
                break;
            }
        }
        assert_eq!(at, buf.len(), "nothing after the trailer");
        assert_eq!(
            seen,
            vec![
                ("bin".into(), 0o040755, 2, vec![], (0, 0)),
                ("bin/a".into(), 0o100644, 1, b"hello".to_vec(), (0, 0)),
                ("bin/empty".into(), 0o100600, 1, vec![], (0, 0)),
                ("bin/sh".into(), 0o120777, 1, b"busybox".to_vec(), (0, 0)),
                ("dev/console".into(), 0o020600, 1, vec![], (5, 1)),
                ("TRAILER!!!".into(), 0, 1, vec![], (0, 0)),
            ]
        );
    }

    #[test]
    fn headers_have_distinct_inodes_and_the_given_time() {
        let mut w = CpioWriter::new(Vec::new(), 0x1234_5678);
        w.file("a", 0o644, b"1").unwrap();
        w.file("b", 0o644, b"2").unwrap();
        let buf = w.finish().unwrap();
        let text = String::from_utf8_lossy(&buf);
        let headers: Vec<&str> = text
            .match_indices("070701")
            .map(|(i, _)| &text[i..i + 110])
            .collect();
        assert_eq!(&headers[0][6..14], "00000001");
        assert_eq!(&headers[1][6..14], "00000002");
        assert_eq!(&headers[0][46..54], "12345678");
        assert_eq!(&headers[2][46..54], "00000000", "trailer carries no time");
    }

    #[test]
    fn every_name_length_pads_correctly() {
        // Names of every length mod 4 and data of every length mod 4.
        for n in 1..=8 {
            for d in 0..=4 {
                let name = "x".repeat(n);
                let data = vec![7u8; d];
                let mut w = CpioWriter::new(Vec::new(), 0);
                w.file(&name, 0o644, &data).unwrap();
                let buf = w.finish().unwrap();
                let (got_name, _, _, got_data, _, next) = parse(&buf, 0);
                assert_eq!((got_name, got_data), (name, data));
                let (trailer, ..) = parse(&buf, next);
                assert_eq!(trailer, "TRAILER!!!");
            }
        }
    }

    #[test]
    fn bad_names_are_refused() {
        let mut w = CpioWriter::new(Vec::new(), 0);
        for bad in ["", "/", "a//b", "a/../b", "./a", "a\0b", "TRAILER!!!"] {
            assert!(
                matches!(w.file(bad, 0o644, b""), Err(CpioError::BadPath { .. })),
                "{bad:?}"
            );
        }
        assert!(w.symlink("a", "").is_err());
        assert_eq!(clean("/usr/bin/").unwrap(), "usr/bin");
    }
}
