//! The publish step: the parent status projected from the Operations as this pass left them
//! (`lifecycle::project`), written with server-side apply on `/status` while the lease is
//! still held, at the pace `lifecycle::status_write` sets.

use std::ops::ControlFlow;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource};
use tracing::info;

use super::snapshot::Snapshot;
use super::{Context, LEASE_RETRY, may_write};
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
            if !may_write(snapshot, context) {
                info!("lease lost before the status write; not writing");
                return Ok(ControlFlow::Break(Action::requeue(LEASE_RETRY)));
            }
            write(snapshot, &status, context).await?;
            context.status_writes.written(&snapshot.uid, snapshot.versions.clone());
            // Read by the racing-replicas suite to check that only lease holders write.
            info!(holder = context.leases.identity(), phase = ?status.phase, "parent status written");
        }
    }
    Ok(ControlFlow::Continue(Published { status, held_back }))
}

async fn write(snapshot: &Snapshot<'_>, status: &ApplyStatus, context: &Context) -> Result<()> {
    let name = snapshot.name();
    let api: Api<Apply> = Api::namespaced(context.client.clone(), &snapshot.namespace);
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
