//! A whole image from this machine's kernel, modules and busybox, checked
//! with programs we did not write: gzip and GNU cpio unpack it, `ldd`
//! agrees on the libraries, and (as root) the unpacked tree runs: the
//! packaged program starts through the packaged loader and libraries, and
//! busybox `modprobe` resolves dependencies and hardware aliases from the
//! packaged index.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bellows_osie::{BuildOptions, build, elf, kernel};

use bellows_testkit::netns::is_root as root;

/// Debian's kernel and busybox-static, or a skip (a failure in CI).
fn parts() -> Option<PathBuf> {
    let kernel = kernel::newest_kernel(Path::new("/boot")).ok();
    let ok = kernel.as_ref().is_some_and(|k| std::fs::read(k).is_ok())
        && Path::new("/bin/busybox").exists()
        && Command::new("cpio").arg("--version").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "linux-image-amd64, busybox-static and cpio are needed; scripts/test.sh installs them"
        );
        eprintln!("skipped: no readable /boot/vmlinuz-*, /bin/busybox or cpio");
        return None;
    }
    kernel
}

struct Built {
    _dir: tempfile::TempDir,
    out: PathBuf,
    tree: PathBuf,
    release: String,
    program: PathBuf,
}

fn build_and_unpack() -> Option<Built> {
    let kernel = parts()?;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("osie");
    // Any dynamic program stands in for bellows: this test binary.
    let program = std::env::current_exe().unwrap();
    let mut opts = BuildOptions::debian(program.clone(), out.clone());
    opts.kernel = Some(kernel);
    opts.gzip_level = 1;
    let report = build(&opts).expect("build");
    assert!(report.initramfs_bytes > 1 << 20, "{report:?}");
    assert!(report.modules.len() > 20, "{report:?}");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc {} | cpio -idm --quiet --no-absolute-filenames",
            out.join("initramfs").display()
        ))
        .current_dir(&tree)
        .status()
        .unwrap();
    // As non-root, cpio cannot make /dev/console and says so.
    assert!(status.success() || !root(), "unpacking failed");
    Some(Built {
        release: report.kernel_release.clone(),
        _dir: dir,
        out,
        tree,
        program,
    })
}

