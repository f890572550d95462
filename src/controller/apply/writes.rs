//! The decide-and-write step: `lifecycle::decide` on the snapshot, then the plan's Operation
//! writes batch by batch as `Plan::batches` says (independent writes side by side, a window's
//! claims side by side after them, a dismissal reset alone), each a compare-and-swap on the
//! `resourceVersion` read. A write that loses to another writer ends the pass after its batch:
//! the next pass decides again from fresh reads. What follows a plan is the core's word
//! (`Plan::then`).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info};

use super::finalizer;
use super::snapshot::Snapshot;
use crate::controller::pacing::{LEASE_RETRY, lost_write};
use crate::controller::{Context, run_of};
use crate::crd::{
    ANNOTATION_RECREATED, Apply, LABEL_APPLY, LABEL_INDEX, Operation, OperationPhase,
    OperationStatus,
};
use crate::lifecycle::{
    Health, LeaseState, Note, Observed, OperationWrite, Plan, Then, WriteKind, decide,
    expected_spec, manifests_differ, operation_name, why_foreign,
};
use crate::{Error, Result};

/// How many independent Operation writes are made at once.
const WRITE_CONCURRENCY: usize = 32;

/// What one round of decisions and writes left for the later steps.
pub(super) struct Round {
    /// The nearest timeout of a running operation.
    pub timeout: Option<Duration>,
    /// The round claimed: observe what it claimed and decide again.
    pub observe_again: bool,
}

/// Decides and writes until the plan says the round is over (`Plan::then`); the notes of the
/// writes that went through go to `notes`. A round cut short (a lost write, the lease gone)
/// breaks with what to do instead.
pub(super) async fn decide_and_write(
    snapshot: &mut Snapshot<'_>,
    health: &BTreeMap<String, Health>,
    context: &Context,
    notes: &mut Vec<Note>,
) -> Result<ControlFlow<Action, Round>> {
    let api = snapshot.operations_api(context);
    loop {
        let children = snapshot.children();
        let plan = decide(&Observed {
            apply: snapshot.facts(),
            children: &children,
            // Without the lease only a deleted Apply's pass gets here (see `Begin::Drive`).
            lease: if snapshot.under_lease { LeaseState::Held } else { LeaseState::NotHeld },
            holder: context.leases.identity(),
            health,
            previous: snapshot.apply.status.as_ref(),
            now: Timestamp::now(),
        });
        if plan.finalizer_first() && !finalizer::add(snapshot, context).await? {
            return Ok(ControlFlow::Break(lost_write(&context.misses, &snapshot.uid)));
        }
        // Observing may have taken a while: the lease is checked again right before writing.
        if !plan.writes.is_empty() && !snapshot.may_write(context) {
            info!("lease lost before the operation writes; not writing");
            return Ok(ControlFlow::Break(Action::requeue(LEASE_RETRY)));
        }
        let (made, outcome) = if plan.add_finalizer && !plan.finalizer_first() {
            let apply = snapshot.apply;
            let (added, written) = tokio::join!(
                finalizer::add_beside(apply, context),
                write_plan(snapshot, &api, &plan, context)
            );
            // Not added (the Apply changed): the claims' round tries again first.
            snapshot.finalizer_added(added?);
            written
        } else {
            write_plan(snapshot, &api, &plan, context).await
        };
        notes.extend(plan.notes_for(&made).cloned());
        // A conflict means someone else moved first: not an error. The rest is decided again
        // from fresh reads.
        outcome?;
        if made.iter().any(|made| !made) {
            return Ok(ControlFlow::Break(lost_write(&context.misses, &snapshot.uid)));
        }
        match plan.then() {
            Then::Decide => continue,
            then => {
                return Ok(ControlFlow::Continue(Round {
                    timeout: plan.requeue_after,
                    observe_again: then == Then::ObserveAndDecide,
                }));
            }
        }
    }
}

