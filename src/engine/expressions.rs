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

use cel::objects::Value as CelValue;
use cel::{Context, ExecutionError, Program};
use serde_json::Value;

use super::health::ObjectHealth;
use crate::crd::HealthCheck;

/// The check of `checks` that reads objects of `api_version` and `kind`, if any.
pub fn find<'a>(
    checks: &'a [HealthCheck],
    api_version: &str,
    kind: &str,
) -> Option<&'a HealthCheck> {
    checks.iter().find(|check| check.api_version == api_version && check.kind == kind)
}

/// Checks that every expression of `check` parses; the error names the kind, the field and
/// the expression.
pub fn compile(check: &HealthCheck) -> Result<(), String> {
    for (field, source) in fields(check) {
        Program::compile(source).map_err(|error| describe(check, field, source, &error))?;
    }
    Ok(())
}

/// The health of `object` by `check`: `failed`, then `current`, then in progress.
pub fn evaluate(check: &HealthCheck, object: &Value) -> Result<ObjectHealth, String> {
    let mut context = Context::default();
    context.add_variable("self", object.clone()).map_err(|error| {
        format!(
            "health check for {} {}: the object cannot be read: {error}",
            check.api_version, check.kind
        )
    })?;
    if let Some(failed) = &check.failed
        && truth(check, "failed", failed, &context)?
    {
        return Ok(ObjectHealth::Failed(format!("health check `failed` is true: {failed}")));
    }
    if truth(check, "current", &check.current, &context)? {
        return Ok(ObjectHealth::Current);
    }
    if let Some(in_progress) = &check.in_progress
        && truth(check, "inProgress", in_progress, &context)?
    {
        return Ok(ObjectHealth::InProgress(format!(
            "health check `inProgress` is true: {in_progress}"
        )));
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

/// Whether one expression is true of the object in `context`.
fn truth(
    check: &HealthCheck,
    field: &str,
    source: &str,
    context: &Context,
) -> Result<bool, String> {
    let program =
        Program::compile(source).map_err(|error| describe(check, field, source, &error))?;
    match program.execute(context) {
        Ok(CelValue::Bool(value)) => Ok(value),
        Ok(other) => Err(describe(
            check,
            field,
            source,
            &format!("evaluates to {}, not a bool", type_name(&other)),
        )),
        // Not reported yet: see the module's header.
        Err(ExecutionError::NoSuchKey(_)) => Ok(false),
        Err(error) => Err(describe(check, field, source, &error)),
    }
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

fn describe(
    check: &HealthCheck,
    field: &str,
    source: &str,
    error: &dyn std::fmt::Display,
) -> String {
    format!(
        "health check for {} {}: {field} expression `{source}`: {error}",
        check.api_version, check.kind
    )
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
}
