//! The publish step: the parent status projected from the Operations as this pass left them
//! (`lifecycle::project`), written with server-side apply on `/status` while the lease is
//! still held, at the pace `lifecycle::status_write` sets.
//!
//! The write is fenced: it carries the last version of the Apply this pass read or wrote as a
//! `resourceVersion` precondition, so a write begun under the lease loses, rather than
//! overwrites, once anyone else wrote the Apply (a replica that took the lease over and wrote
//! its own status). A lost write is not an error: the pass ends and the Apply is looked at
//! again from its newer version. The precondition also loses to a user's change of the Apply
//! made during the pass (a stop, an approval), which is wanted: that change wakes the Apply at
//! once, and the status this pass projected was from the spec before it.

use std::ops::ControlFlow;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource};
use tracing::info;

use super::snapshot::Snapshot;
use crate::controller::Context;
use crate::controller::pacing::{LEASE_RETRY, lost_write};
use crate::crd::{Apply, ApplyStatus};
use crate::engine::FIELD_MANAGER;
use crate::lifecycle::{
    StatusWrite, carry_transition_times, progress_interval, project, status_write,
};
use crate::{Error, Result};

/// The status this pass projected, and whether part of it waits to be written.
pub(super) struct Published {
    /// The projection.
    pub status: ApplyStatus,
    /// A progress-only change held back: write it within this long.
    pub held_back: Option<Duration>,
}

/// Projects the parent status and writes it when the pacing says so.
pub(super) async fn publish(
    snapshot: &Snapshot<'_>,
    context: &Context,
) -> Result<ControlFlow<Action, Published>> {
    let previous = snapshot.apply.status.as_ref();
    let mut status = project(&snapshot.facts(), &snapshot.children());
    carry_transition_times(previous, &mut status);
    context.metrics.count_operations(&snapshot.uid, Some(&status.operations));
    let since_last_write = context.status_writes.since(&snapshot.uid);
    let mut held_back = None;
    // Anything but progress is written at once; progress at a pace that grows with the size.
    let pace = progress_interval(snapshot.spec_bytes());
    match status_write(previous, &status, since_last_write, pace) {
        StatusWrite::Unchanged => {}
        StatusWrite::After(wait) => held_back = Some(wait),
        StatusWrite::Now => {
            if !snapshot.may_write(context) {
                info!("lease lost before the status write; not writing");
                return Ok(ControlFlow::Break(Action::requeue(LEASE_RETRY)));
            }
            if !write(snapshot, &status, context).await? {
                info!("the Apply changed since it was read; the status write lost");
                return Ok(ControlFlow::Break(lost_write(&context.misses, &snapshot.uid)));
            }
            context.status_writes.written(&snapshot.uid, snapshot.versions.clone());
            // Read by the racing-replicas suite to check that only lease holders write.
            info!(holder = context.leases.identity(), phase = ?status.phase, "parent status written");
        }
    }
    Ok(ControlFlow::Continue(Published { status, held_back }))
}

/// Writes `status`, conditioned on the last version of the Apply the pass knows; `false` when
/// the write lost to a newer version.
async fn write(snapshot: &Snapshot<'_>, status: &ApplyStatus, context: &Context) -> Result<bool> {
    let name = snapshot.name();
    let api: Api<Apply> = Api::namespaced(context.client.clone(), &snapshot.namespace);
    let body = body(snapshot.versions.last().map(String::as_str), status);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(refusal)) if refusal.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            step: crate::Step::Status,
            context: format!("writing the status of Apply `{name}`"),
            source,
        }),
    }
}

/// The server-side apply body of a status write: in it, `metadata.resourceVersion` is a
/// precondition (a 409 when the Apply is at another version), not a field to own.
fn body(version: Option<&str>, status: &ApplyStatus) -> serde_json::Value {
    let mut body = serde_json::json!({
        "apiVersion": Apply::api_version(&()),
        "kind": Apply::kind(&()),
        "status": status,
    });
    if let Some(version) = version {
        body["metadata"] = serde_json::json!({ "resourceVersion": version });
    }
    body
}
