//! What a registry answers, read without IO: image indexes (one manifest per
//! platform), image manifests (a config and layers), image configs (the
//! command, environment and platform), and digests. OCI's media types and
//! Docker's schema 2 equivalents are both accepted; schema 1 is not (no
//! registry has served it by default since 2019).

use std::fmt;

use serde::Deserialize;

/// Longest manifest or config accepted: real ones are a few KiB.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// Media types of an image index (a manifest per platform).
pub const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Media types of an image manifest.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The `Accept` header for a manifest request: every type above.
pub fn accept_header() -> String {
    INDEX_TYPES
        .iter()
        .chain(MANIFEST_TYPES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a document from the registry is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("the registry's {what} is not valid: {message}")]
    Invalid {
        /// Manifest, index or config.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A media type this runtime does not read.
    #[error("unsupported {what} media type {media_type:?}")]
    Unsupported {
        /// Manifest or layer.
        what: &'static str,
        /// The type.
        media_type: String,
    },
    /// A digest that is not `sha256:` and 64 lower-case hex digits.
    #[error("digest {0:?} is not sha256:<64 hex digits>")]
    Digest(String),
    /// The index has no manifest for this machine.
    #[error("the image has no {wanted} variant (it has: {available})")]
    NoPlatform {
        /// This machine's platform.
        wanted: String,
        /// What the index lists.
        available: String,
    },
    /// The image was built for another machine.
    #[error("the image is built for {found}, not this machine's {wanted}")]
    WrongPlatform {
        /// This machine's platform.
        wanted: String,
        /// The config's.
        found: String,
    },
}

fn invalid(what: &'static str) -> impl Fn(serde_json::Error) -> ManifestError {
    move |e| ManifestError::Invalid {
        what,
        message: e.to_string(),
    }
}

/// A content digest; only SHA-256, the one every registry uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Reads `sha256:<64 lower-case hex>`.
    pub fn parse(text: &str) -> Result<Digest, ManifestError> {
        let hex = text
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or_else(|| ManifestError::Digest(text.chars().take(100).collect()))?;
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_hash(&sha2::Sha256::digest(bytes)[..])
    }

    /// The digest a finished SHA-256 hash stands for.
    pub fn from_hash(hash: &[u8]) -> Digest {
        Digest {
            hex: hash.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// The hex part, a safe file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// An operating system and CPU, as registries name them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, …
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `v8` for arm64, `v7` for arm; empty when none is given.
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this program was built for, in registry names.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: None,
        }
    }

    /// Whether an image for `other` runs here: same OS and CPU (a variant
    /// is only compared when both name one).
    pub fn runs(&self, other: &Platform) -> bool {
        let variant_fits = match (&self.variant, &other.variant) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.os == other.os && self.architecture == other.architecture && variant_fits
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = if self.os.is_empty() { "?" } else { &self.os };
        let arch = if self.architecture.is_empty() {
            "?"
        } else {
            &self.architecture
        };
        write!(f, "{os}/{arch}")?;
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A reference to a blob or manifest, with its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// What it is.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes, as the manifest claims (checked on download).
    pub size: u64,
    /// In an index: the platform of the manifest it names.
    pub platform: Option<Platform>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

impl RawDescriptor {
    fn typed(self) -> Result<Descriptor, ManifestError> {
        Ok(Descriptor {
            media_type: self.media_type,
            digest: Digest::parse(&self.digest)?,
            size: self.size,
            platform: self.platform,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
}

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCodec {
    /// A plain tar.
    Tar,
    /// tar + gzip.
    Gzip,
    /// tar + zstd.
    Zstd,
}

impl LayerCodec {
    /// The codec of a layer media type; `None` for non-layers (foreign
    /// layers, encrypted ones, artefacts).
    pub fn of(media_type: &str) -> Option<LayerCodec> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(LayerCodec::Tar),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
                Some(LayerCodec::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd" => Some(LayerCodec::Zstd),
            _ => None,
        }
    }
}

/// An image manifest: its config and its layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    /// The config blob.
    pub config: Descriptor,
    /// The layers with their codecs; `None` for a blob that is no layer
    /// tar (an artefact's file, as `oras push` stores a disk image).
    pub layers: Vec<(Descriptor, Option<LayerCodec>)>,
}

impl ImageManifest {
    /// The layers as a container image must have them: each a layer tar.
    pub fn container_layers(&self) -> Result<Vec<(Descriptor, LayerCodec)>, ManifestError> {
        self.layers
            .iter()
            .map(|(d, codec)| {
                codec
                    .map(|c| (d.clone(), c))
                    .ok_or_else(|| ManifestError::Unsupported {
                        what: "layer",
                        media_type: d.media_type.clone(),
                    })
            })
            .collect()
    }
}

/// What a manifest request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// A manifest per platform: pick one with [`choose`] and fetch it.
    Index(Vec<Descriptor>),
    /// The image itself.
    Manifest(ImageManifest),
}

/// Reads a manifest or index; `content_type` is the response's header,
/// used when the body does not say its own media type.
pub fn parse_document(content_type: Option<&str>, body: &[u8]) -> Result<Document, ManifestError> {
    let raw: RawDocument = serde_json::from_slice(body).map_err(invalid("manifest"))?;
    let header = content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string());
    let media_type = raw.media_type.clone().or(header).unwrap_or_default();
    let is_index = INDEX_TYPES.contains(&media_type.as_str())
        || (media_type.is_empty() && raw.manifests.is_some());
    if is_index {
        let manifests = raw.manifests.unwrap_or_default();
        return manifests
            .into_iter()
            .map(RawDescriptor::typed)
            .collect::<Result<Vec<_>, _>>()
            .map(Document::Index);
    }
    if !media_type.is_empty() && !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(ManifestError::Unsupported {
            what: "manifest",
            media_type,
        });
    }
    let config = raw
        .config
        .ok_or_else(|| ManifestError::Invalid {
            what: "manifest",
            message: "it names no config".to_string(),
        })?
        .typed()?;
    let mut layers = Vec::new();
    for layer in raw.layers.unwrap_or_default() {
        let layer = layer.typed()?;
        let codec = LayerCodec::of(&layer.media_type);
        layers.push((layer, codec));
    }
    Ok(Document::Manifest(ImageManifest { config, layers }))
}

