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
//! Whether another replica's lease expired is judged by local observation, as client-go's leader
//! election does ([`Sightings`]): the version of the Lease this replica saw and when, by its own
//! monotonic clock, it first saw that version. The lease is taken only when the version has not
//! changed for the lease's own `leaseDurationSeconds`. The `renewTime` and `acquireTime`
//! written are informative only: wall clocks are never compared across machines, so a replica
//! whose clock is ahead or behind neither steals a live lease nor waits out a dead one for
//! longer than the duration. A Lease without a holder (released) is taken at once.
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
use k8s_openapi::jiff::Timestamp;
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
    /// Another replica holds it: look again after this long (when, by this replica's
    /// observation, it expires unless renewed; or sooner, see [`LOOK_AGAIN`]).
    Elsewhere(Duration),
}

/// How soon to look again after a take lost to a write made since the read.
const TAKE_RACE_RETRY: Duration = Duration::from_millis(500);
/// A replica waiting on another's lease looks at it again at least this many times per
/// duration. A dead holder's last version is first seen at the first look after it was written,
/// and taken one duration later: looking every half duration bounds a take-over to one and a
/// half durations after the holder's last renewal (a read of a Lease every half duration per
/// Apply held elsewhere; with the default 15 s lease the controller's own 5 s look is sooner).
const LOOK_AGAIN: u32 = 2;
/// How long a sighting of another replica's Lease is kept without being looked at again. An
/// Apply still waiting on that Lease looks at it every few seconds; one that stopped looking
/// (it settled elsewhere, or moved on) needs it no more. Forgetting only costs a wait of one
/// duration should it look again.
const SIGHTING_KEPT: Duration = Duration::from_secs(600);

/// What this replica makes of a Lease it found held by someone, by its own observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Free to take: released, this replica's own, or unchanged for its whole duration.
    Take,
    /// Held by another replica: unchanged for this long more, it may be taken.
    Wait(Duration),
}

/// One Lease as this replica saw it: the version and when, by this replica's monotonic clock,
/// it first saw that version.
#[derive(Clone, Debug)]
struct Sighting {
    version: String,
    since: Instant,
    /// The last look (an entry not looked at for [`SIGHTING_KEPT`] is forgotten).
    looked: Instant,
}

/// This replica's sightings of Leases held by other replicas, by Apply uid: the expiry
/// judgement of section 6. Pure: the instant is an argument, no clock is read here.
///
/// Bounded: a sighting goes when this replica takes the lease, when the Apply is let go or
/// disappears (the same calls that end a holding), and when it was not looked at for
/// [`SIGHTING_KEPT`].
#[derive(Debug)]
pub struct Sightings {
    /// This replica's identity: a Lease it holds by that name is its own.
    identity: String,
    /// The duration assumed for a Lease that states none (this replica's own).
    fallback: Duration,
    seen: HashMap<String, Sighting>,
}

impl Sightings {
    /// No sightings yet, for the replica `identity`.
    pub fn new(identity: &str, fallback: Duration) -> Self {
        Sightings { identity: identity.to_owned(), fallback, seen: HashMap::new() }
    }

    /// Judges `lease`, the Lease of the Apply `uid` as read `now`. A holder is live as long as
    /// its Lease keeps changing: the same `resourceVersion` for the Lease's own duration since
    /// this replica first saw it means it stopped renewing. The times written in it are not read.
    pub fn judge(&mut self, uid: &str, lease: &Lease, now: Instant) -> Verdict {
        let spec = lease.spec.as_ref();
        let holder = spec.and_then(|spec| spec.holder_identity.as_deref()).unwrap_or_default();
        if holder.is_empty() || holder == self.identity {
            self.seen.remove(uid);
            return Verdict::Take;
        }
        let duration = spec
            .and_then(|spec| spec.lease_duration_seconds)
            .and_then(|seconds| u64::try_from(seconds).ok())
            .filter(|seconds| *seconds > 0)
            .map_or(self.fallback, Duration::from_secs);
        let version = lease.metadata.resource_version.as_deref().unwrap_or_default();
        let sighting = self
            .seen
            .entry(uid.to_owned())
            .and_modify(|sighting| {
                if sighting.version != version {
                    sighting.version = version.to_owned();
                    sighting.since = now;
                }
                sighting.looked = now;
            })
            .or_insert_with(|| Sighting { version: version.to_owned(), since: now, looked: now });
        let unchanged = now.saturating_duration_since(sighting.since);
        match duration.checked_sub(unchanged) {
            Some(left) if !left.is_zero() => Verdict::Wait(left),
            _ => Verdict::Take,
        }
    }

