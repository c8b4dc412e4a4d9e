//! Just enough ELF (64-bit little-endian) to package a program: its
//! dynamic loader (`PT_INTERP`), the shared libraries it names
//! (`DT_NEEDED`, searched along `DT_RUNPATH`/`DT_RPATH` and the system
//! directories), and a kernel module's `.modinfo` strings (`vermagic`,
//! `firmware`). This is what `ldd` and `modinfo` print, without running
//! either on the build machine.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

/// Why a file could not be read as ELF.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// No ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// An ELF we do not handle (32-bit, big-endian).
    #[error("unsupported ELF: {0}")]
    Unsupported(&'static str),
    /// A table or string points past the end of the file.
    #[error("malformed ELF: {0}")]
    Malformed(&'static str),
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

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

struct Elf<'a> {
    b: &'a [u8],
}

impl<'a> Elf<'a> {
    fn new(b: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        if b.len() < 64 || &b[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        if b[4] != 2 {
            return Err(ElfError::Unsupported("32-bit (only ELF64 is handled)"));
        }
        if b[5] != 1 {
            return Err(ElfError::Unsupported("big-endian"));
        }
        Ok(Elf { b })
    }

    fn slice(&self, off: u64, len: u64, what: &'static str) -> Result<&'a [u8], ElfError> {
        let start = usize::try_from(off).map_err(|_| ElfError::Malformed(what))?;
        let len = usize::try_from(len).map_err(|_| ElfError::Malformed(what))?;
        let end = start.checked_add(len).ok_or(ElfError::Malformed(what))?;
        self.b.get(start..end).ok_or(ElfError::Malformed(what))
    }

    fn u16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.b[off], self.b[off + 1]])
    }

    fn u32_at(s: &[u8], off: usize) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&s[off..off + 4]);
        u32::from_le_bytes(a)
    }

    fn u64_at(s: &[u8], off: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&s[off..off + 8]);
        u64::from_le_bytes(a)
    }

    /// Program headers: (type, offset, vaddr, filesz).
    fn segments(&self) -> Result<Vec<(u32, u64, u64, u64)>, ElfError> {
        let phoff = Self::u64_at(self.b, 0x20);
        let phentsize = u64::from(self.u16(0x36));
        let phnum = u64::from(self.u16(0x38));
        if phnum > 0 && phentsize < 56 {
            return Err(ElfError::Malformed("program header entries too small"));
        }
        let table = self.slice(phoff, phentsize * phnum, "program headers")?;
        Ok((0..phnum as usize)
            .map(|i| {
                let e = &table[i * phentsize as usize..];
                (
                    Self::u32_at(e, 0),
                    Self::u64_at(e, 8),
                    Self::u64_at(e, 16),
                    Self::u64_at(e, 32),
                )
            })
            .collect())
    }

    /// Section headers: (name offset, offset, size).
    fn sections(&self) -> Result<Vec<(u32, u64, u64)>, ElfError> {
        let shoff = Self::u64_at(self.b, 0x28);
        let shentsize = u64::from(self.u16(0x3a));
        let shnum = u64::from(self.u16(0x3c));
        if shnum > 0 && shentsize < 64 {
            return Err(ElfError::Malformed("section header entries too small"));
        }
        let table = self.slice(shoff, shentsize * shnum, "section headers")?;
        Ok((0..shnum as usize)
            .map(|i| {
                let e = &table[i * shentsize as usize..];
                (Self::u32_at(e, 0), Self::u64_at(e, 24), Self::u64_at(e, 32))
            })
            .collect())
    }
}

/// A NUL-terminated string at the start of `s`.
fn cstr(s: &[u8], what: &'static str) -> Result<String, ElfError> {
    let end = s
        .iter()
        .position(|&c| c == 0)
        .ok_or(ElfError::Malformed(what))?;
    String::from_utf8(s[..end].to_vec()).map_err(|_| ElfError::Malformed(what))
}

/// Reads a program's loader, libraries and search path.
pub fn dynamic(bytes: &[u8]) -> Result<Dynamic, ElfError> {
    let elf = Elf::new(bytes)?;
    let mut out = Dynamic {
        machine: elf.u16(0x12),
        ..Dynamic::default()
    };
    let segments = elf.segments()?;
    let mut dynamic_table = None;
    for &(kind, off, _, filesz) in &segments {
        match kind {
            PT_INTERP => {
                out.interp = Some(cstr(elf.slice(off, filesz, "PT_INTERP")?, "PT_INTERP")?)
            }
            PT_DYNAMIC => dynamic_table = Some(elf.slice(off, filesz, "PT_DYNAMIC")?),
            _ => {}
        }
    }
    let Some(table) = dynamic_table else {
        return Ok(out);
    };
    let mut entries = Vec::new();
    for e in table.chunks_exact(16) {
        let tag = Elf::u64_at(e, 0);
        if tag == DT_NULL {
            break;
        }
        entries.push((tag, Elf::u64_at(e, 8)));
    }
    let strtab_vaddr = entries
        .iter()
        .find(|(t, _)| *t == DT_STRTAB)
        .map(|(_, v)| *v)
        .ok_or(ElfError::Malformed("dynamic section without DT_STRTAB"))?;
    // DT_STRTAB is an address: find the file offset of the loaded segment
    // that holds it.
    let strtab_off = segments
        .iter()
        .find(|&&(kind, _, vaddr, filesz)| {
            kind == PT_LOAD && strtab_vaddr >= vaddr && strtab_vaddr - vaddr < filesz
        })
        .map(|&(_, off, vaddr, _)| off + (strtab_vaddr - vaddr))
        .ok_or(ElfError::Malformed(
            "DT_STRTAB outside every loaded segment",
        ))?;
    let string = |v: u64| -> Result<String, ElfError> {
        let start = strtab_off
            .checked_add(v)
            .ok_or(ElfError::Malformed("dynamic string offset"))?;
        let rest = elf.slice(
            start,
            (bytes.len() as u64).saturating_sub(start),
            "dynamic string",
        )?;
        cstr(rest, "dynamic string")
    };
    let (mut runpath, mut rpath) = (None, None);
    for &(tag, v) in &entries {
        match tag {
            DT_NEEDED => out.needed.push(string(v)?),
            DT_RUNPATH => runpath = Some(string(v)?),
            DT_RPATH => rpath = Some(string(v)?),
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
    let elf = Elf::new(bytes)?;
    let sections = elf.sections()?;
    let shstrndx = usize::from(elf.u16(0x3e));
    let &(_, names_off, names_size) = sections
        .get(shstrndx)
        .ok_or(ElfError::Malformed("section name table index"))?;
    let names = elf.slice(names_off, names_size, "section names")?;
    for &(name, off, size) in &sections {
        let name = names
            .get(name as usize..)
            .ok_or(ElfError::Malformed("section name"))?;
        if cstr(name, "section name")? == ".modinfo" {
            let data = elf.slice(off, size, ".modinfo")?;
            return Ok(data
                .split(|&c| c == 0)
                .filter_map(|s| {
                    let s = std::str::from_utf8(s).ok()?;
                    let (k, v) = s.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect());
        }
    }
    Ok(Vec::new())
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
        assert!(matches!(dynamic(&header), Err(ElfError::Malformed(_))));
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
}
