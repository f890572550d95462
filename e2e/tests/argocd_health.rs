//! `config/argocd/health.lua` is the Argo CD health check for `Apply`. These tests run it in a
//! real Lua interpreter against statuses from baton's own projection, one per phase, so the
//! script cannot drift from what the operator writes; and they check that the copy embedded in
//! `config/argocd/argocd-cm.yaml` is the same script.

use baton::crd::{Apply, ApplyPhase, ApplySpec, ApplyStatus, FailurePolicy, OperationStatus};
use baton::lifecycle::fixtures::{
    at, children, failed, pending, running, spec, stopped, succeeded,
};
use baton::lifecycle::{ApplyFacts, Idempotency, project};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use baton_e2e::argocd::{HEALTH_KEY, Health, argocd_dir, health_of_json, health_script};

fn health_of(apply: &Apply) -> Health {
    health_of_json(&serde_json::to_value(apply).expect("the Apply serializes"))
}

/// An Apply at `generation` whose status is what baton projects from `spec` and `statuses`.
fn projected(
    spec: ApplySpec,
    idempotency: Idempotency,
    statuses: Vec<OperationStatus>,
    generation: i64,
) -> Apply {
    let status = project(
        &ApplyFacts {
            spec: &spec,
            generation: Some(generation),
            created_at: Some(at(-100)),
            deleting: false,
            finalizer: false,
            operations_created: false,
            idempotency,
            approvers: Default::default(),
            foreign: &[],
        },
        &children(statuses),
    );
    with_status(spec, generation, Some(status))
}

fn with_status(spec: ApplySpec, generation: i64, status: Option<ApplyStatus>) -> Apply {
    let mut apply = Apply::new("rollout", spec);
    apply.metadata.namespace = Some("shop".to_owned());
    apply.metadata.generation = Some(generation);
    apply.metadata.uid = Some("0b5c2f0e-7f43-4c44-9a53-3b1d2c3e4f50".to_owned());
    apply.metadata.creation_timestamp = Some(Time(at(-100)));
    apply.status = status;
    apply
}

/// Asserts the projected phase (so each case really is the phase it is named after), then
/// that health.lua maps it to `health` with the operator's message.
fn assert_health(apply: &Apply, phase: ApplyPhase, health: &str) -> Health {
    let status = apply.status.as_ref().expect("a projected status");
    assert_eq!(status.phase, Some(phase), "the projection gave {:?}", status.phase);
    let got = health_of(apply);
    assert_eq!(
        got,
        Health { status: health.to_owned(), message: status.message.clone() },
        "phase {}",
        phase.as_str()
    );
    got
}

fn condition_is_true(apply: &Apply, type_: &str) -> bool {
    apply.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == type_ && c.status == "True")
}

// ---- one case per phase ----

#[test]
fn pending_nothing_claimed_is_progressing() {
    let apply = projected(spec(2, FailurePolicy::Halt, 1), Idempotency::NotRequired, vec![], 1);
    let health = assert_health(&apply, ApplyPhase::Pending, "Progressing");
    assert_eq!(health.message, "waiting to start 2 operations");
}

#[test]
fn running_is_progressing() {
    let apply = projected(
        spec(2, FailurePolicy::Halt, 1),
        Idempotency::NotRequired,
        vec![running("baton-0", 1), pending(0)],
        1,
    );
    let health = assert_health(&apply, ApplyPhase::Running, "Progressing");
    assert_eq!(health.message, "0/2 succeeded, running a");
    assert!(!condition_is_true(&apply, "Degraded"));
}

#[test]
fn running_degraded_under_continue_stays_progressing_and_says_so() {
    let apply = projected(
        spec(3, FailurePolicy::Continue, 2),
        Idempotency::NotRequired,
        vec![failed(1), running("baton-0", 1), pending(0)],
        1,
    );
    assert!(condition_is_true(&apply, "Degraded"), "the projection sets Degraded=True");
    let health = assert_health(&apply, ApplyPhase::Running, "Progressing");
    assert!(
        health.message.contains("continuing past: operation `a` failed (Unhealthy)"),
        "{}",
        health.message
    );
}

#[test]
fn running_degraded_without_a_message_still_names_the_failure() {
    let mut apply = projected(
        spec(3, FailurePolicy::Continue, 2),
        Idempotency::NotRequired,
        vec![failed(1), running("baton-0", 1), pending(0)],
        1,
    );
    apply.status.as_mut().expect("a status").message.clear();
    let health = health_of(&apply);
    assert_eq!(health.status, "Progressing");
    assert!(health.message.starts_with("continuing past a failure: operation `a` failed"));
}

#[test]
fn paused_after_a_failure_is_suspended() {
    let apply = projected(
        spec(2, FailurePolicy::Pause, 1),
        Idempotency::NotRequired,
        vec![failed(1), pending(0)],
        1,
    );
    let health = assert_health(&apply, ApplyPhase::Paused, "Suspended");
    assert!(health.message.starts_with("paused: operation `a` failed"), "{}", health.message);
    assert!(health.message.contains("spec.dismissError: a-1"), "{}", health.message);
}

