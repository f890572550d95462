//! The operation transitions SPEC.md allows, and only those. Each takes the status as read and
//! returns the status to write, or says why the transition is refused; the caller writes it with
//! the Operation's `resourceVersion` as precondition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::{condition, reason};
use crate::crd::{Claim, DismissedError, FailureReason, OperationPhase, OperationStatus};

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every applied object is healthy.
    Succeeded,
    /// The run failed; `message` names the object and what the API server or health check said.
    Failed {
        /// Why.
        reason: FailureReason,
        /// For a person.
        message: String,
    },
}

/// Why a transition was not made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The transition starts from another phase.
    #[error("operation is {actual:?}, the transition needs {expected:?}")]
    WrongPhase {
        /// The phase the transition starts from.
        expected: OperationPhase,
        /// The phase it is in.
        actual: OperationPhase,
    },
    /// Terminal phases are written once: `Succeeded` is final and a late `Failed` never
    /// replaces it.
    #[error("operation already ended {0:?}; a terminal phase is never overwritten")]
    AlreadyTerminal(OperationPhase),
    /// The claim already belongs to this holder.
    #[error("operation is already claimed by {0}")]
    AlreadyHeld(String),
}

fn expect(status: &OperationStatus, expected: OperationPhase) -> Result<(), Refused> {
    match status.phase {
        actual if actual == expected => Ok(()),
        actual if actual.is_terminal() => Err(Refused::AlreadyTerminal(actual)),
        actual => Err(Refused::WrongPhase { expected, actual }),
    }
}

/// `Pending → Running`: a new run, numbered by incrementing `attempt`.
pub fn claim(
    status: &OperationStatus,
    holder: &str,
    now: Timestamp,
) -> Result<OperationStatus, Refused> {
    expect(status, OperationPhase::Pending)?;
    let mut next = status.clone();
    next.phase = OperationPhase::Running;
    next.attempt = status.attempt.saturating_add(1);
    next.claim = Some(Claim { holder: holder.to_owned(), at: Time(now) });
    next.started_at = Some(Time(now));
    next.first_started_at = status.first_started_at.clone().or(Some(Time(now)));
    // A new run soaks afresh (a stopped operation's soak starts again on resume).
    next.healthy_since = None;
    next.soak_until = None;
    next.approval = None;
    next.reason = Some(reason::CLAIMED.to_owned());
    next.message = Some(format!("claimed by {holder} for attempt {}", next.attempt));
    set_ready(&mut next, now);
    Ok(next)
}

/// Recovery: a `Running` operation whose holder lost the lease is taken over by the new lease
/// holder in the same attempt; it re-applies (idempotent) and goes on waiting.
pub fn take_over(
    status: &OperationStatus,
    holder: &str,
    now: Timestamp,
) -> Result<OperationStatus, Refused> {
    expect(status, OperationPhase::Running)?;
    let previous = status.claim.as_ref().map(|claim| claim.holder.as_str());
    if previous == Some(holder) {
        return Err(Refused::AlreadyHeld(holder.to_owned()));
    }
    let mut next = status.clone();
    next.claim = Some(Claim { holder: holder.to_owned(), at: Time(now) });
    next.reason = Some(reason::TAKEN_OVER.to_owned());
    next.message = Some(format!(
        "taken over by {holder} from {} in attempt {}",
        previous.unwrap_or("an unknown holder"),
        status.attempt
    ));
    Ok(next)
}

/// `Running → Succeeded | Failed`, once: a terminal phase is never rewritten.
pub fn finish(
    status: &OperationStatus,
    outcome: Outcome,
    now: Timestamp,
) -> Result<OperationStatus, Refused> {
    expect(status, OperationPhase::Running)?;
    let mut next = status.clone();
    next.claim = None;
    next.completed_at = Some(Time(now));
    match outcome {
        Outcome::Succeeded => {
            next.phase = OperationPhase::Succeeded;
            next.reason = Some(reason::HEALTHY.to_owned());
            next.message = Some("every applied object is healthy".to_owned());
        }
        Outcome::Failed { reason, message } => {
            next.phase = OperationPhase::Failed;
            next.reason = Some(reason.as_str().to_owned());
            next.message = Some(message);
        }
    }
    set_ready(&mut next, now);
    Ok(next)
}

