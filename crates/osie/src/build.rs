//! Putting the image together from files on this machine: the kernel, its
//! modules (with dependencies, unpacked, and a trimmed index), busybox and
//! its applets, the bellows binary with its loader and libraries, CA
//! certificates, firmware the modules name, and the init. Writes
//! `vmlinuz` and `initramfs` (gzip-compressed newc cpio) into the output
//! directory, each replaced atomically so a running server never serves
//! half a file.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cpio::CpioError;
use crate::elf::{self, ElfError, LibraryError};
use crate::init::{self, InitConfig, InitError};
use crate::kernel::{self, KernelError};
use crate::modules::{self, ModuleIndex, ModulesError};
use crate::tree::{Node, Tree, TreeError};

/// What to build from, and where to put it.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Kernel image; `None`: the newest `/boot/vmlinuz-*`.
    pub kernel: Option<PathBuf>,
    /// Module directory; `None`: `/lib/modules/RELEASE` of the kernel.
    pub modules_dir: Option<PathBuf>,
    /// busybox (static, from `busybox-static`).
    pub busybox: PathBuf,
    /// The bellows binary to run as the worker.
    pub bellows: PathBuf,
    /// The OCI runtime that runs container actions (Debian's `crun`),
    /// copied with its libraries when the file exists; `None`, or a
    /// missing file: the image runs built-in actions only.
    pub crun: Option<PathBuf>,
    /// `mke2fs` (e2fsprogs), for `rootio format` with ext2/3/4 (busybox
    /// makes vfat and swap); copied with its libraries when it exists.
    pub mke2fs: Option<PathBuf>,
    /// Directory that receives `vmlinuz` and `initramfs`.
    pub output: PathBuf,
    /// Modules on top of [`crate::DEFAULT_MODULES`]; each must exist.
    pub extra_modules: Vec<String>,
    /// Where firmware the modules name is looked up (`/lib/firmware`);
    /// `None`: none is copied.
    pub firmware_dir: Option<PathBuf>,
    /// CA bundle for HTTPS image URLs, copied if the file exists.
    pub ca_certificates: Option<PathBuf>,
    /// gzip level, 0–9.
    pub gzip_level: u32,
    /// Remove symbols and debug sections from the bellows binary with
    /// `strip` (binutils): a third of a debug build's size.
    pub strip: bool,
    /// Modification time of every archive entry (seconds since the epoch),
    /// for reproducible output (`SOURCE_DATE_EPOCH`).
    pub mtime: u32,
}

impl BuildOptions {
    /// Debian's locations, writing into `output`, with `bellows` as the
    /// worker binary.
    pub fn debian(bellows: PathBuf, output: PathBuf) -> BuildOptions {
        BuildOptions {
            kernel: None,
            modules_dir: None,
            busybox: PathBuf::from("/bin/busybox"),
            bellows,
            crun: Some(PathBuf::from("/usr/bin/crun")),
            mke2fs: Some(PathBuf::from("/sbin/mke2fs")),
            output,
            extra_modules: Vec::new(),
            firmware_dir: Some(PathBuf::from("/lib/firmware")),
            ca_certificates: Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt")),
            gzip_level: DEFAULT_GZIP_LEVEL,
            strip: true,
            mtime: 0,
        }
    }
}

/// gzip level by default: measured on Debian 12's kernel modules and a
/// release bellows, level 6 is within 1–2 % of 9's size at well under
/// half its time; decompression at boot costs the same at every level.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// What was built.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The kernel copied.
    pub kernel: PathBuf,
    /// Its release.
    pub kernel_release: String,
    /// The module directory used.
    pub modules_dir: PathBuf,
    /// Written files.
    pub vmlinuz: PathBuf,
    /// Written files.
    pub initramfs: PathBuf,
    /// Size of `vmlinuz`.
    pub kernel_bytes: u64,
    /// Size of `initramfs` (compressed).
    pub initramfs_bytes: u64,
    /// Size of the cpio archive before compression.
    pub cpio_bytes: u64,
    /// Entries in the archive.
    pub entries: usize,
    /// Modules shipped, in load order.
    pub modules: Vec<String>,
    /// Modules loaded at every boot (the rest load for their hardware).
    pub eager_modules: Vec<String>,
    /// Requested names built into this kernel.
    pub builtin: Vec<String>,
    /// Default modules this kernel does not have.
    pub unavailable: Vec<String>,
    /// Firmware files copied.
    pub firmware: Vec<String>,
    /// Loader and libraries copied for bellows, crun (and busybox, if
    /// dynamic).
    pub libraries: Vec<String>,
    /// busybox applets linked.
    pub applets: usize,
    /// The OCI runtime included (with its size), if any.
    pub crun: Option<(PathBuf, u64)>,
    /// Size of the bellows binary in the image.
    pub bellows_bytes: u64,
    /// Whether debug sections were stripped, or why not.
    pub strip: Result<(), String>,
    /// CA bundle included.
    pub ca_certificates: bool,
    /// Time taken.
    pub elapsed: Duration,
}

