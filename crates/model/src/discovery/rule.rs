//! Enrolment rules: match a discovered machine on its inventory, set its
//! metadata, and create its workflow. Rules are tried in order (priority,
//! then name); the first that matches wins; a machine none matches stays
//! discovered. The same [`Match`] selects machines for a workflow set.
//!
//! ```yaml
//! name: storage-nodes
//! priority: 10
//! match:
//!   vendor: "Supermicro*"
//!   disks: { min_size: 4TB, min_count: 2 }
//!   memory: { min: 64GiB }
//! set:
//!   hostname: "stor-{counter:03}"
//!   facility: ams1
//!   plan: storage.large
//!   tags: [storage]
//! workflow:
//!   template: debian-storage
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{DiscoveryState, hardware_state};
use crate::api::{Facts, NewWorkflow};
use crate::error::ValidationError;
use crate::hardware::Hardware;
use crate::mac::MacAddr;

/// Largest rule file accepted.
pub const MAX_RULE_BYTES: usize = 64 * 1024;
/// Most rules a site may hold: every discovered machine is tried against
/// each one.
pub const MAX_RULES: usize = 1000;

/// One enrolment rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Lower runs first; rules with the same priority run by name.
    #[serde(default)]
    pub priority: i64,
    /// A disabled rule is kept but never matches (`rule test` still says
    /// what it would do).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Which machines it takes; an empty match takes every machine.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// What it writes into the record.
    #[serde(default)]
    pub set: Assign,
    /// The workflow it creates, if any (without one the machine is only
    /// enrolled: it boots locally until an operator makes a workflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<RuleWorkflow>,
}

/// A stored rule and how many machines it has enrolled (its `{counter}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// The rule as the operator wrote it.
    pub rule: Rule,
    /// Machines it has enrolled.
    pub enrolled: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// Conditions on a machine; every one given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// DMI system vendor (glob: `*`, `?`; case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<Glob>,
    /// DMI product name (glob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<Glob>,
    /// DMI serial number: one of these, exactly (case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serials: Vec<String>,
    /// A NIC's MAC starts with this (`52:54:00` or `52:54:00:be`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_prefix: Option<MacPrefix>,
    /// Disks: how many, how large, spinning or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<DiskMatch>,
    /// Physical memory bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<SizeRange>,
    /// Number of network interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nics: Option<CountRange>,
    /// Logical CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<CountRange>,
    /// The switch port a NIC is cabled to (LLDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<SwitchMatch>,
    /// `discovered`, `enrolled` or `registered` (workflow sets; rules only
    /// ever see discovered machines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Facility code (glob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<Glob>,
    /// Plan (glob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Glob>,
    /// The machine carries every one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Hostname (glob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Glob>,
}

/// Disk conditions. Disks that fit the size and kind bounds are counted;
/// then `count` (exactly) or `min_count`/`max_count` must hold, or, with
/// neither, at least one disk must fit. Removable media never count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskMatch {
    /// Exactly this many fitting disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// At least this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u32>,
    /// At most this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
    /// A fitting disk is at least this large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<Size>,
    /// A fitting disk is at most this large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Size>,
    /// Only spinning (true) or only solid-state (false) disks fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
}

/// Size bounds (inclusive).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeRange {
    /// At least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Size>,
    /// At most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Size>,
}

/// Count bounds (inclusive); `count` is exact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountRange {
    /// Exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// At least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// At most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// LLDP neighbour conditions (globs); some NIC's neighbour must fit all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchMatch {
    /// The switch's system name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Glob>,
    /// The switch's chassis id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chassis_id: Option<Glob>,
    /// The port id (`Ethernet1/7`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Glob>,
}

/// What a matching rule writes into the record. Text may hold
/// placeholders: `{counter}` (this rule's enrolment count, from 1;
/// `{counter:03}` zero-pads), `{serial}`, `{mac}`, `{mac_hex}`, `{vendor}`,
/// `{product}`, `{bmc_address}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// Hostname (DHCP option 12 and `metadata.instance.hostname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `metadata.facility.facility_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<String>,
    /// `metadata.facility.plan_slug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Added to `metadata.instance.tags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The workflow a matching rule creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleWorkflow {
    /// Template name or id.
    pub template: String,
    /// Template keys to values (placeholders allowed); `device_1: "{mac}"`
    /// when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hardware_map: BTreeMap<String, String>,
}

