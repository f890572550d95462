//! Step one, read: the Apply's Operations (from the watch cache, overlaid with this replica's
//! own writes; a list before the cache is ready) and its idempotency key (`Key`), as the one
//! snapshot the later steps read from and update as they write.

use std::collections::{BTreeMap, HashMap};

use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::controller::Context;
use crate::controller::keys::Key;
use crate::crd::{Apply, ApprovalRecord, FINALIZER, LABEL_APPLY, Operation};
use crate::lifecycle::{
    ApplyFacts, Begin, Child, Foreign, KeyWrite, all_created, begin, project, sort_owned,
};
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
    /// Operations that name it as their owner and are not its children: never run.
    pub foreign: Vec<Foreign>,
    /// Its idempotency key.
    pub key: Key<'a>,
    /// baton's finalizer is on the Apply (as read, or added by this pass).
    pub finalizer: bool,
    /// The pass holds the Apply's lease for its writes (as `lifecycle::begin` says).
    pub under_lease: bool,
    /// The versions of the Apply this pass read or wrote: a status write makes them stale.
    pub versions: Vec<String>,
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
        let (children, foreign) = sort_owned(&name, &uid, &apply.spec, owned);
        Ok(Snapshot {
            key: Key::read(apply, &namespace, context).await?,
            operations: children.into_iter().map(|op| (op.spec.index, op)).collect(),
            foreign,
            finalizer: apply.finalizers().iter().any(|finalizer| finalizer == FINALIZER),
            under_lease: true,
            versions: apply.resource_version().into_iter().collect(),
            apply,
            namespace,
            uid,
        })
    }

    /// Records the finalizer write of this pass: the version it made, `None` when it did not
    /// go through.
    pub fn finalizer_added(&mut self, version: Option<String>) {
        if let Some(version) = version {
            self.finalizer = true;
            self.versions.push(version);
        }
    }

    /// The Apply's name.
    pub fn name(&self) -> String {
        self.apply.name_any()
    }

    /// Whether the pass may write: when its writes need the lease, whether this replica still
    /// holds it (known without a read: every write of the Lease is conditioned, see `lease`).
    pub fn may_write(&self, context: &Context) -> bool {
        !self.under_lease || context.leases.holds(&self.uid)
    }

    /// The Apply is being deleted.
    pub fn deleting(&self) -> bool {
        self.apply.metadata.deletion_timestamp.is_some()
    }

    /// What the lifecycle knows of the Apply.
    pub fn facts(&self) -> ApplyFacts<'_> {
        ApplyFacts {
            spec: &self.apply.spec,
            generation: self.apply.metadata.generation,
            created_at: self.apply.metadata.creation_timestamp.as_ref().map(|t| t.0),
            deleting: self.deleting(),
            finalizer: self.finalizer,
            operations_created: self.operations_created(),
            idempotency: self.key.idempotency(),
            approvers: approvers(self.apply),
            foreign: &self.foreign,
        }
    }

    /// How the core says this pass begins, and what the idempotency key needs for the phase
    /// the children project.
    pub fn begin(&self) -> (Begin, KeyWrite) {
        let facts = self.facts();
        let projected = project(&facts, &self.children());
        let key = self.key.next_write(projected.phase, self.deleting());
        (begin(&facts, &projected, self.apply.status.as_ref(), &key), key)
    }

    /// Whether baton created every Operation once (`lifecycle::all_created`).
    fn operations_created(&self) -> bool {
        // Asked for every decision of a pass: read in place, no copy of the children.
        let phases = self
            .operations
            .values()
            .map(|op| op.status.as_ref().map_or_else(Default::default, |s| s.phase));
        all_created(self.apply.driven_before(), phases)
    }

    /// What the lifecycle knows of the Operations.
    pub fn children(&self) -> Vec<Child> {
        self.operations.values().map(Child::from).collect()
    }

    /// The size of the Apply's spec as the API server stores it (near enough: JSON), for the
    /// pace of progress writes.
    pub fn spec_bytes(&self) -> usize {
        serde_json::to_vec(&self.apply.spec).map_or(0, |bytes| bytes.len())
    }

    /// The Operations' API in the Apply's namespace.
    pub fn operations_api(&self, context: &Context) -> Api<Operation> {
        Api::namespaced(context.client.clone(), &self.namespace)
    }
}

