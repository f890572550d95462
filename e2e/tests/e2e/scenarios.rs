//! The operator's scenarios, end to end: a real cluster, the operator as a process with its own
//! service account. Workloads are held (their pods run, not ready) until the test releases or
//! fails their pods, so each scenario decides when a step ends; the workload status baton reads
//! is always the controllers' own.

use std::time::Duration;

use baton::crd::{ApplyPhase, FailurePolicy, OperationPhase};
use baton_e2e::{Operator, TEST_LEASE_SECONDS, pods, wait_for};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;

use super::support::{PATIENCE, World, app, config_map, held_deployment, held_job, job_pods, spec};

/// A failed Job stays failed: the user deletes it (with its pods) before retrying.
async fn delete_job(world: &World, name: &str) {
    let jobs: Api<Job> = Api::namespaced(world.client.clone(), &world.ns.name);
    jobs.delete(name, &DeleteParams::foreground()).await.expect("deleting the Job");
    wait_for("the Job to be gone", PATIENCE, || {
        let jobs = jobs.clone();
        async move { jobs.get_opt(name).await.ok()?.is_none().then_some(()) }
    })
    .await;
}

fn running(phases: &[(String, OperationPhase, u32)]) -> Vec<String> {
    phases
        .iter()
        .filter(|(_, phase, _)| *phase == OperationPhase::Running)
        .map(|(name, _, _)| name.clone())
        .collect()
}

#[tokio::test]
async fn three_operations_run_strictly_in_order() {
    let world = World::new("order").await;
    let ns = world.ns.name.clone();
    let names = ["a", "b", "c"];
    let ops = names.iter().map(|n| (*n, held_deployment(&format!("web-{n}")))).collect();
    world.create("ordered", spec(&ns, FailurePolicy::Halt, 1, ops)).await;
    for (position, name) in names.iter().enumerate() {
        world.wait_operation_phase("ordered", name, OperationPhase::Running).await;
        let phases = world.phases("ordered").await;
        assert_eq!(running(&phases), vec![(*name).to_owned()], "only `{name}` runs: {phases:?}");
        for (later, phase, _) in &phases[position + 1..] {
            assert_eq!(*phase, OperationPhase::Pending, "`{later}` must wait for `{name}`");
        }
        pods::release(&world.client, &ns, &app(&format!("web-{name}"))).await;
        world.wait_operation_phase("ordered", name, OperationPhase::Succeeded).await;
    }
    let apply = world.wait_apply_phase("ordered", ApplyPhase::Succeeded).await;
    let status = apply.status.expect("a status");
    assert!(status.completed_at.is_some(), "completedAt is set");
    assert_eq!(status.progress, "3/3");
    let inventory =
        world.operation("ordered", "a").await.status.map(|s| s.inventory).unwrap_or_default();
    assert_eq!(inventory.len(), 1, "the operation records what it applied");
    assert_eq!((inventory[0].kind.as_str(), inventory[0].name.as_str()), ("Deployment", "web-a"));

    // The rollout's story is told once, on the Apply; each step's is in its Operation.
    let reasons: Vec<String> =
        world.events("ordered").await.into_iter().map(|(reason, _)| reason).collect();
    assert_eq!(reasons, ["RolloutSucceeded"], "no Event per successful step");
}

