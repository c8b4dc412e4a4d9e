//! The output and work budget of one render, enforced while it runs.
//!
//! A 2 KB template with nested `{{define}}`/`{{template}}` fan-out asks for
//! 10¹⁰ template calls; one that doubles a variable in a loop asks for
//! gigabytes without writing a byte. Checking the size of the result after
//! rendering is too late, so every render is metered as it goes:
//!
//! - **output**: the text is written into a [`BoundedText`] that refuses
//!   to grow past [`RenderBudget::max_output`];
//! - **steps**: gotmpl has no step hook, so every list of nodes (each
//!   template body, each `if`/`with`/`range` branch) gets a first node
//!   that calls [`STEP_FUNC`] with the list's size; the executor runs it
//!   each time it enters the list, and it fails once the total passes
//!   [`RenderBudget::max_steps`];
//! - **text**: every template function (gotmpl's builtins included) is
//!   wrapped so that the bytes it is given and makes count against
//!   [`RenderBudget::max_text`], and a function that would make a value
//!   over [`RenderBudget::max_value`] (`printf "%s%s" $x $x` in a loop) is
//!   refused *before* it allocates it.
//!
//! Everything is counted, not timed: the same template and data get the
//! same verdict on a busy machine and an idle one.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use gotmpl::parse::{ActionNode, CommandNode, Expr, ListNode, Node, Number, PipeNode, Pos};
use gotmpl::{Template as GoTemplate, TemplateError, Value as GoValue};

use crate::template::MAX_TEMPLATE_BYTES;

/// The limits of one render.
///
/// The defaults are far above any real workflow template (the largest
/// golden case takes a few hundred steps) and low enough that the worst
/// template finishes or is refused within about a second and 100 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderBudget {
    /// Bytes of rendered text; a rendered workflow over this is refused
    /// anyway, so the default is the template size limit.
    pub max_output: usize,
    /// Nodes executed, counting each template call, branch and `range`
    /// iteration by the size of the body it runs.
    pub max_steps: u64,
    /// The largest string a template function may make.
    pub max_value: usize,
    /// Bytes given to and made by template functions, in total.
    pub max_text: u64,
}

impl Default for RenderBudget {
    fn default() -> Self {
        RenderBudget {
            max_output: MAX_TEMPLATE_BYTES,
            max_steps: 1_000_000,
            max_value: 1024 * 1024,
            max_text: 64 * 1024 * 1024,
        }
    }
}

/// Which limit a render ran into; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetExceeded {
    /// The rendered text outgrew [`RenderBudget::max_output`].
    #[error("the rendered text passed its output budget of {0} bytes")]
    Output(usize),
    /// More than [`RenderBudget::max_steps`] nodes were executed.
    #[error(
        "rendering took more than its work budget of {0} steps (templates calling templates many times over, e.g. nested {{{{define}}}}/{{{{template}}}} fan-out)"
    )]
    Steps(u64),
    /// A function would have made a string over [`RenderBudget::max_value`].
    #[error("{func} would make a value of about {size} bytes, over the budget of {limit} bytes")]
    Value {
        /// The template function.
        func: String,
        /// Its estimated (or actual) result size.
        size: u64,
        /// [`RenderBudget::max_value`].
        limit: usize,
    },
    /// Template functions handled more than [`RenderBudget::max_text`] bytes.
    #[error("template functions handled more than their work budget of {0} bytes")]
    Text(u64),
}

/// The function the metering nodes call; the name cannot clash with a
/// template's own functions (Bellows registers no other).
pub(crate) const STEP_FUNC: &str = "__bellows_step";

/// The counters of one render, shared by its wrapped functions.
#[derive(Debug)]
pub(crate) struct Meter {
    budget: RenderBudget,
    steps: AtomicU64,
    text: AtomicU64,
    exceeded: OnceLock<BudgetExceeded>,
}

impl Meter {
    pub(crate) fn new(budget: RenderBudget) -> Arc<Meter> {
        Arc::new(Meter {
            budget,
            steps: AtomicU64::new(0),
            text: AtomicU64::new(0),
            exceeded: OnceLock::new(),
        })
    }

    pub(crate) fn budget(&self) -> &RenderBudget {
        &self.budget
    }

    /// The first limit this render ran into, if any.
    pub(crate) fn exceeded(&self) -> Option<&BudgetExceeded> {
        self.exceeded.get()
    }