/// `Pending | Running → Stopped` on a stop request. `completedAt` stays empty: a stopped
/// operation is resumable. Objects already applied are left as they are.
pub fn stop(status: &OperationStatus, now: Timestamp) -> Result<OperationStatus, Refused> {
    match status.phase {
        OperationPhase::Pending | OperationPhase::Running => {}
        actual if actual.is_terminal() => return Err(Refused::AlreadyTerminal(actual)),
        actual => {
            return Err(Refused::WrongPhase { expected: OperationPhase::Pending, actual });
        }
    }
    let mut next = status.clone();
    next.phase = OperationPhase::Stopped;
    next.claim = None;
    next.completed_at = None;
    next.stopped_at = Some(Time(now));
    next.reason = Some(reason::STOP_REQUESTED.to_owned());
    next.message = Some(match status.phase {
        OperationPhase::Running => {
            format!("stopped during attempt {}; applied objects left as they are", status.attempt)
        }
        _ => "stopped before it was claimed".to_owned(),
    });
    set_ready(&mut next, now);
    Ok(next)
}

/// `Pending → Failed (Lost)` for the record that replaces a deleted Operation, before anything
/// can claim it: baton cannot tell whether the step ran, so a person decides (by dismissing
/// the error) whether it runs again.
pub fn lost(status: &OperationStatus, now: Timestamp) -> Result<OperationStatus, Refused> {
    expect(status, OperationPhase::Pending)?;
    let mut next = status.clone();
    next.phase = OperationPhase::Failed;
    next.completed_at = Some(Time(now));
    next.reason = Some(FailureReason::Lost.as_str().to_owned());
    next.message = Some(
        "the step's Operation was deleted after baton created it; whether the step ran is \
         unknown, so it is not run again by itself: dismiss this error to run it"
            .to_owned(),
    );
    set_ready(&mut next, now);
    Ok(next)
}

/// `Running → Running` with a message saying what the run waits for (a registered cluster that
/// does not answer, and since when).
pub fn waiting(status: &OperationStatus, why: &str) -> Result<OperationStatus, Refused> {
    expect(status, OperationPhase::Running)?;
    let mut next = status.clone();
    next.message = Some(why.to_owned());
    Ok(next)
}

/// `Running → Running`, soaking: its objects are healthy since `now`, and it succeeds at
/// `until` unless their health breaks first.
pub fn soak_started(
    status: &OperationStatus,
    now: Timestamp,
    until: Timestamp,
) -> Result<OperationStatus, Refused> {
    expect(status, OperationPhase::Running)?;
    let mut next = status.clone();
    next.healthy_since = Some(Time(now));
    next.soak_until = Some(Time(until));
    next.reason = Some(reason::SOAKING.to_owned());
    next.message = Some(format!(
        "every applied object is healthy; soaking until {}",
        until.strftime("%Y-%m-%dT%H:%M:%SZ")
    ));
    Ok(next)
}

/// `Running → Running`: the objects stopped being healthy during the soak, which starts again
/// once they are.
pub fn soak_interrupted(status: &OperationStatus, why: &str) -> Result<OperationStatus, Refused> {
    expect(status, OperationPhase::Running)?;
    let mut next = status.clone();
    next.healthy_since = None;
    next.soak_until = None;
    next.reason = Some(reason::CLAIMED.to_owned());
    next.message = Some(format!("soak interrupted ({why}); it starts again once healthy"));
    Ok(next)
}

/// `Stopped → Pending` when the stop request is withdrawn.
pub fn resume(status: &OperationStatus, now: Timestamp) -> Result<OperationStatus, Refused> {
    expect(status, OperationPhase::Stopped)?;
    Ok(back_to_pending(status, now))
}

/// `Failed → Pending` when the current error is dismissed; the next claim numbers a new attempt.
pub fn dismiss(
    status: &OperationStatus,
    dismissal: &DismissedError,
    now: Timestamp,
) -> Result<OperationStatus, Refused> {
    match status.phase {
        OperationPhase::Failed => {}
        actual => {
            return Err(Refused::WrongPhase { expected: OperationPhase::Failed, actual });
        }
    }
    let mut next = back_to_pending(status, now);
    next.dismissed = Some(dismissal.clone());
    Ok(next)
}

/// Clears what belonged to the last run; keeps `attempt` so the next claim numbers the new run.
fn back_to_pending(status: &OperationStatus, now: Timestamp) -> OperationStatus {
    let mut next = status.clone();
    next.phase = OperationPhase::Pending;
    next.claim = None;
    next.started_at = None;
    next.completed_at = None;
    next.stopped_at = None;
    next.reason = None;
    next.message = None;
    next.inventory.clear();
    set_ready(&mut next, now);
    next
}