/// Makes the plan's writes batch by batch (see [`Plan::batches`]), the writes of a batch side
/// by side; stops after the first batch in which a write did not go through. Says which writes
/// were made, and the first error.
async fn write_plan(
    snapshot: &mut Snapshot<'_>,
    api: &Api<Operation>,
    plan: &Plan,
    context: &Context,
) -> (Vec<bool>, Result<()>) {
    let mut made = vec![false; plan.writes.len()];
    for batch in plan.batches() {
        let apply = snapshot.apply;
        let operations = &snapshot.operations;
        let results: Vec<(usize, Result<Option<Operation>>)> = futures::stream::iter(batch.clone())
            .map(|position| {
                let write = &plan.writes[position];
                let current = match write {
                    OperationWrite::Status { index, .. } => operations.get(index),
                    OperationWrite::Create { .. } => None,
                };
                async move { (position, write_one(apply, api, current, write, context).await) }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let mut first_error = None;
        for (position, result) in results {
            match result {
                Ok(Some(written)) => {
                    made[position] = true;
                    let index = written.spec.index;
                    context.children.wrote(
                        &snapshot.uid,
                        snapshot.operations.get(&index),
                        &written,
                    );
                    snapshot.operations.insert(index, written);
                }
                Ok(None) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            return (made, Err(error));
        }
        if made[batch].iter().any(|made| !made) {
            break;
        }
    }
    (made, Ok(()))
}

/// One write: `Some` with what the API server returned, `None` when another writer moved first
/// (a conflict, not an error: the next pass decides again).
async fn write_one(
    apply: &Apply,
    api: &Api<Operation>,
    current: Option<&Operation>,
    write: &OperationWrite,
    context: &Context,
) -> Result<Option<Operation>> {
    match write {
        OperationWrite::Create { index, name, recreated } => {
            create(apply, api, *index, name, *recreated).await
        }
        OperationWrite::Status { name, kind, status, .. } => {
            let Some(current) = current else { return Ok(None) };
            replace_status(api, current, name, *kind, status, context).await
        }
    }
}

async fn create(
    apply: &Apply,
    api: &Api<Operation>,
    index: u32,
    name: &str,
    recreated: bool,
) -> Result<Option<Operation>> {
    let child = new_operation(apply, index, name, recreated)?;
    let object_name = child.name_any();
    match api.create(&PostParams::default(), &child).await {
        Ok(created) => Ok(Some(created)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Ours, created meanwhile: re-read. Anything else in the way: say so, it will not
            // pass, and it is never run (SPEC.md section 1).
            let Some(existing) = api.get_opt(&object_name).await.ok().flatten() else {
                return Ok(None);
            };
            let uid = apply.metadata.uid.as_deref().unwrap_or_default();
            let reason = why_foreign(&apply.name_any(), uid, &apply.spec, &existing)
                .or_else(|| manifests_differ(&apply.spec, &existing.spec));
            let Some(reason) = reason else { return Ok(None) };
            let message = match existing.owner_references().first() {
                Some(owner) if owner.uid != uid => format!(
                    "operation `{name}`: the Operation `{object_name}` already belongs to {} \
                     `{}`; rename the operation or the Apply",
                    owner.kind, owner.name
                ),
                _ => format!(
                    "operation `{name}`: the Operation `{object_name}` is in its place and is not \
                     baton's ({reason}); it is never run: delete it"
                ),
            };
            Err(Error::Conflict(message))
        }
        Err(source) => Err(Error::Kube {
            step: crate::Step::Write,
            context: format!(
                "creating operation `{object_name}` in `{}`",
                apply.namespace().unwrap_or_default()
            ),
            source,
        }),
    }
}

/// A replace of the status carrying the `resourceVersion` read: a compare-and-swap.
async fn replace_status(
    api: &Api<Operation>,
    current: &Operation,
    name: &str,
    kind: WriteKind,
    status: &OperationStatus,
    context: &Context,
) -> Result<Option<Operation>> {
    let mut next = current.clone();
    next.metadata.managed_fields = None;
    // Only the status is written; the cache's own mark is not sent.
    if let Some(annotations) = next.metadata.annotations.as_mut() {
        annotations.remove(crate::controller::children::MANIFESTS_LEFT_OUT);
    }
    next.status = Some(with_inventory(current, status, context));
    let object_name = next.name_any();
    match api.replace_status(&object_name, &PostParams::default(), &next).await {
        Ok(written) => {
            count_transition(kind, status, context);
            // A take-over starts the run afresh here: re-apply, even if this replica held it
            // once before.
            if matches!(kind, WriteKind::Finish | WriteKind::Stop | WriteKind::TakeOver) {
                context.runs.forget(&run_of(current));
            }
            debug!(operation = %name, ?kind, phase = ?status.phase, "operation written");
            Ok(Some(written))
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            if kind == WriteKind::Claim {
                context.metrics.claims_lost.inc();
            }
            debug!(operation = %name, ?kind, "conflict: another writer moved first");
            Ok(None)
        }
        // Deleted since it was read (with its Apply or namespace, or by hand): the write lost
        // to that deletion, and the next pass reads what is left.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            debug!(operation = %name, ?kind, "gone since read");
            Ok(None)
        }
        Err(source) => Err(Error::Kube {
            step: crate::Step::Write,
            context: format!(
                "writing the status of operation `{object_name}` in `{}`",
                current.namespace().unwrap_or_default()
            ),
            source,
        }),
    }
}

/// The inventory of a run this replica dispatched goes into its terminal (or stopped) status,
/// so the Operation records what it applied.
fn with_inventory(
    current: &Operation,
    status: &OperationStatus,
    context: &Context,
) -> OperationStatus {
    let mut status = status.clone();
    let ended = matches!(
        status.phase,
        OperationPhase::Succeeded | OperationPhase::Failed | OperationPhase::Stopped
    );
    if status.inventory.is_empty()
        && ended
        && let Some(inventory) = context.runs.inventory(&run_of(current))
    {
        status.inventory = inventory;
    }
    status.observed_generation = current.metadata.generation;
    status
}

fn count_transition(kind: WriteKind, status: &OperationStatus, context: &Context) {
    if kind == WriteKind::Claim {
        context.metrics.claims_won.inc();
    }
    context
        .metrics
        .operation_transitions
        .get_or_create(&crate::metrics::PhaseLabels { phase: status.phase.as_str().to_owned() })
        .inc();
}

/// The Operation for `spec.operations[index]` (`lifecycle::expected_spec`), owned by the
/// Apply; marked when it replaces a deleted one.
fn new_operation(apply: &Apply, index: u32, name: &str, recreated: bool) -> Result<Operation> {
    let apply_name = apply.name_any();
    let spec = expected_spec(&apply.spec, index).ok_or_else(|| {
        Error::Malformed(format!("Apply `{apply_name}` has no operation #{index}"))
    })?;
    let owner = apply.controller_owner_ref(&()).ok_or_else(|| {
        Error::Malformed(format!("Apply `{apply_name}` cannot own objects (no uid)"))
    })?;
    Ok(Operation {
        metadata: ObjectMeta {
            name: Some(operation_name(&apply_name, name)),
            namespace: apply.namespace(),
            labels: Some(
                [
                    (LABEL_APPLY.to_owned(), apply_name.clone()),
                    (LABEL_INDEX.to_owned(), index.to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner]),
            annotations: recreated
                .then(|| [(ANNOTATION_RECREATED.to_owned(), "true".to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    })
}
