//! The observe step: for each running operation this replica holds, server-side apply its
//! manifests once per run (the engine), then read the health of what it applied. The runs are
//! independent and go side by side. What it sees goes to `lifecycle::decide` as `Health`; it
//! writes nothing. What the runs wait on is handed to the engine's watches, whose next change
//! of it wakes this Apply.

use std::collections::BTreeMap;

use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::{debug, info};

use super::snapshot::Snapshot;
use crate::controller::Context;
use crate::controller::children::manifests_left_out;
use crate::controller::{Dispatch, run_of};
use crate::crd::{ApplySpec, Operation, OperationPhase};
use crate::engine::{Check, DispatchError, RunTarget, Wants};
use crate::lifecycle::{Health, manifests_differ};

/// What the observe step saw.
pub(super) struct Checked {
    /// The health of each run this replica holds, by operation name.
    pub health: BTreeMap<String, Health>,
    /// Some run could not be read and no watch will say when to look again.
    pub retry_soon: bool,
}

/// How many running operations of one Apply are applied and checked at once.
const OBSERVE_CONCURRENCY: usize = 16;

/// Runs (dispatches) and checks every operation this replica holds, by operation name, and
/// tells the watches what they wait on.
pub(super) async fn runs(snapshot: &Snapshot<'_>, context: &Context) -> Checked {
    let identity = context.leases.identity();
    let service_account = snapshot
        .apply
        .spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| context.settings.default_service_account.clone());
    let mine: Vec<&Operation> = snapshot
        .operations
        .values()
        .filter(|op| {
            let Some(status) = op.status.as_ref() else { return false };
            let held = status.claim.as_ref().is_some_and(|claim| claim.holder == identity);
            let running = status.phase == OperationPhase::Running && held;
            if !running {
                // Ended, or run by someone else now: what this replica knew of it is stale.
                context.runs.forget(&run_of(op));
            }
            running
        })
        .collect();
    let checks: Vec<_> = mine
        .into_iter()
        .map(|op| {
            let target = RunTarget {
                apply_namespace: &snapshot.namespace,
                service_account: &service_account,
                operation: &op.spec,
                named_service_account: snapshot.apply.spec.service_account_name.as_deref(),
                health_checks: &snapshot.apply.spec.health_checks,
            };
            run(op, target, &snapshot.apply.spec, context)
        })
        .collect();
    let checked: Vec<(String, Check, Wants)> =
        futures::stream::iter(checks).buffer_unordered(OBSERVE_CONCURRENCY).collect().await;
    let mut wants = Wants::new();
    let mut observed = Checked { health: BTreeMap::new(), retry_soon: false };
    for (name, check, run_wants) in checked {
        for (key, names) in run_wants {
            wants.entry(key).or_default().extend(names);
        }
        observed.retry_soon |= check.retry_soon;
        observed.health.insert(name, check.health);
    }
    context.engine.watches().want(ObjectRef::from_obj(snapshot.apply), &snapshot.uid, wants);
    observed
}

/// `op` with its manifests: as it is, or read again when it came from the cache without them.
async fn with_manifests<'a>(
    op: &'a Operation,
    context: &Context,
) -> Result<std::borrow::Cow<'a, Operation>, String> {
    if !manifests_left_out(op) {
        return Ok(std::borrow::Cow::Borrowed(op));
    }
    let api: Api<Operation> =
        Api::namespaced(context.client.clone(), &op.namespace().unwrap_or_default());
    api.get(&op.name_any())
        .await
        .map(std::borrow::Cow::Owned)
        .map_err(|error| format!("reading the manifests of Operation `{}`: {error}", op.name_any()))
}

/// Applies one running operation (once per run) and reads its health, and what it waits on.
async fn run(
    op: &Operation,
    target: RunTarget<'_>,
    spec: &ApplySpec,
    context: &Context,
) -> (String, Check, Wants) {
    let name = op.spec.name.clone();
    let run = run_of(op);
    let attempt = run.1;
    let dispatch = match context.runs.get(&run) {
        Some(dispatch) => dispatch,
        None => {
            let full = match with_manifests(op, context).await {
                Ok(full) => full,
                Err(message) => {
                    let check = Check { health: Health::Waiting(message), retry_soon: true };
                    return (name, check, Wants::new());
                }
            };
            let target = RunTarget { operation: &full.spec, ..target };
            // What the cache left out is checked now that it is read (SPEC.md section 1): an
            // Operation whose manifests are not its step's is not a child and is never applied.
            let foreign = manifests_differ(spec, &full.spec).map(|reason| DispatchError {
                message: format!("Operation `{}`: {reason}: not applied", op.name_any()),
                applied: Vec::new(),
                transient: false,
            });
            let dispatched = match foreign {
                Some(refused) => Err(refused),
                None => context.engine.dispatch(&target).await,
            };
            let dispatch = match dispatched {
                Ok(inventory) => {
                    info!(operation = %name, attempt, objects = inventory.len(), "applied");
                    Dispatch::Applied(inventory)
                }
                Err(failure) if failure.transient => {
                    // The API server could not answer: try again at the next check, and let
                    // the operation's timeout decide if it never does. The Operation's message
                    // says why it waits; the log would only repeat it every check.
                    debug!(operation = %name, attempt, message = %failure.message, "apply interrupted; retrying");
                    let check =
                        Check { health: Health::Waiting(failure.message), retry_soon: true };
                    return (name, check, Wants::new());
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
    let mut wants = Wants::new();
    let check = match dispatch {
        Dispatch::Applied(inventory) => {
            context.engine.health(&target, &inventory, &mut wants).await
        }
        // Reported until the failure is written, never re-applied in the same run.
        Dispatch::Failed(failure) => {
            Check { health: Health::DispatchFailed(failure.message), retry_soon: false }
        }
    };
    (name, check, wants)
}
