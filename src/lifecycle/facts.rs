//! The facts one decision reads, and the questions every part of the core asks of them: is a
//! stop in effect, is anything running, what does the failure policy allow, which error is
//! current. Each question has one answer here, and every reader (the gate, the projection,
//! `decide`, the pass decisions) asks it here.
//!
//! [`Roster`] is the Apply's operations in index order with their statuses; `decide` builds it
//! once and updates it as it plans writes, so the gate and the projection read what the plan
//! leaves behind.

use std::borrow::Cow;

use k8s_openapi::jiff::Timestamp;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Child, Foreign};
use crate::crd::{
    ApplyError, ApplySpec, Approval, ApprovalRecord, DismissedError, FailurePolicy,
    OperationCounts, OperationEntry, OperationPhase, OperationStatus,
};

/// Whether `entry`'s approval is given as far as rule 6 goes: it requires none, or
/// `spec.approvals` names it.
pub fn approval_given(spec: &ApplySpec, entry: &OperationEntry) -> bool {
    entry.approval != Some(Approval::Required) || spec.approvals.contains(&entry.name)
}

/// Whether this replica holds the Apply's lease (SPEC.md section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// This replica holds it: it may claim and write.
    Held,
    /// Another replica holds it, or nobody does: write nothing.
    NotHeld,
}

/// Where the Apply's idempotency key stands (SPEC.md section 7), as read from its key Lease.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Idempotency {
    /// The Apply has no `idempotencyKey`.
    #[default]
    NotRequired,
    /// Nobody holds the key: this Apply takes it before claiming anything.
    Free,
    /// This Apply holds the key.
    Held,
    /// Another live Apply holds the key: wait.
    InFlightElsewhere {
        /// The Apply holding it.
        holder: String,
    },
    /// The key's change was already rolled out: skip.
    AlreadyDone {
        /// The Apply that did the work.
        by: String,
    },
}

impl Idempotency {
    /// Whether the key lets this Apply claim (claim gate rule 5).
    pub fn lets_claims(&self) -> bool {
        matches!(self, Idempotency::NotRequired | Idempotency::Held)
    }

    /// The Apply holding the key this one waits for, if it waits.
    pub fn waiting_for(&self) -> Option<&str> {
        match self {
            Idempotency::InFlightElsewhere { holder } => Some(holder),
            _ => None,
        }
    }
}

