//! What a machine is told about itself, computed from its hardware record.
//! Pure functions: the HTTP layer only finds the record and picks the view.

use std::net::IpAddr;

use bellows_model::Hardware;
use serde_json::{Map, Value, json};

/// A node of the EC2 metadata tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A value, served as text.
    Leaf(String),
    /// A directory: (path key, listing line, child), in listing order.
    Dir(Vec<(String, String, Node)>),
}

/// The answer to one EC2 path.
#[derive(Debug, Clone, PartialEq)]
pub enum Ec2Answer {
    /// A directory listing, one entry per line (subdirectories end in `/`).
    Listing(Vec<String>),
    /// A leaf value.
    Text(String),
    /// No such path for this machine.
    NotFound,
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// One address of `metadata.instance.ips`, as Equinix/Tinkerbell write them.
struct InstanceIp<'a> {
    value: &'a Value,
    address: &'a str,
    family: i64,
    public: bool,
}

fn instance_ips(hw: &Hardware) -> Vec<InstanceIp<'_>> {
    hw.metadata
        .pointer("/instance/ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| {
                    let address = ip.get("address")?.as_str()?;
                    let family = ip
                        .get("family")
                        .and_then(Value::as_i64)
                        .unwrap_or_else(|| if address.contains(':') { 6 } else { 4 });
                    let public = ip.get("public").and_then(Value::as_bool).unwrap_or(false);
                    Some(InstanceIp {
                        value: ip,
                        address,
                        family,
                        public,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The instance id: `metadata.instance.id`, else the hardware id.
pub fn instance_id(hw: &Hardware) -> String {
    str_at(&hw.metadata, "/instance/id")
        .map(str::to_string)
        .unwrap_or_else(|| hw.id.clone())
}

/// Hostname: `metadata.instance.hostname`, else the DHCP hostname.
pub fn hostname(hw: &Hardware) -> Option<String> {
    str_at(&hw.metadata, "/instance/hostname")
        .map(str::to_string)
        .or_else(|| hw.hostname().map(str::to_string))
}

/// SSH public keys: `metadata.instance.ssh_keys`.
pub fn ssh_keys(hw: &Hardware) -> Vec<String> {
    hw.metadata
        .pointer("/instance/ssh_keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// User data for cloud-init.
pub fn user_data(hw: &Hardware) -> Option<&str> {
    hw.user_data()
}

/// Vendor data for cloud-init.
pub fn vendor_data(hw: &Hardware) -> Option<&str> {
    hw.vendor_data.as_deref()
}

fn leaf(key: &str, value: impl Into<String>) -> (String, String, Node) {
    (key.to_string(), key.to_string(), Node::Leaf(value.into()))
}

fn dir(key: &str, children: Vec<(String, String, Node)>) -> (String, String, Node) {
    (key.to_string(), format!("{key}/"), Node::Dir(children))
}

/// The EC2 `meta-data/` tree for `hw`, seen from `caller` (the address the
/// request came from, which is `local-ipv4` unless the record says
/// otherwise). Empty values are left out, as EC2 leaves out what it lacks:
/// cloud-init crawls every listed entry.
pub fn ec2_meta_data(hw: &Hardware, caller: IpAddr) -> Node {
    let mut entries = Vec::new();
    entries.push(leaf("instance-id", instance_id(hw)));
    if let Some(h) = hostname(hw) {
        entries.push(leaf("hostname", h.clone()));
        entries.push(leaf("local-hostname", h));
    }
    let ips = instance_ips(hw);
    let local = ips
        .iter()
        .find(|ip| ip.family == 4 && !ip.public)
        .map(|ip| ip.address.to_string())
        .unwrap_or_else(|| caller.to_string());
    entries.push(leaf("local-ipv4", local));
    if let Some(ip) = ips.iter().find(|ip| ip.family == 4 && ip.public) {
        entries.push(leaf("public-ipv4", ip.address));
    }
    if let Some(ip) = ips.iter().find(|ip| ip.family == 6 && ip.public) {
        entries.push(leaf("public-ipv6", ip.address));
    }
    let keys = ssh_keys(hw);
    if !keys.is_empty() {
        let children = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                // EC2 lists `0=<key name>`; the name is the key's comment.
                let name = key
                    .split_whitespace()
                    .nth(2)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("key-{i}"));
                (
                    i.to_string(),
                    format!("{i}={name}"),
                    Node::Dir(vec![leaf("openssh-key", key.clone())]),
                )
            })
            .collect();
        entries.push(dir("public-keys", children));
    }
    if let Some(tags) = hw
        .metadata
        .pointer("/instance/tags")
        .and_then(Value::as_array)
    {
        let tags: Vec<&str> = tags.iter().filter_map(Value::as_str).collect();
        if !tags.is_empty() {
            entries.push(leaf("tags", tags.join("\n")));
        }
    }
    if let Some(plan) = str_at(&hw.metadata, "/facility/plan_slug") {
        entries.push(leaf("plan", plan));
    }
    if let Some(f) = str_at(&hw.metadata, "/facility/facility_code") {
        entries.push(leaf("facility", f));
    }
    let os: Vec<_> = ["slug", "distro", "version", "image_tag"]
        .iter()
        .filter_map(|k| {
            str_at(&hw.metadata, &format!("/instance/operating_system/{k}")).map(|v| leaf(k, v))
        })
        .collect();
    if !os.is_empty() {
        entries.push(dir("operating-system", os));
    }
    Node::Dir(entries)
}

/// Answers an EC2 path below a version (`""`, `meta-data/…`, `user-data`).
pub fn ec2_lookup(hw: &Hardware, caller: IpAddr, path: &str) -> Ec2Answer {
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        let mut top = vec!["meta-data".to_string()];
        if user_data(hw).is_some() {
            top.push("user-data".to_string());
        }
        return Ec2Answer::Listing(top);
    }
    if path == "user-data" {
        return match user_data(hw) {
            Some(u) => Ec2Answer::Text(u.to_string()),
            None => Ec2Answer::NotFound,
        };
    }
    let Some(rest) = path.strip_prefix("meta-data") else {
        return Ec2Answer::NotFound;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Ec2Answer::NotFound;
    }
    let mut node = ec2_meta_data(hw, caller);
    for segment in rest.split('/').filter(|s| !s.is_empty()) {
        let Node::Dir(children) = node else {
            return Ec2Answer::NotFound;
        };
        match children.into_iter().find(|(k, _, _)| k == segment) {
            Some((_, _, child)) => node = child,
            None => return Ec2Answer::NotFound,
        }
    }
    match node {
        Node::Leaf(v) => Ec2Answer::Text(v),
        Node::Dir(children) => {
            Ec2Answer::Listing(children.into_iter().map(|(_, l, _)| l).collect())
        }
    }
}

/// Equinix-style `/metadata`: the instance metadata as one JSON document.
pub fn equinix(hw: &Hardware) -> Value {
    let instance = hw
        .metadata
        .get("instance")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut doc = Map::new();
    doc.insert("id".into(), json!(instance_id(hw)));
    if let Some(h) = hostname(hw) {
        doc.insert("hostname".into(), json!(h));
    }
    if let Some(plan) = str_at(&hw.metadata, "/facility/plan_slug") {
        doc.insert("plan".into(), json!(plan));
    }
    if let Some(f) = str_at(&hw.metadata, "/facility/facility_code") {
        doc.insert("facility".into(), json!(f));
    }
    doc.insert(
        "tags".into(),
        instance.get("tags").cloned().unwrap_or_else(|| json!([])),
    );
    if let Some(os) = instance.get("operating_system") {
        doc.insert("operating_system".into(), os.clone());
    }
    doc.insert("ssh_keys".into(), json!(ssh_keys(hw)));
    doc.insert(
        "storage".into(),
        instance.get("storage").cloned().unwrap_or_else(|| {
            json!({"disks": hw.disk_devices().iter().map(|d| json!({"device": d})).collect::<Vec<_>>()})
        }),
    );
    let addresses: Vec<Value> = instance_ips(hw).iter().map(|ip| ip.value.clone()).collect();
    let interfaces: Vec<Value> = hw
        .network
        .interfaces
        .iter()
        .filter_map(|i| {
            let d = i.dhcp.as_ref()?;
            Some(json!({
                "name": d.iface_name.clone().unwrap_or_default(),
                "mac": d.mac.to_string(),
            }))
        })
        .collect();
    let mut network = json!({"addresses": addresses, "interfaces": interfaces});
    if let Some(mode) = hw.metadata.get("bonding_mode") {
        network["bonding"] = json!({"mode": mode});
    }
    doc.insert("network".into(), network);
    if let Some(state) = str_at(&hw.metadata, "/state") {
        doc.insert("state".into(), json!(state));
    }
    if let Some(custom) = hw.metadata.get("custom") {
        doc.insert("customdata".into(), custom.clone());
    }
    if let Some(u) = user_data(hw) {
        doc.insert("userdata".into(), json!(u));
    }
    Value::Object(doc)
}

/// cloud-init NoCloud `meta-data` (YAML). Written as JSON, which is YAML,
/// so no value needs hand escaping.
pub fn nocloud_meta_data(hw: &Hardware) -> String {
    let mut doc = Map::new();
    doc.insert("instance-id".into(), json!(instance_id(hw)));
    if let Some(h) = hostname(hw) {
        doc.insert("local-hostname".into(), json!(h));
    }
    let keys = ssh_keys(hw);
    if !keys.is_empty() {
        doc.insert("public-keys".into(), json!(keys));
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(doc))
        .unwrap_or_else(|e| unreachable!("JSON values serialise: {e}"));
    text.push('\n');
    text
}

#[cfg(test)]
mod tests;
