//! `project(apply, children) -> status`: the parent status as a pure function of the Apply's
//! spec and its operations. Every timestamp comes from the children, so two replicas that read
//! the same objects write the same status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::facts::{ApplyFacts, Idempotency, Roster, Slot};
use super::{Child, condition, describe_foreign, gate, reason, stop};
use crate::crd::{
    ApplyError, ApplyPhase, ApplySpec, ApplyStatus, DismissedError, FailurePolicy, OperationCounts,
    OperationPhase,
};

/// How many running operations `status.current` names before it summarises the rest.
const CURRENT_NAMES_SHOWN: usize = 3;

/// Projects the Apply's status from its spec and children. Pure and deterministic.
pub fn project(facts: &ApplyFacts<'_>, children: &[Child]) -> ApplyStatus {
    project_roster(facts, &Roster::new(facts.spec, children))
}

/// [`project`] of a roster already built.
pub(crate) fn project_roster(facts: &ApplyFacts<'_>, roster: &Roster<'_>) -> ApplyStatus {
    let counts = roster.counts();
    let error = roster.first_error();
    let last_dismissed_error = roster.last_dismissed();
    let stopping = stop::in_effect(facts);
    let awaiting = gate::awaiting_approval(facts, roster);
    let started = roster.started();
    let roster = roster.slots();
    let active = counts.running + counts.pending;
    let phase = phase(facts, &counts, error.is_some(), stopping, started || awaiting.is_some());
    let stop = stop::status(facts, roster, active, latest_end(roster));
    let completed_at = phase
        .is_terminal()
        .then(|| match phase {
            ApplyPhase::Skipped => facts.created_at,
            _ => latest_end(roster).or(facts.created_at),
        })
        .flatten()
        .map(Time);
    let current = current_names(roster);
    let message = message(facts, phase, &counts, error.as_ref(), &current, awaiting, stopping);
    let as_of = Time(latest_change(roster).or(facts.created_at).unwrap_or(Timestamp::UNIX_EPOCH));
    let conditions = conditions(
        facts,
        phase,
        &message,
        error.as_ref(),
        last_dismissed_error.as_ref(),
        as_of,
        reconciling_reason(facts, stopping, awaiting),
    );

    ApplyStatus {
        phase: Some(phase),
        message,
        progress: format!("{}/{}", counts.succeeded, counts.total),
        current,
        operations: counts,
        error,
        stop,
        last_dismissed_error,
        started_at: roster
            .iter()
            .filter_map(|slot| slot.status.first_started_at.clone())
            .min_by_key(|t| t.0),
        completed_at,
        observed_generation: facts.generation,
        conditions,
    }
}

/// The Apply's phase from its operations' counts: `stopping` is a stop in effect, `moving`
/// that an operation started or the window waits at an approval.
fn phase(
    facts: &ApplyFacts<'_>,
    counts: &OperationCounts,
    failed: bool,
    stopping: bool,
    moving: bool,
) -> ApplyPhase {
    let active = counts.running + counts.pending;
    let phase = if counts.succeeded == counts.total {
        ApplyPhase::Succeeded
    } else if stopping {
        stop::phase(active, counts.failed, moving)
    } else if failed {
        // Under `Continue`, or within the failure budget, the rollout goes on past a failure.
        match (facts.policy(), counts.running) {
            _ if !facts.failures_stop_the_rollout(counts.failed) && active + counts.stopped > 0 => {
                ApplyPhase::Running
            }
            (FailurePolicy::Pause, 0) => ApplyPhase::Paused,
            (_, 0) => ApplyPhase::Failed,
            _ => ApplyPhase::Running,
        }
    } else if moving {
        ApplyPhase::Running
    } else {
        ApplyPhase::Pending
    };
    // Another Apply already rolled the change out: whatever was left here is skipped, not waited
    // for (the claim gate stays shut).
    match phase {
        ApplyPhase::Pending | ApplyPhase::Running
            if counts.running == 0
                && !stopping
                && matches!(facts.idempotency, Idempotency::AlreadyDone { .. }) =>
        {
            ApplyPhase::Skipped
        }
        phase => phase,
    }
}

/// Keeps a condition's `lastTransitionTime` from the previous status when its status did not
/// change, so an unchanged projection writes nothing.
pub fn carry_transition_times(previous: Option<&ApplyStatus>, next: &mut ApplyStatus) {
    let Some(previous) = previous else { return };
    for condition in &mut next.conditions {
        if let Some(before) = previous
            .conditions
            .iter()
            .find(|before| before.type_ == condition.type_ && before.status == condition.status)
        {
            condition.last_transition_time = before.last_transition_time.clone();
        }
    }
}

