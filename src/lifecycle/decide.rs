//! `decide`: given everything one reconcile read, the writes to make, in order. The reconciler
//! executes them front to back, each Operation status write guarded by the `resourceVersion`
//! it read; at the first conflict it stops and reconciles again from fresh reads.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::facts::{ApplyFacts, LeaseState, Roster, Slot};
use super::gate::claimable_in;
use super::notes::Note;
use super::project::{carry_transition_times, dismissal_rejection, project_roster};
use super::transitions::{self, Outcome};
use super::{Child, parse_duration, stop};
use crate::crd::{
    ApplyStatus, ApprovalRecord, DEFAULT_OPERATION_TIMEOUT, DismissedError, FailureReason,
    OperationPhase, OperationStatus,
};
use crate::lifecycle::condition;

/// What the engine saw of a running operation's applied objects at this check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not healthy yet, not failed.
    Progressing,
    /// Not healthy yet, for a reason worth saying on the Operation (a registered cluster that
    /// does not answer, and since when); the timeout decides.
    Waiting(String),
    /// Every applied object is healthy.
    Healthy,
    /// An applied object failed for good; the message names it and its condition.
    Unhealthy(String),
    /// The apply call failed; the message is the API server's.
    DispatchFailed(String),
}

/// What one reconcile read.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The Apply.
    pub apply: ApplyFacts<'a>,
    /// Its existing Operations.
    pub children: &'a [Child],
    /// Whether this replica holds the Apply's lease.
    pub lease: LeaseState,
    /// This replica's identity, written into claims.
    pub holder: &'a str,
    /// The engine's latest check of each running operation this replica holds, by name.
    pub health: &'a BTreeMap<String, Health>,
    /// The Apply's status as read: used only to keep condition times and not to repeat Events,
    /// never to decide a phase.
    pub previous: Option<&'a ApplyStatus>,
    /// The clock, read once by the caller.
    pub now: Timestamp,
}

/// Why an Operation status is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// `Pending → Running`, a new attempt.
    Claim,
    /// A new holder takes over a running operation in the same attempt.
    TakeOver,
    /// `Running → Succeeded | Failed`.
    Finish,
    /// `Pending | Running → Stopped`.
    Stop,
    /// `Stopped → Pending`.
    Resume,
    /// `Failed → Pending` by a dismissal.
    Dismiss,
    /// `Pending → Failed (Lost)`: the record that replaces a deleted Operation.
    Lost,
    /// A running operation's message says what it waits for.
    Waiting,
}

impl WriteKind {
    /// How writes of this kind share a batch (see [`Plan::batches`]). Claims of one window go
    /// side by side (SPEC.md section 2, rule 3), in a batch of their own so that a claim never
    /// lands before the writes planned ahead of it (a resume, a finish) went through. A
    /// dismissal resets the current error last, alone. The other kinds touch independent
    /// operations, and a pass cut short by one of them leaves nothing a later pass cannot finish.
    pub fn batching(self) -> Batching {
        match self {
            WriteKind::Claim => Batching::Window,
            WriteKind::Dismiss => Batching::Alone,
            _ => Batching::Together,
        }
    }
}

/// How a write shares a batch with its neighbours in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batching {
    /// With the neighbouring writes of the same batching, side by side.
    Together,
    /// With the neighbouring claims only, side by side.
    Window,
    /// Alone.
    Alone,
}

/// What a pass does after a plan's writes went through (see [`Plan::then`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Publish the parent status: the decision is complete.
    Done,
    /// Decide again on the same observation.
    Decide,
    /// Observe the runs again (dispatching what was claimed), then decide again.
    ObserveAndDecide,
}

/// One write to an Operation.
#[derive(Clone, Debug, PartialEq)]
pub enum OperationWrite {
    /// Create the missing Operation for `spec.operations[index]`.
    Create {
        /// Index in `spec.operations`.
        index: u32,
        /// The step's name.
        name: String,
        /// The Operation existed once and was deleted: the new one is marked as recreated,
        /// and becomes a `Lost` record instead of a step to run.
        recreated: bool,
    },
    /// Write `status` to the Operation, guarded by the `resourceVersion` read.
    Status {
        /// Index in `spec.operations`.
        index: u32,
        /// The step's name.
        name: String,
        /// Why.
        kind: WriteKind,
        /// The full new status.
        status: Box<OperationStatus>,
    },
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Operation writes, in the order to make them.
    pub writes: Vec<OperationWrite>,
    /// Events to record once the writes went through.
    pub notes: Vec<Note>,
    /// For each note, the write it reports (`None`: it reports the whole plan).
    pub note_writes: Vec<Option<usize>>,
    /// The parent status expected after the writes; the reconciler re-projects from what the
    /// API server returned before writing it.
    pub status: Option<ApplyStatus>,
    /// When to look again even if nothing changes (the nearest timeout).
    pub requeue_after: Option<Duration>,
    /// baton's finalizer goes on the Apply with this plan: from the first claim on, deleting
    /// the Apply must first stop what runs. Before the writes when the plan claims
    /// ([`Plan::finalizer_first`]), else beside them (the creations right before the claims).
    pub add_finalizer: bool,
}

