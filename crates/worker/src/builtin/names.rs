//! Which image names run as built-in actions (the mapping is described in
//! the [`crate::builtin`] module documentation).

use std::fmt;

/// A built-in action: what an image name maps to when the machine has no
/// container engine, or when running the action as Rust code is preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// Stream a (possibly compressed) raw disk image onto a disk.
    Image2Disk,
    /// Write one file, on a partition's filesystem or the worker's own.
    WriteFile,
    /// Ask the worker to reboot (or power off) once the server has the report.
    Reboot,
    /// Load the provisioned OS's kernel; the worker kexecs into it once the
    /// server has the report.
    Kexec,
    /// Run commands inside the provisioned OS (chroot).
    Cexec,
    /// Unpack a tar archive onto a partition's filesystem.
    Archive2Disk,
    /// Stream a disk image stored in an OCI registry onto a disk.
    Oci2Disk,
    /// Convert a qcow2 image from HTTP(S) to raw onto a disk.
    QemuImg2Disk,
    /// Partition, format or mount disks from the storage layout.
    RootIo,
}

impl Builtin {
    /// Every built-in, for listing in messages and docs.
    pub const ALL: [Builtin; 9] = [
        Builtin::Image2Disk,
        Builtin::WriteFile,
        Builtin::Reboot,
        Builtin::Kexec,
        Builtin::Cexec,
        Builtin::Archive2Disk,
        Builtin::Oci2Disk,
        Builtin::QemuImg2Disk,
        Builtin::RootIo,
    ];

    /// The last path component of the images that map to this built-in.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Image2Disk => "image2disk",
            Builtin::WriteFile => "writefile",
            Builtin::Reboot => "reboot",
            Builtin::Kexec => "kexec",
            Builtin::Cexec => "cexec",
            Builtin::Archive2Disk => "archive2disk",
            Builtin::Oci2Disk => "oci2disk",
            Builtin::QemuImg2Disk => "qemuimg2disk",
            Builtin::RootIo => "rootio",
        }
    }

    fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Repository prefixes whose `<prefix><name>` images are built-ins: ours
/// (`bellows/<name>`, also spelled with Docker Hub's host) and the
/// registries Tinkerbell publishes its actions to.
const PREFIXES: &[&str] = &[
    "bellows/",
    "docker.io/bellows/",
    "index.docker.io/bellows/",
    "quay.io/tinkerbell-actions/",
    "quay.io/tinkerbell/actions/",
    "ghcr.io/tinkerbell/actions/",
    "public.ecr.aws/tinkerbell/actions/",
];

/// The built-in that runs `image`, if any. Pure: looks only at the name.
///
/// Tags (`:v1.0.0`) and digests (`@sha256:…`) are ignored, and so is case
/// (registry hosts are case-insensitive, and a repository path in capitals
/// is no valid image anyway). A bare `image2disk` is *not* a built-in: it
/// names `docker.io/library/image2disk`, somebody else's image.
pub fn builtin_for(image: &str) -> Option<Builtin> {
    let image = image.trim().to_ascii_lowercase();
    let repository = repository(&image)?;
    PREFIXES
        .iter()
        .find_map(|prefix| repository.strip_prefix(prefix))
        .and_then(Builtin::from_name)
}

