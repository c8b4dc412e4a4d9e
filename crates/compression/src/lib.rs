//! Compressed streams, one place for the whole project: which codec a file
//! uses (from its name or its first bytes) and streaming decoders for each,
//! all pure Rust. The worker decodes disk images and archives with it; the
//! in-memory OS builder decodes kernel modules.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

/// How the bytes of an image are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Not compressed: written as they come.
    Raw,
    /// gzip (RFC 1952), including concatenated members.
    Gzip,
    /// xz, including concatenated streams.
    Xz,
    /// Zstandard, including concatenated and skippable frames.
    Zstd,
    /// bzip2: recognised so the error can say so, but not decoded.
    Bzip2,
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Raw => "raw",
            Codec::Gzip => "gzip",
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
            Codec::Bzip2 => "bzip2",
        })
    }
}

/// Bytes of a stream's start that [`codec_from_magic`] needs (fewer at EOF).
pub const HEAD_BYTES: usize = 8;

/// The format named by the extension of a URL path's last segment
/// (`/img/ubuntu.raw.gz` → gzip); `None` for no known extension.
pub fn codec_from_extension(url_path: &str) -> Option<Codec> {
    let file = url_path.rsplit('/').next().unwrap_or(url_path);
    let extension = file.rsplit_once('.')?.1.to_ascii_lowercase();
    match extension.as_str() {
        "gz" | "gzip" | "tgz" => Some(Codec::Gzip),
        "xz" | "txz" => Some(Codec::Xz),
        "zst" | "zs" | "zstd" | "tzst" => Some(Codec::Zstd),
        "bz2" | "bzip2" | "tbz2" => Some(Codec::Bzip2),
        _ => None,
    }
}

/// The format whose magic number `head` starts with; `None` for anything
/// else (a raw disk image starts with boot code or zeros).
pub fn codec_from_magic(head: &[u8]) -> Option<Codec> {
    const XZ: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0x00];
    const ZSTD: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];
    if head.starts_with(&[0x1F, 0x8B]) {
        Some(Codec::Gzip)
    } else if head.starts_with(XZ) {
        Some(Codec::Xz)
    } else if head.starts_with(ZSTD) || is_zstd_skippable(head) {
        Some(Codec::Zstd)
    } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
        Some(Codec::Bzip2)
    } else {
        None
    }
}

/// Skippable zstd frames start with 0x184D2A50..=0x184D2A5F (little endian).
fn is_zstd_skippable(head: &[u8]) -> bool {
    head.len() >= 4 && head[0] & 0xF0 == 0x50 && head[1..4] == [0x2A, 0x4D, 0x18]
}

/// Largest xz dictionary we allocate (xz -9 uses 64 MiB); bigger ones fail
/// rather than take the in-memory OS's RAM.
const XZ_MAX_DICT: usize = 256 << 20;

/// Decodes `input` as `format` and hands the output to `sink`, which
/// receives successive slices until the stream ends.
pub fn decode<R: Read + Send + 'static>(
    format: Codec,
    mut input: R,
    sink: &mut dyn FnMut(&mut dyn Read) -> io::Result<()>,
) -> io::Result<()> {
    match format {
        Codec::Raw => sink(&mut input),
        Codec::Gzip => {
            let mut decoder =
                flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(256 << 10, input));
            sink(&mut decoder)
        }
        Codec::Xz => sink(&mut XzRead::new(input)),
        Codec::Zstd => {
            use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
            let mut input = BufReader::with_capacity(256 << 10, input);
            // One frame after another (`cat a.zst b.zst`, pzstd), skipping
            // skippable frames, until the input ends.
            while !input.fill_buf()?.is_empty() {
                match ruzstd::decoding::StreamingDecoder::new(&mut input) {
                    Ok(mut frame) => {
                        sink(&mut frame)?;
                        // The streaming decoder reads a frame's content
                        // checksum but leaves comparing it to us.
                        let decoder = frame.into_frame_decoder();
                        if let (Some(stored), Some(computed)) = (
                            decoder.get_checksum_from_data(),
                            decoder.get_calculated_checksum(),
                        ) && stored != computed
                        {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "zstd frame checksum mismatch: stored {stored:08x}, computed {computed:08x}"
                                ),
                            ));
                        }
                    }
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => skip(&mut input, u64::from(length))?,
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
            Ok(())
        }
        Codec::Bzip2 => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "bzip2 is recognised but not decoded; recompress with gzip, xz or zstd",
        )),
    }
}

/// xz decoding as a [`Read`], over any number of concatenated streams
/// (with the zero padding xz allows between them). xz4rust's own reader
/// stops at the first stream's end without consuming its last bytes, so it
/// cannot go on to a second one.
struct XzRead<R> {
    decoder: Box<xz4rust::XzDecoder<'static>>,
    input: R,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// The current stream has ended; another may follow.
    stream_ended: bool,
}

impl<R: Read> XzRead<R> {
    fn new(input: R) -> XzRead<R> {
        XzRead {
            decoder: xz4rust::XzDecoder::in_heap_with_alloc_dict_size(1 << 20, XZ_MAX_DICT),
            input,
            buffer: vec![0; 256 << 10],
            start: 0,
            end: 0,
            stream_ended: false,
        }
    }

