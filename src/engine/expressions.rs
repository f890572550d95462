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

mod meter;
mod rewrite;
#[cfg(test)]
mod tests;

use self::meter::*;
use self::rewrite::*;
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
