//! One named test per rule of SPEC.md sections 2-7, grouped by section. The claim gate's own
//! table is in `gate.rs`, the transitions' in `transitions.rs`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pretty_assertions::assert_eq;

use super::fixtures::*;
use super::*;
use crate::crd::{
    ApplyPhase, ApplySpec, ApplyStatus, FailurePolicy, FailureReason, OperationPhase,
    OperationStatus,
};

const ME: &str = "replica-me";

fn plan_with(
    spec: &ApplySpec,
    statuses: Vec<OperationStatus>,
    health: &[(&str, Health)],
    now: i64,
) -> Plan {
    let children = children(statuses);
    let health: BTreeMap<String, Health> =
        health.iter().map(|(name, h)| ((*name).to_owned(), h.clone())).collect();
    decide(&Observed {
        apply: facts(spec),
        children: &children,
        lease: LeaseState::Held,
        holder: ME,
        health: &health,
        previous: None,
        now: at(now),
    })
}

fn plan(spec: &ApplySpec, statuses: Vec<OperationStatus>) -> Plan {
    plan_with(spec, statuses, &[], 10)
}

fn status_of(spec: &ApplySpec, statuses: Vec<OperationStatus>) -> ApplyStatus {
    project(&facts(spec), &children(statuses))
}

fn phase_of(spec: &ApplySpec, statuses: Vec<OperationStatus>) -> ApplyPhase {
    status_of(spec, statuses).phase.expect("projection always sets a phase")
}

/// `(name, kind, new phase)` of each status write in a plan.
fn writes(plan: &Plan) -> Vec<(String, WriteKind, OperationPhase)> {
    plan.writes
        .iter()
        .filter_map(|write| match write {
            OperationWrite::Status { name, kind, status, .. } => {
                Some((name.clone(), *kind, status.phase))
            }
            OperationWrite::Create { .. } => None,
        })
        .collect()
}

fn mine(attempt: u32) -> OperationStatus {
    running(ME, attempt)
}

fn condition_status(status: &ApplyStatus, type_: &str) -> Option<String> {
    status.conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

// ---- Section 1/6: materialising children, the lease ------------------------------------------

#[test]
fn missing_operations_are_created_before_anything_else() {
    let spec = spec(3, FailurePolicy::Halt, 1);
    let mut present = children(vec![pending(0)]);
    present.truncate(1);
    let health = BTreeMap::new();
    let plan = decide(&Observed {
        apply: facts(&spec),
        children: &present,
        lease: LeaseState::Held,
        holder: ME,
        health: &health,
        previous: None,
        now: at(0),
    });
    assert_eq!(
        plan.writes,
        vec![
            OperationWrite::Create { index: 1, name: "b".into(), recreated: false },
            OperationWrite::Create { index: 2, name: "c".into(), recreated: false },
        ]
    );
}

#[test]
fn replica_without_the_lease_writes_nothing() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let children = children(vec![pending(0), pending(0)]);
    let health = BTreeMap::new();
    let plan = decide(&Observed {
        apply: facts(&spec),
        children: &children,
        lease: LeaseState::NotHeld,
        holder: ME,
        health: &health,
        previous: None,
        now: at(0),
    });
    assert_eq!(plan, Plan::default());
}

#[test]
fn recovery_takes_over_a_running_operation_in_the_same_attempt() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let plan = plan(&spec, vec![running("crashed-replica", 3), pending(0)]);
    assert_eq!(writes(&plan), vec![("a".into(), WriteKind::TakeOver, OperationPhase::Running)]);
    let OperationWrite::Status { status, .. } = &plan.writes[0] else { panic!("a status write") };
    assert_eq!(status.attempt, 3);
}

#[test]
fn recovery_honours_a_stop_requested_meanwhile() {
    let mut spec = spec(1, FailurePolicy::Halt, 1);
    spec.stop = true;
    assert_eq!(
        writes(&plan(&spec, vec![running("crashed-replica", 1)])),
        vec![("a".into(), WriteKind::Stop, OperationPhase::Stopped)]
    );
}

#[test]
fn projection_depends_only_on_spec_and_children() {
    let spec = spec(3, FailurePolicy::Continue, 2);
    let statuses = vec![succeeded(1), failed(2), running("x", 1)];
    assert_eq!(status_of(&spec, statuses.clone()), status_of(&spec, statuses));
}

// ---- Section 2: claiming ----------------------------------------------------------------------

#[test]
fn claims_follow_the_gate_in_index_order() {
    let spec = spec(4, FailurePolicy::Halt, 2);
    let plan = plan(&spec, vec![succeeded(1), pending(0), pending(0), pending(0)]);
    assert_eq!(
        writes(&plan),
        vec![
            ("b".into(), WriteKind::Claim, OperationPhase::Running),
            ("c".into(), WriteKind::Claim, OperationPhase::Running),
        ]
    );
}

#[test]
fn no_claim_while_stop_requested_under_any_policy() {
    for policy in
        [FailurePolicy::Halt, FailurePolicy::Pause, FailurePolicy::Continue, FailurePolicy::Unknown]
    {
        let mut spec = spec(2, policy, 2);
        spec.stop = true;
        let plan = plan(&spec, vec![pending(0), pending(0)]);
        assert!(writes(&plan).iter().all(|(_, kind, _)| *kind != WriteKind::Claim), "{policy:?}");
    }
}

// ---- Section 3: running and failure policies --------------------------------------------------

#[test]
fn healthy_objects_succeed_the_operation() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let plan = plan_with(&spec, vec![mine(1), pending(0)], &[("a", Health::Healthy)], 10);
    assert_eq!(
        writes(&plan),
        vec![
            ("a".into(), WriteKind::Finish, OperationPhase::Succeeded),
            ("b".into(), WriteKind::Claim, OperationPhase::Running),
        ]
    );
}

#[test]
fn dispatch_failure_is_written_as_failed_with_the_api_message() {
    let spec = spec(1, FailurePolicy::Halt, 1);
    let message = "Deployment `web` in `shop`: forbidden: User cannot create deployments";
    let plan =
        plan_with(&spec, vec![mine(1)], &[("a", Health::DispatchFailed(message.into()))], 10);
    let status = plan.status.expect("a projected status");
    assert_eq!(status.phase, Some(ApplyPhase::Failed));
    let error = status.error.expect("an error");
    assert_eq!((error.reason.as_str(), error.message.as_str()), ("DispatchFailed", message));
}

