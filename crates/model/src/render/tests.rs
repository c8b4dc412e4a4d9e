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

/// The bomb of issue 12: ten nested defines, each calling the one below it
/// ten times (10¹⁰ calls of the innermost), in about 2 KB.
fn template_bomb(innermost: &str) -> String {
    let mut s = format!("{{{{define \"a0\"}}}}{innermost}{{{{end}}}}\n");
    for level in 1..10 {
        s += &format!("{{{{define \"a{level}\"}}}}");
        for _ in 0..10 {
            s += &format!("{{{{template \"a{}\"}}}}", level - 1);
        }
        s += "{{end}}\n";
    }
    s + "version: \"0.1\"\nname: bomb\nglobal_timeout: 60\ntasks:\n  - name: t\n    worker: \"{{template \"a9\"}}\"\n    actions:\n      - name: a\n        image: busybox\n        timeout: 60\n"
}

/// The process's peak resident memory (`VmHWM`), in kB. nextest runs each
/// test in its own process, so this is the test's own peak.
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Renders `source` and checks it is refused for `budget_word` within a
/// few seconds and without the process's peak memory growing 100 MB.
fn assert_refused_quickly(source: &str, ctx: &RenderContext, budget_word: &str) -> String {
    let before = peak_rss_kb();
    let started = std::time::Instant::now();
    let e = render_text(source, ctx).unwrap_err();
    let took = started.elapsed();
    let grew_mb = (peak_rss_kb() - before) / 1024;
    assert_eq!(e.field, "template", "{e}");
    assert!(e.message.contains(budget_word), "{e}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert!(grew_mb < 100, "peak memory grew {grew_mb} MB");
    eprintln!("refused in {took:?}, peak memory +{grew_mb} MB: {e}");
    e.message
}

#[test]
fn template_bomb_is_refused_within_the_work_budget() {
    let bomb = template_bomb("");
    assert!(bomb.len() < 2100, "the bomb is {} bytes", bomb.len());
    let msg = assert_refused_quickly(&bomb, &golden_context(), "work budget");
    assert!(msg.contains("1000000 steps"), "{msg}");
}

#[test]
fn template_bomb_with_output_is_refused_within_the_output_budget() {
    let bomb = template_bomb("x");
    let msg = assert_refused_quickly(&bomb, &golden_context(), "output budget");
    assert!(
        msg.contains(&crate::template::MAX_TEMPLATE_BYTES.to_string()),
        "{msg}"
    );
}

#[test]
fn doubling_a_variable_is_refused_before_it_allocates() {
    let loop_ = "{{$x := \"0123456789abcdef\"}}{{range 60}}{{$x = printf \"%s%s\" $x $x}}{{end}}ok";
    assert_refused_quickly(loop_, &golden_context(), "over the budget of 1048576 bytes");
    let print = "{{$x := \"0123456789abcdef\"}}{{range 60}}{{$x = print $x $x}}{{end}}ok";
    assert_refused_quickly(print, &golden_context(), "print would make");
    // 256 KiB of `<` is within the limit; as `&lt;` it would not be.
    let escape = "{{$x := \"<<<<<<<<\"}}{{range 15}}{{$x = print $x $x}}{{end}}{{html $x}}";
    assert_refused_quickly(escape, &golden_context(), "html would make");
    // Doubling through recursion instead of a loop: 2^k, k up to the depth limit.
    let recursive =
        "{{define \"d\"}}{{template \"d\" (print . .)}}{{end}}{{template \"d\" \"ab\"}}";
    assert_refused_quickly(recursive, &golden_context(), "print would make");
    let width = "{{range 100000}}{{printf \"%65535d\" 1}}{{end}}";
    assert_refused_quickly(width, &golden_context(), "output budget");
}

#[test]
fn copying_a_big_value_over_and_over_is_bounded_by_the_text_budget() {
    // 256 KiB made once, then compared 1,000 times: 512 MB of comparing.
    let source = "{{$x := printf \"%65535s%65535s%65535s%65535s\" \"\" \"\" \"\" \"\"}}{{range 1000}}{{if eq $x $x}}{{end}}{{end}}ok";
    assert_refused_quickly(source, &golden_context(), "work budget of 67108864 bytes");
}

#[test]
fn the_budget_is_checked_at_create_when_the_data_does_not_matter() {
    let e = check_budget(&template_bomb("")).unwrap_err();
    assert!(e.message.contains("work budget"), "{e}");
    assert!(e.message.contains("even with no hardware"), "{e}");
    assert!(check_budget(&template_bomb("x")).is_err());
    // A bomb behind a key the empty data lacks is left to the workflow.
    let guarded = format!("{{{{if .device_9}}}}{}{{{{end}}}}", template_bomb(""));
    assert!(check_budget(&guarded).is_ok());
    let mut ctx = golden_context();
    ctx.hardware_map.insert("device_9".into(), "yes".into());
    assert_refused_quickly(&guarded, &ctx, "work budget");
    // Every golden case with valid syntax passes, those that fail with
    // real data included.
    for case in std::fs::read_dir(golden_dir()).unwrap() {
        let path = case.unwrap().path();
        let valid =
            |p: &std::path::Path| check_syntax(&std::fs::read_to_string(p).unwrap()).is_ok();
        if path.extension().is_some_and(|x| x == "tmpl") && valid(&path) {
            let source = std::fs::read_to_string(&path).unwrap();
            check_budget(&source).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

#[test]
fn a_big_legitimate_template_renders_as_before() {
    // 2,000 actions through a define, ranges and printf: about 200 KB out,
    // under the output budget, and exactly what unmetered gotmpl makes.
    let source = "{{define \"action\"}}      - name: \"a{{.}}\"\n        image: busybox\n        timeout: 60\n        environment:\n          N: \"{{printf \"%05d\" .}}\"\n{{end}}version: \"0.1\"\nname: big\nglobal_timeout: 60\ntasks:\n  - name: t\n    worker: \"{{.device_1}}\"\n    actions:\n{{range $i := 2000}}{{template \"action\" $i}}{{end}}";
    let ours = render_text(source, &golden_context()).unwrap();
    let plain = gotmpl::Template::new("workflow-template")
        .parse(source)
        .unwrap()
        .execute_to_string(&context_value(&golden_context()))
        .unwrap();
    assert_eq!(ours, plain);
    assert!(ours.len() > 150_000, "{}", ours.len());
    // And a budget just below what it needs refuses it, naming the limit.
    let tight = RenderBudget {
        max_output: ours.len() - 1,
        ..RenderBudget::default()
    };
    let e = render_text_within(source, &golden_context(), tight).unwrap_err();
    assert!(e.message.contains("output budget"), "{e}");
    let few_steps = RenderBudget {
        max_steps: 1000,
        ..RenderBudget::default()
    };
    let e = render_text_within(source, &golden_context(), few_steps).unwrap_err();
    assert!(e.message.contains("1000 steps"), "{e}");
}

fn render_one(source: &str) -> Result<String, ValidationError> {
    render_text(source, &golden_context())
}

#[test]
fn sprig_text_functions_render_as_sprig_does() {
    let cases = [
        ("{{ lower \"X86_64\" }}", "x86_64"),
        ("{{ .device_1 | upper }}", "3C:EC:EF:4C:4F:54"),
        ("{{ default \"/dev/sda\" \"\" }}", "/dev/sda"),
        ("{{ default \"/dev/sda\" \"/dev/vdb\" }}", "/dev/vdb"),
        ("{{ trim \"  a b  \" }}", "a b"),
        ("{{ trimPrefix \"/dev/\" \"/dev/sda\" }}", "sda"),
        ("{{ replace \"sd\" \"vd\" \"/dev/sda\" }}", "/dev/vda"),
        ("{{ b64enc \"hello\" }}", "aGVsbG8="),
        ("{{ b64dec \"aGVsbG8=\" }}", "hello"),
        ("{{ ternary \"uefi\" \"bios\" true }}", "uefi"),
        ("{{ toString 42 }}", "42"),
        ("{{ list \"a\" \"b\" | join \",\" }}", "a,b"),
        ("{{ if regexMatch \"^arm\" \"arm64\" }}arm{{ end }}", "arm"),
        ("{{ indent 2 \"a\\nb\" }}", "  a\n  b"),
        ("{{ repeat 3 \"ab\" }}", "ababab"),
    ];
    for (source, want) in cases {
        assert_eq!(render_one(source).as_deref(), Ok(want), "{source}");
    }
}

#[test]
fn contains_and_prefix_tests_hold_in_either_argument_order() {
    // tink <= v0.10 (Go's strings order) and Sprig's order, both true.
    for source in [
        "{{ if hasPrefix (index .Hardware.Disks 0) \"/dev/nvme\" }}y{{ end }}",
        "{{ if hasPrefix \"/dev/nvme\" (index .Hardware.Disks 0) }}y{{ end }}",
        "{{ if contains .device_1 \":ec:\" }}y{{ end }}",
        "{{ if contains \":ec:\" .device_1 }}y{{ end }}",
        "{{ if hasSuffix .device_2 \"01\" }}y{{ end }}",
        "{{ if hasSuffix \"01\" .device_2 }}y{{ end }}",
    ] {
        assert_eq!(render_one(source).as_deref(), Ok("y"), "{source}");
    }
    // And false when neither holds.
    assert_eq!(
        render_one("{{ if hasPrefix \"/dev/sd\" (index .Hardware.Disks 0) }}y{{ end }}").as_deref(),
        Ok("")
    );
}

#[test]
fn growing_sprig_functions_are_refused_before_they_allocate() {
    let e = render_one("{{ repeat 1000000000 \"abcdefgh\" }}").expect_err("bomb");
    assert!(e.message.contains("budget"), "{e}");
    let e = render_one("{{ indent 4000 (repeat 100000 \"\\n\") }}").expect_err("bomb");
    assert!(e.message.contains("budget"), "{e}");
    let e = render_one("{{ regexMatch \"(\" \"x\" }}").expect_err("bad regex");
    assert!(e.message.contains("regexMatch"), "{e}");
}
