//! Rendering a template for a workflow, with Go `text/template` semantics.
//!
//! Tinkerbell renders templates with Go's `text/template`, option
//! `missingkey=error`, its own functions (`formatPartition`, `contains`,
//! `hasPrefix`, `hasSuffix`) and, since v0.11, Sprig's text functions;
//! `render/sprig.rs` has them all, and the rule that lets both argument
//! orders of `contains`/`hasPrefix`/`hasSuffix` work. The data is
//! the workflow's hardware map at the top level (`{{.device_1}}`) plus
//! `.Hardware` with Go field names (`.Hardware.Disks`,
//! `.Hardware.Metadata.Instance.Hostname`). Bellows does the same through
//! `gotmpl`, so a template renders to the same bytes here as in Tinkerbell;
//! golden tests hold that against Go itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::{MissingKey, Template as GoTemplate, TemplateError, Value as GoValue};
use serde_json::Value;

use crate::error::ValidationError;
use crate::hardware::{Hardware, Interface};
use crate::template::{Strictness, Template};
use budget::{BoundedText, Meter, OwnFuncs, meter_list};

mod sprig;
pub use budget::{BudgetExceeded, RenderBudget};

/// What a template sees when it is rendered.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    /// `device_1` → worker id (a MAC), as given to `workflow create -r`.
    pub hardware_map: BTreeMap<String, String>,
    /// The machine the workflow is for, exposed as `.Hardware`.
    pub hardware: Option<Hardware>,
}

/// Checks template syntax without data: unbalanced `{{`, unknown functions.
pub fn check_syntax(source: &str) -> Result<(), ValidationError> {
    go_template(
        source,
        &Meter::new(RenderBudget::default()),
        MissingKey::Error,
    )
    .map(|_| ())
}

/// Renders a template once with no hardware (missing keys are empty) and
/// refuses it if that alone runs past the render budget: a template bomb
/// whose fan-out does not depend on the data is refused when it is
/// created, not when the first workflow uses it. Any other failure is left
/// for the workflow's render to report, with its real data.
pub fn check_budget(source: &str) -> Result<(), ValidationError> {
    let meter = Meter::new(RenderBudget::default());
    let tmpl = go_template(source, &meter, MissingKey::ZeroValue)?;
    let _ = execute(&tmpl, &meter, &context_value(&RenderContext::default()));
    match meter.exceeded() {
        Some(why) => Err(ValidationError::new(
            "template",
            format!("{why}, even with no hardware; the template is refused"),
        )),
        None => Ok(()),
    }
}

/// Everything that can be checked of a template source before a workflow
/// gives it data, without refusing what Tinkerbell accepts (it renders
/// first and parses after, since v0.9): Go template syntax and the render
/// budget, then the YAML of the template rendered with no data (missing
/// keys print `<no value>`, which is not checked), so that a template that
/// is YAML only once rendered (`DEST_DISK: {{ index .Hardware.Disks 0 }}`,
/// `{{- if }}` lines) is accepted and one that is not YAML even then (tab
/// indentation) is refused with the line. When rendering needs real data
/// (`index .Hardware.Disks 0` with no machine), the workflow's render
/// checks the rest.
pub fn check_source(source: &str) -> Result<(), ValidationError> {
    let limit = crate::template::MAX_TEMPLATE_BYTES;
    if source.len() > limit {
        return Err(ValidationError::new(
            "",
            format!("template is {} bytes; the limit is {limit}", source.len()),
        ));
    }
    check_syntax(source)?;
    check_budget(source)?;
    let meter = Meter::new(RenderBudget::default());
    let tmpl = go_template(source, &meter, MissingKey::ZeroValue)?;
    match execute(&tmpl, &meter, &context_value(&RenderContext::default())) {
        Ok(text) => match Template::parse(&text, Strictness::Source) {
            Ok(_) => Ok(()),
            // Not YAML even rendered: the source's own error names the
            // operator's line, when the source shows it too (tabs).
            Err(e) if e.message.starts_with("not valid YAML") => {
                match Template::parse(source, Strictness::Source) {
                    Err(own) if own.message.starts_with("not valid YAML") => Err(own),
                    _ => Err(ValidationError::new(
                        e.field.clone(),
                        format!(
                            "{} (lines of the template as rendered with no hardware)",
                            e.message
                        ),
                    )),
                }
            }
            Err(e) => Err(e),
        },
        // Rendering needs a machine's data (`index .Hardware.Disks 0` with
        // none): even a source that happens to be YAML (`{{ … }}` reads as
        // a flow mapping) says nothing yet; the workflow's render checks
        // it, naming the line.
        Err(_) => Ok(()),
    }
}

