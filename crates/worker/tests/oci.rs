//! The engine-less runtime (`oci`) against real peers: Debian's
//! `docker-registry` serving images this test builds from a static busybox
//! and pushes over the registry's own API, and Debian's `crun` running
//! them. Needs root (crun, namespaces); skipped without it outside CI.
//!
//! crun runs through `crun_for_tests`, which gives it cgroup2 alone, as
//! the in-memory OS mounts it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bellows_testkit::netns::can_run;
use bellows_testkit::ports::free_tcp_port;
use bellows_testkit::registry::{
    TestImage, TestRegistry, busybox_rootfs, crun_for_tests, layer_of,
};
use bellows_worker::container::RegistryCredentials;
use bellows_worker::oci::registry::RegistryOptions;
use bellows_worker::oci::{OciOptions, OciRuntime};
use bellows_worker::runtime::Stream;
use bellows_worker::{ActionSpec, LogSink, RunContext, RunOutcome, RunResult, Runtime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const APPLETS: &[&str] = &["sh", "echo", "cat", "ls", "sleep", "test", "readlink"];

struct Lab {
    dir: tempfile::TempDir,
    open: TestRegistry,
    locked: TestRegistry,
}

/// Two registries on loopback (one needing credentials) holding:
/// `tool:1` (two layers, the second deleting a file of the first),
/// `arm:1` (an arm64 image), and `locked/tool:1` on the second.
fn lab() -> Option<Lab> {
    if !can_run() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(dir.path(), APPLETS);
    std::fs::write(root.join("junk"), "from the first layer").unwrap();
    let base = layer_of(&root);
    let top_dir = dir.path().join("top");
    std::fs::create_dir_all(top_dir.join("etc")).unwrap();
    std::fs::write(top_dir.join(".wh.junk"), "").unwrap();
    std::fs::write(top_dir.join("etc/motd"), "second layer\n").unwrap();
    let top = layer_of(&top_dir);
    let tool = TestImage {
        layers: vec![base.clone(), top],
        architecture: "amd64".into(),
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo default command".into()],
        env: vec!["PATH=/bin".into(), "FROM_IMAGE=yes".into()],
    };
    let open = TestRegistry::start(&format!("127.0.0.1:{}", free_tcp_port()), None, None);
    open.push("bellows-test/tool", "1", &tool);
    let arm = TestImage {
        architecture: "arm64".into(),
        ..tool.clone()
    };
    open.push("bellows-test/arm", "1", &arm);
    let locked = TestRegistry::start(
        &format!("127.0.0.1:{}", free_tcp_port()),
        None,
        Some(("puller", "s3cret")),
    );
    locked.push("locked/tool", "1", &tool);
    Some(Lab { dir, open, locked })
}

async fn runtime(lab: &Lab, name: &str, credentials: Option<(&str, &str)>) -> OciRuntime {
    let mut options = OciOptions::new(lab.dir.path().join(name));
    options.crun = crun_for_tests(lab.dir.path());
    options.stop_grace = Duration::from_secs(2);
    if let Some((user, password)) = credentials {
        options.registry = RegistryOptions {
            credentials: BTreeMap::from([(
                lab.locked.addr.clone(),
                RegistryCredentials {
                    username: user.into(),
                    password: password.into(),
                },
            )]),
            insecure: Vec::new(),
        };
    }
    OciRuntime::new(options).await.expect("crun runs")
}

struct Run {
    result: RunResult,
    lines: Vec<(Stream, String)>,
}

async fn run(
    rt: &OciRuntime,
    work: &Path,
    spec: ActionSpec,
    cancel_after: Option<Duration>,
) -> Run {
    run_with(rt, work, spec, cancel_after).await
}

async fn run_any(rt: &dyn Runtime, work: &Path, spec: ActionSpec) -> Run {
    run_with(rt, work, spec, None).await
}

async fn run_with(
    rt: &dyn Runtime,
    work: &Path,
    spec: ActionSpec,
    cancel_after: Option<Duration>,
) -> Run {
    let (tx, mut rx) = mpsc::channel(1000);
    let (logs, _progress) = LogSink::new(Some(tx));
    let cancel = CancellationToken::new();
    if let Some(after) = cancel_after {
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            c.cancel();
        });
    }
    let ctx = RunContext {
        work_dir: work.to_path_buf(),
        logs,
        cancel,
    };
    let result = tokio::time::timeout(Duration::from_secs(120), rt.run(&spec, &ctx))
        .await
        .expect("the run ended within 120 s");
    drop(ctx);
    let mut lines = Vec::new();
    while let Ok(l) = rx.try_recv() {
        lines.push((l.stream, l.line));
    }
    Run { result, lines }
}

