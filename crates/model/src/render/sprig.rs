//! The template functions beyond Go's builtins: Tinkerbell's own
//! (`formatPartition`, `contains`, `hasPrefix`, `hasSuffix`) and the Sprig
//! text functions Tinkerbell has given templates since v0.11.
//!
//! **Argument order of `contains`, `hasPrefix`, `hasSuffix`.** Tinkerbell
//! up to v0.10 defined them in Go's `strings` order (haystack first:
//! `hasPrefix .disk "/dev/nvme"`); Sprig, which later versions load,
//! takes the needle first (`hasPrefix "/dev/nvme" .disk`). Real templates
//! of both generations exist. Bellows answers true when either argument
//! contains (starts, ends with) the other: every template of either
//! generation whose test is meant to hold still holds. It differs from
//! both only when the haystack is itself a prefix (part, suffix) of the
//! needle, e.g. `hasPrefix "/dev/nvme" "/dev/"`: a test no real template
//! makes on purpose. README, "Templates and rendering", says so.
//!
//! Each function here is pure and bounded: results that can grow larger
//! than their input are sized by the render budget before they are made
//! (`budget::growth_estimate`), and a regular expression from a template
//! is compiled with a size limit.

use std::sync::Arc;

use base64::Engine;
use gotmpl::{TemplateError, Value as GoValue};

use super::budget::OwnFuncs;

/// Largest compiled regular expression a template may use.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Every function a template may call besides Go's builtins.
pub(crate) fn functions() -> OwnFuncs {
    let mut funcs: OwnFuncs = vec![
        ("formatPartition", Arc::new(format_partition_func)),
        (
            "contains",
            Arc::new(|a: &[GoValue]| {
                let (x, y) = two_strings("contains", a)?;
                Ok(GoValue::Bool(x.contains(&*y) || y.contains(&*x)))
            }),
        ),
        (
            "hasPrefix",
            Arc::new(|a: &[GoValue]| {
                let (x, y) = two_strings("hasPrefix", a)?;
                Ok(GoValue::Bool(x.starts_with(&*y) || y.starts_with(&*x)))
            }),
        ),
        (
            "hasSuffix",
            Arc::new(|a: &[GoValue]| {
                let (x, y) = two_strings("hasSuffix", a)?;
                Ok(GoValue::Bool(x.ends_with(&*y) || y.ends_with(&*x)))
            }),
        ),
    ];
    funcs.extend(strings());
    funcs.extend(defaults());
    funcs.extend(lists());
    funcs.extend(encodings());
    funcs
}

fn text(s: impl Into<Arc<str>>) -> GoValue {
    GoValue::String(s.into())
}

/// Sprig's string functions, with Sprig's argument order (the string
/// operated on last, so they chain in pipelines: `.x | trimPrefix "/dev/"`).
fn strings() -> OwnFuncs {
    vec![
        ("lower", one_string("lower", |s| text(s.to_lowercase()))),
        ("upper", one_string("upper", |s| text(s.to_uppercase()))),
        ("title", one_string("title", |s| text(title(s)))),
        ("trim", one_string("trim", |s| text(s.trim()))),
        (
            "trimAll",
            two("trimAll", |cut, s| {
                text(s.trim_matches(|c| cut.contains(c)))
            }),
        ),
        (
            "trimPrefix",
            two("trimPrefix", |p, s| text(s.strip_prefix(p).unwrap_or(s))),
        ),
        (
            "trimSuffix",
            two("trimSuffix", |p, s| text(s.strip_suffix(p).unwrap_or(s))),
        ),
        ("quote", one_string("quote", |s| text(format!("{s:?}")))),
        ("squote", one_string("squote", |s| text(format!("'{s}'")))),
        (
            "replace",
            Arc::new(|a: &[GoValue]| {
                let [old, new, s] = a else {
                    return Err(arity("replace", 3, a.len()));
                };
                Ok(text(as_text(s).replace(&*as_text(old), &as_text(new))))
            }),
        ),
        (
            "repeat",
            Arc::new(|a: &[GoValue]| {
                let [n, s] = a else {
                    return Err(arity("repeat", 2, a.len()));
                };
                let n = usize::try_from(as_int("repeat", n)?.max(0)).unwrap_or(0);
                Ok(text(as_text(s).repeat(n)))
            }),
        ),
        (
            "indent",
            Arc::new(|a: &[GoValue]| {
                let [n, s] = a else {
                    return Err(arity("indent", 2, a.len()));
                };
                Ok(text(indent(as_int("indent", n)?, &as_text(s))))
            }),
        ),
        (
            "nindent",
            Arc::new(|a: &[GoValue]| {
                let [n, s] = a else {
                    return Err(arity("nindent", 2, a.len()));
                };
                Ok(text(format!(
                    "\n{}",
                    indent(as_int("nindent", n)?, &as_text(s))
                )))
            }),
        ),
        (
            "regexMatch",
            Arc::new(|a: &[GoValue]| {
                let (re, s) = two_strings("regexMatch", a)?;
                Ok(GoValue::Bool(regex("regexMatch", &re)?.is_match(&s)))
            }),
        ),
        (
            "regexReplaceAll",
            Arc::new(|a: &[GoValue]| {
                let [re, s, with] = a else {
                    return Err(arity("regexReplaceAll", 3, a.len()));
                };
                let re = regex("regexReplaceAll", &as_text(re))?;
                // Go's `${1}` syntax is the regex crate's too.
                Ok(text(
                    re.replace_all(&as_text(s), &*as_text(with)).into_owned(),
                ))
            }),
        ),
        (
            "toString",
            Arc::new(|a: &[GoValue]| match a {
                [v] => Ok(text(as_text(v))),
                _ => Err(arity("toString", 1, a.len())),
            }),
        ),
        (
            "cat",
            Arc::new(|a: &[GoValue]| {
                let parts: Vec<String> = a
                    .iter()
                    .filter(|v| !matches!(v, GoValue::Nil))
                    .map(|v| as_text(v).to_string())
                    .collect();
                Ok(text(parts.join(" ")))
            }),
        ),
        (
            "atoi",
            Arc::new(|a: &[GoValue]| match a {
                // Sprig gives 0 for text that is not a number.
                [v] => Ok(GoValue::Int(as_text(v).trim().parse().unwrap_or(0))),
                _ => Err(arity("atoi", 1, a.len())),
            }),
        ),
        (
            "int",
            Arc::new(|a: &[GoValue]| match a {
                [v] => Ok(GoValue::Int(to_int(v))),
                _ => Err(arity("int", 1, a.len())),
            }),
        ),
    ]
}

