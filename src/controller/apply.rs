//! The Apply reconciler, a pipeline of named steps:
//! read (the Apply, its Operations, the lease) → observe (the engine runs and checks what this
//! replica holds) → decide (`lifecycle::decide`) → write (Operation writes in order, each
//! guarded by its resourceVersion) → project (the parent status from what was written) →
//! record (Events).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, instrument};

use super::Context;
use crate::crd::{
    Apply, ApplyStatus, LABEL_APPLY, LABEL_INDEX, Operation, OperationPhase, OperationSpec,
    OperationStatus,
};
use crate::engine::{FIELD_MANAGER, RunTarget};
use crate::lifecycle::{
    ApplyFacts, Child, Health, Idempotency, LeaseState, Note, Observed, OperationWrite, WriteKind,
    carry_transition_times, decide, project,
};
use crate::{Error, Result};

/// How soon to look again when the lease is held elsewhere and no wake-up comes.
const LEASE_RETRY: Duration = Duration::from_secs(5);

/// Reconciles one Apply.
#[instrument(skip(apply, context), fields(apply = %apply.name_any(), namespace = apply.namespace().unwrap_or_default()))]
pub async fn reconcile(apply: Arc<Apply>, context: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let outcome = reconcile_inner(&apply, &context).await;
    context.metrics.reconciled("apply", started.elapsed());
    outcome
}

async fn reconcile_inner(apply: &Apply, context: &Context) -> Result<Action> {
    let name = apply.name_any();
    let namespace = apply
        .namespace()
        .ok_or_else(|| Error::Invalid(format!("Apply `{name}` has no namespace")))?;
    let uid = apply.uid().ok_or_else(|| Error::Invalid(format!("Apply `{name}` has no uid")))?;
    let operations: Api<Operation> = Api::namespaced(context.client.clone(), &namespace);

    // read
    let owned = operations
        .list(&ListParams::default().labels(&format!("{LABEL_APPLY}={name}")))
        .await
        .map_err(|source| Error::Kube {
            context: format!("listing the operations of Apply `{name}`"),
            source,
        })?
        .items
        .into_iter()
        .filter(|op| op.owner_references().iter().any(|owner| owner.uid == uid))
        .collect::<Vec<_>>();
    let facts = ApplyFacts {
        spec: &apply.spec,
        generation: apply.metadata.generation,
        created_at: apply.metadata.creation_timestamp.as_ref().map(|t| t.0),
        deleting: apply.metadata.deletion_timestamp.is_some(),
        idempotency: Idempotency::NotRequired,
    };
    let children: Vec<Child> = owned.iter().map(Child::from).collect();
    if settled_and_recorded(apply, &facts, &children) {
        context.leases.release(&uid);
        return Ok(Action::await_change());
    }
    let lease = context.leases.acquire(apply).await?;
    if lease != LeaseState::Held {
        debug!("lease held elsewhere; waiting");
        return Ok(Action::requeue(LEASE_RETRY));
    }

    // observe
    let health = observe_runs(apply, &namespace, &owned, context).await;

    // decide
    let now = Timestamp::now();
    let plan = decide(&Observed {
        apply: facts.clone(),
        children: &children,
        lease,
        holder: context.leases.identity(),
        health: &health,
        previous: apply.status.as_ref(),
        now,
    });

    // write
    let mut latest: HashMap<u32, Operation> =
        owned.into_iter().map(|op| (op.spec.index, op)).collect();
    let mut lost_race = false;
    for write in &plan.writes {
        match write_operation(apply, &operations, &mut latest, write, context).await? {
            Written::Done => {}
            Written::Conflict => {
                lost_race = true;
                break;
            }
        }
    }
    if lost_race {
        // Someone else moved first: re-read and decide again; not an error.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }

    // project
    let children: Vec<Child> = latest.values().map(Child::from).collect();
    let mut status = project(&facts, &children);
    carry_transition_times(apply.status.as_ref(), &mut status);
    if apply.status.as_ref() != Some(&status) {
        if context.leases.check(&namespace, &uid).await? != LeaseState::Held {
            info!("lease lost before the status write; not writing");
            return Ok(Action::requeue(LEASE_RETRY));
        }
        write_status(apply, &namespace, &status, context).await?;
    }

    // record
    for note in &plan.notes {
        publish(apply, note, context).await;
    }

    let running = children.iter().any(|child| child.status.phase == OperationPhase::Running);
    if status.phase.is_some_and(|phase| phase.is_terminal()) && !running {
        context.leases.release(&uid);
        return Ok(Action::await_change());
    }
    Ok(match (running, plan.requeue_after) {
        (true, Some(until_timeout)) => {
            Action::requeue(until_timeout.min(context.settings.health_poll_interval))
        }
        (true, None) => Action::requeue(context.settings.health_poll_interval),
        (false, _) => Action::requeue(Duration::from_secs(60)),
    })
}

/// The rollout ended and its status says so: nothing to do, and no lease to hold.
fn settled_and_recorded(apply: &Apply, facts: &ApplyFacts<'_>, children: &[Child]) -> bool {
    let mut status = project(facts, children);
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
    let mut health = BTreeMap::new();
    if apply.spec.stop || apply.metadata.deletion_timestamp.is_some() {
        return health;
    }
    let identity = context.leases.identity();
    let service_account = apply
        .spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| context.settings.default_service_account.clone());
    for op in owned {
        let Some(status) = op.status.as_ref() else {
            continue;
        };
        let mine = status.claim.as_ref().is_some_and(|claim| claim.holder == identity);
        if status.phase != OperationPhase::Running || !mine {
            continue;
        }
        let key = (op.uid().unwrap_or_default(), status.attempt);
        let known = context
            .dispatched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        let inventory = match known {
            Some(inventory) => inventory,
            None => {
                let target = RunTarget {
                    apply_namespace: namespace,
                    service_account: &service_account,
                    operation: &op.spec,
                };
                match context.engine.dispatch(&target).await {
                    Ok(inventory) => {
                        info!(operation = %op.spec.name, attempt = status.attempt, objects = inventory.len(), "applied");
                        context
                            .dispatched
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(key, inventory.clone());
                        inventory
                    }
                    Err(message) => {
                        info!(operation = %op.spec.name, attempt = status.attempt, %message, "apply failed");
                        health.insert(op.spec.name.clone(), Health::DispatchFailed(message));
                        continue;
                    }
                }
            }
        };
        let verdict = context.engine.health(namespace, &service_account, &inventory).await;
        health.insert(op.spec.name.clone(), verdict);
    }
    health
}