/// What the Apply cache keeps of the managed fields: only the entries that wrote
/// `spec.approvals`, and of each only that part ([`approvers`] reads nothing else), so a cached
/// Apply does not carry the field sets of every writer.
pub fn keep_approval_fields(apply: &mut Apply) {
    let Some(entries) = apply.metadata.managed_fields.as_mut() else { return };
    entries.retain_mut(|entry| {
        let approvals = entry
            .fields_v1
            .as_ref()
            .and_then(|fields| fields.0.get("f:spec")?.get("f:approvals").cloned());
        let Some(approvals) = approvals else { return false };
        entry.fields_v1 = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
            serde_json::json!({"f:spec": {"f:approvals": approvals}}),
        ));
        true
    });
}

/// Who wrote each name of `spec.approvals`, and when, as the API server recorded it in the
/// Apply's managed fields: the latest write of that item (a set, so each name has its own
/// owner), else of the whole list.
fn approvers(apply: &Apply) -> BTreeMap<String, ApprovalRecord> {
    let mut found: BTreeMap<String, ApprovalRecord> = BTreeMap::new();
    let entries = apply.metadata.managed_fields.as_deref().unwrap_or_default();
    for name in &apply.spec.approvals {
        let item = format!("v:{}", serde_json::Value::String(name.clone()));
        let owners = entries.iter().filter_map(|entry| {
            let fields = entry.fields_v1.as_ref()?;
            let list = fields.0.get("f:spec")?.get("f:approvals")?;
            let own = list.get(&item).is_some() || list.as_object().is_some_and(|l| l.is_empty());
            own.then(|| ApprovalRecord {
                by: entry.manager.clone().unwrap_or_else(|| "unknown".to_owned()),
                at: entry.time.clone(),
            })
        });
        if let Some(latest) = owners.max_by_key(|record| record.at.as_ref().map(|t| t.0)) {
            found.insert(name.clone(), latest);
        }
    }
    found
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
            step: crate::Step::Read,
            context: format!("listing the operations of Apply `{name}`"),
            source,
        })?;
    Ok(listed
        .items
        .into_iter()
        .filter(|op| op.owner_references().iter().any(|owner| owner.uid == uid))
        .collect())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    use super::*;
    use crate::crd::FailurePolicy;
    use crate::lifecycle::fixtures;

    fn entry(manager: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn the_cache_keeps_only_who_approved_and_reads_the_same_approvers() {
        let mut apply = Apply::new("app", fixtures::spec(2, FailurePolicy::Halt, 1));
        apply.spec.approvals = vec!["a".into()];
        apply.metadata.managed_fields = Some(vec![
            entry("kubectl", serde_json::json!({"f:spec": {"f:operations": {}, "f:stop": {}}})),
            entry(
                "alice",
                serde_json::json!({"f:spec": {"f:approvals": {"v:\"a\"": {}}, "f:stop": {}}}),
            ),
            entry("baton", serde_json::json!({"f:status": {"f:phase": {}}})),
        ]);
        let before = approvers(&apply);
        keep_approval_fields(&mut apply);
        assert_eq!(approvers(&apply), before);
        assert_eq!(before.get("a").map(|record| record.by.as_str()), Some("alice"));
        let kept = apply.metadata.managed_fields.unwrap_or_default();
        assert_eq!(kept.len(), 1, "only the approver's entry");
        assert_eq!(
            kept[0].fields_v1.as_ref().map(|fields| fields.0.clone()),
            Some(serde_json::json!({"f:spec": {"f:approvals": {"v:\"a\"": {}}}}))
        );
    }
}
