//! The decisions around one reconcile's writes: whether the Apply needs driving at all, what
//! comes before the writes (the key, the finalizer, observing the running operations), and
//! what comes after them (settle, remove the finalizer, or look again when).
//!
//! `decide` says what to write; this says when a pass starts and how it ends. The controller
//! only carries both out.

use std::time::Duration;

use super::facts::ApplyFacts;
use super::project::carry_transition_times;
use super::{KeyWrite, stop};
use crate::crd::ApplyStatus;

/// How a pass begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
    /// Nothing to do: the Apply settled and its status says so (or it is being deleted and
    /// holds nothing of baton's). Hold no lease for it and forget it until it changes.
    LetGo,
    /// Drive the rollout.
    Drive {
        /// Whether this replica applies and checks the running operations it holds before
        /// deciding: not while a stop is in effect, when they stop at this check instead.
        observe: bool,
        /// Whether the pass holds the Apply's lease for its writes (see
        /// `ApplyFacts::writes_need_lease`): not while the Apply is being deleted.
        lease: bool,
    },
}

/// Whether the Apply needs driving, from what was read: `projected` is the projection of the
/// children read, `previous` the status on the Apply, `key` what the idempotency key needs
/// written for the projected phase (see `key_write`).
pub fn begin(
    facts: &ApplyFacts<'_>,
    projected: &ApplyStatus,
    previous: Option<&ApplyStatus>,
    key: &KeyWrite,
) -> Begin {
    if facts.deleting && !facts.finalizer {
        // Never started: nothing of baton's to clean up; garbage collection does the rest.
        return Begin::LetGo;
    }
    let mut status = projected.clone();
    carry_transition_times(previous, &mut status);
    let recorded = previous == Some(&status);
    if !facts.deleting && settled(&status) && recorded && *key == KeyWrite::Keep {
        return Begin::LetGo;
    }
    Begin::Drive { observe: !stop::in_effect(facts), lease: facts.writes_need_lease() }
}

/// Whether writing `key` needs baton's finalizer on the Apply first: holding a key is
/// something deleting the Apply must undo.
pub fn key_needs_finalizer(facts: &ApplyFacts<'_>, key: &KeyWrite) -> bool {
    key.holds_the_key() && !facts.finalizer
}

/// How long the controller waits before looking again, by what it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// While operations run: the next safety look at their health (a change of it wakes the
    /// Apply sooner, through the watches of what the operations wait on).
    pub health_check: Duration,
    /// While operations run and a read of their health failed with no watch to wake the Apply
    /// when it recovers: the next direct read.
    pub health_retry: Duration,
    /// While another Apply holds the idempotency key (its release does not wake this one).
    pub key_holder: Duration,
    /// While nothing runs and nothing is awaited: a safety look.
    pub idle: Duration,
}

/// How a pass ends, once its writes are made and the parent status published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The rollout settled and everything about it is written: forget it until it changes.
    LetGo,
    /// Deleting the Apply has stopped everything: remove the finalizer, then forget it.
    RemoveFinalizer,
    /// Look again after this long (or sooner, when something changes).
    Requeue(Duration),
}

/// How the pass that projected `status` ends. `timeout` is the nearest timeout of a running
/// operation (the plan's `requeue_after`); `held_back` is set when a progress-only status
/// change was held back and must be written within that time.
pub fn next(
    facts: &ApplyFacts<'_>,
    status: &ApplyStatus,
    timeout: Option<Duration>,
    held_back: Option<Duration>,
    read_failed: bool,
    pace: &Pace,
) -> Next {
    let running = status.operations.running > 0;
    if facts.deleting && !running {
        return if facts.finalizer { Next::RemoveFinalizer } else { Next::LetGo };
    }
    if settled(status) && held_back.is_none() {
        return Next::LetGo;
    }
    let health_check = if read_failed { pace.health_retry } else { pace.health_check };
    let wait = match (running, timeout) {
        (true, Some(until_timeout)) => until_timeout.min(health_check),
        (true, None) => health_check,
        (false, _) if facts.idempotency.waiting_for().is_some() => pace.key_holder,
        (false, _) => pace.idle,
    };
    Next::Requeue(held_back.map_or(wait, |flush| flush.min(wait)))
}

