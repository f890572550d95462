//! Gates and values end to end (SPEC.md sections 10 and 11): approvals that stop the window,
//! soaks, the failure budget, and one template over several targets with values.

use std::time::Duration;

use baton::crd::{ApplyPhase, Approval, FailurePolicy, OperationPhase, OperationStatus};
use baton_e2e::{kubectl_baton, pods, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::support::{
    DEPLOYER, PATIENCE, World, config_map, deployer_rules, failing_job, held_deployment, spec,
};

fn approve(world: &World, apply: &str, operation: &str) -> String {
    let output = kubectl_baton(&["approve", apply, operation, "-n", &world.ns.name]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn status_of(world: &World, apply: &str, operation: &str) -> OperationStatus {
    world.operation(apply, operation).await.status.unwrap_or_default()
}

/// Waits until the Apply's `Reconciling` condition says it awaits an approval.
async fn wait_awaiting(world: &World, apply: &str) -> String {
    let applies = world.applies();
    wait_for(&format!("Apply `{apply}` to await an approval"), PATIENCE, || {
        let applies = applies.clone();
        async move {
            let status = applies.get(apply).await.ok()?.status?;
            let reconciling = status.conditions.iter().find(|c| c.type_ == "Reconciling")?;
            (reconciling.reason == "AwaitingApproval").then_some(status.message)
        }
    })
    .await
}

#[tokio::test]
async fn an_approval_gate_stops_the_window_even_with_room_until_approved() {
    let world = World::new("approve").await;
    let ns = world.ns.name.clone();
    let steps = ["a", "b", "c", "d", "e"].map(|step| (step, config_map(&format!("cm-{step}"))));
    let mut spec = spec(&ns, FailurePolicy::Halt, 3, steps.to_vec());
    spec.operations[1].approval = Some(Approval::Required);
    world.create("gate", spec).await;
    let message = wait_awaiting(&world, "gate").await;
    assert!(message.contains("operation `b` awaits approval"), "{message}");
    assert_eq!(world.apply("gate").await.status.and_then(|s| s.phase), Some(ApplyPhase::Running));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for step in ["b", "c", "d", "e"] {
        // Never written by the operator: the phase is the CRD's status default.
        let status = world.operation("gate", step).await.status;
        assert_eq!(status.map(|s| s.phase), Some(OperationPhase::Pending), "{step} shows a phase");
    }

    assert!(approve(&world, "gate", "b").contains("approved"));
    world.wait_apply_phase("gate", ApplyPhase::Succeeded).await;
    let record = status_of(&world, "gate", "b").await.approval.expect("the approval is recorded");
    assert_eq!(record.by, "kubectl-baton", "who approved, as the API server recorded it");
    assert!(record.at.is_some());
}

#[tokio::test]
async fn an_approval_withdrawn_before_the_claim_keeps_the_gate_shut() {
    let world = World::new("withdraw").await;
    let ns = world.ns.name.clone();
    let mut spec = spec(
        &ns,
        FailurePolicy::Halt,
        1,
        vec![("a", held_deployment("web")), ("b", config_map("b"))],
    );
    spec.operations[1].approval = Some(Approval::Required);
    world.create("wd", spec).await;
    world.wait_operation_phase("wd", "a", OperationPhase::Running).await;
    approve(&world, "wd", "b");
    world.patch_spec("wd", json!({"approvals": []})).await;
    pods::release(&world.client, &ns, "app=web").await;
    world.wait_operation_phase("wd", "a", OperationPhase::Succeeded).await;
    wait_awaiting(&world, "wd").await;
    assert_eq!(status_of(&world, "wd", "b").await.phase, OperationPhase::Pending);
}

#[tokio::test]
async fn a_stop_while_awaiting_an_approval_parks_the_gate_and_a_resume_waits_again() {
    let world = World::new("stopgate").await;
    let ns = world.ns.name.clone();
    let mut spec =
        spec(&ns, FailurePolicy::Halt, 1, vec![("a", config_map("a")), ("b", config_map("b"))]);
    spec.operations[1].approval = Some(Approval::Required);
    world.create("sg", spec).await;
    wait_awaiting(&world, "sg").await;
    world.patch_spec("sg", json!({"stop": true})).await;
    world.wait_apply_phase("sg", ApplyPhase::Stopped).await;
    assert_eq!(status_of(&world, "sg", "b").await.phase, OperationPhase::Stopped);
    world.patch_spec("sg", json!({"stop": false})).await;
    wait_awaiting(&world, "sg").await;
    approve(&world, "sg", "b");
    world.wait_apply_phase("sg", ApplyPhase::Succeeded).await;
}

/// A bare Pod that becomes ready at once (`app=<name>`): healthy while it runs.
fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    })
}