#[test]
fn unhealthy_object_fails_the_operation() {
    let spec = spec(1, FailurePolicy::Halt, 1);
    let plan =
        plan_with(&spec, vec![mine(1)], &[("a", Health::Unhealthy("Job `m` failed".into()))], 10);
    assert_eq!(
        plan.notes[0],
        Note::Failed {
            operation: "a".into(),
            attempt: 1,
            reason: FailureReason::Unhealthy,
            message: "Job `m` failed".into()
        }
    );
}

#[test]
fn timeout_fails_the_operation_once_its_duration_passed() {
    let spec = spec(1, FailurePolicy::Halt, 1);
    let waiting = plan_with(&spec, vec![mine(1)], &[("a", Health::Progressing)], 599);
    assert!(writes(&waiting).is_empty());
    assert_eq!(waiting.requeue_after, Some(std::time::Duration::from_secs(1)));
    let late = plan_with(&spec, vec![mine(1)], &[("a", Health::Progressing)], 600);
    let error = late.status.and_then(|s| s.error).expect("a timeout error");
    assert_eq!(error.reason, "Timeout");
}

#[test]
fn halt_fails_the_apply_once_nothing_runs_and_leaves_pending_siblings_pending() {
    let spec = spec(4, FailurePolicy::Halt, 2);
    assert_eq!(
        phase_of(&spec, vec![succeeded(1), failed(1), running("x", 1), pending(0)]),
        ApplyPhase::Running
    );
    assert_eq!(
        phase_of(&spec, vec![succeeded(1), failed(1), succeeded(1), pending(0)]),
        ApplyPhase::Failed
    );
    assert!(
        writes(&plan(&spec, vec![succeeded(1), failed(1), succeeded(1), pending(0)])).is_empty()
    );
}

#[test]
fn unknown_policy_fails_closed_as_halt() {
    let unknown = spec(3, FailurePolicy::Unknown, 1);
    let halt = spec(3, FailurePolicy::Halt, 1);
    let statuses = vec![succeeded(1), failed(1), pending(0)];
    assert_eq!(
        status_of(&unknown, statuses.clone()).phase,
        status_of(&halt, statuses.clone()).phase
    );
    assert!(writes(&plan(&unknown, statuses)).is_empty());
    let unknown_value: FailurePolicy =
        serde_json::from_str("\"Rollback\"").expect("unknown values parse");
    assert_eq!(unknown_value.effective(), FailurePolicy::Halt);
}

#[test]
fn pause_pauses_the_apply_after_a_failure() {
    let spec = spec(3, FailurePolicy::Pause, 1);
    let status = status_of(&spec, vec![succeeded(1), failed(1), pending(0)]);
    assert_eq!(status.phase, Some(ApplyPhase::Paused));
    assert!(!status.phase.is_some_and(ApplyPhase::is_terminal), "Paused is not terminal");
    assert_eq!(condition_status(&status, condition::STALLED).as_deref(), Some("True"));
}

#[test]
fn continue_holds_apply_running_until_siblings_settle() {
    let spec = spec(4, FailurePolicy::Continue, 1);
    let status = status_of(&spec, vec![succeeded(1), failed(1), running("x", 1), pending(0)]);
    assert_eq!(status.phase, Some(ApplyPhase::Running));
    assert_eq!(condition_status(&status, condition::DEGRADED).as_deref(), Some("True"));
    let status = status_of(&spec, vec![succeeded(1), failed(1), succeeded(1), pending(0)]);
    assert_eq!(status.phase, Some(ApplyPhase::Running));
}

#[test]
fn continue_verdict_is_failed_once_every_operation_settled() {
    let spec = spec(4, FailurePolicy::Continue, 1);
    let status = status_of(&spec, vec![succeeded(1), failed(1), succeeded(1), succeeded(1)]);
    assert_eq!(status.phase, Some(ApplyPhase::Failed));
    assert_eq!(condition_status(&status, condition::DEGRADED).as_deref(), Some("False"));
    assert!(status.completed_at.is_some());
}

#[test]
fn all_succeeded_is_ready() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let status = status_of(&spec, vec![succeeded(1), succeeded(2)]);
    assert_eq!(status.phase, Some(ApplyPhase::Succeeded));
    assert_eq!(condition_status(&status, condition::READY).as_deref(), Some("True"));
    assert_eq!(condition_status(&status, condition::RECONCILING).as_deref(), Some("False"));
    assert_eq!(status.progress, "2/2");
}

// ---- Section 4: stop and resume ---------------------------------------------------------------

#[test]
fn stop_terminalizes_only_pending_siblings() {
    let mut spec = spec(4, FailurePolicy::Continue, 1);
    spec.stop = true;
    let plan = plan(&spec, vec![succeeded(1), failed(1), pending(0), pending(0)]);
    assert_eq!(
        writes(&plan),
        vec![
            ("c".into(), WriteKind::Stop, OperationPhase::Stopped),
            ("d".into(), WriteKind::Stop, OperationPhase::Stopped),
        ]
    );
}

#[test]
fn running_operation_stops_at_its_next_check() {
    let mut spec = spec(2, FailurePolicy::Halt, 1);
    spec.stop = true;
    let plan = plan_with(&spec, vec![mine(1), pending(0)], &[("a", Health::Healthy)], 10);
    assert_eq!(
        writes(&plan),
        vec![
            ("a".into(), WriteKind::Stop, OperationPhase::Stopped),
            ("b".into(), WriteKind::Stop, OperationPhase::Stopped),
        ]
    );
    let status = plan.status.expect("a status");
    assert_eq!(status.phase, Some(ApplyPhase::Stopped));
    assert!(status.stop.and_then(|stop| stop.completed_at).is_some());
}

#[test]
fn stop_completes_only_when_nothing_runs() {
    let mut spec = spec(2, FailurePolicy::Halt, 1);
    spec.stop = true;
    let running_still = status_of(&spec, vec![running("x", 1), stopped(0)]);
    assert_eq!(running_still.phase, Some(ApplyPhase::Running));
    assert_eq!(running_still.stop.as_ref().and_then(|s| s.completed_at.clone()), None);
    let done = status_of(&spec, vec![stopped(1), stopped(0)]);
    assert_eq!(done.phase, Some(ApplyPhase::Stopped));
    assert!(done.stop.and_then(|s| s.completed_at).is_some());
}