    fn fail(&self, why: BudgetExceeded) -> TemplateError {
        let why = self.exceeded.get_or_init(|| why);
        TemplateError::Exec(why.to_string())
    }

    fn step(&self, n: u64) -> Result<(), TemplateError> {
        let total = self.steps.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if total > self.budget.max_steps {
            return Err(self.fail(BudgetExceeded::Steps(self.budget.max_steps)));
        }
        Ok(())
    }

    fn text(&self, n: u64) -> Result<(), TemplateError> {
        let total = self.text.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if total > self.budget.max_text {
            return Err(self.fail(BudgetExceeded::Text(self.budget.max_text)));
        }
        Ok(())
    }

    fn value(&self, func: &str, size: u64) -> Result<(), TemplateError> {
        if size > self.budget.max_value as u64 {
            return Err(self.fail(BudgetExceeded::Value {
                func: func.to_string(),
                size,
                limit: self.budget.max_value,
            }));
        }
        Ok(())
    }

    /// Registers the step function and wraps every function the template
    /// can call. Must run before parsing (gotmpl checks names then).
    pub(crate) fn install(self: &Arc<Self>, mut tmpl: GoTemplate, own: OwnFuncs) -> GoTemplate {
        let meter = self.clone();
        tmpl = tmpl.func(STEP_FUNC, move |args| {
            let n = match args {
                [GoValue::Int(n)] => u64::try_from(*n).unwrap_or(1),
                _ => 1,
            };
            meter.step(n)?;
            Ok(GoValue::String("".into()))
        });
        for name in BUILTINS {
            let meter = self.clone();
            tmpl = tmpl.func(name, move |args| {
                meter.call(name, args, |args| call_builtin(name, args))
            });
        }
        for (name, f) in own {
            let meter = self.clone();
            tmpl = tmpl.func(name, move |args| meter.call(name, args, |args| f(args)));
        }
        tmpl
    }

    /// One metered function call: a step, the arguments' size, a growth
    /// check before the call for the functions that make longer text
    /// than they are given, and the result's size after.
    fn call(
        &self,
        name: &str,
        args: &[GoValue],
        f: impl FnOnce(&[GoValue]) -> Result<GoValue, TemplateError>,
    ) -> Result<GoValue, TemplateError> {
        self.step(1)?;
        let cap = self.budget.max_value as u64;
        self.text(args.iter().map(shallow_size).sum())?;
        if let Some(estimate) = growth_estimate(name, args, cap) {
            self.value(name, estimate)?;
        }
        let out = f(args)?;
        let made = shallow_size(&out);
        self.value(name, made)?;
        self.text(made)?;
        Ok(out)
    }
}