/// What the projection and the decision know of the Apply itself.
#[derive(Clone, Debug)]
pub struct ApplyFacts<'a> {
    /// The Apply's spec.
    pub spec: &'a ApplySpec,
    /// `metadata.generation`, echoed as `observedGeneration`.
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp`: the time of conditions before any operation ran.
    pub created_at: Option<Timestamp>,
    /// `metadata.deletionTimestamp` is set: treated like a stop.
    pub deleting: bool,
    /// baton's cleanup finalizer is on the Apply.
    pub finalizer: bool,
    /// baton created every Operation once already ([`super::all_created`]): a missing
    /// Operation then was deleted.
    pub operations_created: bool,
    /// The idempotency key's state.
    pub idempotency: Idempotency,
    /// Who wrote each name of `spec.approvals`, and when (from the Apply's managed fields);
    /// copied into an Operation's status when it is claimed.
    pub approvers: BTreeMap<String, ApprovalRecord>,
    /// Operations that name the Apply as their owner and are not its children (SPEC.md
    /// section 1): never run, reported on the Apply.
    pub foreign: &'a [Foreign],
}

impl ApplyFacts<'_> {
    /// Whether writes for this Apply must be made under its lease. Not while it is being
    /// deleted: its namespace may be terminating (no new lease can be created there), and
    /// every write deleting makes is guarded by itself (stops and the key's release by
    /// resourceVersion, the finalizer's removal by resourceVersion, the status by being the
    /// same projection on every replica), while the gate stays shut to claims.
    pub fn writes_need_lease(&self) -> bool {
        !self.deleting
    }

    /// The failure policy in force: an unknown value means `Halt` (fail closed).
    pub fn policy(&self) -> FailurePolicy {
        self.spec.on_failure.effective()
    }

    /// Whether `failed` undismissed failures close the claim gate and make the policy act
    /// (rule 4, section 11): under `Halt` and `Pause` once they exceed the failure budget,
    /// under `Continue` never.
    pub fn failures_stop_the_rollout(&self, failed: u32) -> bool {
        self.policy() != FailurePolicy::Continue && failed > self.failure_budget()
    }

    /// `spec.maxFailed`: a count, or a percentage of the operations rounded down; 0 when absent
    /// (and for a value the schema should have refused).
    pub fn failure_budget(&self) -> u32 {
        let total = u32::try_from(self.spec.operations.len()).unwrap_or(u32::MAX);
        match &self.spec.max_failed {
            None => 0,
            Some(IntOrString::Int(count)) => u32::try_from(*count).unwrap_or(0),
            Some(IntOrString::String(text)) => text
                .strip_suffix('%')
                .and_then(|percent| percent.parse::<u64>().ok())
                .map_or(0, |percent| {
                    u32::try_from(u64::from(total) * percent.min(100) / 100).unwrap_or(0)
                }),
        }
    }

    /// Whether the operation `name` may be claimed as far as its approval goes (rule 6).
    pub fn approved(&self, entry: &OperationEntry) -> bool {
        approval_given(self.spec, entry)
    }
}

/// `<operation>-<attempt>`: the id of an operation's failure, what `spec.dismissError` names.
pub fn error_id(operation: &str, attempt: u32) -> String {
    format!("{operation}-{attempt}")
}

/// How many characters of a recreated Operation's uid its error ids carry.
const INCARNATION_CHARS: usize = 5;

/// The error id of an operation's record: `<operation>-<attempt>`, and for a record baton
/// recreated after the first was deleted `<operation>-<attempt>-<uid prefix>`, so an id is
/// never reused within an Apply whatever happens to its Operations: a recreated record starts
/// its attempts again, and a standing `dismissError` must not dismiss its errors.
fn record_error_id(slot: &Slot<'_>) -> String {
    let id = error_id(slot.name, slot.status.attempt);
    match slot.recreated {
        true => format!("{id}-{}", slot.uid.chars().take(INCARNATION_CHARS).collect::<String>()),
        false => id,
    }
}

/// One entry of the roster: a spec operation and its status (a fresh `Pending` one for an
/// operation not created yet).
#[derive(Clone, Debug)]
pub(crate) struct Slot<'a> {
    /// The step's name.
    pub name: &'a str,
    /// Its index in `spec.operations`.
    pub index: u32,
    /// Its status as read, or as the plan leaves it.
    pub status: Cow<'a, OperationStatus>,
    /// An Operation exists for it (only existing ones can be written).
    pub exists: bool,
    /// Its Operation's uid (empty when none exists).
    pub uid: &'a str,
    /// Its Operation was recreated by baton after being deleted.
    pub recreated: bool,
    /// Its entry in `spec.operations`.
    pub entry: &'a OperationEntry,
}

/// The spec's operations in index order, each with its child's status.
#[derive(Clone, Debug)]
pub(crate) struct Roster<'a> {
    slots: Vec<Slot<'a>>,
}

impl<'a> Roster<'a> {
    /// The roster of `spec` from the children read.
    pub fn new(spec: &'a ApplySpec, children: &'a [Child]) -> Self {
        let slots = spec
            .operations
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                let child = children.iter().find(|child| child.index == index);
                Slot {
                    name: &entry.name,
                    index,
                    status: child.map_or_else(
                        || Cow::Owned(OperationStatus::default()),
                        |child| Cow::Borrowed(&child.status),
                    ),
                    exists: child.is_some(),
                    uid: child.map_or("", |child| child.uid.as_str()),
                    recreated: child.is_some_and(|child| child.recreated),
                    entry,
                }
            })
            .collect();
        Roster { slots }
    }

    /// The slots in index order.
    pub fn slots(&self) -> &[Slot<'a>] {
        &self.slots
    }

    /// Replaces the status of the slot at `position` (what a planned write leaves behind).
    pub fn set(&mut self, position: usize, status: OperationStatus) {
        if let Some(slot) = self.slots.get_mut(position) {
            slot.status = Cow::Owned(status);
        }
    }

    /// The spec operations that have no Operation yet.
    pub fn missing(&self) -> impl Iterator<Item = &Slot<'a>> {
        self.slots.iter().filter(|slot| !slot.exists)
    }

    /// Whether any operation is in `phase`.
    pub fn any(&self, phase: OperationPhase) -> bool {
        self.slots.iter().any(|slot| slot.status.phase == phase)
    }

    /// Whether anything runs.
    pub fn anything_running(&self) -> bool {
        self.any(OperationPhase::Running)
    }

    /// How many operations run.
    pub fn running(&self) -> u32 {
        self.count(OperationPhase::Running)
    }

    /// How many operations are in `phase`.
    pub fn count(&self, phase: OperationPhase) -> u32 {
        let count = self.slots.iter().filter(|slot| slot.status.phase == phase).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Operations by phase.
    pub fn counts(&self) -> OperationCounts {
        OperationCounts {
            total: u32::try_from(self.slots.len()).unwrap_or(u32::MAX),
            pending: self.count(OperationPhase::Pending),
            running: self.count(OperationPhase::Running),
            succeeded: self.count(OperationPhase::Succeeded),
            failed: self.count(OperationPhase::Failed),
            stopped: self.count(OperationPhase::Stopped),
        }
    }

    /// Whether any operation ever ran.
    pub fn started(&self) -> bool {
        self.slots.iter().any(|slot| slot.status.attempt > 0)
    }

    /// The current error (SPEC.md section 5): the failed operation with the lowest index.
    pub fn first_error(&self) -> Option<ApplyError> {
        self.slots.iter().find(|slot| slot.status.phase == OperationPhase::Failed).map(|slot| {
            ApplyError {
                id: record_error_id(slot),
                operation: slot.name.to_owned(),
                reason: slot.status.reason.clone().unwrap_or_else(|| "Failed".to_owned()),
                message: one_line(slot.status.message.as_deref().unwrap_or("no message recorded")),
                at: slot.status.completed_at.clone(),
            }
        })
    }

    /// The most recent dismissal recorded on any child.
    pub fn last_dismissed(&self) -> Option<DismissedError> {
        self.slots
            .iter()
            .filter_map(|slot| slot.status.dismissed.clone())
            .max_by(|a, b| (a.at.0, &a.id).cmp(&(b.at.0, &b.id)))
    }
}

/// Text on one line: messages quoted in a status or an Event never break a line.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
