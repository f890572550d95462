//! The apply lease (SPEC.md section 6): one `coordination.k8s.io/v1` Lease per active Apply,
//! `baton-apply-<uid>`, owned by the Apply. `kube-lease-manager` takes, renews and releases it;
//! this module starts one manager per active Apply, wakes the Apply's reconcile when the lease
//! changes hands, and answers "may I write now?" from a fresh read of the Lease.
//!
//! It must not decide anything about operations: holding the lease only opens the gate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

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

/// A running `kube-lease-manager` task; it ends once its lease is released.
type ManagerTask = JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>;

struct Held {
    /// Owns the manager's only receiver: aborting it makes the manager release the lease.
    forwarder: JoinHandle<()>,
    /// The manager itself: it ends once the lease is released.
    manager: ManagerTask,
}

impl Held {
    /// Starts releasing; the returned manager task ends when the release has landed.
    fn release(self) -> ManagerTask {
        self.forwarder.abort();
        self.manager
    }
}

/// The leases this replica competes for, one per active Apply.
pub struct ApplyLeases {
    client: Client,
    identity: String,
    timing: LeaseTiming,
    wake: UnboundedSender<ObjectRef<Apply>>,
    metrics: Arc<Metrics>,
    managers: Mutex<HashMap<String, Held>>,
    /// Managers still releasing, by Apply uid: a new one for the same Apply waits for them, or
    /// this replica could read the lease as its own just before its old manager gives it away.
    releasing: Mutex<HashMap<String, ManagerTask>>,
}

impl ApplyLeases {
    /// `wake` receives the Apply whenever its lease changes hands here.
    pub fn new(
        client: Client,
        identity: String,
        timing: LeaseTiming,
        wake: UnboundedSender<ObjectRef<Apply>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        ApplyLeases {
            client,
            identity,
            timing,
            wake,
            metrics,
            managers: Mutex::new(HashMap::new()),
            releasing: Mutex::new(HashMap::new()),
        }
    }

    fn duration_seconds(&self) -> u64 {
        self.timing.duration.as_secs().max(2)
    }

    /// This replica's identity, written as the lease holder and in claims.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Competes for the Apply's lease (creating it, owned by the Apply, if missing) and says
    /// until when this replica may write for the Apply (`None`: it may not).
    pub async fn acquire(&self, apply: &Apply) -> Result<Option<Timestamp>> {
        let uid = apply.uid().unwrap_or_default();
        let namespace = apply.namespace().unwrap_or_default();
        let running = self.lock().contains_key(&uid);
        if !running {
            let previous = self.releasing().remove(&uid);
            if let Some(previous) = previous {
                // Bounded: a release is one API call; past that, the lease expires anyway.
                let _ = tokio::time::timeout(self.timing.duration, previous).await;
            }
            self.create_owned_lease(apply, &namespace, &uid).await?;
            let manager = LeaseManagerBuilder::new(self.client.clone(), lease_name(&uid))
                .with_namespace(&namespace)
                .with_identity(&self.identity)
                .with_duration(self.duration_seconds())
                .with_grace(self.timing.grace.as_secs().max(1))
                .with_create_mode(LeaseCreateMode::UseExistent)
                .with_field_manager(format!("baton-lease-{}", self.identity))
                .build()
                .await
                .map_err(|source| Error::Lease {
                    lease: lease_name(&uid),
                    message: source.to_string(),
                })?;
            let (mut receiver, renewer) = manager.watch().await;
            let wake = self.wake.clone();
            let metrics = self.metrics.clone();
            let apply_ref = ObjectRef::from_obj(apply);
            // Owns the only receiver: aborting it closes the channel, and the manager then
            // releases the lease and ends.
            let forwarder = tokio::spawn(async move {
                while receiver.changed().await.is_ok() {
                    if *receiver.borrow() {
                        metrics.lease_acquisitions.inc();
                    } else {
                        metrics.lease_losses.inc();
                    }
                    if wake.send(apply_ref.clone()).is_err() {
                        break;
                    }
                }
            });
            self.lock().insert(uid.clone(), Held { forwarder, manager: renewer });
        }
        self.check(&namespace, &uid).await
    }

    /// A fresh read of the lease: when held by this replica and not expired by the local clock,
    /// the instant it expires unless renewed. No other replica takes it before then: takers wait
    /// for expiry, they never force.
    pub async fn check(&self, namespace: &str, uid: &str) -> Result<Option<Timestamp>> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let lease = api.get_opt(&lease_name(uid)).await.map_err(|source| Error::Kube {
            context: format!("reading lease {}", lease_name(uid)),
            source,
        })?;
        Ok(lease.and_then(|lease| lease.spec).and_then(|spec| {
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return None;
            }
            let renewed = spec.renew_time.map_or(Timestamp::UNIX_EPOCH, |t| t.0);
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
            let until = renewed + duration;
            (until > Timestamp::now()).then_some(until)
        }))
    }

    /// Stops competing for the Apply's lease and releases it if held: a settled Apply costs
    /// no renewals.
    pub fn release(&self, uid: &str) {
        let held = self.lock().remove(uid);
        if let Some(held) = held {
            let manager = held.release();
            let mut releasing = self.releasing();
            releasing.retain(|_, task| !task.is_finished());
            releasing.insert(uid.to_owned(), manager);
        }
    }

    fn releasing(&self) -> std::sync::MutexGuard<'_, HashMap<String, ManagerTask>> {
        self.releasing.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops competing for the leases of Applies that no longer exist (deleted without a last
    /// reconcile here), so their managers do not retry forever.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        self.lock().retain(|uid, held| {
            let keep = exists(uid);
            if !keep {
                held.forwarder.abort();
            }
            keep
        });
    }

    /// Releases every lease (on shutdown).
    pub fn release_all(&self) {
        for (_, held) in self.lock().drain() {
            held.forwarder.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.managers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates the lease, owned by the Apply, already held by this replica: the first holder
    /// costs one write, not a create and then an acquisition. When it exists, the manager
    /// competes for it as usual.
    async fn create_owned_lease(&self, apply: &Apply, namespace: &str, uid: &str) -> Result<()> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(uid)),
                namespace: Some(namespace.to_owned()),
                owner_references: apply.controller_owner_ref(&()).map(|owner| vec![owner]),
                labels: Some([(crate::crd::LABEL_APPLY.to_owned(), apply.name_any())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_duration_seconds: i32::try_from(self.duration_seconds()).ok(),
                lease_transitions: Some(1),
                ..LeaseSpec::default()
            }),
        };
        let params = PostParams {
            field_manager: Some(format!("baton-lease-{}", self.identity)),
            ..PostParams::default()
        };
        match api.create(&params, &lease).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(source) => {
                Err(Error::Kube { context: format!("creating lease {}", lease_name(uid)), source })
            }
        }
    }
}

impl Drop for ApplyLeases {
    fn drop(&mut self) {
        self.release_all();
    }
}