    /// Forgets the sighting of the Apply `uid`'s Lease.
    pub fn forget(&mut self, uid: &str) {
        self.seen.remove(uid);
    }

    /// Keeps the sightings of Applies that still exist and were looked at lately.
    pub fn retain(&mut self, exists: impl Fn(&str) -> bool, now: Instant) {
        self.seen.retain(|uid, sighting| {
            exists(uid) && now.saturating_duration_since(sighting.looked) < SIGHTING_KEPT
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

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
    /// What this replica saw of the Leases others hold.
    sightings: Mutex<Sightings>,
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
        let sightings = Mutex::new(Sightings::new(&identity, timing.duration));
        let terms = std::sync::atomic::AtomicU64::new(0);
        let shared = Shared { client, identity, timing, wake, metrics, held, sightings, terms };
        ApplyLeases { shared: Arc::new(shared) }
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
        let driven_before = apply.driven_before();
        let read = |source| lease_error("reading", &name, source);
        let write = |source| lease_error("writing", &name, source);
        let found = if driven_before { api.get_opt(&name).await.map_err(read)? } else { None };
        let current = match found {
            Some(current) => current,
            None => {
                match api.create(&shared.params(), &shared.new_lease(apply, &namespace)).await {
                    Ok(lease) => return Ok(self.hold(apply, namespace, lease, sent)),
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        api.get(&name).await.map_err(read)?
                    }
                    Err(source) => return Err(write(source)),
                }
            }
        };
        let verdict = shared.sightings().judge(&uid, &current, Instant::now());
        if let Verdict::Wait(left) = verdict {
            return Ok(Acquired::Elsewhere(left.min(shared.timing.duration / LOOK_AGAIN)));
        }
        let sent_take = Instant::now();
        match api.replace(&name, &shared.params(), &shared.taken(current)).await {
            Ok(lease) => Ok(self.hold(apply, namespace, lease, sent_take)),
            // Someone wrote it since the read: it is theirs, or about to be.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Acquired::Elsewhere(TAKE_RACE_RETRY))
            }
            Err(source) => Err(write(source)),
        }
    }

    fn hold(&self, apply: &Apply, namespace: String, lease: Lease, sent: Instant) -> Acquired {
        let uid = apply.uid().unwrap_or_default();
        let shared = &self.shared;
        let term = shared.terms.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let apply_ref = ObjectRef::from_obj(apply);
        let trusted_until = sent + shared.timing.trusted_for();
        let first =
            FirstWrite { namespace: namespace.clone(), lease: lease.clone(), trusted_until };
        let renewer = tokio::spawn(renew(shared.clone(), uid.clone(), term, apply_ref, first));
        let holding = Holding { namespace, lease, trusted_until, term, renewer };
        shared.sightings().forget(&uid);
        if let Some(previous) = shared.lock().insert(uid, holding) {
            previous.renewer.abort();
        }
        shared.metrics.lease_acquisitions.inc();
        Acquired::Held
    }

    /// Stops renewing the Apply's lease: it lapses (section 6). No request. What was seen of
    /// another holder's Lease is forgotten too: the Apply needs no lease now.
    pub fn lapse(&self, uid: &str) {
        self.shared.sightings().forget(uid);
        if let Some(holding) = self.shared.lock().remove(uid) {
            holding.renewer.abort();
        }
    }

