//! Health from watches and health checks for any kind (SPEC.md section 3). The operators here
//! keep baton's default safety re-read of a minute, so a change seen within seconds was seen
//! through a watch, not a poll.

use std::time::{Duration, Instant};

use baton::crd::{ApplyPhase, FailurePolicy, HealthCheck, OperationPhase};
use baton_e2e::{grant, pods, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use super::support::{DEPLOYER, PATIENCE, World, app, config_map, held_deployment, spec};

/// Far below the safety re-read (60 s): seeing a change within this long needs a watch.
const PROMPTLY: Duration = Duration::from_secs(10);

/// `baton_health_watches` as the operator serves it.
async fn open_watches(world: &World) -> Option<i64> {
    let (_, body) = baton_e2e::http_get(world.operator.admin, "/metrics").await?;
    body.lines()
        .find_map(|line| line.strip_prefix("baton_health_watches "))
        .and_then(|value| value.trim().parse().ok())
}

async fn wait_watches(world: &World, want: i64, within: Duration) {
    wait_for(&format!("{want} health watches open"), within, || async {
        (open_watches(world).await == Some(want)).then_some(())
    })
    .await;
}

/// The running operation's message, once it contains `part`.
async fn wait_message(world: &World, apply: &str, operation: &str, part: &str) -> String {
    let operations = world.operations();
    let name = format!("{apply}-{operation}");
    wait_for(&format!("{name} to say `{part}`"), PATIENCE, || {
        let operations = operations.clone();
        let name = name.clone();
        async move {
            let message = operations.get(&name).await.ok()?.status?.message?;
            message.contains(part).then_some(message)
        }
    })
    .await
}

#[tokio::test]
async fn a_deployment_made_healthy_is_seen_through_its_watch_which_then_closes() {
    let world = World::new("watch-ready").await;
    let ns = world.ns.name.clone();
    world
        .create("web", spec(&ns, FailurePolicy::Halt, 1, vec![("a", held_deployment("web"))]))
        .await;
    // First "waiting for the controller to observe generation 1" (the health check right after
    // the apply, in the claim's pass), then the replicas.
    let message = wait_message(&world, "web", "a", "of 1 replicas").await;
    let awaited = format!("waiting for Deployment `web` in `{ns}`: ");
    assert!(message.starts_with(&awaited), "{message}");
    wait_watches(&world, 1, PATIENCE).await;
    let deployment = Api::<Deployment>::namespaced(world.client.clone(), &ns).get("web").await;
    let labels = deployment.expect("the Deployment").metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("baton.dev/managed").map(String::as_str), Some("true"));

    pods::release(&world.client, &ns, &app("web")).await;
    let released = Instant::now();
    world.wait_apply_phase("web", ApplyPhase::Succeeded).await;
    let seen = released.elapsed();
    assert!(seen < PROMPTLY, "the released Deployment was seen after {seen:?}");
    // Nothing waits on Deployments there any more: the watch closes (after its short grace).
    wait_watches(&world, 0, PATIENCE).await;
    println!("released pods to Succeeded: {:.2}s", seen.as_secs_f64());
}

#[tokio::test]
async fn an_object_deleted_while_awaited_is_named_and_the_timeout_decides() {
    let world = World::new("watch-deleted").await;
    let ns = world.ns.name.clone();
    let mut spec = spec(&ns, FailurePolicy::Halt, 1, vec![("a", held_deployment("web"))]);
    spec.operations[0].timeout = "25s".into();
    world.create("web", spec).await;
    wait_message(&world, "web", "a", "replicas").await;
    let deployments: Api<Deployment> = Api::namespaced(world.client.clone(), &ns);
    deployments.delete("web", &DeleteParams::background()).await.expect("deleting the Deployment");
    let deleted = Instant::now();
    wait_message(&world, "web", "a", "not found (deleted after it was applied)").await;
    assert!(deleted.elapsed() < PROMPTLY, "the deletion was seen after {:?}", deleted.elapsed());
    let apply = world.wait_apply_phase("web", ApplyPhase::Failed).await;
    let error = apply.status.and_then(|s| s.error).expect("status.error");
    assert_eq!(error.reason, "Timeout");
    assert!(
        error.message.contains("not found (deleted after it was applied)"),
        "{}",
        error.message
    );
}

const GROUP: &str = "e2e.baton.dev";