/// `image` without its tag and digest; `None` when either is present but
/// empty (`name:` or `name@`), which is no valid reference.
fn repository(image: &str) -> Option<&str> {
    let name = match image.split_once('@') {
        Some((name, digest)) if !digest.is_empty() => name,
        Some(_) => return None,
        None => image,
    };
    // A ':' after the last '/' starts a tag; one before it is a registry port.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].find(':') {
        Some(colon) if colon + 1 == name.len() - last_slash => None,
        Some(colon) => Some(&name[..last_slash + colon]),
        None => Some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_images_with_any_tag() {
        assert_eq!(builtin_for("bellows/image2disk"), Some(Builtin::Image2Disk));
        assert_eq!(
            builtin_for("bellows/image2disk:latest"),
            Some(Builtin::Image2Disk)
        );
        assert_eq!(
            builtin_for("bellows/writefile:v1.2.3"),
            Some(Builtin::WriteFile)
        );
        assert_eq!(builtin_for("bellows/reboot:1"), Some(Builtin::Reboot));
        assert_eq!(builtin_for("bellows/kexec"), Some(Builtin::Kexec));
        assert_eq!(builtin_for("bellows/kexec:v2"), Some(Builtin::Kexec));
        assert_eq!(
            builtin_for("docker.io/bellows/reboot"),
            Some(Builtin::Reboot)
        );
    }

    #[test]
    fn tinkerbell_registries() {
        for prefix in [
            "quay.io/tinkerbell-actions/",
            "quay.io/tinkerbell/actions/",
            "ghcr.io/tinkerbell/actions/",
            "public.ecr.aws/tinkerbell/actions/",
        ] {
            for builtin in Builtin::ALL {
                let image = format!("{prefix}{}:v1.0.0", builtin.name());
                assert_eq!(builtin_for(&image), Some(builtin), "{image}");
            }
        }
    }

    #[test]
    fn tinkerbell_kexec_images() {
        // As the Tinkerbell documentation spells them.
        for image in [
            "quay.io/tinkerbell/actions/kexec:latest",
            "quay.io/tinkerbell-actions/kexec:v1.0.0",
            "ghcr.io/tinkerbell/actions/kexec:v1.0.0",
            "public.ecr.aws/tinkerbell/actions/kexec:latest",
        ] {
            assert_eq!(builtin_for(image), Some(Builtin::Kexec), "{image}");
        }
        assert_eq!(Builtin::Kexec.to_string(), "kexec");
    }

    #[test]
    fn digests_with_and_without_tags() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            builtin_for(&format!("quay.io/tinkerbell/actions/image2disk@{digest}")),
            Some(Builtin::Image2Disk)
        );
        assert_eq!(
            builtin_for(&format!("ghcr.io/tinkerbell/actions/writefile:v1@{digest}")),
            Some(Builtin::WriteFile)
        );
        assert_eq!(builtin_for("bellows/image2disk@"), None);
        assert_eq!(builtin_for("bellows/image2disk:"), None);
    }

    #[test]
    fn case_and_whitespace_are_ignored() {
        assert_eq!(
            builtin_for("QUAY.IO/Tinkerbell/Actions/Image2Disk:LATEST"),
            Some(Builtin::Image2Disk)
        );
        assert_eq!(builtin_for("  bellows/REBOOT \n"), Some(Builtin::Reboot));
        assert_eq!(
            builtin_for("quay.io/tinkerbell/actions/oci2disk:latest"),
            Some(Builtin::Oci2Disk)
        );
    }

    #[test]
    fn other_images_are_not_builtins() {
        for image in [
            "",
            "image2disk",
            "image2disk:latest",
            "library/image2disk",
            "docker.io/library/reboot",
            "quay.io/tinkerbell/actions/grub2disk:latest",
            "cexec",
            "kexec",
            "docker.io/library/kexec",
            "quay.io/tinkerbell/kexec",
            "quay.io/tinkerbell/actions/kexec-extra",
            "quay.io/tinkerbell/actions/image2disk-extra",
            "quay.io/tinkerbell/actions/sub/image2disk",
            "quay.io/tinkerbell/image2disk",
            "quay.io/someone/actions/image2disk",
            "ghcr.io/tinkerbell/image2disk",
            "registry.local:5000/tinkerbell/actions/image2disk",
            "registry.local:5000/bellows/image2disk",
            "xbellows/image2disk",
            "bellows/image2disk/extra",
            "hello-world",
        ] {
            assert_eq!(builtin_for(image), None, "{image:?}");
        }
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        assert_eq!(repository("host:5000/a/b"), Some("host:5000/a/b"));
        assert_eq!(repository("host:5000/a/b:tag"), Some("host:5000/a/b"));
        assert_eq!(repository("a/b:tag@sha256:00"), Some("a/b"));
    }
}
