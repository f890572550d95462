//! SPEC.md section 4 in one place: when a stop is in effect, what it does to each operation,
//! what the Apply's phase and `status.stop` say meanwhile, and which Events tell it.
//!
//! A stop is in effect while `spec.stop` is true or the Apply is being deleted (a deletion stops
//! like a stop, but is not recorded as a stop someone asked for). While it is, nothing is
//! claimed (the claim gate asks [`in_effect`]), pending operations are parked `Stopped`,
//! running ones stop at their next check and are not observed, and the Apply settles once
//! nothing runs. Every reader asks this module; nothing else reads `spec.stop`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::facts::{ApplyFacts, Slot};
use super::notes::Note;
use super::transitions;
use crate::crd::{ApplyPhase, ApplyStatus, OperationPhase, OperationStatus, StopStatus};

/// Whether a stop is in effect (see the module's header).
pub fn in_effect(facts: &ApplyFacts<'_>) -> bool {
    facts.spec.stop || facts.deleting
}

/// What a stop in effect does to one operation (rules 2 and 3): a `Pending` one is parked
/// `Stopped`, a `Running` one becomes `Stopped` at this check (its objects stay as they are);
/// anything else is left alone. `None` when there is nothing to write. A running one's stop is
/// told in an Event; pending ones are counted by `StopCompleted` instead.
pub fn stop_operation(
    facts: &ApplyFacts<'_>,
    slot: &Slot<'_>,
    now: Timestamp,
) -> Option<(OperationStatus, Option<Note>)> {
    if !in_effect(facts) || !slot.exists {
        return None;
    }
    let note = match slot.status.phase {
        OperationPhase::Running => Some(Note::Stopped { operation: slot.name.to_owned() }),
        OperationPhase::Pending => None,
        _ => return None,
    };
    transitions::stop(&slot.status, now).ok().map(|next| (next, note))
}

/// The Apply's phase while a stop is in effect (rule 4): once nothing is active, `Failed` if
/// any operation failed and `Stopped` otherwise (all succeeded is `Succeeded` before a stop is
/// asked); while some still run, `Running` (or `Pending` if none ever started).
pub fn phase(active: u32, failed: u32, started: bool) -> ApplyPhase {
    match (active, failed) {
        (0, 0) => ApplyPhase::Stopped,
        (0, _) => ApplyPhase::Failed,
        _ if started => ApplyPhase::Running,
        _ => ApplyPhase::Pending,
    }
}

/// `status.stop` for a stop someone asked for: requested when the first operation stopped,
/// completed when nothing is active any more (at the latest end, or the Apply's creation).
pub fn status(
    facts: &ApplyFacts<'_>,
    slots: &[Slot<'_>],
    active: u32,
    latest_end: Option<Timestamp>,
) -> Option<StopStatus> {
    facts.spec.stop.then(|| StopStatus {
        requested_at: slots
            .iter()
            .filter_map(|slot| slot.status.stopped_at.clone())
            .min_by_key(|t| t.0),
        completed_at: (active == 0).then(|| latest_end.or(facts.created_at).map(Time)).flatten(),
    })
}

/// The stop's Events, from the status before and after a pass: requested, completed, resumed.
pub fn notes(previous: Option<&ApplyStatus>, next: &ApplyStatus) -> Vec<Note> {
    let mut notes = Vec::new();
    let before = previous.and_then(|p| p.stop.as_ref());
    if before.is_none() && next.stop.is_some() {
        notes.push(Note::StopRequested);
    }
    let completed = |stop: Option<&StopStatus>| stop.is_some_and(|s| s.completed_at.is_some());
    if !completed(before) && completed(next.stop.as_ref()) {
        notes.push(Note::StopCompleted);
    }
    if before.is_some() && next.stop.is_none() {
        notes.push(Note::Resumed);
    }
    notes
}