/// A namespaced kind `Widget` with a status subresource, which no built-in rule knows and
/// which has no `Ready` condition; its "controller" is the test, which patches its status.
async fn install_widgets(world: &World) -> Api<DynamicObject> {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{GROUP}")},
        "spec": {
            "group": GROUP, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                }}},
            }],
        },
    }))
    .expect("a CRD");
    let crds: Api<CustomResourceDefinition> = Api::all(world.client.clone());
    crds.patch(
        &format!("widgets.{GROUP}"),
        &PatchParams::apply("baton-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("installing the Widget CRD");
    let rule = PolicyRule {
        api_groups: Some(vec![GROUP.into()]),
        resources: Some(vec!["widgets".into()]),
        verbs: ["get", "list", "watch", "create", "update", "patch"].map(String::from).to_vec(),
        ..PolicyRule::default()
    };
    let mut rules = super::support::deployer_rules();
    rules.push(rule);
    grant(&world.client, &world.ns.name, (&world.ns.name, DEPLOYER), rules).await;
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(world.client.clone(), &world.ns.name, &resource);
    // Served once the API server has established the CRD.
    wait_for("the Widget kind to be served", PATIENCE, || {
        let widgets = widgets.clone();
        async move { widgets.list(&Default::default()).await.ok().map(|_| ()) }
    })
    .await;
    widgets
}

fn widget(name: &str) -> Value {
    json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Widget", "metadata": {"name": name}, "spec": {"size": 1}})
}

fn widget_check() -> HealthCheck {
    HealthCheck {
        api_version: format!("{GROUP}/v1"),
        kind: "Widget".into(),
        current: "self.status.phase == 'Ready'".into(),
        failed: Some("self.status.phase == 'Broken'".into()),
        in_progress: Some("self.status.phase == 'Starting'".into()),
    }
}

async fn set_phase(widgets: &Api<DynamicObject>, name: &str, phase: &str) {
    wait_for(&format!("Widget {name} to exist"), PATIENCE, || async {
        widgets.get(name).await.ok().map(|_| ())
    })
    .await;
    widgets
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase}})),
        )
        .await
        .expect("patching the Widget's status");
}

#[tokio::test]
async fn health_checks_read_a_custom_kind_current_failed_and_in_progress() {
    let world = World::new("cel-health").await;
    let ns = world.ns.name.clone();
    let widgets = install_widgets(&world).await;

    // In progress, then current.
    let mut good = spec(&ns, FailurePolicy::Halt, 1, vec![("a", widget("good"))]);
    good.health_checks = vec![widget_check()];
    world.create("good", good).await;
    wait_message(&world, "good", "a", "health check `current` is not yet true").await;
    set_phase(&widgets, "good", "Starting").await;
    let message = wait_message(&world, "good", "a", "health check `inProgress` is true").await;
    assert!(message.starts_with(&format!("waiting for Widget `good` in `{ns}`: ")), "{message}");
    assert_eq!(world.apply("good").await.status.and_then(|s| s.phase), Some(ApplyPhase::Running));
    set_phase(&widgets, "good", "Ready").await;
    let marked = Instant::now();
    world.wait_apply_phase("good", ApplyPhase::Succeeded).await;
    assert!(marked.elapsed() < PROMPTLY, "current was seen after {:?}", marked.elapsed());

    // Failed.
    let mut bad = spec(&ns, FailurePolicy::Halt, 1, vec![("a", widget("bad"))]);
    bad.health_checks = vec![widget_check()];
    world.create("bad", bad).await;
    wait_message(&world, "bad", "a", "not yet true").await;
    set_phase(&widgets, "bad", "Broken").await;
    let apply = world.wait_apply_phase("bad", ApplyPhase::Failed).await;
    let error = apply.status.and_then(|s| s.error).expect("status.error");
    assert_eq!(error.reason, "Unhealthy");
    assert!(error.message.contains("Widget `bad`"), "{}", error.message);
    assert!(error.message.contains("self.status.phase == 'Broken'"), "{}", error.message);

    // Without a health check, a kind with no rules and no `Ready` condition is healthy as soon
    // as it exists (kstatus: no status means current).
    world.create("plain", spec(&ns, FailurePolicy::Halt, 1, vec![("a", widget("plain"))])).await;
    world.wait_apply_phase("plain", ApplyPhase::Succeeded).await;
}

#[tokio::test]
async fn a_bad_health_expression_fails_the_operation_naming_it() {
    let world = World::new("cel-bad").await;
    let ns = world.ns.name.clone();
    let widgets = install_widgets(&world).await;

    // Does not parse: fails before anything is applied.
    let mut unparsable = spec(&ns, FailurePolicy::Halt, 1, vec![("a", widget("never"))]);
    unparsable.health_checks =
        vec![HealthCheck { current: "self.status.phase ==".into(), ..widget_check() }];
    world.create("unparsable", unparsable).await;
    let apply = world.wait_apply_phase("unparsable", ApplyPhase::Failed).await;
    let error = apply.status.and_then(|s| s.error).expect("status.error");
    assert_eq!(error.reason, "DispatchFailed");
    assert!(
        error.message.contains("current expression `self.status.phase ==`"),
        "{}",
        error.message
    );
    assert!(widgets.get_opt("never").await.expect("reading widgets").is_none(), "nothing applied");

    // Parses, but compares a string with a number: fails when first evaluated.
    let mut mistyped = spec(&ns, FailurePolicy::Halt, 1, vec![("a", widget("typed"))]);
    mistyped.health_checks = vec![HealthCheck {
        current: "self.metadata.name > 3".into(),
        failed: None,
        in_progress: None,
        ..widget_check()
    }];
    world.create("mistyped", mistyped).await;
    let apply = world.wait_apply_phase("mistyped", ApplyPhase::Failed).await;
    let error = apply.status.and_then(|s| s.error).expect("status.error");
    assert_eq!(error.reason, "DispatchFailed");
    assert!(error.message.contains("Widget `typed`"), "{}", error.message);
    assert!(error.message.contains("`self.metadata.name > 3`"), "{}", error.message);
    let phase = world.operation("mistyped", "a").await.status.map(|s| s.phase);
    assert_eq!(phase, Some(OperationPhase::Failed));
}

