//! The evaluation of health checks, their bounds and their budget.

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
        error.starts_with(
            "health check for example.com/v1 Widget: current expression `self.status.phase ==`: "
        ),
        "{error}"
    );
    assert!(evaluate(&check, &widget(json!({}))).is_err());
    assert_eq!(compile(&widget_check()), Ok(()));
}

#[test]
fn an_expression_that_is_not_a_bool_or_misuses_a_type_is_an_error() {
    let not_bool =
        HealthCheck { current: "self.status.phase".into(), failed: None, ..widget_check() };
    let error = evaluate(&not_bool, &widget(json!({"phase": "Ready"}))).err().unwrap_or_default();
    assert!(error.contains("evaluates to a string, not a bool"), "{error}");
    let mistyped =
        HealthCheck { current: "self.status.phase > 3".into(), failed: None, ..widget_check() };
    let error = evaluate(&mistyped, &widget(json!({"phase": "Ready"}))).err().unwrap_or_default();
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
        message.starts_with("health check for example.com/v1 Widget: current expression `[1, 2, 3"),
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
        ("membership in a long list", "self.spec.items.all(x, x in self.spec.items)".to_owned()),
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