fn latest_end(roster: &[Slot<'_>]) -> Option<Timestamp> {
    roster
        .iter()
        .flat_map(|slot| [&slot.status.completed_at, &slot.status.stopped_at])
        .filter_map(|time| time.as_ref().map(|t| t.0))
        .max()
}

fn latest_change(roster: &[Slot<'_>]) -> Option<Timestamp> {
    roster
        .iter()
        .flat_map(|slot| {
            let status = &slot.status;
            [
                status.claim.as_ref().map(|claim| claim.at.0),
                status.started_at.as_ref().map(|t| t.0),
                status.completed_at.as_ref().map(|t| t.0),
                status.stopped_at.as_ref().map(|t| t.0),
                status.dismissed.as_ref().map(|d| d.at.0),
            ]
        })
        .flatten()
        .max()
}

fn current_names(roster: &[Slot<'_>]) -> String {
    let running: Vec<&str> = roster
        .iter()
        .filter(|slot| slot.status.phase == OperationPhase::Running)
        .map(|slot| slot.name)
        .collect();
    let mut shown = running.iter().take(CURRENT_NAMES_SHOWN).copied().collect::<Vec<_>>().join(",");
    if running.len() > CURRENT_NAMES_SHOWN {
        shown.push_str(&format!(" +{}", running.len() - CURRENT_NAMES_SHOWN));
    }
    shown
}

/// The message of an Apply still running past a failure: continuing (`Continue`, or within
/// the failure budget), or waiting for what runs before it stops.
fn running_past(
    facts: &ApplyFacts<'_>,
    counts: &OperationCounts,
    error: &ApplyError,
    current: &str,
    done: &str,
) -> String {
    match facts.policy() {
        FailurePolicy::Continue => {
            format!("{done}, running {current}; continuing past: {}", describe(error))
        }
        _ if !facts.failures_stop_the_rollout(counts.failed) => format!(
            "{done}, running {current}; within the failure budget ({} of {} may fail): {}",
            counts.failed,
            facts.failure_budget(),
            describe(error)
        ),
        _ => format!(
            "{}; waiting for {} running operation(s) ({current}) before stopping the rollout",
            describe(error),
            counts.running
        ),
    }
}

fn describe(error: &ApplyError) -> String {
    format!("operation `{}` failed ({}): {}", error.operation, error.reason, error.message)
}

fn message(
    facts: &ApplyFacts<'_>,
    phase: ApplyPhase,
    counts: &OperationCounts,
    error: Option<&ApplyError>,
    current: &str,
    awaiting: Option<&str>,
    stopping: bool,
) -> String {
    let done = format!("{}/{} succeeded", counts.succeeded, counts.total);
    if let (ApplyPhase::Running, Some(name)) = (phase, awaiting) {
        let running =
            if current.is_empty() { String::new() } else { format!(", running {current}") };
        let past = error
            .map(|error| format!("; continuing past: {}", describe(error)))
            .unwrap_or_default();
        return format!(
            "{done}{running}; operation `{name}` awaits approval: add it to spec.approvals \
             (kubectl baton approve){past}"
        );
    }
    match (phase, error) {
        (ApplyPhase::Skipped, _) => match &facts.idempotency {
            Idempotency::AlreadyDone { by } => {
                format!(
                    "skipped: Apply `{by}` already rolled out this change (same idempotency key)"
                )
            }
            _ => "skipped".to_owned(),
        },
        (ApplyPhase::Pending, _) => match &facts.idempotency {
            Idempotency::InFlightElsewhere { holder } => {
                format!("waiting: Apply `{holder}` is rolling out the same idempotency key")
            }
            _ if stopping => "stopping before any operation started".to_owned(),
            _ => format!("waiting to start {} operations", counts.total),
        },
        (ApplyPhase::Succeeded, _) => format!("all {} operations succeeded", counts.total),
        (ApplyPhase::Failed, Some(error)) => {
            format!("{}; retry it with spec.dismissError: {}", describe(error), error.id)
        }
        (ApplyPhase::Paused, Some(error)) => format!(
            "paused: {}; retry it with spec.dismissError: {}, or stop with spec.stop: true",
            describe(error),
            error.id
        ),
        (ApplyPhase::Stopped, _) => {
            format!("stopped: {done}, {} stopped; set spec.stop: false to resume", counts.stopped)
        }
        (ApplyPhase::Running, _) if stopping => format!(
            "stopping: waiting for {} running operation(s) ({current}) to stop; {done}",
            counts.running
        ),
        (ApplyPhase::Running, Some(error)) => running_past(facts, counts, error, current, &done),
        (ApplyPhase::Running, _)
            if current.is_empty() && facts.idempotency.waiting_for().is_some() =>
        {
            format!(
                "{done}; waiting: Apply `{}` is rolling out the same idempotency key",
                facts.idempotency.waiting_for().unwrap_or_default()
            )
        }
        (ApplyPhase::Running, None) if current.is_empty() => {
            format!("{done}; claiming the next operation")
        }
        (ApplyPhase::Running, None) => format!("{done}, running {current}"),
        (ApplyPhase::Failed | ApplyPhase::Paused, None) => done,
    }
}

/// Why an Apply that is `Pending` or `Running` is reconciling.
fn reconciling_reason(
    facts: &ApplyFacts<'_>,
    stopping: bool,
    awaiting: Option<&str>,
) -> &'static str {
    match (&facts.idempotency, stopping) {
        (_, true) => "Stopping",
        (Idempotency::InFlightElsewhere { .. }, _) => reason::DUPLICATE_IN_FLIGHT,
        _ if awaiting.is_some() => reason::AWAITING_APPROVAL,
        _ => "Progressing",
    }
}

fn conditions(
    facts: &ApplyFacts<'_>,
    phase: ApplyPhase,
    message: &str,
    error: Option<&ApplyError>,
    last_dismissed: Option<&DismissedError>,
    as_of: Time,
    reconciling_reason: &str,
) -> Vec<Condition> {
    let make = |type_: &str, status: bool, reason: &str, message: &str| Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: as_of.clone(),
        observed_generation: facts.generation,
    };
    let stalled_reason = error.map_or(phase.as_str(), |error| error.reason.as_str());
    let degraded = error.is_some() && !phase.is_terminal();
    let mut conditions = vec![
        make(
            condition::READY,
            matches!(phase, ApplyPhase::Succeeded | ApplyPhase::Skipped),
            phase.as_str(),
            message,
        ),
        make(
            condition::RECONCILING,
            matches!(phase, ApplyPhase::Pending | ApplyPhase::Running),
            if matches!(phase, ApplyPhase::Pending | ApplyPhase::Running) {
                reconciling_reason
            } else {
                phase.as_str()
            },
            message,
        ),
        make(
            condition::STALLED,
            matches!(phase, ApplyPhase::Failed | ApplyPhase::Paused),
            if matches!(phase, ApplyPhase::Failed | ApplyPhase::Paused) {
                stalled_reason
            } else {
                phase.as_str()
            },
            message,
        ),
        make(
            condition::DEGRADED,
            degraded,
            if degraded { "OperationFailed" } else { phase.as_str() },
            &error.filter(|_| degraded).map(describe).unwrap_or_default(),
        ),
    ];
    if !facts.foreign.is_empty() {
        conditions.push(make(
            condition::FOREIGN_OPERATIONS,
            true,
            reason::NOT_A_CHILD,
            &describe_foreign(facts.foreign),
        ));
    }
    if let Some(rejection) = dismissal_rejection(facts.spec, error, last_dismissed) {
        conditions.push(make(
            condition::DISMISSAL_REJECTED,
            true,
            reason::STALE_DISMISSAL,
            &rejection,
        ));
    }
    conditions
}

/// Why `spec.dismissError` dismisses nothing, when it names neither the current error nor the
/// one already dismissed.
pub(crate) fn dismissal_rejection(
    spec: &ApplySpec,
    error: Option<&ApplyError>,
    last_dismissed: Option<&DismissedError>,
) -> Option<String> {
    let id = spec.dismiss_error.as_deref()?;
    if error.is_some_and(|error| error.id == id) || last_dismissed.is_some_and(|last| last.id == id)
    {
        return None;
    }
    Some(match error {
        Some(error) => format!(
            "spec.dismissError `{id}` is not the current error: dismiss `{}` instead",
            error.id
        ),
        None => format!("spec.dismissError `{id}` names no error: there is nothing to dismiss"),
    })
}
