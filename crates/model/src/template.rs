//! Workflow templates: the ordered container actions that install a machine.
//!
//! The YAML is Tinkerbell's (`version`, `name`, `global_timeout`, `tasks[]`
//! with `actions[]`), so existing templates load unchanged. A template is
//! stored as its source text, because it is a Go `text/template` that is only
//! complete once rendered for a workflow ([`mod@crate::render`]). This module
//! parses and validates the YAML, before rendering (leniently: placeholders
//! are not checked) and after (strictly).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ValidationError, index, join};

/// Largest template source accepted.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
/// Name length limit, as Tinkerbell enforces it.
pub const MAX_NAME_LEN: usize = 199;

/// A parsed workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Format version; Tinkerbell's is `0.1`.
    #[serde(default = "default_version", deserialize_with = "string_or_number")]
    pub version: String,
    /// Workflow name, shown in listings.
    pub name: String,
    /// Tinkerbell carried an `id` in some files; kept so they load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Seconds the whole workflow may take. Zero means no limit.
    #[serde(default)]
    pub global_timeout: u64,
    /// Tasks, each bound to one worker, run in order.
    pub tasks: Vec<Task>,
}

/// A sequence of actions on one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Unique within the template.
    pub name: String,
    /// Worker id (usually a MAC, via `{{.device_1}}`).
    pub worker: String,
    /// Volumes mounted into every action of the task (`src:dst[:ro]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Environment given to every action of the task.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "string_map"
    )]
    pub environment: BTreeMap<String, String>,
    /// Actions, run in order.
    pub actions: Vec<Action>,
}

/// One step: a container image run to completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Unique within the task.
    pub name: String,
    /// Container image reference, or a built-in action's name.
    pub image: String,
    /// Seconds the action may run. Zero means no per-action limit.
    #[serde(default)]
    pub timeout: u64,
    /// Command overriding the image's entrypoint arguments.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub command: Vec<String>,
    /// Action-specific environment, over the task's.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "string_map"
    )]
    pub environment: BTreeMap<String, String>,
    /// Action-specific volumes, added to the task's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// `host` to share the host's PID namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// Command run when the action times out.
    #[serde(
        default,
        rename = "on-timeout",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub on_timeout: Vec<String>,
    /// Command run when the action fails.
    #[serde(
        default,
        rename = "on-failure",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub on_failure: Vec<String>,
    /// How many times to retry a failed action before the workflow fails.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_version() -> String {
    "0.1".to_string()
}

/// A scalar as the text it was written with. Read from YAML, a plain
/// scalar is asked for as a string, so `0600` stays `0600`, `ON` stays
/// `ON` and `0.10` stays `0.10`, as Tinkerbell's Go YAML decoding into
/// strings keeps them (issue 13). A deserializer that hands over typed
/// numbers or booleans instead gets them back as their usual text.
struct ScalarText;

impl<'de> serde::de::Visitor<'de> for ScalarText {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
}

/// One scalar, as [`ScalarText`] reads it.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        d.deserialize_string(ScalarText).map(Text)
    }
}

/// `version: 0.1` is a plain scalar: keep the text users wrote.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_string(ScalarText)
}

/// Environment values are the scalar's text as written (`MODE: 0600`,
/// `POWER: ON`); an empty value is the empty string; containers only take
/// strings, so a list or mapping is an error.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<String, Option<Text>>>::deserialize(d)?.unwrap_or_default();
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.map(|t| t.0).unwrap_or_default()))
        .collect())
}

/// `command: "echo hi"` is a common slip; accept it as a one-element list
/// the way a container runtime would treat a single argument. Items are
/// the scalars' text as written.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct ListOrOne;
    impl<'de> serde::de::Visitor<'de> for ListOrOne {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of strings, or one string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(Text(item)) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_any(ListOrOne)
}

/// How strictly values are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Template source: values still holding `{{ … }}`, or `<no value>`
    /// where a key was missing, are not checked.
    Source,
    /// Rendered workflow: every value is final and must be valid.
    Rendered,
}