#[test]
fn stopped_apply_settles_by_what_its_operations_did() {
    let mut spec = spec(2, FailurePolicy::Halt, 1);
    spec.stop = true;
    assert_eq!(phase_of(&spec, vec![succeeded(1), succeeded(1)]), ApplyPhase::Succeeded);
    assert_eq!(phase_of(&spec, vec![failed(1), stopped(0)]), ApplyPhase::Failed);
    assert_eq!(phase_of(&spec, vec![succeeded(1), stopped(0)]), ApplyPhase::Stopped);
}

#[test]
fn stop_settles_a_continue_failure_with_nothing_active() {
    let mut spec = spec(3, FailurePolicy::Continue, 1);
    spec.stop = true;
    let plan = plan(&spec, vec![failed(1), pending(0), pending(0)]);
    let status = plan.status.expect("a status");
    assert_eq!(status.phase, Some(ApplyPhase::Failed));
    assert!(status.stop.and_then(|s| s.completed_at).is_some(), "the stop completes");
    assert!(plan.notes.contains(&Note::StopCompleted));
}

#[test]
fn resume_returns_stopped_operations_to_pending_and_goes_on() {
    let spec = spec(3, FailurePolicy::Halt, 1);
    let plan = plan(&spec, vec![succeeded(1), stopped(1), stopped(0)]);
    assert_eq!(
        writes(&plan),
        vec![
            ("b".into(), WriteKind::Resume, OperationPhase::Pending),
            ("c".into(), WriteKind::Resume, OperationPhase::Pending),
            ("b".into(), WriteKind::Claim, OperationPhase::Running),
        ]
    );
    let status = plan.status.expect("a status");
    assert_eq!(status.stop, None, "status.stop is cleared");
    assert_eq!(status.phase, Some(ApplyPhase::Running));
}

#[test]
fn resume_with_an_undismissed_error_does_not_retry_failures() {
    let spec = spec(3, FailurePolicy::Halt, 1);
    let plan = plan(&spec, vec![failed(1), stopped(0), stopped(0)]);
    assert_eq!(
        writes(&plan),
        vec![
            ("b".into(), WriteKind::Resume, OperationPhase::Pending),
            ("c".into(), WriteKind::Resume, OperationPhase::Pending),
        ]
    );
    assert_eq!(plan.status.and_then(|s| s.phase), Some(ApplyPhase::Failed));
}

// ---- Section 5: errors and dismissal ----------------------------------------------------------

#[test]
fn first_failed_operation_by_index_sets_the_error_even_if_a_later_one_failed_last() {
    let spec = spec(3, FailurePolicy::Continue, 1);
    let mut later = failed(1);
    later.completed_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(50)));
    let status = status_of(&spec, vec![succeeded(1), failed(2), later]);
    let error = status.error.expect("an error");
    assert_eq!((error.id.as_str(), error.operation.as_str()), ("b-2", "b"));
    assert!(status.message.contains("`b`"), "message names it: {}", status.message);
}

#[test]
fn dismissal_by_current_id_resets_failed_operations_and_the_rollout_goes_on() {
    let mut spec = spec(3, FailurePolicy::Pause, 1);
    spec.dismiss_error = Some("b-1".into());
    let plan = plan(&spec, vec![succeeded(1), failed(1), pending(0)]);
    assert_eq!(
        writes(&plan),
        vec![
            ("b".into(), WriteKind::Dismiss, OperationPhase::Pending),
            ("b".into(), WriteKind::Claim, OperationPhase::Running),
        ]
    );
    let OperationWrite::Status { status: claimed, .. } = &plan.writes[1] else {
        panic!("a status write")
    };
    assert_eq!(claimed.attempt, 2, "the next claim numbers a new attempt");
    let status = plan.status.expect("a status");
    assert_eq!(status.error, None);
    assert_eq!(status.last_dismissed_error.map(|d| d.id), Some("b-1".into()));
    assert!(plan.notes.contains(&Note::ErrorDismissed { id: "b-1".into() }));
}

#[test]
fn stale_dismissal_id_never_dismisses_newer_error() {
    let mut spec = spec(2, FailurePolicy::Halt, 1);
    spec.dismiss_error = Some("a-1".into());
    let plan = plan(&spec, vec![failed(2), pending(0)]);
    assert!(writes(&plan).is_empty());
    assert!(
        plan.notes.iter().any(|n| matches!(n, Note::DismissalIgnored { id, .. } if id == "a-1"))
    );
    let status = plan.status.expect("a status");
    assert_eq!(condition_status(&status, condition::DISMISSAL_REJECTED).as_deref(), Some("True"));
    assert_eq!(status.error.map(|e| e.id), Some("a-2".into()));
}

#[test]
fn dismissal_waits_while_operations_still_run() {
    let mut spec = spec(3, FailurePolicy::Continue, 2);
    spec.dismiss_error = Some("a-1".into());
    let waiting =
        plan_with(&spec, vec![failed(1), mine(1), pending(0)], &[("b", Health::Progressing)], 10);
    assert!(writes(&waiting).iter().all(|(_, kind, _)| *kind != WriteKind::Dismiss));
    let settled =
        plan_with(&spec, vec![failed(1), mine(1), succeeded(1)], &[("b", Health::Healthy)], 10);
    assert_eq!(
        writes(&settled),
        vec![
            ("b".into(), WriteKind::Finish, OperationPhase::Succeeded),
            ("a".into(), WriteKind::Dismiss, OperationPhase::Pending),
            ("a".into(), WriteKind::Claim, OperationPhase::Running),
        ]
    );
}

#[test]
fn dismissal_without_an_error_is_a_noop() {
    let mut spec = spec(2, FailurePolicy::Halt, 1);
    spec.dismiss_error = Some("a-1".into());
    let plan = plan(&spec, vec![succeeded(1), mine(1)]);
    assert!(writes(&plan).is_empty());
}

