use super::*;

fn hw() -> Hardware {
    Hardware::from_value(json!({
        "id": "hw-1",
        "metadata": {
            "facility": {"facility_code": "onprem", "plan_slug": "c3.small.x86"},
            "instance": {
                "id": "inst-1",
                "hostname": "node-1",
                "ssh_keys": ["ssh-ed25519 AAAAC3Nza alice@example", "ssh-rsa AAAAB3Nza"],
                "tags": ["rack-a", "gpu"],
                "operating_system": {"slug": "debian_12", "distro": "debian", "version": "12"},
                "ips": [
                    {"address": "10.0.0.5", "family": 4, "public": false, "netmask": "255.255.255.0"},
                    {"address": "203.0.113.5", "family": 4, "public": true},
                    {"address": "2001:db8::5", "family": 6, "public": true}
                ],
                "userdata": "#cloud-config\nhostname: node-1\n"
            }
        },
        "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:00:05", "ip": {"address": "10.0.0.5"}}}]}
    }))
    .unwrap()
}

fn ip() -> IpAddr {
    "10.0.0.5".parse().unwrap()
}

#[test]
fn meta_data_listing_is_ec2_shaped() {
    let Ec2Answer::Listing(lines) = ec2_lookup(&hw(), ip(), Ec2Dialect::Ec2, "meta-data/") else {
        panic!("listing expected")
    };
    assert_eq!(
        lines,
        [
            "instance-id",
            "hostname",
            "local-hostname",
            "local-ipv4",
            "public-ipv4",
            "public-ipv6",
            "public-keys/",
            "tags",
            "plan",
            "facility",
            "operating-system/"
        ]
    );
    assert_eq!(
        ec2_lookup(&hw(), ip(), Ec2Dialect::Ec2, ""),
        Ec2Answer::Listing(vec!["meta-data".into(), "user-data".into()])
    );
}

#[test]
fn leaves_and_public_keys() {
    let h = hw();
    let t = |p: &str| ec2_lookup(&h, ip(), Ec2Dialect::Ec2, p);
    assert_eq!(t("meta-data/instance-id"), Ec2Answer::Text("inst-1".into()));
    assert_eq!(
        t("meta-data/local-ipv4"),
        Ec2Answer::Text("10.0.0.5".into())
    );
    assert_eq!(
        t("meta-data/public-ipv6"),
        Ec2Answer::Text("2001:db8::5".into())
    );
    assert_eq!(t("meta-data/tags"), Ec2Answer::Text("rack-a\ngpu".into()));
    assert_eq!(
        t("meta-data/public-keys/"),
        Ec2Answer::Listing(vec!["0=alice@example".into(), "1=key-1".into()])
    );
    assert_eq!(
        t("meta-data/public-keys/1/"),
        Ec2Answer::Listing(vec!["openssh-key".into()])
    );
    assert_eq!(
        t("meta-data/public-keys/0/openssh-key"),
        Ec2Answer::Text("ssh-ed25519 AAAAC3Nza alice@example".into())
    );
    assert_eq!(
        t("meta-data/operating-system/distro"),
        Ec2Answer::Text("debian".into())
    );
    assert_eq!(
        t("user-data"),
        Ec2Answer::Text("#cloud-config\nhostname: node-1\n".into())
    );
    for missing in [
        "meta-data/nope",
        "meta-data/instance-id/x",
        "meta-dataX",
        "other",
        "meta-data/operating-system/image_tag",
    ] {
        assert_eq!(t(missing), Ec2Answer::NotFound, "{missing}");
    }
}

#[test]
fn sparse_record_lists_only_what_exists() {
    let h = Hardware::from_value(json!({
        "id": "bare",
        "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:00:06", "ip": {"address": "10.0.0.6"}}}]}
    }))
    .unwrap();
    let caller: IpAddr = "10.0.0.6".parse().unwrap();
    assert_eq!(
        ec2_lookup(&h, caller, Ec2Dialect::Ec2, "meta-data"),
        Ec2Answer::Listing(vec!["instance-id".into(), "local-ipv4".into()])
    );
    assert_eq!(
        ec2_lookup(&h, caller, Ec2Dialect::Ec2, "meta-data/instance-id"),
        Ec2Answer::Text("bare".into())
    );
    assert_eq!(
        ec2_lookup(&h, caller, Ec2Dialect::Ec2, "user-data"),
        Ec2Answer::NotFound
    );
    assert_eq!(
        ec2_lookup(&h, caller, Ec2Dialect::Ec2, ""),
        Ec2Answer::Listing(vec!["meta-data".into()])
    );
}

#[test]
fn equinix_and_nocloud_views() {
    let e = equinix(&hw());
    assert_eq!(e["id"], "inst-1");
    assert_eq!(e["hostname"], "node-1");
    assert_eq!(e["plan"], "c3.small.x86");
    assert_eq!(e["network"]["addresses"].as_array().unwrap().len(), 3);
    assert_eq!(e["network"]["interfaces"][0]["mac"], "02:00:00:00:00:05");
    assert_eq!(e["ssh_keys"].as_array().unwrap().len(), 2);
    let md: Value = serde_json::from_str(&nocloud_meta_data(&hw())).unwrap();
    assert_eq!(md["instance-id"], "inst-1");
    assert_eq!(md["local-hostname"], "node-1");
    assert_eq!(md["public-keys"][1], "ssh-rsa AAAAB3Nza");
}

