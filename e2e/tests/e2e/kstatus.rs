//! What kstatus (`sigs.k8s.io/cli-utils`, the library behind Flux's `wait` and health checks)
//! says about baton's Applies in every phase, read from a real API server with the operator
//! running. A GitOps tool may stop waiting only when the rollout is done (`Succeeded`,
//! `Skipped` → Current), must fail when a person is needed (`Failed`, `Paused` → Failed), and
//! must keep waiting for everything else, a brand-new Apply included (→ InProgress).

use baton::crd::{ApplyPhase, DedupOn, FailurePolicy, OperationPhase};
use baton_e2e::kstatus::{self, Kstatus, KstatusStatus};
use std::io::Write;
use std::process::{Command, Stdio};

use baton_e2e::{TestNamespace, admin_client, cluster, pods};
use serde_json::{Value, json};

use super::support::{World, app, config_map, held_deployment, held_job, job_pods, spec};

const APPLIES: &str = "applies.baton.dev";

/// kstatus's verdict on the Apply as the API server serves it now, checked against `expected`.
fn expect_kstatus(namespace: &str, name: &str, what: &str, expected: KstatusStatus) -> Kstatus {
    let (result, object) = kstatus::read(APPLIES, namespace, name);
    check(what, &result, &object, expected);
    result
}

/// Prints kstatus's verdict, so that a run with `--nocapture` shows the whole table, and checks
/// it against `expected`.
fn check(what: &str, result: &Kstatus, object: &Value, expected: KstatusStatus) {
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
}

fn keyed(namespace: &str, key: &str, manifest: serde_json::Value) -> baton::crd::ApplySpec {
    let mut spec = spec(namespace, FailurePolicy::Halt, 1, vec![("a", manifest)]);
    spec.idempotency_key = Some(key.to_owned());
    spec.dedup_on = DedupOn::Success;
    spec
}

/// Creates an Apply with `kubectl create -o json` in a namespace no operator watches (every
/// test operator is started with `--namespace`), so nothing writes its status; returns the
/// namespace, the name and the API server's answer to the create.
async fn unwatched_apply(prefix: &str) -> (TestNamespace, &'static str, Value) {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, prefix).await;
    let name = "fresh";
    let spec = spec(&ns.name, FailurePolicy::Halt, 1, vec![("a", config_map("a"))]);
    let apply = serde_json::to_string(&baton::crd::Apply::new(name, spec)).expect("an Apply");
    let mut child = Command::new("kubectl")
        .args(["create", "-n", &ns.name, "-o", "json", "-f", "-"])
        .env("KUBECONFIG", &cluster().kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    child
        .stdin
        .take()
        .expect("kubectl's stdin")
        .write_all(apply.as_bytes())
        .expect("writing to kubectl");
    let output = child.wait_with_output().expect("waiting for kubectl");
    assert!(
        output.status.success(),
        "creating the Apply: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created =
        serde_json::from_slice(&output.stdout).expect("kubectl create -o json prints JSON");
    (ns, name, created)
}

#[tokio::test]
async fn a_new_apply_is_in_progress_before_the_operator_writes_its_status() {
    let (ns, name, created) = unwatched_apply("ks-new").await;
    // Flux reads an Apply it has just applied before any operator has seen it: kstatus must not
    // call that Current, or `wait: true` succeeds before the rollout has started. The answer to
    // the create is the Apply before any operator could have written to it, wherever the test
    // runs; the read after it is what a poller sees.
    let at_create = kstatus::compute(&created);
    check("new (the create's answer)", &at_create, &created, KstatusStatus::InProgress);
    expect_kstatus(&ns.name, name, "new (read back)", KstatusStatus::InProgress);
}

#[tokio::test]
async fn running_and_pending_are_in_progress_succeeded_and_skipped_are_current() {
    let world = World::new("ks-flow").await;
    let ns = world.ns.name.clone();
    world.create("first", keyed(&ns, "ks-release", held_deployment("web"))).await;
    world.wait_operation_phase("first", "a", OperationPhase::Running).await;
    world.wait_apply_phase("first", ApplyPhase::Running).await;
    expect_kstatus(&ns, "first", "Running", KstatusStatus::InProgress);

    // Same key while the first is live: the second waits, Pending (DuplicateInFlight).
    world.create("again", keyed(&ns, "ks-release", held_deployment("web"))).await;
    world.wait_apply_phase("again", ApplyPhase::Pending).await;
    expect_kstatus(&ns, "again", "Pending (DuplicateInFlight)", KstatusStatus::InProgress);

    pods::release(&world.client, &ns, &app("web")).await;
    world.wait_apply_phase("first", ApplyPhase::Succeeded).await;
    expect_kstatus(&ns, "first", "Succeeded", KstatusStatus::Current);
    world.wait_apply_phase("again", ApplyPhase::Skipped).await;
    expect_kstatus(&ns, "again", "Skipped", KstatusStatus::Current);
}

#[tokio::test]
async fn failed_and_paused_are_failed() {
    let world = World::new("ks-fail").await;
    let ns = world.ns.name.clone();
    world
        .create("halt", spec(&ns, FailurePolicy::Halt, 1, vec![("a", held_job("halt-job"))]))
        .await;
    world
        .create("pause", spec(&ns, FailurePolicy::Pause, 1, vec![("a", held_job("pause-job"))]))
        .await;
    world.wait_operation_phase("halt", "a", OperationPhase::Running).await;
    world.wait_operation_phase("pause", "a", OperationPhase::Running).await;
    pods::fail(&world.client, &ns, &job_pods("halt-job")).await;
    pods::fail(&world.client, &ns, &job_pods("pause-job")).await;

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
    world
        .create("stop", spec(&ns, FailurePolicy::Halt, 1, vec![("a", held_deployment("web"))]))
        .await;
    world.wait_operation_phase("stop", "a", OperationPhase::Running).await;
    world.patch_spec("stop", json!({"stop": true})).await;
    world.wait_apply_phase("stop", ApplyPhase::Stopped).await;
    // A stopped rollout is resumable, not done: Flux must not report it applied.
    expect_kstatus(&ns, "stop", "Stopped", KstatusStatus::InProgress);
}
