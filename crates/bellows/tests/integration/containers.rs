//! Container actions in the in-memory OS, on a QEMU VM (TCG) with an empty
//! disk: the workflow's first two actions are images in a real registry
//! (Debian's `docker-registry` on the lab network, plain HTTP, the images
//! built here from a static busybox and pushed over the registry's API);
//! the in-memory OS's worker pulls them and runs them with crun. One
//! writes the installed system's disk image (carried in its own layer) to
//! the disk; the other mounts the result through the task's `/dev:/dev`
//! volume and writes a hostname built from an environment value and a file
//! the first left in `/worker`. Then `bellows/reboot`; the installed system
//! calls back with that hostname. The test fails if either image action
//! ran as a built-in. BIOS and UEFI.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use bellows_testkit::netns::{Lab, can_run};
use bellows_testkit::registry::{TestImage, TestRegistry, busybox_rootfs, layer_of};
use bellows_testkit::run_checked;

use crate::harness::{BIN, Server, ok};
use crate::vm::{Firmware, Order, VmSpec, file_tail};

const SERVER_IP: &str = "10.81.0.1";
const TIMEOUT: Duration = Duration::from_secs(600);

const WRITER_APPLETS: &[&str] = &["sh", "zcat", "dd", "sync", "blockdev", "echo", "printf"];
const TAGGER_APPLETS: &[&str] = &["sh", "mount", "umount", "mkdir", "printf", "cat", "echo"];

fn have_tools() -> bool {
    crate::lifecycle::have(&["/usr/bin/crun"])
}

/// The two action images, pushed to `registry` as `actions/writer:1` and
/// `actions/tagger:1`.
fn push_images(registry: &TestRegistry, work: &Path) {
    let disk = crate::vm::installed_disk(SERVER_IP, "EFI/BOOT/BOOTX64.EFI");
    let writer_dir = work.join("writer");
    let root = busybox_rootfs(&writer_dir, WRITER_APPLETS);
    let base = layer_of(&root);
    let payload = writer_dir.join("payload");
    std::fs::create_dir_all(payload.join("image")).unwrap();
    let gz = run_checked(
        Command::new("sh").arg("-c").arg(format!(
            "gzip -1 -c {} > {}",
            disk.display(),
            payload.join("image/installed.img.gz").display()
        )),
        "gzip",
    );
    let _ = gz;
    let image = TestImage {
        layers: vec![base, layer_of(&payload)],
        architecture: "amd64".into(),
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: Vec::new(),
        env: vec!["PATH=/bin".into()],
    };
    registry.push("actions/writer", "1", &image);
    let tagger_dir = work.join("tagger");
    let root = busybox_rootfs(&tagger_dir, TAGGER_APPLETS);
    let image = TestImage {
        layers: vec![layer_of(&root)],
        ..image
    };
    registry.push("actions/tagger", "1", &image);
}

fn template(name: &str) -> String {
    format!(
        r#"
version: "0.1"
name: {name}
global_timeout: 900
tasks:
  - name: os-installation
    worker: "{{{{.device_1}}}}"
    volumes:
      - /dev:/dev
    actions:
      - name: write-disk
        image: {SERVER_IP}:5000/actions/writer:1
        timeout: 600
        command:
          - "zcat /image/installed.img.gz | dd of=/dev/vda bs=1M conv=fsync && blockdev --rereadpt /dev/vda && printf %s -ct > /worker/suffix"
      - name: tag-hostname
        image: {SERVER_IP}:5000/actions/tagger:1
        timeout: 120
        environment:
          HOST_NAME: "{name}"
        command:
          - "mkdir -p /target && mount -t vfat /dev/vda1 /target && printf %s \"$HOST_NAME$(cat /worker/suffix)\" > /target/hostname && umount /target && echo tagged $HOST_NAME"
      - name: reboot
        image: bellows/reboot
        timeout: 60
"#
    )
}

/// What writes the disk.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Install {
    /// Two container images from the registry (see the module docs).
    Containers,
    /// The built-in oci2disk, from a gzip artefact in the registry.
    Oci2Disk,
    /// The built-in qemuimg2disk, from a compressed qcow2 the server serves.
    QemuImg2Disk,
}

