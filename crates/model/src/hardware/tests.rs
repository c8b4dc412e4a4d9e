use super::*;

/// The seed's hardware.json (seed 000/001), completed where the blog's text
/// is cut, as a user following it would write it.
pub(crate) const SEED_HARDWARE: &str = r#"{
  "id": "0fba0bf8-3772-4b4a-ab9f-6ebe93b90a94",
  "metadata": {
    "facility": {"facility_code": "onprem"},
    "instance": {},
    "state": ""
  },
  "network": {
    "interfaces": [
      {
        "dhcp": {
          "arch": "x86_64",
          "ip": {"address": "10.1.0.5", "gateway": "10.1.0.1", "netmask": "255.255.0.0"},
          "mac": "d0:50:99:d7:63:20",
          "uefi": false
        },
        "netboot": {"allow_pxe": true, "allow_workflow": true}
      }
    ]
  }
}"#;

/// Tinkerbell's documented full flat example (hardware-data.md), with fields
/// Bellows does not interpret (`bonding_mode`, `storage`, `custom`, a future
/// `network.bonds`, interface `name`).
const FULL_FLAT: &str = r##"{
  "id": "f9f56dff-098a-4c5f-a51c-19ad35de85d1",
  "metadata": {
    "bonding_mode": 5,
    "custom": {"preinstalled_operating_system_version": {}, "private_subnets": []},
    "facility": {"facility_code": "ewr1", "plan_slug": "c2.medium.x86", "plan_version_slug": ""},
    "instance": {
      "hostname": "server001",
      "operating_system": {"distro": "ubuntu", "os_slug": "ubuntu_18_04", "version": "18.04"},
      "storage": {"disks": [{"device": "/dev/sda", "wipe_table": true}]}
    },
    "manufacturer": {"id": "", "slug": ""},
    "state": "provisioning"
  },
  "network": {
    "bonds": [],
    "interfaces": [
      {
        "name": "eth0",
        "dhcp": {
          "arch": "x86_64",
          "hostname": "server001",
          "ip": {"address": "192.168.1.5", "gateway": "192.168.1.1", "netmask": "255.255.255.248"},
          "lease_time": 86400,
          "mac": "00:00:00:00:00:00",
          "name_servers": [],
          "time_servers": [],
          "uefi": false
        },
        "netboot": {
          "allow_pxe": true,
          "allow_workflow": true,
          "ipxe": {"contents": "#!ipxe", "url": "http://url/menu.ipxe"},
          "osie": {"base_url": "", "initrd": "", "kernel": "vmlinuz-x86_64"}
        }
      }
    ]
  }
}"##;

const RESOURCE: &str = r##"{
  "apiVersion": "tinkerbell.org/v1alpha1",
  "kind": "Hardware",
  "metadata": {"name": "sm01", "namespace": "tink-system", "labels": {"rack": "a1"}},
  "spec": {
    "bmcRef": {"apiGroup": "bmc.tinkerbell.org", "kind": "Machine", "name": "bmc-sm01"},
    "disks": [{"device": "/dev/nvme0n1"}],
    "metadata": {
      "facility": {"facility_code": "onprem"},
      "instance": {"hostname": "sm01", "id": "3c:ec:ef:4c:4f:54",
                   "operating_system": {"distro": "ubuntu", "version": "22.04"}}
    },
    "interfaces": [
      {
        "dhcp": {
          "arch": "x86_64", "hostname": "sm01",
          "ip": {"address": "172.16.10.100", "gateway": "172.16.10.1", "netmask": "255.255.255.0"},
          "lease_time": 86400, "mac": "3c:ec:ef:4c:4f:54",
          "name_servers": ["172.16.10.1", "10.1.1.11"], "uefi": true, "vlan_id": "10"
        },
        "netboot": {"allowPXE": true, "allowWorkflow": true,
                    "osie": {"baseURL": "http://172.16.10.2/hook"}},
        "disableDhcp": false
      }
    ],
    "userData": "#cloud-config\nhostname: sm01\n",
    "tinkVersion": 0
  }
}"##;

