use super::*;
use crate::api::{DiskFacts, LldpNeighbour, NicFacts};
use crate::discovery::discovered_record;

fn machine(mac: &str, serial: &str, disks: &[u64], memory: u64) -> Hardware {
    let mac: MacAddr = mac.parse().unwrap();
    let facts = Facts {
        memory_bytes: memory,
        disks: disks
            .iter()
            .enumerate()
            .map(|(i, &size)| DiskFacts {
                name: format!("vd{}", (b'a' + i as u8) as char),
                size_bytes: size,
                serial: format!("D{i}"),
                ..Default::default()
            })
            .collect(),
        nics: vec![NicFacts {
            name: "eth0".into(),
            mac: mac.to_string(),
            lldp: Some(LldpNeighbour {
                chassis_id: "00:11:22:33:44:55".into(),
                port_id: "Ethernet1/7".into(),
                system_name: "leaf-12".into(),
                port_description: String::new(),
            }),
            ..Default::default()
        }],
        extra: serde_json::json!({
            "sys_vendor": "QEMU",
            "product_name": "Standard PC (i440FX + PIIX, 1996)",
            "product_serial": serial,
        }),
        ..Default::default()
    };
    discovered_record(mac, None, &[], facts, 1)
}

const GIB: u64 = 1 << 30;

#[test]
fn a_rule_file_reads_with_units_globs_and_placeholders() {
    let rule = Rule::parse(
        r#"
name: big-disk
priority: 5
match:
  vendor: "qemu*"
  mac_prefix: "52:54:00"
  disks: { min_size: 3GiB }
  memory: { min: 256MiB, max: 4GB }
set:
  hostname: "node-{counter:03}"
  facility: lab1
  plan: small
  tags: [discovered, "{vendor}"]
workflow:
  template: install
"#,
    )
    .unwrap();
    assert_eq!(
        rule.matches.disks.as_ref().unwrap().min_size,
        Some(Size(3 * GIB))
    );
    assert_eq!(
        rule.matches.memory.as_ref().unwrap().max,
        Some(Size(4_000_000_000))
    );
    let big = machine("52:54:00:be:00:01", "SER-1", &[4 * GIB], GIB);
    let small = machine("52:54:00:be:00:02", "SER-2", &[2 * GIB], GIB);
    assert_eq!(rule.matches.check(&big), Ok(()));
    let miss = rule.matches.check(&small).unwrap_err();
    assert!(miss.0.contains("disks that fit: has 0"), "{miss}");
    assert!(miss.0.contains("vda 2.0 GiB"), "{miss}");

    let done = rule.apply(&big, 7).unwrap();
    assert_eq!(done.hardware.hostname(), Some("node-007"));
    assert_eq!(done.hardware.facility(), Some("lab1"));
    assert_eq!(
        done.hardware.metadata.pointer("/instance/tags"),
        Some(&serde_json::json!(["discovered", "qemu"]))
    );
    assert_eq!(hardware_state(&done.hardware), "enrolled");
    assert_eq!(
        done.hardware
            .discovery
            .as_ref()
            .unwrap()
            .enrolled_by
            .as_deref(),
        Some("rule:big-disk")
    );
    let wf = done.workflow.unwrap();
    assert_eq!(wf.template, "install");
    assert_eq!(wf.hardware_map["device_1"], "52:54:00:be:00:01");
    assert_eq!(wf.hardware.as_deref(), Some("discovered-525400be0001"));
}

#[test]
fn the_first_enabled_match_wins_in_priority_then_name_order() {
    let parse = |y: &str| Rule::parse(y).unwrap();
    let mut rules = vec![
        parse("name: zz-any\npriority: 100\n"),
        parse("name: b-serial\npriority: 1\nmatch: { serials: [ser-2] }\n"),
        parse("name: a-disabled\npriority: 1\ndisabled: true\n"),
        parse(
            "name: c-switch\npriority: 1\nmatch: { switch: { name: leaf-*, port: Ethernet1/7 } }\n",
        ),
    ];
    sort(&mut rules);
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a-disabled", "b-serial", "c-switch", "zz-any"]);
    let hw = machine("52:54:00:be:00:02", "SER-2", &[GIB], GIB);
    let (verdicts, winner) = evaluate(&rules, &hw);
    assert_eq!(winner, Some(1), "{verdicts:?}");
    assert_eq!(
        verdicts[0].reason.as_deref(),
        Some("matches, but the rule is disabled")
    );
    let other = machine("52:54:00:be:00:03", "SER-3", &[GIB], GIB);
    let (verdicts, winner) = evaluate(&rules, &other);
    assert_eq!(winner, Some(2));
    assert_eq!(
        verdicts[1].reason.as_deref(),
        Some("serial \"SER-3\" is not in the list")
    );
    // An enrolled machine is never enrolled again by a rule.
    let enrolled = rules[3].apply(&other, 1).unwrap().hardware;
    assert_eq!(evaluate(&rules, &enrolled).1, None);
}