#[test]
fn applied_dismissal_is_not_reported_as_stale() {
    let mut spec = spec(2, FailurePolicy::Halt, 1);
    spec.dismiss_error = Some("a-1".into());
    let mut retried = mine(2);
    retried.dismissed = Some(crate::crd::DismissedError {
        id: "a-1".into(),
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(5)),
    });
    let plan = plan(&spec, vec![retried, pending(0)]);
    assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    let status = plan.status.expect("a status");
    assert_eq!(condition_status(&status, condition::DISMISSAL_REJECTED), None);
}

// ---- Section 6: end-of-rollout effects follow the projected phase ----------------------------

#[test]
fn settled_event_follows_the_projected_phase_not_an_operation_result() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let first = plan_with(&spec, vec![mine(1), pending(0)], &[("a", Health::Healthy)], 10);
    assert!(!first.notes.iter().any(|n| matches!(n, Note::Settled { .. })));
    let last = plan_with(&spec, vec![succeeded(1), mine(1)], &[("b", Health::Healthy)], 10);
    assert!(
        last.notes.iter().any(|n| matches!(n, Note::Settled { phase: ApplyPhase::Succeeded, .. }))
    );
}

#[test]
fn unchanged_condition_keeps_its_transition_time() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let before = status_of(&spec, vec![mine(1), pending(0)]);
    let mut later = mine(1);
    later.claim = Some(crate::crd::Claim {
        holder: ME.into(),
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(99)),
    });
    let mut after = status_of(&spec, vec![later, pending(0)]);
    carry_transition_times(Some(&before), &mut after);
    assert_eq!(before.conditions, after.conditions);
}

// ---- Section 7: idempotency keys --------------------------------------------------------------

#[test]
fn key_already_done_skips_the_apply_and_names_who_did_it() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let done =
        ApplyFacts { idempotency: Idempotency::AlreadyDone { by: "first".into() }, ..facts(&spec) };
    let status = project(&done, &children(vec![pending(0), pending(0)]));
    assert_eq!(status.phase, Some(ApplyPhase::Skipped));
    assert!(status.message.contains("`first`"), "{}", status.message);
}

#[test]
fn key_in_flight_elsewhere_waits_pending_with_duplicate_reason() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let waiting = ApplyFacts {
        idempotency: Idempotency::InFlightElsewhere { holder: "first".into() },
        ..facts(&spec)
    };
    let children = children(vec![pending(0), pending(0)]);
    let status = project(&waiting, &children);
    assert_eq!(status.phase, Some(ApplyPhase::Pending));
    let reconciling =
        status.conditions.iter().find(|c| c.type_ == condition::RECONCILING).expect("condition");
    assert_eq!(reconciling.reason, reason::DUPLICATE_IN_FLIGHT);
    let health = BTreeMap::new();
    let plan = decide(&Observed {
        apply: waiting,
        children: &children,
        lease: LeaseState::Held,
        holder: ME,
        health: &health,
        previous: None,
        now: at(0),
    });
    assert!(plan.writes.is_empty());
}

#[test]
fn key_done_elsewhere_skips_what_is_left_even_after_a_start() {
    let spec = spec(3, FailurePolicy::Halt, 1);
    let done =
        ApplyFacts { idempotency: Idempotency::AlreadyDone { by: "other".into() }, ..facts(&spec) };
    let status = project(&done, &children(vec![succeeded(1), pending(1), pending(0)]));
    assert_eq!(status.phase, Some(ApplyPhase::Skipped));
}

#[test]
fn waiting_for_a_key_after_a_start_says_so() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let waiting = ApplyFacts {
        idempotency: Idempotency::InFlightElsewhere { holder: "other".into() },
        ..facts(&spec)
    };
    let status = project(&waiting, &children(vec![succeeded(1), pending(0)]));
    assert_eq!(status.phase, Some(ApplyPhase::Running));
    assert!(status.message.contains("waiting: Apply `other`"), "{}", status.message);
    let reconciling =
        status.conditions.iter().find(|c| c.type_ == condition::RECONCILING).expect("condition");
    assert_eq!(reconciling.reason, reason::DUPLICATE_IN_FLIGHT);
}

#[test]
fn an_interrupted_dismissal_leaves_the_current_error_to_finish_next_pass() {
    let mut spec = spec(3, FailurePolicy::Halt, 1);
    spec.dismiss_error = Some("a-1".into());
    let plan = plan(&spec, vec![failed(1), failed(1), pending(0)]);
    let order: Vec<_> =
        writes(&plan).into_iter().filter(|(_, kind, _)| *kind == WriteKind::Dismiss).collect();
    assert_eq!(
        order,
        vec![
            ("b".into(), WriteKind::Dismiss, OperationPhase::Pending),
            ("a".into(), WriteKind::Dismiss, OperationPhase::Pending)
        ]
    );
}

#[test]
fn notes_are_recorded_only_for_writes_that_went_through() {
    // Under Continue, a failing `a` is finished and `c` claimed in the same pass.
    let spec = spec(3, FailurePolicy::Continue, 2);
    let unhealthy = Health::Unhealthy("Job `x` failed".into());
    let plan = plan_with(&spec, vec![mine(1), mine(1), pending(0)], &[("a", unhealthy)], 10);
    assert_eq!(writes(&plan).len(), 2, "{plan:?}");
    let failed = |plan: &Plan, made: &[bool]| {
        plan.notes_for(made)
            .any(|note| matches!(note, Note::Failed { operation, .. } if operation == "a"))
    };
    assert!(failed(&plan, &[true, false]));
    assert!(!failed(&plan, &[false, true]), "the failure was not written");
}

#[test]
fn successes_and_claims_make_no_events_but_failures_do() {
    let spec = spec(3, FailurePolicy::Continue, 3);
    let health = [("a", Health::Healthy), ("b", Health::Unhealthy("Job `x` failed".into()))];
    let plan = plan_with(&spec, vec![mine(1), mine(1), pending(0)], &health, 10);
    assert_eq!(writes(&plan).len(), 3, "{plan:?}");
    let notes: Vec<_> = plan.notes.iter().filter(|note| note.operation().is_some()).collect();
    assert!(
        matches!(notes.as_slice(), [Note::Failed { operation, .. }] if operation == "b"),
        "{notes:?}"
    );
}

