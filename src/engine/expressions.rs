//! `spec.healthChecks`: the health of a kind the built-in rules don't know, read by CEL
//! expressions over the object as `self` (the shape of Flux's `healthCheckExprs`): `failed` true
//! is unhealthy, else `current` true is healthy, else the object is in progress.
//!
//! This module owns only the evaluation. Like `health`, it takes the object as JSON and must not
//! do I/O. A field the object does not have yet (`self.status.phase` before its controller wrote
//! a status) makes an expression false rather than an error: every object starts without a
//! status, and a check that failed the operation for that would fail every rollout. Anything
//! else an expression gets wrong (it does not parse, calls what does not exist, compares a
//! string with a number, yields something other than a bool) is an error naming the
//! expression, which fails the operation.
//!
//! # The cost budget
//! A tenant writes these expressions and the operator runs them, on every change of the object,
//! inside a reconcile: an evaluation must end within a few milliseconds whatever is written
//! (six nested `.all()` over 50-element lists are 1.5e10 steps; `[big].map(x, big)` builds
//! gigabytes). The `cel` crate has no cost tracking, so every bound is kept here:
//!
//! - Before parsing: at most [`MAX_EXPRESSION_BYTES`] and [`MAX_NESTING`] open brackets. The
//!   parser and the interpreter recurse, and a stack overflow aborts the process: both run on a
//!   thread of their own whose stack holds the deepest input these bounds let through (a chain
//!   of operators nests without brackets).
//! - After parsing: at most [`MAX_DEPTH`] levels and [`MAX_NODES`] nodes in the expanded
//!   expression, so that the interpreter's recursion is small; `matches` takes a literal pattern,
//!   compiled once here under [`MAX_REGEX_BYTES`] of program (a pattern built at run time could be
//!   any size).
//! - While evaluating: the parsed expression is rewritten so that everything that repeats or
//!   copies pays into one counter before it happens, and the evaluation stops with an error once
//!   the counter passes [`COST_BUDGET`]. Comprehensions (`all`, `exists`, `exists_one`, `map`,
//!   `filter`: the only loops CEL has) pay for their range (its size in units, see below, since
//!   each element is copied into the loop variable) plus its length times the nodes of their
//!   body, before the first iteration; every argument of a call, every element of a list or map
//!   literal pays its size (calls and literals are where values are compared, concatenated and
//!   copied, and a call's work is at most linear in its arguments); `matches` pays the
//!   string's length times the pattern's (its worst case, as Kubernetes counts it). A value's
//!   size is one unit per list element, map entry or scalar and one per
//!   [`STRING_BYTES_PER_UNIT`] bytes of a string, measured without recursion and only as far as
//!   the budget left.
//!
//! Runtime counting rather than a static estimate: the sizes that matter are the object's, known
//! only when it is read, and a static bound over a 1.5 MiB object would refuse ordinary
//! nested loops over small lists. A rewrite of the parsed tree rather than a patched copy of
//! the crate: the tree and the evaluation of a tree are public, so the crate stays as it is
//! published, and the counter lives beside the bounds it enforces. The counter cannot be escaped: CEL has no other loop or
//! recursion, and `@`-names (the counter's functions, the comprehensions' accumulators) cannot
//! be written in CEL source. An error the counter raises may be absorbed by CEL's logic
//! (`error || true` is true), but every later charge fails at once without work, and an
//! evaluation that ran over is reported as over budget whatever it yielded. A unit is about one
//! step of the interpreter: 60 ns in a release build, 1.3 µs in an unoptimized one.
//!
//! Over budget is the expression's answer for this object, not an error of the check: it fails
//! the operation `Unhealthy`, naming the expression and the budget (SPEC section 8). The engine
//! awaits an evaluation run on a thread of its own ([`evaluate_apart`]), so the async runtime's
//! workers (and a shutdown's timers) never wait on one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use cel::common::types::{CelBool, CelBytes, CelInt, CelList, CelMap, CelOptional, CelString};
use cel::common::value::{CowVal, Val};
use cel::objects::Value as CelValue;
use cel::parser::Parser;
use cel::{Context, ExecutionError, FunctionContext};
use serde_json::Value;

use super::health::ObjectHealth;
use crate::crd::HealthCheck;

/// The most one evaluation of one expression may cost, in units (see the module's header):
/// about 6 ms of a release build (140 ms of an unoptimized one), and at most 100,000 copied
/// values or 1.6 MB of copied strings. Kubernetes gives an admission rule 1,000,000 units of
/// its coarser measure, once per write; a health expression runs on every change of the object
/// it reads, so it gets a tenth: three times what `filter` and `all` spend over 1,000
/// conditions of six fields.
pub const COST_BUDGET: u64 = 100_000;
/// The longest expression accepted, in bytes: the CRD's 2,048 characters at four bytes each
/// (the operator does not count on admission for its own safety).
pub const MAX_EXPRESSION_BYTES: usize = 8_192;
/// The most brackets (`(`, `[`, `{`) an expression may have open at once, counted before it is
/// parsed, strings included.
pub const MAX_NESTING: usize = 32;
/// The deepest an expression may nest once parsed (an operator chain nests without brackets).
pub const MAX_DEPTH: usize = 64;
/// The most nodes an expression may have once parsed, its macros expanded.
pub const MAX_NODES: usize = 4_096;
/// The largest compiled program of a `matches` pattern, in bytes.
pub const MAX_REGEX_BYTES: usize = 256 * 1024;
/// The stack an expression is parsed and evaluated on: a chain of [`MAX_EXPRESSION_BYTES`]
/// / 2 operators parses with about 5 MiB of an unoptimized build's stack.
const STACK_BYTES: usize = 16 * 1024 * 1024;
/// The bytes of a string that cost one unit.
pub const STRING_BYTES_PER_UNIT: u64 = 16;

