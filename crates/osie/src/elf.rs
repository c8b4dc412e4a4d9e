//! Just enough ELF (64-bit little-endian) to package a program: its
//! dynamic loader (`PT_INTERP`), the shared libraries it names
//! (`DT_NEEDED`, searched along `DT_RUNPATH`/`DT_RPATH` and the system
//! directories), and a kernel module's `.modinfo` strings (`vermagic`,
//! `firmware`). This is what `ldd` and `modinfo` print, without running
//! either on the build machine. The parsing is the `object` crate's.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSection};

/// Why a file could not be read as ELF.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// No ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// An ELF we do not handle (32-bit).
    #[error("unsupported ELF: {0}")]
    Unsupported(&'static str),
    /// A table or string points past the end of the file.
    #[error("malformed ELF: {0}")]
    Malformed(&'static str),
    /// What the ELF reader found wrong.
    #[error("malformed ELF: {0}")]
    Read(#[from] object::read::Error),
}

/// What a program needs from the system to start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dynamic {
    /// `e_machine` (62 = x86-64, 183 = aarch64).
    pub machine: u16,
    /// The dynamic loader's path; `None` for a static program.
    pub interp: Option<String>,
    /// `DT_NEEDED` library names, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` (or, without it, `DT_RPATH`) directories.
    pub runpath: Vec<String>,
}

/// Parses `bytes` as a 64-bit ELF file of either byte order.
fn parse(bytes: &[u8]) -> Result<ElfFile64<'_, Endianness>, ElfError> {
    match object::FileKind::parse(bytes) {
        Ok(object::FileKind::Elf64) => Ok(ElfFile64::parse(bytes)?),
        Ok(object::FileKind::Elf32) => Err(ElfError::Unsupported("32-bit (only ELF64 is handled)")),
        _ if bytes.starts_with(b"\x7fELF") => Err(ElfError::Malformed("ELF header")),
        _ => Err(ElfError::NotElf),
    }
}

/// A NUL-free byte string as text.
fn text(bytes: &[u8], what: &'static str) -> Result<String, ElfError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ElfError::Malformed(what))
}

