//! The Docker runtime against a real engine: the private test engine that
//! `scripts/docker-test-daemon.sh` starts (and `scripts/test.sh` runs), with
//! its `bellows-test/busybox:latest` image. Skipped, with a reason printed,
//! when `DOCKER_HOST` is unset outside CI; under CI they must run. They never
//! fall back to the machine's default engine socket.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bellows_worker::docker::{DockerOptions, DockerRuntime, LABEL_WORKFLOW, PullPolicy};
use bellows_worker::runtime::{OutputLine, Stream};
use bellows_worker::{ActionSpec, LogSink, RunContext, RunOutcome, RunResult, Runtime};
use bollard::query_parameters::ListContainersOptions;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "bellows-test/busybox:latest";

/// Bound on any one test's run, so a hang fails instead of blocking CI.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The engine to test against, or `None` (test skipped) when there is none
/// and this is not CI.
fn docker_host() -> Option<String> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.trim().is_empty() => Some(host),
        _ => {
            let ci = std::env::var("CI").unwrap_or_default();
            if !ci.is_empty() && ci != "false" && ci != "0" {
                panic!(
                    "CI is set but DOCKER_HOST is not: start the test engine with \
                     scripts/docker-test-daemon.sh and export what it prints"
                );
            }
            eprintln!(
                "skipping: DOCKER_HOST is unset (run `eval \"$(scripts/docker-test-daemon.sh)\"` \
                 to test against a private engine)"
            );
            None
        }
    }
}

/// A runtime on the test engine, checked to answer.
async fn runtime(options: DockerOptions) -> Option<DockerRuntime> {
    let host = docker_host()?;
    let rt = DockerRuntime::connect(DockerOptions {
        host: Some(host.clone()),
        ..options
    })
    .unwrap_or_else(|e| panic!("connecting to {host}: {e}"));
    let version = rt
        .ping()
        .await
        .unwrap_or_else(|e| panic!("engine at {host}: {e}"));
    eprintln!("docker engine {version} at {host}");
    Some(rt)
}

fn fast_stop() -> DockerOptions {
    DockerOptions {
        stop_grace: Duration::from_secs(1),
        ..Default::default()
    }
}

/// A workflow id no other test (or test process) uses.
fn unique(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t-{test}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn spec(workflow: &str, action: &str, command: &[&str]) -> ActionSpec {
    ActionSpec {
        workflow_id: workflow.to_string(),
        task: "provision".to_string(),
        name: action.to_string(),
        image: IMAGE.to_string(),
        command: command.iter().map(|s| s.to_string()).collect(),
        attempt: 1,
        max_attempts: 1,
        ..Default::default()
    }
}

/// A run's context with its output collected.
struct Run {
    ctx: RunContext,
    rx: mpsc::Receiver<OutputLine>,
}

impl Run {
    fn new(work_dir: &Path) -> Run {
        let (tx, rx) = mpsc::channel(10_000);
        let (logs, _progress) = LogSink::new(Some(tx));
        Run {
            ctx: RunContext {
                work_dir: work_dir.to_path_buf(),
                logs,
                cancel: CancellationToken::new(),
            },
            rx,
        }
    }

    /// Lines forwarded so far.
    fn lines(&mut self) -> Vec<OutputLine> {
        let mut out = Vec::new();
        while let Ok(line) = self.rx.try_recv() {
            out.push(line);
        }
        out
    }
}

async fn run_to_end(rt: &DockerRuntime, spec: &ActionSpec, run: &Run) -> RunResult {
    match tokio::time::timeout(RUN_LIMIT, rt.run(spec, &run.ctx)).await {
        Ok(result) => result,
        Err(_) => panic!("run of {} took over {RUN_LIMIT:?}", spec.name),
    }
}

/// Text of the lines of one stream.
fn texts(lines: &[OutputLine], stream: Stream) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.line.clone())
        .collect()
}