#[test]
fn a_window_is_claimed_side_by_side_after_the_writes_before_it_and_a_dismissal_alone() {
    // Rule 3: two finishes, then the window's two claims side by side, in a batch of their own.
    let spec = spec(4, FailurePolicy::Halt, 2);
    let health = [("a", Health::Healthy), ("b", Health::Healthy)];
    let plan = plan_with(&spec, vec![mine(1), mine(1), pending(0), pending(0)], &health, 10);
    let kinds: Vec<_> = writes(&plan).into_iter().map(|(_, kind, _)| kind).collect();
    assert_eq!(kinds, [WriteKind::Finish, WriteKind::Finish, WriteKind::Claim, WriteKind::Claim]);
    assert_eq!(plan.batches(), vec![0..2, 2..4]);
    assert_eq!(plan.then(), Then::ObserveAndDecide, "what was claimed runs in the same pass");
    // Creating the missing operations is one batch.
    let create = decide(&Observed {
        apply: facts(&spec),
        children: &[],
        lease: LeaseState::Held,
        holder: ME,
        health: &BTreeMap::new(),
        previous: None,
        now: at(10),
    });
    assert_eq!(create.batches(), vec![0..4]);
    assert_eq!(WriteKind::Dismiss.batching(), Batching::Alone);
    assert_eq!(WriteKind::Stop.batching(), WriteKind::Resume.batching());
}

#[test]
fn a_lost_lower_claim_is_claimed_first_in_the_next_pass() {
    // Rule 3: `b`'s claim lost while `c`'s won: `b` is Pending under a Running `c` until the
    // next pass, which claims it first; nothing above it goes ahead of it.
    let spec = spec(5, FailurePolicy::Halt, 3);
    let statuses = vec![mine(1), pending(0), mine(1), pending(0), pending(0)];
    let plan = plan(&spec, statuses);
    assert_eq!(
        writes(&plan),
        vec![("b".into(), WriteKind::Claim, OperationPhase::Running)],
        "the gap first, and the window is full after it"
    );
}

#[test]
fn a_stop_withdrawn_before_it_reached_a_running_operation_resumes_once_that_one_ends() {
    // The stop reached `a` and `b`, not `c` (its write failed), and was withdrawn.
    let spec = spec(4, FailurePolicy::Halt, 3);
    let statuses = vec![stopped(1), stopped(1), mine(1), stopped(0)];
    let waiting = plan(&spec, statuses.clone());
    assert!(writes(&waiting).is_empty(), "no resume under a running operation: {waiting:?}");
    let mut ended = statuses;
    ended[2] = succeeded(1);
    let resumed: Vec<_> = writes(&plan(&spec, ended)).into_iter().map(|(n, k, _)| (n, k)).collect();
    assert!(resumed.contains(&("a".into(), WriteKind::Resume)), "{resumed:?}");
    assert!(resumed.contains(&("d".into(), WriteKind::Resume)), "{resumed:?}");
}

// Lifecycle edges: what deleting, recreating or editing a child, or deleting the Apply's
// namespace, does (the README's Decisions).

/// Decides with `facts` instead of the fixture's.
fn plan_as(facts: ApplyFacts<'_>, children: &[Child], lease: LeaseState) -> Plan {
    let health = BTreeMap::new();
    decide(&Observed {
        apply: facts,
        children,
        lease,
        holder: ME,
        health: &health,
        previous: None,
        now: at(10),
    })
}

#[test]
fn a_vanished_operation_of_an_apply_whose_operations_were_created_is_recreated_as_a_record() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let mut present = children(vec![succeeded(1), pending(0)]);
    present.remove(0);
    let created = ApplyFacts { operations_created: true, ..facts(&spec) };
    let plan = plan_as(created, &present, LeaseState::Held);
    assert_eq!(
        plan.writes,
        vec![OperationWrite::Create { index: 0, name: "a".into(), recreated: true }]
    );
    let fresh = plan_as(facts(&spec), &present, LeaseState::Held);
    assert_eq!(
        fresh.writes,
        vec![OperationWrite::Create { index: 0, name: "a".into(), recreated: false }],
        "before every Operation was created once, a missing one was never there"
    );
}

#[test]
fn a_first_pass_cut_short_between_its_creations_creates_the_rest_without_lost_records() {
    // The finalizer went on beside the creations and the process died after the first one:
    // nothing ran, so what is missing was never there.
    let spec = spec(3, FailurePolicy::Halt, 1);
    let mut partial = children(vec![pending(0), pending(0), pending(0)]);
    partial.truncate(1);
    let phases =
        |children: &[Child]| children.iter().map(|child| child.status.phase).collect::<Vec<_>>();
    assert!(
        !all_created(false, phases(&partial).into_iter()),
        "some Operations present are no evidence"
    );
    let cut_short = ApplyFacts {
        finalizer: true,
        operations_created: all_created(false, phases(&partial).into_iter()),
        ..facts(&spec)
    };
    let plan = plan_as(cut_short, &partial, LeaseState::Held);
    assert_eq!(
        plan.writes,
        vec![
            OperationWrite::Create { index: 1, name: "b".into(), recreated: false },
            OperationWrite::Create { index: 2, name: "c".into(), recreated: false },
        ]
    );
    // Once a step left Pending (claims come only after every creation), or the status has a
    // phase, a missing Operation was deleted.
    let mut claimed = children(vec![running(ME, 1), pending(0), pending(0)]);
    claimed.truncate(2);
    assert!(all_created(false, phases(&claimed).into_iter()));
    assert!(all_created(true, phases(&partial).into_iter()));
}

#[test]
fn a_recreated_operation_is_lost_never_claimed_and_runs_again_only_by_dismissal() {
    let mut spec = spec(2, FailurePolicy::Halt, 1);
    let mut recreated = children(vec![pending(0), pending(0)]);
    recreated[0].recreated = true;
    let plan = plan_as(facts(&spec), &recreated, LeaseState::Held);
    assert_eq!(writes(&plan), vec![("a".into(), WriteKind::Lost, OperationPhase::Failed)]);
    assert!(plan.notes.contains(&Note::Lost { operation: "a".into() }));
    let status = plan.status.expect("a status");
    assert_eq!(status.phase, Some(ApplyPhase::Failed));
    let error = status.error.expect("the lost step is the error");
    assert_eq!(error.reason, "Lost");
    assert_eq!(error.id, "a-0-uid-0", "a recreated record's ids carry its uid");

    // Dismissed on purpose: the step runs again, and is never marked lost a second time.
    let OperationWrite::Status { status: lost, .. } = &plan.writes[0] else { panic!("a write") };
    recreated[0].status = (**lost).clone();
    spec.dismiss_error = Some(error.id);
    let plan = plan_as(facts(&spec), &recreated, LeaseState::Held);
    assert_eq!(
        writes(&plan),
        vec![
            ("a".into(), WriteKind::Dismiss, OperationPhase::Pending),
            ("a".into(), WriteKind::Claim, OperationPhase::Running),
        ]
    );
}

