//! The in-memory OS's file tree before it becomes an archive: paths to
//! directories, files, symlinks and device nodes. Adding a path creates its
//! parent directories, and the archive lists every directory before its
//! contents, because the kernel's initramfs unpacker does not create them.

use std::collections::BTreeMap;
use std::io::Write;

use crate::cpio::{CpioError, CpioWriter, clean};

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory with these permission bits.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Contents.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Where it points.
        target: String,
    },
    /// A character device node.
    CharDevice {
        /// Permission bits.
        mode: u32,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

/// Why a path cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The name itself is unusable.
    #[error(transparent)]
    Name(#[from] CpioError),
    /// A parent of the path is already something other than a directory.
    #[error("cannot add {path:?}: {parent:?} is already a {kind}, not a directory")]
    ParentNotDir {
        /// The path being added.
        path: String,
        /// The parent in the way.
        parent: String,
        /// What the parent is.
        kind: &'static str,
    },
    /// A directory is in the way of a file, or the reverse.
    #[error("cannot add {path:?} as a {new}: it is already a {old}")]
    Conflict {
        /// The path.
        path: String,
        /// What it already is.
        old: &'static str,
        /// What was asked.
        new: &'static str,
    },
}

/// A file tree, kept sorted by path.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    entries: BTreeMap<String, Node>,
}

fn kind(node: &Node) -> &'static str {
    match node {
        Node::Dir { .. } => "directory",
        Node::File { .. } => "file",
        Node::Symlink { .. } => "symlink",
        Node::CharDevice { .. } => "device",
    }
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Adds `node` at `path` (parents created with mode 0755). A file,
    /// symlink or device replaces an earlier one at the same path; a
    /// directory added twice keeps the later mode.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), TreeError> {
        let path = clean(path)?;
        let mut parent = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                None => {
                    self.entries
                        .insert(parent.clone(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(other) => {
                    return Err(TreeError::ParentNotDir {
                        path,
                        parent,
                        kind: kind(other),
                    });
                }
            }
        }
        let new_is_dir = matches!(node, Node::Dir { .. });
        if let Some(old) = self.entries.get(&path) {
            let old_is_dir = matches!(old, Node::Dir { .. });
            if old_is_dir != new_is_dir {
                return Err(TreeError::Conflict {
                    path,
                    old: kind(old),
                    new: kind(&node),
                });
            }
        }
        self.entries.insert(path, node);
        Ok(())
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), TreeError> {
        self.insert(path, Node::Dir { mode })
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<(), TreeError> {
        self.insert(path, Node::File { mode, data })
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), TreeError> {
        self.insert(
            path,
            Node::Symlink {
                target: target.to_string(),
            },
        )
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path.trim_start_matches('/'))
    }

    /// Every entry, sorted by path (parents first).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of file contents in the tree (before compression).
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Writes the tree as a newc archive into `out`, parents before
    /// children, every entry with modification time `mtime`.
    pub fn write_cpio<W: Write>(&self, out: W, mtime: u32) -> Result<W, CpioError> {
        let mut w = CpioWriter::new(out, mtime);
        for (path, node) in &self.entries {
            match node {
                Node::Dir { mode } => w.directory(path, *mode)?,
                Node::File { mode, data } => w.file(path, *mode, data)?,
                Node::Symlink { target } => w.symlink(path, target)?,
                Node::CharDevice { mode, major, minor } => {
                    w.device(path, false, *mode, *major, *minor)?
                }
            }
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_listed_first() {
        let mut t = Tree::new();
        t.file("usr/lib/x/libc.so.6", 0o755, b"elf".to_vec())
            .unwrap();
        t.symlink("bin/sh", "busybox").unwrap();
        t.file("bin-extra", 0o644, vec![]).unwrap();
        let paths: Vec<&str> = t.iter().map(|(p, _)| p).collect();
        for (i, p) in paths.iter().enumerate() {
            if let Some((parent, _)) = p.rsplit_once('/') {
                let at = paths.iter().position(|q| *q == parent).expect(parent);
                assert!(at < i, "{parent} before {p}");
            }
        }
        assert_eq!(t.get("/usr/lib"), Some(&Node::Dir { mode: 0o755 }));
        assert_eq!(t.content_bytes(), 3);
    }

    #[test]
    fn conflicts_are_refused() {
        let mut t = Tree::new();
        t.symlink("lib64", "lib").unwrap();
        assert!(matches!(
            t.file("lib64/ld.so", 0o755, vec![]),
            Err(TreeError::ParentNotDir { .. })
        ));
        t.file("etc/hosts", 0o644, vec![]).unwrap();
        assert!(matches!(
            t.dir("etc/hosts", 0o755),
            Err(TreeError::Conflict { .. })
        ));
        // A file replaces a file; a directory's mode can be changed.
        t.file("etc/hosts", 0o600, b"x".to_vec()).unwrap();
        t.dir("etc", 0o700).unwrap();
        assert_eq!(t.get("etc"), Some(&Node::Dir { mode: 0o700 }));
        assert!(t.file("../x", 0o644, vec![]).is_err());
    }
}