    /// Reads more input behind what is buffered; false at the input's end.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buffer.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "xz decoder makes no progress on a full input buffer",
            ));
        }
        loop {
            match self.input.read(&mut self.buffer[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn truncated() -> io::Error {
        io::Error::new(io::ErrorKind::UnexpectedEof, "xz stream is truncated")
    }
}

impl<R: Read> Read for XzRead<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        use xz4rust::{XzError, XzNextBlockResult};
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.stream_ended {
                // Skip stream padding; stop at the input's end, or start on
                // the next stream.
                loop {
                    while self.start < self.end && self.buffer[self.start] == 0 {
                        self.start += 1;
                    }
                    if self.start < self.end {
                        break;
                    }
                    if !self.fill()? {
                        return Ok(0);
                    }
                }
                self.decoder.reset();
                self.stream_ended = false;
            }
            if self.start == self.end && !self.fill()? {
                return Err(Self::truncated());
            }
            match self.decoder.decode(&self.buffer[self.start..self.end], out) {
                Ok(XzNextBlockResult::NeedMoreData(used, produced)) => {
                    self.start += used;
                    if produced > 0 {
                        return Ok(produced);
                    }
                    if used == 0 && !self.fill()? {
                        return Err(Self::truncated());
                    }
                }
                Ok(XzNextBlockResult::EndOfStream(used, produced)) => {
                    self.start += used;
                    self.stream_ended = true;
                    if produced > 0 {
                        return Ok(produced);
                    }
                }
                Err(XzError::NeedsLargerInputBuffer) => {
                    if !self.fill()? {
                        return Err(Self::truncated());
                    }
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
    }
}

/// Decodes a whole in-memory buffer (kernel modules and other small
/// files).
pub fn decode_all(format: Codec, data: Vec<u8>) -> io::Result<Vec<u8>> {
    if format == Codec::Raw {
        return Ok(data);
    }
    let mut out = Vec::new();
    decode(format, io::Cursor::new(data), &mut |from| {
        from.read_to_end(&mut out).map(drop)
    })?;
    Ok(out)
}

/// Skips the body of a skippable zstd frame.
fn skip<R: Read>(input: &mut BufReader<R>, length: u64) -> io::Result<()> {
    let skipped = io::copy(&mut input.by_ref().take(length), &mut io::sink())?;
    if skipped < length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "zstd skippable frame is truncated",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions() {
        assert_eq!(
            codec_from_extension("/images/ubuntu.raw.gz"),
            Some(Codec::Gzip)
        );
        assert_eq!(codec_from_extension("/ubuntu.tar.GZ"), Some(Codec::Gzip));
        assert_eq!(codec_from_extension("/a/b.img.xz"), Some(Codec::Xz));
        assert_eq!(codec_from_extension("/a/b.img.zst"), Some(Codec::Zstd));
        assert_eq!(codec_from_extension("/a/b.img.zs"), Some(Codec::Zstd));
        assert_eq!(codec_from_extension("/a/b.img.bz2"), Some(Codec::Bzip2));
        assert_eq!(codec_from_extension("/a/b.raw"), None);
        assert_eq!(codec_from_extension("/a.gz/b"), None);
        assert_eq!(codec_from_extension("/"), None);
        assert_eq!(codec_from_extension(""), None);
    }

    #[test]
    fn decode_all_round_trips_gzip_and_passes_raw_through() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"module bytes").unwrap();
        let packed = gz.finish().unwrap();
        assert_eq!(decode_all(Codec::Gzip, packed).unwrap(), b"module bytes");
        assert_eq!(decode_all(Codec::Raw, b"as is".to_vec()).unwrap(), b"as is");
        assert!(decode_all(Codec::Xz, b"not xz".to_vec()).is_err());
    }

    #[test]
    fn magic_bytes() {
        assert_eq!(codec_from_magic(&[0x1F, 0x8B, 8, 0]), Some(Codec::Gzip));
        assert_eq!(
            codec_from_magic(&[0xFD, b'7', b'z', b'X', b'Z', 0, 0, 4]),
            Some(Codec::Xz)
        );
        assert_eq!(
            codec_from_magic(&[0x28, 0xB5, 0x2F, 0xFD, 0x24]),
            Some(Codec::Zstd)
        );
        assert_eq!(
            codec_from_magic(&[0x5E, 0x2A, 0x4D, 0x18, 0, 0]),
            Some(Codec::Zstd)
        );
        assert_eq!(codec_from_magic(b"BZh91AY&SY"), Some(Codec::Bzip2));
        // An MBR's boot code, zeros, short input: raw.
        assert_eq!(codec_from_magic(&[0xEB, 0x63, 0x90, 0x10]), None);
        assert_eq!(codec_from_magic(&[0; 8]), None);
        assert_eq!(codec_from_magic(&[0x1F]), None);
        assert_eq!(codec_from_magic(b"BZh"), None);
        assert_eq!(codec_from_magic(&[]), None);
    }
}
