//! The Apply reconciler, a pipeline of named steps:
//! read (the Apply, its Operations, the lease) → observe (the engine runs and checks what this
//! replica holds) → decide (`lifecycle::decide`) → write (Operation writes in order, each
//! guarded by its resourceVersion) → project (the parent status from what was written) →
//! record (Events).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, instrument, warn};

use super::keys;
use super::{Context, Dispatch};
use crate::crd::ApplyPhase;
use crate::crd::{
    Apply, ApplyStatus, LABEL_APPLY, LABEL_INDEX, Operation, OperationPhase, OperationSpec,
    OperationStatus,
};
use crate::engine::{FIELD_MANAGER, RunTarget};
use crate::lifecycle::{
    ApplyFacts, Child, Health, Idempotency, KeyRecord, KeyWrite, LeaseState, Note, Observed,
    OperationWrite, Plan, StatusWrite, WriteKind, carry_transition_times, decide, key_write,
    observe_key, project, status_write,
};
use crate::{Error, Result};

/// How soon to look again when the lease is held elsewhere and no wake-up comes.
const LEASE_RETRY: Duration = Duration::from_secs(5);
/// How many running operations of one Apply are applied and checked at once.
const OBSERVE_CONCURRENCY: usize = 16;
/// How often a change of progress alone is written to the parent status (see
/// `lifecycle::status_write`); anything else is written at once.
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// How many independent Operation writes are made at once.
const WRITE_CONCURRENCY: usize = 32;
/// How soon to look again while another Apply holds the idempotency key.
const KEY_RETRY: Duration = Duration::from_secs(2);
/// Held from an Apply's first claim until deleting it has stopped what runs and released its
/// idempotency key.
pub const FINALIZER: &str = "baton.dev/cleanup";

