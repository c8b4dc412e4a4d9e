use super::*;

/// The seed's hello-world template (seed 000/001), with the `tasks:` and
/// `actions:` keys the blog's formatting dropped restored.
pub(crate) const HELLO_WORLD: &str = r#"version: "0.1"
name: hello_world_workflow
global_timeout: 600
tasks:
  - name: "hello world"
    worker: "{{.device_1}}"
    actions:
      - name: "hello_world"
        image: hello-world
        timeout: 60
"#;

fn err(yaml: &str) -> ValidationError {
    Template::parse(yaml, Strictness::Source).expect_err("should be refused")
}

#[test]
fn seed_hello_world_parses() {
    let t = Template::parse(HELLO_WORLD, Strictness::Source).unwrap();
    assert_eq!(t.name, "hello_world_workflow");
    assert_eq!(t.global_timeout, 600);
    assert_eq!(t.tasks[0].worker, "{{.device_1}}");
    assert_eq!(t.tasks[0].actions[0].image, "hello-world");
    assert_eq!(t.tasks[0].actions[0].timeout, 60);
}

#[test]
fn full_action_fields_parse() {
    let yaml = r#"
version: 0.1
name: debian
global_timeout: 1800
tasks:
  - name: os-installation
    worker: "{{.device_1}}"
    volumes:
      - /dev:/dev
      - /lib/firmware:/lib/firmware:ro
    environment:
      MIRROR_HOST: 192.168.1.2
    actions:
      - name: stream-image
        image: quay.io/tinkerbell-actions/image2disk:v1.0.0
        timeout: 600
        environment:
          DEST_DISK: /dev/sda
          COMPRESSED: true
          BLOCK_SIZE: 4096
      - name: kexec
        image: ghcr.io/jacobweinstock/waitdaemon:0.2.1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
        timeout: 90
        pid: host
        command: ["/bin/sh", "-c", "kexec"]
        on-timeout: ["echo", "timeout"]
        on-failure: echo failed
        retries: 2
"#;
    let t = Template::parse(yaml, Strictness::Rendered).unwrap();
    assert_eq!(t.version, "0.1");
    let a = &t.tasks[0].actions[0];
    assert_eq!(a.environment["COMPRESSED"], "true");
    assert_eq!(a.environment["BLOCK_SIZE"], "4096");
    let k = &t.tasks[0].actions[1];
    assert_eq!(k.pid.as_deref(), Some("host"));
    assert_eq!(k.on_failure, ["echo failed"]);
    assert_eq!(k.retries, 2);
    assert_eq!(t.tasks[0].volumes.len(), 2);
}

#[test]
fn invalid_image_names_the_action() {
    let yaml = HELLO_WORLD.replace("image: hello-world", "image: Hello-World");
    let e = err(&yaml);
    assert_eq!(e.field, "tasks[0].actions[0].image");
    assert!(e.message.contains("not a valid image reference"), "{e}");
}

#[test]
fn image_reference_grammar() {
    for ok in [
        "hello-world",
        "library/hello-world:latest",
        "quay.io/tinkerbell-actions/image2disk:v1.0.0",
        "127.0.0.1:5000/actions/writefile",
        "localhost/writefile",
        "a__b/c.d-e---f:tag_1.2-x",
        "bellows/image2disk",
        "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert!(check_image(ok).is_ok(), "{ok}: {:?}", check_image(ok));
    }
    for bad in [
        "",
        "Hello",
        "hello world",
        "hello:",
        "hello:-tag",
        "-hello",
        "hello/",
        "a..b",
        "a___b",
        "host:99999/x",
        "busybox@sha256:abc",
        "busybox@md5",
    ] {
        assert!(check_image(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn structural_errors_name_the_path() {
    assert_eq!(err("name: x\ntasks: []\n").field, "tasks");
    assert!(err("name: x\n").message.contains("tasks"));
    let e = err(&HELLO_WORLD.replace("        timeout: 60", "        timeout: soon"));
    assert_eq!(e.field, "tasks[0].actions[0].timeout");
    let e = err(&HELLO_WORLD.replace("        timeout: 60", "        timout: 60"));
    assert_eq!(e.field, "tasks[0].actions[0].timout");
    assert!(e.message.contains("unknown field"), "{e}");
    let e = err(&HELLO_WORLD.replace("worker: \"{{.device_1}}\"", "worker: \"\""));
    assert_eq!(e.field, "tasks[0].worker");
    let e = err(&HELLO_WORLD.replace("version: \"0.1\"", "version: \"2\""));
    assert_eq!(e.field, "version");
}

#[test]
fn duplicate_names_are_refused() {
    let yaml = format!("{HELLO_WORLD}      - name: \"hello_world\"\n        image: hello-world\n");
    let e = err(&yaml);
    assert_eq!(e.field, "tasks[0].actions[1].name");
    let task = "  - name: \"hello world\"\n    worker: x\n    actions:\n      - name: a\n        image: b\n";
    let e = err(&format!("{HELLO_WORLD}{task}"));
    assert_eq!(e.field, "tasks[1].name");
}

#[test]
fn malformed_yaml_is_refused() {
    let e = err("version: \"0.1\"\nname: [unclosed\n");
    assert!(e.message.contains("not valid YAML"), "{e}");
    assert!(err("- a\n- b\n").message.contains("mapping"));
    let big = "#".repeat(MAX_TEMPLATE_BYTES + 1);
    assert!(err(&big).message.contains("limit"));
}

#[test]
fn placeholders_are_checked_only_after_rendering() {
    let yaml = HELLO_WORLD.replace("image: hello-world", "image: \"{{.registry}}/hello\"");
    assert!(Template::parse(&yaml, Strictness::Source).is_ok());
    assert!(Template::parse(&yaml, Strictness::Rendered).is_err());
}

#[test]
fn volumes_and_pid_are_checked() {
    let yaml = HELLO_WORLD.replace(
        "        timeout: 60",
        "        timeout: 60\n        volumes: [\"relative:path\"]",
    );
    assert_eq!(err(&yaml).field, "tasks[0].actions[0].volumes[0]");
    let yaml = HELLO_WORLD.replace(
        "        timeout: 60",
        "        timeout: 60\n        pid: container",
    );
    assert_eq!(err(&yaml).field, "tasks[0].actions[0].pid");
}
