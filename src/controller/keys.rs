//! Idempotency key records (SPEC.md section 7): a Lease `baton-idem-<hash(key)>` in the Apply's
//! namespace. The holder is the Apply (`<name>/<uid>`), the state an annotation, `renewTime` the
//! last renewal. `lifecycle::key_write` decides; this module reads and writes, every write
//! guarded by the Lease's resourceVersion so two Applies cannot both take a key. [`Key`] is an
//! Apply's key as one pass reads it: where it stands, what it needs, and its write.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, ResourceExt};

use tracing::info;

use super::Context;
use crate::crd::{Apply, ApplyPhase};
use crate::lifecycle::{Idempotency, KeyRecord, KeyState, KeyWrite, key_write, observe_key};
use crate::{Error, Result};

/// Prefix of every key Lease's name.
pub const KEY_LEASE_PREFIX: &str = "baton-idem-";
/// Annotation carrying the key itself, for people.
pub const ANNOTATION_KEY: &str = "baton.dev/idempotency-key";
/// Annotation carrying the key's state: `InFlight`, `Succeeded` or `Failed`.
pub const ANNOTATION_STATE: &str = "baton.dev/key-state";

/// FNV-1a: a hash that never changes between releases, unlike the standard library's.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Name of the Lease recording `key`.
pub fn key_lease_name(key: &str) -> String {
    format!("{KEY_LEASE_PREFIX}{:016x}", fnv1a(key))
}

/// How an Apply names itself as a key holder: its name (for messages) and uid (so a new Apply
/// with the same name is another holder).
pub fn holder_of(apply: &Apply) -> String {
    format!("{}/{}", apply.name_any(), apply.uid().unwrap_or_default())
}

/// The Apply name in a holder string.
pub fn holder_name(holder: &str) -> &str {
    holder.split('/').next().unwrap_or(holder)
}

/// The record a key Lease holds.
pub fn record(lease: &Lease) -> Option<KeyRecord> {
    let spec = lease.spec.as_ref()?;
    let state = match lease.annotations().get(ANNOTATION_STATE).map(String::as_str) {
        Some("Succeeded") => KeyState::Succeeded,
        Some("Failed") => KeyState::Failed,
        _ => KeyState::InFlight,
    };
    Some(KeyRecord {
        holder: spec.holder_identity.clone()?,
        state,
        renewed_at: spec.renew_time.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0),
    })
}

/// Reads the key's Lease.
pub async fn read(api: &Api<Lease>, key: &str) -> Result<Option<Lease>> {
    api.get_opt(&key_lease_name(key)).await.map_err(|source| Error::Kube {
        step: crate::Step::Key,
        context: format!("reading idempotency key `{key}`"),
        source,
    })
}

/// Makes `write` on the key's Lease as `holder`. `Ok(false)` when someone else wrote first.
pub async fn apply_write(
    api: &Api<Lease>,
    key: &str,
    current: Option<&Lease>,
    write: &KeyWrite,
    holder: &str,
    now: Timestamp,
    ttl: SignedDuration,
) -> Result<bool> {
    let state = match write {
        KeyWrite::Keep => return Ok(true),
        KeyWrite::Release => return release(api, key, current).await,
        KeyWrite::Take | KeyWrite::Renew => "InFlight",
        KeyWrite::MarkSucceeded => "Succeeded",
        KeyWrite::MarkFailed => "Failed",
    };
    let mut lease = current.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta { name: Some(key_lease_name(key)), ..ObjectMeta::default() },
        spec: None,
    });
    lease.metadata.managed_fields = None;
    let annotations = lease.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(ANNOTATION_KEY.to_owned(), key.to_owned());
    annotations.insert(ANNOTATION_STATE.to_owned(), state.to_owned());
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(holder.to_owned());
    spec.lease_duration_seconds = Some(i32::try_from(ttl.as_secs()).unwrap_or(i32::MAX));
    spec.renew_time = Some(MicroTime(now));
    if matches!(write, KeyWrite::Take) {
        spec.acquire_time = Some(MicroTime(now));
    }
    let outcome = match current {
        None => api.create(&PostParams::default(), &lease).await,
        // The resourceVersion read makes the replace a compare-and-swap.
        Some(_) => api.replace(&key_lease_name(key), &PostParams::default(), &lease).await,
    };
    match outcome {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            step: crate::Step::Key,
            context: format!("writing idempotency key `{key}`"),
            source,
        }),
    }
}

async fn release(api: &Api<Lease>, key: &str, current: Option<&Lease>) -> Result<bool> {
    let Some(current) = current else { return Ok(true) };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: current.resource_version(),
            uid: current.uid(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&key_lease_name(key), &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            step: crate::Step::Key,
            context: format!("releasing idempotency key `{key}`"),
            source,
        }),
    }
}

/// The Apply's idempotency key, as read at the start of a reconcile.
pub struct Key<'a> {
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
            Some(key) => read(&api, key).await?,
            None => None,
        };
        Ok(Key {
            apply,
            api,
            lease,
            holder: holder_of(apply),
            ttl: SignedDuration::try_from(context.settings.idempotency_ttl)
                .unwrap_or(SignedDuration::from_hours(1)),
            now: Timestamp::now(),
        })
    }

    fn record(&self) -> Option<KeyRecord> {
        self.lease.as_ref().and_then(record)
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
                Idempotency::AlreadyDone { by: holder_name(&by).to_owned() }
            }
            Idempotency::InFlightElsewhere { holder } => {
                Idempotency::InFlightElsewhere { holder: holder_name(&holder).to_owned() }
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
        apply_write(&self.api, key, self.lease.as_ref(), write, &self.holder, self.now, self.ttl)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lease_names_are_stable_and_valid() {
        assert_eq!(key_lease_name("release-42"), key_lease_name("release-42"));
        assert_ne!(key_lease_name("release-42"), key_lease_name("release-43"));
        let name = key_lease_name("a key with spaces and ünïcode");
        assert!(
            name.len() <= 63
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn holder_names_read_back() {
        assert_eq!(holder_name("first/0c1d"), "first");
    }
}