/// Names of the containers labelled with `workflow`, stopped ones included.
async fn containers_of(rt: &DockerRuntime, workflow: &str) -> Vec<String> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_WORKFLOW}={workflow}")],
        )])),
        ..Default::default()
    };
    rt.client()
        .list_containers(Some(options))
        .await
        .unwrap_or_else(|e| panic!("listing containers: {e}"))
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect()
}

fn assert_success(result: &RunResult, lines: &[OutputLine]) {
    assert_eq!(
        result.outcome,
        RunOutcome::Success,
        "{result:?}\noutput: {lines:#?}"
    );
}

#[tokio::test]
async fn environment_reaches_the_container() {
    let Some(rt) = runtime(DockerOptions::default()).await else {
        return;
    };
    let wf = unique("env");
    let work = tempfile::tempdir().unwrap();
    let mut action = spec(&wf, "env", &["sh", "-c", "echo \"foo=$FOO\""]);
    action
        .environment
        .insert("FOO".to_string(), "bar baz".to_string());
    let mut run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    let lines = run.lines();
    assert_success(&result, &lines);
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(texts(&lines, Stream::Stdout), ["foo=bar baz"]);
    assert!(
        containers_of(&rt, &wf).await.is_empty(),
        "container removed"
    );
}

#[tokio::test]
async fn the_work_dir_is_shared_between_runs() {
    let Some(rt) = runtime(DockerOptions::default()).await else {
        return;
    };
    let wf = unique("share");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("workflow-dir");

    let write = spec(&wf, "write", &["sh", "-c", "echo hello > /worker/data"]);
    let mut run = Run::new(&dir);
    let result = run_to_end(&rt, &write, &run).await;
    assert_success(&result, &run.lines());
    assert_eq!(
        std::fs::read_to_string(dir.join("data")).unwrap(),
        "hello\n"
    );

    // Both mount points (Bellows' /worker, Tinkerbell's /workflow) see it.
    let read = spec(
        &wf,
        "read",
        &["sh", "-c", "cat /worker/data; cat /workflow/data"],
    );
    let mut run = Run::new(&dir);
    let result = run_to_end(&rt, &read, &run).await;
    let lines = run.lines();
    assert_success(&result, &lines);
    assert_eq!(texts(&lines, Stream::Stdout), ["hello", "hello"]);
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_its_status() {
    let Some(rt) = runtime(DockerOptions::default()).await else {
        return;
    };
    let wf = unique("exit");
    let work = tempfile::tempdir().unwrap();
    let action = spec(&wf, "fail", &["sh", "-c", "echo about to fail; exit 3"]);
    let mut run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    assert_eq!(result.outcome, RunOutcome::Failed, "{result:?}");
    assert_eq!(result.exit_code, Some(3));
    assert_eq!(result.message, "container exited with status 3");
    assert_eq!(texts(&run.lines(), Stream::Stdout), ["about to fail"]);
    assert!(run.ctx.logs.tail().contains("about to fail"));
    assert!(containers_of(&rt, &wf).await.is_empty());
}

#[tokio::test]
async fn stderr_lines_are_tagged_and_partial_lines_kept() {
    let Some(rt) = runtime(DockerOptions::default()).await else {
        return;
    };
    let wf = unique("stderr");
    let work = tempfile::tempdir().unwrap();
    let action = spec(
        &wf,
        "streams",
        &[
            "sh",
            "-c",
            "echo out1; echo err1 >&2; printf 'two\\nlines\\n'; printf 'no newline'",
        ],
    );
    let mut run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    let lines = run.lines();
    assert_success(&result, &lines);
    assert_eq!(
        texts(&lines, Stream::Stdout),
        ["out1", "two", "lines", "no newline"],
        "{lines:#?}"
    );
    assert_eq!(texts(&lines, Stream::Stderr), ["err1"]);
}

#[tokio::test]
async fn cancelling_stops_and_removes_the_container() {
    let Some(rt) = runtime(fast_stop()).await else {
        return;
    };
    let wf = unique("cancel");
    let work = tempfile::tempdir().unwrap();
    let action = spec(&wf, "sleep", &["sleep", "300"]);
    let run = Run::new(work.path());
    let cancel = run.ctx.cancel.clone();
    let trigger = async {
        // Cancel once the container is up.
        let deadline = Instant::now() + Duration::from_secs(60);
        while containers_of(&rt, &wf).await.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
        Instant::now()
    };
    let (result, cancelled_at) = tokio::join!(run_to_end(&rt, &action, &run), trigger);
    let took = cancelled_at.elapsed();
    assert_eq!(result.outcome, RunOutcome::Cancelled, "{result:?}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    assert!(
        containers_of(&rt, &wf).await.is_empty(),
        "container removed after cancellation"
    );
}

#[tokio::test]
async fn a_cancelled_run_starts_nothing() {
    let Some(rt) = runtime(DockerOptions::default()).await else {
        return;
    };
    let wf = unique("precancel");
    let work = tempfile::tempdir().unwrap();
    let action = spec(&wf, "never", &["sh", "-c", "echo ran > /worker/ran"]);
    let run = Run::new(work.path());
    run.ctx.cancel.cancel();
    let result = run_to_end(&rt, &action, &run).await;
    assert_eq!(result.outcome, RunOutcome::Cancelled);
    assert!(!work.path().join("ran").exists());
    assert!(containers_of(&rt, &wf).await.is_empty());
}

/// Starts `action`, then drops the run mid-way as a crashing worker would,
/// leaving its container behind.
async fn abandon(rt: &DockerRuntime, action: &ActionSpec, run: &Run, wf: &str) {
    let started = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !run.ctx.work_dir.join("count").exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        result = rt.run(action, &run.ctx) => panic!("run ended before it was dropped: {result:?}"),
        () = started => {}
    }
    assert_eq!(
        containers_of(rt, wf).await.len(),
        1,
        "the dropped run leaves its container"
    );
}