impl OperationWrite {
    /// How this write shares a batch (see [`WriteKind::batching`]). Creating a missing
    /// Operation goes with any other creation.
    pub fn batching(&self) -> Batching {
        match self {
            OperationWrite::Create { .. } => Batching::Together,
            OperationWrite::Status { kind, .. } => kind.batching(),
        }
    }
}

impl Plan {
    /// The writes in batches, in order: a run of neighbouring writes of the same batching made
    /// side by side, or a write alone. A batch starts only once every write of the one before
    /// went through.
    pub fn batches(&self) -> Vec<Range<usize>> {
        let mut batches: Vec<Range<usize>> = Vec::new();
        for (index, write) in self.writes.iter().enumerate() {
            let batching = write.batching();
            match batches.last_mut() {
                Some(batch)
                    if batching != Batching::Alone
                        && self.writes[batch.start].batching() == batching =>
                {
                    batch.end = index + 1;
                }
                _ => batches.push(index..index + 1),
            }
        }
        batches
    }

    /// The notes to record given which writes went through (`made[i]` for `writes[i]`): those
    /// reporting a write that was made, and, when every write was made, those about the whole
    /// plan.
    pub fn notes_for<'a>(&'a self, made: &'a [bool]) -> impl Iterator<Item = &'a Note> {
        let complete = made.len() >= self.writes.len() && made.iter().all(|made| *made);
        self.notes.iter().zip(&self.note_writes).filter_map(move |(note, write)| match write {
            Some(index) => made.get(*index).copied().unwrap_or(false).then_some(note),
            None => complete.then_some(note),
        })
    }

    /// What the pass does once these writes went through. A plan that only creates the
    /// missing Operations is followed at once by the decision on what it created; a plan that
    /// claims, by observing what it claimed (the apply it enables) and deciding again, so a
    /// claim, its apply and, for what is healthy at once, its end need no second pass, and the
    /// parent no status in between.
    pub fn then(&self) -> Then {
        if self.claims() {
            Then::ObserveAndDecide
        } else if !self.writes.is_empty()
            && self.writes.iter().all(|write| matches!(write, OperationWrite::Create { .. }))
        {
            Then::Decide
        } else {
            Then::Done
        }
    }

    /// Whether the finalizer must be on before the writes start (the plan claims), rather
    /// than beside them.
    pub fn finalizer_first(&self) -> bool {
        self.add_finalizer && self.claims()
    }

    fn claims(&self) -> bool {
        self.writes
            .iter()
            .any(|write| matches!(write, OperationWrite::Status { kind: WriteKind::Claim, .. }))
    }
}

/// Decides one reconcile. Plans nothing without the lease, except for an Apply being deleted
/// (its writes guard themselves: see `ApplyFacts::writes_need_lease`).
pub fn decide(observed: &Observed<'_>) -> Plan {
    let facts = &observed.apply;
    if observed.lease != LeaseState::Held && facts.writes_need_lease() {
        return Plan::default();
    }
    let mut roster = Roster::new(facts.spec, observed.children);
    let missing: Vec<OperationWrite> = roster
        .missing()
        .map(|slot| OperationWrite::Create {
            index: slot.index,
            name: slot.name.to_owned(),
            recreated: facts.operations_created,
        })
        .collect();
    if !missing.is_empty() && !facts.deleting {
        let status = settled_status(observed, &roster);
        // Claims follow the creation at once when the gate is open for what is created: the
        // finalizer may then go on beside the creations, not between them and the claims.
        let claims_follow = claimable_in(facts, &roster, observed.lease).is_ok();
        return Plan {
            writes: missing,
            status: Some(status),
            add_finalizer: claims_follow && !facts.finalizer,
            ..Plan::default()
        };
    }

    let mut plan = Plan::default();
    if stop::in_effect(facts) {
        // Running operations stop at this check, unobserved. A dismissal works the same while
        // stopped (section 5): what it resets, the standing stop then parks, and a resume
        // runs it.
        stop_all(observed, OperationPhase::Running, &mut roster, &mut plan);
        record_lost(observed, &mut roster, &mut plan);
        dismissal(observed, &mut roster, &mut plan);
        stop_all(observed, OperationPhase::Pending, &mut roster, &mut plan);
    } else {
        running_checks(observed, &mut roster, &mut plan);
        record_lost(observed, &mut roster, &mut plan);
        resume_stopped(observed, &mut roster, &mut plan);
        dismissal(observed, &mut roster, &mut plan);
    }
    claims(observed, &mut roster, &mut plan);

    let status = settled_status(observed, &roster);
    for note in apply_notes(observed.previous, &status) {
        plan.notes.push(note);
        plan.note_writes.push(None);
    }
    plan.status = Some(status);
    plan.add_finalizer = plan.claims() && !facts.finalizer;
    plan
}

