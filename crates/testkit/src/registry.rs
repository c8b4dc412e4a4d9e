//! A real container registry for tests: Debian's `docker-registry`
//! (CNCF distribution), started on an address the test picks (loopback, or
//! inside a lab namespace), optionally behind htpasswd credentials, and
//! images pushed to it over its own HTTP API with curl. The images are
//! built here from files on this machine (a static busybox), never
//! downloaded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::Digest as _;

use crate::packages::ensure_installed;
use crate::process::{ChildGuard, run_checked, wait_for};

/// A running registry.
pub struct TestRegistry {
    /// `host:port` it listens on.
    pub addr: String,
    credentials: Option<(String, String)>,
    netns: Option<String>,
    _dir: tempfile::TempDir,
    _child: ChildGuard,
}

/// One image to push: its layers (gzip-compressed tars) and config.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// Layers, bottom first, each a `.tar.gz`.
    pub layers: Vec<Vec<u8>>,
    /// `amd64`, `arm64`…
    pub architecture: String,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Default command.
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
}

fn sha256(bytes: &[u8]) -> String {
    let hash = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The programs the registry tests need, installed if missing.
pub fn ensure_tools() {
    ensure_installed("docker-registry", "docker-registry");
    ensure_installed("htpasswd", "apache2-utils");
    ensure_installed("curl", "curl");
}

impl TestRegistry {
    /// Starts a registry on `addr` (`127.0.0.1:PORT`, or an address in
    /// `netns`), requiring `credentials` when given.
    pub fn start(
        addr: &str,
        netns: Option<&str>,
        credentials: Option<(&str, &str)>,
    ) -> TestRegistry {
        ensure_tools();
        let dir = tempfile::tempdir().expect("registry directory");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = credentials {
            let line = run_checked(
                Command::new("htpasswd").args(["-Bbn", user, password]),
                "htpasswd",
            );
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, line.trim()).expect("htpasswd file");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: bellows-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = dir.path().join("registry.log");
        let config_arg = config_path.to_string_lossy().into_owned();
        let child = match netns {
            Some(ns) => ChildGuard::spawn_in(ns, &["docker-registry", "serve", &config_arg], &log),
            None => {
                let out = std::fs::File::create(&log).expect("registry log");
                let err = out.try_clone().expect("registry log");
                ChildGuard::spawn(
                    "docker-registry",
                    Command::new("docker-registry")
                        .args(["serve", &config_arg])
                        .stdout(out)
                        .stderr(err),
                )
            }
        };
        let registry = TestRegistry {
            addr: addr.to_string(),
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            netns: netns.map(str::to_string),
            _dir: dir,
            _child: child,
        };
        let up = wait_for(Duration::from_secs(20), || {
            registry
                .curl(&[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &registry.url("/v2/"),
                ])
                .is_some_and(|code| code == "200" || code == "401")
        });
        assert!(
            up,
            "docker-registry did not answer on {addr}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        registry
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Runs curl (in the namespace, with the credentials); stdout if it
    /// exited 0.
    fn curl(&self, args: &[&str]) -> Option<String> {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "curl"]);
                c
            }
            None => Command::new("curl"),
        };
        command.args(["--max-time", "60"]);
        if let Some((user, password)) = &self.credentials {
            command.args(["-u", &format!("{user}:{password}")]);
        }
        let out = command.args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Uploads one blob; returns its digest.
    pub fn push_blob(&self, repository: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let headers = self
            .curl(&[
                "-s",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-X",
                "POST",
                &self.url(&format!("/v2/{repository}/blobs/uploads/")),
            ])
            .expect("starting a blob upload");
        let location = headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("location")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no Location in the upload answer:\n{headers}"));
        let location = if location.starts_with('/') {
            self.url(&location)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let file = tempfile::NamedTempFile::new().expect("blob file");
        std::fs::write(file.path(), bytes).expect("blob file");
        let code = self
            .curl(&[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &format!("@{}", file.path().display()),
                &format!("{location}{sep}digest={digest}"),
            ])
            .expect("uploading a blob");
        assert_eq!(code, "201", "blob upload of {digest} answered {code}");
        digest
    }

    /// Uploads a manifest (or index) of `media_type` under `reference`;
    /// returns its digest.
    pub fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let file = tempfile::NamedTempFile::new().expect("manifest file");
        std::fs::write(file.path(), body).expect("manifest file");
        let code = self
            .curl(&[
                "-s",
                "-o",
                "/dev/stderr",
                "-w",
                "%{http_code}",
                "-X",
                "PUT",
                "-H",
                &format!("Content-Type: {media_type}"),
                "--data-binary",
                &format!("@{}", file.path().display()),
                &self.url(&format!("/v2/{repository}/manifests/{reference}")),
            ])
            .expect("uploading a manifest");
        assert_eq!(code, "201", "manifest upload answered {code}");
        sha256(body)
    }

    /// Pushes `image` as `repository:tag`; returns the manifest's digest
    /// and size.
    pub fn push(&self, repository: &str, tag: &str, image: &TestImage) -> (String, usize) {
        let mut diff_ids = Vec::new();
        let mut layers = Vec::new();
        for layer in &image.layers {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer[..]), &mut plain)
                .expect("a gzip layer");
            diff_ids.push(sha256(&plain));
            let digest = self.push_blob(repository, layer);
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": layer.len(),
            }));
        }
        let config = serde_json::json!({
            "architecture": image.architecture,
            "os": "linux",
            "config": {"Env": image.env, "Entrypoint": image.entrypoint, "Cmd": image.cmd},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = serde_json::to_vec(&config).expect("config JSON");
        let config_digest = self.push_blob(repository, &config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers,
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest JSON");
        let digest = self.push_manifest(
            repository,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        );
        (digest, manifest.len())
    }
}

impl TestRegistry {
    /// Pushes `file` as an artefact the way `oras push REF FILE` does: an
    /// empty config and the file itself as the one layer, of `media_type`.
    pub fn push_artifact(&self, repository: &str, tag: &str, file: &[u8], media_type: &str) {
        let config = b"{}";
        let config_digest = self.push_blob(repository, config);
        let layer_digest = self.push_blob(repository, file);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.unknown.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": media_type,
                "digest": layer_digest,
                "size": file.len(),
                "annotations": {"org.opencontainers.image.title": "disk.raw.gz"},
            }],
        });
        self.push_manifest(
            repository,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).expect("manifest JSON"),
        );
    }
}