fn count_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("count"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test]
async fn resume_reattaches_to_a_running_container() {
    let Some(rt) = runtime(DockerOptions::default()).await else {
        return;
    };
    let wf = unique("resume");
    let work = tempfile::tempdir().unwrap();
    let mut action = spec(
        &wf,
        "long",
        &[
            "sh",
            "-c",
            "echo started; echo run >> /worker/count; sleep 4; echo finishing; exit 5",
        ],
    );
    let first = Run::new(work.path());
    abandon(&rt, &action, &first, &wf).await;

    action.resume = true;
    let mut second = Run::new(work.path());
    let result = run_to_end(&rt, &action, &second).await;
    let lines = second.lines();
    assert_eq!(result.outcome, RunOutcome::Failed, "{result:?}\n{lines:#?}");
    assert_eq!(
        result.exit_code,
        Some(5),
        "the original container's status is reported"
    );
    assert_eq!(count_lines(work.path()), 1, "the command ran once");
    assert!(
        texts(&lines, Stream::Stdout).contains(&"finishing".to_string()),
        "output from now on is followed: {lines:#?}"
    );
    assert!(containers_of(&rt, &wf).await.is_empty());
}

#[tokio::test]
async fn resume_reports_a_container_that_already_exited() {
    let Some(rt) = runtime(DockerOptions::default()).await else {
        return;
    };
    let wf = unique("resumed-exit");
    let work = tempfile::tempdir().unwrap();
    let mut action = spec(
        &wf,
        "short",
        &[
            "sh",
            "-c",
            "echo run >> /worker/count; sleep 1; echo all done",
        ],
    );
    let first = Run::new(work.path());
    abandon(&rt, &action, &first, &wf).await;
    // Let it exit while no run is watching.
    let name = action.instance_name();
    let inspect = || rt.client().inspect_container(&name, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while inspect()
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.running)
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "container did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    action.resume = true;
    let mut second = Run::new(work.path());
    let result = run_to_end(&rt, &action, &second).await;
    let lines = second.lines();
    assert_success(&result, &lines);
    assert_eq!(count_lines(work.path()), 1, "the command ran once");
    assert!(
        texts(&lines, Stream::Stdout).contains(&"all done".to_string()),
        "the tail of its output is reported: {lines:#?}"
    );
    assert!(containers_of(&rt, &wf).await.is_empty());
}

