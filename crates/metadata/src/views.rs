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
    entries.push(leaf("local-ipv4", local_ipv4(hw, caller)));
    for (key, family) in [("public-ipv4", 4), ("public-ipv6", 6)] {
        let ip = first_public(hw, family);
        if !ip.is_empty() {
            entries.push(leaf(key, ip));
        }
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
    let tags = tags(hw);
    if !tags.is_empty() {
        entries.push(leaf("tags", tags));
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

/// Which EC2 front end a version prefix speaks. Amazon's EC2 and
/// Tinkerbell's hegel disagree on a few answers, and each has clients that
/// depend on its own: hegel only ever served `/2009-04-04`, which is also
/// the version cloud-init settles on here (it finds none of its newer
/// ones), while EC2 tools ask `/latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ec2Dialect {
    /// `/latest/…`, as EC2 answers: entries a record lacks are left out
    /// (a listed entry always has a value), `public-keys/` is a directory of
    /// `N=name` entries each holding `openssh-key`, and `user-data` is 404
    /// when there is none.
    Ec2,
    /// `/2009-04-04/…`, as hegel answers: every entry hegel has is listed
    /// (sorted, as hegel sorts them) and answers 200, empty when the record
    /// has no value; `public-keys` is one value, the keys one per line;
    /// `user-data` is always there.
    Hegel,
}

impl Ec2Dialect {
    /// The dialect of a version prefix; `None` for a version Bellows does
    /// not serve.
    pub fn for_version(version: &str) -> Option<Ec2Dialect> {
        match version {
            "latest" => Some(Ec2Dialect::Ec2),
            "2009-04-04" => Some(Ec2Dialect::Hegel),
            _ => None,
        }
    }
}

/// The local IPv4: the record's first private IPv4 address, else the
/// address the machine asked from (its reserved DHCP address; EC2 always
/// has a local-ipv4).
fn local_ipv4(hw: &Hardware, caller: IpAddr) -> String {
    instance_ips(hw)
        .iter()
        .find(|ip| ip.family == 4 && !ip.public)
        .map(|ip| ip.address.to_string())
        .unwrap_or_else(|| caller.to_string())
}

fn first_public(hw: &Hardware, family: i64) -> String {
    instance_ips(hw)
        .iter()
        .find(|ip| ip.family == family && ip.public)
        .map(|ip| ip.address.to_string())
        .unwrap_or_default()
}

fn text_at(hw: &Hardware, ptr: &str) -> String {
    str_at(&hw.metadata, ptr).unwrap_or_default().to_string()
}

/// `metadata.instance.tags`, one per line.
fn tags(hw: &Hardware) -> String {
    hw.metadata
        .pointer("/instance/tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The `meta-data/` tree hegel serves: all its entries, always, in its
/// (sorted) order; a value the record lacks is empty. Values come from the
/// same record fields hegel reads, with Bellows' fallbacks where hegel has
/// none (see [`instance_id`], [`hostname`], `local-ipv4`).
pub fn hegel_meta_data(hw: &Hardware, caller: IpAddr) -> Node {
    let os = |k: &str| text_at(hw, &format!("/instance/operating_system/{k}"));
    let host = hostname(hw).unwrap_or_default();
    Node::Dir(vec![
        leaf("facility", text_at(hw, "/facility/facility_code")),
        leaf("hostname", host.clone()),
        leaf("instance-id", instance_id(hw)),
        // hegel has the entry but no source for it: always empty.
        leaf("iqn", ""),
        leaf("local-hostname", host),
        leaf("local-ipv4", local_ipv4(hw, caller)),
        dir(
            "operating-system",
            vec![
                leaf("distro", os("distro")),
                leaf("image_tag", os("image_tag")),
                dir(
                    "license_activation",
                    vec![leaf("state", os("license_activation/state"))],
                ),
                leaf("slug", os("slug")),
                leaf("version", os("version")),
            ],
        ),
        leaf("plan", text_at(hw, "/facility/plan_slug")),
        leaf("public-ipv4", first_public(hw, 4)),
        leaf("public-ipv6", first_public(hw, 6)),
        leaf("public-keys", ssh_keys(hw).join("\n")),
        leaf("tags", tags(hw)),
    ])
}

/// The whole tree below a version prefix: `meta-data` and `user-data`.
pub fn ec2_tree(hw: &Hardware, caller: IpAddr, dialect: Ec2Dialect) -> Node {
    match dialect {
        Ec2Dialect::Ec2 => {
            // EC2 lists its top-level entries without a trailing `/`.
            let mut top = vec![(
                "meta-data".to_string(),
                "meta-data".to_string(),
                ec2_meta_data(hw, caller),
            )];
            if let Some(u) = user_data(hw) {
                top.push(leaf("user-data", u));
            }
            Node::Dir(top)
        }
        Ec2Dialect::Hegel => Node::Dir(vec![
            dir_node("meta-data", hegel_meta_data(hw, caller)),
            leaf("user-data", user_data(hw).unwrap_or_default()),
        ]),
    }
}

fn dir_node(key: &str, node: Node) -> (String, String, Node) {
    (key.to_string(), format!("{key}/"), node)
}

/// Answers an EC2 path below a version (`""`, `meta-data/…`, `user-data`).
/// Empty segments are ignored, so a path answers the same with or without
/// a trailing `/`, as hegel does; a path below a value is not found.
pub fn ec2_lookup(hw: &Hardware, caller: IpAddr, dialect: Ec2Dialect, path: &str) -> Ec2Answer {
    let mut node = ec2_tree(hw, caller, dialect);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
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
/// It also carries `metadata.instance.storage`, the one part of hegel's
/// `/metadata` a Tinkerbell action reads (`rootio`): the record's
/// `metadata.instance.storage` verbatim, else its disks.
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
    let storage = instance.get("storage").cloned().unwrap_or_else(|| {
        json!({"disks": hw.disk_devices().iter().map(|d| json!({"device": d})).collect::<Vec<_>>()})
    });
    doc.insert("storage".into(), storage.clone());
    // What hegel's `/metadata` serves, for Tinkerbell's `rootio` action,
    // which reads `metadata.instance.storage` and nothing else there.
    doc.insert("metadata".into(), json!({"instance": {"storage": storage}}));
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