#[test]
fn seed_hardware_loads_unchanged() {
    let hw = Hardware::from_json(SEED_HARDWARE.as_bytes()).expect("seed hardware loads");
    assert_eq!(hw.id, "0fba0bf8-3772-4b4a-ab9f-6ebe93b90a94");
    assert_eq!(
        hw.macs().map(|m| m.to_string()).collect::<Vec<_>>(),
        ["d0:50:99:d7:63:20"]
    );
    assert_eq!(
        hw.ips().map(|i| i.to_string()).collect::<Vec<_>>(),
        ["10.1.0.5"]
    );
    let iface = &hw.network.interfaces[0];
    assert_eq!(iface.netboot.as_ref().and_then(|n| n.allow_pxe), Some(true));
}

#[test]
fn flat_round_trip_is_lossless() {
    let hw = Hardware::from_json(FULL_FLAT.as_bytes()).expect("full flat example loads");
    let original: Value = serde_json::from_str(FULL_FLAT).unwrap();
    let written = serde_json::to_value(&hw).unwrap();
    assert_eq!(
        written, original,
        "every field, interpreted or not, comes back"
    );
    assert_eq!(hw.hostname(), Some("server001"));
    assert_eq!(hw.disk_devices(), ["/dev/sda"]);
}

#[test]
fn resource_shape_maps_onto_the_same_model() {
    let hw = Hardware::from_json(RESOURCE.as_bytes()).expect("resource loads");
    assert_eq!(hw.id, "sm01");
    let iface = &hw.network.interfaces[0];
    let dhcp = iface.dhcp.as_ref().unwrap();
    assert_eq!(dhcp.mac.to_string(), "3c:ec:ef:4c:4f:54");
    assert_eq!(dhcp.vlan_id.as_deref(), Some("10"));
    assert_eq!(dhcp.vlan().unwrap().map(VlanId::get), Some(10));
    let netboot = iface.netboot.as_ref().unwrap();
    assert_eq!(netboot.allow_pxe, Some(true));
    assert_eq!(
        netboot.osie.as_ref().unwrap().base_url.as_deref(),
        Some("http://172.16.10.2/hook")
    );
    assert_eq!(hw.disk_devices(), ["/dev/nvme0n1"]);
    assert_eq!(hw.user_data(), Some("#cloud-config\nhostname: sm01\n"));
    assert_eq!(hw.bmc_ref.as_ref().unwrap()["name"], "bmc-sm01");
    // Kept, not dropped: resource metadata and unknown spec fields.
    assert_eq!(
        hw.resource.as_ref().unwrap()["metadata"]["labels"]["rack"],
        "a1"
    );
    assert_eq!(hw.extra["spec.tinkVersion"], 0);
}

#[test]
fn stored_form_reloads_to_the_same_value() {
    for doc in [SEED_HARDWARE, FULL_FLAT, RESOURCE] {
        let hw = Hardware::from_json(doc.as_bytes()).unwrap();
        let stored = serde_json::to_vec(&hw).unwrap();
        let reloaded: Hardware = serde_json::from_slice(&stored).unwrap();
        assert_eq!(reloaded, hw);
    }
}

fn err_of(doc: &str) -> ValidationError {
    Hardware::from_json(doc.as_bytes()).expect_err("should be refused")
}

#[test]
fn invalid_mac_names_the_field() {
    let doc = SEED_HARDWARE.replace("d0:50:99:d7:63:20", "d0:50:99:zz:63:20");
    let e = err_of(&doc);
    assert_eq!(e.field, "network.interfaces[0].dhcp.mac");
    assert!(e.message.contains("not a MAC address"), "{e}");
}

#[test]
fn invalid_ip_names_the_field() {
    let doc = SEED_HARDWARE.replace("\"10.1.0.5\"", "\"10.1.0.500\"");
    let e = err_of(&doc);
    assert_eq!(e.field, "network.interfaces[0].dhcp.ip.address");
    let doc = SEED_HARDWARE.replace("255.255.0.0", "255.0.255.0");
    assert_eq!(err_of(&doc).field, "network.interfaces[0].dhcp.ip.netmask");
}