/// An Operation carries one `Ready` condition, true only once it succeeded.
fn set_ready(status: &mut OperationStatus, now: Timestamp) {
    let ready = status.phase == OperationPhase::Succeeded;
    let reason = status.reason.clone().unwrap_or_else(|| status.phase.as_str().to_owned());
    let condition = Condition {
        type_: condition::READY.to_owned(),
        status: if ready { "True" } else { "False" }.to_owned(),
        reason,
        message: status.message.clone().unwrap_or_default(),
        last_transition_time: Time(now),
        observed_generation: status.observed_generation,
    };
    match status.conditions.iter_mut().find(|c| c.type_ == condition::READY) {
        Some(existing) => {
            let since = if existing.status == condition.status {
                existing.last_transition_time.clone()
            } else {
                condition.last_transition_time.clone()
            };
            *existing = Condition { last_transition_time: since, ..condition };
        }
        None => status.conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fixtures::{at, failed, pending, running, stopped, succeeded};

    #[test]
    fn claim_moves_pending_to_running_and_numbers_a_new_attempt() {
        let next = claim(&pending(2), "replica-a", at(10)).expect("pending is claimable");
        assert_eq!(next.phase, OperationPhase::Running);
        assert_eq!(next.attempt, 3);
        assert_eq!(next.claim.as_ref().map(|c| c.holder.as_str()), Some("replica-a"));
        assert_eq!(next.started_at, Some(Time(at(10))));
    }

    #[test]
    fn claim_refuses_every_phase_but_pending() {
        for status in [running("a", 1), succeeded(1), failed(1), stopped(1)] {
            assert!(
                claim(&status, "b", at(1)).is_err(),
                "{:?} must not be claimable",
                status.phase
            );
        }
    }

    #[test]
    fn late_failure_never_overwrites_success() {
        let failure = Outcome::Failed { reason: FailureReason::Unhealthy, message: "late".into() };
        assert_eq!(
            finish(&succeeded(1), failure, at(5)),
            Err(Refused::AlreadyTerminal(OperationPhase::Succeeded))
        );
    }

    #[test]
    fn terminal_writes_are_one_shot() {
        assert_eq!(
            finish(&failed(1), Outcome::Succeeded, at(5)),
            Err(Refused::AlreadyTerminal(OperationPhase::Failed))
        );
        let once = finish(&running("a", 1), Outcome::Succeeded, at(5)).expect("running can finish");
        assert_eq!(once.phase, OperationPhase::Succeeded);
        assert!(once.claim.is_none(), "a finished operation holds no claim");
        assert_eq!(once.completed_at, Some(Time(at(5))));
    }

    #[test]
    fn stop_leaves_completed_at_empty_and_terminal_phases_alone() {
        for status in [pending(0), running("a", 1)] {
            let next = stop(&status, at(3)).expect("pending and running stop");
            assert_eq!(next.phase, OperationPhase::Stopped);
            assert!(next.completed_at.is_none() && next.claim.is_none());
        }
        assert!(stop(&succeeded(1), at(3)).is_err());
        assert!(stop(&failed(1), at(3)).is_err());
    }

    #[test]
    fn reset_to_pending_clears_the_last_run_and_keeps_attempt() {
        let dismissal = DismissedError { id: "a-2".into(), at: Time(at(9)) };
        for next in [
            resume(&stopped(2), at(9)).expect("stopped resumes"),
            dismiss(&failed(2), &dismissal, at(9)).expect("failed is dismissible"),
        ] {
            assert_eq!(next.phase, OperationPhase::Pending);
            assert_eq!(next.attempt, 2);
            assert!(
                next.claim.is_none() && next.started_at.is_none() && next.completed_at.is_none()
            );
            assert!(next.reason.is_none() && next.message.is_none());
        }
    }

    #[test]
    fn resume_does_not_retry_failures() {
        assert!(resume(&failed(1), at(1)).is_err());
    }

    #[test]
    fn take_over_keeps_the_attempt_and_changes_the_holder() {
        let next =
            take_over(&running("old", 4), "new", at(7)).expect("another holder may take over");
        assert_eq!(next.attempt, 4);
        assert_eq!(next.claim.map(|c| c.holder), Some("new".to_owned()));
        assert!(take_over(&running("same", 1), "same", at(7)).is_err());
        assert!(take_over(&pending(0), "new", at(7)).is_err());
    }
}
