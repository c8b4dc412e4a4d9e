//! Actions as containers without a container engine: the in-memory OS's
//! runtime. The worker pulls the image itself ([`registry`]: the registry
//! v2 API, digests checked), applies its layers onto a fresh root file
//! system per run ([`unpack`]), writes an OCI runtime bundle ([`bundle`])
//! and runs it with `crun` (Debian's `crun`, 0.5 MB), reading its output
//! line by line into the action's log. The semantics are those of
//! [`crate::docker`] (see [`crate::container`]): privileged, host network,
//! the action's environment and volumes, `/worker` and `/workflow`.
//!
//! Pulled blobs stay in `STATE_DIR/blobs/` and resolved images in memory,
//! so a workflow's actions that share an image download it once. Each
//! run's root file system is unpacked afresh and removed afterwards: an
//! action never sees what an earlier one changed in its image (as with
//! Docker), only `/worker` and the volumes.
//!
//! A run interrupted by a worker restart is not re-attached to (crun has
//! no daemon to keep its output): the next attempt of the same action
//! removes what is left and starts it again.

pub mod auth;
pub mod bundle;
pub mod manifest;
pub mod registry;
pub mod unpack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::container::PullPolicy;
use crate::container::exited;
use crate::lines::LineBuffer;
use crate::reference::ImageRef;
use crate::runtime::{
    ActionSpec, AfterSuccess, LogSink, RunContext, RunOutcome, RunResult, Runtime, Stream,
};
use bundle::{BundleInputs, HOST_FILES};
use manifest::Platform;
use registry::{PullError, RegistryClient, RegistryOptions, Resolved};
use unpack::{Limits, Usage};

/// Where `crun` is looked for when no path is given.
pub const DEFAULT_CRUN: &str = "crun";

/// How long a `crun` housekeeping command (kill, delete) may take.
const HOUSEKEEPING: Duration = Duration::from_secs(20);

/// How long output may keep arriving after the container exited.
const LOG_DRAIN: Duration = Duration::from_secs(3);

/// How the runtime pulls and runs images.
#[derive(Debug, Clone)]
pub struct OciOptions {
    /// The OCI runtime binary (`crun`, or a path).
    pub crun: PathBuf,
    /// Blobs, bundles and crun's state (tmpfs in the in-memory OS).
    pub state_dir: PathBuf,
    /// Registries: credentials and plain-HTTP ones.
    pub registry: RegistryOptions,
    /// A pull-through mirror for Docker Hub images, as
    /// [`crate::docker::DockerOptions::registry_mirror`].
    pub mirror: Option<String>,
    /// When to pull.
    pub pull_policy: PullPolicy,
    /// Time between SIGTERM and SIGKILL when a run is stopped.
    pub stop_grace: Duration,
    /// Bounds on one image's unpacked size.
    pub limits: Limits,
    /// The platform images must be built for.
    pub platform: Platform,
}

impl OciOptions {
    /// Defaults with state under `state_dir`.
    pub fn new(state_dir: PathBuf) -> OciOptions {
        OciOptions {
            crun: PathBuf::from(DEFAULT_CRUN),
            state_dir,
            registry: RegistryOptions::default(),
            mirror: None,
            pull_policy: PullPolicy::IfNotPresent,
            stop_grace: Duration::from_secs(10),
            limits: Limits {
                max_bytes: 16 << 30,
                max_entries: 2_000_000,
            },
            platform: Platform::host(),
        }
    }
}

/// Why the runtime cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// `crun` is missing or does not run.
    #[error("OCI runtime {path}: {message}")]
    Crun {
        /// The binary.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The state directory cannot be made.
    #[error("container state directory {path}: {source}")]
    State {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client could not be set up.
    #[error("registry client: {0}")]
    Client(String),
}

/// Runs actions with `crun` on images it pulls itself (see the module docs).
pub struct OciRuntime {
    options: OciOptions,
    registry: RegistryClient,
    version: String,
    /// Images resolved by this worker, by the reference pulled.
    images: tokio::sync::Mutex<HashMap<String, Arc<Resolved>>>,
}

impl std::fmt::Debug for OciRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciRuntime")
            .field("crun", &self.options.crun)
            .field("version", &self.version)
            .field("state_dir", &self.options.state_dir)
            .finish()
    }
}