#[test]
fn resource_errors_use_resource_paths() {
    let doc = RESOURCE.replace("\"mac\": \"3c:ec:ef:4c:4f:54\"", "\"mac\": \"nope\"");
    let e = err_of(&doc);
    assert_eq!(e.field, "spec.interfaces[0].dhcp.mac", "{e}");
}

#[test]
fn duplicate_mac_within_a_record_is_refused() {
    let mut v: Value = serde_json::from_str(SEED_HARDWARE).unwrap();
    let iface = v["network"]["interfaces"][0].clone();
    let mut second = iface.clone();
    second["dhcp"]["ip"]["address"] = "10.1.0.6".into();
    v["network"]["interfaces"] = Value::Array(vec![iface, second]);
    let e = Hardware::from_value(v).unwrap_err();
    assert_eq!(e.field, "network.interfaces[1].dhcp.mac");
}

#[test]
fn malformed_documents_are_refused_with_a_reason() {
    assert!(err_of("{").message.contains("not valid JSON"));
    assert!(err_of("[]").message.contains("JSON object"));
    assert_eq!(err_of(r#"{"id": 5}"#).field, "id");
    assert_eq!(
        err_of(r#"{"network": {"interfaces": {}}}"#).field,
        "network.interfaces"
    );
    assert_eq!(err_of(r#"{"spec": []}"#).field, "spec");
    // Found by schemathesis: flat keys beside `spec` used to be stored as
    // extras that collided with the converted fields, corrupting the record.
    for key in [
        "network",
        "disks",
        "user_data",
        "vendor_data",
        "bmc_ref",
        "resource",
    ] {
        let doc = format!(r#"{{"metadata": {{"name": "d"}}, "{key}": 5, "spec": {{}}}}"#);
        assert_eq!(err_of(&doc).field, key);
    }
    assert!(err_of(r#"{"id": "a/b"}"#).message.contains("'/'"));
    assert_eq!(
        err_of(r#"{"id": "a", "resource": [null]}"#).field,
        "resource"
    );
    assert_eq!(err_of(r#"{"id": "a", "bmc_ref": 5}"#).field, "bmc_ref");
    assert_eq!(err_of(r#"{"id": "a", "metadata": "x"}"#).field, "metadata");
    let e =
        err_of(&SEED_HARDWARE.replace("\"x86_64\",", "\"x86_64\", \"hostname\": \"bad_name!\","));
    assert_eq!(e.field, "network.interfaces[0].dhcp.hostname");
    let huge = format!("{{\"id\": \"{}\"}}", "x".repeat(MAX_HARDWARE_BYTES));
    assert!(err_of(&huge).message.contains("limit"));
}

#[test]
fn vlan_ids_read_as_tinkerbell_writes_them() {
    let dhcp = |v: Option<&str>| Dhcp {
        mac: "52:54:00:00:00:01".parse().unwrap(),
        ip: None,
        hostname: None,
        lease_time: None,
        name_servers: None,
        time_servers: None,
        arch: None,
        uefi: None,
        iface_name: None,
        vlan_id: v.map(str::to_string),
        extra: Map::new(),
    };
    for (value, want) in [(None, None), (Some(""), None), (Some("0"), None)] {
        assert_eq!(dhcp(value).vlan(), Ok(want), "{value:?}");
    }
    for (value, want) in [("1", 1), ("16", 16), (" 100 ", 100), ("4094", 4094)] {
        assert_eq!(
            dhcp(Some(value)).vlan().unwrap().map(VlanId::get),
            Some(want)
        );
    }
    // Tinkerbell's pattern admits these; no interface can be tagged so.
    for value in ["4095", "4096", "16,17", "x", "-1", "+1", "99999"] {
        let err = dhcp(Some(value)).vlan().unwrap_err();
        assert!(err.to_string().contains("1 to 4094"), "{value}: {err}");
    }
    assert!(VlanId::new(0).is_err() && VlanId::new(4095).is_err());
}

#[test]
fn the_facility_code_is_the_records_site() {
    let hw = Hardware::from_json(SEED_HARDWARE.as_bytes()).unwrap();
    assert_eq!(hw.facility(), Some("onprem"));
    let bare = Hardware::from_value(serde_json::json!({"id": "x"})).unwrap();
    assert_eq!(bare.facility(), None);
}