#[test]
fn an_error_id_is_never_reused_when_a_failed_operation_is_recreated() {
    let mut spec = spec(1, FailurePolicy::Halt, 1);
    // `a-1` was dismissed and stands in the spec; the Operation is deleted and recreated, and
    // fails again on its own attempt 1.
    spec.dismiss_error = Some("a-1".into());
    let mut again = children(vec![failed(1)]);
    again[0].recreated = true;
    let plan = plan_as(facts(&spec), &again, LeaseState::Held);
    assert!(
        !writes(&plan).iter().any(|(_, kind, _)| *kind == WriteKind::Dismiss),
        "a standing dismissal of an earlier incarnation dismisses nothing"
    );
    assert_eq!(plan.status.and_then(|s| s.error).map(|e| e.id), Some("a-1-uid-0".into()));
}

#[test]
fn a_dismissal_by_the_current_id_works_while_stopped_and_the_stop_parks_what_it_reset() {
    let mut spec = spec(3, FailurePolicy::Halt, 1);
    spec.stop = true;
    spec.dismiss_error = Some("a-1".into());
    let plan = plan(&spec, vec![failed(1), stopped(0), stopped(0)]);
    assert_eq!(
        writes(&plan),
        vec![
            ("a".into(), WriteKind::Dismiss, OperationPhase::Pending),
            ("a".into(), WriteKind::Stop, OperationPhase::Stopped),
        ]
    );
    assert!(plan.notes.contains(&Note::ErrorDismissed { id: "a-1".into() }));
    let status = plan.status.expect("a status");
    assert_eq!(status.phase, Some(ApplyPhase::Stopped), "resumable: a resume runs it");
    assert_eq!(status.error, None);
}

#[test]
fn a_deleted_apply_stops_what_runs_without_its_lease() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let deleting = ApplyFacts { deleting: true, finalizer: true, ..facts(&spec) };
    let present = children(vec![running(ME, 1), pending(0)]);
    let plan = plan_as(deleting, &present, LeaseState::NotHeld);
    assert_eq!(
        writes(&plan),
        vec![
            ("a".into(), WriteKind::Stop, OperationPhase::Stopped),
            ("b".into(), WriteKind::Stop, OperationPhase::Stopped),
        ]
    );
    let live = plan_as(facts(&spec), &present, LeaseState::NotHeld);
    assert_eq!(live, Plan::default(), "a live Apply's writes still need the lease");
}

#[test]
fn a_deleted_apply_whose_operations_vanished_recreates_nothing() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let deleting =
        ApplyFacts { deleting: true, finalizer: true, operations_created: true, ..facts(&spec) };
    let plan = plan_as(deleting, &[], LeaseState::NotHeld);
    assert!(plan.writes.is_empty(), "the namespace is going: {:?}", plan.writes);
}

#[test]
fn hand_edits_are_followed_as_records_and_never_run_a_step_again() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    // A pending step marked Succeeded by hand is skipped, never run.
    let edited = plan(&spec, vec![succeeded(0), pending(0)]);
    assert_eq!(writes(&edited), vec![("b".into(), WriteKind::Claim, OperationPhase::Running)]);
    // A running step marked Failed by hand fails the rollout; nothing runs it again.
    let failed_by_hand = plan(&spec, vec![failed(1), pending(0)]);
    assert!(writes(&failed_by_hand).is_empty());
    assert_eq!(failed_by_hand.status.and_then(|s| s.phase), Some(ApplyPhase::Failed));
}

// Section 9: clusters.

#[test]
fn an_unreachable_cluster_keeps_the_operation_running_and_says_since_when() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let why = "cluster `us` unreachable since 2027-01-15T08:00:00Z: connection refused";
    let plan = plan_with(
        &spec,
        vec![running(ME, 1), pending(0)],
        &[("a", Health::Waiting(why.into()))],
        10,
    );
    assert_eq!(writes(&plan), vec![("a".into(), WriteKind::Waiting, OperationPhase::Running)]);
    let OperationWrite::Status { status, .. } = &plan.writes[0] else { panic!("a write") };
    assert_eq!(status.message.as_deref(), Some(why));
    assert!(plan.requeue_after.is_some(), "its timeout still decides");
    // Said once: the next check with the same message writes nothing.
    let said = OperationStatus { message: Some(why.into()), ..running(ME, 1) };
    let again = plan_with(&spec, vec![said, pending(0)], &[("a", Health::Waiting(why.into()))], 20);
    assert!(again.writes.is_empty());
}

#[test]
fn an_unreachable_cluster_times_out_naming_it() {
    let spec = spec(1, FailurePolicy::Halt, 1);
    let why = "cluster `us` unreachable since 2027-01-15T08:00:00Z: connection refused";
    let plan = plan_with(&spec, vec![running(ME, 1)], &[("a", Health::Waiting(why.into()))], 601);
    assert_eq!(writes(&plan), vec![("a".into(), WriteKind::Finish, OperationPhase::Failed)]);
    let OperationWrite::Status { status, .. } = &plan.writes[0] else { panic!("a write") };
    assert_eq!(status.reason.as_deref(), Some("Timeout"));
    let message = status.message.clone().unwrap_or_default();
    assert!(message.contains("timeout of 10m") && message.contains("cluster `us`"), "{message}");
}

// Section 11: gates and the failure budget.

/// A spec whose operation `name` requires approval.
fn gated(mut spec: ApplySpec, name: &str) -> ApplySpec {
    for entry in spec.operations.iter_mut().filter(|entry| entry.name == name) {
        entry.approval = Some(crate::crd::Approval::Required);
    }
    spec
}

