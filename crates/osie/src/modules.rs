//! Kernel modules: which files to copy for the drivers asked for, read
//! from `depmod`'s own index files (`modules.dep`, `modules.builtin`,
//! `modules.alias`, `modules.softdep`), and the trimmed index files the
//! in-memory OS ships so busybox `modprobe` finds dependencies and matches
//! hardware (`/sys/.../modalias`) against aliases there.
//!
//! Module names compare with `-` and `_` alike, as the kernel does
//! (`nls_iso8859_1` is `fs/nls/nls_iso8859-1.ko`). Debian 12 ships plain
//! `.ko` files; compressed ones (`.ko.xz`, `.ko.zst`, `.ko.gz`) are
//! unpacked at build time and listed as `.ko` in the image's index.

use std::collections::{BTreeMap, BTreeSet};

/// Why the index files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// A `modules.dep` line without `path:`.
    #[error("modules.dep line {line}: expected \"path.ko: dependencies\", got {text:?}")]
    BadDepLine {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

/// The module name a file provides: `kernel/fs/nls/nls_iso8859-1.ko.xz` →
/// `nls_iso8859_1`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = strip_ko(base).unwrap_or(base);
    normalize(stem)
}

/// A name as the kernel compares it: `-` is `_`.
pub fn normalize(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// `x.ko` / `x.ko.xz` / `x.ko.zst` / `x.ko.gz` → `x`.
fn strip_ko(base: &str) -> Option<&str> {
    for ext in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] {
        if let Some(stem) = base.strip_suffix(ext) {
            return Some(stem);
        }
    }
    None
}

/// Where a module file goes in the image: the same relative path, always
/// as a plain `.ko`.
pub fn image_path(path: &str) -> String {
    for ext in [".ko.xz", ".ko.zst", ".ko.gz"] {
        if let Some(stem) = path.strip_suffix(ext) {
            return format!("{stem}.ko");
        }
    }
    path.to_string()
}

/// Bus prefixes of aliases that match a device's `modalias`: a module with
/// one of these is loaded when its hardware is present; others (file
/// systems, protocols, crypto) are loaded at boot regardless.
const DEVICE_BUSES: &[&str] = &[
    "acpi",
    "auxiliary",
    "bcma",
    "ccw",
    "cpu",
    "dmi",
    "hdaudio",
    "hid",
    "i2c",
    "ieee1394",
    "input",
    "mdio",
    "mhi",
    "of",
    "pci",
    "pcmcia",
    "platform",
    "pnp",
    "scsi",
    "sdio",
    "serio",
    "spi",
    "ssb",
    "usb",
    "virtio",
    "vmbus",
    "wmi",
    "xen",
];

/// Does this alias match hardware (`pci:v…`, `virtio:d…`), rather than a
/// name (`fs-ext4`, `crypto-crc32c`)?
pub fn is_device_alias(pattern: &str) -> bool {
    pattern
        .split_once(':')
        .is_some_and(|(bus, _)| DEVICE_BUSES.contains(&bus))
}

/// One module of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Path relative to `/lib/modules/RELEASE`, as in `modules.dep`.
    pub path: String,
    /// Its dependencies' names, in `modules.dep` order (load last first).
    pub deps: Vec<String>,
}

/// `depmod`'s index of one kernel's modules.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    modules: BTreeMap<String, ModuleFile>,
    builtin: BTreeSet<String>,
    /// `modules.builtin` as read.
    builtin_text: String,
    /// (pattern, module name), in file order.
    aliases: Vec<(String, String)>,
    /// module name → (pre, post) names as written (may be aliases).
    softdeps: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

/// What resolving a list of names gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Every module to ship, dependencies before what needs them.
    pub modules: Vec<String>,
    /// Names asked for that are built into the kernel (nothing to ship).
    pub builtin: Vec<String>,
    /// Names asked for that are neither modules nor built in.
    pub missing: Vec<String>,
    /// Modules to load at boot whatever the hardware: those asked for
    /// that match no device, and every soft dependency (`crc32c` before
    /// `ext4`), in load order.
    pub eager: Vec<String>,
}

/// The trimmed index files for the image (relative to
/// `/lib/modules/RELEASE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFiles {
    /// `modules.dep`, with image paths.
    pub dep: String,
    /// `modules.alias`, only for shipped modules.
    pub alias: String,
    /// `modules.softdep`, only for shipped modules.
    pub softdep: String,
    /// `modules.builtin`, whole (busybox treats these as loaded).
    pub builtin: String,
}