#[test]
fn succeeded_is_healthy() {
    let apply = projected(
        spec(2, FailurePolicy::Halt, 1),
        Idempotency::NotRequired,
        vec![succeeded(1), succeeded(1)],
        1,
    );
    let health = assert_health(&apply, ApplyPhase::Succeeded, "Healthy");
    assert_eq!(health.message, "all 2 operations succeeded");
}

#[test]
fn failed_under_halt_is_degraded() {
    let apply = projected(
        spec(2, FailurePolicy::Halt, 1),
        Idempotency::NotRequired,
        vec![failed(1), pending(0)],
        1,
    );
    let health = assert_health(&apply, ApplyPhase::Failed, "Degraded");
    assert!(
        health.message.starts_with("operation `a` failed (Unhealthy): Job `migrate`"),
        "{}",
        health.message
    );
    assert!(health.message.ends_with("retry it with spec.dismissError: a-1"), "{}", health.message);
}

#[test]
fn stopped_is_suspended() {
    let mut stopping = spec(3, FailurePolicy::Halt, 1);
    stopping.stop = true;
    let apply = projected(
        stopping,
        Idempotency::NotRequired,
        vec![succeeded(1), stopped(1), stopped(1)],
        2,
    );
    let health = assert_health(&apply, ApplyPhase::Stopped, "Suspended");
    assert_eq!(health.message, "stopped: 1/3 succeeded, 2 stopped; set spec.stop: false to resume");
}

#[test]
fn skipped_by_idempotency_is_healthy() {
    let mut keyed = spec(2, FailurePolicy::Halt, 1);
    keyed.idempotency_key = Some("release-42".to_owned());
    let apply = projected(keyed, Idempotency::AlreadyDone { by: "earlier".to_owned() }, vec![], 1);
    let health = assert_health(&apply, ApplyPhase::Skipped, "Healthy");
    assert!(health.message.starts_with("skipped: Apply `earlier`"), "{}", health.message);
}

// ---- before the operator has caught up ----

#[test]
fn no_status_is_progressing() {
    let apply = with_status(spec(2, FailurePolicy::Halt, 1), 1, None);
    assert_eq!(
        health_of(&apply),
        Health { status: "Progressing".to_owned(), message: "waiting for the operator".to_owned() }
    );
}

#[test]
fn status_without_phase_is_progressing() {
    let apply = with_status(spec(2, FailurePolicy::Halt, 1), 1, Some(ApplyStatus::default()));
    assert_eq!(
        health_of(&apply),
        Health { status: "Progressing".to_owned(), message: "waiting for the operator".to_owned() }
    );
}

#[test]
fn lagging_observed_generation_is_progressing_whatever_the_phase() {
    // A Succeeded status projected from generation 1, read after a spec change to generation 2.
    let mut apply = projected(
        spec(2, FailurePolicy::Halt, 1),
        Idempotency::NotRequired,
        vec![succeeded(1), succeeded(1)],
        1,
    );
    apply.metadata.generation = Some(2);
    assert_eq!(
        health_of(&apply),
        Health {
            status: "Progressing".to_owned(),
            message: "waiting for the operator: status is of generation 1, the Apply is at 2"
                .to_owned(),
        }
    );
}

#[test]
fn unknown_phase_is_unknown() {
    let apply = projected(
        spec(2, FailurePolicy::Halt, 1),
        Idempotency::NotRequired,
        vec![running("baton-0", 1), pending(0)],
        1,
    );
    let mut object = serde_json::to_value(&apply).expect("the Apply serializes");
    object["status"]["phase"] = "Rolling".into();
    object["status"]["message"] = serde_json::Value::Null;
    assert_eq!(
        health_of_json(&object),
        Health { status: "Unknown".to_owned(), message: "unknown phase Rolling".to_owned() }
    );
}

// ---- the argocd-cm copy ----

#[test]
fn argocd_cm_embeds_health_lua_verbatim() {
    let path = argocd_dir().join("argocd-cm.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let cm: serde_json::Value = serde_yaml_ng::from_str(&text).expect("argocd-cm.yaml parses");
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let embedded = cm["data"][HEALTH_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("argocd-cm.yaml has no data.{HEALTH_KEY}"));
    assert!(
        embedded == health_script(),
        "config/argocd/argocd-cm.yaml and config/argocd/health.lua differ: copy health.lua \
         into data.{HEALTH_KEY}, indented by four spaces"
    );
}

#[test]
fn awaiting_an_approval_is_suspended() {
    let mut spec = spec(2, FailurePolicy::Halt, 1);
    spec.operations[1].approval = Some(baton::crd::Approval::Required);
    let apply = projected(spec, Idempotency::NotRequired, vec![succeeded(1), pending(0)], 1);
    let health = assert_health(&apply, ApplyPhase::Running, "Suspended");
    assert!(health.message.contains("operation `b` awaits approval"), "{}", health.message);
}
