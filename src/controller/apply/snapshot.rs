//! Step one, read: the Apply's Operations (from the watch cache, overlaid with this replica's
//! own writes; a list before the cache is ready) and its idempotency key record, as the one
//! snapshot the later steps read from and update as they write.

use std::collections::HashMap;

use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::key::Key;
use super::{Context, finalizer};
use crate::crd::{Apply, LABEL_APPLY, Operation};
use crate::lifecycle::{ApplyFacts, Child};
use crate::{Error, Result};

/// What one pass knows of an Apply, updated by its own writes.
pub(super) struct Snapshot<'a> {
    /// The Apply as the reconcile was handed it.
    pub apply: &'a Apply,
    /// Its namespace.
    pub namespace: String,
    /// Its uid: the key of everything this replica remembers about it.
    pub uid: String,
    /// Its Operations by index, replaced by what the API server returned for each write.
    pub operations: HashMap<u32, Operation>,
    /// Its idempotency key.
    pub key: Key<'a>,
    /// baton's finalizer is on the Apply (as read, or added by this pass).
    pub finalizer: bool,
}

impl<'a> Snapshot<'a> {
    /// Reads the Apply's Operations and its key.
    pub async fn read(apply: &'a Apply, context: &Context) -> Result<Snapshot<'a>> {
        let name = apply.name_any();
        let namespace = apply
            .namespace()
            .ok_or_else(|| Error::Malformed(format!("Apply `{name}` has no namespace")))?;
        let uid =
            apply.uid().ok_or_else(|| Error::Malformed(format!("Apply `{name}` has no uid")))?;
        let owned = match context.children.of(apply) {
            Some(owned) => owned,
            None => list(apply, &namespace, &uid, context).await?,
        };
        Ok(Snapshot {
            key: Key::read(apply, &namespace, context).await?,
            operations: owned.into_iter().map(|op| (op.spec.index, op)).collect(),
            finalizer: finalizer::present(apply),
            apply,
            namespace,
            uid,
        })
    }

    /// The Apply's name.
    pub fn name(&self) -> String {
        self.apply.name_any()
    }

    /// The Apply is being deleted.
    pub fn deleting(&self) -> bool {
        self.apply.metadata.deletion_timestamp.is_some()
    }

    /// What the lifecycle knows of the Apply.
    pub fn facts(&self) -> ApplyFacts<'a> {
        ApplyFacts {
            spec: &self.apply.spec,
            generation: self.apply.metadata.generation,
            created_at: self.apply.metadata.creation_timestamp.as_ref().map(|t| t.0),
            deleting: self.deleting(),
            finalizer: self.finalizer,
            idempotency: self.key.idempotency(),
        }
    }

    /// What the lifecycle knows of the Operations.
    pub fn children(&self) -> Vec<Child> {
        self.operations.values().map(Child::from).collect()
    }

    /// The Operations' API in the Apply's namespace.
    pub fn operations_api(&self, context: &Context) -> Api<Operation> {
        Api::namespaced(context.client.clone(), &self.namespace)
    }
}

/// Lists the Apply's Operations (only before the watch cache has listed them once).
async fn list(
    apply: &Apply,
    namespace: &str,
    uid: &str,
    context: &Context,
) -> Result<Vec<Operation>> {
    let name = apply.name_any();
    let api: Api<Operation> = Api::namespaced(context.client.clone(), namespace);
    let listed = api
        .list(&ListParams::default().labels(&format!("{LABEL_APPLY}={name}")))
        .await
        .map_err(|source| Error::Kube {
            context: format!("listing the operations of Apply `{name}`"),
            source,
        })?;
    Ok(listed
        .items
        .into_iter()
        .filter(|op| op.owner_references().iter().any(|owner| owner.uid == uid))
        .collect())
}