impl Template {
    /// Parses YAML text into a template and validates it.
    pub fn parse(yaml: &str, strictness: Strictness) -> Result<Template, ValidationError> {
        if yaml.len() > MAX_TEMPLATE_BYTES {
            return Err(ValidationError::new(
                "",
                format!(
                    "template is {} bytes; the limit is {MAX_TEMPLATE_BYTES}",
                    yaml.len()
                ),
            ));
        }
        // Well-formed YAML first, so a syntax error is reported as one
        // (with its line) rather than as the field it happened to hit.
        serde_saphyr::from_str::<serde::de::IgnoredAny>(yaml)
            .map_err(|e| ValidationError::new("", format!("not valid YAML: {e}")))?;
        // Typed straight from the YAML, not through a JSON value, so that
        // every string field keeps the scalar's text as written.
        let mut field = String::new();
        let template: Template = serde_saphyr::with_deserializer_from_str(yaml, |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                if path != "." && path != "?" {
                    field = path;
                }
                e.into_inner()
            })
        })
        .map_err(|e| {
            let message = e.to_string();
            let message = if field.is_empty() && !message.contains("missing field") {
                format!(
                    "a template must be a YAML mapping with version, name, global_timeout and tasks: {message}"
                )
            } else {
                message
            };
            ValidationError::new(field.clone(), message)
        })?;
        template.validate(strictness)?;
        Ok(template)
    }

    /// Semantic checks serde cannot express.
    pub fn validate(&self, strictness: Strictness) -> Result<(), ValidationError> {
        // Before rendering, `{{ … }}` is unresolved; rendered with no data
        // (`render::check_source`), a missing key prints `<no value>`.
        let unresolved = |s: &str| {
            strictness == Strictness::Source && (s.contains("{{") || s.contains("<no value>"))
        };
        if self.version != "0.1" && !unresolved(&self.version) {
            return Err(ValidationError::new(
                "version",
                format!("unsupported version {:?}; use \"0.1\"", self.version),
            ));
        }
        check_name("name", &self.name)?;
        if self.tasks.is_empty() {
            return Err(ValidationError::new(
                "tasks",
                "a template needs at least one task",
            ));
        }
        let mut task_names = BTreeSet::new();
        for (ti, task) in self.tasks.iter().enumerate() {
            let tpath = index("tasks", ti);
            check_name(&join(&tpath, "name"), &task.name)?;
            if !task_names.insert(task.name.as_str()) {
                return Err(ValidationError::new(
                    join(&tpath, "name"),
                    format!(
                        "task name {:?} is used twice; task names must be unique",
                        task.name
                    ),
                ));
            }
            if task.worker.trim().is_empty() {
                return Err(ValidationError::new(
                    join(&tpath, "worker"),
                    "empty worker: set it to a worker id or a hardware map key such as \"{{.device_1}}\"",
                ));
            }
            check_env(&join(&tpath, "environment"), &task.environment)?;
            for (vi, vol) in task.volumes.iter().enumerate() {
                if !unresolved(vol) {
                    check_volume(&index(&join(&tpath, "volumes"), vi), vol)?;
                }
            }
            if task.actions.is_empty() {
                return Err(ValidationError::new(
                    join(&tpath, "actions"),
                    "a task needs at least one action",
                ));
            }
            let mut action_names = BTreeSet::new();
            for (ai, action) in task.actions.iter().enumerate() {
                let apath = index(&join(&tpath, "actions"), ai);
                check_name(&join(&apath, "name"), &action.name)?;
                if !action_names.insert(action.name.as_str()) {
                    return Err(ValidationError::new(
                        join(&apath, "name"),
                        format!(
                            "action name {:?} is used twice in task {:?}; action names must be unique within a task",
                            action.name, task.name
                        ),
                    ));
                }
                if !unresolved(&action.image) {
                    check_image(&action.image)
                        .map_err(|why| ValidationError::new(join(&apath, "image"), why))?;
                }
                check_env(&join(&apath, "environment"), &action.environment)?;
                for (vi, vol) in action.volumes.iter().enumerate() {
                    if !unresolved(vol) {
                        check_volume(&index(&join(&apath, "volumes"), vi), vol)?;
                    }
                }
                if let Some(pid) = &action.pid
                    && !pid.is_empty()
                    && pid != "host"
                    && !unresolved(pid)
                {
                    return Err(ValidationError::new(
                        join(&apath, "pid"),
                        format!("{pid:?} is not supported; the only PID mode is \"host\""),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every action in run order, with the task it belongs to.
    pub fn actions(&self) -> impl Iterator<Item = (&Task, &Action)> {
        self.tasks
            .iter()
            .flat_map(|t| t.actions.iter().map(move |a| (t, a)))
    }
}

fn check_name(path: &str, name: &str) -> Result<(), ValidationError> {
    if name.trim().is_empty() {
        return Err(ValidationError::new(path, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(ValidationError::new(
            path,
            format!("must be shorter than {} characters", MAX_NAME_LEN + 1),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            path,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn check_env(path: &str, env: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    for key in env.keys() {
        let valid = !key.is_empty() && !key.contains('=') && !key.chars().any(char::is_control);
        if !valid {
            return Err(ValidationError::new(
                join(path, key),
                "not a valid environment variable name",
            ));
        }
    }
    Ok(())
}

/// `src:dst`, `src:dst:ro|rw…`, or a bare container path (anonymous volume),
/// as Docker's `-v` takes them.
fn check_volume(path: &str, vol: &str) -> Result<(), ValidationError> {
    let parts: Vec<&str> = vol.split(':').collect();
    let ok = match parts.as_slice() {
        [dst] => dst.starts_with('/'),
        [src, dst] => !src.is_empty() && dst.starts_with('/'),
        [src, dst, mode] => {
            !src.is_empty()
                && dst.starts_with('/')
                && mode.split(',').all(|m| {
                    matches!(
                        m,
                        "ro" | "rw"
                            | "z"
                            | "Z"
                            | "shared"
                            | "rshared"
                            | "slave"
                            | "rslave"
                            | "private"
                            | "rprivate"
                            | "nocopy"
                    )
                })
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            path,
            format!("{vol:?} is not a volume: use SOURCE:/container/path[:ro]"),
        ))
    }
}

/// Validates a container image reference the way Docker's reference grammar
/// does (`[registry[:port]/]name[:tag][@digest]`, lowercase path components).
pub fn check_image(image: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{image:?} is not a valid image reference: {why}"));
    if image.is_empty() {
        return bad("empty");
    }
    if image.len() > 512 {
        return bad("longer than 512 characters");
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return bad("digest must look like sha256:<64 hex digits>");
        };
        let algo_ok = !algo.is_empty()
            && algo
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
        if !algo_ok || !hex_ok || (algo == "sha256" && hex.len() != 64) {
            return bad("digest must look like sha256:<64 hex digits>");
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let mut chars = tag.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok
            || tag.len() > 128
            || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return bad("tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'");
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // The first component is a registry host if it has '.', ':' or is localhost.
    if components.len() > 1 {
        let first = components[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            let (host, port) = match first.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (first, None),
            };
            let host_ok = !host.is_empty()
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                });
            let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
            if !host_ok || !port_ok {
                return bad("registry must be host[:port]");
            }
            components.remove(0);
        }
    }
    for comp in components {
        if comp.is_empty() {
            return bad("empty path component");
        }
        if comp.chars().any(|c| c.is_ascii_uppercase()) {
            return bad("repository name must be lowercase");
        }
        if !valid_path_component(comp) {
            return bad(
                "path components are lowercase letters and digits, separated by '.', '_', '__' or '-'",
            );
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(comp: &str) -> bool {
    let bytes = comp.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().copied().is_some_and(alnum) || !bytes.last().copied().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &comp[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests;