#[test]
fn versions_pick_their_dialect() {
    assert_eq!(Ec2Dialect::for_version("latest"), Some(Ec2Dialect::Ec2));
    assert_eq!(
        Ec2Dialect::for_version("2009-04-04"),
        Some(Ec2Dialect::Hegel)
    );
    for other in ["", "2016-09-02", "LATEST", "latest/"] {
        assert_eq!(Ec2Dialect::for_version(other), None, "{other}");
    }
}

#[test]
fn hegel_dialect_lists_everything_and_joins_keys() {
    let h = hw();
    let t = |p: &str| ec2_lookup(&h, ip(), Ec2Dialect::Hegel, p);
    assert_eq!(
        t(""),
        Ec2Answer::Listing(vec!["meta-data/".into(), "user-data".into()])
    );
    let listing = [
        "facility",
        "hostname",
        "instance-id",
        "iqn",
        "local-hostname",
        "local-ipv4",
        "operating-system/",
        "plan",
        "public-ipv4",
        "public-ipv6",
        "public-keys",
        "tags",
    ];
    for p in ["meta-data", "meta-data/", "/meta-data//"] {
        assert_eq!(
            t(p),
            Ec2Answer::Listing(listing.map(String::from).to_vec()),
            "{p}"
        );
    }
    assert_eq!(
        t("meta-data/public-keys/"),
        Ec2Answer::Text("ssh-ed25519 AAAAC3Nza alice@example\nssh-rsa AAAAB3Nza".into())
    );
    assert_eq!(
        t("meta-data/public-keys/0/openssh-key"),
        Ec2Answer::NotFound
    );
    assert_eq!(t("meta-data/hostname/"), Ec2Answer::Text("node-1".into()));
    assert_eq!(t("meta-data/iqn"), Ec2Answer::Text(String::new()));
    assert_eq!(
        t("meta-data/operating-system/license_activation/"),
        Ec2Answer::Listing(vec!["state".into()])
    );
    assert_eq!(
        t("meta-data/operating-system/image_tag"),
        Ec2Answer::Text(String::new())
    );
    assert_eq!(
        t("user-data/"),
        Ec2Answer::Text("#cloud-config\nhostname: node-1\n".into())
    );
    for missing in ["meta-data/nope", "meta-dataX", "other", "meta-data/tags/x"] {
        assert_eq!(t(missing), Ec2Answer::NotFound, "{missing}");
    }
}

#[test]
fn hegel_dialect_answers_empty_where_a_record_has_nothing() {
    let h = Hardware::from_value(json!({
        "id": "bare",
        "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:00:06", "ip": {"address": "10.0.0.6"}}}]}
    }))
    .unwrap();
    let caller: IpAddr = "10.0.0.6".parse().unwrap();
    let t = |p: &str| ec2_lookup(&h, caller, Ec2Dialect::Hegel, p);
    for empty in [
        "user-data",
        "meta-data/hostname",
        "meta-data/public-keys",
        "meta-data/tags",
        "meta-data/public-ipv4",
        "meta-data/operating-system/slug",
    ] {
        assert_eq!(t(empty), Ec2Answer::Text(String::new()), "{empty}");
    }
    // Bellows' fallbacks: never an empty instance-id or local-ipv4.
    assert_eq!(t("meta-data/instance-id"), Ec2Answer::Text("bare".into()));
    assert_eq!(
        t("meta-data/local-ipv4"),
        Ec2Answer::Text("10.0.0.6".into())
    );
}

#[test]
fn metadata_document_carries_storage_for_rootio() {
    let h = Hardware::from_value(json!({
        "id": "s",
        "metadata": {"instance": {"storage": {"disks": [{"device": "/dev/sda", "wipe_table": true}]}}},
        "network": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:00:07", "ip": {"address": "10.0.0.7"}}}]}
    }))
    .unwrap();
    let e = equinix(&h);
    assert_eq!(
        e["metadata"]["instance"]["storage"]["disks"][0]["device"],
        "/dev/sda"
    );
    assert_eq!(e["metadata"]["instance"]["storage"], e["storage"]);
    // Without storage in the record: its disks, in the same shape.
    let e = equinix(&hw());
    assert_eq!(e["metadata"]["instance"]["storage"], json!({"disks": []}));
}

#[test]
fn hostile_paths_are_answered_not_panicked_on() {
    let h = hw();
    let long = "meta-data/".repeat(10_000);
    let deep = "a/".repeat(10_000);
    for dialect in [Ec2Dialect::Ec2, Ec2Dialect::Hegel] {
        for p in [
            long.as_str(),
            deep.as_str(),
            "..",
            "meta-data/../user-data",
            "meta-data/%2F",
            "meta-data/\u{0}",
            "méta-données/",
            "meta-data/public-keys/18446744073709551616/openssh-key",
            "meta-data/public-keys/-1",
        ] {
            assert_eq!(ec2_lookup(&h, ip(), dialect, p), Ec2Answer::NotFound, "{p}");
        }
    }
}