/// Renders a template source for one workflow and parses the result strictly.
///
/// Returns the rendered YAML text (stored with the workflow, so later
/// template edits do not change it) and its parsed form.
pub fn render(source: &str, ctx: &RenderContext) -> Result<(String, Template), ValidationError> {
    let text = render_text(source, ctx)?;
    let template = Template::parse(&text, Strictness::Rendered).map_err(|e| {
        ValidationError::new(
            e.field.clone(),
            format!(
                "{} (in the template as rendered for this workflow)",
                e.message
            ),
        )
    })?;
    Ok((text, template))
}

/// Renders a template source to text, without parsing the result, within
/// the default [`RenderBudget`].
pub fn render_text(source: &str, ctx: &RenderContext) -> Result<String, ValidationError> {
    render_text_within(source, ctx, RenderBudget::default())
}

/// Renders a template source to text within `budget`: rendering stops as
/// soon as it passes one of the limits, with an error naming it.
pub fn render_text_within(
    source: &str,
    ctx: &RenderContext,
    budget: RenderBudget,
) -> Result<String, ValidationError> {
    let meter = Meter::new(budget);
    let tmpl = go_template(source, &meter, MissingKey::Error)?;
    let data = context_value(ctx);
    execute(&tmpl, &meter, &data).map_err(|e| match (meter.exceeded(), e) {
        (Some(why), _) => ValidationError::new("template", format!("rendering stopped: {why}")),
        (None, TemplateError::MissingKey { key }) => missing_key(&key, ctx),
        (None, TemplateError::RangeIterLimit) => ValidationError::new(
            "template",
            format!(
                "rendering stopped: {}",
                BudgetExceeded::Steps(meter.budget().max_steps)
            ),
        ),
        (None, other) => ValidationError::new("template", format!("rendering failed: {other}")),
    })
}

/// Runs the metered template into bounded text. The root template runs
/// under its own name, where [`go_template`] put its metered copy.
fn execute(tmpl: &GoTemplate, meter: &Meter, data: &GoValue) -> Result<String, TemplateError> {
    let mut out = BoundedText::new(meter);
    if tmpl.lookup(TEMPLATE_NAME).is_some() {
        tmpl.execute_template_fmt(&mut out, TEMPLATE_NAME, data)?;
    } else {
        // An empty or whitespace-only body: nothing to meter.
        tmpl.execute_fmt(&mut out, data)?;
    }
    Ok(out.text)
}

fn missing_key(key: &str, ctx: &RenderContext) -> ValidationError {
    let have: Vec<&str> = ctx.hardware_map.keys().map(String::as_str).collect();
    ValidationError::new(
        "hardware_map",
        format!(
            "the template uses {{{{.{key}}}}} but the workflow has no key {key:?} (hardware map keys: {}{})",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            },
            if ctx.hardware.is_some() {
                "; .Hardware is set"
            } else {
                "; no hardware record matched, so .Hardware is unset"
            }
        ),
    )
}