/// Pays the size of its argument, and returns it.
const CHARGE: &str = "@charge";
/// Pays for an operation that does not walk its argument (`size`, `[]`): one unit, and the
/// string's length for a string (its size counts characters).
const CHARGE_FLAT: &str = "@charge_flat";
/// Pays for a comprehension over its argument before the first iteration, and returns it.
const RANGE: &str = "@range";
/// `matches` with a pattern compiled beforehand.
const MATCHES: &str = "@matches";

/// The check of `checks` that reads objects of `api_version` and `kind`, if any.
pub fn find<'a>(
    checks: &'a [HealthCheck],
    api_version: &str,
    kind: &str,
) -> Option<&'a HealthCheck> {
    checks.iter().find(|check| check.api_version == api_version && check.kind == kind)
}

/// Checks that every expression of `check` parses within the bounds of the module's header;
/// the error names the kind, the field and the expression.
pub fn compile(check: &HealthCheck) -> Result<(), String> {
    on_large_stack(|| {
        for (field, source) in fields(check) {
            prepare(source).map_err(|error| describe(check, field, source, &error))?;
        }
        Ok(())
    })
}

/// The health of `object` by `check`: `failed`, then `current`, then in progress. An
/// expression that runs over [`COST_BUDGET`] makes the object failed, naming the expression and
/// the budget; each expression has a budget of its own.
pub fn evaluate(check: &HealthCheck, object: &Value) -> Result<ObjectHealth, String> {
    on_large_stack(|| evaluate_here(check, object))
}

/// [`evaluate`] on a thread of its own, awaited: the caller's thread (an async runtime's
/// worker) stays free for other work meanwhile, and dropping the future lets the evaluation
/// finish alone, within its budget.
pub async fn evaluate_apart(
    check: HealthCheck,
    object: Arc<Value>,
) -> Result<ObjectHealth, String> {
    let (send, receive) = futures::channel::oneshot::channel();
    std::thread::Builder::new()
        .name("health-check".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            // Nobody to tell when the pass that asked is gone.
            let _ = send.send(evaluate_here(&check, &object));
        })
        .map_err(|error| format!("a health check cannot start: {error}"))?;
    receive.await.unwrap_or_else(|_| Err("a health check's evaluation failed".to_owned()))
}

/// Runs `work` on a thread of its own with a stack of [`STACK_BYTES`], and waits for it: the
/// parser recurses once per link of an operator chain before any bound can be checked, and a
/// stack overflow aborts the process.
fn on_large_stack<T: Send>(work: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("health-check".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(scope, work)
            .map_err(|error| format!("a health check cannot start: {error}"))?
            .join()
            .unwrap_or_else(|_| Err("a health check's evaluation failed".to_owned()))
    })
}

fn evaluate_here(check: &HealthCheck, object: &Value) -> Result<ObjectHealth, String> {
    let mut prepared = Vec::with_capacity(3);
    let mut patterns = HashMap::new();
    for (field, source) in fields(check) {
        let program = prepare(source).map_err(|error| describe(check, field, source, &error))?;
        patterns.extend(program.patterns.iter().map(|(text, regex)| (text.clone(), regex.clone())));
        prepared.push((field, program));
    }
    let meter = Arc::new(Meter::default());
    let mut context = Context::default();
    context.add_variable("self", object.clone()).map_err(|error| {
        format!(
            "health check for {} {}: the object cannot be read: {error}",
            check.api_version, check.kind
        )
    })?;
    meter.install(&mut context, Arc::new(patterns)).map_err(|error| {
        format!("health check for {} {}: {error}", check.api_version, check.kind)
    })?;
    let read = |field: &str| -> Result<Truth, String> {
        match prepared.iter().find(|(name, _)| *name == field) {
            Some((_, program)) => truth(check, field, program, &context, &meter),
            None => Ok(Truth::Value(false)),
        }
    };
    if let Some(failed) = &check.failed {
        match read("failed")? {
            Truth::OverBudget(message) => return Ok(ObjectHealth::Failed(message)),
            Truth::Value(true) => {
                return Ok(ObjectHealth::Failed(format!(
                    "health check `failed` is true: {failed}"
                )));
            }
            Truth::Value(false) => {}
        }
    }
    match read("current")? {
        Truth::OverBudget(message) => return Ok(ObjectHealth::Failed(message)),
        Truth::Value(true) => return Ok(ObjectHealth::Current),
        Truth::Value(false) => {}
    }
    if let Some(in_progress) = &check.in_progress {
        match read("inProgress")? {
            Truth::OverBudget(message) => return Ok(ObjectHealth::Failed(message)),
            Truth::Value(true) => {
                return Ok(ObjectHealth::InProgress(format!(
                    "health check `inProgress` is true: {in_progress}"
                )));
            }
            Truth::Value(false) => {}
        }
    }
    Ok(ObjectHealth::InProgress(format!(
        "health check `current` is not yet true: {}",
        check.current
    )))
}

