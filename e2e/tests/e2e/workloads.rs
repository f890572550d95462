//! Real workloads: what baton reports follows what the cluster's own controllers report about
//! pods kwok runs. No status here is written by a test; the tests decide only what the
//! containers do (`baton_e2e::pods`).

use std::time::Duration;

use baton::crd::{ApplyPhase, FailurePolicy, OperationPhase};
use baton_e2e::{pods, wait_for};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

use super::support::{PATIENCE, World, app, failing_job, job, job_pods, spec};

/// A Deployment `web` of `replicas` pods running `image`, its pod template annotated with
/// `annotations`.
fn web(replicas: i32, image: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    })
}

async fn pods_of(world: &World, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(world.client.clone(), &world.ns.name);
    let list = api.list(&ListParams::default().labels(selector)).await.expect("listing pods");
    list.items.into_iter().filter(|pod| pod.metadata.deletion_timestamp.is_none()).collect()
}

fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

fn ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

/// When the last of `pods` became ready, as kwok reported it.
fn last_ready(pods: &[Pod]) -> Option<Timestamp> {
    pods.iter()
        .filter_map(|pod| condition(pod, "Ready")?.last_transition_time.as_ref())
        .map(|t| t.0)
        .max()
}

/// The operation's end is not before its pods were ready (both at the API server's second
/// precision).
async fn finished_after_ready(world: &World, apply: &str, operation: &str, pods: &[Pod]) {
    let completed = world
        .operation(apply, operation)
        .await
        .status
        .and_then(|s| s.completed_at)
        .map(|t| t.0)
        .expect("a completed operation has completedAt");
    let ready = last_ready(pods).expect("ready pods have a Ready transition time");
    assert!(
        completed.as_second() >= ready.as_second(),
        "`{operation}` completed at {completed}, before its last pod was ready at {ready}"
    );
}