/// Checks that `if`/`range`/`with`/`define`/`block` each have their `end`.
///
/// gotmpl 0.6.1 accepts a block left open at end of input, or a stray
/// `{{end}}`, where Go refuses both (the golden tests caught it); this scan
/// restores Go's behaviour. It skips comments and quoted strings so a `}}`
/// inside them does not end the action early.
fn check_blocks(source: &str) -> Result<(), ValidationError> {
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut rest = source;
    let mut line = 1;
    while let Some(start) = rest.find("{{") {
        line += rest[..start].matches('\n').count();
        let action_start = &rest[start + 2..];
        let body = action_start
            .strip_prefix('-')
            .unwrap_or(action_start)
            .trim_start();
        let Some(len) = action_len(action_start) else {
            return Err(ValidationError::new(
                "template",
                format!("template syntax: line {line}: unclosed action (missing }}}})"),
            ));
        };
        let keyword: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        match keyword.as_str() {
            "if" | "range" | "with" | "define" | "block" => {
                open.push((keyword, line));
            }
            "end" if open.pop().is_none() => {
                return Err(ValidationError::new(
                    "template",
                    format!("template syntax: line {line}: unexpected {{{{end}}}}"),
                ));
            }
            _ => {}
        }
        line += action_start[..len].matches('\n').count();
        rest = &action_start[len..];
    }
    if let Some((keyword, at)) = open.pop() {
        return Err(ValidationError::new(
            "template",
            format!("template syntax: {{{{{keyword}}}}} on line {at} has no {{{{end}}}}"),
        ));
    }
    Ok(())
}

/// Length of an action body up to and including its closing `}}`, skipping
/// comments and string literals; `None` if it never closes.
fn action_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2 + s[i + 2..].find("*/")? + 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'`' => {
                i += 1 + s[i + 1..].find('`')? + 1;
            }
            b'\'' => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i + 2),
            _ => i += 1,
        }
    }
    None
}

const TEMPLATE_NAME: &str = "workflow-template";

/// Parses a template with Tinkerbell's functions, every function metered by
/// `meter`, and a metering node at the head of every list of nodes.
fn go_template(
    source: &str,
    meter: &Arc<Meter>,
    missing: MissingKey,
) -> Result<GoTemplate, ValidationError> {
    check_blocks(source)?;
    let own: OwnFuncs = sprig::functions();
    let base = GoTemplate::new(TEMPLATE_NAME)
        .missing_key(missing)
        .max_range_iters(meter.budget().max_steps);
    let mut tmpl = meter
        .install(base, own)
        .parse(source)
        .map_err(|e| ValidationError::new("template", format!("template syntax: {e}")))?;
    let names: Vec<String> = tmpl.templates().into_iter().map(str::to_string).collect();
    for name in names {
        if let Some(body) = tmpl.lookup(&name) {
            let mut body = body.clone();
            meter_list(&mut body);
            tmpl = tmpl.add_parse_tree(&name, body);
        }
    }
    Ok(tmpl)
}

/// Tinkerbell's partition naming: NVMe devices take a `p` before the number,
/// SCSI/virtio/Xen/IDE disks take the number directly; anything else (an
/// unknown scheme) is returned unchanged rather than guessed.
pub fn format_partition(device: &str, partition: i64) -> String {
    if device.starts_with("/dev/nvme") {
        format!("{device}p{partition}")
    } else if ["/dev/sd", "/dev/vd", "/dev/xvd", "/dev/hd"]
        .iter()
        .any(|p| device.starts_with(p))
    {
        format!("{device}{partition}")
    } else {
        device.to_string()
    }
}

/// Builds the template data: hardware map entries at the top, `.Hardware`
/// beside them with Go field names.
pub(crate) fn context_value(ctx: &RenderContext) -> GoValue {
    let mut top: BTreeMap<Arc<str>, GoValue> = ctx
        .hardware_map
        .iter()
        .map(|(k, v)| (Arc::from(k.as_str()), GoValue::String(v.as_str().into())))
        .collect();
    if let Some(hw) = &ctx.hardware {
        top.insert("Hardware".into(), hardware_value(hw));
    }
    GoValue::Map(Arc::new(top))
}

