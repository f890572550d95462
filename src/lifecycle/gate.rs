//! The claim gate (SPEC.md section 2): which operations may go `Pending → Running` now.

use super::facts::{ApplyFacts, LeaseState, Roster, approval_given};
use super::{Child, stop};
use crate::crd::{ApplySpec, OperationPhase};

/// Whether the operation `name`, now in `phase`, waits for a person: it is `Pending` and its
/// approval is not given. What the plugin and the dashboard show; the window's own stop at it
/// is the gate's.
pub fn awaits_approval(spec: &ApplySpec, name: &str, phase: OperationPhase) -> bool {
    phase == OperationPhase::Pending
        && spec.operations.iter().any(|entry| entry.name == name && !approval_given(spec, entry))
}

/// Why no operation may be claimed now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateClosed {
    /// Only the holder of the Apply's lease claims (rule 1).
    #[error("this replica does not hold the Apply's lease")]
    LeaseNotHeld,
    /// `spec.stop` is true (rule 2).
    #[error("a stop is requested")]
    StopRequested,
    /// Operations are still `Stopped` from an earlier stop: they resume before anything is
    /// claimed (rule 2).
    #[error("a stop is still in progress")]
    StopInProgress,
    /// The Apply is being deleted (rule 2).
    #[error("the Apply is being deleted")]
    Deleting,
    /// Under `Halt` and `Pause` an undismissed failure blocks every claim (rule 4).
    #[error("operation error `{0}` is not dismissed")]
    FailurePolicy(String),
    /// The idempotency key is not held by this Apply (rule 5).
    #[error("the idempotency key is not held by this Apply")]
    IdempotencyKeyNotHeld,
    /// `maxConcurrent` operations already run (rule 3).
    #[error("{0} operations already run, the most allowed")]
    WindowFull(u32),
    /// The next operation waits for its approval in `spec.approvals` (rule 6).
    #[error("operation `{0}` awaits its approval")]
    AwaitingApproval(String),
    /// Nothing is left to claim.
    #[error("no operation is pending")]
    NothingPending,
}

/// The indices that may be claimed now, in order, or why none may.
///
/// The window moves in order: an operation is claimable only when every lower index has left
/// `Pending` (or is claimed in the same pass), and at most `maxConcurrent` run at once.
pub fn claimable(
    facts: &ApplyFacts<'_>,
    children: &[Child],
    lease: LeaseState,
) -> Result<Vec<u32>, GateClosed> {
    claimable_in(facts, &Roster::new(facts.spec, children), lease)
}

/// What keeps the whole gate shut whoever holds the lease: a stop or a deletion (rule 2), the
/// idempotency key (rule 5), the failure policy (rule 4).
fn shut(facts: &ApplyFacts<'_>, roster: &Roster<'_>) -> Option<GateClosed> {
    if facts.deleting {
        return Some(GateClosed::Deleting);
    }
    if stop::in_effect(facts) {
        return Some(GateClosed::StopRequested);
    }
    if roster.any(OperationPhase::Stopped) {
        return Some(GateClosed::StopInProgress);
    }
    if !facts.idempotency.lets_claims() {
        return Some(GateClosed::IdempotencyKeyNotHeld);
    }
    if facts.failures_stop_the_rollout(roster.count(OperationPhase::Failed)) {
        return roster.first_error().map(|error| GateClosed::FailurePolicy(error.id));
    }
    None
}

/// The operation the window waits at for its approval (section 11) while nothing else keeps
/// the gate shut: the first `Pending` one, when it is not approved. What the projection says.
pub(crate) fn awaiting_approval<'r>(
    facts: &ApplyFacts<'_>,
    roster: &'r Roster<'_>,
) -> Option<&'r str> {
    if shut(facts, roster).is_some() {
        return None;
    }
    roster
        .slots()
        .iter()
        .find(|slot| slot.status.phase == OperationPhase::Pending)
        .filter(|slot| !facts.approved(slot.entry))
        .map(|slot| slot.name)
}