impl ModuleIndex {
    /// Reads the index from the contents of `modules.dep`,
    /// `modules.builtin`, `modules.alias` and `modules.softdep` (the last
    /// two may be empty).
    pub fn parse(
        dep: &str,
        builtin: &str,
        alias: &str,
        softdep: &str,
    ) -> Result<ModuleIndex, ModulesError> {
        let mut index = ModuleIndex::default();
        for (i, line) in dep.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, deps) = line
                .split_once(':')
                .ok_or_else(|| ModulesError::BadDepLine {
                    line: i + 1,
                    text: line.to_string(),
                })?;
            let path = path.trim();
            if strip_ko(path.rsplit('/').next().unwrap_or(path)).is_none() {
                return Err(ModulesError::BadDepLine {
                    line: i + 1,
                    text: line.to_string(),
                });
            }
            index.modules.insert(
                module_name(path),
                ModuleFile {
                    path: path.to_string(),
                    deps: deps.split_whitespace().map(module_name).collect(),
                },
            );
        }
        index.builtin_text = builtin.to_string();
        index.builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(module_name)
            .collect();
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                index.aliases.push((pattern.to_string(), normalize(module)));
            }
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let entry = index.softdeps.entry(normalize(module)).or_default();
            let mut post = false;
            for w in words {
                match w {
                    "pre:" => post = false,
                    "post:" => post = true,
                    name if post => entry.1.push(name.to_string()),
                    name => entry.0.push(name.to_string()),
                }
            }
        }
        Ok(index)
    }

    /// The module `name` (any spelling), if it is one.
    pub fn module(&self, name: &str) -> Option<&ModuleFile> {
        self.modules.get(&normalize(name))
    }

    /// Is `name` built into the kernel?
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Number of modules in the index.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// No modules at all.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Does any alias of `module` match hardware?
    pub fn has_device_alias(&self, module: &str) -> bool {
        let module = normalize(module);
        self.aliases
            .iter()
            .any(|(p, m)| *m == module && is_device_alias(p))
    }

    /// Modules a name stands for: itself if it is a module, else the
    /// modules with that exact (non-wildcard) alias (`crypto-crc32c`).
    fn lookup(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        if self.modules.contains_key(&n) {
            return vec![n];
        }
        let mut out: Vec<String> = self
            .aliases
            .iter()
            .filter(|(p, m)| p == name && self.modules.contains_key(m))
            .map(|(_, m)| m.clone())
            .collect();
        out.dedup();
        out
    }

    /// Adds `name` and its dependencies (first) to `order`.
    fn add(&self, name: &str, order: &mut Vec<String>, seen: &mut BTreeSet<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        if let Some(m) = self.modules.get(name) {
            // modules.dep lists dependencies so that loading them from the
            // last to the first works.
            for dep in m.deps.iter().rev() {
                self.add(dep, order, seen);
            }
        }
        order.push(name.to_string());
    }

    /// Every module needed for `wanted` (names or exact aliases), with
    /// dependencies and soft dependencies, in load order.
    ///
    /// Eager (loaded at every boot): each asked-for module that neither
    /// matches hardware itself nor depends on a module that does (`ext4`,
    /// `8021q`; not `mlx4_en`, which `mlx4_core` loads for its card), each
    /// preceded by the soft dependencies of it and its dependencies
    /// (`crc32c` before `ext4`). A device driver's soft dependencies are
    /// shipped too; the kernel asks `/sbin/modprobe` for them by alias when
    /// the driver needs them.
    pub fn resolve<S: AsRef<str>>(&self, wanted: &[S]) -> Resolution {
        let mut res = Resolution::default();
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut eager_roots = Vec::new();
        for w in wanted {
            let w = w.as_ref();
            let found = self.lookup(w);
            if found.is_empty() {
                if self.is_builtin(w) {
                    res.builtin.push(normalize(w));
                } else {
                    res.missing.push(w.to_string());
                }
                continue;
            }
            for m in found {
                let hardware = self.has_device_alias(&m)
                    || self
                        .modules
                        .get(&m)
                        .is_some_and(|f| f.deps.iter().any(|d| self.has_device_alias(d)));
                if !hardware {
                    eager_roots.push(m.clone());
                }
                self.add(&m, &mut order, &mut seen);
            }
        }
        // Soft dependencies of everything shipped, until nothing new comes.
        let mut i = 0;
        while i < order.len() {
            let name = order[i].clone();
            i += 1;
            for s in self.soft_names(&name) {
                for m in self.lookup(&s) {
                    if !seen.contains(&m) {
                        let mut extra = Vec::new();
                        self.add(&m, &mut extra, &mut seen);
                        order.extend(extra);
                    }
                }
            }
        }
        let mut eager_seen = BTreeSet::new();
        for root in eager_roots {
            let mut closure = vec![root.clone()];
            if let Some(f) = self.modules.get(&root) {
                closure.extend(f.deps.iter().cloned());
            }
            let soft: Vec<String> = closure
                .iter()
                .flat_map(|m| self.soft_names(m))
                .flat_map(|s| self.lookup(&s))
                .collect();
            for m in soft.into_iter().chain([root]) {
                if eager_seen.insert(m.clone()) {
                    res.eager.push(m);
                }
            }
        }
        res.modules = order;
        res
    }

    /// The names `module`'s soft dependencies give (pre, then post).
    fn soft_names(&self, module: &str) -> Vec<String> {
        self.softdeps
            .get(module)
            .map(|(pre, post)| pre.iter().chain(post).cloned().collect())
            .unwrap_or_default()
    }

    /// The index files for an image holding exactly `modules`.
    pub fn subset(&self, modules: &[String]) -> IndexFiles {
        let set: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
        let mut files = IndexFiles::default();
        for name in modules {
            let Some(m) = self.modules.get(name) else {
                continue;
            };
            let deps: Vec<String> = m
                .deps
                .iter()
                .filter_map(|d| self.modules.get(d))
                .map(|d| image_path(&d.path))
                .collect();
            files.dep.push_str(&image_path(&m.path));
            files.dep.push(':');
            for d in deps {
                files.dep.push(' ');
                files.dep.push_str(&d);
            }
            files.dep.push('\n');
        }
        for (pattern, module) in &self.aliases {
            if set.contains(module.as_str()) {
                files.alias.push_str(&format!("alias {pattern} {module}\n"));
            }
        }
        for (module, (pre, post)) in &self.softdeps {
            if !set.contains(module.as_str()) {
                continue;
            }
            let mut line = format!("softdep {module}");
            if !pre.is_empty() {
                line.push_str(" pre: ");
                line.push_str(&pre.join(" "));
            }
            if !post.is_empty() {
                line.push_str(" post: ");
                line.push_str(&post.join(" "));
            }
            files.softdep.push_str(&line);
            files.softdep.push('\n');
        }
        files.builtin = self.builtin_text.clone();
        files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
kernel/fs/nls/nls_iso8859-1.ko.zst:
kernel/drivers/net/mlx4/mlx4_en.ko: kernel/drivers/net/mlx4/mlx4_core.ko
kernel/drivers/net/mlx4/mlx4_core.ko:
kernel/drivers/net/r8169.ko:
kernel/drivers/net/phy/realtek.ko:
";
    const BUILTIN: &str = "kernel/net/packet/af_packet.ko\nkernel/net/unix/unix.ko\n";
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias virtio:d00000001v* virtio_net
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias fs-ext4 ext4
alias crypto-crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
alias fs-xfs xfs
alias pci:v000015B3d00001003sv*sd*bc*sc*i* mlx4_core
alias pci:v000010ECd00008168sv*sd*bc*sc*i* r8169
alias mdio:0000000000011100110010000?????? realtek
";
    const SOFTDEP: &str = "\
# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep xfs pre: crc32c post: whatever
softdep r8169 pre: realtek
";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(DEP, BUILTIN, ALIAS, SOFTDEP).unwrap()
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            module_name("kernel/fs/nls/nls_iso8859-1.ko.zst"),
            "nls_iso8859_1"
        );
        assert_eq!(module_name("crc32c-intel.ko"), "crc32c_intel");
        assert_eq!(image_path("kernel/a/b.ko.xz"), "kernel/a/b.ko");
        assert_eq!(image_path("kernel/a/b.ko"), "kernel/a/b.ko");
        assert_eq!(
            bellows_compression::codec_from_extension("a.ko.zst"),
            Some(bellows_compression::Codec::Zstd)
        );
        let i = index();
        assert!(i.module("nls_iso8859_1").is_some());
        assert!(i.module("nls-iso8859-1").is_some());
        assert!(i.is_builtin("af-packet"));
        assert_eq!(i.len(), 19);
    }

    #[test]
    fn dependencies_come_first() {
        let r = index().resolve(&["virtio_net", "virtio_pci"]);
        assert_eq!(
            r.modules,
            [
                "virtio",
                "virtio_ring",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_pci"
            ]
        );
        // Device drivers wait for their hardware.
        assert!(r.eager.is_empty(), "{r:?}");
        // Every module comes after each of its dependencies.
        let i = index();
        for (at, m) in r.modules.iter().enumerate() {
            for d in &i.module(m).unwrap().deps {
                let pos = r.modules.iter().position(|x| x == d).unwrap();
                assert!(pos < at, "{d} before {m}");
            }
        }
    }

    #[test]
    fn soft_dependencies_builtins_and_missing() {
        let r = index().resolve(&["ext4", "af_packet", "nope", "nls_iso8859-1"]);
        assert_eq!(r.builtin, ["af_packet"]);
        assert_eq!(r.missing, ["nope"]);
        for m in [
            "crc16",
            "mbcache",
            "jbd2",
            "ext4",
            "crc32c_generic",
            "crc32c_intel",
        ] {
            assert!(r.modules.contains(&m.to_string()), "{m}: {r:?}");
        }
        // crc32c (both) before ext4 in the boot-time list; nls has no
        // device alias so it is loaded at boot too.
        assert_eq!(
            r.eager,
            ["crc32c_intel", "crc32c_generic", "ext4", "nls_iso8859_1"]
        );
        // Add-ons of device drivers and drivers' soft dependencies are
        // shipped but wait for the hardware (the kernel asks for them).
        let r = index().resolve(&["mlx4_en", "r8169"]);
        assert_eq!(r.modules, ["mlx4_core", "mlx4_en", "r8169", "realtek"]);
        assert!(r.eager.is_empty(), "{r:?}");
        // An alias is a valid request.
        let r = index().resolve(&["fs-ext4"]);
        assert!(r.modules.contains(&"ext4".to_string()), "{r:?}");
    }

    #[test]
    fn the_subset_index_lists_only_shipped_modules() {
        let i = index();
        let r = i.resolve(&["virtio_net", "ext4"]);
        let f = i.subset(&r.modules);
        assert!(f.dep.contains(
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"
        ));
        assert!(
            f.dep.contains("kernel/arch/x86/crypto/crc32c-intel.ko:\n"),
            "{}",
            f.dep
        );
        assert!(!f.dep.contains("virtio_pci"));
        assert!(f.alias.contains("alias virtio:d00000001v* virtio_net\n"));
        assert!(f.alias.contains("alias crypto-crc32c crc32c_generic\n"));
        assert!(!f.alias.contains("virtio_pci"));
        assert!(!f.alias.contains("xfs"));
        assert_eq!(
            f.softdep,
            "softdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\n"
        );
        assert_eq!(f.builtin, BUILTIN);
        assert_eq!(f.dep.lines().count(), r.modules.len());
    }

    #[test]
    fn device_aliases() {
        assert!(is_device_alias("pci:v00008086d*"));
        assert!(is_device_alias("virtio:d00000001v*"));
        assert!(!is_device_alias("fs-ext4"));
        assert!(!is_device_alias("devname:fuse"));
        let i = index();
        assert!(i.has_device_alias("virtio_net"));
        assert!(!i.has_device_alias("ext4"));
    }

    #[test]
    fn bad_lines_are_named() {
        let e = ModuleIndex::parse("kernel/a.ko: b.ko\nnonsense\n", "", "", "").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = ModuleIndex::parse("kernel/a.txt:\n", "", "", "").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    /// Debian's real index, when this machine has one: every default
    /// module resolves, with its dependencies present in the index.
    #[test]
    fn this_machines_index() {
        let Ok(dir) = std::fs::read_dir("/lib/modules") else {
            return;
        };
        for entry in dir.flatten() {
            let base = entry.path();
            let read = |n: &str| std::fs::read_to_string(base.join(n)).unwrap_or_default();
            let dep = read("modules.dep");
            if dep.is_empty() {
                continue;
            }
            let i = ModuleIndex::parse(
                &dep,
                &read("modules.builtin"),
                &read("modules.alias"),
                &read("modules.softdep"),
            )
            .unwrap();
            let r = i.resolve(crate::DEFAULT_MODULES);
            for m in &r.modules {
                assert!(i.module(m).is_some(), "{m}");
            }
            assert!(r.modules.len() >= crate::DEFAULT_MODULES.len() / 2, "{r:?}");
        }
    }
}