fn map(entries: Vec<(&str, GoValue)>) -> GoValue {
    GoValue::Map(Arc::new(
        entries
            .into_iter()
            .map(|(k, v)| (Arc::from(k), v))
            .collect(),
    ))
}

fn string(s: Option<&str>) -> GoValue {
    GoValue::String(s.unwrap_or_default().into())
}

fn strings<T: ToString>(items: &[T]) -> GoValue {
    GoValue::List(
        items
            .iter()
            .map(|s| GoValue::String(s.to_string().into()))
            .collect(),
    )
}

/// Mirrors Tinkerbell's `templateHardwareData` struct.
fn hardware_value(hw: &Hardware) -> GoValue {
    map(vec![
        ("Disks", strings(&hw.disk_devices())),
        (
            "Interfaces",
            GoValue::List(hw.network.interfaces.iter().map(interface_value).collect()),
        ),
        ("UserData", string(hw.user_data())),
        ("Metadata", go_struct(&hw.metadata, METADATA)),
        ("VendorData", string(hw.vendor_data.as_deref())),
    ])
}

fn interface_value(iface: &Interface) -> GoValue {
    let dhcp = iface.dhcp.as_ref().map_or(GoValue::Nil, |d| {
        let ip = d.ip.as_ref().map_or(GoValue::Nil, |ip| {
            map(vec![
                ("Address", GoValue::String(ip.address.to_string().into())),
                (
                    "Netmask",
                    string(ip.netmask.map(|m| m.to_string()).as_deref()),
                ),
                (
                    "Gateway",
                    string(ip.gateway.map(|g| g.to_string()).as_deref()),
                ),
                ("Family", GoValue::Int(ip.family.unwrap_or(0))),
            ])
        });
        map(vec![
            ("MAC", GoValue::String(d.mac.to_string().into())),
            ("Hostname", string(d.hostname.as_deref())),
            (
                "LeaseTime",
                GoValue::Int(
                    d.lease_time
                        .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
                ),
            ),
            (
                "NameServers",
                strings(d.name_servers.as_deref().unwrap_or_default()),
            ),
            (
                "TimeServers",
                strings(d.time_servers.as_deref().unwrap_or_default()),
            ),
            ("IP", ip),
            ("Arch", string(d.arch.as_deref())),
            ("UEFI", GoValue::Bool(d.uefi.unwrap_or(false))),
            ("IfaceName", string(d.iface_name.as_deref())),
            ("VLANID", string(d.vlan_id.as_deref())),
        ])
    });
    let netboot = iface.netboot.as_ref().map_or(GoValue::Nil, |n| {
        let ipxe = n.ipxe.as_ref().map_or(GoValue::Nil, |i| {
            map(vec![
                ("URL", string(i.url.as_deref())),
                ("Contents", string(i.contents.as_deref())),
            ])
        });
        let osie = n.osie.as_ref().map_or(GoValue::Nil, |o| {
            map(vec![
                ("BaseURL", string(o.base_url.as_deref())),
                ("Kernel", string(o.kernel.as_deref())),
                ("Initrd", string(o.initrd.as_deref())),
            ])
        });
        map(vec![
            ("AllowPXE", n.allow_pxe.map_or(GoValue::Nil, GoValue::Bool)),
            (
                "AllowWorkflow",
                n.allow_workflow.map_or(GoValue::Nil, GoValue::Bool),
            ),
            ("IPXE", ipxe),
            ("OSIE", osie),
        ])
    });
    map(vec![
        ("Netboot", netboot),
        ("DHCP", dhcp),
        ("DisableDHCP", GoValue::Bool(iface.disable_dhcp)),
    ])
}

