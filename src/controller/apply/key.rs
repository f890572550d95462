//! The idempotency key's two steps (SPEC.md section 7): take it before deciding, so the claim
//! gate can open in the same pass, and end it once the rollout ended. `lifecycle` decides what
//! the key needs; `controller::keys::Key` reads and writes its Lease.

use std::ops::ControlFlow;

use kube::runtime::controller::Action;

use super::finalizer;
use super::snapshot::Snapshot;
use crate::Result;
use crate::controller::Context;
use crate::controller::keys::Key;
use crate::controller::pacing::lost_write;
use crate::crd::ApplyPhase;
use crate::lifecycle::{KeyWrite, key_needs_finalizer};

/// Takes or renews the key when `write` says so (the finalizer first: deleting the Apply must
/// release what it holds), then reads it again for the decision.
pub(super) async fn take(
    snapshot: &mut Snapshot<'_>,
    write: &KeyWrite,
    context: &Context,
) -> Result<ControlFlow<Action>> {
    if !write.holds_the_key() {
        return Ok(ControlFlow::Continue(()));
    }
    if key_needs_finalizer(&snapshot.facts(), write) && !finalizer::add(snapshot, context).await? {
        return Ok(ControlFlow::Break(lost_write(&context.misses, &snapshot.uid)));
    }
    if !snapshot.key.write(write).await? {
        return Ok(ControlFlow::Break(lost_write(&context.misses, &snapshot.uid)));
    }
    snapshot.key = Key::read(snapshot.apply, &snapshot.namespace, context).await?;
    Ok(ControlFlow::Continue(()))
}

/// Marks or releases the key once the rollout ended (the Apply projected to `phase`, or being
/// deleted); nothing while it runs.
pub(super) async fn end(
    snapshot: &Snapshot<'_>,
    phase: Option<ApplyPhase>,
    context: &Context,
) -> Result<ControlFlow<Action>> {
    let end = snapshot.key.next_write(phase, snapshot.deleting());
    if end.ends_the_key() && !snapshot.key.write(&end).await? {
        return Ok(ControlFlow::Break(lost_write(&context.misses, &snapshot.uid)));
    }
    Ok(ControlFlow::Continue(()))
}