fn fields(check: &HealthCheck) -> impl Iterator<Item = (&'static str, &str)> {
    [
        Some(("failed", check.failed.as_deref())),
        Some(("current", Some(check.current.as_str()))),
        Some(("inProgress", check.in_progress.as_deref())),
    ]
    .into_iter()
    .flatten()
    .filter_map(|(field, source)| source.map(|source| (field, source)))
}

/// What one expression said of the object.
enum Truth {
    Value(bool),
    /// It ran over the budget: the message names the expression and the budget.
    OverBudget(String),
}

/// Whether one prepared expression is true of the object in `context`.
fn truth(
    check: &HealthCheck,
    field: &str,
    program: &Prepared<'_>,
    context: &Context,
    meter: &Meter,
) -> Result<Truth, String> {
    let source = program.source;
    meter.reset();
    // The cost of evaluating every node once, paid up front; loops pay for their bodies.
    if meter.charge(program.nodes).is_ok() {
        let outcome = CelValue::resolve(&program.expression, context);
        // Over budget, whatever the evaluation yielded: see the module's header.
        if !meter.over() {
            return match outcome {
                Ok(CelValue::Bool(value)) => Ok(Truth::Value(value)),
                Ok(other) => Err(describe(
                    check,
                    field,
                    source,
                    &format!("evaluates to {}, not a bool", type_name(&other)),
                )),
                // Not reported yet: see the module's header.
                Err(ExecutionError::NoSuchKey(_)) => Ok(Truth::Value(false)),
                Err(error) => Err(describe(check, field, source, &error)),
            };
        }
    }
    Ok(Truth::OverBudget(describe(
        check,
        field,
        source,
        &format!(
            "exceeds the cost budget of {COST_BUDGET} units for one evaluation (loops, copies \
             and comparisons over the object cost units; see the README's security section)"
        ),
    )))
}

fn type_name(value: &CelValue) -> &'static str {
    match value {
        CelValue::Int(_) => "an int",
        CelValue::UInt(_) => "a uint",
        CelValue::Float(_) => "a double",
        CelValue::String(_) => "a string",
        CelValue::List(_) => "a list",
        CelValue::Map(_) => "a map",
        CelValue::Null => "null",
        _ => "a value",
    }
}

/// `health check for example.com/v1 Widget: current expression `...`: <error>`; a long
/// expression is cut (the whole is in the Apply).
fn describe(
    check: &HealthCheck,
    field: &str,
    source: &str,
    error: &dyn std::fmt::Display,
) -> String {
    const SHOWN: usize = 200;
    let shown = match source.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &source[..end]),
        None => source.to_owned(),
    };
    format!(
        "health check for {} {}: {field} expression `{shown}`: {error}",
        check.api_version, check.kind
    )
}

/// An expression parsed within bounds and rewritten to pay for its work.
struct Prepared<'a> {
    source: &'a str,
    expression: IdedExpr,
    /// Nodes of `expression`, wrappers included: the cost of evaluating each once.
    nodes: u64,
    /// The `matches` patterns, compiled.
    patterns: HashMap<String, regex::Regex>,
}

/// Parses `source` within the bounds of the module's header and instruments it; the error is
/// the reason, naming the bound.
fn prepare(source: &str) -> Result<Prepared<'_>, String> {
    if source.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "is {} bytes long, more than the {MAX_EXPRESSION_BYTES} allowed",
            source.len()
        ));
    }
    let mut open = 0usize;
    for byte in source.bytes() {
        match byte {
            b'(' | b'[' | b'{' => {
                open += 1;
                if open > MAX_NESTING {
                    return Err(format!(
                        "nests more than {MAX_NESTING} brackets deep (strings included)"
                    ));
                }
            }
            b')' | b']' | b'}' => open = open.saturating_sub(1),
            _ => {}
        }
    }
    let max_depth = u16::try_from(MAX_DEPTH).unwrap_or(u16::MAX);
    let mut expression = Parser::new()
        .max_recursion_depth(max_depth)
        .parse(source)
        .map_err(|error| error.to_string())?;
    let mut instrument = Instrument::default();
    instrument.visit(&mut expression, 0)?;
    Ok(Prepared {
        source,
        expression,
        nodes: instrument.nodes as u64,
        patterns: instrument.patterns,
    })
}

/// Rewrites a parsed expression so that it pays into the [`Meter`] (see the module's header),
/// refusing what exceeds the static bounds on the way.
#[derive(Default)]
struct Instrument {
    nodes: usize,
    patterns: HashMap<String, regex::Regex>,
    /// The variables in scope: `self`, and the loop variables of the enclosing comprehensions.
    variables: Vec<String>,
    /// The accumulators of the enclosing comprehensions: a `map` or `filter` step appending to
    /// its accumulator is left as the interpreter recognizes it (it then appends in place).
    accumulators: Vec<String>,
}

