//! The step that takes the idempotency key (SPEC.md section 7) before deciding, so the claim
//! gate can open in the same pass. `lifecycle` decides what the key needs; the snapshot's
//! `Key` reads and writes its Lease.

use std::ops::ControlFlow;

use kube::runtime::controller::Action;

use super::finalizer;
use super::snapshot::{Key, Snapshot};
use crate::Result;
use crate::controller::Context;
use crate::controller::pacing::lost_write;
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