/// [`claimable`] over a roster already built (and perhaps updated by a plan).
pub(crate) fn claimable_in(
    facts: &ApplyFacts<'_>,
    roster: &Roster<'_>,
    lease: LeaseState,
) -> Result<Vec<u32>, GateClosed> {
    if lease != LeaseState::Held {
        return Err(GateClosed::LeaseNotHeld);
    }
    if let Some(closed) = shut(facts, roster) {
        return Err(closed);
    }
    let max = facts.spec.max_concurrent.max(1);
    let mut running = roster.running();
    let mut claims = Vec::new();
    let mut awaiting = None;
    for slot in roster.slots() {
        if slot.status.phase != OperationPhase::Pending {
            continue;
        }
        if running >= max {
            break;
        }
        if !facts.approved(slot.entry) {
            // The window stops at an unapproved operation, room or not (rule 6).
            awaiting = Some(slot.name.to_owned());
            break;
        }
        claims.push(slot.index);
        running += 1;
    }
    match claims.is_empty() {
        false => Ok(claims),
        true if awaiting.is_some() => {
            Err(GateClosed::AwaitingApproval(awaiting.unwrap_or_default()))
        }
        true if running >= max && roster.any(OperationPhase::Pending) => {
            Err(GateClosed::WindowFull(running))
        }
        true => Err(GateClosed::NothingPending),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::FailurePolicy;
    use crate::lifecycle::Idempotency;
    use crate::lifecycle::fixtures::{
        children, facts, failed, pending, running, spec, stopped, succeeded,
    };

    fn gate(
        policy: FailurePolicy,
        max: u32,
        statuses: Vec<crate::crd::OperationStatus>,
    ) -> Result<Vec<u32>, GateClosed> {
        let spec = spec(statuses.len(), policy, max);
        claimable(&facts(&spec), &children(statuses), LeaseState::Held)
    }

    #[test]
    fn claim_gate_closed_without_the_lease() {
        let spec = spec(2, FailurePolicy::Halt, 1);
        let verdict =
            claimable(&facts(&spec), &children(vec![pending(0), pending(0)]), LeaseState::NotHeld);
        assert_eq!(verdict, Err(GateClosed::LeaseNotHeld));
    }

    #[test]
    fn claim_gate_closed_while_stop_pending() {
        let mut spec = spec(2, FailurePolicy::Continue, 2);
        spec.stop = true;
        let verdict =
            claimable(&facts(&spec), &children(vec![pending(0), pending(0)]), LeaseState::Held);
        assert_eq!(verdict, Err(GateClosed::StopRequested));
    }

    #[test]
    fn claim_gate_closed_while_stopped_operations_await_resume() {
        assert_eq!(
            gate(FailurePolicy::Halt, 2, vec![stopped(1), pending(0)]),
            Err(GateClosed::StopInProgress)
        );
    }

    #[test]
    fn claim_gate_closed_while_apply_is_deleted() {
        let spec = spec(1, FailurePolicy::Halt, 1);
        let deleting = ApplyFacts { deleting: true, ..facts(&spec) };
        assert_eq!(
            claimable(&deleting, &children(vec![pending(0)]), LeaseState::Held),
            Err(GateClosed::Deleting)
        );
    }

    #[test]
    fn window_moves_in_index_order_up_to_max_concurrent() {
        assert_eq!(gate(FailurePolicy::Halt, 2, vec![pending(0); 5]), Ok(vec![0, 1]));
        assert_eq!(
            gate(
                FailurePolicy::Halt,
                2,
                vec![succeeded(1), running("r", 1), pending(0), pending(0)]
            ),
            Ok(vec![2])
        );
        assert_eq!(
            gate(FailurePolicy::Halt, 1, vec![running("r", 1), pending(0)]),
            Err(GateClosed::WindowFull(1))
        );
    }

    #[test]
    fn halt_and_pause_block_claims_after_an_undismissed_failure() {
        for policy in [FailurePolicy::Halt, FailurePolicy::Pause, FailurePolicy::Unknown] {
            assert_eq!(
                gate(policy, 1, vec![succeeded(1), failed(1), pending(0)]),
                Err(GateClosed::FailurePolicy("b-1".into())),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn continue_failure_never_blocks_a_sibling() {
        assert_eq!(
            gate(FailurePolicy::Continue, 1, vec![succeeded(1), failed(1), pending(0)]),
            Ok(vec![2])
        );
    }

    #[test]
    fn claim_gate_waits_for_the_idempotency_key() {
        let spec = spec(1, FailurePolicy::Halt, 1);
        let waiting = ApplyFacts {
            idempotency: Idempotency::InFlightElsewhere { holder: "other".into() },
            ..facts(&spec)
        };
        assert_eq!(
            claimable(&waiting, &children(vec![pending(0)]), LeaseState::Held),
            Err(GateClosed::IdempotencyKeyNotHeld)
        );
        let held = ApplyFacts { idempotency: Idempotency::Held, ..facts(&spec) };
        assert_eq!(claimable(&held, &children(vec![pending(0)]), LeaseState::Held), Ok(vec![0]));
    }

    #[test]
    fn operations_not_created_yet_count_as_pending() {
        let spec = spec(3, FailurePolicy::Halt, 3);
        assert_eq!(
            claimable(&facts(&spec), &children(vec![succeeded(1)]), LeaseState::Held),
            Ok(vec![1, 2])
        );
    }
}
