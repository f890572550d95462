//! Step one, read: the Apply's Operations (from the watch cache, overlaid with this replica's
//! own writes; a list before the cache is ready) and its idempotency key (`Key`), as the one
//! snapshot the later steps read from and update as they write.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tracing::info;

use crate::controller::Context;
use crate::controller::keys;
use crate::crd::{Apply, ApplyPhase, ApprovalRecord, FINALIZER, LABEL_APPLY, Operation};
use crate::lifecycle::{
    ApplyFacts, Begin, Child, Foreign, Idempotency, KeyRecord, KeyWrite, begin, key_write,
    observe_key, project, sort_owned,
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

    /// Whether baton created every Operation once: the status has a phase (written only after
    /// all were created), or the finalizer is on while some Operation exists (it is added before
    /// the first claim, which may come before the first status write). In doubt a missing
    /// Operation counts as deleted: a needless `Lost` record asks a person, a needless
    /// recreation could run a step twice.
    fn operations_created(&self) -> bool {
        let written = self.apply.status.as_ref().is_some_and(|status| status.phase.is_some());
        written || (self.finalizer && !self.operations.is_empty())
    }

    /// What the lifecycle knows of the Operations.
    pub fn children(&self) -> Vec<Child> {
        self.operations.values().map(Child::from).collect()
    }

    /// The Operations' API in the Apply's namespace.
    /// The size of the Apply's spec as the API server stores it (near enough: JSON), for the
    /// pace of progress writes.
    pub fn spec_bytes(&self) -> usize {
        serde_json::to_vec(&self.apply.spec).map_or(0, |bytes| bytes.len())
    }

    pub fn operations_api(&self, context: &Context) -> Api<Operation> {
        Api::namespaced(context.client.clone(), &self.namespace)
    }
}

/// Who wrote each name of `spec.approvals`, and when, as the API server recorded it in the
/// Apply's managed fields: the latest write of that item (a set, so each name has its own
/// owner), else of the whole list.
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

/// The Apply's idempotency key, as read at the start of a reconcile.
pub(super) struct Key<'a> {
    apply: &'a Apply,
    api: Api<Lease>,
    lease: Option<Lease>,
    holder: String,
    ttl: SignedDuration,
    now: Timestamp,
}

impl<'a> Key<'a> {
    /// Reads the key's Lease (nothing for an Apply without a key).
    pub async fn read(apply: &'a Apply, namespace: &str, context: &Context) -> Result<Key<'a>> {
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

    /// Where the key stands for this Apply, naming other holders by their Apply's name.
    pub fn idempotency(&self) -> Idempotency {
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

    /// What the key needs written for an Apply in `phase` (or being deleted).
    pub fn next_write(&self, phase: Option<ApplyPhase>, deleting: bool) -> KeyWrite {
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

    /// Makes `write`; `false` when another writer moved first.
    pub async fn write(&self, write: &KeyWrite) -> Result<bool> {
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