/// Reconciles one Apply.
#[instrument(skip(apply, context), fields(apply = %apply.name_any(), namespace = apply.namespace().unwrap_or_default()))]
pub async fn reconcile(apply: Arc<Apply>, context: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let outcome = reconcile_inner(&apply, &context).await;
    context.metrics.reconciled("apply", started.elapsed());
    if let Err(error) = &outcome
        && matches!(error, Error::Invalid(_))
    {
        let event = Event {
            type_: EventType::Warning,
            reason: "ReconcileFailed".to_owned(),
            note: Some(truncate(error.to_string(), 1000)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        let _ = context.recorder.publish(&event, &apply.object_ref(&())).await;
    }
    if let Err(error) = &outcome
        && error.is_too_large()
    {
        // No status can say it (the status itself may be what is too large): an Event can.
        let event = Event {
            type_: EventType::Warning,
            reason: "TooLarge".to_owned(),
            note: Some(truncate(
                format!(
                    "this Apply is too large to track ({error}); keep its manifests well under the \
                     API server's 1.5 MiB object limit, or split the rollout"
                ),
                1000,
            )),
            action: "Track".to_owned(),
            secondary: None,
        };
        let _ = context.recorder.publish(&event, &apply.object_ref(&())).await;
    }
    outcome
}

async fn reconcile_inner(apply: &Apply, context: &Context) -> Result<Action> {
    let name = apply.name_any();
    let namespace = apply
        .namespace()
        .ok_or_else(|| Error::Invalid(format!("Apply `{name}` has no namespace")))?;
    let uid = apply.uid().ok_or_else(|| Error::Invalid(format!("Apply `{name}` has no uid")))?;
    let operations: Api<Operation> = Api::namespaced(context.client.clone(), &namespace);
    let deleting = apply.metadata.deletion_timestamp.is_some();
    if deleting && !has_finalizer(apply) {
        // Never started: nothing of ours to clean up; garbage collection does the rest.
        let_go(context, &uid);
        return Ok(Action::await_change());
    }

    let timer = Instant::now();
    // read
    let owned = match context.children.of(apply) {
        Some(owned) => owned,
        None => operations
            .list(&ListParams::default().labels(&format!("{LABEL_APPLY}={name}")))
            .await
            .map_err(|source| Error::Kube {
                context: format!("listing the operations of Apply `{name}`"),
                source,
            })?
            .items
            .into_iter()
            .filter(|op| op.owner_references().iter().any(|owner| owner.uid == uid))
            .collect(),
    };
    let children: Vec<Child> = owned.iter().map(Child::from).collect();
    let mut key = Key::read(apply, &namespace, context).await?;
    let mut facts = ApplyFacts {
        spec: &apply.spec,
        generation: apply.metadata.generation,
        created_at: apply.metadata.creation_timestamp.as_ref().map(|t| t.0),
        deleting,
        idempotency: key.idempotency(),
    };
    let projected = project(&facts, &children);
    if !deleting
        && settled_and_recorded(apply, &projected, &children)
        && key.next_write(projected.phase, deleting) == KeyWrite::Keep
    {
        let_go(context, &uid);
        return Ok(Action::await_change());
    }
    if context.leases.acquire(apply).await?.is_none() {
        debug!("lease held elsewhere; waiting");
        return Ok(Action::requeue(LEASE_RETRY));
    }
    let lease = LeaseState::Held;
    let mut finalized = has_finalizer(apply);
    let requeue_after;

    // the key is taken (or renewed) before deciding, so the claim gate can open in this pass
    let before = key.next_write(projected.phase, deleting);
    if matches!(before, KeyWrite::Take | KeyWrite::Renew) {
        // Holding a key is something deleting the Apply must undo: the finalizer comes first.
        if !ensure_finalizer(apply, &namespace, context, &mut finalized).await? {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        if !key.write(&before).await? {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        key = Key::read(apply, &namespace, context).await?;
        facts.idempotency = key.idempotency();
    }

    let read = timer.elapsed();
    // observe
    let health = observe_runs(apply, &namespace, &owned, context).await;

    let observed = timer.elapsed();
    // decide and write
    let mut latest: HashMap<u32, Operation> =
        owned.into_iter().map(|op| (op.spec.index, op)).collect();
    let mut notes = Vec::new();
    loop {
        let children: Vec<Child> = latest.values().map(Child::from).collect();
        let plan = decide(&Observed {
            apply: facts.clone(),
            children: &children,
            lease,
            holder: context.leases.identity(),
            health: &health,
            previous: apply.status.as_ref(),
            now: Timestamp::now(),
        });
        let claims = plan
            .writes
            .iter()
            .any(|write| matches!(write, OperationWrite::Status { kind: WriteKind::Claim, .. }));
        // From the first claim on, deleting the Apply first stops what runs.
        if claims && !ensure_finalizer(apply, &namespace, context, &mut finalized).await? {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        // Observing may have taken a while: the lease is checked again right before writing.
        if !plan.writes.is_empty() && !still_held(context, &namespace, &uid).await? {
            info!("lease lost before the operation writes; not writing");
            return Ok(Action::requeue(LEASE_RETRY));
        }
        let (made, outcome) = write_plan(apply, &operations, &mut latest, &plan, context).await;
        notes.extend(plan.notes_for(&made).cloned());
        if outcome.is_err() || made.iter().any(|made| !made) {
            // The Events of the writes that went through are recorded; the rest is decided
            // again from fresh reads.
            publish_all(apply, &notes, context).await;
            // A conflict means someone else moved first: not an error.
            outcome?;
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        // A pass that only created the missing Operations decides again on what it created, so
        // the first claims need no second pass (and the parent no status in between).
        let created_only = !plan.writes.is_empty()
            && plan.writes.iter().all(|write| matches!(write, OperationWrite::Create { .. }));
        if !created_only {
            requeue_after = plan.requeue_after;
            break;
        }
    }

    let written = timer.elapsed();
    // project
    let children: Vec<Child> = latest.values().map(Child::from).collect();
    let mut status = project(&facts, &children);
    carry_transition_times(apply.status.as_ref(), &mut status);
    context.metrics.count_operations(&uid, (!deleting).then_some(&status.operations));
    let since_last_write = context.status_writes.since(&uid);
    let mut flush_after = None;
    match status_write(apply.status.as_ref(), &status, since_last_write, PROGRESS_WRITE_INTERVAL) {
        StatusWrite::Unchanged => {}
        StatusWrite::After(wait) => flush_after = Some(wait),
        StatusWrite::Now => {
            if !still_held(context, &namespace, &uid).await? {
                info!("lease lost before the status write; not writing");
                return Ok(Action::requeue(LEASE_RETRY));
            }
            write_status(apply, &namespace, &status, context).await?;
            context.status_writes.written(&uid);
            // Read by the racing-replicas suite to check that only lease holders write.
            info!(holder = context.leases.identity(), phase = ?status.phase, "parent status written");
        }
    }

    let projected = timer.elapsed();
    // record
    publish_all(apply, &notes, context).await;
    // Where a pass spends its time, cumulatively, for tuning.
    debug!(?read, ?observed, ?written, ?projected, recorded = ?timer.elapsed(), operations = latest.len(), "pass");

    // end-of-rollout effects follow the projected phase
    let after = key.next_write(status.phase, deleting);
    if matches!(after, KeyWrite::MarkSucceeded | KeyWrite::MarkFailed | KeyWrite::Release)
        && !key.write(&after).await?
    {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }

    let running = children.iter().any(|child| child.status.phase == OperationPhase::Running);
    if deleting && !running {
        remove_finalizer(apply, &namespace, context).await?;
        let_go(context, &uid);
        return Ok(Action::await_change());
    }
    let settled = status.phase.is_some_and(|phase| phase.is_terminal()) && !running;
    if settled && flush_after.is_none() {
        let_go(context, &uid);
        return Ok(Action::await_change());
    }
    let wait = match (running, requeue_after) {
        (true, Some(until_timeout)) => until_timeout.min(context.settings.health_poll_interval),
        (true, None) => context.settings.health_poll_interval,
        // Waiting for another Apply's key: its release does not wake this one.
        (false, _) if matches!(facts.idempotency, Idempotency::InFlightElsewhere { .. }) => {
            KEY_RETRY
        }
        (false, _) => Duration::from_secs(60),
    };
    // A progress update held back is written by the next pass at the latest.
    Ok(Action::requeue(flush_after.map_or(wait, |flush| flush.min(wait))))
}

/// Stops driving a settled or deleted Apply: its lease is released and what this replica kept
/// for it is dropped.
fn let_go(context: &Context, uid: &str) {
    context.leases.release(uid);
    context.status_writes.forget(uid);
    context.children.forget(uid);
}

/// Whether the lease is still this replica's, by a fresh read. The expiry read at the start of
/// the pass is not enough: a competing replica's lease manager that believes the lease expired
/// (from its own earlier read) clears it without looking again, and may then take it at once.
async fn still_held(context: &Context, namespace: &str, uid: &str) -> Result<bool> {
    Ok(context.leases.check(namespace, uid).await?.is_some())
}

/// The Apply's idempotency key, as read at the start of a reconcile.
struct Key<'a> {
    apply: &'a Apply,
    api: Api<Lease>,
    lease: Option<Lease>,
    holder: String,
    ttl: SignedDuration,
    now: Timestamp,
}

impl<'a> Key<'a> {
    async fn read(apply: &'a Apply, namespace: &str, context: &Context) -> Result<Key<'a>> {
        let api: Api<Lease> = Api::namespaced(context.client.clone(), namespace);
        let lease = match &apply.spec.idempotency_key {
            Some(key) => keys::read(&api, key).await?,
            None => None,
        };
        Ok(Key {
            apply,
            api,
            lease,
            holder: keys::holder_of(apply),
            ttl: SignedDuration::try_from(context.settings.idempotency_ttl)
                .unwrap_or(SignedDuration::from_hours(1)),
            now: Timestamp::now(),
        })
    }

    fn record(&self) -> Option<KeyRecord> {
        self.lease.as_ref().and_then(keys::record)
    }

    fn idempotency(&self) -> Idempotency {
        if self.apply.spec.idempotency_key.is_none() {
            return Idempotency::NotRequired;
        }
        let record = self.record();
        match observe_key(
            record.as_ref(),
            &self.holder,
            self.apply.spec.dedup_on,
            self.now,
            self.ttl,
        ) {
            Idempotency::AlreadyDone { by } => {
                Idempotency::AlreadyDone { by: keys::holder_name(&by).to_owned() }
            }
            Idempotency::InFlightElsewhere { holder } => {
                Idempotency::InFlightElsewhere { holder: keys::holder_name(&holder).to_owned() }
            }
            other => other,
        }
    }

    fn next_write(&self, phase: Option<ApplyPhase>, deleting: bool) -> KeyWrite {
        if self.apply.spec.idempotency_key.is_none() {
            return KeyWrite::Keep;
        }
        let record = self.record();
        key_write(
            record.as_ref(),
            &self.holder,
            phase,
            deleting,
            self.apply.spec.dedup_on,
            self.now,
            self.ttl,
        )
    }

    async fn write(&self, write: &KeyWrite) -> Result<bool> {
        let Some(key) = &self.apply.spec.idempotency_key else { return Ok(true) };
        info!(key = %key, ?write, "idempotency key");
        keys::apply_write(
            &self.api,
            key,
            self.lease.as_ref(),
            write,
            &self.holder,
            self.now,
            self.ttl,
        )
        .await
    }
}

fn has_finalizer(apply: &Apply) -> bool {
    apply.finalizers().iter().any(|finalizer| finalizer == FINALIZER)
}

/// Adds or removes baton's finalizer with a merge patch carrying the resourceVersion read, so
/// it never overwrites another controller's finalizers written meanwhile.
async fn set_finalizer(
    apply: &Apply,
    namespace: &str,
    context: &Context,
    present: bool,
) -> Result<bool> {
    let mut finalizers: Vec<String> =
        apply.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": apply.resource_version()}
    });
    let api: Api<Apply> = Api::namespaced(context.client.clone(), namespace);
    match api.patch(&apply.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        // A newer Apply exists (or none): the next reconcile sees it and decides again.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(false),
        Err(source) => Err(Error::Kube {
            context: format!("updating the finalizers of Apply `{}`", apply.name_any()),
            source,
        }),
    }
}

/// Adds the finalizer unless `present` says it is there; `false` when the Apply changed
/// meanwhile (re-read). `present` follows the write, so a second call in the same pass neither
/// writes again nor trips over the `resourceVersion` the first one changed.
async fn ensure_finalizer(
    apply: &Apply,
    namespace: &str,
    context: &Context,
    present: &mut bool,
) -> Result<bool> {
    if !*present {
        *present = set_finalizer(apply, namespace, context, true).await?;
    }
    Ok(*present)
}

async fn remove_finalizer(apply: &Apply, namespace: &str, context: &Context) -> Result<()> {
    if has_finalizer(apply) {
        info!("operations stopped and key released; letting the Apply go");
        // A conflict leaves the finalizer for the next reconcile, which tries again.
        set_finalizer(apply, namespace, context, false).await?;
    }
    Ok(())
}

/// The rollout ended and its status says so: nothing to do, and no lease to hold.
fn settled_and_recorded(apply: &Apply, projected: &ApplyStatus, children: &[Child]) -> bool {
    let mut status = projected.clone();
    carry_transition_times(apply.status.as_ref(), &mut status);
    let settled = status.phase.is_some_and(|phase| phase.is_terminal())
        && children.iter().all(|child| child.status.phase != OperationPhase::Running);
    settled && apply.status.as_ref() == Some(&status)
}

/// Runs (dispatches) and checks every operation this replica holds.
async fn observe_runs(
    apply: &Apply,
    namespace: &str,
    owned: &[Operation],
    context: &Context,
) -> BTreeMap<String, Health> {
    if apply.spec.stop || apply.metadata.deletion_timestamp.is_some() {
        return BTreeMap::new();
    }
    let identity = context.leases.identity();
    let service_account = apply
        .spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| context.settings.default_service_account.clone());
    let mine: Vec<&Operation> = owned
        .iter()
        .filter(|op| {
            let Some(status) = op.status.as_ref() else { return false };
            let held = status.claim.as_ref().is_some_and(|claim| claim.holder == identity);
            let running = status.phase == OperationPhase::Running && held;
            if !running {
                // Ended, or run by someone else now: what this replica knew of it is stale.
                context.runs.forget(&(op.uid().unwrap_or_default(), status.attempt));
            }
            running
        })
        .collect();
    // The runs are independent: they are applied and checked side by side.
    let checks: Vec<_> =
        mine.into_iter().map(|op| observe_run(op, namespace, &service_account, context)).collect();
    futures::stream::iter(checks).buffer_unordered(OBSERVE_CONCURRENCY).collect().await
}

/// Applies one running operation (once per run) and reads its health.
async fn observe_run(
    op: &Operation,
    namespace: &str,
    service_account: &str,
    context: &Context,
) -> (String, Health) {
    let name = op.spec.name.clone();
    let attempt = op.status.as_ref().map_or(0, |status| status.attempt);
    let run = (op.uid().unwrap_or_default(), attempt);
    let dispatch = match context.runs.get(&run) {
        Some(dispatch) => dispatch,
        None => {
            let target =
                RunTarget { apply_namespace: namespace, service_account, operation: &op.spec };
            let dispatch = match context.engine.dispatch(&target).await {
                Ok(inventory) => {
                    info!(operation = %name, attempt, objects = inventory.len(), "applied");
                    Dispatch::Applied(inventory)
                }
                Err(failure) if failure.transient => {
                    // The API server could not answer: try again at the next check, and let
                    // the operation's timeout decide if it never does.
                    warn!(operation = %name, attempt, message = %failure.message, "apply interrupted; retrying");
                    return (name, Health::Progressing);
                }
                Err(failure) => {
                    info!(operation = %name, attempt, message = %failure.message, "apply failed");
                    Dispatch::Failed(failure)
                }
            };
            context.runs.record(run, dispatch.clone());
            dispatch
        }
    };
    match dispatch {
        Dispatch::Applied(inventory) => {
            let verdict = context.engine.health(namespace, service_account, &inventory).await;
            (name, verdict)
        }
        // Reported until the failure is written, never re-applied in the same run.
        Dispatch::Failed(failure) => (name, Health::DispatchFailed(failure.message)),
    }
}

/// Makes the plan's writes batch by batch (see [`Plan::batches`]), the writes of a batch side
/// by side; stops after the first batch in which a write did not go through. Says which writes
/// were made, and the first error.
async fn write_plan(
    apply: &Apply,
    operations: &Api<Operation>,
    latest: &mut HashMap<u32, Operation>,
    plan: &Plan,
    context: &Context,
) -> (Vec<bool>, Result<()>) {
    let mut made = vec![false; plan.writes.len()];
    for batch in plan.batches() {
        let results: Vec<(usize, Result<Option<Operation>>)> = futures::stream::iter(batch.clone())
            .map(|position| {
                let write = &plan.writes[position];
                let current = match write {
                    OperationWrite::Status { index, .. } => latest.get(index).cloned(),
                    OperationWrite::Create { .. } => None,
                };
                async move {
                    (
                        position,
                        write_operation(apply, operations, current.as_ref(), write, context).await,
                    )
                }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let mut first_error = None;
        for (position, result) in results {
            match result {
                Ok(Some(written)) => {
                    made[position] = true;
                    let owner = apply.metadata.uid.as_deref().unwrap_or_default();
                    context.children.wrote(owner, latest.get(&written.spec.index), &written);
                    latest.insert(written.spec.index, written);
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
async fn write_operation(
    apply: &Apply,
    operations: &Api<Operation>,
    current: Option<&Operation>,
    write: &OperationWrite,
    context: &Context,
) -> Result<Option<Operation>> {
    match write {
        OperationWrite::Create { index, name } => {
            let child = new_operation(apply, *index, name)?;
            let object_name = child.name_any();
            match operations.create(&PostParams::default(), &child).await {
                Ok(created) => Ok(Some(created)),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    // Ours, created meanwhile: re-read. Another Apply's: say so, it will not pass.
                    let existing = operations.get_opt(&object_name).await.ok().flatten();
                    let owner =
                        existing.as_ref().and_then(|op| op.owner_references().first().cloned());
                    match owner {
                        Some(owner) if Some(&owner.uid) != apply.metadata.uid.as_ref() => {
                            Err(Error::Invalid(format!(
                                "operation `{name}`: the Operation `{object_name}` already belongs to {} `{}`; \
                                 rename the operation or the Apply",
                                owner.kind, owner.name
                            )))
                        }
                        _ => Ok(None),
                    }
                }
                Err(source) => Err(Error::Kube {
                    context: format!(
                        "creating operation `{object_name}` in `{}`",
                        apply.namespace().unwrap_or_default()
                    ),
                    source,
                }),
            }
        }
        OperationWrite::Status { name, kind, status, .. } => {
            let Some(current) = current else {
                return Ok(None);
            };
            let mut next = current.clone();
            next.metadata.managed_fields = None;
            next.status = Some(with_inventory(current, status, context));
            let object_name = next.name_any();
            // A replace carries the resourceVersion read: the write is a compare-and-swap.
            match operations.replace_status(&object_name, &PostParams::default(), &next).await {
                Ok(written) => {
                    count_transition(*kind, status, context);
                    // A take-over starts the run afresh here: re-apply, even if this replica
                    // held it once before.
                    if matches!(kind, WriteKind::Finish | WriteKind::Stop | WriteKind::TakeOver) {
                        let attempt = current.status.as_ref().map_or(0, |s| s.attempt);
                        context.runs.forget(&(current.uid().unwrap_or_default(), attempt));
                    }
                    debug!(operation = %name, ?kind, phase = ?status.phase, "operation written");
                    Ok(Some(written))
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    if *kind == WriteKind::Claim {
                        context.metrics.claims_lost.inc();
                    }
                    debug!(operation = %name, ?kind, "conflict: another writer moved first");
                    Ok(None)
                }
                Err(source) => Err(Error::Kube {
                    context: format!(
                        "writing the status of operation `{object_name}` in `{}`",
                        apply.namespace().unwrap_or_default()
                    ),
                    source,
                }),
            }
        }
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
        && let Some(inventory) =
            context.runs.inventory(&(current.uid().unwrap_or_default(), status.attempt))
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

fn new_operation(apply: &Apply, index: u32, name: &str) -> Result<Operation> {
    let apply_name = apply.name_any();
    let entry = usize::try_from(index)
        .ok()
        .and_then(|i| apply.spec.operations.get(i))
        .ok_or_else(|| Error::Invalid(format!("Apply `{apply_name}` has no operation #{index}")))?;
    let manifests = entry
        .manifests
        .clone()
        .or_else(|| apply.spec.template.as_ref().map(|template| template.manifests.clone()))
        .unwrap_or_default();
    let owner = apply.controller_owner_ref(&()).ok_or_else(|| {
        Error::Invalid(format!("Apply `{apply_name}` cannot own objects (no uid)"))
    })?;
    Ok(Operation {
        metadata: ObjectMeta {
            name: Some(format!("{apply_name}-{name}")),
            namespace: apply.namespace(),
            labels: Some(
                [
                    (LABEL_APPLY.to_owned(), apply_name.clone()),
                    (LABEL_INDEX.to_owned(), index.to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: OperationSpec {
            index,
            name: name.to_owned(),
            target: entry.target.clone(),
            manifests,
            timeout: entry.timeout.clone(),
        },
        status: None,
    })
}

async fn write_status(
    apply: &Apply,
    namespace: &str,
    status: &ApplyStatus,
    context: &Context,
) -> Result<()> {
    let name = apply.name_any();
    let api: Api<Apply> = Api::namespaced(context.client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": Apply::api_version(&()),
        "kind": Apply::kind(&()),
        "status": status,
    });
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(|source| Error::Kube {
            context: format!("writing the status of Apply `{name}`"),
            source,
        })?;
    Ok(())
}

/// Records the notes' Events side by side: they are independent, and a rollout's pass should
/// not wait on them one by one.
async fn publish_all(apply: &Apply, notes: &[Note], context: &Context) {
    futures::future::join_all(notes.iter().map(|note| publish(apply, note, context))).await;
}

async fn publish(apply: &Apply, note: &Note, context: &Context) {
    let (type_, reason, message) = describe(note, context.leases.identity());
    // The related Operation keeps one operation's Events apart from another's: the recorder
    // folds Events with the same reason and references into one series.
    let secondary = note.operation().map(|operation| ObjectReference {
        api_version: Some(Operation::api_version(&()).into_owned()),
        kind: Some(Operation::kind(&()).into_owned()),
        name: Some(format!("{}-{operation}", apply.name_any())),
        namespace: apply.namespace(),
        ..ObjectReference::default()
    });
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(message, 1000)),
        // The recorder also folds Events that share an action: naming the attempt keeps every
        // run of an operation in the history.
        action: match note.attempt() {
            Some(attempt) => format!("{reason}Attempt{attempt}"),
            None => reason.to_owned(),
        },
        secondary,
    };
    if let Err(error) = context.recorder.publish(&event, &apply.object_ref(&())).await {
        debug!(%error, reason, "could not record an event");
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The Event for a note: its type, reason and message.
fn describe(note: &Note, holder: &str) -> (EventType, &'static str, String) {
    use EventType::{Normal, Warning};
    match note {
        Note::TakenOver { operation, attempt, from } => (
            Normal,
            "OperationTakenOver",
            format!(
                "operation `{operation}` taken over by {holder} from {} in attempt {attempt}",
                from.as_deref().unwrap_or("an unknown holder")
            ),
        ),
        Note::Failed { operation, attempt, reason, message } => (
            Warning,
            "OperationFailed",
            format!(
                "operation `{operation}` failed ({}) on attempt {attempt}: {message}",
                reason.as_str()
            ),
        ),
        Note::Stopped { operation } => (
            Normal,
            "OperationStopped",
            format!("operation `{operation}` stopped while running; its objects stay as applied"),
        ),
        Note::Resumed => {
            (Normal, "Resumed", "stop withdrawn: stopped operations are pending again".to_owned())
        }
        Note::ErrorDismissed { id } => (
            Normal,
            "ErrorDismissed",
            format!("error `{id}` dismissed; its failed operations run again"),
        ),
        Note::DismissalIgnored { id, why } => {
            (Warning, "DismissalIgnored", format!("dismissal of `{id}` ignored: {why}"))
        }
        Note::StopRequested => {
            (Normal, "StopRequested", "stop requested: no operation will be claimed".to_owned())
        }
        Note::StopCompleted => {
            (Normal, "StopCompleted", "stop completed: nothing is running".to_owned())
        }
        Note::Settled { phase, message } => {
            let type_ = if phase.as_str() == "Failed" { Warning } else { Normal };
            let reason = match phase.as_str() {
                "Succeeded" => "RolloutSucceeded",
                "Failed" => "RolloutFailed",
                "Stopped" => "RolloutStopped",
                _ => "RolloutSkipped",
            };
            (type_, reason, message.clone())
        }
    }
}
