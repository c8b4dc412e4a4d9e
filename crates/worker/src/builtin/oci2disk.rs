//! `oci2disk`: stream a disk image stored in an OCI registry onto a disk.
//!
//! Environment, as Tinkerbell's `oci2disk` action reads it:
//!
//! - `IMG_URL`: an image reference, `registry[:port]/repository:tag` (or
//!   `@sha256:…`): an artefact whose first layer is the disk image file, as
//!   `oras push REF ./disk.raw.gz` stores it.
//! - `DEST_DISK`: the block device (or a regular file) to write.
//! - `COMPRESSED`: Go's booleans; gzip, xz and zstd are recognised by their
//!   first bytes whatever it says (as [`super::image2disk`] does).
//!
//! The registry is reached as the container runtime reaches it (the
//! worker's and the server's registry logins, plain HTTP for
//! `--insecure-registry` hosts and loopback), the blob's digest is checked
//! as it streams, and everything after the download — decompression, the
//! bounded queue, fsync, `BLKRRPART`, progress — is `image2disk`'s, with
//! `CHECKSUM=sha256:<hex>` of the decompressed image as there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::image2disk::{self, Image2DiskError, Source, parse_checksum, parse_go_bool};
use crate::oci::manifest::Platform;
use crate::oci::registry::RegistryClient;
use crate::reference::ImageRef;
use crate::runtime::{RunContext, RunResult};

/// The action's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The image reference.
    pub image: String,
    /// Where it goes.
    pub dest: PathBuf,
    /// `COMPRESSED`.
    pub compressed: bool,
    /// Expected SHA-256 of the decompressed image.
    pub sha256: Option<String>,
}

impl Params {
    /// Reads and checks the environment.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Params, String> {
        let get = |key: &str| env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let image = get("IMG_URL").ok_or("IMG_URL is not set")?;
        if ImageRef::parse(image).is_none() || image.contains("://") {
            return Err(format!(
                "IMG_URL {image:?} is not an image reference (registry/repository:tag)"
            ));
        }
        let dest = PathBuf::from(get("DEST_DISK").ok_or("DEST_DISK is not set")?);
        Ok(Params {
            image: image.to_string(),
            dest,
            compressed: get("COMPRESSED").and_then(parse_go_bool).unwrap_or(false),
            sha256: parse_checksum(get("CHECKSUM"), get("IMG_SHA256"))?,
        })
    }
}

/// Runs the action.
pub(crate) async fn run(
    registry: Result<&RegistryClient, String>,
    env: &BTreeMap<String, String>,
    ctx: &RunContext,
) -> RunResult {
    let result = match (Params::from_env(env), registry) {
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(params), Ok(registry)) => write(registry, &params, ctx).await,
    };
    match result {
        Ok(message) => {
            ctx.logs.note(format!("oci2disk: {message}"));
            RunResult::success(message)
        }
        Err(message) if ctx.cancel.is_cancelled() => {
            ctx.logs.note(format!("oci2disk cancelled: {message}"));
            super::cancelled(message)
        }
        Err(message) => {
            ctx.logs.note(format!("oci2disk failed: {message}"));
            RunResult::failed(message)
        }
    }
}

async fn write(
    registry: &RegistryClient,
    params: &Params,
    ctx: &RunContext,
) -> Result<String, String> {
    let image = ImageRef::parse(&params.image)
        .ok_or_else(|| format!("IMG_URL {:?} is not an image reference", params.image))?;
    ctx.logs.note(format!(
        "oci2disk: writing {} to {}",
        image.full(),
        params.dest.display()
    ));
    let platform = Platform::host();
    let resolved = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => return Err("cancelled before the image was found".into()),
        r = registry.resolve(&image, &platform) => r.map_err(|e| e.to_string())?,
    };
    let Some((layer, _)) = resolved.manifest.layers.first() else {
        return Err(format!("image {} has no layers", image.full()));
    };
    if resolved.manifest.layers.len() > 1 {
        ctx.logs.note(format!(
            "the image has {} layers; writing the first ({})",
            resolved.manifest.layers.len(),
            layer.digest
        ));
    }
    let dest = image2disk::open(&params.dest)
        .await
        .map_err(|e| e.to_string())?;
    let response = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => return Err("cancelled before the download".into()),
        r = registry.blob_response(&image, layer) => r.map_err(|e| e.to_string())?,
    };
    let source = Source {
        name: format!("{}@{}", image.full(), layer.digest),
        extension: None,
        compressed: params.compressed,
        sha256: params.sha256.clone(),
        download_sha256: Some(layer.digest.hex().to_string()),
    };
    image2disk::write_stream(response, source, dest, &params.dest, ctx)
        .await
        .map_err(|e| match e {
            Image2DiskError::Cancelled { bytes } => {
                format!("cancelled after writing {}", image2disk::human(bytes))
            }
            other => other.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::test_env;

    #[test]
    fn settings_as_tinkerbell_spells_them() {
        let p = Params::from_env(&test_env(&[
            ("IMG_URL", "10.0.0.1:5000/disks/debian:raw.gz"),
            ("DEST_DISK", "/dev/sda"),
            ("COMPRESSED", "true"),
        ]))
        .unwrap();
        assert_eq!(p.image, "10.0.0.1:5000/disks/debian:raw.gz");
        assert!(p.compressed);
        for (env, wanted) in [
            (vec![("DEST_DISK", "/dev/sda")], "IMG_URL is not set"),
            (
                vec![("IMG_URL", "http://x/disk.raw"), ("DEST_DISK", "/dev/sda")],
                "is not an image reference",
            ),
            (vec![("IMG_URL", "x/y:1")], "DEST_DISK is not set"),
        ] {
            let e = Params::from_env(&test_env(&env)).unwrap_err();
            assert!(e.contains(wanted), "{e}");
        }
    }
}