/// A step that already ran is never run again because its Operation vanished: an Operation
/// baton recreated becomes a `Lost` failure before anything can claim it (see
/// `transitions::lost`); only a dismissal of that error runs the step again.
fn record_lost(observed: &Observed<'_>, roster: &mut Roster<'_>, plan: &mut Plan) {
    for position in 0..roster.slots().len() {
        let slot = &roster.slots()[position];
        let fresh = slot.status.attempt == 0 && slot.status.dismissed.is_none();
        if !(slot.exists && slot.recreated && fresh) {
            continue;
        }
        if let Ok(next) = transitions::lost(&slot.status, observed.now) {
            let note = Note::Lost { operation: slot.name.to_owned() };
            record(roster, plan, position, WriteKind::Lost, next, Some(note));
        }
    }
}

/// What the stop in effect does to every operation in `phase` (see `stop`).
fn stop_all(
    observed: &Observed<'_>,
    phase: OperationPhase,
    roster: &mut Roster<'_>,
    plan: &mut Plan,
) {
    for position in 0..roster.slots().len() {
        let slot = &roster.slots()[position];
        if slot.status.phase != phase {
            continue;
        }
        if let Some((next, note)) = stop::stop_operation(&observed.apply, slot, observed.now) {
            record(roster, plan, position, WriteKind::Stop, next, note);
        }
    }
}

/// SPEC.md section 4, resume: `Stopped` operations go back to `Pending`. A stop withdrawn
/// before it reached every running operation (a write failed) resumes once those have ended:
/// stopped operations back to Pending under a Running one would have the window out of order.
/// As read, not as planned: a finish planned in this pass may still fail.
fn resume_stopped(observed: &Observed<'_>, roster: &mut Roster<'_>, plan: &mut Plan) {
    if observed.children.iter().any(|child| child.status.phase == OperationPhase::Running) {
        return;
    }
    for position in 0..roster.slots().len() {
        if let Ok(next) = transitions::resume(&roster.slots()[position].status, observed.now) {
            record(roster, plan, position, WriteKind::Resume, next, None);
        }
    }
}

/// SPEC.md section 2: the claims the gate allows, in index order.
fn claims(observed: &Observed<'_>, roster: &mut Roster<'_>, plan: &mut Plan) {
    let Ok(indices) = claimable_in(&observed.apply, roster, observed.lease) else { return };
    for index in indices {
        let Some(position) = roster.slots().iter().position(|slot| slot.index == index) else {
            continue;
        };
        let slot = &roster.slots()[position];
        if slot.exists
            && let Ok(mut next) = transitions::claim(&slot.status, observed.holder, observed.now)
        {
            // Section 11: the approval it is claimed under is recorded on the run.
            if slot.entry.approval.is_some() {
                next.approval = Some(
                    observed
                        .apply
                        .approvers
                        .get(slot.name)
                        .cloned()
                        .unwrap_or(ApprovalRecord { by: "unknown".to_owned(), at: None }),
                );
            }
            record(roster, plan, position, WriteKind::Claim, next, None);
        }
    }
}

/// The projection of the roster, with condition times carried over from the previous status.
fn settled_status(observed: &Observed<'_>, roster: &Roster<'_>) -> ApplyStatus {
    let mut status = project_roster(&observed.apply, roster);
    carry_transition_times(observed.previous, &mut status);
    status
}

