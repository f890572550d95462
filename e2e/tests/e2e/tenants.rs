//! What a tenant writes must not own the operator (SPEC.md sections 1 and 8): an Operation
//! forged to pose as a step of someone's rollout is never applied and is reported, and values
//! that multiply into a gigabyte fail their operation at once, final, without the operator's
//! memory following them.

use std::time::{Duration, Instant};

use baton::crd::{ApplyPhase, FailurePolicy, Operation, OperationPhase};
use baton_e2e::{TestNamespace, admin_client, pods, policy, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::support::{PATIENCE, World, app, config_map, held_deployment, spec};

/// The Operation a tenant forges while `r` runs: named outside the Apply's scheme, controlled
/// by `r`'s uid, a copy of a real child's spec with other manifests.
fn forged(
    apply: &baton::crd::Apply,
    copy_of: &Operation,
    manifest: serde_json::Value,
) -> Operation {
    let mut spec = copy_of.spec.clone();
    spec.manifests = vec![manifest];
    let mut forged = Operation::new(&format!("{}-zz-forged", apply.name_any()), spec);
    forged.metadata.owner_references = apply.controller_owner_ref(&()).map(|owner| vec![owner]);
    forged
}

#[tokio::test]
async fn a_forged_operation_is_refused_at_admission_and_never_applied_without_the_policy() {
    let client = admin_client().await;
    // Without the policy (a break-glass namespace) the operator is the last line.
    let ns = TestNamespace::create(&client, "forged").await;
    policy::break_glass(&client, &ns.name).await;
    let world = World::new_in(client.clone(), ns, &[]).await;
    let name = world.ns.name.clone();
    let steps = vec![("a", held_deployment("forged-web")), ("b", config_map("real-b"))];
    let apply = world.create("r", spec(&name, FailurePolicy::Halt, 1, steps)).await;
    world.wait_operation_phase("r", "a", OperationPhase::Running).await;
    let b = world.operation("r", "b").await;
    let evil = config_map("forged-cm");
    let operations = world.operations();
    operations
        .create(&PostParams::default(), &forged(&apply, &b, evil.clone()))
        .await
        .expect("creating the forged Operation where no policy guards");

    // The Apply says so, on its status and in an Event.
    let said = wait_for("the Apply to report the forged Operation", PATIENCE, || {
        let applies = world.applies();
        async move {
            let status = applies.get("r").await.ok()?.status?;
            let condition =
                status.conditions.into_iter().find(|c| c.type_ == "ForeignOperations")?;
            (condition.status == "True").then_some(condition.message)
        }
    })
    .await;
    assert!(said.contains("`r-zz-forged`") && said.contains("never run"), "{said}");
    let events = world.events("r").await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "ForeignOperations" && note.contains("r-zz-forged")),
        "an Event names it: {events:?}"
    );

    // The rollout goes on with its own steps, and the forged manifests are never applied.
    pods::release(&world.client, &name, &app("forged-web")).await;
    world.wait_apply_phase("r", ApplyPhase::Succeeded).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(world.client.clone(), &name);
    assert!(config_maps.get_opt("real-b").await.expect("reading").is_some());
    assert!(config_maps.get_opt("forged-cm").await.expect("reading").is_none(), "never applied");
    let untouched = operations.get("r-zz-forged").await.expect("the forged Operation");
    let phase = untouched.status.map(|status| (status.phase, status.attempt));
    assert_eq!(phase, Some((OperationPhase::Pending, 0)), "never claimed");

    // With the policy, a tenant cannot create it at all.
    let guarded = TestNamespace::create(&client, "guarded-forge").await;
    let guarded_world = World::new_in(client.clone(), guarded, &[]).await;
    let gns = guarded_world.ns.name.clone();
    let steps = vec![("a", held_deployment("guarded-web")), ("b", config_map("guarded-b"))];
    let apply = guarded_world.create("r", spec(&gns, FailurePolicy::Halt, 1, steps)).await;
    guarded_world.wait_operation_phase("r", "a", OperationPhase::Running).await;
    let b = guarded_world.operation("r", "b").await;
    let refused = guarded_world
        .operations()
        .create(&PostParams::default(), &forged(&apply, &b, evil))
        .await
        .expect_err("the policy refuses a hand-made Operation");
    let message = refused.to_string();
    assert!(message.contains("may create an Operation"), "{message}");
}

/// The operator's peak resident memory (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::test]
async fn values_that_multiply_past_the_limit_fail_at_once_and_stay_failed() {
    let world = World::new("valuesbomb").await;
    let ns = world.ns.name.clone();
    // 10 KB behind `${v}`, used 60,000 times: a 240 KB Apply that would expand to 600 MB.
    let bomb = json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bomb"},
        "data": {"big": "${v}".repeat(60_000)},
    });
    let mut rollout = spec(&ns, FailurePolicy::Halt, 1, vec![("a", bomb)]);
    rollout.operations[0].values = [("v".to_owned(), "x".repeat(10_000))].into();
    let started = Instant::now();
    world.create("bomb", rollout).await;
    let failed = world.wait_apply_phase("bomb", ApplyPhase::Failed).await;
    let took = started.elapsed();
    let error = failed.status.and_then(|status| status.error).expect("an error");
    assert_eq!(error.reason, "DispatchFailed");
    assert!(error.message.contains("exceed") && error.message.contains("1048576"), "{error:?}");
    let op = world.operation("bomb", "a").await;
    let kept = serde_json::to_vec(&op.spec.manifests).map_or(0, |bytes| bytes.len());
    assert!(kept < 300_000, "the Operation keeps the manifests as written: {kept} bytes");

    // Final: the same input is not tried again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = world.operation("bomb", "a").await.status.expect("a status");
    assert_eq!((status.phase, status.attempt), (OperationPhase::Failed, 1), "not retried");
    let config_maps: Api<ConfigMap> = Api::namespaced(world.client.clone(), &ns);
    assert!(config_maps.get_opt("bomb").await.expect("reading").is_none());

    let peak = peak_rss_mib(world.operator.pid());
    println!("values bomb: failed in {took:.2?}; operator peak RSS {peak:.1} MiB");
    assert!(peak > 0.0 && peak < 150.0, "peak RSS {peak:.1} MiB");
}
