//! Idempotency keys and deletion, end to end (SPEC.md section 7; the finalizer).

use std::time::Duration;

use baton::crd::{ApplyPhase, DedupOn, FailurePolicy, OperationPhase};
use baton_e2e::{Operator, TestNamespace, admin_client, pods, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

use super::support::{PATIENCE, World, config_map, held_deployment, held_job, job_pods, spec};

fn keyed(
    ns: &str,
    key: &str,
    dedup_on: DedupOn,
    ops: Vec<(&str, serde_json::Value)>,
) -> baton::crd::ApplySpec {
    let mut spec = spec(ns, FailurePolicy::Halt, 1, ops);
    spec.idempotency_key = Some(key.to_owned());
    spec.dedup_on = dedup_on;
    spec
}

/// Waits until the key Leases' states are `states` (the key is written just after the status).
async fn wait_key_states(world: &World, states: &[&str]) {
    let wanted: Vec<Option<String>> = states.iter().map(|s| Some((*s).to_owned())).collect();
    wait_for(&format!("the idempotency key to be {states:?}"), PATIENCE, || {
        let wanted = wanted.clone();
        async move {
            let seen: Vec<Option<String>> = key_leases(world).await.iter().map(key_state).collect();
            (seen == wanted).then_some(())
        }
    })
    .await;
}

async fn key_leases(world: &World) -> Vec<Lease> {
    let leases: Api<Lease> = Api::namespaced(world.client.clone(), &world.ns.name);
    let all = leases.list(&ListParams::default()).await.expect("listing leases").items;
    all.into_iter()
        .filter(|lease| {
            lease.metadata.name.as_deref().is_some_and(|n| n.starts_with("baton-idem-"))
        })
        .collect()
}

fn key_state(lease: &Lease) -> Option<String> {
    lease.metadata.annotations.as_ref()?.get("baton.dev/key-state").cloned()
}

#[tokio::test]
async fn a_second_apply_with_a_succeeded_key_is_skipped_and_names_the_first() {
    let world = World::new("keydone").await;
    let ns = world.ns.name.clone();
    world
        .create("first", keyed(&ns, "release-42", DedupOn::Success, vec![("a", config_map("a"))]))
        .await;
    world.wait_apply_phase("first", ApplyPhase::Succeeded).await;
    wait_key_states(&world, &["Succeeded"]).await;

    world
        .create("again", keyed(&ns, "release-42", DedupOn::Success, vec![("a", config_map("a"))]))
        .await;
    let skipped = world.wait_apply_phase("again", ApplyPhase::Skipped).await;
    let message = skipped.status.map(|s| s.message).unwrap_or_default();
    assert!(message.contains("`first`"), "the Skipped message names the first Apply: {message}");
    assert_eq!(
        world.phases("again").await[0],
        ("a".to_owned(), OperationPhase::Pending, 0),
        "nothing ran"
    );
}

#[tokio::test]
async fn a_duplicate_waits_while_the_first_is_live_and_proceeds_at_once_when_it_fails() {
    let world = World::new("keywait").await;
    let ns = world.ns.name.clone();
    world
        .create(
            "first",
            keyed(&ns, "release-7", DedupOn::Success, vec![("a", held_job("migrate"))]),
        )
        .await;
    world.wait_operation_phase("first", "a", OperationPhase::Running).await;
    world
        .create(
            "second",
            keyed(&ns, "release-7", DedupOn::Success, vec![("a", config_map("second-a"))]),
        )
        .await;
    let applies = world.applies();
    let waiting = wait_for("the duplicate to wait with DuplicateInFlight", PATIENCE, || {
        let applies = applies.clone();
        async move {
            let apply = applies.get("second").await.ok()?;
            let status = apply.status.clone()?;
            let duplicate = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Reconciling" && c.reason == "DuplicateInFlight");
            (status.phase == Some(ApplyPhase::Pending) && duplicate).then_some(status)
        }
    })
    .await;
    assert!(waiting.message.contains("`first`"), "{}", waiting.message);
    pods::fail(&world.client, &ns, &job_pods("migrate")).await;
    world.wait_apply_phase("first", ApplyPhase::Failed).await;
    world.wait_apply_phase("second", ApplyPhase::Succeeded).await;
}

#[tokio::test]
async fn under_dedup_on_any_a_failed_run_counts_as_done() {
    let world = World::new("keyany").await;
    let ns = world.ns.name.clone();
    world
        .create("first", keyed(&ns, "release-9", DedupOn::Any, vec![("a", held_job("migrate"))]))
        .await;
    world.wait_operation_phase("first", "a", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("migrate")).await;
    world.wait_apply_phase("first", ApplyPhase::Failed).await;
    wait_key_states(&world, &["Failed"]).await;
    world
        .create("again", keyed(&ns, "release-9", DedupOn::Any, vec![("a", config_map("a"))]))
        .await;
    world.wait_apply_phase("again", ApplyPhase::Skipped).await;
}

#[tokio::test]
async fn a_key_whose_holder_stopped_renewing_is_taken_over_after_the_ttl() {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "keyttl").await;
    let mut world = World::new_in(client.clone(), ns, &["--idempotency-ttl-seconds", "3"]).await;
    let n = world.ns.name.clone();
    world
        .create(
            "first",
            keyed(&n, "release-3", DedupOn::Success, vec![("a", held_deployment("web"))]),
        )
        .await;
    world.wait_operation_phase("first", "a", OperationPhase::Running).await;
    // The first Apply's operator dies, and the first Apply stops: its key is renewed no more.
    world.patch_spec("first", serde_json::json!({"stop": true})).await;
    world.wait_apply_phase("first", ApplyPhase::Stopped).await;
    world.operator.kill();
    world.operator = Operator::start_with(&client, &n, &["--idempotency-ttl-seconds", "3"]).await;
    world
        .create("second", keyed(&n, "release-3", DedupOn::Success, vec![("a", config_map("b"))]))
        .await;
    world.wait_apply_phase("second", ApplyPhase::Succeeded).await;
}

