//! The pure core of baton: what an Apply's status is, which operations may be claimed, which
//! transitions are allowed, and what one reconcile must write.
//!
//! Nothing here talks to Kubernetes, reads the clock or keeps state between calls: every input
//! is an argument (the clock included), so every replica reaches the same answer from the same
//! reads. The reconcilers read, ask [`begin`] whether the Apply needs driving, call [`decide`],
//! write what the [`Plan`] says, write the parent status that [`project`] derives from the
//! children they wrote, and end the pass as [`next`] says.
//!
//! - `facts`: what one decision reads and the questions asked of it (anything running, the
//!   policy's meaning, the current error), built once per decision;
//! - `stop`: a stop's one home: when it is in effect and what it does;
//! - `gate`: the claim gate; `transitions`: the only operation transitions there are;
//! - `decide`: the writes of one pass; `pass`: how a pass begins and ends;
//! - `project`: the parent status; `pacing`: when a new projection is written, and how retries
//!   back off;
//! - `notes`: what a pass did that a user cares about, and the Events' words for it;
//! - `identity`: which Operations are an Apply's children, and what baton creates for a step;
//! - `idempotency`: the key decisions; `duration`: timeouts and soaks;
//! - `values`: the `${name}` variables of an operation's manifests, bounded in size.

mod decide;
mod duration;
mod facts;
mod gate;
mod idempotency;
mod identity;
mod notes;
mod pacing;
mod pass;
mod project;
mod stop;
mod transitions;
mod values;

/// Builders for tests of the lifecycle and of what consumes its projection.
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod spec_rules;

pub use decide::{Batching, Health, Observed, OperationWrite, Plan, Then, WriteKind, decide};
pub use duration::{DurationError, parse_duration};
pub use facts::{ApplyFacts, Idempotency, LeaseState, approval_given, error_id};
pub use gate::{GateClosed, awaits_approval, claimable};
pub use idempotency::{KeyRecord, KeyState, KeyWrite, key_write, observe_key};
pub use identity::{
    Foreign, all_created, describe_foreign, expected_spec, manifests_differ, operation_name,
    sort_owned, why_foreign,
};
pub use notes::{EventText, Note, Severity, reconcile_failed, too_large};
pub use pacing::{
    Backoff, LASTING_ERROR, LOST_WRITE, PASSING_ERROR, StatusWrite, progress_interval, status_write,
};
pub use pass::{Begin, Next, Pace, begin, key_needs_finalizer, next};
pub use project::{carry_transition_times, project};
pub use transitions::{Outcome, Refused, claim, dismiss, finish, lost, resume, stop, take_over};
pub use values::{ValuesError, expand, values_of};

use crate::crd::{ANNOTATION_RECREATED, Operation, OperationStatus};

/// Condition types written on an Apply.
pub mod condition {
    /// The rollout finished and every operation succeeded (or the change was already done).
    pub const READY: &str = "Ready";
    /// The operator is working towards the desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// Progress needs a person: the rollout failed or is paused.
    pub const STALLED: &str = "Stalled";
    /// The rollout goes on past a known failure.
    pub const DEGRADED: &str = "Degraded";
    /// `spec.dismissError` names no current error.
    pub const DISMISSAL_REJECTED: &str = "DismissalRejected";
    /// Operations claim to belong to the Apply and are not its children (SPEC.md section 1).
    pub const FOREIGN_OPERATIONS: &str = "ForeignOperations";
}

/// Reasons written by the lifecycle (operation failure reasons are [`crate::crd::FailureReason`]).
pub mod reason {
    /// A stop request stopped the operation.
    pub const STOP_REQUESTED: &str = "StopRequested";
    /// The operation was claimed and is running.
    pub const CLAIMED: &str = "Claimed";
    /// A replica took over an operation whose previous holder lost the lease.
    pub const TAKEN_OVER: &str = "TakenOver";
    /// Every applied object is healthy.
    pub const HEALTHY: &str = "Healthy";
    /// Another live Apply holds the same idempotency key.
    pub const DUPLICATE_IN_FLIGHT: &str = "DuplicateInFlight";
    /// The next operation waits for its approval (`spec.approvals`).
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    /// Every applied object is healthy; the operation soaks before it succeeds.
    pub const SOAKING: &str = "Soaking";
    /// `spec.dismissError` names an error that is not the current one.
    pub const STALE_DISMISSAL: &str = "StaleDismissal";
    /// An Operation names the Apply as its owner and is not one of its children.
    pub const NOT_A_CHILD: &str = "NotAChild";
}

/// What the lifecycle knows of one existing Operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    /// The step's name (`spec.name`, not the object name).
    pub name: String,
    /// The step's index in the Apply's `spec.operations`.
    pub index: u32,
    /// The Operation's status as read.
    pub status: OperationStatus,
    /// The Operation's uid: it tells one incarnation of a step's record from another.
    pub uid: String,
    /// baton recreated this Operation after the one it first created was deleted.
    pub recreated: bool,
}

impl From<&Operation> for Child {
    fn from(operation: &Operation) -> Self {
        Child {
            name: operation.spec.name.clone(),
            index: operation.spec.index,
            status: operation.status.clone().unwrap_or_default(),
            uid: operation.metadata.uid.clone().unwrap_or_default(),
            recreated: operation
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|annotations| annotations.contains_key(ANNOTATION_RECREATED)),
        }
    }
}