/// Records a write to the operation at `position`, and the note that reports it once it is done.
fn record(
    roster: &mut Roster<'_>,
    plan: &mut Plan,
    position: usize,
    kind: WriteKind,
    next: OperationStatus,
    note: Option<Note>,
) {
    if let Some(note) = note {
        plan.notes.push(note);
        plan.note_writes.push(Some(plan.writes.len()));
    }
    let slot = &roster.slots()[position];
    plan.writes.push(OperationWrite::Status {
        index: slot.index,
        name: slot.name.to_owned(),
        kind,
        status: Box::new(next.clone()),
    });
    roster.set(position, next);
}

/// The next check of every running operation (no stop in effect): take over, finish or time
/// out.
fn running_checks(observed: &Observed<'_>, roster: &mut Roster<'_>, plan: &mut Plan) {
    let now = observed.now;
    for position in 0..roster.slots().len() {
        let slot = &roster.slots()[position];
        if slot.status.phase != OperationPhase::Running {
            continue;
        }
        let name = slot.name.to_owned();
        let attempt = slot.status.attempt;
        let holder = slot.status.claim.as_ref().map(|claim| claim.holder.clone());
        if holder.as_deref() != Some(observed.holder) {
            if let Ok(next) = transitions::take_over(&slot.status, observed.holder, now) {
                let note = Note::TakenOver { operation: name, attempt, from: holder };
                record(roster, plan, position, WriteKind::TakeOver, next, Some(note));
            }
            continue;
        }
        let check = check_run(observed, slot);
        if let Some(left) = check.look_again {
            plan.requeue_after = Some(plan.requeue_after.map_or(left, |current| current.min(left)));
        }
        let (outcome, saying) = (check.outcome, check.saying);
        let Some(outcome) = outcome else {
            if let Some(next) = saying {
                record(roster, plan, position, WriteKind::Waiting, next, None);
            }
            continue;
        };
        // Successes are in the Operation's status; failures need someone's attention.
        let note = match &outcome {
            Outcome::Succeeded => None,
            Outcome::Failed { reason, message } => Some(Note::Failed {
                operation: name,
                attempt,
                reason: *reason,
                message: message.clone(),
            }),
        };
        if let Ok(next) = transitions::finish(&slot.status, outcome, now) {
            record(roster, plan, position, WriteKind::Finish, next, note);
        }
    }
}

/// What the latest health of a run this replica holds means for it.
struct RunCheck {
    /// How the run ended, if it did.
    outcome: Option<Outcome>,
    /// What its status says meanwhile, when that changes (waiting on what, a soak).
    saying: Option<OperationStatus>,
    /// How soon to look again at the latest: the soak's end, the timeout.
    look_again: Option<Duration>,
}

/// Reads the run of `slot` against its health, its soak and its timeout.
fn check_run(observed: &Observed<'_>, slot: &Slot<'_>) -> RunCheck {
    let now = observed.now;
    let name = slot.name;
    let mut saying = None;
    let mut look_again = None;
    let soaking = slot.status.soak_until.as_ref().map(|until| until.0);
    let outcome = match observed.health.get(name) {
        Some(Health::Healthy) => match (soak_of(slot.entry), soaking) {
            (None, _) => Some(Outcome::Succeeded),
            (Some(_), Some(until)) if until <= now => Some(Outcome::Succeeded),
            // The timeout counts the soak too.
            (Some(_), _) if time_left(observed, slot.index, &slot.status).is_none() => {
                Some(Outcome::Failed {
                    reason: FailureReason::Timeout,
                    message: format!(
                        "the soak did not end within the timeout of {}",
                        timeout_text(observed, slot.index)
                    ),
                })
            }
            (Some(soak), soaking) => {
                // A soak too long to add up (refused nowhere else) never ends by itself.
                let until = soaking.unwrap_or(now.checked_add(soak).unwrap_or(Timestamp::MAX));
                let left = Duration::try_from(until.duration_since(now)).unwrap_or_default();
                look_again = Some(left);
                if soaking.is_none() {
                    saying = transitions::soak_started(&slot.status, now, until).ok();
                }
                None
            }
        },
        Some(Health::Unhealthy(message)) => Some(Outcome::Failed {
            reason: FailureReason::Unhealthy,
            message: match soaking {
                Some(_) => format!("during its soak: {message}"),
                None => message.clone(),
            },
        }),
        Some(Health::DispatchFailed(message)) => Some(Outcome::Failed {
            reason: FailureReason::DispatchFailed,
            message: message.clone(),
        }),
        Some(Health::Progressing) | Some(Health::Waiting(_)) | None => {
            let waiting = match observed.health.get(name) {
                Some(Health::Waiting(why)) => Some(why.as_str()),
                _ => None,
            };
            match time_left(observed, slot.index, &slot.status) {
                Some(left) => {
                    look_again = Some(left);
                    saying = match soaking {
                        // Health broke during the soak: it starts again once healthy.
                        Some(_) => transitions::soak_interrupted(
                            &slot.status,
                            waiting.unwrap_or("objects not healthy"),
                        )
                        .ok(),
                        None => waiting
                            .filter(|why| slot.status.message.as_deref() != Some(*why))
                            .and_then(|why| transitions::waiting(&slot.status, why).ok()),
                    };
                    None
                }
                None => Some(Outcome::Failed {
                    reason: FailureReason::Timeout,
                    message: format!(
                        "objects not healthy within the timeout of {}{}",
                        timeout_text(observed, slot.index),
                        waiting.map(|why| format!("; {why}")).unwrap_or_default()
                    ),
                }),
            }
        }
    };
    RunCheck { outcome, saying, look_again }
}