    /// Stops renewing the leases of Applies that no longer exist (deleted without a last
    /// reconcile here), and forgets the sightings of those and of Leases not looked at lately.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        self.shared.sightings().retain(&exists, Instant::now());
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

    fn sightings(&self) -> MutexGuard<'_, Sightings> {
        self.sightings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn params(&self) -> PostParams {
        PostParams {
            field_manager: Some(format!("baton-lease-{}", self.identity)),
            ..PostParams::default()
        }
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
async fn renew(
    shared: Arc<Shared>,
    uid: String,
    term: u64,
    apply: ObjectRef<Apply>,
    first: FirstWrite,
) {
    // The task keeps its own copy of what it last wrote (the holding may be inserted a moment
    // after it starts) and mirrors each renewal into the holding while that is still its own.
    let FirstWrite { namespace, mut lease, mut trusted_until } = first;
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
struct FirstWrite {
    namespace: String,
    lease: Lease,
    trusted_until: Instant,
}

fn lease_error(doing: &str, name: &str, source: kube::Error) -> Error {
    Error::Kube { step: crate::Step::Lease, context: format!("{doing} lease {name}"), source }
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
    use k8s_openapi::jiff::SignedDuration;

    fn timing() -> LeaseTiming {
        LeaseTiming { duration: Duration::from_secs(15), grace: Duration::from_secs(5) }
    }

    #[test]
    fn a_holder_trusts_its_lease_less_than_its_duration_and_renews_before_that() {
        let timing = timing();
        assert!(timing.renew_after() < timing.trusted_for());
        assert!(timing.trusted_for() < timing.duration);
    }

    const UID: &str = "apply-uid";
    const ME: &str = "replica-me";
    const OTHER: &str = "replica-other";
    /// The `leaseDurationSeconds` the other replica writes.
    const WRITTEN: Duration = Duration::from_secs(15);

    /// The Lease as read: held by `holder`, at `version`, renewed at `renewed` by its holder's
    /// wall clock.
    fn lease(holder: Option<&str>, version: u64, renewed: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(UID)),
                resource_version: Some(version.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                acquire_time: Some(MicroTime(renewed)),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    /// A replica whose own duration differs from the one written, to tell which one counts.
    fn sightings() -> Sightings {
        Sightings::new(ME, Duration::from_secs(40))
    }

    /// Looks at a holder that renews every `every` (its wall clock `skew` away from ours) for
    /// `looking`, once a second; `true` if it was ever judged free.
    fn ever_taken_while_renewing(skew: i64, every: Duration, looking: Duration) -> bool {
        let mut sightings = sightings();
        let start = Instant::now();
        let clock = Timestamp::now() + SignedDuration::from_secs(skew);
        let mut version = 1;
        let mut renewed_at = Duration::ZERO;
        let mut at = Duration::ZERO;
        while at < looking {
            if at >= renewed_at + every {
                renewed_at = at;
                version += 1;
            }
            let renewed = clock + SignedDuration::try_from(renewed_at).unwrap_or_default();
            let verdict = sightings.judge(UID, &lease(Some(OTHER), version, renewed), start + at);
            if verdict == Verdict::Take {
                return true;
            }
            at += Duration::from_secs(1);
        }
        false
    }

    #[test]
    fn a_holder_an_hour_ahead_is_never_stolen_from_while_it_renews() {
        assert!(!ever_taken_while_renewing(
            3600,
            Duration::from_secs(10),
            Duration::from_secs(600)
        ));
    }

    #[test]
    fn a_holder_an_hour_ahead_is_not_waited_on_past_the_duration_once_it_stops() {
        let mut sightings = sightings();
        let start = Instant::now();
        let ahead = Timestamp::now() + SignedDuration::from_hours(1);
        let dead = lease(Some(OTHER), 7, ahead);
        assert_eq!(sightings.judge(UID, &dead, start), Verdict::Wait(WRITTEN));
        let before = start + WRITTEN - Duration::from_millis(1);
        assert_eq!(sightings.judge(UID, &dead, before), Verdict::Wait(Duration::from_millis(1)));
        assert_eq!(sightings.judge(UID, &dead, start + WRITTEN), Verdict::Take, "not an hour on");
    }

    #[test]
    fn a_holder_an_hour_behind_is_never_stolen_from_while_it_renews() {
        let every = Duration::from_secs(10);
        assert!(!ever_taken_while_renewing(-3600, every, Duration::from_secs(600)));
        // Its first sighting alone, an hour old by its own clock, is no reason to take it.
        let mut sightings = sightings();
        let behind = Timestamp::now() - SignedDuration::from_hours(1);
        let verdict = sightings.judge(UID, &lease(Some(OTHER), 3, behind), Instant::now());
        assert_eq!(verdict, Verdict::Wait(WRITTEN));
    }

    #[test]
    fn a_live_holder_is_never_taken() {
        assert!(!ever_taken_while_renewing(0, Duration::from_secs(3), Duration::from_secs(3600)));
        // Renewing just inside its duration, by our clock.
        let every = WRITTEN - Duration::from_secs(1);
        assert!(!ever_taken_while_renewing(0, every, Duration::from_secs(3600)));
    }

    #[test]
    fn a_dead_holder_is_taken_within_the_duration_of_first_sight() {
        let mut sightings = sightings();
        let start = Instant::now();
        let dead = lease(Some(OTHER), 9, Timestamp::now());
        let mut waits = Vec::new();
        let mut at = Duration::ZERO;
        let taken_at = loop {
            match sightings.judge(UID, &dead, start + at) {
                Verdict::Take => break at,
                Verdict::Wait(left) => waits.push(at + left),
            }
            at += Duration::from_millis(700);
            assert!(at < Duration::from_secs(60), "never taken");
        };
        assert!(taken_at >= WRITTEN, "taken after {taken_at:?}, before its duration");
        assert!(taken_at < WRITTEN + Duration::from_millis(700), "taken after {taken_at:?}");
        assert!(waits.iter().all(|expiry| *expiry == WRITTEN), "each wait ends at the expiry");
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut sightings = sightings();
        let now = Instant::now();
        let released = lease(None, 4, Timestamp::now());
        assert_eq!(sightings.judge(UID, &released, now), Verdict::Take);
        let mut blank = lease(Some(""), 5, Timestamp::now());
        assert_eq!(sightings.judge(UID, &blank, now), Verdict::Take);
        blank.spec = None;
        assert_eq!(sightings.judge(UID, &blank, now), Verdict::Take);
        assert_eq!(sightings.judge(UID, &lease(Some(ME), 6, Timestamp::now()), now), Verdict::Take);
    }

    #[test]
    fn a_lease_stating_no_duration_is_waited_on_for_this_replicas_own() {
        let mut sightings = sightings();
        let mut unstated = lease(Some(OTHER), 2, Timestamp::now());
        if let Some(spec) = unstated.spec.as_mut() {
            spec.lease_duration_seconds = None;
        }
        let verdict = sightings.judge(UID, &unstated, Instant::now());
        assert_eq!(verdict, Verdict::Wait(Duration::from_secs(40)));
    }

    #[test]
    fn sightings_are_forgotten_when_the_apply_goes_or_nobody_looks() {
        let mut sightings = sightings();
        let start = Instant::now();
        for uid in ["a", "b", "c"] {
            sightings.judge(uid, &lease(Some(OTHER), 1, Timestamp::now()), start);
        }
        let later = start + SIGHTING_KEPT - Duration::from_secs(1);
        sightings.judge("b", &lease(Some(OTHER), 1, Timestamp::now()), later);
        sightings.retain(|uid| uid != "c", later);
        assert_eq!(sightings.len(), 2, "c is gone");
        sightings.retain(|_| true, start + SIGHTING_KEPT);
        assert_eq!(sightings.len(), 1, "a was not looked at for too long; b was");
        sightings.forget("b");
        assert_eq!(sightings.len(), 0);
    }
}
