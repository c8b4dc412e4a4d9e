//! Our cpio writer against GNU cpio and gzip, programs we did not write:
//! what GNU cpio extracts from our archive must be exactly the tree we
//! wrote — contents, permission bits, symlinks, directories, times.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use bellows_osie::tree::{Node, Tree};

fn have(tool: &str) -> bool {
    let ok = bellows_testkit::packages::have(tool);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is needed; scripts/test.sh installs it"
        );
        eprintln!("skipped: no {tool}");
    }
    ok
}

/// A tree with every kind of entry and awkward sizes and names.
fn sample() -> Tree {
    let mut t = Tree::new();
    t.file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
        .unwrap();
    t.file("etc/empty", 0o644, Vec::new()).unwrap();
    t.file("etc/secret", 0o600, b"s".to_vec()).unwrap();
    t.file("usr/bin/setuid", 0o4755, b"x".to_vec()).unwrap();
    t.dir("tmp", 0o1777).unwrap();
    t.dir("root", 0o700).unwrap();
    t.dir("var/empty/dir", 0o755).unwrap();
    // Not a multiple of 4, and bigger than any buffer.
    let big: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
    t.file("lib/modules/6.1.0-1-amd64/kernel/big.ko", 0o644, big)
        .unwrap();
    for n in 1..=9 {
        let name = format!("names/{}", "n".repeat(n));
        t.file(&name, 0o644, vec![b'a'; n]).unwrap();
    }
    t.symlink("bin/sh", "busybox").unwrap();
    t.symlink("usr/bin/awk", "/bin/busybox").unwrap();
    t.symlink(
        "lib64/ld-linux-x86-64.so.2",
        "../lib/x86_64-linux-gnu/ld.so",
    )
    .unwrap();
    t.file("bin/busybox", 0o755, b"\x7fELF...".to_vec())
        .unwrap();
    t
}

const MTIME: u32 = 1_700_000_000;

fn extract(archive: &[u8], into: &Path) {
    let mut child = Command::new("cpio")
        .args(["-idm", "--quiet", "--no-absolute-filenames"])
        .current_dir(into)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cpio");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(archive).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cpio -idm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn gnu_cpio_extracts_exactly_what_we_wrote() {
    if !have("cpio") {
        return;
    }
    let tree = sample();
    let archive = tree.write_cpio(Vec::new(), MTIME).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The extraction's umask must not hide a wrong mode.
    extract(&archive, dir.path());
    let mut checked = 0;
    for (path, node) in tree.iter() {
        let p = dir.path().join(path);
        let meta = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{path}: {e}"));
        match node {
            Node::File { mode, data } => {
                assert!(meta.is_file(), "{path}");
                assert_eq!(&std::fs::read(&p).unwrap(), data, "{path}");
                assert_eq!(meta.permissions().mode() & 0o7777, *mode, "{path}");
                assert_eq!(meta.mtime(), i64::from(MTIME), "{path}");
            }
            Node::Dir { mode } => {
                assert!(meta.is_dir(), "{path}");
                assert_eq!(meta.permissions().mode() & 0o7777, *mode, "{path}");
            }
            Node::Symlink { target } => {
                assert!(meta.file_type().is_symlink(), "{path}");
                assert_eq!(
                    std::fs::read_link(&p).unwrap().to_str(),
                    Some(target.as_str())
                );
            }
            Node::CharDevice { .. } => unreachable!(),
        }
        checked += 1;
    }
    assert_eq!(checked, tree.len());
    // Nothing else was extracted.
    let out = Command::new("find")
        .arg(".")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(found, tree.len() + 1, "find lists the tree and `.`");
}

#[test]
fn gnu_cpio_lists_device_nodes_and_the_trailer_ends_the_archive() {
    if !have("cpio") {
        return;
    }
    let mut tree = Tree::new();
    tree.insert(
        "dev/console",
        Node::CharDevice {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    )
    .unwrap();
    tree.file("after", 0o644, b"x".to_vec()).unwrap();
    let mut archive = tree.write_cpio(Vec::new(), MTIME).unwrap();
    // Bytes after the trailer (as the kernel allows, e.g. a second archive
    // or padding) do not confuse the reader.
    archive.extend_from_slice(&[0u8; 512]);
    let mut child = Command::new("cpio")
        .args(["-itv", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&archive).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    let console = listing
        .lines()
        .find(|l| l.ends_with("dev/console"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(console.starts_with("crw-------"), "{console}");
    assert!(
        console.contains("5,") && console.contains(" 1 "),
        "{console}"
    );
    assert_eq!(listing.lines().count(), 3, "{listing}");
}

#[test]
fn gzip_reads_our_compressed_archive() {
    if !have("gzip") || !have("cpio") {
        return;
    }
    let tree = sample();
    let plain = tree.write_cpio(Vec::new(), MTIME).unwrap();
    let gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::new(6));
    let gz = tree.write_cpio(gz, MTIME).unwrap().finish().unwrap();
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&gz).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    assert!(out.stdout == plain, "gzip -dc gives back the archive");
}
