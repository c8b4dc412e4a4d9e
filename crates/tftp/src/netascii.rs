//! Netascii mode (RFC 764 line endings, as tftp-hpa's client expects): `LF`
//! goes out as `CR LF` and `CR` as `CR NUL`, so the client's reverse mapping
//! restores any file byte for byte.
//!
//! The converted stream is exposed as another [`FileContent`] so the transfer
//! logic stays the same. Its size is found by one pass over the file, which
//! also records a checkpoint every [`CHECKPOINT_SPACING`] input bytes; a read
//! at any offset then converts at most that much before reaching it.

use std::io;
use std::sync::Arc;

use crate::files::FileContent;

/// Input bytes between checkpoints: bounds both the work of a random-offset
/// read and the memory of the index (16 bytes per 64 KiB of file).
pub const CHECKPOINT_SPACING: usize = 64 * 1024;

/// A file seen through netascii conversion.
pub struct NetasciiFile {
    inner: Arc<dyn FileContent>,
    inner_size: u64,
    size: u64,
    /// (input offset, output offset) pairs, ascending, starting at (0, 0).
    checkpoints: Vec<(u64, u64)>,
}

fn converted_len(byte: u8) -> u64 {
    match byte {
        b'\n' | b'\r' => 2,
        _ => 1,
    }
}

impl NetasciiFile {
    /// Scans `inner` once (bounded buffer) to learn the converted size.
    pub fn new(inner: Arc<dyn FileContent>) -> io::Result<Self> {
        let inner_size = inner.size();
        let mut buffer = vec![0u8; CHECKPOINT_SPACING];
        let mut checkpoints = Vec::new();
        let (mut input, mut output) = (0u64, 0u64);
        while input < inner_size {
            checkpoints.push((input, output));
            let n = inner.read_at(input, &mut buffer)?;
            if n == 0 {
                break; // the file shrank; serve what there is
            }
            output += buffer[..n].iter().map(|&b| converted_len(b)).sum::<u64>();
            input += n as u64;
        }
        if checkpoints.is_empty() {
            checkpoints.push((0, 0));
        }
        Ok(Self {
            inner,
            inner_size: input,
            size: output,
            checkpoints,
        })
    }
}

impl FileContent for NetasciiFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let after = self.checkpoints.partition_point(|&(_, out)| out <= offset);
        let (mut input, mut output) = self.checkpoints[after.saturating_sub(1)];
        let mut chunk = vec![0u8; CHECKPOINT_SPACING.min(buf.len() + CHECKPOINT_SPACING / 4)];
        let mut written = 0;
        while written < buf.len() && input < self.inner_size {
            let want = chunk.len().min((self.inner_size - input) as usize);
            let n = self.inner.read_at(input, &mut chunk[..want])?;
            if n == 0 {
                break;
            }
            for &byte in &chunk[..n] {
                let expanded: &[u8] = match byte {
                    b'\n' => b"\r\n",
                    b'\r' => b"\r\0",
                    _ => std::slice::from_ref(&byte),
                };
                for &out in expanded {
                    if output >= offset && written < buf.len() {
                        buf[written] = out;
                        written += 1;
                    }
                    output += 1;
                }
                if written == buf.len() {
                    break;
                }
            }
            input += n as u64;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' => out.extend_from_slice(b"\r\n"),
                b'\r' => out.extend_from_slice(b"\r\0"),
                other => out.push(other),
            }
        }
        out
    }

    #[test]
    fn converts_line_endings_and_reads_at_any_offset() {
        let text: Vec<u8> = (0..200_000u32)
            .map(|i| match i % 37 {
                0 => b'\n',
                5 => b'\r',
                n => b'a' + (n % 26) as u8,
            })
            .collect();
        let want = reference(&text);
        let file = NetasciiFile::new(Arc::new(text)).unwrap();
        assert_eq!(file.size(), want.len() as u64);
        for offset in [
            0usize,
            1,
            36,
            37,
            38,
            65_535,
            65_536,
            70_001,
            want.len() - 3,
        ] {
            for len in [1usize, 2, 511, 1468, 100_000] {
                let mut buf = vec![0u8; len];
                let n = file.read_at(offset as u64, &mut buf).unwrap();
                let end = (offset + len).min(want.len());
                assert_eq!(&buf[..n], &want[offset..end], "offset {offset} len {len}");
            }
        }
        let mut buf = [0u8; 4];
        assert_eq!(file.read_at(want.len() as u64, &mut buf).unwrap(), 0);
    }

    #[test]
    fn empty_file_is_empty() {
        let file = NetasciiFile::new(Arc::new(Vec::new())).unwrap();
        assert_eq!(file.size(), 0);
        assert_eq!(file.read_at(0, &mut [0u8; 4]).unwrap(), 0);
    }
}