/// Why the image could not be built. Each names the file or module at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The kernel could not be found or read.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An output file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No module directory for this kernel.
    #[error(
        "no modules for kernel {release} at {dir} (modules.dep is missing): install the kernel's package (apt-get install linux-image-amd64), run depmod {release}, or give --modules"
    )]
    NoModules {
        /// The kernel release.
        release: String,
        /// Where they were looked for.
        dir: PathBuf,
    },
    /// depmod's index is unreadable.
    #[error("{path}: {source}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        source: ModulesError,
    },
    /// Modules asked for with --extra-module that this kernel lacks.
    #[error("modules not found for kernel {release} in {dir}: {}", names.join(", "))]
    MissingModules {
        /// Their names.
        names: Vec<String>,
        /// The kernel release.
        release: String,
        /// The module directory.
        dir: PathBuf,
    },
    /// A module was built for another kernel.
    #[error("module {path} is for kernel {vermagic:?}, not {release}: give the matching --modules")]
    WrongKernel {
        /// The module file.
        path: PathBuf,
        /// Its vermagic.
        vermagic: String,
        /// The kernel's release.
        release: String,
    },
    /// A module file is unreadable as ELF.
    #[error("module {path}: {source}")]
    Module {
        /// The module file.
        path: PathBuf,
        /// What is wrong.
        source: ElfError,
    },
    /// A compressed module could not be unpacked.
    #[error("module {path}: cannot decompress: {message}")]
    Decompress {
        /// The module file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// The loader or a library could not be found.
    #[error(transparent)]
    Libraries(#[from] LibraryError),
    /// busybox is missing or lacks applets the init uses.
    #[error("busybox {path}: {message}")]
    Busybox {
        /// The binary.
        path: PathBuf,
        /// What is wrong, and the fix.
        message: String,
    },
    /// Two files want the same path.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The archive could not be written.
    #[error("initramfs: {0}")]
    Cpio(#[from] CpioError),
    /// The init script could not be made.
    #[error(transparent)]
    Init(#[from] InitError),
}

/// Applets `/init` and the udhcpc script run, and those the built-in
/// actions call (`tar` for archive2disk, `chroot` for cexec); a busybox
/// without one of them cannot boot the image or run its workflows.
pub const REQUIRED_APPLETS: &[&str] = &[
    "sh", "mount", "mkdir", "cat", "cut", "tr", "grep", "sed", "awk", "sort", "head", "tee",
    "sleep", "ln", "rm", "readlink", "basename", "modprobe", "insmod", "ip", "udhcpc", "syslogd",
    "klogd", "logger", "hostname", "setsid", "cttyhack", "reboot", "poweroff", "sync", "uname",
    "tar", "chroot",
];

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, BuildError> {
    let bytes = read(path)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Unpacks a module file as stored.
pub fn decompress(path: &Path, data: Vec<u8>) -> Result<Vec<u8>, BuildError> {
    let fail = |message: String| BuildError::Decompress {
        path: path.to_path_buf(),
        message,
    };
    let codec = bellows_compression::codec_from_extension(&path.to_string_lossy())
        .unwrap_or(bellows_compression::Codec::Raw);
    bellows_compression::decode_all(codec, data).map_err(|e| fail(e.to_string()))
}

/// Everything that goes into the initramfs, and what the report says
/// about it (sizes and output paths left empty).
pub fn assemble(
    opts: &BuildOptions,
    kernel_release: &str,
) -> Result<(Tree, BuildReport), BuildError> {
    let started = Instant::now();
    let mut tree = Tree::new();
    let mut report = BuildReport {
        kernel: PathBuf::new(),
        kernel_release: kernel_release.to_string(),
        modules_dir: PathBuf::new(),
        vmlinuz: PathBuf::new(),
        initramfs: PathBuf::new(),
        kernel_bytes: 0,
        initramfs_bytes: 0,
        cpio_bytes: 0,
        entries: 0,
        modules: Vec::new(),
        eager_modules: Vec::new(),
        builtin: Vec::new(),
        unavailable: Vec::new(),
        firmware: Vec::new(),
        libraries: Vec::new(),
        applets: 0,
        crun: None,
        bellows_bytes: 0,
        strip: Ok(()),
        ca_certificates: false,
        elapsed: Duration::ZERO,
    };

    // The skeleton.
    for (dir, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("var/log", 0o755),
        ("var/lib/bellows-worker", 0o755),
        ("mnt", 0o755),
    ] {
        tree.dir(dir, mode)?;
    }
    // The kernel opens /dev/console for process 1 before devtmpfs exists.
    tree.insert(
        "dev/console",
        Node::CharDevice {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    )?;
    tree.symlink("var/run", "../run")?;
    tree.symlink("etc/mtab", "/proc/self/mounts")?;
    let version = env!("CARGO_PKG_VERSION");
    for (path, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n".to_string()),
        ("etc/group", "root:x:0:\n".to_string()),
        (
            "etc/hosts",
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n".to_string(),
        ),
        ("etc/nsswitch.conf", "hosts: files dns\n".to_string()),
        ("etc/resolv.conf", String::new()),
        (
            "etc/profile",
            "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='bellows-osie:\\w# '\n"
                .to_string(),
        ),
        (
            "etc/os-release",
            format!(
                "NAME=\"Bellows in-memory OS\"\nID=bellows-osie\nVERSION_ID={version}\nPRETTY_NAME=\"Bellows in-memory OS {version} (kernel {kernel_release})\"\n"
            ),
        ),
    ] {
        tree.file(path, 0o644, text.into_bytes())?;
    }

    // busybox and its applets.
    let busybox = read(&opts.busybox).map_err(|e| BuildError::Busybox {
        path: opts.busybox.clone(),
        message: format!("{e} (apt-get install busybox-static, or give --busybox)"),
    })?;
    let applets = list_applets(&opts.busybox)?;
    let missing: Vec<&str> = REQUIRED_APPLETS
        .iter()
        .copied()
        .filter(|a| !applets.iter().any(|p| p.rsplit('/').next() == Some(a)))
        .collect();
    if !missing.is_empty() {
        return Err(BuildError::Busybox {
            path: opts.busybox.clone(),
            message: format!(
                "lacks applets the init needs: {} (use Debian's busybox-static)",
                missing.join(", ")
            ),
        });
    }
    tree.file("bin/busybox", 0o755, busybox)?;
    for path in &applets {
        if path == "bin/busybox" || path == "linuxrc" || !path.contains('/') {
            continue;
        }
        tree.symlink(path, "/bin/busybox")?;
        report.applets += 1;
    }

    // bellows, its loader and libraries (and busybox's, if it has any).
    let (bellows, strip) = bellows_binary(&opts.bellows, opts.strip)?;
    report.strip = strip;
    report.bellows_bytes = bellows.len() as u64;
    tree.file("usr/bin/bellows", 0o755, bellows)?;
    let crun = opts.crun.as_ref().filter(|p| p.is_file());
    if let Some(path) = crun {
        let bytes = read(path)?;
        report.crun = Some((path.clone(), bytes.len() as u64));
        tree.file("usr/bin/crun", 0o755, bytes)?;
    }
    let mke2fs = opts.mke2fs.as_ref().filter(|p| p.is_file());
    if let Some(path) = mke2fs {
        tree.file("usr/sbin/mke2fs", 0o755, read(path)?)?;
        for name in ["mkfs.ext2", "mkfs.ext3", "mkfs.ext4"] {
            tree.symlink(&format!("usr/sbin/{name}"), "mke2fs")?;
        }
    }
    let mut placed: BTreeMap<PathBuf, String> = BTreeMap::new();
    for program in [&opts.bellows, &opts.busybox]
        .into_iter()
        .chain(crun)
        .chain(mke2fs)
    {
        let info = elf::dynamic(&read(program)?).map_err(|source| LibraryError::Elf {
            path: program.to_path_buf(),
            source,
        })?;
        let search = elf::system_library_dirs(info.machine);
        for needed in elf::needed_files(program, &search)? {
            if tree.get(&needed.image_path).is_some() {
                continue;
            }
            let real =
                std::fs::canonicalize(&needed.host_path).map_err(|source| BuildError::Read {
                    path: needed.host_path.clone(),
                    source,
                })?;
            if let Some(first) = placed.get(&real) {
                tree.symlink(&needed.image_path, first)?;
            } else {
                tree.file(&needed.image_path, 0o755, read(&real)?)?;
                placed.insert(real, needed.image_path.clone());
            }
            report.libraries.push(needed.image_path);
        }
    }

    if let Some(ca) = &opts.ca_certificates
        && ca.is_file()
    {
        tree.file("etc/ssl/certs/ca-certificates.crt", 0o644, read(ca)?)?;
        report.ca_certificates = true;
    }

    // Kernel modules.
    let dir = opts
        .modules_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/lib/modules/{kernel_release}")));
    report.modules_dir = dir.clone();
    let dep_path = dir.join("modules.dep");
    if !dep_path.is_file() {
        return Err(BuildError::NoModules {
            release: kernel_release.to_string(),
            dir,
        });
    }
    let optional = |name: &str| -> Result<String, BuildError> {
        let p = dir.join(name);
        if p.exists() {
            read_text(&p)
        } else {
            Ok(String::new())
        }
    };
    let index = ModuleIndex::parse(
        &read_text(&dep_path)?,
        &optional("modules.builtin")?,
        &optional("modules.alias")?,
        &optional("modules.softdep")?,
    )
    .map_err(|source| BuildError::Index {
        path: dep_path.clone(),
        source,
    })?;
    let extra_missing: Vec<String> = index.resolve(&opts.extra_modules).missing;
    if !extra_missing.is_empty() {
        return Err(BuildError::MissingModules {
            names: extra_missing,
            release: kernel_release.to_string(),
            dir,
        });
    }
    let wanted: Vec<String> = crate::DEFAULT_MODULES
        .iter()
        .map(|s| s.to_string())
        .chain(opts.extra_modules.iter().cloned())
        .collect();
    let resolution = index.resolve(&wanted);
    let base = format!("lib/modules/{kernel_release}");
    let mut firmware_names = Vec::new();
    for name in &resolution.modules {
        let Some(m) = index.module(name) else {
            continue;
        };
        let host = dir.join(&m.path);
        let data = decompress(&host, read(&host)?)?;
        let info = elf::modinfo(&data).map_err(|source| BuildError::Module {
            path: host.clone(),
            source,
        })?;
        for (key, value) in info {
            match key.as_str() {
                "vermagic" if value.split_whitespace().next() != Some(kernel_release) => {
                    return Err(BuildError::WrongKernel {
                        path: host,
                        vermagic: value,
                        release: kernel_release.to_string(),
                    });
                }
                "firmware" => firmware_names.push(value),
                _ => {}
            }
        }
        tree.file(
            &format!("{base}/{}", modules::image_path(&m.path)),
            0o644,
            data,
        )?;
    }
    let files = index.subset(&resolution.modules);
    for (name, text) in [
        ("modules.dep", files.dep),
        ("modules.alias", files.alias),
        ("modules.softdep", files.softdep),
        ("modules.builtin", files.builtin),
    ] {
        tree.file(&format!("{base}/{name}"), 0o644, text.into_bytes())?;
    }
    if let Some(fw) = &opts.firmware_dir {
        firmware_names.sort();
        firmware_names.dedup();
        for name in firmware_names {
            if name.contains("..") {
                continue;
            }
            for ext in ["", ".xz", ".zst"] {
                let path = fw.join(format!("{name}{ext}"));
                if path.is_file() {
                    tree.file(&format!("lib/firmware/{name}{ext}"), 0o644, read(&path)?)?;
                    report.firmware.push(format!("{name}{ext}"));
                    break;
                }
            }
        }
    }
    report.builtin = resolution.builtin.clone();
    report.unavailable = resolution.missing.clone();
    report.eager_modules = resolution.eager.clone();
    report.modules = resolution.modules.clone();

    // The init and udhcpc's script.
    let init = init::render_init(&InitConfig {
        kernel_release: kernel_release.to_string(),
        eager_modules: resolution.eager,
    })?;
    tree.file("init", 0o755, init.into_bytes())?;
    tree.file(
        init::UDHCPC_SCRIPT_PATH,
        0o755,
        init::UDHCPC_SCRIPT.as_bytes().to_vec(),
    )?;
    report.entries = tree.len();
    report.elapsed = started.elapsed();
    Ok((tree, report))
}

/// `busybox --list-full`: applet paths (`usr/bin/awk`, `sbin/modprobe`).
fn list_applets(busybox: &Path) -> Result<Vec<String>, BuildError> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| BuildError::Busybox {
            path: busybox.to_path_buf(),
            message: format!("cannot run it to list its applets: {e}"),
        })?;
    if !out.status.success() {
        return Err(BuildError::Busybox {
            path: busybox.to_path_buf(),
            message: format!("--list-full failed ({})", out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .collect())
}

/// The bellows binary, without symbols and debug sections when asked and `strip`
/// (binutils) is here; the second value says whether that happened.
fn bellows_binary(path: &Path, strip: bool) -> Result<(Vec<u8>, Result<(), String>), BuildError> {
    if !strip {
        return Ok((read(path)?, Err("not asked".into())));
    }
    let tmp = std::env::temp_dir().join(format!("bellows-osie-strip-{}", std::process::id()));
    let result = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&tmp)
        .arg(path)
        .output();
    let outcome = match result {
        Ok(out) if out.status.success() => match std::fs::read(&tmp) {
            Ok(bytes) => Ok(bytes),
            Err(e) => Err(format!("strip wrote nothing readable: {e}")),
        },
        Ok(out) => Err(format!(
            "strip failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("strip (binutils) is not available: {e}")),
    };
    let _ = std::fs::remove_file(&tmp);
    match outcome {
        Ok(bytes) => Ok((bytes, Ok(()))),
        Err(why) => Ok((read(path)?, Err(why))),
    }
}

/// Writes `data` to `dir/name` through a temporary file and a rename.
fn write_atomic(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut BufWriter<std::fs::File>) -> Result<(), BuildError>,
) -> Result<(PathBuf, u64), BuildError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| BuildError::Write { path: p, source }
    };
    let file = std::fs::File::create(&tmp).map_err(werr(&tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let result = fill(&mut w).and_then(|()| {
        let file = w.into_inner().map_err(|e| BuildError::Write {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(werr(&tmp))?;
        let size = file.metadata().map_err(werr(&tmp))?.len();
        Ok(size)
    });
    match result {
        Ok(size) => {
            std::fs::rename(&tmp, &path).map_err(werr(&path))?;
            Ok((path, size))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Builds the image into `opts.output`: `vmlinuz` and `initramfs`.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    let kernel_path = match &opts.kernel {
        Some(k) => k.clone(),
        None => kernel::newest_kernel(Path::new("/boot"))?,
    };
    let kernel_image = std::fs::read(&kernel_path).map_err(|source| KernelError::Read {
        path: kernel_path.clone(),
        source,
    })?;
    let release = kernel::release(&kernel_path, &kernel_image)?;
    let (tree, mut report) = assemble(opts, &release)?;
    std::fs::create_dir_all(&opts.output).map_err(|source| BuildError::Write {
        path: opts.output.clone(),
        source,
    })?;
    let level = opts.gzip_level.min(9);
    let mtime = opts.mtime;
    let mut cpio_bytes = 0;
    let (initramfs, initramfs_bytes) = write_atomic(&opts.output, "initramfs", |w| {
        let gz = flate2::GzBuilder::new()
            .mtime(mtime)
            .write(w, flate2::Compression::new(level));
        let counter = Counter {
            inner: gz,
            count: 0,
        };
        let counter = tree.write_cpio(counter, mtime)?;
        cpio_bytes = counter.count;
        counter.inner.finish().map_err(CpioError::Io)?;
        Ok(())
    })?;
    let (vmlinuz, kernel_bytes) = write_atomic(&opts.output, "vmlinuz", |w| {
        w.write_all(&kernel_image)
            .map_err(|source| BuildError::Write {
                path: opts.output.join("vmlinuz"),
                source,
            })
    })?;
    report.kernel = kernel_path;
    report.vmlinuz = vmlinuz;
    report.initramfs = initramfs;
    report.kernel_bytes = kernel_bytes;
    report.initramfs_bytes = initramfs_bytes;
    report.cpio_bytes = cpio_bytes;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Counts bytes on their way to the compressor.
struct Counter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_modules_unpack() {
        let plain = b"\x7fELF module body".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress(Path::new("a.ko.gz"), gz).unwrap(), plain);
        assert_eq!(decompress(Path::new("a.ko"), plain.clone()).unwrap(), plain);
        let e = decompress(Path::new("kernel/x.ko.xz"), b"not xz".to_vec()).unwrap_err();
        assert!(e.to_string().contains("kernel/x.ko.xz"), "{e}");
        let e = decompress(Path::new("kernel/x.ko.zst"), b"not zstd".to_vec()).unwrap_err();
        assert!(e.to_string().contains("kernel/x.ko.zst"), "{e}");
    }

    #[test]
    fn a_missing_busybox_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts =
            BuildOptions::debian(std::env::current_exe().unwrap(), dir.path().join("out"));
        opts.busybox = dir.path().join("no-busybox");
        let e = assemble(&opts, "6.1.0-1-amd64").unwrap_err();
        assert!(e.to_string().contains("no-busybox"), "{e}");
        assert!(e.to_string().contains("busybox-static"), "{e}");
    }
}