#[test]
fn bad_rules_name_their_field() {
    let cases = [
        (
            "name: x\nmatch: { disks: { min_size: 3 parsecs } }\n",
            "match.disks.min_size",
        ),
        (
            "name: x\nmatch: { mac_prefix: 52-54-0 }\n",
            "match.mac_prefix",
        ),
        (
            "name: x\nset: { hostname: \"n-{count}\" }\n",
            "set.hostname",
        ),
        (
            "name: x\nset: { hostname: \"n-{serial:3}\" }\n",
            "set.hostname",
        ),
        ("name: x\nmatch: { colour: red }\n", "match"),
        ("name: \"a b\"\n", "name"),
        ("name: x\nmatch: { state: gone }\n", "match.state"),
        (
            "name: x\nworkflow: { template: \" \" }\n",
            "workflow.template",
        ),
    ];
    for (text, field) in cases {
        let err = Rule::parse(text).unwrap_err();
        assert!(err.field.starts_with(field), "{text}: {err:?}");
    }
    let huge = format!("name: x\n#{}\n", "a".repeat(MAX_RULE_BYTES));
    assert!(Rule::parse(&huge).unwrap_err().message.contains("limit"));
}

#[test]
fn a_hostname_a_serial_makes_invalid_is_refused_not_stored() {
    let rule = Rule::parse(
        "name: x\nset: { hostname: \"{serial}-{serial}-{serial}-{serial}-{serial}\" }\n",
    )
    .unwrap();
    let hw = machine("52:54:00:be:00:02", &"S".repeat(63), &[GIB], GIB);
    let err = rule.apply(&hw, 1).unwrap_err();
    assert!(err.field.ends_with("dhcp.hostname"), "{err:?}");
    // Serials are made label-safe; an empty one falls back to the MAC.
    let rule = Rule::parse("name: x\nset: { hostname: \"n-{serial}\" }\n").unwrap();
    let hw = machine("52:54:00:be:00:02", " Ab_C/9 ", &[GIB], GIB);
    assert_eq!(
        rule.apply(&hw, 1).unwrap().hardware.hostname(),
        Some("n-ab-c-9")
    );
    let hw = machine("52:54:00:be:00:02", "", &[GIB], GIB);
    assert_eq!(
        rule.apply(&hw, 1).unwrap().hardware.hostname(),
        Some("n-525400be0002")
    );
}

#[test]
fn globs_do_not_backtrack_forever() {
    let g = Glob(format!("{}b", "*a".repeat(50)));
    assert!(!g.matches(&"a".repeat(5000)));
    assert!(Glob("Super*".into()).matches("SUPERMICRO"));
    assert!(Glob("r?1".into()).matches("r01"));
    assert!(!Glob("r?1".into()).matches("r001"));
}

#[test]
fn selectors_on_registered_machines_use_their_metadata() {
    let rule =
        Rule::parse("name: sel\nmatch: { state: registered, facility: ams*, tags: [web] }\n")
            .unwrap();
    let hw = Hardware::from_json(
        br#"{"id":"m1","metadata":{"facility":{"facility_code":"ams1"},"instance":{"tags":["web","x"]}},
            "network":{"interfaces":[{"dhcp":{"mac":"02:00:00:00:00:01"}}]}}"#,
    )
    .unwrap();
    assert_eq!(rule.matches.check(&hw), Ok(()));
    let mut other = hw.clone();
    other.metadata["instance"]["tags"] = serde_json::json!(["db"]);
    assert_eq!(
        rule.matches.check(&other),
        Err(Miss("has no tag \"web\"".into()))
    );
}