/// A glob: `*` any run, `?` one character, case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does `text` fit?
    pub fn matches(&self, text: &str) -> bool {
        let p: Vec<char> = self.0.to_lowercase().chars().collect();
        let t: Vec<char> = text.to_lowercase().chars().collect();
        // Iterative matching with one backtrack point: linear in practice,
        // never exponential.
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

impl Serialize for Glob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() > 256 {
            return Err(serde::de::Error::custom(
                "a pattern is at most 256 characters",
            ));
        }
        Ok(Glob(text))
    }
}

/// A MAC prefix of 1 to 6 octets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacPrefix(Vec<u8>);

impl MacPrefix {
    /// Does `mac` start with it?
    pub fn matches(&self, mac: MacAddr) -> bool {
        mac.octets().starts_with(&self.0)
    }
}

impl Serialize for MacPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = self.0.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&text.join(":"))
    }
}

impl<'de> Deserialize<'de> for MacPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let octets: Result<Vec<u8>, _> = text
            .split([':', '-'])
            .map(|o| {
                if o.len() == 2 {
                    u8::from_str_radix(o, 16).map_err(|_| ())
                } else {
                    Err(())
                }
            })
            .collect();
        match octets {
            Ok(o) if (1..=6).contains(&o.len()) => Ok(MacPrefix(o)),
            _ => Err(serde::de::Error::custom(format!(
                "{:?} is not a MAC prefix: 1 to 6 hex octets separated by ':' (52:54:00)",
                text.chars().take(40).collect::<String>()
            ))),
        }
    }
}

/// A size in bytes, written as a number or with a unit: `500GB`, `4TB`
/// (powers of 1000) or `64GiB`, `2TiB` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    /// Parses `text` (see the type's doc).
    pub fn parse(text: &str) -> Result<Size, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "m" | "mb" => 1_000_000,
            "g" | "gb" => 1_000_000_000,
            "t" | "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "{t:?} has an unknown unit: use B, KB, MB, GB, TB or KiB, MiB, GiB, TiB"
                ));
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{t:?} is not a size (a number and a unit, e.g. 500GB)"))?;
        let bytes = value * factor as f64;
        if !(0.0..1.0e19).contains(&bytes) {
            return Err(format!("{t:?} is out of range"));
        }
        Ok(Size(bytes as u64))
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Size(n)),
            Raw::Text(t) => Size::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

/// `T` typed straight from YAML (or JSON) text; an error names the field
/// it is about, as the document spells its path.
fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ValidationError> {
    let mut field = String::new();
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path != "." && path != "?" {
                field = path;
            }
            e.into_inner()
        })
    })
    .map_err(|e| ValidationError::new(field.clone(), e.to_string()))
}

/// The placeholder names text in `set` and `workflow` may use.
const PLACEHOLDERS: &[&str] = &[
    "counter",
    "serial",
    "mac",
    "mac_hex",
    "vendor",
    "product",
    "bmc_address",
];

impl Rule {
    /// Reads a rule from YAML (or JSON) and checks it.
    pub fn parse(text: &str) -> Result<Rule, ValidationError> {
        if text.len() > MAX_RULE_BYTES {
            return Err(ValidationError::new(
                "",
                format!(
                    "the rule is {} bytes; the limit is {MAX_RULE_BYTES}",
                    text.len()
                ),
            ));
        }
        let rule: Rule = from_yaml(text)?;
        rule.validate()?;
        Ok(rule)
    }