/// A directory holding a static busybox as `/bin/busybox` with `applets`
/// linked to it: the root of a small test image.
pub fn busybox_rootfs(dir: &Path, applets: &[&str]) -> PathBuf {
    ensure_installed("busybox", "busybox-static");
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).expect("rootfs");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copying busybox");
    for applet in applets {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).expect("applet link");
        }
    }
    for d in ["etc", "tmp", "mnt", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).expect("rootfs directory");
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
    root
}

/// `dir`'s contents as a gzip-compressed tar (GNU tar, owned by root).
pub fn layer_of(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args([
            "-C",
            &dir.to_string_lossy(),
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-czf",
            "-",
            ".",
        ])
        .output()
        .expect("running tar");
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// crun, wrapped to run in a mount namespace with cgroup2 alone at
/// `/sys/fs/cgroup`, as the in-memory OS mounts it: a machine with cgroups
/// v1 and v2 side by side (this one) makes crun refuse to run. Written
/// into `dir`; returns the wrapper's path.
pub fn crun_for_tests(dir: &Path) -> PathBuf {
    let crun = ensure_installed("crun", "crun");
    let path = dir.join("crun");
    crate::files::write_executable(
        &path,
        &format!(
            "#!/bin/sh\nexec unshare -m sh -c 'umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup && exec \"$0\" \"$@\"' {crun} \"$@\"\n"
        ),
    );
    path
}