impl Instrument {
    fn visit(&mut self, expr: &mut IdedExpr, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("nests more than {MAX_DEPTH} levels deep once parsed"));
        }
        self.count(1)?;
        match &mut expr.expr {
            Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) => {}
            Expr::Select(select) => self.visit(&mut select.operand, depth + 1)?,
            Expr::Call(call) => self.call(call, depth)?,
            Expr::List(list) => {
                for element in &mut list.elements {
                    self.visit(element, depth + 1)?;
                    self.wrap(element, CHARGE)?;
                }
            }
            Expr::Map(map) => {
                for entry in &mut map.entries {
                    match &mut entry.expr {
                        EntryExpr::MapEntry(entry) => {
                            self.visit(&mut entry.key, depth + 1)?;
                            self.wrap(&mut entry.key, CHARGE)?;
                            self.visit(&mut entry.value, depth + 1)?;
                            self.wrap(&mut entry.value, CHARGE)?;
                        }
                        EntryExpr::StructField(field) => {
                            self.visit(&mut field.value, depth + 1)?;
                            self.wrap(&mut field.value, CHARGE)?;
                        }
                    }
                }
            }
            Expr::Struct(structure) => {
                for entry in &mut structure.entries {
                    match &mut entry.expr {
                        EntryExpr::MapEntry(entry) => {
                            self.visit(&mut entry.value, depth + 1)?;
                            self.wrap(&mut entry.value, CHARGE)?;
                        }
                        EntryExpr::StructField(field) => {
                            self.visit(&mut field.value, depth + 1)?;
                            self.wrap(&mut field.value, CHARGE)?;
                        }
                    }
                }
            }
            Expr::Comprehension(comprehension) => {
                self.visit(&mut comprehension.accu_init, depth + 1)?;
                self.visit(&mut comprehension.iter_range, depth + 1)?;
                let before = self.nodes;
                let scope = self.variables.len();
                self.variables.push(comprehension.iter_var.clone());
                self.variables.extend(comprehension.iter_var2.clone());
                self.accumulators.push(comprehension.accu_var.clone());
                let body = self
                    .visit(&mut comprehension.loop_cond, depth + 1)
                    .and_then(|()| self.visit(&mut comprehension.loop_step, depth + 1))
                    .and_then(|()| self.visit(&mut comprehension.result, depth + 1));
                self.variables.truncate(scope);
                self.accumulators.pop();
                body?;
                // Each iteration evaluates the condition and the step once (the result once more
                // at the end: counted in, to keep the figure simple and above the truth).
                let weight = (self.nodes - before + 1) as i64;
                let range = std::mem::take(&mut comprehension.iter_range);
                comprehension.iter_range = self.call_of(RANGE, vec![range, int(weight)])?;
            }
        }
        Ok(())
    }

    fn call(&mut self, call: &mut CallExpr, depth: usize) -> Result<(), String> {
        let name = call.func_name.as_str();
        // Constant work on their operands, which are paid for where they are built.
        let free = [
            operators::LOGICAL_AND,
            operators::LOGICAL_OR,
            operators::LOGICAL_NOT,
            operators::CONDITIONAL,
            operators::NOT_STRICTLY_FALSE,
            operators::NEGATE,
        ];
        if free.contains(&name) {
            return self.operands(call, depth);
        }
        if name == "matches" {
            return self.matches(call, depth);
        }
        // The step `@result + [x]` of a `map` or `filter`: left as it is, its list is paid for
        // element by element as any list literal.
        let appends = name == operators::ADD
            && call.target.is_none()
            && matches!(call.args.first(), Some(IdedExpr { expr: Expr::Ident(accumulator), .. })
                if self.accumulators.contains(accumulator));
        if appends {
            return self.operands(call, depth);
        }
        let flat = name == "size" || name == operators::INDEX || name == operators::OPT_INDEX;
        let charge = if flat { CHARGE_FLAT } else { CHARGE };
        if let Some(target) = &mut call.target {
            self.visit(target, depth + 1)?;
            // `optional.of(x)` is a call of `optional.of`, not a method of a value: only a
            // target that is a value pays.
            if self.is_value(target) {
                self.wrap(target, charge)?;
            }
        }
        for (position, argument) in call.args.iter_mut().enumerate() {
            self.visit(argument, depth + 1)?;
            // `list[i]`: the index is a scalar.
            if !(flat && position > 0) {
                self.wrap(argument, charge)?;
            }
        }
        Ok(())
    }

    fn operands(&mut self, call: &mut CallExpr, depth: usize) -> Result<(), String> {
        if let Some(target) = &mut call.target {
            self.visit(target, depth + 1)?;
        }
        for argument in &mut call.args {
            self.visit(argument, depth + 1)?;
        }
        Ok(())
    }

    /// `s.matches('re')` or `matches(s, 're')` becomes `@matches(s, 're')`, its pattern compiled
    /// here: a pattern must be a literal, so that its size is known before it runs.
    fn matches(&mut self, call: &mut CallExpr, depth: usize) -> Result<(), String> {
        let mut operands: Vec<IdedExpr> =
            call.target.take().map(|target| *target).into_iter().collect();
        operands.append(&mut call.args);
        let [mut subject, pattern] = <[IdedExpr; 2]>::try_from(operands)
            .map_err(|_| "`matches` takes a string and a pattern".to_owned())?;
        let Expr::Literal(LiteralValue::String(text)) = &pattern.expr else {
            return Err("`matches` takes a pattern written as a string literal".to_owned());
        };
        let text = text.inner().to_owned();
        if let std::collections::hash_map::Entry::Vacant(entry) = self.patterns.entry(text) {
            let text = entry.key();
            let regex = regex::RegexBuilder::new(text)
                .size_limit(MAX_REGEX_BYTES)
                .dfa_size_limit(MAX_REGEX_BYTES)
                .build()
                .map_err(|error| format!("pattern `{text}`: {error}"))?;
            entry.insert(regex);
        }
        self.visit(&mut subject, depth + 1)?;
        self.count(1)?;
        *call =
            CallExpr { func_name: MATCHES.to_owned(), target: None, args: vec![subject, pattern] };
        Ok(())
    }

    /// Whether `expr` is a value rather than the qualifier of a function's name: anything but
    /// a name whose root is not a variable.
    fn is_value(&self, expr: &IdedExpr) -> bool {
        let mut root = expr;
        loop {
            match &root.expr {
                Expr::Ident(name) => {
                    return name == "self"
                        || self.variables.iter().any(|variable| variable == name);
                }
                Expr::Select(select) if !select.test => root = &select.operand,
                _ => return true,
            }
        }
    }

    /// Replaces `expr` by `function(expr)`, unless it is a literal that costs nothing to copy.
    fn wrap(&mut self, expr: &mut IdedExpr, function: &str) -> Result<(), String> {
        let scalar = matches!(
            &expr.expr,
            Expr::Literal(literal)
                if !matches!(literal, LiteralValue::String(_) | LiteralValue::Bytes(_))
        );
        if scalar {
            return Ok(());
        }
        let inner = std::mem::take(expr);
        *expr = self.call_of(function, vec![inner])?;
        Ok(())
    }

    fn call_of(&mut self, function: &str, args: Vec<IdedExpr>) -> Result<IdedExpr, String> {
        self.count(1 + args.len().saturating_sub(1))?;
        Ok(IdedExpr {
            id: 0,
            expr: Expr::Call(CallExpr { func_name: function.to_owned(), target: None, args }),
        })
    }

    fn count(&mut self, nodes: usize) -> Result<(), String> {
        self.nodes += nodes;
        if self.nodes > MAX_NODES {
            return Err(format!("has more than {MAX_NODES} nodes once parsed"));
        }
        Ok(())
    }
}