#[tokio::test]
async fn a_soak_holds_success_until_healthy_for_its_duration() {
    let world = World::new("soak").await;
    let ns = world.ns.name.clone();
    let mut spec = spec(&ns, FailurePolicy::Halt, 1, vec![("a", config_map("soaked"))]);
    spec.operations[0].soak = Some("4s".into());
    world.create("soak", spec).await;
    let operations = world.operations();
    let soaking = wait_for("the soak to start", PATIENCE, || {
        let operations = operations.clone();
        async move {
            let status = operations.get("soak-a").await.ok()?.status?;
            status.soak_until.clone().map(|until| (status.healthy_since, until))
        }
    })
    .await;
    let done = world.wait_operation_phase("soak", "a", OperationPhase::Succeeded).await;
    let completed = done.status.and_then(|s| s.completed_at).expect("a completion time");
    let since = soaking.0.expect("healthy since");
    assert!(completed.0.duration_since(since.0).as_secs() >= 4, "succeeded before the soak ended");
}

#[tokio::test]
async fn a_failure_during_the_soak_fails_the_operation() {
    let world = World::new("soakfail").await;
    let ns = world.ns.name.clone();
    // This rollout applies a bare Pod: the deployer may manage pods here.
    let mut rules = deployer_rules();
    rules.push(k8s_openapi::api::rbac::v1::PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["pods".into()]),
        verbs: ["get", "list", "watch", "create", "patch"].map(String::from).to_vec(),
        ..Default::default()
    });
    baton_e2e::service_account_with_rules(&world.client, &ns, DEPLOYER, rules).await;
    let mut spec = spec(&ns, FailurePolicy::Halt, 1, vec![("a", pod("soaker"))]);
    spec.operations[0].soak = Some("5m".into());
    world.create("sf", spec).await;
    let operations = world.operations();
    wait_for("the soak to start", PATIENCE, || {
        let operations = operations.clone();
        async move { operations.get("sf-a").await.ok()?.status?.soak_until.map(|_| ()) }
    })
    .await;
    // The container exits 1 mid-soak (kwok's `fail` stage): the Pod is Failed.
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), &ns);
    let patch = json!({"metadata": {"annotations": {pods::CONTAINER: pods::FAIL}}});
    pods.patch("soaker", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("failing the pod");
    world.wait_apply_phase("sf", ApplyPhase::Failed).await;
    let status = status_of(&world, "sf", "a").await;
    assert_eq!(status.reason.as_deref(), Some("Unhealthy"));
    assert!(status.message.unwrap_or_default().starts_with("during its soak"));
}

#[tokio::test]
async fn a_stop_during_the_soak_starts_the_soak_again_on_resume() {
    let world = World::new("soakstop").await;
    let ns = world.ns.name.clone();
    let mut spec = spec(&ns, FailurePolicy::Halt, 1, vec![("a", config_map("s"))]);
    spec.operations[0].soak = Some("5m".into());
    world.create("ss", spec).await;
    let operations = world.operations();
    let first = wait_for("the soak to start", PATIENCE, || {
        let operations = operations.clone();
        async move { operations.get("ss-a").await.ok()?.status?.soak_until }
    })
    .await;
    world.patch_spec("ss", json!({"stop": true})).await;
    world.wait_apply_phase("ss", ApplyPhase::Stopped).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    world.patch_spec("ss", json!({"stop": false})).await;
    let second = wait_for("a new soak after the resume", PATIENCE, || {
        let operations = operations.clone();
        async move {
            let status = operations.get("ss-a").await.ok()?.status?;
            (status.attempt == 2).then_some(status.soak_until).flatten()
        }
    })
    .await;
    assert!(second.0 > first.0, "the soak starts again: {} then {}", first.0, second.0);
}