#[tokio::test]
async fn max_concurrent_two_over_five_never_runs_more_than_two() {
    let world = World::new("window").await;
    let ns = world.ns.name.clone();
    let names = ["a", "b", "c", "d", "e"];
    let ops = names.iter().map(|n| (*n, held_deployment(&format!("web-{n}")))).collect();
    world.create("window", spec(&ns, FailurePolicy::Halt, 2, ops)).await;
    let mut released = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while released < names.len() {
        assert!(tokio::time::Instant::now() < deadline, "the window stalled");
        let phases = world.phases("window").await;
        let now_running = running(&phases);
        assert!(now_running.len() <= 2, "more than two running: {phases:?}");
        // Started in index order: nothing Pending below a Running operation.
        if let Some(last) =
            phases.iter().rposition(|(_, phase, _)| *phase == OperationPhase::Running)
        {
            assert!(
                phases[..last].iter().all(|(_, phase, _)| *phase != OperationPhase::Pending),
                "{phases:?}"
            );
        }
        if let Some(first) = now_running.first() {
            pods::release(&world.client, &ns, &app(&format!("web-{first}"))).await;
            world.wait_operation_phase("window", first, OperationPhase::Succeeded).await;
            released += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    world.wait_apply_phase("window", ApplyPhase::Succeeded).await;
}

#[tokio::test]
async fn halt_stops_claiming_after_the_second_of_four_fails() {
    let world = World::new("halt").await;
    let ns = world.ns.name.clone();
    let ops = vec![
        ("a", config_map("a")),
        ("b", held_job("migrate")),
        ("c", config_map("c")),
        ("d", config_map("d")),
    ];
    world.create("halt", spec(&ns, FailurePolicy::Halt, 1, ops)).await;
    world.wait_operation_phase("halt", "b", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("migrate")).await;
    let apply = world.wait_apply_phase("halt", ApplyPhase::Failed).await;
    let error = apply.status.and_then(|s| s.error).expect("status.error");
    assert_eq!(
        (error.id.as_str(), error.operation.as_str(), error.reason.as_str()),
        ("b-1", "b", "Unhealthy")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let phases = world.phases("halt").await;
    assert_eq!(
        phases[2],
        ("c".to_owned(), OperationPhase::Pending, 0),
        "the third is never claimed"
    );
}

#[tokio::test]
async fn pause_waits_then_dismissal_by_id_retries_and_completes() {
    let world = World::new("pause").await;
    let ns = world.ns.name.clone();
    let ops = vec![
        ("a", config_map("a")),
        ("b", held_job("migrate")),
        ("c", config_map("c")),
        ("d", config_map("d")),
    ];
    world.create("pause", spec(&ns, FailurePolicy::Pause, 1, ops)).await;
    world.wait_operation_phase("pause", "b", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("migrate")).await;
    let paused = world.wait_apply_phase("pause", ApplyPhase::Paused).await;
    let id = paused.status.and_then(|s| s.error).map(|e| e.id).expect("an error id");
    assert_eq!(id, "b-1");
    // The user removes the failed Job (a failed Job stays failed), then dismisses the error.
    delete_job(&world, "migrate").await;
    world.patch_spec("pause", json!({"dismissError": id})).await;
    world.wait_operation_phase("pause", "b", OperationPhase::Running).await;
    pods::release(&world.client, &ns, &job_pods("migrate")).await;
    let done = world.wait_apply_phase("pause", ApplyPhase::Succeeded).await;
    let status = done.status.expect("a status");
    assert_eq!(status.last_dismissed_error.map(|d| d.id), Some("b-1".to_owned()));
    assert_eq!(
        world.operation("pause", "b").await.status.map(|s| s.attempt),
        Some(2),
        "the retry is attempt 2"
    );
}

#[tokio::test]
async fn continue_runs_siblings_past_a_failure_then_fails_the_verdict() {
    let world = World::new("continue").await;
    let ns = world.ns.name.clone();
    let ops = vec![
        ("a", config_map("a")),
        ("b", held_job("migrate")),
        ("c", held_deployment("web-c")),
        ("d", held_deployment("web-d")),
    ];
    world.create("cont", spec(&ns, FailurePolicy::Continue, 1, ops)).await;
    world.wait_operation_phase("cont", "b", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("migrate")).await;
    world.wait_operation_phase("cont", "c", OperationPhase::Running).await;
    // The parent status is written after the Operation writes of the same pass: wait for it.
    let applies = world.applies();
    let status = wait_for("the Apply to go on Degraded", PATIENCE, || {
        let applies = applies.clone();
        async move {
            let status = applies.get("cont").await.ok()?.status?;
            let degraded =
                status.conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "True");
            degraded.then_some(status)
        }
    })
    .await;
    assert_eq!(status.phase, Some(ApplyPhase::Running));
    pods::release(&world.client, &ns, &app("web-c")).await;
    world.wait_operation_phase("cont", "d", OperationPhase::Running).await;
    pods::release(&world.client, &ns, &app("web-d")).await;
    let failed = world.wait_apply_phase("cont", ApplyPhase::Failed).await;
    let status = failed.status.expect("a status");
    assert_eq!(status.error.map(|e| e.id), Some("b-1".to_owned()));
    assert!(status.message.contains("`b`"), "the message names the second: {}", status.message);
}

#[tokio::test]
async fn stop_while_the_first_of_five_runs_then_resume() {
    let world = World::new("stop").await;
    let ns = world.ns.name.clone();
    let names = ["a", "b", "c", "d", "e"];
    let ops = names.iter().map(|n| (*n, held_deployment(&format!("web-{n}")))).collect();
    world.create("stop", spec(&ns, FailurePolicy::Halt, 1, ops)).await;
    world.wait_operation_phase("stop", "a", OperationPhase::Running).await;
    world.patch_spec("stop", json!({"stop": true})).await;
    let stopped = world.wait_apply_phase("stop", ApplyPhase::Stopped).await;
    let status = stopped.status.expect("a status");
    assert!(status.stop.and_then(|s| s.completed_at).is_some(), "stop.completedAt is set");
    let phases = world.phases("stop").await;
    assert!(phases.iter().all(|(_, phase, _)| *phase == OperationPhase::Stopped), "{phases:?}");
    assert!(
        phases[1..].iter().all(|(_, _, attempt)| *attempt == 0),
        "nothing claimed after the stop: {phases:?}"
    );
    assert!(world.operation("stop", "a").await.status.and_then(|s| s.completed_at).is_none());

    world.patch_spec("stop", json!({"stop": false})).await;
    for name in names {
        world.wait_operation_phase("stop", name, OperationPhase::Running).await;
        pods::release(&world.client, &ns, &app(&format!("web-{name}"))).await;
        world.wait_operation_phase("stop", name, OperationPhase::Succeeded).await;
    }
    let done = world.wait_apply_phase("stop", ApplyPhase::Succeeded).await;
    assert!(done.status.and_then(|s| s.stop).is_none(), "status.stop is cleared by the resume");
}

#[tokio::test]
async fn stop_under_continue_after_a_failure_settles_failed() {
    let world = World::new("stopcont").await;
    let ns = world.ns.name.clone();
    let ops =
        vec![("a", held_job("migrate")), ("b", held_deployment("web-b")), ("c", config_map("c"))];
    world.create("sc", spec(&ns, FailurePolicy::Continue, 1, ops)).await;
    world.wait_operation_phase("sc", "a", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("migrate")).await;
    world.wait_operation_phase("sc", "b", OperationPhase::Running).await;
    world.patch_spec("sc", json!({"stop": true})).await;
    let settled = world.wait_apply_phase("sc", ApplyPhase::Failed).await;
    let status = settled.status.expect("a status");
    assert!(status.stop.and_then(|s| s.completed_at).is_some(), "the stop completes");
    let phases = world.phases("sc").await;
    assert_eq!(phases[1].1, OperationPhase::Stopped);
    assert_eq!(phases[2], ("c".to_owned(), OperationPhase::Stopped, 0));
}

#[tokio::test]
async fn stale_dismissal_changes_nothing_and_says_why() {
    let world = World::new("stale").await;
    let ns = world.ns.name.clone();
    world
        .create(
            "stale",
            spec(
                &ns,
                FailurePolicy::Halt,
                1,
                vec![("a", held_job("migrate")), ("b", config_map("b"))],
            ),
        )
        .await;
    world.wait_operation_phase("stale", "a", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("migrate")).await;
    world.wait_apply_phase("stale", ApplyPhase::Failed).await;
    world.patch_spec("stale", json!({"dismissError": "a-0"})).await;
    let applies = world.applies();
    let apply = wait_for("the DismissalRejected condition", PATIENCE, || {
        let applies = applies.clone();
        async move {
            let apply = applies.get("stale").await.ok()?;
            let rejected = apply
                .status
                .as_ref()?
                .conditions
                .iter()
                .any(|c| c.type_ == "DismissalRejected" && c.status == "True");
            rejected.then_some(apply)
        }
    })
    .await;
    let status = apply.status.expect("a status");
    assert_eq!(status.phase, Some(ApplyPhase::Failed));
    assert_eq!(status.error.map(|e| e.id), Some("a-1".to_owned()));
    assert_eq!(
        world.operation("stale", "a").await.status.map(|s| (s.phase, s.attempt)),
        Some((OperationPhase::Failed, 1))
    );
    let events = world.events("stale").await;
    assert!(
        events.iter().any(|(reason, note)| reason == "DismissalIgnored" && note.contains("a-0")),
        "{events:?}"
    );
}

#[tokio::test]
async fn dismissal_while_another_operation_runs_waits_until_it_settles() {
    let world = World::new("waitdismiss").await;
    let ns = world.ns.name.clone();
    let ops = vec![("a", held_job("migrate")), ("b", held_deployment("web-b"))];
    world.create("wd", spec(&ns, FailurePolicy::Halt, 2, ops)).await;
    world.wait_operation_phase("wd", "b", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("migrate")).await;
    world.wait_operation_phase("wd", "a", OperationPhase::Failed).await;
    delete_job(&world, "migrate").await;
    world.patch_spec("wd", json!({"dismissError": "a-1"})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        world.operation("wd", "a").await.status.map(|s| (s.phase, s.attempt)),
        Some((OperationPhase::Failed, 1)),
        "the dismissal waits while `b` runs"
    );
    pods::release(&world.client, &ns, &app("web-b")).await;
    world.wait_operation_phase("wd", "a", OperationPhase::Running).await;
    pods::release(&world.client, &ns, &job_pods("migrate")).await;
    let done = world.wait_apply_phase("wd", ApplyPhase::Succeeded).await;
    assert_eq!(
        done.status.and_then(|s| s.last_dismissed_error).map(|d| d.id),
        Some("a-1".to_owned())
    );
    assert_eq!(world.operation("wd", "a").await.status.map(|s| s.attempt), Some(2));
}

#[tokio::test]
async fn dispatch_failures_are_failed_with_the_api_servers_message() {
    let world = World::new("dispatch").await;
    let ns = world.ns.name.clone();
    let forbidden = baton_e2e::TestNamespace::create(&world.client, "forbidden").await;
    let invalid =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Valid_Name"}});
    let unknown = json!({"apiVersion": "widgets.example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    let mut spec = spec(
        &ns,
        FailurePolicy::Continue,
        1,
        vec![("invalid", invalid), ("unknown", unknown), ("forbidden", config_map("cm"))],
    );
    spec.operations[2].target.namespace = forbidden.name.clone();
    world.create("df", spec).await;
    world.wait_apply_phase("df", ApplyPhase::Failed).await;
    for (operation, expected) in
        [("invalid", "invalid"), ("unknown", "Widget"), ("forbidden", "forbidden")]
    {
        let status = world.operation("df", operation).await.status.expect("a status");
        assert_eq!(status.phase, OperationPhase::Failed, "{operation}");
        assert_eq!(status.reason.as_deref(), Some("DispatchFailed"), "{operation}");
        let message = status.message.unwrap_or_default();
        assert!(message.contains(expected), "{operation}: `{message}` lacks `{expected}`");
    }
    let cms: Api<ConfigMap> = Api::namespaced(world.client.clone(), &forbidden.name);
    assert!(
        cms.get_opt("cm").await.expect("reading").is_none(),
        "nothing is created where RBAC forbids it"
    );
}

#[tokio::test]
async fn timeout_fails_the_operation() {
    let world = World::new("timeout").await;
    let ns = world.ns.name.clone();
    let mut spec =
        spec(&ns, FailurePolicy::Halt, 1, vec![("slow", held_deployment("never-ready"))]);
    spec.operations[0].timeout = "2s".to_owned();
    world.create("to", spec).await;
    world.wait_apply_phase("to", ApplyPhase::Failed).await;
    let status = world.operation("to", "slow").await.status.expect("a status");
    assert_eq!(status.reason.as_deref(), Some("Timeout"));
}

#[tokio::test]
async fn failing_job_is_unhealthy_and_named() {
    let world = World::new("job").await;
    let ns = world.ns.name.clone();
    world
        .create("jf", spec(&ns, FailurePolicy::Halt, 1, vec![("migrate", held_job("db-migrate"))]))
        .await;
    world.wait_operation_phase("jf", "migrate", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("db-migrate")).await;
    world.wait_apply_phase("jf", ApplyPhase::Failed).await;
    let status = world.operation("jf", "migrate").await.status.expect("a status");
    assert_eq!(status.reason.as_deref(), Some("Unhealthy"));
    let message = status.message.unwrap_or_default();
    assert!(message.contains("Job `db-migrate`"), "the message names the Job: {message}");
}

#[tokio::test]
async fn killed_operator_resumes_the_running_operation_in_the_same_attempt() {
    let mut world = World::new("crash").await;
    let ns = world.ns.name.clone();
    world
        .create(
            "crash",
            spec(
                &ns,
                FailurePolicy::Halt,
                1,
                vec![("a", held_deployment("web-a")), ("b", config_map("b"))],
            ),
        )
        .await;
    world.wait_operation_phase("crash", "a", OperationPhase::Running).await;
    world.operator.kill();
    let replacement = Operator::start(&world.client, &ns).await;
    pods::release(&world.client, &ns, &app("web-a")).await;
    let applies = world.applies();
    wait_for(
        "the replacement to finish the rollout",
        PATIENCE + Duration::from_secs(TEST_LEASE_SECONDS),
        || {
            let applies = applies.clone();
            async move {
                (applies.get("crash").await.ok()?.status?.phase == Some(ApplyPhase::Succeeded))
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        world.operation("crash", "a").await.status.map(|s| s.attempt),
        Some(1),
        "same attempt"
    );
    let events = world.events("crash").await;
    assert!(events.iter().any(|(reason, _)| reason == "OperationTakenOver"), "{events:?}");
    drop(replacement);
}

#[tokio::test]
async fn two_replicas_share_twenty_applies_without_double_claims() {
    let world = World::new("replicas").await;
    let ns = world.ns.name.clone();
    let second = Operator::start(&world.client, &ns).await;
    for index in 0..20 {
        let name = format!("r{index}");
        let ops =
            vec![("a", config_map(&format!("{name}-a"))), ("b", config_map(&format!("{name}-b")))];
        world.create(&name, spec(&ns, FailurePolicy::Halt, 1, ops)).await;
    }
    for index in 0..20 {
        world.wait_apply_phase(&format!("r{index}"), ApplyPhase::Succeeded).await;
    }
    for index in 0..20 {
        let name = format!("r{index}");
        for (operation, phase, attempt) in world.phases(&name).await {
            assert_eq!(
                (phase, attempt),
                (OperationPhase::Succeeded, 1),
                "{name}/{operation} claimed more than once"
            );
        }
    }
    drop(second);
}

#[tokio::test]
async fn metrics_and_probes_are_served() {
    let world = World::new("metrics").await;
    let ns = world.ns.name.clone();
    let admin = world.operator.admin;
    wait_for("/readyz to answer 200", PATIENCE, || async move {
        matches!(baton_e2e::http_get(admin, "/readyz").await, Some((200, _))).then_some(())
    })
    .await;
    assert_eq!(baton_e2e::http_get(admin, "/healthz").await.map(|(code, _)| code), Some(200));
    world.create("m", spec(&ns, FailurePolicy::Halt, 1, vec![("a", config_map("a"))])).await;
    world.wait_apply_phase("m", ApplyPhase::Succeeded).await;
    let (code, body) = baton_e2e::http_get(admin, "/metrics").await.expect("/metrics answers");
    assert_eq!(code, 200);
    for metric in [
        "baton_reconciles_total{controller=\"apply\"}",
        "baton_reconcile_duration_seconds_bucket",
        "baton_claims_won_total 1",
        "baton_operation_transitions_total{phase=\"Succeeded\"} 1",
        "baton_lease_acquisitions_total",
        "baton_operations{phase=\"Succeeded\"} 1",
    ] {
        assert!(body.contains(metric), "/metrics lacks `{metric}`:\n{body}");
    }
}