impl Install {
    fn suffix(self) -> &'static str {
        match self {
            Install::Containers => "-ct",
            Install::Oci2Disk => "-oci",
            Install::QemuImg2Disk => "-qcow2",
        }
    }
}

/// A workflow writing the disk with a built-in, then the hostname, then
/// reboot; Tinkerbell's image names, as their templates write them.
fn builtin_template(name: &str, install: Install) -> String {
    let write = match install {
        Install::Oci2Disk => format!(
            "      - name: write-disk
        image: quay.io/tinkerbell/actions/oci2disk:latest
        timeout: 600
        environment:
          IMG_URL: {SERVER_IP}:5000/disks/installed:raw.gz
          DEST_DISK: /dev/vda
          COMPRESSED: \"true\"
"
        ),
        _ => format!(
            "      - name: write-disk
        image: quay.io/tinkerbell/actions/qemuimg2disk:latest
        timeout: 600
        environment:
          IMG_URL: http://{SERVER_IP}:8080/osie/installed.qcow2
          DEST_DISK: /dev/vda
"
        ),
    };
    let suffix = install.suffix();
    format!(
        r#"
version: "0.1"
name: {name}
global_timeout: 900
tasks:
  - name: os-installation
    worker: "{{{{.device_1}}}}"
    volumes:
      - /dev:/dev
    actions:
{write}      - name: write-hostname
        image: quay.io/tinkerbell/actions/writefile:latest
        timeout: 120
        environment:
          DEST_DISK: /dev/vda1
          FS_TYPE: vfat
          DEST_PATH: /hostname
          CONTENTS: "{name}{suffix}"
          MODE: "0644"
          DIRMODE: "0755"
      - name: reboot
        image: bellows/reboot
        timeout: 60
"#
    )
}

fn workflow(server: &Server, ns: &str, id: &str) -> Value {
    let out = ok(&server.cli_netns(ns, &["workflow", "get", id, "-o", "json"], None));
    serde_json::from_str(&out).expect("workflow JSON")
}

fn install_with_containers(fw: Firmware, order: Order, tag: &str, mac: &str, ip: &str, name: &str) {
    install(Install::Containers, fw, order, tag, mac, ip, name);
}