    /// Checks what the types cannot: the name, the placeholders, and that a
    /// hostname written without placeholders is a hostname.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 128
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(ValidationError::new(
                "name",
                format!(
                    "{:?} is not a rule name (1 to 128 letters, digits, '-', '_', '.')",
                    self.name.chars().take(40).collect::<String>()
                ),
            ));
        }
        let mut texts: Vec<(String, &str)> = Vec::new();
        if let Some(h) = &self.set.hostname {
            texts.push(("set.hostname".into(), h));
        }
        if let Some(f) = &self.set.facility {
            texts.push(("set.facility".into(), f));
        }
        if let Some(p) = &self.set.plan {
            texts.push(("set.plan".into(), p));
        }
        for (i, t) in self.set.tags.iter().enumerate() {
            texts.push((format!("set.tags[{i}]"), t));
        }
        if let Some(w) = &self.workflow {
            if w.template.trim().is_empty() {
                return Err(ValidationError::new(
                    "workflow.template",
                    "names no template",
                ));
            }
            for (k, v) in &w.hardware_map {
                texts.push((format!("workflow.hardware_map.{k}"), v));
            }
        }
        for (field, text) in texts {
            check_placeholders(text).map_err(|m| ValidationError::new(field, m))?;
        }
        self.matches.check_state("match.state")
    }

    /// What this rule makes of `hw` with enrolment number `counter`: the
    /// record (enrolled, metadata set) and the workflow request. An error
    /// names the field whose result is unusable (a hostname a serial made
    /// invalid, say); the machine then stays discovered.
    pub fn apply(&self, hw: &Hardware, counter: u64) -> Result<Enrolment, ValidationError> {
        let vars = Vars::of(hw, counter);
        let mut out = hw.clone();
        super::mark_enrolled(&mut out, format!("rule:{}", self.name));
        if !out.metadata.is_object() {
            out.metadata = Value::Object(Map::new());
        }
        let meta = out
            .metadata
            .as_object_mut()
            .ok_or_else(|| ValidationError::new("metadata", "must be an object"))?;
        if let Some(pattern) = &self.set.hostname {
            let name = vars.expand(pattern);
            for iface in out.network.interfaces.iter_mut() {
                if let Some(dhcp) = iface.dhcp.as_mut() {
                    dhcp.hostname = Some(name.clone());
                }
            }
            object(meta, "instance").insert("hostname".into(), Value::String(name));
        }
        if let Some(f) = &self.set.facility {
            object(meta, "facility").insert("facility_code".into(), vars.expand(f).into());
        }
        if let Some(p) = &self.set.plan {
            object(meta, "facility").insert("plan_slug".into(), vars.expand(p).into());
        }
        if !self.set.tags.is_empty() {
            let instance = object(meta, "instance");
            let tags = instance
                .entry("tags")
                .or_insert_with(|| Value::Array(Vec::new()));
            if !tags.is_array() {
                *tags = Value::Array(Vec::new());
            }
            if let Value::Array(list) = tags {
                for t in &self.set.tags {
                    let t = Value::String(vars.expand(t));
                    if !list.contains(&t) {
                        list.push(t);
                    }
                }
            }
        }
        out.validate()?;
        let workflow = self.workflow.as_ref().map(|w| {
            let mut map: BTreeMap<String, String> = w
                .hardware_map
                .iter()
                .map(|(k, v)| (k.clone(), vars.expand(v)))
                .collect();
            if map.is_empty() {
                map.insert("device_1".into(), vars.mac.clone());
            }
            NewWorkflow {
                template: w.template.clone(),
                hardware_map: map,
                hardware: Some(out.id.clone()),
                boot_options: Default::default(),
            }
        });
        Ok(Enrolment {
            hardware: out,
            workflow,
        })
    }
}

/// What a rule (or an operator) makes of a discovered machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrolment {
    /// The record to store, now enrolled.
    pub hardware: Hardware,
    /// The workflow to create, if the rule names one.
    pub workflow: Option<NewWorkflow>,
}

fn object<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