/// The template's own functions (`contains`, `formatPartition`…), metered
/// like the builtins.
pub(crate) type OwnFuncs = Vec<(&'static str, gotmpl::ValueFunc)>;

/// gotmpl's builtins, except `and`/`or`: the executor short-circuits those
/// itself without looking them up, and they only pass values through.
const BUILTINS: [&str; 17] = [
    "eq", "ne", "lt", "le", "gt", "ge", "not", "print", "println", "printf", "len", "index",
    "slice", "call", "html", "js", "urlquery",
];

/// Size for the text budget: bytes of a string, entries of a list or map
/// (their contents were counted when they were made or came from data).
fn shallow_size(v: &GoValue) -> u64 {
    match v {
        GoValue::String(s) => s.len() as u64,
        GoValue::List(l) => l.len() as u64,
        GoValue::Map(m) => m.len() as u64,
        _ => 8,
    }
}

/// Counts what `Display` would write without keeping it, stopping once
/// past `cap` (so a huge map costs at most `cap` to measure).
struct Counter {
    n: u64,
    cap: u64,
}

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.n = self.n.saturating_add(s.len() as u64);
        if self.n > self.cap {
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// Bytes a value prints as (`print`, `%v`), at most just over `cap`.
fn display_len(v: &GoValue, cap: u64) -> u64 {
    match v {
        GoValue::String(s) => s.len() as u64,
        GoValue::Nil => "<no value>".len() as u64,
        other => {
            let mut c = Counter { n: 0, cap };
            let _ = write!(c, "{other}");
            c.n
        }
    }
}

/// An upper bound on the size of what `name` makes from `args`, for the
/// functions whose result can be longer than their input; `None` for the
/// others (comparisons, `len`, `index`, `slice`).
fn growth_estimate(name: &str, args: &[GoValue], cap: u64) -> Option<u64> {
    let sizes = || args.iter().map(|a| display_len(a, cap));
    match name {
        // Operands plus a separator each, and println's newline.
        "print" | "println" => Some(sizes().sum::<u64>() + args.len() as u64 + 1),
        // `&` → `&amp;`, `<` → `\u003C`, ` ` → `%20`: at most 6 bytes a byte.
        "html" | "js" | "urlquery" => Some(sizes().sum::<u64>().saturating_mul(6) + 16),
        // Sprig's: a count or padding times the text.
        "repeat" | "indent" | "nindent" => {
            let n = match args.first() {
                Some(GoValue::Int(n)) => u64::try_from(*n).unwrap_or(0),
                Some(GoValue::Uint(n)) => *n,
                Some(GoValue::Float(f)) if *f > 0.0 => *f as u64,
                _ => 0,
            };
            let s = args.get(1).map_or(0, |a| display_len(a, cap));
            let lines = match args.get(1) {
                Some(GoValue::String(t)) => t.matches('\n').count() as u64 + 1,
                _ => 1,
            };
            Some(if name == "repeat" {
                n.saturating_mul(s)
            } else {
                s + 1 + n.min(4096).saturating_mul(lines)
            })
        }
        // Each match of the old text (or pattern) may become the new text.
        "replace" | "regexReplaceAll" => {
            let s: Vec<u64> = sizes().collect();
            let (text, with) = if name == "replace" {
                (
                    s.get(2).copied().unwrap_or(0),
                    s.get(1).copied().unwrap_or(0),
                )
            } else {
                (
                    s.get(1).copied().unwrap_or(0),
                    s.get(2).copied().unwrap_or(0),
                )
            };
            Some(text.saturating_add((text + 1).saturating_mul(with)))
        }
        // Items and a separator between each; each list item's text.
        "join" => {
            let sep = args.first().map_or(0, |a| display_len(a, cap));
            let items = match args.get(1) {
                Some(GoValue::List(items)) => items
                    .iter()
                    .map(|i| display_len(i, cap).saturating_add(sep))
                    .sum(),
                Some(other) => display_len(other, cap),
                None => 0,
            };
            Some(items)
        }
        "cat" | "quote" | "squote" | "toString" | "title" | "list" => {
            Some(sizes().sum::<u64>().saturating_mul(2) + args.len() as u64 + 2)
        }
        // Case mapping can triple a character ('ß' → "SS" and wider).
        "upper" | "lower" => Some(sizes().sum::<u64>().saturating_mul(3)),
        "b64enc" => Some(sizes().sum::<u64>() / 3 * 4 + 4),
        "splitList" => Some(sizes().sum::<u64>() + 1),
        "printf" => {
            let Some(GoValue::String(format)) = args.first() else {
                return Some(0);
            };
            let directives = format.matches('%').count() as u64;
            let values: Vec<u64> = sizes().skip(1).collect();
            // %q and %x write at most 4 bytes per byte of their operand; an
            // explicit index (`%[1]s%[1]s`) may reuse the largest one.
            let operands = if format.contains('[') {
                values.iter().copied().max().unwrap_or(0) * directives
            } else {
                values.iter().sum()
            };
            // Width and precision each pad up to 65,535 (gotmpl clamps them).
            let pad = if format.contains('*') {
                2 * 65_535
            } else {
                2 * largest_number(format).min(65_535)
            };
            Some(
                format.len() as u64
                    + operands.saturating_mul(4)
                    + directives.saturating_mul(pad + 400),
            )
        }
        _ => None,
    }
}

/// The largest run of ASCII digits in a format string (a width or
/// precision), saturating.
fn largest_number(s: &str) -> u64 {
    s.split(|c: char| !c.is_ascii_digit())
        .map(|d| {
            d.bytes().fold(0u64, |n, b| {
                n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
            })
        })
        .max()
        .unwrap_or(0)
}

thread_local! {
    /// Templates that call one untouched builtin with N arguments, by
    /// (name, N); N is small in practice, and only N ≤ 8 is kept.
    static PRISTINE: RefCell<HashMap<(&'static str, usize), GoTemplate>> =
        RefCell::new(HashMap::new());
    /// Where [`CAPTURE_FUNC`] leaves the builtin's result.
    static CAUGHT: RefCell<Option<GoValue>> = const { RefCell::new(None) };
}

const CAPTURE_FUNC: &str = "__bellows_capture";

/// Calls gotmpl's own builtin `name`, which the metered template has
/// replaced by its wrapper. gotmpl does not export its builtins, so this
/// runs `{{__bellows_capture (name .a0 .a1 …)}}` on a template that still
/// has them, and takes the value the capture function was given: exactly
/// what the builtin returns, errors included.
fn call_builtin(name: &'static str, args: &[GoValue]) -> Result<GoValue, TemplateError> {
    let data: BTreeMap<Arc<str>, GoValue> = args
        .iter()
        .enumerate()
        .map(|(i, v)| (Arc::from(format!("a{i}")), v.clone()))
        .collect();
    let data = GoValue::Map(Arc::new(data));
    let run = |tmpl: &GoTemplate| tmpl.execute_template_fmt(&mut Discard, "call", &data);
    if args.len() <= 8 {
        PRISTINE.with_borrow_mut(|cache| {
            run(cache
                .entry((name, args.len()))
                .or_insert_with(|| pristine(name, args.len())))
        })?;
    } else {
        run(&pristine(name, args.len()))?;
    }
    CAUGHT
        .take()
        .ok_or_else(|| TemplateError::Exec(format!("{name}: no result")))
}

fn pristine(name: &str, arity: usize) -> GoTemplate {
    let pos = Pos::new(0, 1);
    let call = CommandNode {
        pos,
        args: std::iter::once(Expr::Identifier(pos, name.into()))
            .chain((0..arity).map(|i| Expr::Field(pos, vec![format!("a{i}").into()])))
            .collect(),
    };
    let capture = CommandNode {
        pos,
        args: vec![
            Expr::Identifier(pos, CAPTURE_FUNC.into()),
            Expr::Pipe(pos, pipe(vec![call])),
        ],
    };
    let tree = ListNode {
        pos,
        nodes: vec![Node::Action(ActionNode {
            pos,
            pipe: pipe(vec![capture]),
        })],
    };
    GoTemplate::new("call")
        .func(CAPTURE_FUNC, |args| {
            CAUGHT.set(args.first().cloned());
            Ok(GoValue::String("".into()))
        })
        .add_parse_tree("call", tree)
}

fn pipe(commands: Vec<CommandNode>) -> PipeNode {
    PipeNode {
        pos: Pos::new(0, 1),
        decl: Vec::new(),
        commands,
        is_assign: false,
    }
}

struct Discard;

impl fmt::Write for Discard {
    fn write_str(&mut self, _: &str) -> fmt::Result {
        Ok(())
    }
}

/// Puts a metering node first in `list` and in every list below it.
///
/// The node is `{{__bellows_step N}}`, N the list's own size: it prints
/// nothing (an empty string), declares nothing and does not change the
/// executor's depth, so the output is byte for byte the same.
pub(crate) fn meter_list(list: &mut ListNode) {
    for node in &mut list.nodes {
        match node {
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                meter_list(&mut b.body);
                if let Some(e) = &mut b.else_body {
                    meter_list(e);
                }
            }
            Node::List(l) => meter_list(l),
            Node::Define(d) => meter_list(&mut d.body),
            Node::Text(_)
            | Node::Action(_)
            | Node::Template(_)
            | Node::Break(_)
            | Node::Continue(_) => {}
        }
    }
    let pos = list.pos;
    let cost = i64::try_from(list.nodes.len())
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    let step = Node::Action(ActionNode {
        pos,
        pipe: PipeNode {
            pos,
            decl: Vec::new(),
            commands: vec![CommandNode {
                pos,
                args: vec![
                    Expr::Identifier(pos, STEP_FUNC.into()),
                    Expr::Number(pos, Number::Int(cost)),
                ],
            }],
            is_assign: false,
        },
    });
    list.nodes.insert(0, step);
}

/// The rendered text, refusing to grow past the output budget.
pub(crate) struct BoundedText<'m> {
    pub(crate) text: String,
    meter: &'m Meter,
}

impl<'m> BoundedText<'m> {
    pub(crate) fn new(meter: &'m Meter) -> Self {
        BoundedText {
            text: String::new(),
            meter,
        }
    }
}

impl fmt::Write for BoundedText<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let limit = self.meter.budget.max_output;
        if self.text.len().saturating_add(s.len()) > limit {
            self.meter.fail(BudgetExceeded::Output(limit));
            return Err(fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}
