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
    let Ec2Answer::Listing(lines) = ec2_lookup(&hw(), ip(), "meta-data/") else {
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
        ec2_lookup(&hw(), ip(), ""),
        Ec2Answer::Listing(vec!["meta-data".into(), "user-data".into()])
    );
}

#[test]
fn leaves_and_public_keys() {
    let h = hw();
    let t = |p: &str| ec2_lookup(&h, ip(), p);
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
        ec2_lookup(&h, caller, "meta-data"),
        Ec2Answer::Listing(vec!["instance-id".into(), "local-ipv4".into()])
    );
    assert_eq!(
        ec2_lookup(&h, caller, "meta-data/instance-id"),
        Ec2Answer::Text("bare".into())
    );
    assert_eq!(ec2_lookup(&h, caller, "user-data"), Ec2Answer::NotFound);
    assert_eq!(
        ec2_lookup(&h, caller, ""),
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