fn int(value: i64) -> IdedExpr {
    IdedExpr { id: 0, expr: Expr::Literal(LiteralValue::Int(value.into())) }
}

/// The counter every charge of one evaluation pays into.
#[derive(Default)]
struct Meter {
    spent: AtomicU64,
}

type Function = Box<
    dyn for<'c, 'v> Fn(&mut FunctionContext<'c, 'v>) -> Result<CowVal<'c, 'v>, ExecutionError>
        + Send
        + Sync,
>;

impl Meter {
    fn reset(&self) {
        self.spent.store(0, Ordering::Relaxed);
    }

    fn over(&self) -> bool {
        self.spent.load(Ordering::Relaxed) > COST_BUDGET
    }

    fn left(&self) -> u64 {
        COST_BUDGET.saturating_sub(self.spent.load(Ordering::Relaxed))
    }

    /// Pays `units`; an error once the budget is passed (and at once for every later charge).
    fn charge(&self, units: u64) -> Result<(), ExecutionError> {
        if self.over() {
            return Err(over_budget());
        }
        let spent = self.spent.load(Ordering::Relaxed).saturating_add(units);
        self.spent.store(spent, Ordering::Relaxed);
        if spent > COST_BUDGET { Err(over_budget()) } else { Ok(()) }
    }

    /// Pays the size of `value`, measured no further than the budget left.
    fn charge_size(&self, value: &dyn Val) -> Result<(), ExecutionError> {
        if self.over() {
            return Err(over_budget());
        }
        self.charge(size(value, self.left()))
    }

    /// Registers the charging functions in `context`, `matches` with `patterns`.
    fn install(
        self: &Arc<Self>,
        context: &mut Context,
        patterns: Arc<HashMap<String, regex::Regex>>,
    ) -> Result<(), cel::DeclarationError> {
        let meter = self.clone();
        let charge: Function = Box::new(move |call| {
            let value = call.args.pop().ok_or_else(ExecutionError::missing_argument_or_target)?;
            meter.charge_size(value.as_ref())?;
            Ok(value)
        });
        context.add_function(CHARGE, charge)?;
        let meter = self.clone();
        let charge_flat: Function = Box::new(move |call| {
            let value = call.args.pop().ok_or_else(ExecutionError::missing_argument_or_target)?;
            let units = match value.downcast_ref::<CelString>() {
                Some(text) => 1 + text.inner().len() as u64 / STRING_BYTES_PER_UNIT,
                None => 1,
            };
            meter.charge(units)?;
            Ok(value)
        });
        context.add_function(CHARGE_FLAT, charge_flat)?;
        let meter = self.clone();
        let range: Function = Box::new(move |call| {
            let weight = call
                .args
                .pop()
                .and_then(|weight| weight.downcast_ref::<CelInt>().map(|weight| *weight.inner()))
                .ok_or_else(ExecutionError::missing_argument_or_target)?;
            let range = call.args.pop().ok_or_else(ExecutionError::missing_argument_or_target)?;
            let length = range.as_sizer().map_or(0, |sizer| *sizer.size().inner());
            let steps = u64::try_from(length.saturating_mul(weight)).unwrap_or(u64::MAX);
            meter.charge(steps)?;
            meter.charge_size(range.as_ref())?;
            Ok(range)
        });
        context.add_function(RANGE, range)?;
        let meter = self.clone();
        let matches: Function = Box::new(move |call| {
            let pattern = call.args.pop().ok_or_else(ExecutionError::missing_argument_or_target)?;
            let subject = call.args.pop().ok_or_else(ExecutionError::missing_argument_or_target)?;
            let (Some(subject), Some(pattern)) =
                (subject.downcast_ref::<CelString>(), pattern.downcast_ref::<CelString>())
            else {
                return Err(ExecutionError::no_such_member_overload(
                    "matches",
                    vec![
                        subject.get_type().name().to_owned(),
                        pattern.get_type().name().to_owned(),
                    ],
                ));
            };
            let (subject, pattern) = (subject.inner(), pattern.inner());
            // Kubernetes' worst case for a regular expression: a tenth of the string's length
            // times a quarter of the pattern's.
            let units =
                (1 + subject.len() as u64 / 10).saturating_mul(1 + pattern.len() as u64 / 4);
            meter.charge(units)?;
            let regex = patterns.get(pattern).ok_or_else(|| {
                ExecutionError::function_error("matches", "pattern not compiled beforehand")
            })?;
            Ok(CowVal::owned(CelBool::from(regex.is_match(subject))))
        });
        context.add_function(MATCHES, matches)
    }
}