/// Reads a program's loader, libraries and search path.
pub fn dynamic(bytes: &[u8]) -> Result<Dynamic, ElfError> {
    let file = parse(bytes)?;
    let endian = file.endian();
    let mut out = Dynamic {
        machine: file.elf_header().e_machine(endian).0,
        ..Dynamic::default()
    };
    for segment in file.elf_program_headers() {
        if let Some(interp) = segment.interpreter(endian, bytes)? {
            out.interp = Some(text(interp, "PT_INTERP")?);
        }
    }
    // DT_NEEDED and the run path, read through the section table's dynamic
    // section and its linked string table (what `ldd` and the loader see).
    let sections = file.elf_section_table();
    let Some((entries, strings_index)) = sections.dynamic(endian, bytes)? else {
        return Ok(out);
    };
    let strings = sections.strings(endian, bytes, strings_index)?;
    let (mut runpath, mut rpath) = (None, None);
    for entry in entries {
        let tag = entry.tag(endian);
        if tag == elf::DT_NULL {
            break;
        }
        let value = || -> Result<String, ElfError> {
            text(entry.string(endian, strings)?, "dynamic string")
        };
        match tag {
            elf::DT_NEEDED => out.needed.push(value()?),
            elf::DT_RUNPATH => runpath = Some(value()?),
            elf::DT_RPATH => rpath = Some(value()?),
            _ => {}
        }
    }
    if let Some(p) = runpath.or(rpath) {
        out.runpath = p
            .split(':')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    Ok(out)
}

/// A kernel module's `.modinfo` strings (`key=value`), in order.
pub fn modinfo(bytes: &[u8]) -> Result<Vec<(String, String)>, ElfError> {
    let file = parse(bytes)?;
    let Some(section) = file.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let data = section.data()?;
    Ok(data
        .split(|&c| c == 0)
        .filter_map(|s| {
            let s = std::str::from_utf8(s).ok()?;
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

/// A file a program needs at run time, and where it goes in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// Path in the image (absolute): where the loader looks for it.
    pub image_path: String,
    /// The file on this machine.
    pub host_path: PathBuf,
}

/// Why a program's libraries cannot be collected.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not ELF we understand.
    #[error("{path}: {source}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ElfError,
    },
    /// A library is nowhere on the search path.
    #[error("{program} needs {library}, which is in none of {searched}")]
    NotFound {
        /// Who needs it.
        program: PathBuf,
        /// Its `DT_NEEDED` name.
        library: String,
        /// The directories tried.
        searched: String,
    },
}

/// The library directories a Debian system's loader searches, for the
/// machine type `machine` (`e_machine`).
pub fn system_library_dirs(machine: u16) -> Vec<PathBuf> {
    let triplet = match machine {
        62 => Some("x86_64-linux-gnu"),
        183 => Some("aarch64-linux-gnu"),
        _ => None,
    };
    let mut dirs = Vec::new();
    if let Some(t) = triplet {
        dirs.push(PathBuf::from(format!("/lib/{t}")));
        dirs.push(PathBuf::from(format!("/usr/lib/{t}")));
    }
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// Everything `program` loads at start: its dynamic loader (at the exact
/// `PT_INTERP` path) and every `DT_NEEDED` library, transitively, found
/// along each object's run path and then `search`. Empty for a static
/// program.
pub fn needed_files(program: &Path, search: &[PathBuf]) -> Result<Vec<Needed>, LibraryError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| LibraryError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let parse = |p: &Path, bytes: &[u8]| {
        dynamic(bytes).map_err(|source| LibraryError::Elf {
            path: p.to_path_buf(),
            source,
        })
    };
    let top = parse(program, &read(program)?)?;
    let mut out = Vec::new();
    if let Some(interp) = &top.interp {
        out.push(Needed {
            image_path: interp.clone(),
            host_path: PathBuf::from(interp),
        });
    }
    // name → found; breadth-first, as the loader orders its search.
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut queue: VecDeque<(PathBuf, Dynamic)> = VecDeque::from([(program.to_path_buf(), top)]);
    while let Some((who, info)) = queue.pop_front() {
        let origin = who.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut dirs: Vec<PathBuf> = info
            .runpath
            .iter()
            .map(|d| PathBuf::from(d.replace("$ORIGIN", &origin.to_string_lossy())))
            .collect();
        dirs.extend(search.iter().cloned());
        for name in &info.needed {
            if found.contains_key(name) {
                continue;
            }
            let candidate = if name.contains('/') {
                Some(PathBuf::from(name))
            } else {
                dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
            };
            let Some(path) = candidate else {
                return Err(LibraryError::NotFound {
                    program: who.clone(),
                    library: name.clone(),
                    searched: dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            found.insert(name.clone(), path.clone());
            let lib = parse(&path, &read(&path)?)?;
            out.push(Needed {
                image_path: path.to_string_lossy().into_owned(),
                host_path: path.clone(),
            });
            queue.push_back((path, lib));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(matches!(dynamic(b"hello"), Err(ElfError::NotElf)));
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 1;
        assert!(matches!(dynamic(&header), Err(ElfError::Unsupported(_))));
        header[4] = 2;
        header[5] = 1;
        // Program headers claimed far past the end.
        header[0x20] = 0xff;
        header[0x36] = 56;
        header[0x38] = 3;
        assert!(matches!(
            dynamic(&header),
            Err(ElfError::Malformed(_) | ElfError::Read(_))
        ));
        // Every truncation of a real program fails cleanly or parses.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        for cut in [64, 100, 500, 4096, me.len() / 2] {
            let _ = dynamic(&me[..cut]);
            let _ = modinfo(&me[..cut]);
        }
    }

    #[test]
    fn this_test_program_is_dynamic() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let d = dynamic(&me).unwrap();
        assert!(
            d.interp.as_deref().is_some_and(|i| i.contains("ld-")),
            "{d:?}"
        );
        assert!(d.needed.iter().any(|n| n.starts_with("libc.so")), "{d:?}");
        assert!(modinfo(&me).unwrap().is_empty());
    }

    /// binutils' `readelf -d` (a reader we did not write) lists the same
    /// libraries and interpreter for system programs.
    #[test]
    fn agrees_with_readelf_on_system_programs() {
        for program in ["/bin/ls", "/usr/bin/ssh", "/bin/busybox"] {
            let Ok(bytes) = std::fs::read(program) else {
                continue;
            };
            let Ok(out) = std::process::Command::new("readelf")
                .args(["-d", "-l", "-W", program])
                .output()
            else {
                eprintln!("readelf (binutils) not installed; skipping");
                return;
            };
            let listing = String::from_utf8_lossy(&out.stdout);
            let needed: Vec<String> = listing
                .lines()
                .filter(|l| l.contains("(NEEDED)"))
                .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_string()))
                .collect();
            let interp = listing
                .lines()
                .find_map(|l| l.split_once("[Requesting program interpreter: "))
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(path, _)| path.to_string());
            let ours = dynamic(&bytes).unwrap();
            assert_eq!(ours.needed, needed, "{program}");
            assert_eq!(ours.interp, interp, "{program}");
        }
    }
}
