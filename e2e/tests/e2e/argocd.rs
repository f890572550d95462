//! The Argo CD health check against statuses a running operator wrote.

use baton::crd::{ApplyPhase, FailurePolicy, OperationPhase};
use baton_e2e::argocd::health_of_json;
use baton_e2e::pods;
use serde_json::json;

use super::support::{World, config_map, held_deployment, held_job, job_pods, spec};

#[tokio::test]
async fn argocd_health_reads_the_statuses_the_operator_writes() {
    let world = World::new("argocd").await;
    let ns = world.ns.name.clone();
    world.create("healthy", spec(&ns, FailurePolicy::Halt, 1, vec![("a", config_map("a"))])).await;
    world
        .create("broken", spec(&ns, FailurePolicy::Halt, 1, vec![("a", held_job("broken"))]))
        .await;
    world
        .create("paused", spec(&ns, FailurePolicy::Pause, 1, vec![("a", held_job("paused"))]))
        .await;
    world
        .create("stopped", spec(&ns, FailurePolicy::Halt, 1, vec![("a", held_deployment("held"))]))
        .await;
    world
        .create("running", spec(&ns, FailurePolicy::Halt, 1, vec![("a", held_deployment("slow"))]))
        .await;
    world.wait_operation_phase("broken", "a", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("broken")).await;
    world.wait_operation_phase("paused", "a", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("paused")).await;
    world.wait_operation_phase("stopped", "a", OperationPhase::Running).await;
    world.patch_spec("stopped", json!({"stop": true})).await;
    world.wait_operation_phase("running", "a", OperationPhase::Running).await;

    let expected = [
        ("healthy", ApplyPhase::Succeeded, "Healthy"),
        ("broken", ApplyPhase::Failed, "Degraded"),
        ("paused", ApplyPhase::Paused, "Suspended"),
        ("stopped", ApplyPhase::Stopped, "Suspended"),
        ("running", ApplyPhase::Running, "Progressing"),
    ];
    for (name, phase, health) in expected {
        let apply = world.wait_apply_phase(name, phase).await;
        let object = serde_json::to_value(&apply).expect("the Apply serializes");
        let verdict = health_of_json(&object);
        assert_eq!(verdict.status, health, "{name} ({phase:?}): {verdict:?}");
        let message = apply.status.map(|s| s.message).unwrap_or_default();
        assert_eq!(verdict.message, message, "{name}: the health message is the Apply's");
    }
}
