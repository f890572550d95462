//! An API server outage in the middle of ten rollouts. A binary of its own: it takes the API
//! server away, which no other test should see.

#[path = "e2e/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use baton::crd::{ApplyPhase, FailurePolicy, OperationPhase};
use baton_e2e::{pods, restart_apiserver, wait_for};
use serde_json::json;

use support::{
    World, all_operations, app, check_single_attempts, config_map, deployment_with,
    held_deployment, spec,
};

#[tokio::test]
async fn rollouts_survive_an_api_server_outage_without_an_operator_restart() {
    if baton_e2e::cluster().state.is_none() {
        eprintln!(
            "skipped: the API server of an existing cluster cannot be restarted by the tests"
        );
        return;
    }
    let world = World::new("outage").await;
    let ns = world.ns.name.clone();
    // Rollouts slow enough to be under way when the API server goes away.
    let slow = json!({ pods::READY_AFTER: "3s" });
    for index in 0..10 {
        let name = format!("o{index}");
        let ops = vec![
            ("a", config_map(&format!("{name}-a"))),
            ("b", deployment_with(&format!("{name}-b"), slow.clone())),
            ("c", config_map(&format!("{name}-c"))),
        ];
        world.create(&name, spec(&ns, FailurePolicy::Halt, 1, ops)).await;
    }
    // Rollouts that wait, through the outage, on Deployments released only after it: they end
    // only if their health watches came back (the safety re-read is a minute away).
    for index in 0..3 {
        let name = format!("h{index}");
        let ops = vec![("a", held_deployment(&name))];
        world.create(&name, spec(&ns, FailurePolicy::Halt, 1, ops)).await;
    }
    world.wait_operation_phase("o0", "b", OperationPhase::Running).await;
    for index in 0..3 {
        world.wait_operation_phase(&format!("h{index}"), "a", OperationPhase::Running).await;
    }
    let outage = Instant::now();
    assert!(restart_apiserver(Duration::from_secs(10)).await, "the API server restarts");
    let back = outage.elapsed();
    for index in 0..3 {
        pods::release(&world.client, &ns, &app(&format!("h{index}"))).await;
    }
    let released = Instant::now();
    for index in 0..3 {
        let name = format!("h{index}");
        let applies = world.applies();
        // The cluster's own controllers (and kwok) recover from the outage with their own
        // backoff before the released pods are reported ready: the bound is generous.
        wait_for(&format!("{name} to succeed once released"), Duration::from_secs(90), || {
            let applies = applies.clone();
            let name = name.clone();
            async move {
                (applies.get(&name).await.ok()?.status?.phase == Some(ApplyPhase::Succeeded))
                    .then_some(())
            }
        })
        .await;
    }
    let held_done = released.elapsed();
    for index in 0..10 {
        let name = format!("o{index}");
        let applies = world.applies();
        wait_for(&format!("{name} to succeed after the outage"), Duration::from_secs(120), || {
            let applies = applies.clone();
            let name = name.clone();
            async move {
                (applies.get(&name).await.ok()?.status?.phase == Some(ApplyPhase::Succeeded))
                    .then_some(())
            }
        })
        .await;
    }
    let operations = all_operations(&world.client, &ns).await;
    let attempts = check_single_attempts(&operations);
    println!(
        "API server outage: down for {:.1}s (10s stopped), 10 rollouts of 3 operations all Succeeded {:.1}s after it came back; 3 held through it Succeeded {:.1}s after their release; runs repeated: {}",
        back.as_secs_f64(),
        outage.elapsed().as_secs_f64() - back.as_secs_f64(),
        held_done.as_secs_f64(),
        attempts.len()
    );
    assert!(attempts.is_empty(), "{}", attempts.join("\n"));
}
