//! Not a test: the measurement behind `bench/osie.sh` (ignored, run on
//! demand; it asserts only that each boot worked). Three in-memory OS
//! variants, built here and booted in QEMU (TCG, BIOS) on a lab network
//! with a server and a registry:
//!
//! - `builtin`: `bellows image build --no-crun`, the image before issue 14;
//!   its first action is the built-in `bellows/writefile`;
//! - `crun`: `bellows image build`, the first action a container image
//!   pulled from the registry and run by crun;
//! - `docker`: the `builtin` image plus Debian's Docker engine (dockerd,
//!   containerd, runc, with their libraries) and an init that starts
//!   dockerd before the worker, as HookOS does; the same container action,
//!   run by the engine.
//!
//! For each: the initramfs's size, and from power-on the time to the
//! worker's connection, to the first action starting, and to it ending.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bellows_testkit::netns::{Lab, can_run};
use bellows_testkit::registry::{TestImage, TestRegistry, busybox_rootfs, layer_of};
use bellows_testkit::run_checked;

use crate::harness::{BIN, Server, ok};
use crate::vm::{Firmware, VmSpec, file_tail};

const SERVER_IP: &str = "10.82.0.1";
const LIMIT: Duration = Duration::from_secs(400);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Builtin,
    Crun,
    Docker,
}

/// The Docker engine's programs, appended to the image as a second cpio
/// (the kernel unpacks concatenated archives in order; a later `/init`
/// replaces the first).
const DOCKER_PROGRAMS: &[&str] = &[
    "/usr/sbin/dockerd",
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/sbin/runc",
    "/usr/bin/docker-init",
    "/usr/sbin/docker-proxy",
];

/// Adds the Docker engine and a dockerd-starting init to `osie/initramfs`.
fn add_docker(osie: &Path, work: &Path) {
    let root = work.join("docker-overlay");
    std::fs::create_dir_all(&root).unwrap();
    let init = run_checked(
        Command::new("sh").arg("-c").arg(format!(
            "zcat {} | cpio -i --quiet --to-stdout init",
            osie.join("initramfs").display()
        )),
        "reading the init",
    );
    let start = format!(
        r#"start_dockerd() {{
  log "starting dockerd"
  mkdir -p /var/lib/docker /etc/docker
  DOCKER_RAMDISK=true dockerd --storage-driver vfs --iptables=false --ip6tables=false \
    --bridge=none --insecure-registry {SERVER_IP}:5000 >/var/log/dockerd.log 2>&1 &
  _n=0
  until [ -S /var/run/docker.sock ] || [ $_n -ge 600 ]; do sleep 0.1; _n=$((_n + 1)); done
  log "dockerd socket after $_n tenths of a second"
}}

main() {{"#
    );
    let init = init.replacen("main() {", &start, 1).replacen(
        "  run_worker\n}",
        "  start_dockerd\n  run_worker\n}",
        1,
    );
    assert!(
        init.contains("start_dockerd\n  run_worker"),
        "init layout changed"
    );
    std::fs::write(root.join("init"), init).unwrap();
    let mut files: Vec<String> = DOCKER_PROGRAMS.iter().map(|s| s.to_string()).collect();
    for program in DOCKER_PROGRAMS {
        // Static programs make ldd fail: they need nothing more.
        let out = Command::new("ldd")
            .arg(program)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        files.extend(
            out.split_whitespace()
                .filter(|w| w.starts_with('/'))
                .map(str::to_string),
        );
    }
    files.sort();
    files.dedup();
    for file in files {
        let dest = root.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let real = std::fs::canonicalize(&file).unwrap();
        std::fs::copy(&real, &dest).unwrap();
    }
    run_checked(
        Command::new("sh").arg("-c").arg(format!(
            "cd {} && chmod 755 init && find . | cpio -o -H newc --quiet | gzip -6 >> {}",
            root.display(),
            osie.join("initramfs").display()
        )),
        "appending the engine",
    );
}

struct Timings {
    initramfs_bytes: u64,
    connected: Duration,
    first_started: Duration,
    first_done: Duration,
}