/// `default`, `empty`, `coalesce`, `ternary`: Sprig's emptiness is Go's
/// zero value (nil, false, 0, "", an empty list or map).
fn defaults() -> OwnFuncs {
    vec![
        (
            "default",
            Arc::new(|a: &[GoValue]| match a {
                [fallback] => Ok(fallback.clone()),
                [fallback, given] if is_empty(given) => Ok(fallback.clone()),
                [_, given] => Ok(given.clone()),
                _ => Err(arity("default", 2, a.len())),
            }),
        ),
        (
            "empty",
            Arc::new(|a: &[GoValue]| match a {
                [v] => Ok(GoValue::Bool(is_empty(v))),
                _ => Err(arity("empty", 1, a.len())),
            }),
        ),
        (
            "coalesce",
            Arc::new(|a: &[GoValue]| {
                Ok(a.iter()
                    .find(|v| !is_empty(v))
                    .cloned()
                    .unwrap_or(GoValue::Nil))
            }),
        ),
        (
            "ternary",
            Arc::new(|a: &[GoValue]| match a {
                [yes, no, cond] => Ok(if cond.is_truthy() { yes } else { no }.clone()),
                _ => Err(arity("ternary", 3, a.len())),
            }),
        ),
    ]
}

/// `list`, `join`, `splitList`, `first`, `last`, `has`.
fn lists() -> OwnFuncs {
    vec![
        (
            "list",
            Arc::new(|a: &[GoValue]| Ok(GoValue::List(a.into()))),
        ),
        (
            "join",
            Arc::new(|a: &[GoValue]| {
                let [sep, items] = a else {
                    return Err(arity("join", 2, a.len()));
                };
                let parts: Vec<String> = match items {
                    GoValue::List(items) => items.iter().map(|v| as_text(v).to_string()).collect(),
                    other => vec![as_text(other).to_string()],
                };
                Ok(text(parts.join(&as_text(sep))))
            }),
        ),
        (
            "splitList",
            Arc::new(|a: &[GoValue]| {
                let (sep, s) = two_strings("splitList", a)?;
                Ok(GoValue::List(
                    s.split(&*sep).map(text).collect::<Vec<_>>().into(),
                ))
            }),
        ),
        (
            "first",
            Arc::new(|a: &[GoValue]| match a {
                [GoValue::List(items)] => Ok(items.first().cloned().unwrap_or(GoValue::Nil)),
                [_] => Err(TemplateError::Exec(
                    "first: the argument must be a list".into(),
                )),
                _ => Err(arity("first", 1, a.len())),
            }),
        ),
        (
            "last",
            Arc::new(|a: &[GoValue]| match a {
                [GoValue::List(items)] => Ok(items.last().cloned().unwrap_or(GoValue::Nil)),
                [_] => Err(TemplateError::Exec(
                    "last: the argument must be a list".into(),
                )),
                _ => Err(arity("last", 1, a.len())),
            }),
        ),
        (
            "has",
            Arc::new(|a: &[GoValue]| match a {
                [needle, GoValue::List(items)] => Ok(GoValue::Bool(
                    items.iter().any(|v| as_text(v) == as_text(needle)),
                )),
                [_, _] => Ok(GoValue::Bool(false)),
                _ => Err(arity("has", 2, a.len())),
            }),
        ),
    ]
}

