//! The apply lease (SPEC.md section 6): one `coordination.k8s.io/v1` Lease per active Apply,
//! `baton-apply-<uid>`, owned by the Apply.
//!
//! Every write of a Lease here is conditioned on the `resourceVersion` last read or written:
//! a take, a renewal and a release each fail with a conflict when anyone wrote the Lease
//! meanwhile. That is what lets a holder answer "may I write now?" from memory, with no read of
//! the Lease before each write: it holds the lease until its last successful write said, by its
//! own monotonic clock, less a margin. A competitor that read the Lease earlier and believes it
//! expired cannot take it: its write carries the old `resourceVersion` and loses.
//!
//! A settled Apply's lease is not released but lapses (section 6 allows it): renewals stop and
//! no write is made. A replica shutting down releases what it holds, conditioned the same way,
//! so a successor takes over without waiting for the expiry.
//!
//! It must not decide anything about operations: holding the lease only opens the gate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::crd::Apply;
use crate::metrics::Metrics;
use crate::{Error, Result};

/// Prefix of every apply lease's name.
pub const APPLY_LEASE_PREFIX: &str = "baton-apply-";

/// Name of the lease of the Apply with `uid`.
pub fn lease_name(uid: &str) -> String {
    format!("{APPLY_LEASE_PREFIX}{uid}")
}

/// How long a lease lasts and how early it is renewed.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    /// `leaseDurationSeconds`: how long a holder that stopped renewing keeps the lease.
    pub duration: Duration,
    /// Renew this long before the lease would expire.
    pub grace: Duration,
}

impl LeaseTiming {
    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(2)).unwrap_or(i32::MAX)
    }

    /// How long after a write was sent the holder still writes under it: the duration less
    /// half the grace, so a write decided just before then lands well before any competitor
    /// may take the lease.
    fn trusted_for(&self) -> Duration {
        self.duration.saturating_sub(self.grace / 2)
    }

    /// How long after a write was sent it is renewed.
    fn renew_after(&self) -> Duration {
        self.duration.saturating_sub(self.grace)
    }
}

/// The answer of [`ApplyLeases::acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// This replica holds the lease.
    Held,
    /// Another replica holds it: look again after this long (when it expires unless renewed).
    Elsewhere(Duration),
}

/// How soon to look again after a take lost to a write made since the read.
const TAKE_RACE_RETRY: Duration = Duration::from_millis(500);

/// A lease this replica holds.
struct Holding {
    namespace: String,
    /// The Lease as last written here: its `resourceVersion` conditions the next write.
    lease: Lease,
    /// Until when this replica writes under it.
    trusted_until: Instant,
    /// Tells one holding from a later one of the same Apply (a renewal that finishes after the
    /// lease lapsed and was taken again must not overwrite the new holding).
    term: u64,
    renewer: JoinHandle<()>,
}

/// What the renewal tasks share with the reconcilers.
struct Shared {
    client: Client,
    identity: String,
    timing: LeaseTiming,
    wake: UnboundedSender<ObjectRef<Apply>>,
    metrics: Arc<Metrics>,
    held: Mutex<HashMap<String, Holding>>,
    terms: std::sync::atomic::AtomicU64,
}

/// The leases this replica holds, one per active Apply.
pub struct ApplyLeases {
    shared: Arc<Shared>,
}

impl ApplyLeases {
    /// `wake` receives an Apply whose lease this replica lost.
    pub fn new(
        client: Client,
        identity: String,
        timing: LeaseTiming,
        wake: UnboundedSender<ObjectRef<Apply>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let held = Mutex::new(HashMap::new());
        let terms = std::sync::atomic::AtomicU64::new(0);
        ApplyLeases {
            shared: Arc::new(Shared { client, identity, timing, wake, metrics, held, terms }),
        }
    }

    /// This replica's identity, written as the lease holder and in claims.
    pub fn identity(&self) -> &str {
        &self.shared.identity
    }

    /// Whether this replica may write for the Apply with `uid` now. No request: see the module.
    pub fn holds(&self, uid: &str) -> bool {
        self.shared.lock().get(uid).is_some_and(|holding| holding.trusted_until > Instant::now())
    }