#[tokio::test]
async fn deleting_a_running_apply_stops_it_releases_its_key_and_collects_its_children() {
    let world = World::new("delete").await;
    let ns = world.ns.name.clone();
    world
        .create(
            "doomed",
            keyed(
                &ns,
                "release-1",
                DedupOn::Success,
                vec![("a", held_deployment("web")), ("b", config_map("b"))],
            ),
        )
        .await;
    world.wait_operation_phase("doomed", "a", OperationPhase::Running).await;
    let finalizers = world.apply("doomed").await.metadata.finalizers.unwrap_or_default();
    assert_eq!(
        finalizers,
        vec!["baton.dev/cleanup".to_owned()],
        "the first claim adds the finalizer"
    );
    world.applies().delete("doomed", &DeleteParams::background()).await.expect("deleting");
    let applies = world.applies();
    wait_for("the Apply to be gone", PATIENCE, || {
        let applies = applies.clone();
        async move { applies.get_opt("doomed").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(key_leases(&world).await.is_empty(), "the key is released");
    let operations = world.operations();
    wait_for("garbage collection of the operations", PATIENCE, || {
        let operations = operations.clone();
        async move { operations.list(&ListParams::default()).await.ok()?.items.is_empty().then_some(()) }
    })
    .await;
    let events = world.events("doomed").await;
    assert!(
        events.iter().any(|(reason, note)| reason == "OperationStopped" && note.contains("`a`")),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_apply_that_never_started_is_deleted_without_an_operator() {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "orphan").await;
    let applies: Api<baton::crd::Apply> = Api::namespaced(client.clone(), &ns.name);
    let apply = baton::crd::Apply::new(
        "lonely",
        spec(&ns.name, FailurePolicy::Halt, 1, vec![("a", config_map("a"))]),
    );
    applies.create(&PostParams::default(), &apply).await.expect("creating");
    applies.delete("lonely", &DeleteParams::default()).await.expect("deleting");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(applies.get_opt("lonely").await.expect("reading").is_none(), "no finalizer holds it");
}