/// `b64enc`, `b64dec`.
fn encodings() -> OwnFuncs {
    vec![
        (
            "b64enc",
            one_string("b64enc", |s| {
                text(base64::engine::general_purpose::STANDARD.encode(s))
            }),
        ),
        (
            "b64dec",
            Arc::new(|a: &[GoValue]| match a {
                [v] => base64::engine::general_purpose::STANDARD
                    .decode(as_text(v).as_bytes())
                    .map(|b| text(String::from_utf8_lossy(&b).into_owned()))
                    .map_err(|e| TemplateError::Exec(format!("b64dec: {e}"))),
                _ => Err(arity("b64dec", 1, a.len())),
            }),
        ),
    ]
}

/// A value as template text: strings as they are, numbers and booleans as
/// Go prints them, nil as the empty string (Sprig's `toString` of nil).
fn as_text(v: &GoValue) -> Arc<str> {
    match v {
        GoValue::String(s) => s.clone(),
        GoValue::Nil => Arc::from(""),
        other => Arc::from(other.to_string()),
    }
}

fn to_int(v: &GoValue) -> i64 {
    match v {
        GoValue::Int(n) => *n,
        GoValue::Uint(n) => i64::try_from(*n).unwrap_or(i64::MAX),
        // Go's conversion truncates toward zero.
        GoValue::Float(f) => *f as i64,
        GoValue::Bool(b) => i64::from(*b),
        GoValue::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

fn as_int(name: &str, v: &GoValue) -> Result<i64, TemplateError> {
    match v {
        GoValue::Int(_) | GoValue::Uint(_) | GoValue::Float(_) => Ok(to_int(v)),
        _ => Err(TemplateError::Exec(format!(
            "{name}: the count must be a number"
        ))),
    }
}

fn is_empty(v: &GoValue) -> bool {
    match v {
        GoValue::Nil => true,
        GoValue::Bool(b) => !b,
        GoValue::Int(n) => *n == 0,
        GoValue::Uint(n) => *n == 0,
        GoValue::Float(f) => *f == 0.0,
        GoValue::String(s) => s.is_empty(),
        GoValue::List(l) => l.is_empty(),
        GoValue::Map(m) => m.is_empty(),
        _ => false,
    }
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    out
}

fn indent(n: i64, s: &str) -> String {
    let pad = " ".repeat(usize::try_from(n.clamp(0, 4096)).unwrap_or(0));
    let mut out = String::with_capacity(s.len() + pad.len());
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&pad);
        out.push_str(line);
    }
    out
}

fn regex(name: &str, pattern: &str) -> Result<regex::Regex, TemplateError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| TemplateError::Exec(format!("{name}: {e}")))
}

fn arity(name: &str, want: usize, got: usize) -> TemplateError {
    TemplateError::Exec(format!(
        "{name}: wrong number of args: got {got} want {want}"
    ))
}

fn one_string(name: &'static str, f: fn(&str) -> GoValue) -> gotmpl::ValueFunc {
    Arc::new(move |a: &[GoValue]| match a {
        [v] => Ok(f(&as_text(v))),
        _ => Err(arity(name, 1, a.len())),
    })
}

fn two(name: &'static str, f: fn(&str, &str) -> GoValue) -> gotmpl::ValueFunc {
    Arc::new(move |a: &[GoValue]| {
        let (x, y) = two_strings(name, a)?;
        Ok(f(&x, &y))
    })
}

fn two_strings(name: &str, args: &[GoValue]) -> Result<(Arc<str>, Arc<str>), TemplateError> {
    match args {
        [GoValue::String(a), GoValue::String(b)] => Ok((a.clone(), b.clone())),
        [_, _] => Err(TemplateError::Exec(format!(
            "{name}: both arguments must be strings"
        ))),
        _ => Err(arity(name, 2, args.len())),
    }
}

fn format_partition_func(args: &[GoValue]) -> Result<GoValue, TemplateError> {
    let [dev, part] = args else {
        return Err(TemplateError::Exec(format!(
            "formatPartition: wrong number of args: got {} want 2",
            args.len()
        )));
    };
    let GoValue::String(dev) = dev else {
        return Err(TemplateError::Exec(
            "formatPartition: first argument must be a device path string".into(),
        ));
    };
    let part = match part {
        GoValue::Int(n) => *n,
        GoValue::Uint(n) => i64::try_from(*n).unwrap_or(i64::MAX),
        _ => {
            return Err(TemplateError::Exec(
                "formatPartition: second argument must be an integer".into(),
            ));
        }
    };
    Ok(text(super::format_partition(dev, part)))
}