#[tokio::test]
async fn a_rolling_update_succeeds_only_once_the_new_pods_are_ready() {
    let world = World::new("rolling").await;
    let ns = world.ns.name.clone();
    let deployments: Api<Deployment> = Api::namespaced(world.client.clone(), &ns);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(world.client.clone(), &ns);

    let v1 = web(3, "registry.invalid/web:1", json!({}));
    world.create("v1", spec(&ns, FailurePolicy::Halt, 1, vec![("web", v1)])).await;
    world.wait_apply_phase("v1", ApplyPhase::Succeeded).await;
    let status = deployments.get("web").await.expect("the Deployment").status.unwrap_or_default();
    assert_eq!(status.ready_replicas, Some(3), "v1 is rolled out by the controllers: {status:?}");
    let first_pods = pods_of(&world, &app("web")).await;
    assert_eq!(first_pods.iter().filter(|pod| ready(pod)).count(), 3);
    finished_after_ready(&world, "v1", "web", &first_pods).await;
    let old = replica_sets.list(&ListParams::default().labels(&app("web"))).await.expect("RS");
    let [old] = old.items.as_slice() else { panic!("one ReplicaSet for v1: {old:?}") };
    let old_name = old.metadata.name.clone().expect("a named ReplicaSet");

    // v2: a new image whose pods are not ready until released.
    let v2 = web(3, "registry.invalid/web:2", pods::template_annotations(pods::NOT_READY));
    world.create("v2", spec(&ns, FailurePolicy::Halt, 1, vec![("web", v2)])).await;
    world.wait_operation_phase("v2", "web", OperationPhase::Running).await;
    let new_name = wait_for("the new ReplicaSet to create a pod", PATIENCE, || {
        let replica_sets = replica_sets.clone();
        let old_name = old_name.clone();
        async move {
            let list = replica_sets.list(&ListParams::default().labels("app=web")).await.ok()?;
            list.items.into_iter().find_map(|rs| {
                let name = rs.metadata.name?;
                let started = rs.status.is_some_and(|s| s.replicas >= 1);
                (name != old_name && started).then_some(name)
            })
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = world.operation("v2", "web").await.status.expect("a status");
    assert_eq!(held.phase, OperationPhase::Running, "new pods are not ready: {held:?}");
    let old_now = replica_sets.get(&old_name).await.expect("the old ReplicaSet");
    assert_eq!(
        old_now.status.and_then(|s| s.ready_replicas),
        Some(3),
        "the old pods keep serving while the new ones are not ready"
    );

    // The containers come up one new pod after another, as the controller creates them.
    let operations = world.operations();
    pods::release_until(&world.client, &ns, &app("web"), PATIENCE, || {
        let operations = operations.clone();
        async move {
            let op = operations.get("v2-web").await.ok();
            op.and_then(|op| op.status).is_some_and(|s| s.phase == OperationPhase::Succeeded)
        }
    })
    .await;
    world.wait_apply_phase("v2", ApplyPhase::Succeeded).await;

    let deployment = deployments.get("web").await.expect("the Deployment");
    let status = deployment.status.clone().unwrap_or_default();
    assert_eq!(status.observed_generation, deployment.metadata.generation, "{status:?}");
    for (what, value) in [
        ("replicas", status.replicas),
        ("updatedReplicas", status.updated_replicas),
        ("readyReplicas", status.ready_replicas),
        ("availableReplicas", status.available_replicas),
    ] {
        assert_eq!(value, Some(3), "{what} when the operation succeeded: {status:?}");
    }
    let new = replica_sets.get(&new_name).await.expect("the new ReplicaSet");
    assert_eq!(new.status.and_then(|s| s.ready_replicas), Some(3));
    let old = replica_sets.get(&old_name).await.expect("the old ReplicaSet");
    assert_eq!(old.spec.and_then(|s| s.replicas), Some(0), "the old ReplicaSet is scaled down");
    let new_pods: Vec<Pod> = pods_of(&world, &app("web"))
        .await
        .into_iter()
        .filter(|pod| {
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"))
                .is_some_and(|hash| new_name.ends_with(hash.as_str()))
        })
        .collect();
    assert_eq!(new_pods.iter().filter(|pod| ready(pod)).count(), 3, "{new_pods:?}");
    finished_after_ready(&world, "v2", "web", &new_pods).await;
}

#[tokio::test]
async fn a_deployment_whose_pods_never_become_ready_fails_at_its_progress_deadline() {
    let world = World::new("deadline").await;
    let ns = world.ns.name.clone();
    let mut stuck = web(2, "registry.invalid/web:1", pods::template_annotations(pods::NOT_READY));
    stuck["spec"]["progressDeadlineSeconds"] = json!(3);
    world.create("stuck", spec(&ns, FailurePolicy::Halt, 1, vec![("web", stuck)])).await;
    world.wait_apply_phase("stuck", ApplyPhase::Failed).await;

    let deployments: Api<Deployment> = Api::namespaced(world.client.clone(), &ns);
    let status = deployments.get("web").await.expect("the Deployment").status.unwrap_or_default();
    let progressing = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .expect("the controller's Progressing condition");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_deref()),
        ("False", Some("ProgressDeadlineExceeded"))
    );
    let controllers = progressing.message.unwrap_or_default();
    assert!(controllers.contains("has timed out progressing"), "{controllers}");

    let op = world.operation("stuck", "web").await.status.expect("a status");
    assert_eq!(op.reason.as_deref(), Some("Unhealthy"));
    let message = op.message.unwrap_or_default();
    assert!(
        message.contains("Deployment `web`")
            && message.contains("Progressing=False ProgressDeadlineExceeded")
            && message.contains(&controllers),
        "the operation quotes the deployment controller (`{controllers}`): {message}"
    );
    let running = pods_of(&world, &app("web")).await;
    assert_eq!(running.len(), 2, "the pods run, not ready: {running:?}");
    assert!(running.iter().all(|pod| !ready(pod)));
}

#[tokio::test]
async fn a_job_whose_pods_fail_reaches_its_backoff_limit_and_fails_the_operation() {
    let world = World::new("backoff").await;
    let ns = world.ns.name.clone();
    // backoffLimit 1: two pods fail, the second after the Job controller's 10 s back-off.
    world
        .create(
            "migrate",
            spec(&ns, FailurePolicy::Halt, 1, vec![("db", failing_job("db-migrate", 1))]),
        )
        .await;
    let apply = world.wait_apply_phase("migrate", ApplyPhase::Failed).await;
    let error = apply.status.and_then(|s| s.error).expect("status.error");
    assert_eq!((error.operation.as_str(), error.reason.as_str()), ("db", "Unhealthy"));

    let jobs: Api<Job> = Api::namespaced(world.client.clone(), &ns);
    let status = jobs.get("db-migrate").await.expect("the Job").status.unwrap_or_default();
    assert_eq!(status.failed, Some(2), "both pods failed: {status:?}");
    let failed = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .expect("the Job controller's Failed condition");
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    let pods = pods_of(&world, &job_pods("db-migrate")).await;
    let phases: Vec<_> = pods.iter().filter_map(|p| p.status.as_ref()?.phase.clone()).collect();
    assert_eq!(phases, ["Failed", "Failed"], "{pods:?}");

    let op = world.operation("migrate", "db").await.status.expect("a status");
    assert_eq!(op.reason.as_deref(), Some("Unhealthy"));
    let message = op.message.unwrap_or_default();
    let controllers = failed.message.unwrap_or_default();
    assert!(
        message.contains("Job `db-migrate`")
            && message.contains("Failed=True BackoffLimitExceeded")
            && message.contains(&controllers),
        "the operation names the Job and quotes its controller (`{controllers}`): {message}"
    );
}

#[tokio::test]
async fn a_statefulset_a_daemonset_and_a_job_roll_out() {
    let world = World::new("kinds").await;
    let ns = world.ns.name.clone();
    let slow = json!({ pods::READY_AFTER: "1s" });
    let statefulset = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {
            "replicas": 2, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}, "annotations": slow},
                "spec": {"containers": [{"name": "db", "image": "registry.invalid/db:1"}]},
            },
        },
    });
    let daemonset = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}, "annotations": slow},
                "spec": {"containers": [{"name": "agent", "image": "registry.invalid/agent:1"}]},
            },
        },
    });
    let ops = vec![("db", statefulset), ("agent", daemonset), ("once", job("once"))];
    world.create("kinds", spec(&ns, FailurePolicy::Halt, 1, ops)).await;
    world.wait_apply_phase("kinds", ApplyPhase::Succeeded).await;

    let statefulsets: Api<StatefulSet> = Api::namespaced(world.client.clone(), &ns);
    let status = statefulsets.get("db").await.expect("the StatefulSet").status.unwrap_or_default();
    assert_eq!((status.ready_replicas, status.updated_replicas), (Some(2), Some(2)), "{status:?}");
    let db = pods_of(&world, &app("db")).await;
    let mut names: Vec<_> =
        db.iter().filter(|pod| ready(pod)).filter_map(|p| p.metadata.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1"], "the StatefulSet's pods, in order");
    finished_after_ready(&world, "kinds", "db", &db).await;

    let daemonsets: Api<DaemonSet> = Api::namespaced(world.client.clone(), &ns);
    let status = daemonsets.get("agent").await.expect("the DaemonSet").status.unwrap_or_default();
    assert!(status.desired_number_scheduled >= 1, "a pod per fake node: {status:?}");
    assert_eq!(status.number_ready, status.desired_number_scheduled, "{status:?}");
    assert_eq!(status.updated_number_scheduled, Some(status.desired_number_scheduled));
    let agents = pods_of(&world, &app("agent")).await;
    assert_eq!(agents.len() as i32, status.desired_number_scheduled);
    finished_after_ready(&world, "kinds", "agent", &agents).await;

    let jobs: Api<Job> = Api::namespaced(world.client.clone(), &ns);
    let status = jobs.get("once").await.expect("the Job").status.unwrap_or_default();
    assert_eq!(status.succeeded, Some(1), "{status:?}");
    let complete = status.conditions.unwrap_or_default();
    assert!(complete.iter().any(|c| c.type_ == "Complete" && c.status == "True"), "{complete:?}");
}