/// The rollout ended: a terminal phase with nothing running.
fn settled(status: &ApplyStatus) -> bool {
    status.phase.is_some_and(|phase| phase.is_terminal()) && status.operations.running == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::FailurePolicy;
    use crate::lifecycle::fixtures::*;
    use crate::lifecycle::{Idempotency, project};

    const PACE: Pace = Pace {
        health_retry: Duration::from_secs(1),
        health_check: Duration::from_millis(500),
        key_holder: Duration::from_secs(2),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn a_settled_apply_whose_status_says_so_is_let_go() {
        let spec = spec(2, FailurePolicy::Halt, 1);
        let children = children(vec![succeeded(1), succeeded(1)]);
        let status = project(&facts(&spec), &children);
        let begin = begin(&facts(&spec), &status, Some(&status), &KeyWrite::Keep);
        assert_eq!(begin, Begin::LetGo);
        assert_eq!(
            super::begin(&facts(&spec), &status, None, &KeyWrite::Keep),
            Begin::Drive { observe: true, lease: true },
            "its status is still to be written"
        );
    }

    #[test]
    fn a_settled_apply_whose_key_must_still_be_marked_is_driven() {
        let spec = spec(1, FailurePolicy::Halt, 1);
        let children = children(vec![succeeded(1)]);
        let status = project(&facts(&spec), &children);
        let begin = begin(&facts(&spec), &status, Some(&status), &KeyWrite::MarkSucceeded);
        assert_eq!(begin, Begin::Drive { observe: true, lease: true });
    }

    #[test]
    fn running_operations_are_not_observed_while_a_stop_is_in_effect() {
        let mut spec = spec(2, FailurePolicy::Halt, 1);
        spec.stop = true;
        let status = project(&facts(&spec), &children(vec![running("me", 1), pending(0)]));
        let begin = begin(&facts(&spec), &status, None, &KeyWrite::Keep);
        assert_eq!(begin, Begin::Drive { observe: false, lease: true });
    }

    #[test]
    fn a_deleted_apply_without_the_finalizer_is_let_go_at_once() {
        let spec = spec(1, FailurePolicy::Halt, 1);
        let deleting = ApplyFacts { deleting: true, ..facts(&spec) };
        let status = project(&deleting, &children(vec![pending(0)]));
        let begin = begin(&deleting, &status, None, &KeyWrite::Keep);
        assert_eq!(begin, Begin::LetGo);
    }

    #[test]
    fn taking_or_renewing_a_key_needs_the_finalizer_first() {
        let spec = spec(1, FailurePolicy::Halt, 1);
        assert!(key_needs_finalizer(&facts(&spec), &KeyWrite::Take));
        assert!(key_needs_finalizer(&facts(&spec), &KeyWrite::Renew));
        assert!(!key_needs_finalizer(&facts(&spec), &KeyWrite::Release));
        let finalized = ApplyFacts { finalizer: true, ..facts(&spec) };
        assert!(!key_needs_finalizer(&finalized, &KeyWrite::Take));
    }

    #[test]
    fn deleting_removes_the_finalizer_once_nothing_runs() {
        let spec = spec(2, FailurePolicy::Halt, 1);
        let deleting = ApplyFacts { deleting: true, finalizer: true, ..facts(&spec) };
        let done = project(&deleting, &children(vec![stopped(1), stopped(0)]));
        assert_eq!(next(&deleting, &done, None, None, false, &PACE), Next::RemoveFinalizer);
        let busy = project(&deleting, &children(vec![running("me", 1), stopped(0)]));
        assert_eq!(
            next(&deleting, &busy, None, None, false, &PACE),
            Next::Requeue(PACE.health_check)
        );
    }

    #[test]
    fn a_settled_rollout_is_let_go_unless_a_progress_write_is_held_back() {
        let spec = spec(1, FailurePolicy::Halt, 1);
        let status = project(&facts(&spec), &children(vec![succeeded(1)]));
        assert_eq!(next(&facts(&spec), &status, None, None, false, &PACE), Next::LetGo);
        let held = Some(Duration::from_millis(300));
        assert_eq!(
            next(&facts(&spec), &status, None, held, false, &PACE),
            Next::Requeue(Duration::from_millis(300))
        );
    }

    #[test]
    fn a_running_rollout_looks_again_at_the_next_health_check_or_timeout() {
        let spec = spec(2, FailurePolicy::Halt, 1);
        let status = project(&facts(&spec), &children(vec![running("me", 1), pending(0)]));
        let soon = Duration::from_millis(100);
        assert_eq!(
            next(&facts(&spec), &status, Some(soon), None, false, &PACE),
            Next::Requeue(soon)
        );
        assert_eq!(
            next(&facts(&spec), &status, None, None, false, &PACE),
            Next::Requeue(PACE.health_check)
        );
    }

    #[test]
    fn a_failed_health_read_is_tried_again_soon_not_at_the_safety_reread() {
        let spec = spec(2, FailurePolicy::Halt, 1);
        let status = project(&facts(&spec), &children(vec![running("me", 1), pending(0)]));
        let next = next(&facts(&spec), &status, None, None, true, &PACE);
        assert_eq!(next, Next::Requeue(PACE.health_retry));
    }

    #[test]
    fn waiting_for_another_apply_s_key_looks_again_soon() {
        let spec = spec(1, FailurePolicy::Halt, 1);
        let waiting = ApplyFacts {
            idempotency: Idempotency::InFlightElsewhere { holder: "first".into() },
            ..facts(&spec)
        };
        let status = project(&waiting, &children(vec![pending(0)]));
        assert_eq!(
            next(&waiting, &status, None, None, false, &PACE),
            Next::Requeue(PACE.key_holder)
        );
        let idle = project(&facts(&spec), &children(vec![pending(0)]));
        assert_eq!(next(&facts(&spec), &idle, None, None, false, &PACE), Next::Requeue(PACE.idle));
    }
}