#[test]
fn the_window_stops_at_an_unapproved_operation_even_with_room() {
    let spec = gated(spec(5, FailurePolicy::Halt, 3), "b");
    let plan = plan(&spec, vec![pending(0); 5]);
    assert_eq!(writes(&plan), vec![("a".into(), WriteKind::Claim, OperationPhase::Running)]);
    let status = plan.status.expect("a status");
    assert_eq!(status.phase, Some(ApplyPhase::Running));
    let reconciling = status.conditions.iter().find(|c| c.type_ == "Reconciling");
    assert_eq!(reconciling.map(|c| c.reason.as_str()), Some("AwaitingApproval"));
    assert!(status.message.contains("operation `b` awaits approval"), "{}", status.message);
}

#[test]
fn an_approved_operation_is_claimed_and_records_its_approval() {
    let mut spec = gated(spec(2, FailurePolicy::Halt, 2), "b");
    spec.approvals = vec!["b".into()];
    let children = children(vec![succeeded(1), pending(0)]);
    let mut facts = facts(&spec);
    let record = crate::crd::ApprovalRecord { by: "kubectl-baton".into(), at: Some(Time(at(5))) };
    facts.approvers.insert("b".into(), record.clone());
    let plan = plan_as(facts, &children, LeaseState::Held);
    assert_eq!(writes(&plan), vec![("b".into(), WriteKind::Claim, OperationPhase::Running)]);
    let OperationWrite::Status { status, .. } = &plan.writes[0] else { panic!("a write") };
    assert_eq!(status.approval, Some(record));
}

#[test]
fn an_approval_withdrawn_before_the_claim_closes_the_gate_again() {
    let spec = gated(spec(2, FailurePolicy::Halt, 1), "b");
    // `b` was approved, then the name removed before its claim: it waits again.
    let plan = plan(&spec, vec![succeeded(1), pending(0)]);
    assert!(plan.writes.is_empty());
    // After the claim, withdrawing changes nothing: a running operation is not touched.
    let running = plan_with(&spec, vec![succeeded(1), running(ME, 1)], &[], 10);
    assert!(running.writes.is_empty());
}

#[test]
fn a_stop_parks_an_unapproved_operation_like_any_pending_one() {
    let mut spec = gated(spec(2, FailurePolicy::Halt, 1), "b");
    spec.stop = true;
    let plan = plan(&spec, vec![succeeded(1), pending(0)]);
    assert_eq!(writes(&plan), vec![("b".into(), WriteKind::Stop, OperationPhase::Stopped)]);
}

/// A spec whose operation `name` soaks for `soak`.
fn soaking(mut spec: ApplySpec, name: &str, soak: &str) -> ApplySpec {
    for entry in spec.operations.iter_mut().filter(|entry| entry.name == name) {
        entry.soak = Some(soak.into());
    }
    spec
}

#[test]
fn a_soaking_operation_succeeds_only_after_healthy_for_its_soak() {
    let spec = soaking(spec(1, FailurePolicy::Halt, 1), "a", "60s");
    let healthy = [("a", Health::Healthy)];
    let plan = plan_with(&spec, vec![running(ME, 1)], &healthy, 10);
    assert_eq!(writes(&plan), vec![("a".into(), WriteKind::Waiting, OperationPhase::Running)]);
    let OperationWrite::Status { status: soak, .. } = &plan.writes[0] else { panic!("a write") };
    assert_eq!(soak.soak_until.as_ref().map(|t| t.0), Some(at(70)), "the status says when");
    assert_eq!(plan.requeue_after, Some(std::time::Duration::from_secs(60)));
    let still = plan_with(&spec, vec![(**soak).clone()], &healthy, 40);
    assert!(still.writes.is_empty(), "healthy, still soaking");
    let done = plan_with(&spec, vec![(**soak).clone()], &healthy, 70);
    assert_eq!(writes(&done), vec![("a".into(), WriteKind::Finish, OperationPhase::Succeeded)]);
}

#[test]
fn a_failure_during_the_soak_fails_it_and_a_break_starts_it_again() {
    let spec = soaking(spec(1, FailurePolicy::Halt, 1), "a", "60s");
    let soak = transitions::soak_started(&running(ME, 1), at(10), at(70)).expect("soaking");
    let failed =
        plan_with(&spec, vec![soak.clone()], &[("a", Health::Unhealthy("Job failed".into()))], 30);
    assert_eq!(writes(&failed), vec![("a".into(), WriteKind::Finish, OperationPhase::Failed)]);
    let broken = plan_with(&spec, vec![soak], &[("a", Health::Progressing)], 30);
    assert_eq!(writes(&broken), vec![("a".into(), WriteKind::Waiting, OperationPhase::Running)]);
    let OperationWrite::Status { status, .. } = &broken.writes[0] else { panic!("a write") };
    assert_eq!(status.soak_until, None, "the soak starts again once healthy");
}

#[test]
fn the_timeout_counts_the_soak() {
    let spec = soaking(spec(1, FailurePolicy::Halt, 1), "a", "20m");
    let soak = transitions::soak_started(&running(ME, 1), at(0), at(1200)).expect("soaking");
    let plan = plan_with(&spec, vec![soak], &[("a", Health::Healthy)], 601);
    assert_eq!(writes(&plan), vec![("a".into(), WriteKind::Finish, OperationPhase::Failed)]);
}

#[test]
fn within_the_failure_budget_halt_goes_on_degraded_and_acts_on_the_failure_beyond_it() {
    let mut spec = spec(5, FailurePolicy::Halt, 1);
    spec.max_failed = Some(IntOrString::Int(1));
    let one = plan(&spec, vec![failed(1), pending(0), pending(0), pending(0), pending(0)]);
    assert_eq!(writes(&one), vec![("b".into(), WriteKind::Claim, OperationPhase::Running)]);
    let status = one.status.expect("a status");
    assert_eq!(status.phase, Some(ApplyPhase::Running));
    assert!(status.conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "True"));
    let two = plan(&spec, vec![failed(1), failed(1), pending(0), pending(0), pending(0)]);
    assert!(two.writes.is_empty(), "the second failure exceeds the budget: no claim");
    assert_eq!(two.status.and_then(|s| s.phase), Some(ApplyPhase::Failed));
}