fn measure(variant: Variant, n: u32) -> Timings {
    let work_dir = tempfile::tempdir().unwrap();
    let work = work_dir.path().to_path_buf();
    let data = work.join("data");
    let osie = data.join("osie");
    std::fs::create_dir_all(&osie).unwrap();
    let mut build = Command::new(BIN);
    build.args(["image", "build", "--output-dir"]).arg(&osie);
    if variant != Variant::Crun {
        build.arg("--no-crun");
    }
    // bench/osie.sh passes the release worker: sizes as users get them.
    if let Some(worker) = std::env::var_os("BENCH_WORKER") {
        build.arg("--bellows").arg(worker);
    }
    run_checked(&mut build, "bellows image build");
    if variant == Variant::Docker {
        add_docker(&osie, &work);
    }
    let initramfs_bytes = std::fs::metadata(osie.join("initramfs")).unwrap().len();
    let tag = format!(
        "b{}{n}",
        format!("{variant:?}")
            .to_ascii_lowercase()
            .chars()
            .next()
            .unwrap()
    );
    let mut lab = Lab::new(&tag, &format!("{SERVER_IP}/24"));
    let tap = lab.tap(1);
    let ns = lab.server_ns.clone();
    let registry = TestRegistry::start(&format!("{SERVER_IP}:5000"), Some(&ns), None);
    let root = busybox_rootfs(&work.join("img"), &["sh", "echo"]);
    registry.push(
        "actions/hello",
        "1",
        &TestImage {
            layers: vec![layer_of(&root)],
            architecture: "amd64".into(),
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: Vec::new(),
            env: vec!["PATH=/bin".into()],
        },
    );
    let insecure = format!("bellows.insecure_registry={SERVER_IP}:5000");
    let server = Server::start_on_lab_bridge(
        &ns,
        SERVER_IP,
        &data,
        "reservation",
        &["--kernel-args", &insecure],
    );
    let (mac, ip) = ("52:54:00:82:00:10", "10.82.0.10");
    server.push_machine(&ns, "bench", mac, ip, SERVER_IP, true);
    let first = match variant {
        Variant::Builtin => "        image: bellows/writefile
        environment:
          DEST_PATH: /tmp/hello
          CONTENTS: hello"
            .to_string(),
        _ => format!(
            "        image: {SERVER_IP}:5000/actions/hello:1
        command: [\"echo hello\"]"
        ),
    };
    let template = format!(
        "version: \"0.1\"\nname: bench\nglobal_timeout: 600\ntasks:\n  - name: t\n    worker: \"{{{{.device_1}}}}\"\n    actions:\n      - name: first\n        timeout: 300\n{first}\n"
    );
    ok(&server.cli_netns(
        &ns,
        &["template", "create", "-n", "bench", "-p", "-"],
        Some(template.as_bytes()),
    ));
    let map = format!("{{\"device_1\":\"{mac}\"}}");
    let id = ok(&server.cli_netns(
        &ns,
        &["workflow", "create", "-t", "bench", "-r", &map],
        None,
    ))
    .trim()
    .to_string();
    let start = Instant::now();
    let mut vm = crate::vm::start_vm(&VmSpec {
        ns: &ns,
        tap: &tap,
        mac,
        fw: Firmware::Bios,
        work: &work,
        memory_mib: 2048,
        reboot: false,
        disk: None,
        disk_serial: None,
    });
    let (mut connected, mut started) = (None, None);
    let done = loop {
        let elapsed = start.elapsed();
        for line in server.drain_log() {
            if connected.is_none() && line.contains("worker connected") {
                connected = Some(elapsed);
            }
        }
        let out = ok(&server.cli_netns(&ns, &["workflow", "get", &id, "-o", "json"], None));
        let wf: serde_json::Value = serde_json::from_str(&out).unwrap();
        let state = wf["tasks"][0]["actions"][0]["state"].as_str().unwrap_or("");
        if started.is_none() && state != "PENDING" && !state.is_empty() {
            started = Some(elapsed);
        }
        match wf["state"].as_str() {
            Some("SUCCESS") => break elapsed,
            Some("FAILED" | "TIMEOUT") => panic!(
                "{variant:?}: {wf:#}\nconsole:\n{}",
                file_tail(&work.join("console.log"), 3000)
            ),
            _ => {}
        }
        assert!(
            elapsed < LIMIT,
            "{variant:?}: no success in {LIMIT:?}\nconsole:\n{}",
            file_tail(&work.join("console.log"), 3000)
        );
        if let Some(status) = vm.try_wait() {
            panic!("{variant:?}: VM exited ({status})");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let logs = ok(&server.cli_netns(&ns, &["workflow", "logs", &id], None));
    let ran_as = if logs.contains("crun version") {
        "crun"
    } else if logs.contains("pulling image") {
        "docker"
    } else {
        "builtin"
    };
    let expected = match variant {
        Variant::Builtin => "builtin",
        Variant::Crun => "crun",
        Variant::Docker => "docker",
    };
    assert_eq!(
        ran_as, expected,
        "{variant:?} ran its action elsewhere:\n{logs}"
    );
    drop(vm);
    Timings {
        initramfs_bytes,
        connected: connected.unwrap_or_default(),
        first_started: started.unwrap_or_default(),
        first_done: done,
    }
}

/// `bench/osie.sh` runs this with `--run-ignored only`.
#[test]
#[ignore = "a benchmark: bench/osie.sh"]
fn bench_in_memory_os_variants() {
    if !can_run() {
        return;
    }
    let rounds: u32 = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    println!(
        "| variant | initramfs MiB | power-on → worker connected s | → first action started s | → first action done s |"
    );
    println!("|---|---|---|---|---|");
    // BENCH_VARIANTS=builtin,crun,docker (default: all three).
    let wanted = std::env::var("BENCH_VARIANTS")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for variant in [Variant::Builtin, Variant::Crun, Variant::Docker] {
        let name = format!("{variant:?}").to_ascii_lowercase();
        if !wanted.is_empty() && !wanted.split(',').any(|w| w.trim() == name) {
            continue;
        }
        for n in 0..rounds {
            let t = measure(variant, n);
            println!(
                "| {variant:?} | {:.1} | {:.1} | {:.1} | {:.1} |",
                t.initramfs_bytes as f64 / (1024.0 * 1024.0),
                t.connected.as_secs_f64(),
                t.first_started.as_secs_f64(),
                t.first_done.as_secs_f64()
            );
        }
    }
}