impl OciRuntime {
    /// Checks that `crun` runs and prepares the state directory.
    pub async fn new(options: OciOptions) -> Result<OciRuntime, OciError> {
        let crun_error = |message: String| OciError::Crun {
            path: options.crun.clone(),
            message,
        };
        let output = tokio::time::timeout(
            Duration::from_secs(10),
            Command::new(&options.crun)
                .arg("--version")
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .map_err(|_| crun_error("did not answer --version in 10 s".into()))?
        .map_err(|e| crun_error(format!("cannot run it: {e}")))?;
        if !output.status.success() {
            return Err(crun_error(format!("--version failed ({})", output.status)));
        }
        let version = String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("unknown version")
            .trim()
            .to_string();
        for dir in ["blobs", "containers", "crun"] {
            let path = options.state_dir.join(dir);
            tokio::fs::create_dir_all(&path)
                .await
                .map_err(|source| OciError::State { path, source })?;
        }
        let registry = RegistryClient::new(options.registry.clone()).map_err(OciError::Client)?;
        Ok(OciRuntime {
            options,
            registry,
            version,
            images: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// crun's version line, for start-up logs.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The image resolved and its blobs on disk, per the pull policy,
    /// trying the mirror first for Docker Hub images.
    async fn ensure_image(&self, image: &str, logs: &LogSink) -> Result<Arc<Resolved>, String> {
        let parsed = ImageRef::parse(image)
            .ok_or_else(|| format!("image reference {image:?} is not valid"))?;
        let mut images = self.images.lock().await;
        let original = parsed.full();
        if self.options.pull_policy != PullPolicy::Always
            && let Some(found) = images.get(&original)
        {
            logs.note(format!(
                "image {original} is already here ({})",
                found.digest
            ));
            return Ok(found.clone());
        }
        if self.options.pull_policy == PullPolicy::Never {
            return Err(format!(
                "image {original} is not present and the pull policy is Never"
            ));
        }
        let mirrored = self
            .options
            .mirror
            .as_deref()
            .map(|m| parsed.mirrored(m))
            .filter(|m| m.full() != original);
        let resolved = match mirrored {
            Some(mirror) => match self.pull(&mirror, logs).await {
                Ok(r) => r,
                Err(mirror_failure) => {
                    logs.note(format!("{mirror_failure}; trying Docker Hub"));
                    self.pull(&parsed, logs)
                        .await
                        .map_err(|hub| format!("{mirror_failure}; {hub}"))?
                }
            },
            None => self.pull(&parsed, logs).await.map_err(|e| e.to_string())?,
        };
        let resolved = Arc::new(resolved);
        images.insert(original, resolved.clone());
        Ok(resolved)
    }

    /// Resolves `image` and downloads the blobs not already here.
    async fn pull(&self, image: &ImageRef, logs: &LogSink) -> Result<Resolved, PullError> {
        let name = image.full();
        let started = Instant::now();
        logs.note(format!("pulling image {name}"));
        let resolved = self.registry.resolve(image, &self.options.platform).await?;
        resolved
            .manifest
            .container_layers()
            .map_err(|source| PullError::Manifest {
                image: name.clone(),
                source,
            })?;
        let total: u64 = resolved
            .manifest
            .layers
            .iter()
            .fold(0u64, |sum, (d, _)| sum.saturating_add(d.size));
        if total > self.options.limits.max_bytes {
            return Err(PullError::Blob {
                image: name,
                digest: resolved.digest.to_string(),
                message: format!(
                    "its layers are {} bytes, more than the {} allowed",
                    total, self.options.limits.max_bytes
                ),
            });
        }
        let count = resolved.manifest.layers.len();
        let mut done: u64 = 0;
        let mut fetched = 0;
        for (i, (layer, _)) in resolved.manifest.layers.iter().enumerate() {
            let path = self.blob_path(&layer.digest);
            if tokio::fs::metadata(&path)
                .await
                .is_ok_and(|m| m.len() == layer.size)
            {
                done = done.saturating_add(layer.size);
                continue;
            }
            let mut last_shown = Instant::now() - Duration::from_secs(1);
            let before = done;
            let mut progress = |received: u64| {
                if last_shown.elapsed() >= Duration::from_millis(250) {
                    last_shown = Instant::now();
                    logs.progress(format!(
                        "pulling {name}: layer {} of {count}, {} of {}",
                        i + 1,
                        mib(before.saturating_add(received)),
                        mib(total)
                    ));
                }
            };
            self.registry
                .fetch_blob(image, layer, &path, &mut progress)
                .await?;
            done = done.saturating_add(layer.size);
            fetched += 1;
        }
        logs.progress(format!("pulled {name}"));
        logs.note(format!(
            "pulled {name} ({}, {count} layers, {}, {fetched} downloaded) in {:.1} s",
            resolved.digest,
            mib(total),
            started.elapsed().as_secs_f64()
        ));
        Ok(resolved)
    }

    fn blob_path(&self, digest: &manifest::Digest) -> PathBuf {
        self.options
            .state_dir
            .join("blobs")
            .join(format!("sha256-{}", digest.hex()))
    }

    /// Unpacks the image into `bundle/rootfs` and writes `bundle/config.json`.
    async fn prepare_bundle(
        &self,
        spec: &ActionSpec,
        ctx: &RunContext,
        image: &Resolved,
        bundle: &Path,
    ) -> Result<(), String> {
        let rootfs = bundle.join("rootfs");
        tokio::fs::create_dir_all(&rootfs)
            .await
            .map_err(|e| format!("creating {}: {e}", rootfs.display()))?;
        let layers: Vec<(PathBuf, manifest::LayerCodec)> = image
            .manifest
            .container_layers()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(d, codec)| (self.blob_path(&d.digest), codec))
            .collect();
        let limits = self.options.limits;
        let target = rootfs.clone();
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let mut job = tokio::task::spawn_blocking(move || -> Result<Usage, String> {
            let mut usage = Usage::default();
            for (i, (path, codec)) in layers.iter().enumerate() {
                let file = std::fs::File::open(path)
                    .map_err(|e| format!("layer {}: {}: {e}", i + 1, path.display()))?;
                unpack::apply_layer(file, *codec, &target, i + 1, limits, &mut usage, &stop_flag)
                    .map_err(|e| e.to_string())?;
            }
            Ok(usage)
        });
        // A cancelled run stops the unpacking and waits for it, so nothing
        // writes into the bundle while it is removed.
        let joined = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                stop.store(true, Ordering::Relaxed);
                let _ = (&mut job).await;
                return Err("cancelled while unpacking the image".into());
            }
            joined = &mut job => joined,
        };
        let usage = joined.map_err(|e| format!("unpacking the image: {e}"))??;
        ctx.logs.note(format!(
            "unpacked {} files ({}) in {:.1} s",
            usage.entries,
            mib(usage.bytes),
            started.elapsed().as_secs_f64()
        ));
        let read_small = |name: &str| {
            let path = rootfs.join(name);
            std::fs::symlink_metadata(&path)
                .ok()
                .filter(|m| m.is_file() && m.len() < (1 << 20))
                .and_then(|_| std::fs::read_to_string(&path).ok())
                .unwrap_or_default()
        };
        let ids = bundle::user_ids(
            &image.config.user,
            &read_small("etc/passwd"),
            &read_small("etc/group"),
        )?;
        let work_dir = std::path::absolute(&ctx.work_dir)
            .map_err(|e| format!("work directory {}: {e}", ctx.work_dir.display()))?;
        tokio::fs::create_dir_all(&work_dir)
            .await
            .map_err(|e| format!("creating work directory {}: {e}", work_dir.display()))?;
        // As Docker does, a bind's missing host directory is created.
        for text in &spec.volumes {
            let volume = bundle::parse_volume(text)?;
            if tokio::fs::symlink_metadata(&volume.source).await.is_err() {
                tokio::fs::create_dir_all(&volume.source)
                    .await
                    .map_err(|e| format!("volume {text:?}: creating {}: {e}", volume.source))?;
            }
        }
        let host_files: Vec<&str> = HOST_FILES
            .iter()
            .copied()
            .filter(|f| Path::new(f).is_file())
            .collect();
        let config = bundle::runtime_config(
            spec,
            &BundleInputs {
                rootfs: &rootfs,
                image: &image.config,
                work_dir: &work_dir,
                ids,
                host_files,
                capabilities: bundle::capabilities_in(bundle::bounding_mask(
                    &std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
                )),
            },
        )?;
        let text = serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?;
        tokio::fs::write(bundle.join("config.json"), text)
            .await
            .map_err(|e| format!("writing {}/config.json: {e}", bundle.display()))
    }

    fn crun(&self) -> Command {
        let mut command = Command::new(&self.options.crun);
        command
            .arg("--root")
            .arg(self.options.state_dir.join("crun"))
            .arg("--cgroup-manager=disabled")
            .stdin(Stdio::null());
        command
    }

    /// A crun housekeeping command, bounded in time; its failure is a note.
    async fn housekeeping(&self, args: &[&str], logs: Option<&LogSink>) -> bool {
        let mut command = self.crun();
        command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match tokio::time::timeout(HOUSEKEEPING, command.output()).await {
            Ok(Ok(out)) if out.status.success() => true,
            Ok(Ok(out)) => {
                if let Some(logs) = logs {
                    logs.note(format!(
                        "crun {}: {}",
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                false
            }
            Ok(Err(e)) => {
                if let Some(logs) = logs {
                    logs.note(format!("crun {}: {e}", args.join(" ")));
                }
                false
            }
            Err(_) => {
                if let Some(logs) = logs {
                    logs.note(format!(
                        "crun {}: no answer in {HOUSEKEEPING:?}",
                        args.join(" ")
                    ));
                }
                false
            }
        }
    }

    /// Removes a container and its bundle, whatever state they are in.
    async fn remove(&self, id: &str, bundle: &Path, logs: Option<&LogSink>) {
        self.housekeeping(&["delete", "--force", id], None).await;
        if tokio::fs::symlink_metadata(bundle).await.is_ok() {
            let dir = bundle.to_path_buf();
            let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
            if let Ok(Err(e)) = removed
                && let Some(logs) = logs
            {
                logs.note(format!("removing {}: {e}", bundle.display()));
            }
        }
    }

    /// Runs the bundle to its end, or stops it when the run is cancelled.
    async fn run_bundle(&self, id: &str, bundle: &Path, ctx: &RunContext) -> RunResult {
        let mut command = self.crun();
        command
            .args(["run", "--no-pivot", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return RunResult::failed(format!("starting {}: {e}", self.options.crun.display()));
            }
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut out = tokio::spawn(pump(stdout, Stream::Stdout, ctx.logs.clone()));
        let mut err = tokio::spawn(pump(stderr, Stream::Stderr, ctx.logs.clone()));
        let status = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => None,
            status = child.wait() => Some(status),
        };
        let result = match status {
            Some(Ok(status)) => {
                let code = status
                    .code()
                    .map(i64::from)
                    .or_else(|| {
                        use std::os::unix::process::ExitStatusExt;
                        status.signal().map(|s| 128 + i64::from(s))
                    })
                    .unwrap_or(-1);
                exited(code)
            }
            Some(Err(e)) => RunResult::failed(format!("waiting for crun: {e}")),
            None => {
                self.stop(id, &mut child, &ctx.logs).await;
                RunResult {
                    outcome: RunOutcome::Cancelled,
                    exit_code: None,
                    message: format!("stopped container {id}: the run was cancelled"),
                    after: AfterSuccess::Continue,
                }
            }
        };
        let drained = tokio::time::timeout(LOG_DRAIN, async {
            let _ = (&mut out).await;
            let _ = (&mut err).await;
        })
        .await;
        if drained.is_err() {
            // A process left behind (`pid: host`) still holds the pipes.
            out.abort();
            err.abort();
            ctx.logs
                .note("output still arriving after the container exited was not read");
        }
        result
    }

    /// SIGTERM, the grace period, then SIGKILL.
    async fn stop(&self, id: &str, child: &mut tokio::process::Child, logs: &LogSink) {
        let grace = self.options.stop_grace;
        logs.note(format!(
            "stopping container {id} ({} s grace period)",
            grace.as_secs()
        ));
        self.housekeeping(&["kill", id, "TERM"], Some(logs)).await;
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
        logs.note(format!("container {id} still running; killing it"));
        // Killing the container's first process ends its PID namespace.
        self.housekeeping(&["kill", id, "KILL"], Some(logs)).await;
        if tokio::time::timeout(HOUSEKEEPING, child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(HOUSEKEEPING, child.wait()).await;
        }
    }
}

/// Forwards one output stream of the container to the log, line by line.
async fn pump(pipe: Option<impl tokio::io::AsyncRead + Unpin>, stream: Stream, logs: LogSink) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut lines = LineBuffer::default();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.push(&buf[..n], |l| logs.line(stream, l)),
        }
    }
    lines.flush(|l| logs.line(stream, l));
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[async_trait]
impl Runtime for OciRuntime {
    fn name(&self) -> &'static str {
        "crun"
    }

    /// Every image is a container image to this runtime.
    fn handles(&self, _image: &str) -> bool {
        true
    }

    fn learn_registry_logins(&self, logins: &[(String, crate::container::RegistryCredentials)]) {
        self.registry.learn(logins);
    }

    async fn run(&self, spec: &ActionSpec, ctx: &RunContext) -> RunResult {
        let id = spec.instance_name();
        let bundle = self.options.state_dir.join("containers").join(&id);
        let cancelled = || RunResult {
            outcome: RunOutcome::Cancelled,
            exit_code: None,
            message: "cancelled before the container started".to_string(),
            after: AfterSuccess::Continue,
        };
        if spec.image.trim().is_empty() {
            return RunResult::failed("the action names no image");
        }
        if tokio::fs::symlink_metadata(&bundle).await.is_ok() {
            ctx.logs.note(format!(
                "removing container {id} left by an earlier run; starting it anew"
            ));
            self.remove(&id, &bundle, Some(&ctx.logs)).await;
        }
        ctx.logs.note(format!(
            "running {} in container {id} ({})",
            spec.image, self.version
        ));
        let prepared = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => None,
            prepared = async {
                let image = self.ensure_image(&spec.image, &ctx.logs).await?;
                self.prepare_bundle(spec, ctx, &image, &bundle).await
            } => Some(prepared),
        };
        let result = match prepared {
            None => cancelled(),
            Some(Err(message)) => RunResult::failed(message),
            Some(Ok(())) => self.run_bundle(&id, &bundle, ctx).await,
        };
        self.remove(&id, &bundle, Some(&ctx.logs)).await;
        result
    }
}