#[test]
fn a_percentage_budget_rounds_down_and_the_verdict_still_fails() {
    let mut spec = spec(5, FailurePolicy::Halt, 1);
    spec.max_failed = Some(IntOrString::String("20%".into()));
    assert_eq!(facts(&spec).failure_budget(), 1);
    let ended =
        plan(&spec, vec![failed(1), succeeded(1), succeeded(1), succeeded(1), succeeded(1)]);
    assert_eq!(ended.status.and_then(|s| s.phase), Some(ApplyPhase::Failed));
    spec.max_failed = Some(IntOrString::String("10%".into()));
    assert_eq!(facts(&spec).failure_budget(), 0, "10% of 5 rounds down to 0");
}

#[test]
fn the_finalizer_goes_on_beside_the_creations_only_when_claims_follow_them() {
    let open = spec(2, FailurePolicy::Halt, 1);
    let creations = plan_as(facts(&open), &[], LeaseState::Held);
    assert!(creations.add_finalizer && !creations.finalizer_first(), "beside the creations");
    let mut gated = open.clone();
    gated.operations[0].approval = Some(crate::crd::Approval::Required);
    let waiting = plan_as(facts(&gated), &[], LeaseState::Held);
    assert!(!waiting.add_finalizer, "an Apply that claims nothing gets no finalizer");
    let claims = plan(&open, vec![pending(0), pending(0)]);
    assert!(claims.add_finalizer && claims.finalizer_first(), "before the first claim");
}

// Section 1: what counts as a child.

const APPLY_UID: &str = "uid-r";

/// The Operation baton creates for step `index` of Apply `r` in `spec`.
fn child_of(spec: &ApplySpec, index: u32) -> crate::crd::Operation {
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "baton.dev/v1alpha1".into(),
        kind: "Apply".into(),
        name: "r".into(),
        uid: APPLY_UID.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let spec = expected_spec(spec, index).expect("an entry");
    crate::crd::Operation {
        metadata: kube::api::ObjectMeta {
            name: Some(operation_name("r", &spec.name)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

#[test]
fn section_1_the_operation_baton_creates_is_a_child() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    let owned = vec![child_of(&spec, 0), child_of(&spec, 1)];
    let (children, foreign) = sort_owned("r", APPLY_UID, &spec, owned);
    assert_eq!(children.len(), 2);
    assert_eq!(foreign, Vec::new());
    assert_eq!(manifests_differ(&spec, &children[0].spec), None);
}

#[test]
fn section_1_an_operation_under_another_name_a_wrong_index_or_owner_or_spec_is_foreign() {
    let spec = spec(2, FailurePolicy::Halt, 1);
    // Another name, with a copy of a real child's spec (the forged `r-zz-forged`).
    let mut renamed = child_of(&spec, 1);
    renamed.metadata.name = Some("r-zz-forged".into());
    // An index the Apply does not have.
    let mut beyond = child_of(&spec, 1);
    beyond.metadata.name = Some("r-x".into());
    beyond.spec.index = 7;
    // The right name, owned but not controlled by the Apply.
    let mut uncontrolled = child_of(&spec, 0);
    if let Some(owner) = uncontrolled.metadata.owner_references.as_mut().and_then(|o| o.first_mut())
    {
        owner.controller = Some(false);
    }
    // The right name and index, another target.
    let mut retargeted = child_of(&spec, 1);
    retargeted.spec.target.namespace = "kube-system".into();
    let owned = vec![renamed, beyond, uncontrolled, retargeted];
    let (children, foreign) = sort_owned("r", APPLY_UID, &spec, owned);
    assert!(children.is_empty());
    let reasons: Vec<(&str, &str)> =
        foreign.iter().map(|f| (f.name.as_str(), f.reason.as_str())).collect();
    assert_eq!(
        reasons,
        vec![
            ("r-a", "the Apply is not its controller"),
            ("r-b", "its spec is not a copy of operation `b`"),
            ("r-x", "the Apply has no operation #7"),
            ("r-zz-forged", "operation #1 is the Operation `r-b`"),
        ]
    );
}

#[test]
fn section_1_an_operation_whose_manifests_are_not_its_steps_is_never_applied() {
    let spec = spec(1, FailurePolicy::Halt, 1);
    let mut squatter = child_of(&spec, 0);
    squatter.spec.manifests = vec![serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}
    })];
    // Everything but the manifests is the child's: it passes the cheap check ...
    assert_eq!(why_foreign("r", APPLY_UID, &spec, &squatter), None);
    // ... and is refused when its manifests are read, before a run applies them.
    let why = manifests_differ(&spec, &squatter.spec);
    assert_eq!(
        why.as_deref(),
        Some("its manifests are not those of operation `a` expanded with its values")
    );
}

#[test]
fn section_1_foreign_operations_are_reported_on_the_status_and_in_one_event() {
    let spec = spec(1, FailurePolicy::Halt, 1);
    let foreign = vec![Foreign {
        name: "r-zz-forged".into(),
        reason: "operation #0 is the Operation `r-a`".into(),
    }];
    let facts = ApplyFacts { foreign: &foreign, ..facts(&spec) };
    let children = children(vec![pending(0)]);
    let health = BTreeMap::new();
    let observed = |previous| Observed {
        apply: facts.clone(),
        children: &children,
        lease: LeaseState::Held,
        holder: ME,
        health: &health,
        previous,
        now: at(10),
    };
    let first = decide(&observed(None));
    let status = first.status.clone().expect("a status");
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::FOREIGN_OPERATIONS)
        .expect("the status says so");
    assert_eq!(condition.status, "True");
    assert!(condition.message.contains("`r-zz-forged`") && condition.message.contains("never run"));
    let said = |plan: &Plan| {
        plan.notes.iter().filter(|n| matches!(n, Note::ForeignOperations { .. })).count()
    };
    assert_eq!(said(&first), 1, "an Event says so");
    let again = decide(&observed(Some(&status)));
    assert_eq!(said(&again), 0, "once, not every pass");
    // The foreign Operation takes no part in the rollout: the child is claimed as usual.
    assert!(first.writes.iter().any(|w| matches!(w,
        OperationWrite::Status { name, kind: WriteKind::Claim, .. } if name == "a")));
}
