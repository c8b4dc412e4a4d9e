//! Image references as workflow templates write them ("alpine",
//! "quay.io/tinkerbell/actions/image2disk:v1.0.0", "localhost:5000/x@sha256:..."),
//! taken apart just enough to add the default tag, send a Docker Hub image
//! to a mirror, and find the registry whose credentials apply.

/// The registry host Docker Hub references resolve to.
pub(crate) const DOCKER_HUB: &str = "docker.io";

/// Where Docker Hub's registry API answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Host names that all mean Docker Hub.
const DOCKER_HUB_ALIASES: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// Registry host (and port), when the reference names one.
    registry: Option<String>,
    /// Repository path within the registry ("library/alpine", "tinkerbell/actions/x").
    path: String,
    /// Tag, when given.
    tag: Option<String>,
    /// Digest ("sha256:..."), when given.
    digest: Option<String>,
}

impl ImageRef {
    /// Parses `reference`; `None` when it is empty or has an empty part.
    pub(crate) fn parse(reference: &str) -> Option<ImageRef> {
        let reference = reference.trim();
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_string())),
            None => (reference, None),
        };
        // A tag is the part after the last ':' when no '/' follows it (a ':'
        // before a '/' is a registry port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first.to_string()), path.to_string())
            }
            _ => (None, name.to_string()),
        };
        let empty = |part: &Option<String>| part.as_deref().is_some_and(str::is_empty);
        if path.is_empty() || path.split('/').any(str::is_empty) || empty(&tag) || empty(&digest) {
            return None;
        }
        if registry.as_deref().is_some_and(str::is_empty) {
            return None;
        }
        Some(ImageRef {
            registry,
            path,
            tag,
            digest,
        })
    }

    /// Whether the image lives on Docker Hub (no registry, or a Hub alias).
    pub(crate) fn is_docker_hub(&self) -> bool {
        match &self.registry {
            None => true,
            Some(host) => is_docker_hub_host(host),
        }
    }

    /// The registry host credentials are looked up by ("docker.io" for Hub).
    pub(crate) fn registry_host(&self) -> String {
        match &self.registry {
            Some(host) if !is_docker_hub_host(host) => host.clone(),
            _ => DOCKER_HUB.to_string(),
        }
    }

    /// The same image on `mirror` ("mirror.local:5000" or with a path prefix
    /// "mirror.local:5000/hub"), when it is a Docker Hub image; other
    /// registries' images are returned unchanged.
    pub(crate) fn mirrored(&self, mirror: &str) -> ImageRef {
        let mirror = mirror_prefix(mirror);
        if !self.is_docker_hub() || mirror.is_empty() {
            return self.clone();
        }
        // Official images live under "library/" on Hub; a mirror serves them
        // by that full path.
        let path = if self.path.contains('/') {
            self.path.clone()
        } else {
            format!("library/{}", self.path)
        };
        let (registry, prefix) = match mirror.split_once('/') {
            Some((host, prefix)) => (host.to_string(), format!("{prefix}/")),
            None => (mirror.to_string(), String::new()),
        };
        ImageRef {
            registry: Some(registry),
            path: format!("{prefix}{path}"),
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        }
    }

    /// Repository name without tag or digest, as the engine's pull takes it.
    pub(crate) fn name(&self) -> String {
        match &self.registry {
            Some(host) => format!("{host}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// The tag or digest to pull: the digest when given, else the tag, else
    /// "latest" (an empty tag would make the engine pull every tag).
    pub(crate) fn tag_or_digest(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".to_string())
    }

    /// The repository path the registry's API names: Docker Hub's official
    /// images live under `library/` ("alpine" is `library/alpine`).
    pub(crate) fn repository(&self) -> String {
        if self.is_docker_hub() && !self.path.contains('/') {
            format!("library/{}", self.path)
        } else {
            self.path.clone()
        }
    }

    /// Where the registry's API answers: Docker Hub's is
    /// `registry-1.docker.io`, whatever name the reference used.
    pub(crate) fn api_host(&self) -> String {
        if self.is_docker_hub() {
            DOCKER_HUB_API.to_string()
        } else {
            self.registry_host()
        }
    }

    /// The digest the reference pins, if any.
    pub(crate) fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The full reference with the default tag made explicit.
    pub(crate) fn full(&self) -> String {
        let mut out = self.name();
        match (&self.tag, &self.digest) {
            (Some(tag), _) => {
                out.push(':');
                out.push_str(tag);
            }
            (None, None) => out.push_str(":latest"),
            (None, Some(_)) => {}
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }
}

/// Whether `host` is one of Docker Hub's names.
fn is_docker_hub_host(host: &str) -> bool {
    DOCKER_HUB_ALIASES
        .iter()
        .any(|alias| host.eq_ignore_ascii_case(alias))
}

/// A mirror setting without scheme or trailing slashes.
fn mirror_prefix(mirror: &str) -> &str {
    let mirror = mirror.trim();
    let mirror = mirror
        .strip_prefix("https://")
        .or_else(|| mirror.strip_prefix("http://"))
        .unwrap_or(mirror);
    mirror.trim_end_matches('/')
}

/// The registry host a credentials key names: "quay.io", "https://quay.io/v2/"
/// and "index.docker.io" all work; Docker Hub's names become "docker.io".
pub(crate) fn registry_key(key: &str) -> String {
    let key = mirror_prefix(key);
    let host = key.split('/').next().unwrap_or(key);
    if is_docker_hub_host(host) {
        DOCKER_HUB.to_string()
    } else {
        host.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ImageRef {
        match ImageRef::parse(s) {
            Some(r) => r,
            None => panic!("{s} did not parse"),
        }
    }

    #[test]
    fn parses_the_usual_forms() {
        let r = parse("alpine");
        assert_eq!(r.full(), "alpine:latest");
        assert_eq!(
            (r.name(), r.tag_or_digest()),
            ("alpine".into(), "latest".into())
        );
        assert!(r.is_docker_hub());
        assert_eq!(r.registry_host(), "docker.io");

        let r = parse("quay.io/tinkerbell/actions/image2disk:v1.0.0");
        assert_eq!(r.name(), "quay.io/tinkerbell/actions/image2disk");
        assert_eq!(r.tag_or_digest(), "v1.0.0");
        assert!(!r.is_docker_hub());
        assert_eq!(r.registry_host(), "quay.io");

        let r = parse("localhost:5000/x/y");
        assert_eq!(r.full(), "localhost:5000/x/y:latest");
        assert_eq!(r.registry_host(), "localhost:5000");

        let r = parse("10.0.0.1:5000/img@sha256:abc");
        assert_eq!(r.full(), "10.0.0.1:5000/img@sha256:abc");
        assert_eq!(r.tag_or_digest(), "sha256:abc");

        let r = parse("docker.io/library/busybox:1.36");
        assert!(r.is_docker_hub());
        assert_eq!(r.full(), "docker.io/library/busybox:1.36");

        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.api_host(), "registry-1.docker.io");

        let r = parse("bellows-test/busybox:latest");
        assert_eq!(r.repository(), "bellows-test/busybox");
        assert!(r.is_docker_hub());
        assert_eq!(r.full(), "bellows-test/busybox:latest");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", " ", "alpine:", "x@", "/x", "quay.io/", "a//b"] {
            assert!(ImageRef::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn mirrors_only_docker_hub() {
        let m = "mirror.local:5000";
        assert_eq!(
            parse("alpine:3.19").mirrored(m).full(),
            "mirror.local:5000/library/alpine:3.19"
        );
        assert_eq!(
            parse("docker.io/tinkerbell/actions:1")
                .mirrored("https://mirror.local:5000/")
                .full(),
            "mirror.local:5000/tinkerbell/actions:1"
        );
        assert_eq!(
            parse("index.docker.io/library/ubuntu")
                .mirrored("mirror.local/hub")
                .full(),
            "mirror.local/hub/library/ubuntu:latest"
        );
        assert_eq!(
            parse("quay.io/a/b:1").mirrored(m).full(),
            "quay.io/a/b:1",
            "other registries are not mirrored"
        );
        assert_eq!(parse("alpine").mirrored(m).registry_host(), m);
    }

    #[test]
    fn credential_keys_normalise() {
        assert_eq!(registry_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_key("Quay.io"), "quay.io");
        assert_eq!(registry_key("http://mirror:5000/"), "mirror:5000");
    }
}
