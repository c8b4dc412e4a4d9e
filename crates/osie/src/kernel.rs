//! Which kernel: the newest `/boot/vmlinuz-*`, and its release string read
//! from the image itself (the x86 boot header's `kernel_version`), so the
//! modules copied are the ones built for it.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// Why the kernel cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// No kernel in the directory.
    #[error(
        "no kernel (vmlinuz-*) in {0}; install Debian's kernel (apt-get install linux-image-amd64) or give --kernel"
    )]
    NoKernel(PathBuf),
    /// The file could not be read.
    #[error("kernel {path}: {source}")]
    Read {
        /// The kernel file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The release could not be found in the file or its name.
    #[error(
        "kernel {0}: cannot tell its release (not an x86 bzImage, and the name is not vmlinuz-RELEASE); give --modules /lib/modules/RELEASE"
    )]
    UnknownRelease(PathBuf),
}

/// The release (`uname -r`, e.g. `6.1.0-18-amd64`) recorded in an x86
/// bzImage's setup header, if the image has one.
pub fn bzimage_release(image: &[u8]) -> Option<String> {
    // Setup header: "HdrS" at 0x202, boot protocol version at 0x206,
    // kernel_version (offset from 0x200) at 0x20e (protocol 2.00+).
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let protocol = u16::from_le_bytes([*image.get(0x206)?, *image.get(0x207)?]);
    if protocol < 0x200 {
        return None;
    }
    let ptr = u16::from_le_bytes([*image.get(0x20e)?, *image.get(0x20f)?]);
    if ptr == 0 {
        return None;
    }
    let start = usize::from(ptr) + 0x200;
    let rest = image.get(start..)?;
    let end = rest.iter().take(256).position(|&c| c == 0)?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let release = text.split_whitespace().next()?;
    (!release.is_empty()).then(|| release.to_string())
}

/// The release from a kernel's file name (`vmlinuz-6.1.0-18-amd64`).
pub fn release_from_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let release = name
        .strip_prefix("vmlinuz-")
        .or_else(|| name.strip_prefix("vmlinux-"))?;
    (!release.is_empty()).then(|| release.to_string())
}

/// The kernel's release: from its header, else from its file name.
pub fn release(path: &Path, image: &[u8]) -> Result<String, KernelError> {
    bzimage_release(image)
        .or_else(|| release_from_name(path))
        .ok_or_else(|| KernelError::UnknownRelease(path.to_path_buf()))
}

/// Compares version strings the way `sort -V` orders kernel releases:
/// runs of digits by value, everything else byte by byte.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..na], &b[..nb]);
                let strip = |d: &'_ [u8]| {
                    let z = d.iter().take_while(|&&c| c == b'0').count();
                    d[z..].to_vec()
                };
                let (sa, sb) = (strip(da), strip(db));
                let ord = sa.len().cmp(&sb.len()).then_with(|| sa.cmp(&sb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// The newest `vmlinuz-*` in `boot` (by release, `sort -V` order).
pub fn newest_kernel(boot: &Path) -> Result<PathBuf, KernelError> {
    let entries = std::fs::read_dir(boot).map_err(|source| KernelError::Read {
        path: boot.to_path_buf(),
        source,
    })?;
    let mut kernels: Vec<(String, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let path = e.path();
            let release = release_from_name(&path)?;
            // Skip backups and signed copies' companions (.bak, .old, .sig).
            if release.ends_with(".bak") || release.ends_with(".old") || release.ends_with(".sig") {
                return None;
            }
            path.is_file().then_some((release, path))
        })
        .collect();
    kernels.sort_by(|a, b| version_cmp(&a.0, &b.0));
    kernels
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| KernelError::NoKernel(boot.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut img = vec![0u8; 0x1000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        let ptr: u16 = 0x300;
        img[0x20e..0x210].copy_from_slice(&ptr.to_le_bytes());
        let at = usize::from(ptr) + 0x200;
        img[at..at + version.len()].copy_from_slice(version.as_bytes());
        img
    }

    #[test]
    fn release_from_the_header() {
        let img = fake_bzimage("6.1.0-18-amd64 (debian-kernel@lists.debian.org) #1 SMP");
        assert_eq!(bzimage_release(&img).as_deref(), Some("6.1.0-18-amd64"));
        // The header wins over a misleading name.
        assert_eq!(
            release(Path::new("/tmp/vmlinuz-9.9"), &img).unwrap(),
            "6.1.0-18-amd64"
        );
        // No header: the name; neither: an error naming the file.
        assert_eq!(
            release(Path::new("/boot/vmlinuz-6.1.0-9-arm64"), b"MZ").unwrap(),
            "6.1.0-9-arm64"
        );
        let e = release(Path::new("/tmp/kernel"), b"").unwrap_err();
        assert!(e.to_string().contains("/tmp/kernel"), "{e}");
        // Truncated and unterminated headers are not trusted.
        let img = fake_bzimage("x");
        assert_eq!(bzimage_release(&img[..0x300]), None);
        let mut img = fake_bzimage("");
        img[0x500..].fill(b'a');
        assert_eq!(bzimage_release(&img), None);
    }

    #[test]
    fn the_real_kernel_if_there_is_one() {
        let Ok(path) = newest_kernel(Path::new("/boot")) else {
            return;
        };
        let Ok(img) = std::fs::read(&path) else {
            return; // not readable as this user
        };
        let from_header = bzimage_release(&img).expect("Debian's kernel is a bzImage");
        assert_eq!(Some(from_header), release_from_name(&path));
    }

    #[test]
    fn versions_sort_like_sort_v() {
        let mut v = vec![
            "6.1.0-9-amd64",
            "6.1.0-18-amd64",
            "5.10.0-28-amd64",
            "6.1.0-18-amd64.bak",
            "6.10.0-1-amd64",
            "6.1.0-010-amd64",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(
            v,
            [
                "5.10.0-28-amd64",
                "6.1.0-9-amd64",
                "6.1.0-010-amd64",
                "6.1.0-18-amd64",
                "6.1.0-18-amd64.bak",
                "6.10.0-1-amd64"
            ]
        );
    }

    #[test]
    fn newest_in_a_directory() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            newest_kernel(d.path()),
            Err(KernelError::NoKernel(_))
        ));
        for n in [
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-18-amd64",
            "vmlinuz-6.1.0-20-amd64.bak",
            "config-6.1.0-30-amd64",
        ] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        assert_eq!(
            newest_kernel(d.path()).unwrap(),
            d.path().join("vmlinuz-6.1.0-18-amd64")
        );
    }
}