#[tokio::test]
async fn without_resume_a_leftover_container_is_replaced() {
    let Some(rt) = runtime(fast_stop()).await else {
        return;
    };
    let wf = unique("replace");
    let work = tempfile::tempdir().unwrap();
    let action = spec(
        &wf,
        "again",
        &["sh", "-c", "echo run >> /worker/count; sleep 2"],
    );
    let first = Run::new(work.path());
    abandon(&rt, &action, &first, &wf).await;

    let mut second = Run::new(work.path());
    let result = run_to_end(&rt, &action, &second).await;
    assert_success(&result, &second.lines());
    assert_eq!(count_lines(work.path()), 2, "the action ran anew");
    assert!(containers_of(&rt, &wf).await.is_empty());
}

#[tokio::test]
async fn volumes_bind_host_directories() {
    let Some(rt) = runtime(DockerOptions::default()).await else {
        return;
    };
    let wf = unique("volumes");
    let work = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "from the host\n").unwrap();
    let mut action = spec(
        &wf,
        "bind",
        &[
            "sh",
            "-c",
            "cat /data/in.txt; echo from the container > /data/out.txt",
        ],
    );
    action.volumes = vec![format!("{}:/data", host.path().display())];
    let mut run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    let lines = run.lines();
    assert_success(&result, &lines);
    assert_eq!(texts(&lines, Stream::Stdout), ["from the host"]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("out.txt")).unwrap(),
        "from the container\n"
    );
}

#[tokio::test]
async fn pid_host_shares_the_host_process_namespace() {
    let Some(rt) = runtime(DockerOptions::default()).await else {
        return;
    };
    let wf = unique("pid");
    let work = tempfile::tempdir().unwrap();
    // This test process is visible from a container only in the host's
    // PID namespace; there, the shell is not PID 1 and PID 1 is the host's.
    let probe = format!(
        "if [ -e /proc/{}/status ]; then echo visible; else echo hidden; fi; \
         echo \"pid=$$\"; cat /proc/1/comm",
        std::process::id()
    );
    let host_init = std::fs::read_to_string("/proc/1/comm").unwrap();

    let mut action = spec(&wf, "pid-host", &["sh", "-c", &probe]);
    action.pid = Some("host".to_string());
    let mut run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    let lines = run.lines();
    assert_success(&result, &lines);
    let out = texts(&lines, Stream::Stdout);
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0], "visible");
    assert_ne!(out[1], "pid=1");
    assert_eq!(out[2], host_init.trim());

    let action = spec(&wf, "pid-own", &["sh", "-c", &probe]);
    let mut run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    let lines = run.lines();
    assert_success(&result, &lines);
    assert_eq!(texts(&lines, Stream::Stdout)[..2], ["hidden", "pid=1"]);
}

#[tokio::test]
async fn a_hook_runs_as_a_suffixed_copy_of_the_spec() {
    let Some(rt) = runtime(DockerOptions::default()).await else {
        return;
    };
    let wf = unique("hook");
    let work = tempfile::tempdir().unwrap();
    let action = spec(&wf, "disk-wipe", &["sh", "-c", "exit 1"]);
    let run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    assert_eq!(result.exit_code, Some(1));

    // What the agent does for on-failure: same image, another command, a
    // suffixed name, hence another container.
    let mut hook = action.clone();
    hook.name = format!("{}.on-failure", action.name);
    hook.command = vec!["sh".into(), "-c".into(), "echo cleaning up".into()];
    assert_ne!(hook.instance_name(), action.instance_name());
    let mut run = Run::new(work.path());
    let result = run_to_end(&rt, &hook, &run).await;
    let lines = run.lines();
    assert_success(&result, &lines);
    assert_eq!(texts(&lines, Stream::Stdout), ["cleaning up"]);
}

