use super::*;
use crate::hardware::Hardware;
use std::path::PathBuf;

/// The machine every golden case renders against: two disks, one NIC, the
/// instance metadata a Tinkerbell user would have.
const GOLDEN_HARDWARE: &str = r##"{
  "apiVersion": "tinkerbell.org/v1alpha1",
  "kind": "Hardware",
  "metadata": {"name": "sm01"},
  "spec": {
    "disks": [{"device": "/dev/nvme0n1"}, {"device": "/dev/sda"}],
    "metadata": {
      "facility": {"facility_code": "onprem"},
      "instance": {"hostname": "sm01", "id": "3c:ec:ef:4c:4f:54",
                   "operating_system": {"distro": "debian", "version": "12"}}
    },
    "interfaces": [{
      "dhcp": {"arch": "x86_64", "hostname": "sm01", "mac": "3c:ec:ef:4c:4f:54",
               "ip": {"address": "172.16.10.100", "gateway": "172.16.10.1", "netmask": "255.255.255.0"},
               "lease_time": 86400, "name_servers": ["172.16.10.1", "10.1.1.11"],
               "uefi": true, "vlan_id": "10"},
      "netboot": {"allowPXE": true, "allowWorkflow": true, "osie": {"baseURL": "http://172.16.10.2/hook"}}
    }],
    "userData": "#cloud-config\nhostname: sm01"
  }
}"##;

fn golden_context() -> RenderContext {
    RenderContext {
        hardware_map: [
            ("device_1".to_string(), "3c:ec:ef:4c:4f:54".to_string()),
            ("device_2".to_string(), "3c:ec:ef:4c:4f:01".to_string()),
        ]
        .into(),
        hardware: Some(Hardware::from_json(GOLDEN_HARDWARE.as_bytes()).unwrap()),
    }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The template data as JSON, for the Go side of the golden test.
fn to_json(v: &GoValue) -> Value {
    match v {
        GoValue::Nil => Value::Null,
        GoValue::Bool(b) => Value::Bool(*b),
        GoValue::Int(i) => (*i).into(),
        GoValue::Uint(u) => (*u).into(),
        GoValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        GoValue::String(s) => Value::String(s.to_string()),
        GoValue::List(items) => Value::Array(items.iter().map(to_json).collect()),
        GoValue::Map(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect())
        }
        other => panic!("unexpected value in template data: {other:?}"),
    }
}

/// Go reads `context.json`; it must be exactly the data Bellows renders with,
/// or the comparison proves nothing. `UPDATE_GOLDEN=1` rewrites it.
#[test]
fn golden_context_is_current() {
    let json =
        serde_json::to_string_pretty(&to_json(&context_value(&golden_context()))).unwrap() + "\n";
    let path = golden_dir().join("context.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &json).unwrap();
    }
    let committed =
        std::fs::read_to_string(&path).expect("context.json exists (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        committed, json,
        "context.json is stale: run with UPDATE_GOLDEN=1, then the Go renderer"
    );
}

/// Each `NAME.tmpl` renders to exactly `NAME.out`, as produced by Go's
/// `text/template` (`tests/golden/go/main.go`, run by `scripts/golden.sh`),
/// or fails where Go failed (`NAME.err`).
#[test]
fn renders_like_go_text_template() {
    let ctx = golden_context();
    let mut cases: Vec<_> = std::fs::read_dir(golden_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tmpl"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 9, "golden cases missing");
    for case in cases {
        let source = std::fs::read_to_string(&case).unwrap();
        let ours = render_text(&source, &ctx);
        let out = case.with_extension("out");
        let err = case.with_extension("err");
        if out.exists() {
            let expected = std::fs::read_to_string(&out).unwrap();
            match ours {
                Ok(text) => assert_eq!(text, expected, "{} differs from Go", case.display()),
                Err(e) => panic!("{}: Go rendered it, we failed: {e}", case.display()),
            }
        } else if err.exists() {
            let go_err = std::fs::read_to_string(&err).unwrap();
            assert!(
                ours.is_err(),
                "{}: Go failed ({go_err}), we rendered it",
                case.display()
            );
        } else {
            panic!("{} has no Go result: run scripts/golden.sh", case.display());
        }
    }
}

#[test]
fn missing_key_error_names_the_key() {
    let source = std::fs::read_to_string(golden_dir().join("06-missing-key.tmpl")).unwrap();
    let e = render_text(&source, &golden_context()).unwrap_err();
    assert_eq!(e.field, "hardware_map");
    assert!(e.message.contains("device_3"), "{e}");
    assert!(e.message.contains("device_1, device_2"), "{e}");
}

#[test]
fn render_gives_a_strictly_valid_workflow() {
    let source = std::fs::read_to_string(golden_dir().join("07-two-workers.tmpl")).unwrap();
    let (_, t) = render(&source, &golden_context()).unwrap();
    assert_eq!(t.tasks[0].worker, "3c:ec:ef:4c:4f:54");
    assert_eq!(t.tasks[1].worker, "3c:ec:ef:4c:4f:01");
    assert_eq!(t.tasks[0].actions[0].environment["ROOT"], "/dev/nvme0n1p3");
    assert_eq!(t.tasks[0].actions[0].environment["HOST"], "sm01");
}

#[test]
fn rendered_values_are_validated() {
    let source = "version: \"0.1\"\nname: x\ntasks:\n  - name: t\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: a\n        image: \"{{.img}}\"\n";
    let mut ctx = golden_context();
    ctx.hardware_map.insert("img".into(), "Not A Ref".into());
    let e = render(source, &ctx).unwrap_err();
    assert_eq!(e.field, "tasks[0].actions[0].image");
    ctx.hardware_map.insert("device_1".into(), "".into());
    ctx.hardware_map.insert("img".into(), "busybox".into());
    assert_eq!(render(source, &ctx).unwrap_err().field, "tasks[0].worker");
}

#[test]
fn format_partition_rules() {
    assert_eq!(format_partition("/dev/nvme0n1", 1), "/dev/nvme0n1p1");
    assert_eq!(format_partition("/dev/sda", 1), "/dev/sda1");
    assert_eq!(format_partition("/dev/mmcblk0", 1), "/dev/mmcblk0");
}
