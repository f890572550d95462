//! Lifecycle edges met from outside the operator: a namespace deleted under running, settled
//! and waiting rollouts; a dismissal made while stopped; Operations deleted and statuses edited
//! by hand, with baton's admission policy (refused) and without it (a break-glass namespace:
//! the outcome the README's Decisions describe, and never a step run twice).

use std::time::Duration;

use baton::crd::{ApplyPhase, DedupOn, FailurePolicy, Operation, OperationPhase};
use baton_e2e::{TestNamespace, admin_client, pods, policy, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::support::{
    PATIENCE, World, config_map, failing_job, held_deployment, held_job, job_pods, spec,
};

#[tokio::test]
async fn deleting_a_namespace_under_running_settled_and_waiting_applies_finishes() {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "nsdel").await;
    let world = World::new_in(client.clone(), ns, &[]).await;
    let name = world.ns.name.clone();
    world.create("done", spec(&name, FailurePolicy::Halt, 1, vec![("a", config_map("a"))])).await;
    let web = held_deployment("web");
    world.create("run", spec(&name, FailurePolicy::Halt, 1, vec![("a", web)])).await;
    let mut keyed = spec(&name, FailurePolicy::Halt, 1, vec![("a", held_deployment("api"))]);
    keyed.idempotency_key = Some("release-7".into());
    keyed.dedup_on = DedupOn::Success;
    world.create("first", keyed.clone()).await;
    world.wait_operation_phase("first", "a", OperationPhase::Running).await;
    world.create("second", keyed).await;
    world.wait_apply_phase("done", ApplyPhase::Succeeded).await;
    world.wait_operation_phase("run", "a", OperationPhase::Running).await;
    let second = world.wait_apply_phase("second", ApplyPhase::Pending).await;
    let message = second.status.map(|s| s.message).unwrap_or_default();
    assert!(message.contains("`first`"), "waits for the key's holder: {message}");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(&name, &DeleteParams::background()).await.expect("deleting the namespace");
    wait_for("the namespace to be gone", Duration::from_secs(30), || {
        let namespaces = namespaces.clone();
        let name = name.clone();
        async move { namespaces.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;

    let log = std::fs::read_to_string(&world.operator.log).unwrap_or_default();
    let complaints: Vec<&str> =
        log.lines().filter(|line| line.contains("WARN") || line.contains("ERROR")).collect();
    assert!(complaints.is_empty(), "the operator complained:\n{}", complaints.join("\n"));
    let let_go = log.lines().filter(|line| line.contains("letting the Apply go")).count();
    // At most one line per Apply, not a loop: `second` may take the key, and so start, in the
    // moment between `first`'s deletion and its own.
    assert!(let_go <= 4, "one line per started Apply, not a loop: {let_go}");
}

#[tokio::test]
async fn a_dismissal_while_stopped_resets_the_failure_and_a_resume_runs_it() {
    let world = World::new("stopdismiss").await;
    let ns = world.ns.name.clone();
    let operations = vec![("migrate", held_job("db-migrate")), ("b", config_map("b"))];
    world.create("sd", spec(&ns, FailurePolicy::Pause, 1, operations)).await;
    world.wait_operation_phase("sd", "migrate", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("db-migrate")).await;
    world.wait_apply_phase("sd", ApplyPhase::Paused).await;
    world.patch_spec("sd", json!({"stop": true})).await;
    world.wait_apply_phase("sd", ApplyPhase::Failed).await;

    world.patch_spec("sd", json!({"dismissError": "migrate-1"})).await;
    let stopped = world.wait_apply_phase("sd", ApplyPhase::Stopped).await;
    let status = stopped.status.expect("a status");
    assert_eq!(status.error, None, "the dismissal applied while stopped");
    assert_eq!(status.last_dismissed_error.map(|d| d.id), Some("migrate-1".into()));
    let parked = world.operation("sd", "migrate").await.status.expect("a status");
    assert_eq!(parked.phase, OperationPhase::Stopped, "the standing stop parks what was reset");

    world.patch_spec("sd", json!({"stop": false})).await;
    // The Job stays failed, so the second run fails at once: its attempt is what tells.
    let operations = world.operations();
    wait_for("the resume to run the dismissed step again", PATIENCE, || {
        let operations = operations.clone();
        async move {
            let attempt = operations.get("sd-migrate").await.ok()?.status?.attempt;
            (attempt == 2).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn hand_edits_of_baton_records_are_refused_by_the_admission_policy() {
    hand_edits(true).await;
}

#[tokio::test]
async fn without_the_policy_hand_edits_are_records_and_no_step_runs_twice() {
    hand_edits(false).await;
}

/// The hand edits, in one world: refused with the policy, followed as records without.
async fn hand_edits(protected: bool) {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, if protected { "guarded" } else { "glass" }).await;
    if !protected {
        policy::break_glass(&client, &ns.name).await;
    }
    let world = World::new_in(client.clone(), ns, &[]).await;
    let name = world.ns.name.clone();
    let one = |step: &str, manifest| spec(&name, FailurePolicy::Halt, 1, vec![(step, manifest)]);

    // A settled rollout, a failed one with a standing dismissal, a running one, one to edit.
    world.create("settled", one("a", config_map("settled-a"))).await;
    world.create("failing", one("a", failing_job("failing-job", 0))).await;
    world.create("running", one("a", held_deployment("running-web"))).await;
    let two = vec![("a", held_deployment("edited-web")), ("b", config_map("edited-b"))];
    world.create("edited", spec(&name, FailurePolicy::Halt, 1, two)).await;
    world.wait_apply_phase("settled", ApplyPhase::Succeeded).await;
    world.wait_apply_phase("failing", ApplyPhase::Failed).await;
    world.patch_spec("failing", json!({"dismissError": "a-1"})).await;
    // The Job stays failed: the retry fails again, as a new error.
    let failed_again = wait_error(&world, "failing", "a-2").await;
    assert_eq!(failed_again, "a-2");
    world.wait_operation_phase("running", "a", OperationPhase::Running).await;
    world.wait_operation_phase("edited", "a", OperationPhase::Running).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
    let applied = config_maps.get("settled-a").await.expect("the settled step's ConfigMap");

    if protected {
        let refusal = policy::wait_until_enforced(&client, &name, "settled-a").await;
        assert!(refusal.contains("break glass"), "the refusal says how to break glass: {refusal}");
    }
    let operations = world.operations();
    let deleted = |object: &'static str| {
        let operations = operations.clone();
        async move { operations.delete(object, &DeleteParams::default()).await.map(|_| ()) }
    };
    let edits = [
        deleted("settled-a").await,
        deleted("failing-a").await,
        deleted("running-a").await,
        edit_status(&operations, "edited-b", "Succeeded").await,
        edit_status(&operations, "edited-a", "Failed").await,
    ];
    // A healthy rollout beside them completes either way.
    world.create("healthy", one("a", config_map("healthy-a"))).await;
    world.wait_apply_phase("healthy", ApplyPhase::Succeeded).await;

    if protected {
        for edit in &edits {
            assert!(
                matches!(edit, Err(kube::Error::Api(status)) if status.code == 403),
                "refused: {edit:?}"
            );
        }
        assert_eq!(
            world.apply("settled").await.status.and_then(|s| s.phase),
            Some(ApplyPhase::Succeeded)
        );
        return;
    }
    for edit in &edits {
        assert!(edit.is_ok(), "accepted in a break-glass namespace: {edit:?}");
    }
    // Deleted after it ran: back as a Lost record, and its step is not run again.
    let settled = world.wait_apply_phase("settled", ApplyPhase::Failed).await;
    let error = settled.status.and_then(|s| s.error).expect("the lost step is the error");
    assert_eq!(error.reason, "Lost");
    assert!(error.id.starts_with("a-0-"), "a recreated record's id is its own: {}", error.id);
    let now = config_maps.get("settled-a").await.expect("the ConfigMap stays");
    assert_eq!(now.metadata.resource_version, applied.metadata.resource_version, "no second run");

    // Deleted under a standing dismissal: a new error with a new id, not dismissed by the old.
    let failing = wait_lost(&world, "failing").await;
    assert_ne!(failing, "a-1");
    assert_ne!(failing, "a-2");
    let record = world.operation("failing", "a").await.status.expect("a status");
    assert_eq!(record.phase, OperationPhase::Failed, "the standing dismissError is not applied");

    // Deleted while running: a Lost record, the rollout fails (Halt).
    wait_lost(&world, "running").await;

    // A pending step marked Succeeded by hand is skipped (never applied); a running one marked
    // Failed fails the rollout.
    let edited = world.wait_apply_phase("edited", ApplyPhase::Failed).await;
    assert_eq!(edited.status.and_then(|s| s.error).map(|e| e.operation), Some("a".into()));
    assert!(config_maps.get_opt("edited-b").await.expect("reading").is_none(), "b never ran");
}

async fn edit_status(operations: &Api<Operation>, object: &str, phase: &str) -> kube::Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"phase": phase, "completedAt": now, "reason": "EditedByHand"}});
    operations
        .patch_status(object, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Waits until the Apply's error is `id`; returns it.
async fn wait_error(world: &World, apply: &str, id: &str) -> String {
    let applies = world.applies();
    wait_for(&format!("Apply `{apply}` to stand on error `{id}`"), PATIENCE, || {
        let applies = applies.clone();
        async move {
            let error = applies.get(apply).await.ok()?.status?.error?;
            (error.id == id).then_some(error.id)
        }
    })
    .await
}

/// Waits until the Apply fails on a `Lost` record; returns its error id.
async fn wait_lost(world: &World, apply: &str) -> String {
    let applies = world.applies();
    wait_for(&format!("Apply `{apply}` to fail on a Lost record"), PATIENCE, || {
        let applies = applies.clone();
        async move {
            let status = applies.get(apply).await.ok()?.status?;
            let error = status.error?;
            (status.phase == Some(ApplyPhase::Failed) && error.reason == "Lost").then_some(error.id)
        }
    })
    .await
}
