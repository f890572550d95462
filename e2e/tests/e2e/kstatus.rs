//! What kstatus (`sigs.k8s.io/cli-utils`, the library behind Flux's `wait` and health checks)
//! says about baton's Applies in every phase, read from a real API server with the operator
//! running. A GitOps tool may stop waiting only when the rollout is done (`Succeeded`,
//! `Skipped` → Current), must fail when a person is needed (`Failed`, `Paused` → Failed), and
//! must keep waiting for everything else, a brand-new Apply included (→ InProgress).

use baton::crd::{ApplyPhase, DedupOn, FailurePolicy, OperationPhase};
use baton_e2e::kstatus::{self, Kstatus, KstatusStatus};
use baton_e2e::{TestNamespace, admin_client, kubectl, kubelet};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::support::{World, config_map, deployment, job, spec};

const APPLIES: &str = "applies.baton.dev";

/// kstatus's verdict on the Apply as the API server serves it now, printed so that a run with
/// `--nocapture` shows the whole table, and checked against `expected`.
fn expect_kstatus(namespace: &str, name: &str, what: &str, expected: KstatusStatus) -> Kstatus {
    let (result, object) = kstatus::read(APPLIES, namespace, name);
    println!(
        "kstatus: {what:<28} -> {:?}: {}{}",
        result.status,
        result.message,
        result.error.as_deref().map(|e| format!(" (error: {e})")).unwrap_or_default()
    );
    let why = match expected {
        KstatusStatus::Current => "the rollout is done: a GitOps wait must succeed",
        KstatusStatus::Failed => "a person is needed: a GitOps wait must fail, not time out",
        _ => "the rollout is not done: a GitOps wait must keep waiting",
    };
    assert_eq!(
        result.status,
        expected,
        "kstatus on a {what} Apply ({why}); its message: `{}`; the Apply's status: {}",
        result.message,
        serde_json::to_string_pretty(&object["status"]).unwrap_or_default()
    );
    result
}

fn keyed(namespace: &str, key: &str, manifest: serde_json::Value) -> baton::crd::ApplySpec {
    let mut spec = spec(namespace, FailurePolicy::Halt, 1, vec![("a", manifest)]);
    spec.idempotency_key = Some(key.to_owned());
    spec.dedup_on = DedupOn::Success;
    spec
}

/// Creates an Apply in a namespace no operator watches (every test operator is started with
/// `--namespace`), so nothing writes its status.
async fn unwatched_apply(prefix: &str) -> (TestNamespace, String) {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, prefix).await;
    let applies: Api<baton::crd::Apply> = Api::namespaced(client, &ns.name);
    let spec = spec(&ns.name, FailurePolicy::Halt, 1, vec![("a", config_map("a"))]);
    applies
        .create(&PostParams::default(), &baton::crd::Apply::new("fresh", spec))
        .await
        .expect("creating the Apply");
    (ns, "fresh".to_owned())
}

#[tokio::test]
async fn a_new_apply_is_in_progress_before_the_operator_writes_its_status() {
    let (ns, name) = unwatched_apply("ks-new").await;
    // Flux reads an Apply it has just applied before any operator has seen it: kstatus must not
    // call that Current, or `wait: true` succeeds before the rollout has started.
    expect_kstatus(&ns.name, &name, "new (no status yet)", KstatusStatus::InProgress);
}

/// The shape a schema default gives a new Apply, `status: {observedGeneration: 0}`, written by
/// hand: kstatus compares it with `metadata.generation` (1) and says InProgress.
#[tokio::test]
async fn an_apply_whose_status_is_only_observed_generation_zero_is_in_progress() {
    let (ns, name) = unwatched_apply("ks-gen0").await;
    let patched = kubectl(&[
        "patch",
        APPLIES,
        &name,
        "-n",
        &ns.name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"observedGeneration":0}}"#,
    ]);
    assert!(
        patched.status.success(),
        "patching the status: {}",
        String::from_utf8_lossy(&patched.stderr)
    );
    let result = expect_kstatus(&ns.name, &name, "status {observedGeneration: 0}", {
        KstatusStatus::InProgress
    });
    assert_eq!(result.message, "Apply generation is 1, but latest observed generation is 0");
}

#[tokio::test]
async fn running_and_pending_are_in_progress_succeeded_and_skipped_are_current() {
    let world = World::new("ks-flow").await;
    let ns = world.ns.name.clone();
    world.create("first", keyed(&ns, "ks-release", deployment("web"))).await;
    world.wait_operation_phase("first", "a", OperationPhase::Running).await;
    world.wait_apply_phase("first", ApplyPhase::Running).await;
    expect_kstatus(&ns, "first", "Running", KstatusStatus::InProgress);

    // Same key while the first is live: the second waits, Pending (DuplicateInFlight).
    world.create("again", keyed(&ns, "ks-release", deployment("web"))).await;
    world.wait_apply_phase("again", ApplyPhase::Pending).await;
    expect_kstatus(&ns, "again", "Pending (DuplicateInFlight)", KstatusStatus::InProgress);

    kubelet::deployment_rolled_out(&world.client, &ns, "web").await;
    world.wait_apply_phase("first", ApplyPhase::Succeeded).await;
    expect_kstatus(&ns, "first", "Succeeded", KstatusStatus::Current);
    world.wait_apply_phase("again", ApplyPhase::Skipped).await;
    expect_kstatus(&ns, "again", "Skipped", KstatusStatus::Current);
}

#[tokio::test]
async fn failed_and_paused_are_failed() {
    let world = World::new("ks-fail").await;
    let ns = world.ns.name.clone();
    world.create("halt", spec(&ns, FailurePolicy::Halt, 1, vec![("a", job("halt-job"))])).await;
    world.create("pause", spec(&ns, FailurePolicy::Pause, 1, vec![("a", job("pause-job"))])).await;
    world.wait_operation_phase("halt", "a", OperationPhase::Running).await;
    world.wait_operation_phase("pause", "a", OperationPhase::Running).await;
    kubelet::job_failed(&world.client, &ns, "halt-job").await;
    kubelet::job_failed(&world.client, &ns, "pause-job").await;

    for (name, phase) in [("halt", ApplyPhase::Failed), ("pause", ApplyPhase::Paused)] {
        let apply = world.wait_apply_phase(name, phase).await;
        let result = expect_kstatus(&ns, name, &format!("{phase:?}"), KstatusStatus::Failed);
        // Flux shows kstatus's message: it must be baton's, which names the failed operation.
        let message = apply.status.map(|s| s.message).unwrap_or_default();
        assert!(
            !message.is_empty() && result.message.contains(&message),
            "kstatus's message `{}` carries the Apply's `{message}`",
            result.message
        );
    }
}

#[tokio::test]
async fn stopped_is_in_progress() {
    let world = World::new("ks-stop").await;
    let ns = world.ns.name.clone();
    world.create("stop", spec(&ns, FailurePolicy::Halt, 1, vec![("a", deployment("web"))])).await;
    world.wait_operation_phase("stop", "a", OperationPhase::Running).await;
    world.patch_spec("stop", json!({"stop": true})).await;
    world.wait_apply_phase("stop", ApplyPhase::Stopped).await;
    // A stopped rollout is resumable, not done: Flux must not report it applied.
    expect_kstatus(&ns, "stop", "Stopped", KstatusStatus::InProgress);
}