#[tokio::test]
async fn the_image_default_command_runs_when_none_is_given() {
    let Some(rt) = runtime(DockerOptions::default()).await else {
        return;
    };
    let wf = unique("default-cmd");
    let work = tempfile::tempdir().unwrap();
    // The test image's CMD is /bin/sh, which exits at once on empty stdin.
    let action = spec(&wf, "default", &[]);
    let mut run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    assert_success(&result, &run.lines());
}

/// Pulling an image no registry has (and, here, no network to reach one)
/// fails promptly with a message naming the image.
#[tokio::test]
async fn pulling_a_missing_image_fails_quickly() {
    for policy in [PullPolicy::Always, PullPolicy::IfNotPresent] {
        let Some(rt) = runtime(DockerOptions {
            pull_policy: policy,
            ..Default::default()
        })
        .await
        else {
            return;
        };
        let wf = unique("pull");
        let work = tempfile::tempdir().unwrap();
        let mut action = spec(&wf, "missing", &["true"]);
        action.image = "bellows-test/does-not-exist:1.0".to_string();
        let run = Run::new(work.path());
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(60), rt.run(&action, &run.ctx))
            .await
            .unwrap_or_else(|_| panic!("pull with {policy:?} did not fail within 60 s"));
        assert_eq!(result.outcome, RunOutcome::Failed, "{policy:?}: {result:?}");
        assert_eq!(result.exit_code, None);
        assert!(
            result
                .message
                .starts_with("pulling image bellows-test/does-not-exist:1.0: "),
            "{policy:?}: {}",
            result.message
        );
        eprintln!(
            "{policy:?}: failed in {:?}: {}",
            started.elapsed(),
            result.message
        );
        assert!(containers_of(&rt, &wf).await.is_empty());
    }
}

#[tokio::test]
async fn pull_policy_never_requires_a_local_image() {
    let Some(rt) = runtime(DockerOptions {
        pull_policy: PullPolicy::Never,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let wf = unique("never");
    let work = tempfile::tempdir().unwrap();
    let mut action = spec(&wf, "missing", &["true"]);
    action.image = "bellows-test/does-not-exist".to_string();
    let run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    assert_eq!(result.outcome, RunOutcome::Failed);
    assert_eq!(
        result.message,
        "image bellows-test/does-not-exist:latest is not present and the pull policy is Never"
    );

    // The local test image runs without a pull.
    let action = spec(&wf, "present", &["true"]);
    let run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    assert_eq!(result.outcome, RunOutcome::Success, "{result:?}");
}

/// With a mirror configured, a Hub image found locally under its own name is
/// used as is (IfNotPresent checks both names before pulling).
#[tokio::test]
async fn a_mirror_does_not_hide_local_images() {
    let Some(rt) = runtime(DockerOptions {
        registry_mirror: Some("127.0.0.1:1".to_string()),
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let wf = unique("mirror");
    let work = tempfile::tempdir().unwrap();
    let action = spec(&wf, "local", &["true"]);
    let run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    assert_eq!(result.outcome, RunOutcome::Success, "{result:?}");

    // A missing Hub image is pulled from the mirror (here: nothing listens),
    // then from Docker Hub (here: no such image, or no network).
    let mut action = spec(&wf, "mirrored", &["true"]);
    action.image = "bellows-test/does-not-exist".to_string();
    let run = Run::new(work.path());
    let result = run_to_end(&rt, &action, &run).await;
    assert_eq!(result.outcome, RunOutcome::Failed);
    assert!(
        result
            .message
            .starts_with("pulling image 127.0.0.1:1/bellows-test/does-not-exist:latest: "),
        "{}",
        result.message
    );
    assert!(
        result
            .message
            .contains("; pulling image bellows-test/does-not-exist:latest: "),
        "{}",
        result.message
    );
}