enum Written {
    Done,
    Conflict,
}

async fn write_operation(
    apply: &Apply,
    operations: &Api<Operation>,
    latest: &mut HashMap<u32, Operation>,
    write: &OperationWrite,
    context: &Context,
) -> Result<Written> {
    match write {
        OperationWrite::Create { index, name } => {
            let child = new_operation(apply, *index, name)?;
            let object_name = child.name_any();
            match operations.create(&PostParams::default(), &child).await {
                Ok(created) => {
                    latest.insert(*index, created);
                    Ok(Written::Done)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Written::Conflict),
                Err(source) => Err(Error::Kube {
                    context: format!("creating operation `{object_name}`"),
                    source,
                }),
            }
        }
        OperationWrite::Status { index, name, kind, status } => {
            let Some(current) = latest.get(index) else {
                return Ok(Written::Conflict);
            };
            let mut next = current.clone();
            next.metadata.managed_fields = None;
            next.status = Some(with_inventory(current, status, context));
            let object_name = next.name_any();
            // A replace carries the resourceVersion read: the write is a compare-and-swap.
            match operations.replace_status(&object_name, &PostParams::default(), &next).await {
                Ok(written) => {
                    count_transition(*kind, status, context);
                    if matches!(kind, WriteKind::Finish | WriteKind::Stop) {
                        let key = (
                            current.uid().unwrap_or_default(),
                            current.status.as_ref().map_or(0, |s| s.attempt),
                        );
                        context
                            .dispatched
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .remove(&key);
                    }
                    debug!(operation = %name, ?kind, phase = ?status.phase, "operation written");
                    latest.insert(*index, written);
                    Ok(Written::Done)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    if *kind == WriteKind::Claim {
                        context.metrics.claims_lost.inc();
                    }
                    debug!(operation = %name, ?kind, "conflict: another writer moved first");
                    Ok(Written::Conflict)
                }
                Err(source) => Err(Error::Kube {
                    context: format!("writing the status of operation `{object_name}`"),
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
    if status.inventory.is_empty()
        && matches!(
            status.phase,
            OperationPhase::Succeeded | OperationPhase::Failed | OperationPhase::Stopped
        )
    {
        let key = (current.uid().unwrap_or_default(), status.attempt);
        if let Some(inventory) =
            context.dispatched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key)
        {
            status.inventory = inventory.clone();
        }
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
        Note::Started { operation, attempt } => (
            Normal,
            "OperationStarted",
            format!("operation `{operation}` claimed by {holder} for attempt {attempt}"),
        ),
        Note::TakenOver { operation, attempt, from } => (
            Normal,
            "OperationTakenOver",
            format!(
                "operation `{operation}` taken over by {holder} from {} in attempt {attempt}",
                from.as_deref().unwrap_or("an unknown holder")
            ),
        ),
        Note::Succeeded { operation, attempt } => (
            Normal,
            "OperationSucceeded",
            format!("operation `{operation}` succeeded on attempt {attempt}"),
        ),
        Note::Failed { operation, attempt, reason, message } => (
            Warning,
            "OperationFailed",
            format!(
                "operation `{operation}` failed ({}) on attempt {attempt}: {message}",
                reason.as_str()
            ),
        ),
        Note::Stopped { operation } => {
            (Normal, "OperationStopped", format!("operation `{operation}` stopped"))
        }
        Note::Resumed { operation } => {
            (Normal, "OperationResumed", format!("operation `{operation}` resumed"))
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
