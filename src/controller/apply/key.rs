//! The step that takes the idempotency key (SPEC.md section 7) before deciding, so the claim
//! gate can open in the same pass, and the key as one pass reads it. `lifecycle` decides what
//! the key needs; `controller::keys` reads and writes its Lease.

use std::ops::ControlFlow;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::runtime::controller::Action;
use tracing::info;

use super::snapshot::Snapshot;
use super::{Context, RETRY_SOON, finalizer};
use crate::Result;
use crate::controller::keys;
use crate::crd::{Apply, ApplyPhase};
use crate::lifecycle::{
    Idempotency, KeyRecord, KeyWrite, key_needs_finalizer, key_write, observe_key,
};

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
        return Ok(ControlFlow::Break(Action::requeue(RETRY_SOON)));
    }
    if !snapshot.key.write(write).await? {
        return Ok(ControlFlow::Break(Action::requeue(RETRY_SOON)));
    }
    snapshot.key = Key::read(snapshot.apply, &snapshot.namespace, context).await?;
    Ok(ControlFlow::Continue(()))
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
