//! Idempotency key records (SPEC.md section 7): a Lease `baton-idem-<hash(key)>` in the Apply's
//! namespace. The holder is the Apply (`<name>/<uid>`), the state an annotation, `renewTime` the
//! last renewal. `lifecycle::key_write` decides; this module reads and writes, every write
//! guarded by the Lease's resourceVersion so two Applies cannot both take a key.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, ResourceExt};

use crate::crd::Apply;
use crate::lifecycle::{KeyRecord, KeyState, KeyWrite};
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