fn install(how: Install, fw: Firmware, order: Order, tag: &str, mac: &str, ip: &str, name: &str) {
    if !can_run() || !have_tools() {
        return;
    }
    let work_dir = tempfile::tempdir().unwrap();
    let work = work_dir.path().to_path_buf();
    let data = work.join("data");
    let osie = data.join("osie");
    std::fs::create_dir_all(&osie).unwrap();
    let built = run_checked(
        Command::new(BIN)
            .args(["image", "build", "--output-dir"])
            .arg(&osie),
        "bellows image build",
    );
    assert!(
        built.contains("crun ") && built.contains("container actions run"),
        "the in-memory OS has no crun:\n{built}"
    );
    let mut lab = Lab::new(tag, &format!("{SERVER_IP}/24"));
    let tap = lab.tap(1);
    let ns = lab.server_ns.clone();
    let registry = TestRegistry::start(&format!("{SERVER_IP}:5000"), Some(&ns), None);
    match how {
        Install::Containers => push_images(&registry, &work),
        Install::Oci2Disk => {
            let disk = crate::vm::installed_disk(SERVER_IP, "EFI/BOOT/BOOTX64.EFI");
            let gz = work.join("installed.raw.gz");
            run_checked(
                Command::new("sh").arg("-c").arg(format!(
                    "gzip -1 -c {} > {}",
                    disk.display(),
                    gz.display()
                )),
                "gzip",
            );
            registry.push_artifact(
                "disks/installed",
                "raw.gz",
                &std::fs::read(&gz).unwrap(),
                "application/vnd.oci.image.layer.v1.tar",
            );
        }
        Install::QemuImg2Disk => {
            let disk = crate::vm::installed_disk(SERVER_IP, "EFI/BOOT/BOOTX64.EFI");
            let qemu_img = bellows_testkit::packages::ensure_installed("qemu-img", "qemu-utils");
            run_checked(
                Command::new(qemu_img)
                    .args(["convert", "-c", "-f", "raw", "-O", "qcow2"])
                    .arg(&disk)
                    .arg(osie.join("installed.qcow2")),
                "qemu-img convert",
            );
        }
    }
    let insecure = format!("bellows.insecure_registry={SERVER_IP}:5000");
    let server = Server::start_on_lab_bridge(
        &ns,
        SERVER_IP,
        &data,
        "reservation",
        &["--kernel-args", &insecure],
    );
    server.push_machine(&ns, name, mac, ip, SERVER_IP, true);
    ok(&server.cli_netns(
        &ns,
        &["template", "create", "-n", name, "-p", "-"],
        Some(
            match how {
                Install::Containers => template(name),
                other => builtin_template(name, other),
            }
            .as_bytes(),
        ),
    ));
    let map = format!("{{\"device_1\":\"{mac}\"}}");
    let id = ok(&server.cli_netns(
        &ns,
        &[
            "workflow",
            "create",
            "-t",
            name,
            "-r",
            &map,
            "--toggle-netboot",
        ],
        None,
    ))
    .trim()
    .to_string();

    let disk = work.join("vm-disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(256 << 20))
        .expect("empty disk");
    let start = Instant::now();
    let mut vm = crate::vm::start_vm(&VmSpec {
        ns: &ns,
        tap: &tap,
        mac,
        fw,
        work: &work,
        memory_mib: 1024,
        reboot: true,
        disk: Some((&disk, order)),
        disk_serial: None,
    });
    let console = || file_tail(&work.join("console.log"), 4000);
    let mut first_action_at: Option<Duration> = None;
    let callback = loop {
        let wf = workflow(&server, &ns, &id);
        match wf["state"].as_str() {
            Some("FAILED") | Some("TIMEOUT") | Some("CANCELLED") => {
                let logs = server.cli_netns(&ns, &["workflow", "logs", &id], None);
                panic!(
                    "workflow ended {}: {wf:#}\nlogs:\n{}\nconsole:\n{}",
                    wf["state"],
                    String::from_utf8_lossy(&logs.stdout),
                    console()
                )
            }
            _ => {}
        }
        if first_action_at.is_none()
            && wf["tasks"][0]["actions"][0]["state"]
                .as_str()
                .is_some_and(|s| s != "PENDING")
        {
            first_action_at = Some(start.elapsed());
        }
        let logs = ok(&server.cli_netns(&ns, &["hardware", "logs", name], None));
        if let Some(line) = logs.lines().find(|l| l.contains("installed hostname=")) {
            break line.to_string();
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "no call-back within {TIMEOUT:?}; workflow {wf:#}\nconsole:\n{}",
            console()
        );
        if let Some(status) = vm.try_wait() {
            panic!(
                "VM exited ({status}) without a call-back\nconsole:\n{}",
                console()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let suffix = how.suffix();
    assert!(
        callback.contains(&format!("installed hostname={name}{suffix} ip={ip}")),
        "the installed system read the hostname the workflow wrote: {callback}"
    );
    let wf = workflow(&server, &ns, &id);
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}");
    if how != Install::Containers {
        let logs = ok(&server.cli_netns(
            &ns,
            &["workflow", "logs", &id, "--action", "write-disk"],
            None,
        ));
        let verified = match how {
            Install::Oci2Disk => "download sha256:",
            _ => "MiB of data",
        };
        assert!(logs.contains(verified), "write-disk:\n{logs}");
        eprintln!(
            "BUILTIN {how:?} {fw:?}: call-back {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let _ = vm.wait_timeout(Duration::from_secs(5));
        return;
    }
    for action in ["write-disk", "tag-hostname"] {
        let logs = ok(&server.cli_netns(&ns, &["workflow", "logs", &id, "--action", action], None));
        assert!(
            logs.contains(&format!("running {SERVER_IP}:5000/actions/"))
                && logs.contains("in container")
                && logs.contains("crun version")
                && logs.contains("pulled "),
            "{action} did not run as a pulled container:\n{logs}"
        );
        assert!(
            !logs.to_ascii_lowercase().contains("built-in"),
            "{action} ran as a built-in:\n{logs}"
        );
    }
    let tagged = ok(&server.cli_netns(
        &ns,
        &["workflow", "logs", &id, "--action", "tag-hostname"],
        None,
    ));
    assert!(tagged.contains(&format!("tagged {name}")), "{tagged}");
    eprintln!(
        "CONTAINERS {fw:?}: power-on → first action {:.1} s → call-back {:.1} s",
        first_action_at.unwrap_or_default().as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    let _ = vm.wait_timeout(Duration::from_secs(5));
}

/// BIOS: SeaBIOS and QEMU's iPXE ROM, network first.
#[test]
fn bios_vm_installs_with_container_actions_from_a_registry() {
    install_with_containers(
        Firmware::Bios,
        Order::NetworkFirst,
        "cb",
        "52:54:00:81:00:10",
        "10.81.0.10",
        "containers-bios",
    );
}

/// UEFI: OVMF, the blank disk first; after the install the disk boots.
#[test]
fn uefi_vm_installs_with_container_actions_from_a_registry() {
    install_with_containers(
        Firmware::Uefi,
        Order::DiskFirst,
        "cu",
        "52:54:00:81:00:11",
        "10.81.0.11",
        "containers-uefi",
    );
}

/// On an ordinary host with `--container-runtime crun`: a login the server
/// was given (`--registry-auth`) reaches the worker over its authenticated
/// stream and pulls a private image; a registry nobody gave a login for, a
/// missing image and an arm64 image each fail the workflow with the cause.
/// The password appears in neither the server's nor the worker's log.
#[test]
fn pull_failures_fail_the_workflow_with_their_cause() {
    use crate::workers::{Worker, logs, wait_state, workflow};
    use bellows_testkit::ports::free_tcp_port;
    use bellows_testkit::registry::crun_for_tests;

    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(&dir.path().join("img"), &["sh", "echo"]);
    let image = TestImage {
        layers: vec![layer_of(&root)],
        architecture: "amd64".into(),
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: Vec::new(),
        env: vec!["PATH=/bin".into()],
    };
    let open = TestRegistry::start(&format!("127.0.0.1:{}", free_tcp_port()), None, None);
    open.push(
        "tools/arm",
        "1",
        &TestImage {
            architecture: "arm64".into(),
            ..image.clone()
        },
    );
    let given = TestRegistry::start(
        &format!("127.0.0.1:{}", free_tcp_port()),
        None,
        Some(("puller", "given-s3cret")),
    );
    given.push("private/tool", "1", &image);
    let withheld = TestRegistry::start(
        &format!("127.0.0.1:{}", free_tcp_port()),
        None,
        Some(("other", "withheld-s3cret")),
    );
    withheld.push("private/tool", "1", &image);
    let auth = dir.path().join("registry-auth.json");
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths": {{"{}": {{"username": "puller", "password": "given-s3cret"}}}}}}"#,
            given.addr
        ),
    )
    .unwrap();
    let s = Server::start_with(dir.path(), &["--registry-auth", &auth.to_string_lossy()]);
    let crun = crun_for_tests(dir.path());
    let cases = [
        (
            "02:00:00:00:81:01",
            format!("{}/private/tool:1", given.addr),
            None,
        ),
        (
            "02:00:00:00:81:02",
            format!("{}/private/tool:1", withheld.addr),
            Some("it needs a login"),
        ),
        (
            "02:00:00:00:81:03",
            format!("{}/tools/nothing:1", open.addr),
            Some("was not found"),
        ),
        (
            "02:00:00:00:81:04",
            format!("{}/tools/arm:1", open.addr),
            Some("built for linux/arm64, not this machine's linux/amd64"),
        ),
    ];
    for (n, (mac, image, failure)) in cases.iter().enumerate() {
        let name = format!("pull-{n}");
        let t = format!(
            r#"
version: "0.1"
name: {name}
global_timeout: 120
tasks:
  - name: t
    worker: "{{{{.device_1}}}}"
    actions:
      - name: pull-and-run
        image: {image}
        timeout: 60
        environment:
          WHO: "{name}"
        command: ["echo ran-$WHO"]
"#
        );
        let id = workflow(&s, &name, &t, &[("device_1", mac)]);
        let w = Worker::start(
            &s.http_url,
            mac,
            dir.path(),
            &[
                "--container-runtime",
                "crun",
                "--crun",
                &crun.to_string_lossy(),
            ],
        );
        let wf = wait_state(
            &s,
            &id,
            &["SUCCESS", "FAILED", "TIMEOUT"],
            Duration::from_secs(90),
        );
        let worker_log = w.log_text();
        assert!(
            !worker_log.contains("given-s3cret"),
            "the worker logged the password"
        );
        match failure {
            None => {
                assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{worker_log}");
                let lines = logs(&s, &id);
                assert!(
                    lines.iter().any(|l| l.contains(&format!("ran-{name}"))),
                    "{lines:#?}"
                );
            }
            Some(cause) => {
                assert_eq!(wf["state"], "FAILED", "{wf:#}");
                let message = wf["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains(cause) && message.contains("pull-and-run"),
                    "{image}: {message}"
                );
            }
        }
        drop(w);
    }
    let server_log = s.drain_log();
    assert!(
        !server_log.iter().any(|l| l.contains("given-s3cret")),
        "the server logged the password"
    );
}

/// BIOS: Tinkerbell's oci2disk, built in, writes the disk from a gzip
/// artefact in the lab's registry (as `oras push` stores one).
#[test]
fn bios_vm_installs_with_oci2disk_from_a_registry() {
    install(
        Install::Oci2Disk,
        Firmware::Bios,
        Order::NetworkFirst,
        "co",
        "52:54:00:81:00:12",
        "10.81.0.12",
        "oci2disk-bios",
    );
}

/// UEFI: Tinkerbell's qemuimg2disk, built in, converts a compressed
/// qcow2 (made by qemu-img) served by Bellows' own `/osie/` by ranges.
#[test]
fn uefi_vm_installs_with_qemuimg2disk_from_a_qcow2() {
    install(
        Install::QemuImg2Disk,
        Firmware::Uefi,
        Order::DiskFirst,
        "cq",
        "52:54:00:81:00:13",
        "10.81.0.13",
        "qemuimg2disk-uefi",
    );
}

/// Tinkerbell's rootio, built in, on a blank VM disk: `partition`,
/// `format` and `mount` from the storage layout in the machine's own
/// record (read from the server's metadata service by the machine's
/// address), then a file written into the mounted root, then power-off.
/// The disk is judged afterwards on this host by `sfdisk` and e2fsprogs'
/// `debugfs`.
#[test]
fn a_vm_partitions_formats_and_mounts_its_disk_with_rootio() {
    if !can_run() || !have_tools() {
        return;
    }
    let (mac, ip, name) = ("52:54:00:81:00:14", "10.81.0.14", "rootio-bios");
    let work_dir = tempfile::tempdir().unwrap();
    let work = work_dir.path().to_path_buf();
    let data = work.join("data");
    let osie = data.join("osie");
    std::fs::create_dir_all(&osie).unwrap();
    run_checked(
        Command::new(BIN)
            .args(["image", "build", "--output-dir"])
            .arg(&osie),
        "bellows image build",
    );
    let mut lab = Lab::new("cr", &format!("{SERVER_IP}/24"));
    let tap = lab.tap(1);
    let ns = lab.server_ns.clone();
    let server = Server::start_on_lab_bridge(&ns, SERVER_IP, &data, "reservation", &[]);
    let hw = serde_json::json!({"id": name, "network": {"interfaces": [{
        "dhcp": {"mac": mac, "hostname": name, "lease_time": 600,
                 "ip": {"address": ip, "netmask": "255.255.255.0", "gateway": SERVER_IP}},
        "netboot": {"allow_pxe": true, "allow_workflow": true}}]},
        "metadata": {"instance": {"hostname": name, "storage": {
            "disks": [{"device": "/dev/vda", "wipe_table": true, "partitions": [
                {"label": "BIOS", "number": 1, "size": 4096},
                {"label": "SWAP", "number": 2, "size": "32M"},
                {"label": "ROOT", "number": 3, "size": 0}]}],
            "filesystems": [
                {"mount": {"device": "/dev/vda3", "format": "ext4", "point": "/",
                           "create": {"options": ["-L", "ROOT"]}}},
                {"mount": {"device": "/dev/vda2", "format": "swap", "point": "none",
                           "create": {"options": ["-L", "SWAP"]}}}]}}}});
    ok(&server.cli_netns(
        &ns,
        &["hardware", "push", "-f", "-"],
        Some(hw.to_string().as_bytes()),
    ));
    let template = format!(
        r#"
version: "0.1"
name: {name}
global_timeout: 600
tasks:
  - name: disks
    worker: "{{{{.device_1}}}}"
    actions:
      - name: partition
        image: quay.io/tinkerbell-actions/rootio:v1.0.0
        timeout: 90
        command: ["partition"]
      - name: format
        image: quay.io/tinkerbell-actions/rootio:v1.0.0
        timeout: 90
        command: ["format"]
      - name: mount
        image: quay.io/tinkerbell-actions/rootio:v1.0.0
        timeout: 90
        command: ["mount"]
      - name: mark
        image: bellows/writefile
        timeout: 60
        environment:
          DEST_PATH: /mountAction/etc/installed-by
          CONTENTS: "rootio {name}"
          MODE: "0644"
          DIRMODE: "0755"
      - name: off
        image: bellows/reboot
        timeout: 60
        environment:
          ACTION: poweroff
"#
    );
    ok(&server.cli_netns(
        &ns,
        &["template", "create", "-n", name, "-p", "-"],
        Some(template.as_bytes()),
    ));
    let map = format!("{{\"device_1\":\"{mac}\"}}");
    let id = ok(&server.cli_netns(&ns, &["workflow", "create", "-t", name, "-r", &map], None))
        .trim()
        .to_string();
    let disk = work.join("vm-disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(256 << 20))
        .expect("empty disk");
    let start = Instant::now();
    let mut vm = crate::vm::start_vm(&VmSpec {
        ns: &ns,
        tap: &tap,
        mac,
        fw: Firmware::Bios,
        work: &work,
        memory_mib: 1024,
        reboot: false,
        disk: Some((&disk, Order::NetworkFirst)),
        disk_serial: None,
    });
    let console = || file_tail(&work.join("console.log"), 4000);
    loop {
        let wf = workflow(&server, &ns, &id);
        match wf["state"].as_str() {
            Some("SUCCESS") => break,
            Some("FAILED" | "TIMEOUT" | "CANCELLED") => {
                let logs = server.cli_netns(&ns, &["workflow", "logs", &id], None);
                panic!(
                    "workflow ended {}: {wf:#}\nlogs:\n{}\nconsole:\n{}",
                    wf["state"],
                    String::from_utf8_lossy(&logs.stdout),
                    console()
                );
            }
            _ => {}
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "no success: {wf:#}\nconsole:\n{}",
            console()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Powered off: the disk is ours to read.
    assert!(
        vm.wait_timeout(Duration::from_secs(60)).is_some(),
        "the VM did not power off"
    );
    let table = Command::new("sfdisk")
        .args(["--json"])
        .arg(&disk)
        .output()
        .unwrap();
    let table: Value = serde_json::from_slice(&table.stdout).expect("sfdisk reads the table");
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{table:#}");
    assert_eq!(parts[1]["size"].as_u64(), Some(65536));
    let root = &parts[2];
    let offset = root["start"].as_u64().unwrap() * 512;
    let size = root["size"].as_u64().unwrap() * 512;
    let root_img = work.join("root.img");
    run_checked(
        Command::new("dd")
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", root_img.display()))
            .args(["bs=512", "status=none"])
            .arg(format!("skip={}", offset / 512))
            .arg(format!("count={}", size / 512)),
        "dd",
    );
    let cat = run_checked(
        Command::new("debugfs")
            .args(["-R", "cat /etc/installed-by"])
            .arg(&root_img),
        "debugfs",
    );
    assert!(cat.contains(&format!("rootio {name}")), "{cat}");
    eprintln!(
        "ROOTIO: power-on → powered off {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