/// The soak of an operation's entry; an unparsable one (refused at admission) counts as none.
fn soak_of(entry: &crate::crd::OperationEntry) -> Option<Duration> {
    entry.soak.as_deref().and_then(|soak| parse_duration(soak).ok())
}

fn timeout_text<'a>(observed: &Observed<'a>, index: u32) -> &'a str {
    usize::try_from(index)
        .ok()
        .and_then(|index| observed.apply.spec.operations.get(index))
        .map_or(DEFAULT_OPERATION_TIMEOUT, |entry| entry.timeout.as_str())
}

/// Time left before the operation's timeout, `None` once it passed.
fn time_left(observed: &Observed<'_>, index: u32, status: &OperationStatus) -> Option<Duration> {
    let timeout = parse_duration(timeout_text(observed, index))
        .or_else(|_| parse_duration(DEFAULT_OPERATION_TIMEOUT))
        .unwrap_or(Duration::from_secs(600));
    let started = status.started_at.as_ref().map_or(observed.now, |t| t.0);
    let elapsed = observed.now.duration_since(started);
    let left = SignedDuration::try_from(timeout).unwrap_or(SignedDuration::MAX) - elapsed;
    Duration::try_from(left).ok().filter(|left| !left.is_zero())
}

/// SPEC.md section 5: a dismissal by the current error's id, once nothing runs, puts every
/// failed operation back to `Pending`.
fn dismissal(observed: &Observed<'_>, roster: &mut Roster<'_>, plan: &mut Plan) {
    let Some(id) = observed.apply.spec.dismiss_error.as_deref() else {
        return;
    };
    let error = roster.first_error();
    let last = roster.last_dismissed();
    match error {
        Some(error) if error.id == id => {
            if roster.anything_running() {
                return;
            }
            let dismissal = DismissedError { id: id.to_owned(), at: Time(observed.now) };
            // Highest index first: the current error is reset last, so a pass cut short by a
            // conflict leaves it standing and the next pass finishes the dismissal.
            for position in (0..roster.slots().len()).rev() {
                if let Ok(next) =
                    transitions::dismiss(&roster.slots()[position].status, &dismissal, observed.now)
                {
                    record(roster, plan, position, WriteKind::Dismiss, next, None);
                }
            }
            plan.notes.push(Note::ErrorDismissed { id: id.to_owned() });
            plan.note_writes.push(None);
        }
        _ if last.as_ref().is_some_and(|last| last.id == id) => {}
        error => {
            let why = dismissal_rejection(observed.apply.spec, error.as_ref(), last.as_ref())
                .unwrap_or_default();
            let already_said = observed.previous.is_some_and(|previous| {
                previous
                    .conditions
                    .iter()
                    .any(|c| c.type_ == condition::DISMISSAL_REJECTED && c.message == why)
            });
            if !already_said {
                plan.notes.push(Note::DismissalIgnored { id: id.to_owned(), why });
                plan.note_writes.push(None);
            }
        }
    }
}

/// Apply-level Events follow the projected phase, never a single operation's result.
fn apply_notes(previous: Option<&ApplyStatus>, next: &ApplyStatus) -> Vec<Note> {
    let mut notes = stop::notes(previous, next);
    let foreign = |status: &ApplyStatus| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::FOREIGN_OPERATIONS)
            .map(|c| c.message.clone())
    };
    if let Some(message) = foreign(next)
        && previous.and_then(foreign).as_ref() != Some(&message)
    {
        notes.push(Note::ForeignOperations { message });
    }
    if let Some(phase) = next.phase
        && phase.is_terminal()
        && previous.and_then(|p| p.phase) != Some(phase)
    {
        notes.push(Note::Settled { phase, message: next.message.clone() });
    }
    notes
}
