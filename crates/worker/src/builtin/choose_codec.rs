//! image2disk's rule for which decoder to use: the `COMPRESSED` flag, the
//! URL's extension and the data's magic bytes, reconciled.

use bellows_compression::Codec;

/// Why no decoder could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// `COMPRESSED=true` but neither the URL nor the data says how.
    #[error(
        "COMPRESSED is true but IMG_URL has no known compression extension \
         (.gz, .xz, .zst, .zs) and the data starts with no gzip, xz or zstd magic bytes"
    )]
    Unknown,
    /// A format we recognise but do not decode.
    #[error(
        "{0} images are not supported by the built-in image2disk; recompress with gzip, xz or zstd"
    )]
    Unsupported(Codec),
}

/// The decoder to use, and a note for the log when the choice needs
/// explaining. The data's magic bytes win over everything: they are what
/// the decoder will actually see. Without magic, `COMPRESSED=true` falls
/// back to the URL's extension (the decoder then reports the corruption),
/// and `COMPRESSED=false` means raw.
pub fn choose(
    compressed: bool,
    by_extension: Option<Codec>,
    by_magic: Option<Codec>,
) -> Result<(Codec, Option<String>), CodecError> {
    let (format, note) = match (by_magic, by_extension) {
        (Some(magic), _) if !compressed => (
            magic,
            Some(format!(
                "the image starts with {magic} magic bytes although COMPRESSED is not true: decompressing it"
            )),
        ),
        (Some(magic), Some(extension)) if magic != extension => (
            magic,
            Some(format!(
                "IMG_URL's extension says {extension} but the data is {magic}: decompressing it as {magic}"
            )),
        ),
        (Some(magic), _) => (magic, None),
        (None, Some(extension)) if compressed => (extension, None),
        (None, None) if compressed => return Err(CodecError::Unknown),
        (None, _) => (Codec::Raw, None),
    };
    if format == Codec::Bzip2 {
        return Err(CodecError::Unsupported(format));
    }
    Ok((format, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_wins_and_is_explained() {
        assert_eq!(
            choose(true, Some(Codec::Gzip), Some(Codec::Gzip)),
            Ok((Codec::Gzip, None))
        );
        let (format, note) = choose(true, Some(Codec::Gzip), Some(Codec::Xz)).unwrap();
        assert_eq!(format, Codec::Xz);
        assert!(note.unwrap().contains("extension says gzip"));
        let (format, note) = choose(false, None, Some(Codec::Zstd)).unwrap();
        assert_eq!(format, Codec::Zstd);
        assert!(note.unwrap().contains("COMPRESSED is not true"));
    }

    #[test]
    fn without_magic() {
        assert_eq!(choose(false, None, None), Ok((Codec::Raw, None)));
        assert_eq!(
            choose(false, Some(Codec::Gzip), None),
            Ok((Codec::Raw, None))
        );
        assert_eq!(choose(true, Some(Codec::Xz), None), Ok((Codec::Xz, None)));
        assert_eq!(choose(true, None, None), Err(CodecError::Unknown));
        assert_eq!(
            choose(true, Some(Codec::Bzip2), None),
            Err(CodecError::Unsupported(Codec::Bzip2))
        );
        assert_eq!(
            choose(false, None, Some(Codec::Bzip2)),
            Err(CodecError::Unsupported(Codec::Bzip2))
        );
    }
}