fn check_placeholders(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{text:?}: '{{' without '}}'"))?;
        let inner = &after[..close];
        let (name, width) = inner.split_once(':').unwrap_or((inner, ""));
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "{text:?}: {{{inner}}} is not a placeholder; use one of {}",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !width.is_empty() && (name != "counter" || width.parse::<u8>().map_or(true, |w| w > 20))
        {
            return Err(format!(
                "{text:?}: only {{counter}} takes a width, as {{counter:03}}"
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// Placeholder values for one machine.
struct Vars {
    counter: u64,
    serial: String,
    mac: String,
    mac_hex: String,
    vendor: String,
    product: String,
    bmc_address: String,
}

/// Lower-case letters, digits and `-`: what a hostname label may hold.
fn label(text: &str) -> String {
    let mut out: String = text
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').chars().take(63).collect()
}

impl Vars {
    fn of(hw: &Hardware, counter: u64) -> Vars {
        let inv = inventory(hw);
        let mac = hw.macs().next().map(|m| m.to_string()).unwrap_or_default();
        Vars {
            counter,
            serial: label(inv.map_or("", |i| i.dmi("product_serial"))),
            mac_hex: mac.replace(':', ""),
            mac,
            vendor: label(inv.map_or("", |i| i.dmi("sys_vendor"))),
            product: label(inv.map_or("", |i| i.dmi("product_name"))),
            bmc_address: inv.map(|i| i.bmc_address.clone()).unwrap_or_default(),
        }
    }

    fn expand(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                return out;
            };
            let inner = &after[..close];
            let (name, width) = inner.split_once(':').unwrap_or((inner, ""));
            match name {
                "counter" => {
                    let w: usize = width.parse().unwrap_or(0);
                    let _ = write!(out, "{:0w$}", self.counter);
                }
                "serial" => out.push_str(if self.serial.is_empty() {
                    &self.mac_hex
                } else {
                    &self.serial
                }),
                "mac" => out.push_str(&self.mac),
                "mac_hex" => out.push_str(&self.mac_hex),
                "vendor" => out.push_str(&self.vendor),
                "product" => out.push_str(&self.product),
                "bmc_address" => out.push_str(&self.bmc_address),
                _ => {
                    out.push('{');
                    out.push_str(inner);
                    out.push('}');
                }
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn inventory(hw: &Hardware) -> Option<&Facts> {
    hw.discovery.as_ref().map(|d| &d.inventory)
}

/// Why a machine does not fit a [`Match`]: the first condition that failed,
/// as `rule test` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss(pub String);

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn glob_check(what: &str, glob: &Option<Glob>, value: &str) -> Result<(), Miss> {
    match glob {
        Some(g) if !g.matches(value) => Err(Miss(format!(
            "{what} {value:?} does not fit {:?}",
            g.as_str()
        ))),
        _ => Ok(()),
    }
}

fn count_check(what: &str, range: &CountRange, n: u32) -> Result<(), Miss> {
    let fits = range.count.is_none_or(|c| c == n)
        && range.min.is_none_or(|m| n >= m)
        && range.max.is_none_or(|m| n <= m);
    if fits {
        Ok(())
    } else {
        Err(Miss(format!(
            "{what}: has {n}, wants {}",
            describe_count(range)
        )))
    }
}

fn describe_count(r: &CountRange) -> String {
    let mut parts = Vec::new();
    if let Some(c) = r.count {
        parts.push(format!("exactly {c}"));
    }
    if let Some(m) = r.min {
        parts.push(format!("at least {m}"));
    }
    if let Some(m) = r.max {
        parts.push(format!("at most {m}"));
    }
    parts.join(", ")
}

impl Match {
    /// A selector from YAML (or JSON) text: a rule's `match` on its own.
    pub fn parse(text: &str) -> Result<Match, ValidationError> {
        if text.len() > MAX_RULE_BYTES {
            return Err(ValidationError::new("", "the selector is too long"));
        }
        let selector: Match = from_yaml(text)?;
        selector.check_state("state")?;
        Ok(selector)
    }

    /// `state`, if given, is one `hardware_state` can return; `field` is
    /// where the caller's document holds it.
    fn check_state(&self, field: &str) -> Result<(), ValidationError> {
        match &self.state {
            Some(state) if !matches!(state.as_str(), "discovered" | "enrolled" | "registered") => {
                Err(ValidationError::new(
                    field,
                    format!("{state:?} is not a state: discovered, enrolled or registered"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Does `hw` fit every condition? The error is the first that does not.
    pub fn check(&self, hw: &Hardware) -> Result<(), Miss> {
        let empty = Facts::default();
        let inv = inventory(hw).unwrap_or(&empty);
        if let Some(state) = &self.state
            && hardware_state(hw) != state
        {
            return Err(Miss(format!(
                "state is {}, wants {state}",
                hardware_state(hw)
            )));
        }
        glob_check("vendor", &self.vendor, inv.dmi("sys_vendor"))?;
        glob_check("product", &self.product, inv.dmi("product_name"))?;
        if !self.serials.is_empty() {
            let serial = inv.dmi("product_serial");
            if !self.serials.iter().any(|s| s.eq_ignore_ascii_case(serial)) {
                return Err(Miss(format!("serial {serial:?} is not in the list")));
            }
        }
        if let Some(prefix) = &self.mac_prefix {
            let inventory_macs = inv
                .nics
                .iter()
                .filter_map(|n| n.mac.parse::<MacAddr>().ok());
            if !hw.macs().chain(inventory_macs).any(|m| prefix.matches(m)) {
                return Err(Miss("no NIC's MAC has the prefix".to_string()));
            }
        }
        if let Some(d) = &self.disks {
            let fitting = inv
                .disks
                .iter()
                .filter(|disk| !disk.removable)
                .filter(|disk| d.min_size.is_none_or(|m| disk.size_bytes >= m.0))
                .filter(|disk| d.max_size.is_none_or(|m| disk.size_bytes <= m.0))
                .filter(|disk| d.rotational.is_none_or(|r| disk.rotational == r))
                .count() as u32;
            let range = CountRange {
                count: d.count,
                min: d.min_count.or((d.count.is_none()
                    && d.min_count.is_none()
                    && d.max_count.is_none())
                .then_some(1)),
                max: d.max_count,
            };
            let sizes: Vec<String> = inv
                .disks
                .iter()
                .filter(|disk| !disk.removable)
                .map(|disk| format!("{} {}", disk.name, Size(disk.size_bytes)))
                .collect();
            count_check("disks that fit", &range, fitting)
                .map_err(|Miss(m)| Miss(format!("{m} (disks: {})", sizes.join(", "))))?;
        }
        if let Some(m) = &self.memory {
            let have = inv.memory_bytes;
            if m.min.is_some_and(|min| have < min.0) || m.max.is_some_and(|max| have > max.0) {
                return Err(Miss(format!(
                    "memory is {}, outside {}..{}",
                    Size(have),
                    m.min.map_or("-".into(), |s| s.to_string()),
                    m.max.map_or("-".into(), |s| s.to_string())
                )));
            }
        }
        if let Some(n) = &self.nics {
            count_check("NICs", n, inv.nics.len() as u32)?;
        }
        if let Some(c) = &self.cpus {
            count_check("CPUs", c, inv.cpu.as_ref().map_or(0, |c| c.threads))?;
        }
        if let Some(sw) = &self.switch {
            let fits = inv.nics.iter().filter_map(|n| n.lldp.as_ref()).any(|l| {
                sw.name.as_ref().is_none_or(|g| g.matches(&l.system_name))
                    && sw
                        .chassis_id
                        .as_ref()
                        .is_none_or(|g| g.matches(&l.chassis_id))
                    && sw.port.as_ref().is_none_or(|g| g.matches(&l.port_id))
            });
            if !fits {
                return Err(Miss("no NIC's LLDP neighbour fits the switch match".into()));
            }
        }
        glob_check("facility", &self.facility, hw.facility().unwrap_or(""))?;
        let plan = hw
            .metadata
            .pointer("/facility/plan_slug")
            .and_then(Value::as_str)
            .unwrap_or("");
        glob_check("plan", &self.plan, plan)?;
        glob_check("hostname", &self.hostname, hw.hostname().unwrap_or(""))?;
        if !self.tags.is_empty() {
            let tags: Vec<&str> = hw
                .metadata
                .pointer("/instance/tags")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(missing) = self.tags.iter().find(|t| !tags.contains(&t.as_str())) {
                return Err(Miss(format!("has no tag {missing:?}")));
            }
        }
        Ok(())
    }
}

/// One rule's verdict on a machine, for `rule test`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The rule.
    pub rule: String,
    /// Its priority.
    pub priority: i64,
    /// Does the machine fit?
    pub matches: bool,
    /// Why not, or that the rule is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Sorts rules into the order they are tried.
pub fn sort(rules: &mut [Rule]) {
    rules.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// Tries `rules` (already in order) on `hw`: every rule's verdict, and the
/// index of the first enabled rule that matches. Only discovered machines
/// are enrolled by rules.
pub fn evaluate(rules: &[Rule], hw: &Hardware) -> (Vec<Verdict>, Option<usize>) {
    let mut verdicts = Vec::with_capacity(rules.len());
    let mut winner = None;
    let discovered = hw
        .discovery
        .as_ref()
        .is_some_and(|d| d.state == DiscoveryState::Discovered);
    for (i, rule) in rules.iter().enumerate() {
        let result = rule.matches.check(hw);
        let (matches, reason) = match &result {
            Ok(()) if rule.disabled => (true, Some("matches, but the rule is disabled".into())),
            Ok(()) => (true, None),
            Err(miss) => (false, Some(miss.0.clone())),
        };
        if matches && !rule.disabled && winner.is_none() && discovered {
            winner = Some(i);
        }
        verdicts.push(Verdict {
            rule: rule.name.clone(),
            priority: rule.priority,
            matches,
            reason,
        });
    }
    (verdicts, winner)
}

#[cfg(test)]
mod tests;