#[tokio::test]
async fn health_checks_are_immutable() {
    let world = World::new("cel-immutable").await;
    let ns = world.ns.name.clone();
    let mut checked = spec(&ns, FailurePolicy::Halt, 1, vec![("a", widget("w"))]);
    checked.health_checks = vec![widget_check()];
    world.create("checked", checked).await;
    let patch = json!({"spec": {"healthChecks": [{"apiVersion": "v1", "kind": "ConfigMap", "current": "true"}]}});
    let refused = world
        .applies()
        .patch("checked", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(refused.contains("spec.healthChecks is immutable"), "{refused}");
}

/// Six nested `all` over 50-element lists: 1.5e10 steps if nothing stops them.
fn nested_loop_bomb() -> String {
    let list = format!("[{}]", (1..=50).map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
    let mut body = "a + b + c + d + e + f > 0".to_owned();
    for var in ["f", "e", "d", "c", "b", "a"] {
        body = format!("{list}.all({var}, {body})");
    }
    body
}

/// An Apply of one Widget read by the bomb.
fn bomb_spec(ns: &str, name: &str) -> baton::crd::ApplySpec {
    let mut bomb = spec(ns, FailurePolicy::Halt, 1, vec![("a", widget(name))]);
    bomb.health_checks = vec![HealthCheck {
        current: nested_loop_bomb(),
        failed: None,
        in_progress: None,
        ..widget_check()
    }];
    bomb
}

/// How long the Apply `name` of one ConfigMap takes from its creation to `Succeeded`.
async fn plain_apply(world: &World, name: &str) -> Duration {
    let started = Instant::now();
    world
        .create(name, spec(&world.ns.name, FailurePolicy::Halt, 1, vec![("a", config_map(name))]))
        .await;
    world.wait_apply_phase(name, ApplyPhase::Succeeded).await;
    started.elapsed()
}

#[tokio::test]
async fn a_health_expression_over_its_budget_fails_unhealthy_holding_up_no_one() {
    let world = World::new("cel-bomb").await;
    let ns = world.ns.name.clone();
    install_widgets(&world).await;
    let alone = plain_apply(&world, "alone").await;

    let started = Instant::now();
    world.create("bomb", bomb_spec(&ns, "bomb")).await;
    let (beside, apply) = tokio::join!(
        plain_apply(&world, "beside"),
        world.wait_apply_phase("bomb", ApplyPhase::Failed)
    );
    let failed = started.elapsed();
    let error = apply.status.and_then(|s| s.error).expect("status.error");
    assert_eq!(error.reason, "Unhealthy", "{}", error.message);
    for part in [
        format!("Widget `bomb` in `{ns}`"),
        format!("health check for {GROUP}/v1 Widget: current expression `[1, 2, 3"),
        "exceeds the cost budget of 100000 units".to_owned(),
    ] {
        assert!(error.message.contains(&part), "`{part}` in {}", error.message);
    }
    assert!(failed < PROMPTLY, "the bomb failed after {failed:?}");
    // "About the time it takes alone": what one pass more costs, not what a pinned worker would.
    assert!(
        beside < alone * 2 + Duration::from_secs(2),
        "alone {alone:?}, beside the bomb {beside:?}"
    );
    println!(
        "bomb failed Unhealthy {:.2}s after its creation; a plain Apply took {:.2}s alone, {:.2}s beside it",
        failed.as_secs_f64(),
        alone.as_secs_f64(),
        beside.as_secs_f64()
    );
}

#[tokio::test]
async fn a_shutdown_with_a_bomb_running_ends_within_the_lease_grace() {
    let mut world = World::new("cel-stop").await;
    let ns = world.ns.name.clone();
    install_widgets(&world).await;
    // Several, so that evaluations are in flight when the signal comes.
    for bomb in ["bomb-1", "bomb-2", "bomb-3", "bomb-4", "bomb-5", "bomb-6"] {
        world.create(bomb, bomb_spec(&ns, bomb)).await;
    }
    world.wait_operation_phase("bomb-1", "a", OperationPhase::Running).await;
    // The test operator's grace (`--lease-grace-seconds 1`), and what a process takes to go.
    let grace = Duration::from_secs(1);
    let took = world.operator.terminate(grace * 10);
    println!("SIGTERM with the bomb running: exited after {took:?}");
    let took = took.expect("the operator still ran 10 s after SIGTERM");
    assert!(took < grace + Duration::from_millis(500), "exited {took:?} after SIGTERM");
}