/// The Go type of a known metadata field, so absent fields render as Go's
/// zero value instead of failing `missingkey=error`.
#[derive(Clone, Copy)]
enum Field {
    Str,
    Int,
    Bool,
    List,
    /// A pointer to a struct: nil when absent.
    Struct(&'static [(&'static str, Field)]),
}

use Field::{Bool, Int, List, Str, Struct};

const METADATA: &[(&str, Field)] = &[
    ("state", Str),
    ("bonding_mode", Int),
    ("manufacturer", Struct(&[("id", Str), ("slug", Str)])),
    (
        "instance",
        Struct(&[
            ("id", Str),
            ("state", Str),
            ("hostname", Str),
            ("allow_pxe", Bool),
            ("rescue", Bool),
            (
                "operating_system",
                Struct(&[
                    ("slug", Str),
                    ("distro", Str),
                    ("version", Str),
                    ("image_tag", Str),
                    ("os_slug", Str),
                ]),
            ),
            ("always_pxe", Bool),
            ("ipxe_script_url", Str),
            ("ips", List),
            ("userdata", Str),
            ("crypted_root_password", Str),
            ("tags", List),
            (
                "storage",
                Struct(&[("disks", List), ("raid", List), ("filesystems", List)]),
            ),
            ("ssh_keys", List),
            ("network_ready", Bool),
        ]),
    ),
    (
        "custom",
        Struct(&[
            ("preinstalled_operating_system_version", Struct(&[])),
            ("private_subnets", List),
        ]),
    ),
    (
        "facility",
        Struct(&[
            ("plan_slug", Str),
            ("plan_version_slug", Str),
            ("facility_code", Str),
        ]),
    ),
];

/// Go's exported name for a snake_case JSON key, with Go's initialisms.
fn go_name(key: &str) -> String {
    key.split('_')
        .map(|part| match part {
            "id" => "ID".to_string(),
            "url" => "URL".to_string(),
            "ssh" => "SSH".to_string(),
            _ => {
                let mut c = part.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            }
        })
        .collect()
}

/// Converts a JSON object to the Go struct Tinkerbell would have decoded it
/// into: known fields present with zero values, keys in Go's spelling.
/// Unknown keys are kept too (Go would drop them; keeping them only makes
/// more templates work).
fn go_struct(json: &Value, fields: &[(&str, Field)]) -> GoValue {
    let obj = json.as_object();
    let mut out: BTreeMap<Arc<str>, GoValue> = BTreeMap::new();
    for (key, field) in fields {
        let v = obj.and_then(|o| o.get(*key)).unwrap_or(&Value::Null);
        let value = match (field, v) {
            (Str, Value::Null) => GoValue::String("".into()),
            (Int, Value::Null) => GoValue::Int(0),
            (Bool, Value::Null) => GoValue::Bool(false),
            (List, Value::Null) | (Struct(_), Value::Null) => GoValue::Nil,
            (Struct(inner), v @ Value::Object(_)) => go_struct(v, inner),
            (_, v) => json_value(v),
        };
        out.insert(go_name(key).into(), value);
    }
    if let Some(obj) = obj {
        for (k, v) in obj {
            if !fields.iter().any(|(known, _)| known == k) {
                out.insert(go_name(k).into(), json_value(v));
            }
        }
    }
    GoValue::Map(Arc::new(out))
}

/// Generic JSON → template value, keys renamed to Go's spelling.
fn json_value(v: &Value) -> GoValue {
    match v {
        Value::Null => GoValue::Nil,
        Value::Bool(b) => GoValue::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(GoValue::Int)
            .or_else(|| n.as_u64().map(GoValue::Uint))
            .unwrap_or_else(|| GoValue::Float(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => GoValue::String(s.as_str().into()),
        Value::Array(items) => GoValue::List(items.iter().map(json_value).collect()),
        Value::Object(_) => go_struct(v, &[]),
    }
}

mod budget;
#[cfg(test)]
mod tests;