fn spec(image: &str, name: &str, command: &str) -> ActionSpec {
    ActionSpec {
        workflow_id: "wf".into(),
        task: "t".into(),
        name: name.into(),
        image: image.into(),
        command: if command.is_empty() {
            Vec::new()
        } else {
            vec![command.into()]
        },
        attempt: 1,
        max_attempts: 1,
        ..ActionSpec::default()
    }
}

fn has(run: &Run, stream: Stream, text: &str) -> bool {
    run.lines
        .iter()
        .any(|(s, l)| *s == stream && l.contains(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_from_a_registry_runs_as_docker_would_run_it() {
    let Some(lab) = lab() else { return };
    let rt = runtime(&lab, "state", None).await;
    let work = lab.dir.path().join("work");
    let data = lab.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("in"), "from a volume").unwrap();
    let image = format!("{}/bellows-test/tool:1", lab.open.addr);

    let mut s = spec(
        &image,
        "first",
        "echo out; echo err >&2; echo \"$GREETING/$FROM_IMAGE\" > /worker/greeting; \
         test -e /junk && echo JUNK-VISIBLE; cat /etc/motd; cat /data/in; echo; \
         echo pid1=$(cat /proc/1/comm); echo shared=$(cat /workflow/greeting); echo changed > /etc/motd",
    );
    s.environment = BTreeMap::from([("GREETING".to_string(), "hello".to_string())]);
    s.volumes = vec![format!("{}:/data:ro", data.display())];
    let r = run(&rt, &work, s, None).await;
    let shown = format!("{:#?}", r.lines);
    assert_eq!(
        r.result.outcome,
        RunOutcome::Success,
        "{:?}\n{shown}",
        r.result
    );
    assert!(has(&r, Stream::Stdout, "out"), "{shown}");
    assert!(has(&r, Stream::Stderr, "err"), "{shown}");
    assert!(has(&r, Stream::Worker, "pulling image"), "{shown}");
    assert!(has(&r, Stream::Stdout, "second layer"), "{shown}");
    assert!(has(&r, Stream::Stdout, "from a volume"), "{shown}");
    assert!(
        !has(&r, Stream::Stdout, "JUNK-VISIBLE"),
        "a whiteout left the file: {shown}"
    );
    assert!(
        has(&r, Stream::Stdout, "pid1=sh"),
        "own PID namespace: {shown}"
    );
    assert!(
        has(&r, Stream::Stdout, "shared=hello/yes"),
        "/workflow is /worker: {shown}"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("greeting"))
            .unwrap()
            .trim(),
        "hello/yes",
        "the action's and the image's environment reached the command"
    );

    // The second run: no second download, a fresh root file system, the
    // image's default command, and `pid: host`.
    let mut s = spec(&image, "second", "");
    s.pid = Some("host".into());
    let r = run(&rt, &work, s, None).await;
    let shown = format!("{:#?}", r.lines);
    assert_eq!(r.result.outcome, RunOutcome::Success, "{shown}");
    assert!(has(&r, Stream::Worker, "already here"), "{shown}");
    assert!(has(&r, Stream::Stdout, "default command"), "{shown}");
    let s = spec(&image, "third", "cat /etc/motd; readlink /proc/1/exe");
    let r = run(&rt, &work, s, None).await;
    assert!(
        has(&r, Stream::Stdout, "second layer"),
        "an earlier run's change leaked"
    );

    // A failing command's status, and a cancelled run stops promptly.
    let r = run(&rt, &work, spec(&image, "fails", "exit 3"), None).await;
    assert_eq!(r.result.outcome, RunOutcome::Failed);
    assert_eq!(r.result.exit_code, Some(3));
    let started = Instant::now();
    let r = run(
        &rt,
        &work,
        spec(&image, "sleeps", "sleep 300"),
        Some(Duration::from_secs(1)),
    )
    .await;
    assert_eq!(r.result.outcome, RunOutcome::Cancelled, "{:?}", r.result);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let left: Vec<_> = std::fs::read_dir(lab.dir.path().join("state/containers"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "bundles left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_failures_name_their_cause() {
    let Some(lab) = lab() else { return };
    let work = lab.dir.path().join("work");
    let anonymous = runtime(&lab, "anon", None).await;
    let locked = format!("{}/locked/tool:1", lab.locked.addr);

    let r = run(&anonymous, &work, spec(&locked, "a", "true"), None).await;
    assert_eq!(r.result.outcome, RunOutcome::Failed);
    assert!(
        r.result.message.contains("it needs a login"),
        "{}",
        r.result.message
    );

    let wrong = runtime(&lab, "wrong", Some(("puller", "guess"))).await;
    let r = run(&wrong, &work, spec(&locked, "b", "true"), None).await;
    assert!(
        r.result
            .message
            .contains("it refused the login given for it"),
        "{}",
        r.result.message
    );

    let right = runtime(&lab, "right", Some(("puller", "s3cret"))).await;
    let r = run(&right, &work, spec(&locked, "c", "echo in"), None).await;
    assert_eq!(r.result.outcome, RunOutcome::Success, "{:?}", r.result);

    let missing = format!("{}/bellows-test/nothing:1", lab.open.addr);
    let r = run(&anonymous, &work, spec(&missing, "d", "true"), None).await;
    assert!(
        r.result.message.contains("was not found") && r.result.message.contains("nothing"),
        "{}",
        r.result.message
    );
    let tag = format!("{}/bellows-test/tool:2", lab.open.addr);
    let r = run(&anonymous, &work, spec(&tag, "e", "true"), None).await;
    assert!(
        r.result.message.contains("was not found"),
        "{}",
        r.result.message
    );

    let arm = format!("{}/bellows-test/arm:1", lab.open.addr);
    let r = run(&anonymous, &work, spec(&arm, "f", "true"), None).await;
    assert!(
        r.result
            .message
            .contains("built for linux/arm64, not this machine's linux/amd64"),
        "{}",
        r.result.message
    );

    let closed = format!("127.0.0.1:{}/x:1", free_tcp_port());
    let r = run(&anonymous, &work, spec(&closed, "g", "true"), None).await;
    assert_eq!(r.result.outcome, RunOutcome::Failed);
    assert!(
        r.result.message.contains("127.0.0.1"),
        "{}",
        r.result.message
    );
}

/// `oci2disk`, built in: a gzip-compressed disk image pushed as an `oras`
/// artefact is written, decompressed, to the destination; its blob digest
/// is checked on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci2disk_writes_a_disk_image_stored_in_a_registry() {
    use std::io::Write;
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(&format!("127.0.0.1:{}", free_tcp_port()), None, None);
    let disk: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&disk).unwrap();
    let gz = gz.finish().unwrap();
    registry.push_artifact(
        "disks/test",
        "raw.gz",
        &gz,
        "application/vnd.oci.image.layer.v1.tar",
    );
    let rt = bellows_worker::BuiltinRuntime::new(bellows_worker::BuiltinOptions::default());
    let dest = dir.path().join("disk.img");
    let mut s = spec("quay.io/tinkerbell/actions/oci2disk:latest", "oci2disk", "");
    s.environment = BTreeMap::from([
        (
            "IMG_URL".to_string(),
            format!("{}/disks/test:raw.gz", registry.addr),
        ),
        ("DEST_DISK".to_string(), dest.display().to_string()),
        ("COMPRESSED".to_string(), "true".to_string()),
    ]);
    let r = run_any(&rt, dir.path(), s.clone()).await;
    assert_eq!(
        r.result.outcome,
        RunOutcome::Success,
        "{:?} {:#?}",
        r.result,
        r.lines
    );
    assert!(
        r.result.message.contains("download sha256:"),
        "{}",
        r.result.message
    );
    assert!(
        std::fs::read(&dest).unwrap() == disk,
        "the disk differs from the image"
    );

    s.environment.insert(
        "IMG_URL".into(),
        format!("{}/disks/none:raw.gz", registry.addr),
    );
    let r = run_any(&rt, dir.path(), s).await;
    assert_eq!(r.result.outcome, RunOutcome::Failed);
    assert!(
        r.result.message.contains("was not found"),
        "{}",
        r.result.message
    );
}