async fn budget_run(budget: IntOrString, prefix: &str) {
    let world = World::new(prefix).await;
    let ns = world.ns.name.clone();
    let steps = vec![
        ("a", config_map("a")),
        ("b", failing_job("job-b", 0)),
        ("c", config_map("c")),
        ("d", failing_job("job-d", 0)),
        ("e", config_map("e")),
    ];
    let mut spec = spec(&ns, FailurePolicy::Halt, 1, steps);
    spec.max_failed = Some(budget);
    world.create("budget", spec).await;
    let failed = world.wait_apply_phase("budget", ApplyPhase::Failed).await;
    let phases: Vec<OperationPhase> =
        world.phases("budget").await.into_iter().map(|(_, phase, _)| phase).collect();
    use OperationPhase::{Failed, Pending, Succeeded};
    assert_eq!(phases, [Succeeded, Failed, Succeeded, Failed, Pending], "the second failure halts");
    assert_eq!(failed.status.and_then(|s| s.error).map(|e| e.operation), Some("b".into()));
}

#[tokio::test]
async fn a_failure_budget_of_one_over_five_halts_at_the_second_failure() {
    budget_run(IntOrString::Int(1), "budget").await;
}

#[tokio::test]
async fn a_percentage_budget_counts_twenty_percent_of_five_as_one() {
    budget_run(IntOrString::String("20%".into()), "budgetpct").await;
}

#[tokio::test]
async fn one_template_over_three_targets_with_values() {
    let world = World::new("values").await;
    let ns = world.ns.name.clone();
    let mut spec = spec(&ns, FailurePolicy::Continue, 1, vec![]);
    spec.template = Some(baton::crd::ApplyTemplate {
        manifests: vec![json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "web-${region}"},
            "data": {"region": "${region}", "step": "${operation.name}", "ns": "${target.namespace}",
                     "literal": "$${region}"},
        })],
    });
    for (name, region) in [("eu", Some("europe")), ("us", Some("america")), ("ap", None)] {
        let mut entry = super::support::spec(&ns, FailurePolicy::Halt, 1, vec![(name, json!({}))])
            .operations
            .remove(0);
        entry.manifests = None;
        entry.values =
            region.map(|r| [("region".to_owned(), r.to_owned())].into()).unwrap_or_default();
        spec.operations.push(entry);
    }
    world.create("fleet", spec).await;
    world.wait_apply_phase("fleet", ApplyPhase::Failed).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(world.client.clone(), &ns);
    for (name, region) in [("eu", "europe"), ("us", "america")] {
        let data = config_maps
            .get(&format!("web-{region}"))
            .await
            .expect("applied")
            .data
            .unwrap_or_default();
        assert_eq!(data.get("region").map(String::as_str), Some(region));
        assert_eq!(data.get("step").map(String::as_str), Some(name));
        assert_eq!(data.get("ns"), Some(&ns));
        assert_eq!(
            data.get("literal").map(String::as_str),
            Some("${region}"),
            "escaped stays literal"
        );
    }
    // `ap` has no `region`: it fails before anything is applied, naming the variable.
    let ap = status_of(&world, "fleet", "ap").await;
    assert_eq!(ap.reason.as_deref(), Some("DispatchFailed"));
    assert!(ap.message.unwrap_or_default().contains("`${region}` is not defined"));
    assert!(config_maps.get_opt("web-${region}").await.ok().flatten().is_none());
    assert!(ap.inventory.is_empty(), "nothing applied");
    // What each operation applies is fixed at creation and visible on it.
    let eu = world.operation("fleet", "eu").await;
    assert_eq!(eu.spec.manifests[0]["metadata"]["name"], "web-europe");
}