#[test]
fn the_image_unpacks_with_everything_in_place() {
    let Some(b) = build_and_unpack() else { return };
    let t = &b.tree;
    assert_eq!(
        std::fs::read(b.out.join("vmlinuz")).unwrap(),
        std::fs::read(kernel::newest_kernel(Path::new("/boot")).unwrap()).unwrap()
    );
    let init = std::fs::read_to_string(t.join("init")).unwrap();
    assert!(init.contains(&format!("KERNEL_RELEASE='{}'", b.release)));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(t.join("init"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "init is executable");
    for applet in [
        "bin/sh",
        "sbin/modprobe",
        "sbin/udhcpc",
        "sbin/syslogd",
        "usr/bin/logger",
    ] {
        assert_eq!(
            std::fs::read_link(t.join(applet)).unwrap(),
            Path::new("/bin/busybox"),
            "{applet}"
        );
    }
    assert!(t.join("usr/share/bellows/udhcpc.script").is_file());
    // Every module the index names is there, unpacked, and only those.
    let base = t.join("lib/modules").join(&b.release);
    let dep = std::fs::read_to_string(base.join("modules.dep")).unwrap();
    let mut listed = BTreeSet::new();
    for line in dep.lines() {
        let (m, deps) = line.split_once(':').unwrap();
        for f in std::iter::once(m).chain(deps.split_whitespace()) {
            assert!(f.ends_with(".ko"), "{f}");
            assert!(base.join(f).is_file(), "{f} listed but missing");
            listed.insert(f.to_string());
        }
    }
    let out = Command::new("find")
        .args([".", "-name", "*.ko"])
        .current_dir(&base)
        .output()
        .unwrap();
    let shipped: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect();
    assert_eq!(shipped, listed);
    assert!(dep.contains("virtio_net.ko:"), "{dep}");
    let alias = std::fs::read_to_string(base.join("modules.alias")).unwrap();
    assert!(
        alias.lines().any(|l| l.ends_with(" virtio_pci")),
        "aliases for virtio_pci"
    );
    // Loader and libraries: the same set ldd finds for the program.
    let ldd = Command::new("ldd").arg(&b.program).output().unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    let ldd_names: BTreeSet<String> = ldd
        .lines()
        .filter(|l| !l.contains("linux-vdso"))
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            Some(Path::new(path).file_name()?.to_string_lossy().into_owned())
        })
        .collect();
    let search = elf::system_library_dirs(62);
    let ours: BTreeSet<String> = elf::needed_files(&b.program, &search)
        .unwrap()
        .iter()
        .map(|n| {
            assert!(
                t.join(n.image_path.trim_start_matches('/')).exists(),
                "{} in the image",
                n.image_path
            );
            Path::new(&n.image_path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(ours, ldd_names, "ldd says:\n{ldd}");
    let interp = elf::dynamic(&std::fs::read(&b.program).unwrap())
        .unwrap()
        .interp
        .unwrap();
    assert!(t.join(interp.trim_start_matches('/')).exists(), "{interp}");
}

/// As root: run things inside the unpacked image.
#[test]
fn the_unpacked_image_runs_its_program_and_resolves_modules() {
    if !root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("skipped: chroot needs root");
        return;
    }
    let Some(b) = build_and_unpack() else { return };
    let t = &b.tree;
    let chroot = |args: &[&str]| {
        let out = Command::new("chroot")
            .arg(t)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // The program starts through the packaged loader and libraries only.
    let (ok, out) = chroot(&["/usr/bin/bellows", "--list"]);
    assert!(ok, "{out}");
    assert!(out.contains("the_unpacked_image_runs_its_program"), "{out}");
    let (ok, out) = chroot(&["/bin/sh", "-n", "/init"]);
    assert!(ok, "{out}");
    // busybox modprobe looks in /lib/modules/$(uname -r): point this
    // machine's release at the image's modules.
    let host = String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let host = host.trim();
    if host != b.release {
        std::os::unix::fs::symlink(&b.release, t.join("lib/modules").join(host)).unwrap();
    }
    let (ok, out) = chroot(&["/sbin/modprobe", "-D", "virtio_net"]);
    assert!(ok, "{out}");
    let order: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("insmod "))
        .map(|p| p.trim().rsplit('/').next().unwrap_or(p))
        .collect();
    assert_eq!(order.last(), Some(&"virtio_net.ko"), "{out}");
    for dep in ["virtio.ko", "virtio_ring.ko"] {
        assert!(order.contains(&dep), "{dep}: {out}");
    }
    // A virtio NIC's PCI modalias, as /sys shows it, finds virtio_pci.
    let (ok, out) = chroot(&[
        "/sbin/modprobe",
        "-D",
        "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
    ]);
    assert!(ok && out.contains("virtio_pci.ko"), "{out}");
    // An Intel 82574L (e1000e) and an NVMe drive.
    let (_, out) = chroot(&[
        "/sbin/modprobe",
        "-D",
        "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00",
    ]);
    assert!(out.contains("e1000e.ko"), "{out}");
    let (_, out) = chroot(&[
        "/sbin/modprobe",
        "-D",
        "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02",
    ]);
    assert!(out.contains("nvme.ko"), "{out}");
    // What the kernel asks for when ext4 mounts, by alias.
    let (ok, out) = chroot(&["/sbin/modprobe", "-D", "fs-ext4"]);
    assert!(
        ok && out.contains("ext4.ko") && out.contains("jbd2.ko"),
        "{out}"
    );
    let (ok, out) = chroot(&["/sbin/modprobe", "-D", "crypto-crc32c"]);
    assert!(ok && out.contains("crc32c"), "{out}");
    // A module that is not in the image is not found.
    let (ok, _) = chroot(&["/sbin/modprobe", "-D", "btrfs"]);
    assert!(!ok, "btrfs is not shipped");
}

#[test]
fn extra_modules_are_added_and_unknown_ones_refused() {
    let Some(kernel) = parts() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BuildOptions::debian(std::env::current_exe().unwrap(), dir.path().join("out"));
    opts.kernel = Some(kernel.clone());
    opts.extra_modules = vec!["vmxnet3".into(), "no_such_module".into()];
    let e = build(&opts).unwrap_err();
    assert!(
        matches!(e, bellows_osie::BuildError::MissingModules { ref names, .. } if names == &["no_such_module"]),
        "{e}"
    );
    assert!(e.to_string().contains("no_such_module"), "{e}");
    assert!(
        !dir.path().join("out/initramfs").exists(),
        "nothing written"
    );

    let release = kernel::release(&kernel, &std::fs::read(&kernel).unwrap()).unwrap();
    opts.extra_modules = vec!["vmxnet3".into()];
    let (tree, report) = build::assemble(&opts, &release).unwrap();
    assert!(report.modules.iter().any(|m| m == "vmxnet3"), "{report:?}");
    assert!(
        tree.iter()
            .any(|(p, _)| p.ends_with("/vmxnet3.ko") && p.starts_with("lib/modules/")),
        "the module file is in the tree"
    );
    // A NIC driver waits for its hardware.
    assert!(!report.eager_modules.iter().any(|m| m == "vmxnet3"));
}

#[test]
fn modules_built_for_another_kernel_are_refused() {
    let Some(kernel) = parts() else { return };
    let release = kernel::release(&kernel, &std::fs::read(&kernel).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BuildOptions::debian(std::env::current_exe().unwrap(), dir.path().join("out"));
    // This kernel's modules, for a kernel that claims another release.
    opts.modules_dir = Some(PathBuf::from(format!("/lib/modules/{release}")));
    let e = build::assemble(&opts, "6.1.0-99-amd64").unwrap_err();
    assert!(
        matches!(e, bellows_osie::BuildError::WrongKernel { .. }),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains(".ko") && text.contains("6.1.0-99-amd64") && text.contains(&release),
        "{text}"
    );
}
