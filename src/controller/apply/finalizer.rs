//! baton's cleanup finalizer on an Apply: added when the lifecycle says the Apply holds
//! something that deleting it must undo (its first claim, or its idempotency key), removed when
//! the lifecycle says deleting it has stopped everything. Each write is a merge patch carrying
//! the resourceVersion read, so it never overwrites another controller's finalizers.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tracing::info;

use super::snapshot::Snapshot;
use crate::controller::Context;
use crate::crd::{Apply, FINALIZER};
use crate::{Error, Result};

/// Adds the finalizer unless this pass already did; `false` when the Apply changed meanwhile
/// (re-read and decide again). The snapshot follows the write, so a second call in the same
/// pass neither writes again nor trips over the `resourceVersion` the first one changed.
pub(super) async fn add(snapshot: &mut Snapshot<'_>, context: &Context) -> Result<bool> {
    if !snapshot.finalizer {
        let written = set(snapshot.apply, context, true).await?;
        snapshot.finalizer_added(written);
    }
    Ok(snapshot.finalizer)
}

/// Adds the finalizer beside other writes of the pass (they borrow the snapshot): the version
/// it wrote, `None` when the Apply changed meanwhile. The caller records it in the snapshot.
pub(super) async fn add_beside(apply: &Apply, context: &Context) -> Result<Option<String>> {
    set(apply, context, true).await
}

/// Removes the finalizer; a conflict leaves it for the next reconcile, which tries again.
pub(super) async fn remove(snapshot: &Snapshot<'_>, context: &Context) -> Result<()> {
    if snapshot.finalizer && set(snapshot.apply, context, false).await?.is_some() {
        info!("operations stopped and key released; letting the Apply go");
    }
    Ok(())
}

/// Writes the finalizer in or out: the Apply's new version, or `None` when the Apply changed
/// since it was read (or is gone).
async fn set(apply: &Apply, context: &Context, present: bool) -> Result<Option<String>> {
    let mut finalizers: Vec<String> =
        apply.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": apply.resource_version()}
    });
    let api: Api<Apply> =
        Api::namespaced(context.client.clone(), &apply.namespace().unwrap_or_default());
    match api.patch(&apply.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(patched) => Ok(Some(patched.resource_version().unwrap_or_default())),
        // A newer Apply exists (or none): the next reconcile sees it and decides again.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(None),
        Err(source) => Err(Error::Kube {
            step: crate::Step::Finalizer,
            context: format!("updating the finalizers of Apply `{}`", apply.name_any()),
            source,
        }),
    }
}