    /// Holds the Apply's lease, taking it (creating it, owned by the Apply, if missing) when it
    /// is free or expired. Costs no request while held.
    pub async fn acquire(&self, apply: &Apply) -> Result<Acquired> {
        let uid = apply.uid().unwrap_or_default();
        if self.holds(&uid) {
            return Ok(Acquired::Held);
        }
        let namespace = apply.namespace().unwrap_or_default();
        let shared = &self.shared;
        let api: Api<Lease> = Api::namespaced(shared.client.clone(), &namespace);
        let name = lease_name(&uid);
        let sent = Instant::now();
        // An Apply never driven has no Lease: its first holder creates it already held (one
        // write, no read). One driven before has one (lapsed, or another replica's): read it
        // and take it if free, rather than pay a create that is refused first.
        let driven_before = apply.status.as_ref().is_some_and(|status| status.phase.is_some());
        let read = |source| lease_error(&name, source);
        let found = if driven_before { api.get_opt(&name).await.map_err(read)? } else { None };
        let current = match found {
            Some(current) => current,
            None => {
                match api.create(&shared.params(), &shared.new_lease(apply, &namespace)).await {
                    Ok(lease) => return Ok(self.hold(apply, namespace, lease, sent)),
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        api.get(&name).await.map_err(read)?
                    }
                    Err(source) => return Err(read(source)),
                }
            }
        };
        if let Some(left) = shared.held_by_another(&current) {
            return Ok(Acquired::Elsewhere(left));
        }
        let sent_take = Instant::now();
        match api.replace(&name, &shared.params(), &shared.taken(current)).await {
            Ok(lease) => Ok(self.hold(apply, namespace, lease, sent_take)),
            // Someone wrote it since the read: it is theirs, or about to be.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Acquired::Elsewhere(TAKE_RACE_RETRY))
            }
            Err(source) => Err(read(source)),
        }
    }

    fn hold(&self, apply: &Apply, namespace: String, lease: Lease, sent: Instant) -> Acquired {
        let uid = apply.uid().unwrap_or_default();
        let shared = &self.shared;
        let term = shared.terms.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let apply_ref = ObjectRef::from_obj(apply);
        let trusted_until = sent + shared.timing.trusted_for();
        let first = Term { namespace: namespace.clone(), lease: lease.clone(), trusted_until };
        let renewer = tokio::spawn(renew(shared.clone(), uid.clone(), term, apply_ref, first));
        let holding = Holding { namespace, lease, trusted_until, term, renewer };
        if let Some(previous) = shared.lock().insert(uid, holding) {
            previous.renewer.abort();
        }
        shared.metrics.lease_acquisitions.inc();
        Acquired::Held
    }

    /// Stops renewing the Apply's lease: it lapses (section 6). No request.
    pub fn lapse(&self, uid: &str) {
        if let Some(holding) = self.shared.lock().remove(uid) {
            holding.renewer.abort();
        }
    }

    /// Stops renewing the leases of Applies that no longer exist (deleted without a last
    /// reconcile here).
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        self.shared.lock().retain(|uid, holding| {
            let keep = exists(uid);
            if !keep {
                holding.renewer.abort();
            }
            keep
        });
    }

    /// Releases every lease held (on shutdown), each conditioned on what was last written, so
    /// a successor takes over at once; a release that loses leaves a lease someone else wrote.
    pub async fn release_all(&self) {
        let holdings: Vec<Holding> =
            self.shared.lock().drain().map(|(_, holding)| holding).collect();
        let releases = holdings.into_iter().map(|holding| {
            holding.renewer.abort();
            let api: Api<Lease> = Api::namespaced(self.shared.client.clone(), &holding.namespace);
            let mut lease = holding.lease;
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.acquire_time = None;
                spec.renew_time = None;
            }
            async move {
                let name = lease.name_any();
                if let Err(error) = api.replace(&name, &self.shared.params(), &lease).await {
                    debug!(lease = %name, %error, "lease not released; it lapses");
                }
            }
        });
        futures::future::join_all(releases).await;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Holding>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn params(&self) -> PostParams {
        PostParams {
            field_manager: Some(format!("baton-lease-{}", self.identity)),
            ..PostParams::default()
        }
    }

    /// How long another replica still holds `lease` by this replica's clock, if it does.
    fn held_by_another(&self, lease: &Lease) -> Option<Duration> {
        let spec = lease.spec.as_ref()?;
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        if holder.is_empty() || holder == self.identity {
            return None;
        }
        let renewed = spec.renew_time.as_ref().map_or(Timestamp::UNIX_EPOCH, |time| time.0);
        let duration =
            SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
        let left = (renewed + duration).duration_since(Timestamp::now());
        (left > SignedDuration::ZERO).then(|| left.unsigned_abs())
    }

    /// A new Lease for `apply`, owned by it and held by this replica.
    fn new_lease(&self, apply: &Apply, namespace: &str) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(&apply.uid().unwrap_or_default())),
                namespace: Some(namespace.to_owned()),
                owner_references: apply.controller_owner_ref(&()).map(|owner| vec![owner]),
                labels: Some([(crate::crd::LABEL_APPLY.to_owned(), apply.name_any())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_duration_seconds: Some(self.timing.duration_seconds()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    /// `current` taken by this replica (its `resourceVersion` kept as the precondition).
    fn taken(&self, mut current: Lease) -> Lease {
        let now = MicroTime(Timestamp::now());
        let spec = current.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(now.clone());
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.timing.duration_seconds());
        current
    }

    /// Forgets a holding that was lost, and wakes its Apply so the pass sees it.
    fn lost(&self, uid: &str, term: u64, apply: &ObjectRef<Apply>) {
        let mut held = self.lock();
        if held.get(uid).is_some_and(|holding| holding.term == term) {
            held.remove(uid);
            drop(held);
            self.metrics.lease_losses.inc();
            let _ = self.wake.send(apply.clone());
        }
    }
}

/// Renews the Apply's lease before it expires, for as long as the holding lasts. A renewal
/// that loses (someone wrote the Lease) ends the holding; one that fails is retried until the
/// holding is no longer trusted, which then ends it too.
async fn renew(shared: Arc<Shared>, uid: String, term: u64, apply: ObjectRef<Apply>, first: Term) {
    // The task keeps its own copy of what it last wrote (the holding may be inserted a moment
    // after it starts) and mirrors each renewal into the holding while that is still its own.
    let Term { namespace, mut lease, mut trusted_until } = first;
    let api: Api<Lease> = Api::namespaced(shared.client.clone(), &namespace);
    let name = lease.name_any();
    loop {
        let renew_at = trusted_until - shared.timing.trusted_for() + shared.timing.renew_after();
        tokio::time::sleep_until(renew_at).await;
        loop {
            let sent = Instant::now();
            if sent >= trusted_until {
                warn!(lease = %name, "lease not renewed in time; letting it go");
                shared.lost(&uid, term, &apply);
                return;
            }
            match api.replace(&name, &shared.params(), &shared.taken(lease.clone())).await {
                Ok(renewed) => {
                    lease = renewed;
                    trusted_until = sent + shared.timing.trusted_for();
                    let mut held = shared.lock();
                    match held.get_mut(&uid) {
                        Some(holding) if holding.term == term => {
                            holding.lease = lease.clone();
                            holding.trusted_until = trusted_until;
                        }
                        // Let go (or taken again) meanwhile.
                        _ => return,
                    }
                    break;
                }
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {
                    debug!(lease = %name, reason = %status.reason, "lease lost");
                    shared.lost(&uid, term, &apply);
                    return;
                }
                Err(error) => {
                    debug!(lease = %name, %error, "lease renewal failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// What a renewal task starts from: the holding's first write.
struct Term {
    namespace: String,
    lease: Lease,
    trusted_until: Instant,
}

fn lease_error(name: &str, source: kube::Error) -> Error {
    Error::Kube { context: format!("writing lease {name}"), source }
}

impl Drop for ApplyLeases {
    fn drop(&mut self) {
        for (_, holding) in self.shared.lock().drain() {
            holding.renewer.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> LeaseTiming {
        LeaseTiming { duration: Duration::from_secs(15), grace: Duration::from_secs(5) }
    }

    #[test]
    fn a_holder_trusts_its_lease_less_than_its_duration_and_renews_before_that() {
        let timing = timing();
        assert!(timing.renew_after() < timing.trusted_for());
        assert!(timing.trusted_for() < timing.duration);
    }
}