fn over_budget() -> ExecutionError {
    ExecutionError::function_error("cost budget", format!("exceeds {COST_BUDGET} units"))
}

/// The size of `value` in units (see the module's header), counted no further than `cap`: a
/// result above `cap` means "more than `cap`". Walks without recursion, and never holds more
/// pending values than the units left.
fn size(value: &dyn Val, cap: u64) -> u64 {
    let mut units: u64 = 0;
    let mut pending: Vec<&dyn Val> = vec![value];
    while let Some(value) = pending.pop() {
        units = units.saturating_add(1);
        if let Some(list) = value.downcast_ref::<CelList>() {
            if units.saturating_add((pending.len() + list.inner().len()) as u64) > cap {
                return cap.saturating_add(1);
            }
            pending.extend(list.inner().iter().map(AsRef::as_ref));
        } else if let Some(map) = value.downcast_ref::<CelMap>() {
            if units.saturating_add((pending.len() + 2 * map.inner().len()) as u64) > cap {
                return cap.saturating_add(1);
            }
            for (key, value) in map.inner() {
                pending.push(key.inner());
                pending.push(value.as_ref());
            }
        } else if let Some(text) = value.downcast_ref::<CelString>() {
            units = units.saturating_add(text.inner().len() as u64 / STRING_BYTES_PER_UNIT);
        } else if let Some(bytes) = value.downcast_ref::<CelBytes>() {
            units = units.saturating_add(bytes.inner().len() as u64 / STRING_BYTES_PER_UNIT);
        } else if let Some(optional) = value.downcast_ref::<CelOptional>() {
            pending.extend(optional.inner());
        } else if let Some(sizer) = value.as_sizer() {
            // A container of another kind: its elements at one unit each.
            units = units.saturating_add(u64::try_from(*sizer.size().inner()).unwrap_or(0));
        }
        if units > cap {
            return units;
        }
    }
    units
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn widget_check() -> HealthCheck {
        HealthCheck {
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            current: "self.status.phase == 'Ready' && self.status.replicas >= 3".into(),
            failed: Some(
                "self.status.conditions.exists(c, c.type == 'Failed' && c.status == 'True')".into(),
            ),
            in_progress: Some("has(self.status.phase) && self.status.phase == 'Starting'".into()),
        }
    }

    fn widget(status: Value) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": status})
    }

    #[test]
    fn failed_is_read_first_then_current_then_in_progress() {
        let check = widget_check();
        let failed = widget(json!({"phase": "Ready", "replicas": 3,
            "conditions": [{"type": "Failed", "status": "True"}]}));
        assert!(
            matches!(evaluate(&check, &failed), Ok(ObjectHealth::Failed(_))),
            "failed wins over current"
        );
        let current = widget(json!({"phase": "Ready", "replicas": 3, "conditions": []}));
        assert_eq!(evaluate(&check, &current), Ok(ObjectHealth::Current));
        let starting = widget(json!({"phase": "Starting", "replicas": 0, "conditions": []}));
        assert_eq!(
            evaluate(&check, &starting),
            Ok(ObjectHealth::InProgress(
                "health check `inProgress` is true: has(self.status.phase) && self.status.phase == 'Starting'".into()
            ))
        );
        let neither = widget(json!({"phase": "Ready", "replicas": 1, "conditions": []}));
        assert!(
            matches!(evaluate(&check, &neither), Ok(ObjectHealth::InProgress(m)) if m.contains("`current` is not yet true")),
        );
    }

    #[test]
    fn a_field_not_reported_yet_makes_an_expression_false() {
        let check = widget_check();
        let fresh =
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
        assert!(matches!(evaluate(&check, &fresh), Ok(ObjectHealth::InProgress(_))));
    }

    #[test]
    fn numbers_from_json_compare_with_int_literals() {
        let check = HealthCheck {
            current: "self.status.replicas == 3".into(),
            failed: None,
            in_progress: None,
            ..widget_check()
        };
        assert_eq!(evaluate(&check, &widget(json!({"replicas": 3}))), Ok(ObjectHealth::Current));
    }

    #[test]
    fn an_expression_that_does_not_parse_names_itself() {
        let check = HealthCheck { current: "self.status.phase ==".into(), ..widget_check() };
        let error = compile(&check).err().unwrap_or_default();
        assert!(
            error.starts_with("health check for example.com/v1 Widget: current expression `self.status.phase ==`: "),
            "{error}"
        );
        assert!(evaluate(&check, &widget(json!({}))).is_err());
        assert_eq!(compile(&widget_check()), Ok(()));
    }

    #[test]
    fn an_expression_that_is_not_a_bool_or_misuses_a_type_is_an_error() {
        let not_bool =
            HealthCheck { current: "self.status.phase".into(), failed: None, ..widget_check() };
        let error =
            evaluate(&not_bool, &widget(json!({"phase": "Ready"}))).err().unwrap_or_default();
        assert!(error.contains("evaluates to a string, not a bool"), "{error}");
        let mistyped =
            HealthCheck { current: "self.status.phase > 3".into(), failed: None, ..widget_check() };
        let error =
            evaluate(&mistyped, &widget(json!({"phase": "Ready"}))).err().unwrap_or_default();
        assert!(error.contains("current expression `self.status.phase > 3`"), "{error}");
    }

    #[test]
    fn checks_are_found_by_api_version_and_kind() {
        let checks = vec![widget_check()];
        assert!(find(&checks, "example.com/v1", "Widget").is_some());
        assert!(find(&checks, "example.com/v2", "Widget").is_none());
        assert!(find(&checks, "example.com/v1", "Gadget").is_none());
    }

    /// `[1, 2, ..., n]`.
    fn literal_list(n: usize) -> String {
        let items: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        format!("[{}]", items.join(", "))
    }

    /// Six nested `all` over 50-element lists: 1.5e10 steps.
    fn bomb() -> String {
        let list = literal_list(50);
        let mut body = "a + b + c + d + e + f > 0".to_owned();
        for var in ["f", "e", "d", "c", "b", "a"] {
            body = format!("{list}.all({var}, {body})");
        }
        body
    }

    fn current(source: &str) -> HealthCheck {
        HealthCheck { current: source.into(), failed: None, in_progress: None, ..widget_check() }
    }

    /// Evaluates `source` as `current` and says how long it took.
    fn timed(source: &str, object: &Value) -> (Result<ObjectHealth, String>, std::time::Duration) {
        let started = std::time::Instant::now();
        let outcome = evaluate(&current(source), object);
        (outcome, started.elapsed())
    }

    fn over_budget(outcome: &Result<ObjectHealth, String>) -> bool {
        matches!(outcome, Ok(ObjectHealth::Failed(message))
            if message.contains(&format!("exceeds the cost budget of {COST_BUDGET} units")))
    }

    #[test]
    fn the_nested_loop_bomb_fails_within_its_budget_naming_it() {
        let source = bomb();
        assert!(source.len() < 1_300, "{}", source.len());
        let (outcome, took) = timed(&source, &widget(json!({})));
        println!("nested-loop bomb: failed after {took:?}");
        let Ok(ObjectHealth::Failed(message)) = &outcome else { panic!("{outcome:?}") };
        assert!(
            message.starts_with(
                "health check for example.com/v1 Widget: current expression `[1, 2, 3"
            ),
            "{message}"
        );
        assert!(message.contains("exceeds the cost budget of 100000 units"), "{message}");
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
        // The same in `failed` names that field; a bounded loop does not pay the bomb's price.
        let check = HealthCheck { failed: Some(source.clone()), ..widget_check() };
        let outcome = evaluate(&check, &widget(json!({})));
        assert!(
            matches!(&outcome, Ok(ObjectHealth::Failed(m)) if m.contains("failed expression `[1, 2")),
            "{outcome:?}"
        );
        let small = format!("{}.all(a, {}.all(b, a + b >= 0))", literal_list(50), literal_list(50));
        assert_eq!(timed(&small, &widget(json!({}))).0, Ok(ObjectHealth::Current));
    }

    #[tokio::test]
    async fn an_evaluation_apart_answers_the_same() {
        let object = Arc::new(widget(json!({})));
        let outcome = evaluate_apart(current(&bomb()), object.clone()).await;
        assert!(over_budget(&outcome), "{outcome:?}");
        let outcome = evaluate_apart(widget_check(), object).await;
        assert!(matches!(outcome, Ok(ObjectHealth::InProgress(_))), "{outcome:?}");
    }

    #[test]
    fn an_error_the_logic_absorbs_still_counts_as_over_budget() {
        for source in [format!("{} || true", bomb()), format!("true || {}", bomb())] {
            let (outcome, _) = timed(&source, &widget(json!({})));
            if source.starts_with("true") {
                // Never evaluated: `||` stops at `true`.
                assert_eq!(outcome, Ok(ObjectHealth::Current));
            } else {
                assert!(over_budget(&outcome), "{outcome:?}");
            }
        }
        let absorbed = format!(
            "{}.exists(a, a == 49 || {}.all(b, {}.all(c, {}.all(d, a + b + c + d > 0))))",
            literal_list(50),
            literal_list(50),
            literal_list(50),
            literal_list(50)
        );
        let (outcome, _) = timed(&absorbed, &widget(json!({})));
        assert!(over_budget(&outcome), "{outcome:?}");
    }

    #[test]
    fn copies_and_concatenations_pay_for_their_size() {
        let blob = "x".repeat(256 * 1024);
        let items: Vec<i64> = (0..10_000).collect();
        let object = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w"}, "spec": {"blob": blob, "items": items}});
        let fifty = literal_list(50);
        for (what, source) in [
            (
                "string doubling",
                format!(
                    "{fifty}.all(a, {fifty}.all(b, size(self.spec.blob + self.spec.blob + self.spec.blob) > 0))"
                ),
            ),
            (
                "list doubling",
                format!(
                    "{fifty}.all(a, {fifty}.all(b, size(self.spec.items + self.spec.items + self.spec.items) > 0))"
                ),
            ),
            (
                "copies built by map",
                format!("size({fifty}.map(a, {fifty}.map(b, {fifty}.map(c, self.spec.blob)))) > 0"),
            ),
            (
                "a comprehension over a list built by map",
                "self.spec.items.map(x, self.spec.items).all(l, l.all(y, y >= 0))".to_owned(),
            ),
            (
                "comparisons of the whole object",
                format!("{fifty}.all(a, {fifty}.all(b, self == self))"),
            ),
            (
                "membership in a long list",
                "self.spec.items.all(x, x in self.spec.items)".to_owned(),
            ),
            (
                "a regular expression over a long string",
                format!("{fifty}.exists(a, self.spec.blob.matches('^(x|xx)+y$'))"),
            ),
        ] {
            let (outcome, took) = timed(&source, &object);
            println!("{what}: failed after {took:?}");
            assert!(over_budget(&outcome), "{what}: {outcome:?}");
            assert!(took < std::time::Duration::from_secs(2), "{what}: {took:?}");
        }
    }

    #[test]
    fn deep_or_long_expressions_are_refused_before_they_are_parsed() {
        let parentheses = format!("{}true{}", "(".repeat(2_000), ")".repeat(2_000));
        let brackets = format!("{}1{} == 1", "[".repeat(1_000), "]".repeat(1_000));
        let chain = vec!["1"; 4_000].join("+") + " > 0";
        let selects = format!("has(self{})", ".a".repeat(4_000));
        let negations = format!("{}true", "!".repeat(4_000));
        let minus = format!("{}1 > 0", "-".repeat(4_000));
        let long = format!("self.status.phase == '{}'", "x".repeat(9_000));
        for (what, source, bound) in [
            ("parentheses", parentheses, "brackets deep"),
            ("brackets", brackets, "brackets deep"),
            ("an operator chain", chain, "levels deep"),
            ("a select chain", selects, "levels deep"),
            ("a long expression", long, "8192 allowed"),
        ] {
            let check = current(&source);
            let error = compile(&check).err().unwrap_or_default();
            assert!(
                error.starts_with("health check for example.com/v1 Widget: current expression `"),
                "{what}: {error}"
            );
            assert!(error.contains(bound), "{what}: {error}");
            assert!(evaluate(&check, &widget(json!({}))).is_err(), "{what}");
        }
        // Unary chains fold as they are parsed.
        for source in [negations, minus] {
            assert!(evaluate(&current(&source), &widget(json!({}))).is_ok(), "{source}");
        }
    }

    #[test]
    fn a_pattern_must_be_a_literal_of_bounded_size() {
        let dynamic = current("self.status.phase.matches(self.status.pattern)");
        let error = compile(&dynamic).err().unwrap_or_default();
        assert!(error.contains("`matches` takes a pattern written as a string literal"), "{error}");
        let huge = current("self.status.phase.matches('((a{100}){100}){100}')");
        let error = compile(&huge).err().unwrap_or_default();
        assert!(error.contains("pattern `((a{100}){100}){100}`"), "{error}");
        let fine = current(
            "self.status.phase.matches('^(Ready|Running)$') && matches(self.status.phase, 'R')",
        );
        assert_eq!(evaluate(&fine, &widget(json!({"phase": "Ready"}))), Ok(ObjectHealth::Current));
    }

    #[test]
    fn ordinary_expressions_over_large_objects_stay_within_budget() {
        let conditions: Vec<Value> = (0..1_000)
            .map(|i| {
                json!({"type": if i == 999 { "Ready".to_owned() } else { format!("Condition{i}") },
                    "status": "True", "reason": "Reconciled", "message": "all good here",
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3})
            })
            .collect();
        let object = widget(json!({"conditions": conditions, "observedGeneration": 3}));
        for source in [
            "self.status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')",
            "self.status.conditions.exists(e, e.type == 'Ready' && e.status == 'True')",
            "self.status.conditions.map(e, e.type).exists(t, t == 'Ready')",
            "size(self.status.conditions) == 1000 && self.status.conditions[999].type.matches('^Read')",
            "self.status.conditions.all(e, e.observedGeneration == self.status.observedGeneration)",
        ] {
            let (outcome, took) = timed(source, &object);
            let (units, _) = spent(source, &object);
            println!("{source}: {units} units, {took:?}");
            assert_eq!(outcome, Ok(ObjectHealth::Current), "{source}");
            assert!(units < COST_BUDGET / 2, "{source}: {units}");
        }
    }

    /// The units `source` spends on `object`, and how long it took.
    fn spent(source: &str, object: &Value) -> (u64, std::time::Duration) {
        let started = std::time::Instant::now();
        let program = prepare(source).unwrap_or_else(|error| panic!("{error}"));
        let meter = Arc::new(Meter::default());
        let mut context = Context::default();
        context.add_variable("self", object.clone()).ok();
        meter.install(&mut context, Arc::new(program.patterns.clone())).ok();
        let _ = truth(&current(source), "current", &program, &context, &meter);
        (meter.spent.load(Ordering::Relaxed), started.elapsed())
    }

    #[test]
    fn the_budget_is_a_few_milliseconds() {
        let started = std::time::Instant::now();
        let _ = evaluate(&current("true"), &widget(json!({})));
        println!("an evaluation of `true`: {:?}", started.elapsed());
        for n in [1_000usize, 10_000, 100_000] {
            let items: Vec<i64> = (0..n as i64).collect();
            let object = widget(json!({"items": items}));
            let (base, base_took) = spent("true", &object);
            let (units, took) = spent("self.status.items.all(x, x >= 0)", &object);
            println!(
                "{n} items: `true` {base} units in {base_took:?}; a loop {units} units in {took:?}"
            );
        }
    }
}