/// The index entry for `wanted`, or an error listing what the index has.
pub fn choose<'a>(
    manifests: &'a [Descriptor],
    wanted: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| wanted.runs(p)))
        .ok_or_else(|| ManifestError::NoPlatform {
            wanted: wanted.to_string(),
            available: {
                let names: Vec<String> = manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref())
                    // Attestation manifests carry "unknown/unknown".
                    .filter(|p| p.os != "unknown")
                    .map(Platform::to_string)
                    .collect();
                if names.is_empty() {
                    "no platform".to_string()
                } else {
                    names.join(", ")
                }
            },
        })
}

/// What an image's config says about running it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    /// Its platform.
    pub platform: Platform,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// The entrypoint.
    pub entrypoint: Vec<String>,
    /// The default command (arguments to the entrypoint).
    pub cmd: Vec<String>,
    /// The working directory; empty for `/`.
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty for root.
    pub user: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<RawRunConfig>,
}

/// Reads an image config blob.
pub fn parse_config(body: &[u8]) -> Result<ImageConfig, ManifestError> {
    let raw: RawConfig = serde_json::from_slice(body).map_err(invalid("image config"))?;
    let run = raw.config.unwrap_or_default();
    Ok(ImageConfig {
        platform: Platform {
            architecture: raw.architecture,
            os: raw.os,
            variant: raw.variant,
        },
        env: run.env.unwrap_or_default(),
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        working_dir: run.working_dir.unwrap_or_default(),
        user: run.user.unwrap_or_default(),
    })
}

/// Checks that an image for `found` runs on `wanted`.
pub fn check_platform(wanted: &Platform, found: &Platform) -> Result<(), ManifestError> {
    // Some old images leave the config's platform out; let those run.
    if found.architecture.is_empty() && found.os.is_empty() {
        return Ok(());
    }
    if wanted.runs(found) {
        Ok(())
    } else {
        Err(ManifestError::WrongPlatform {
            wanted: wanted.to_string(),
            found: found.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn amd64() -> Platform {
        Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        }
    }

    #[test]
    fn digests_are_sha256_hex_only() {
        assert_eq!(Digest::parse(D1).unwrap().to_string(), D1);
        for bad in [
            "sha256:abc",
            "sha512:1111111111111111111111111111111111111111111111111111111111111111",
            "sha256:../11111111111111111111111111111111111111111111111111111111111111",
            "sha256:1111111111111111111111111111111111111111111111111111111111111ABC",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn an_index_picks_this_platform_or_lists_the_others() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":10,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D2}","size":10,"platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":10,"platform":{{"architecture":"unknown","os":"unknown"}}}}]}}"#
        );
        let Document::Index(list) = parse_document(None, body.as_bytes()).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(choose(&list, &amd64()).unwrap().digest.to_string(), D2);
        let riscv = Platform {
            architecture: "riscv64".into(),
            ..amd64()
        };
        let e = choose(&list, &riscv).unwrap_err().to_string();
        assert_eq!(
            e,
            "the image has no linux/riscv64 variant (it has: linux/arm64/v8, linux/amd64)"
        );
    }

    #[test]
    fn a_manifest_reads_its_layers_and_refuses_unknown_ones() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":5}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":7}},
                      {{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{D2}","size":7}}]}}"#
        );
        let Document::Manifest(m) = parse_document(None, body.as_bytes()).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.config.size, 5);
        assert_eq!(m.layers[0].1, Some(LayerCodec::Gzip));
        assert_eq!(m.container_layers().unwrap()[1].1, LayerCodec::Zstd);

        // An artefact's file is kept (oci2disk writes it); as a container
        // layer it is refused by name.
        let odd = body.replace(
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar+encrypted",
        );
        let Document::Manifest(m) = parse_document(None, odd.as_bytes()).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.layers[1].1, None);
        let e = m.container_layers().unwrap_err().to_string();
        assert!(e.contains("tar+encrypted"), "{e}");
        let e = parse_document(None, b"{\"schemaVersion\":1,\"fsLayers\":[]}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no config"), "{e}");
        let e = parse_document(None, b"[1,2").unwrap_err().to_string();
        assert!(e.contains("manifest is not valid"), "{e}");
    }

    #[test]
    fn a_config_gives_the_command_and_platform() {
        let c = parse_config(
            br#"{"architecture":"arm64","os":"linux","config":{"Env":["PATH=/bin"],"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"WorkingDir":"/w","User":"1000:1000"}}"#,
        )
        .unwrap();
        assert_eq!(c.entrypoint, ["/bin/sh", "-c"]);
        assert_eq!(c.cmd, ["echo hi"]);
        assert_eq!(c.user, "1000:1000");
        let e = check_platform(&amd64(), &c.platform)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the image is built for linux/arm64, not this machine's linux/amd64"
        );
        let bare = parse_config(b"{}").unwrap();
        assert!(check_platform(&amd64(), &bare.platform).is_ok());
    }
}
