//! The operator process: one kube-runtime `Controller` for `Apply` that owns `Operation` (so a
//! child's change re-queues its parent) and is woken when an apply lease changes hands.
//!
//! Reconcilers read, decide with `lifecycle`, and write. What a replica keeps in memory is only
//! ever a shortcut the cluster can rebuild: the Operation watch cache and its own recent writes
//! (`children`), the runs it dispatched and when it last wrote each status (`memory`), and the
//! leases it competes for (`crate::lease`).

mod apply;
mod children;
mod keys;
mod memory;
pub mod pacing;

pub use memory::{Dispatch, Misses, Run, Runs, StatusWrites, run_of};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio_stream::wrappers::UnboundedReceiverStream;

use self::children::Children;
use crate::crd::{Apply, Operation};
use crate::engine::Engine;
use crate::engine::watches::Watches;
use crate::lease::{ApplyLeases, LeaseTiming};
use crate::metrics::Metrics;
use crate::{Error, Result, admin};

/// How often lease managers of Applies that disappeared are stopped.
const LEASE_SWEEP: Duration = Duration::from_secs(30);
/// How often health watches nobody waits on are closed.
const WATCH_SWEEP: Duration = Duration::from_secs(5);

/// How `baton run` is configured.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// This replica's identity: pod name plus a random suffix.
    pub identity: String,
    /// Service account impersonated for Applies that name none.
    pub default_service_account: String,
    /// How often running operations are looked at without news from their watches (the
    /// safety re-read of what they wait on).
    pub health_reread_interval: Duration,
    /// Apply lease duration and renew grace.
    pub lease: LeaseTiming,
    /// How long an idempotency key whose holder stopped renewing stays taken.
    pub idempotency_ttl: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_address: SocketAddr,
    /// How many Applies are reconciled at once.
    pub concurrency: u16,
}

/// What every reconcile shares.
pub struct Context {
    /// The operator's own client.
    pub client: Client,
    /// Records Events on Applies.
    pub recorder: Recorder,
    /// The apply leases this replica competes for.
    pub leases: ApplyLeases,
    /// Applies manifests and reads health.
    pub engine: Engine,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The configuration.
    pub settings: Settings,
    /// Runs this replica dispatched. After a restart it is empty, and the new holder re-applies
    /// (server-side apply is idempotent).
    pub runs: Runs,
    /// When this replica last wrote each Apply's status, to pace progress-only updates.
    pub status_writes: StatusWrites,
    /// How many passes of each Apply in a row did not go through, to back off.
    pub misses: Misses,
    /// The Operations of each Apply, from the watch cache and this replica's own writes.
    pub children: Children,
}

/// A random suffix, so two processes with the same pod name never share an identity.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() & 0xffff_ffff)
}

/// The identity of this replica: `$POD_NAME` (or the host name) plus a random suffix.
pub fn replica_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname").ok().map(|name| name.trim().to_owned())
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "baton".to_owned());
    format!("{base}-{}", random_suffix())
}

/// Runs the operator until SIGINT or SIGTERM.
pub async fn run(settings: Settings) -> Result<()> {
    let config = kube::Config::infer().await.map_err(|error| Error::Config(error.to_string()))?;
    let client = Client::try_from(config.clone()).map_err(|source| Error::Kube {
        step: crate::Step::Client,
        context: "building the client".into(),
        source,
    })?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    serve_admin(&settings, &metrics, &ready);

    let (applies, operations) = watched_apis(&client, settings.namespace.as_deref());
    // The Operation watch both wakes their Apply and fills the cache reconciles read from
    // (lightened: see `children`).
    let (operation_store, operation_cache) = reflector::store();
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let context =
        Arc::new(context(config, client, &settings, metrics, wake, Children::new(operation_store)));
    let indexing = context.clone();
    let operation_events = watcher(operations, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(children::lighten)
        .inspect_ok(move |event| indexing.children.follow(event))
        .reflect(operation_cache)
        .touched_objects();
    // An Apply that is gone needs no reconcile (and gets none: a deleted object is not passed
    // on), but its lease manager must stop at once, not at the next sweep.
    let (apply_store, apply_cache) = reflector::store();
    let gone = context.clone();
    let apply_events = watcher(applies, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(apply::keep_approval_fields)
        .reflect(apply_cache)
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(apply) = event
                && let Some(uid) = &apply.metadata.uid
            {
                apply::forget(&gone, uid);
            }
        })
        .applied_objects();
    let controller = Controller::for_stream(apply_events, apply_store)
        .owns_stream(operation_events)
        .reconcile_on(UnboundedReceiverStream::new(woken))
        .with_config(ControllerConfig::default().concurrency(settings.concurrency));
    sweep_leases(controller.store(), context.clone());
    sweep_watches(context.clone());
    report_ready(controller.store(), ready);
    tracing::info!(identity = %settings.identity, namespace = ?settings.namespace, "baton operator starting");
    let stop = stop_signal().boxed().shared();
    let passes = controller
        .graceful_shutdown_on(stop.clone())
        .run(apply::reconcile, error_policy, context.clone())
        .for_each(|outcome| {
            log_controller_outcome(outcome);
            futures::future::ready(())
        });
    tokio::pin!(passes);
    let stopping = tokio::select! {
        () = &mut passes => None,
        () = stop => Some(tokio::time::Instant::now()),
    };
    match stopping {
        Some(since) => shut_down(passes, since, settings.lease.grace, &context).await,
        None => context.leases.release_all().await,
    }
    tracing::info!("baton operator stopped");
    Ok(())
}

/// Ends within the lease grace after a signal at `since`: the passes in flight get half of it
/// to finish (no new one starts), and are dropped at their next await after that; releasing
/// the leases gets the rest. Released, not left to lapse, so a successor need not wait for the
/// expiry.
async fn shut_down(
    passes: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    since: tokio::time::Instant,
    grace: Duration,
    context: &Context,
) {
    if tokio::time::timeout(grace / 2, passes).await.is_err() {
        tracing::warn!(grace = ?grace / 2, "passes still running at shutdown; dropping them");
    }
    let left = grace.saturating_sub(since.elapsed());
    if tokio::time::timeout(left, context.leases.release_all()).await.is_err() {
        tracing::warn!("leases not all released within the grace; they will lapse");
    }
}

/// Resolves at the first SIGINT or SIGTERM.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                futures::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("stopping");
}

/// The Applies and Operations the operator watches: of one namespace, or all.
fn watched_apis(client: &Client, namespace: Option<&str>) -> (Api<Apply>, Api<Operation>) {
    match namespace {
        Some(namespace) => {
            (Api::namespaced(client.clone(), namespace), Api::namespaced(client.clone(), namespace))
        }
        None => (Api::all(client.clone()), Api::all(client.clone())),
    }
}

/// What every reconcile shares, built once.
fn context(
    config: kube::Config,
    client: Client,
    settings: &Settings,
    metrics: Arc<Metrics>,
    wake: tokio::sync::mpsc::UnboundedSender<kube::runtime::reflector::ObjectRef<Apply>>,
    children: Children,
) -> Context {
    let reporter =
        Reporter { controller: "baton".into(), instance: Some(settings.identity.clone()) };
    let watches = Watches::new(
        Some(wake.clone()),
        metrics.health_watches.clone(),
        settings.health_reread_interval,
    );
    Context {
        recorder: Recorder::new(client.clone(), reporter),
        leases: ApplyLeases::new(
            client.clone(),
            settings.identity.clone(),
            settings.lease,
            wake,
            metrics.clone(),
        ),
        engine: Engine::new(config, client.clone(), watches),
        metrics,
        runs: Runs::default(),
        status_writes: StatusWrites::default(),
        misses: Misses::default(),
        children,
        settings: settings.clone(),
        client,
    }
}

/// Reconcile failures are logged by `error_policy`; the controller's own failures here.
fn log_controller_outcome<T, E>(
    outcome: std::result::Result<T, kube::runtime::controller::Error<E, watcher::Error>>,
) where
    E: std::error::Error + 'static,
{
    use kube::runtime::controller::Error as ControllerError;
    match outcome {
        // A retry scheduled for an Apply that was deleted meanwhile: nothing to do.
        Err(ControllerError::ObjectNotFound(object)) => {
            tracing::debug!(%object, "gone before its retry");
        }
        Err(ControllerError::ReconcilerFailed(..)) | Ok(_) => {}
        Err(error) => tracing::warn!(%error, "controller"),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` in the background.
fn serve_admin(settings: &Settings, metrics: &Arc<Metrics>, ready: &Arc<AtomicBool>) {
    let state = admin::AdminState { metrics: metrics.clone(), ready: ready.clone() };
    let address = settings.admin_address;
    tokio::spawn(async move {
        if let Err(error) = admin::serve(address, state).await {
            tracing::error!(%error, "admin server stopped");
        }
    });
}

/// Stops, now and then, the lease managers of Applies that disappeared.
fn sweep_leases(store: Store<Apply>, context: Arc<Context>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(LEASE_SWEEP);
        // The first tick is immediate, before the store is filled: skip it.
        every.tick().await;
        loop {
            every.tick().await;
            let live: std::collections::HashSet<String> =
                store.state().iter().filter_map(|apply| apply.metadata.uid.clone()).collect();
            context.leases.retain(|uid| live.contains(uid));
            context.status_writes.retain(|uid| live.contains(uid));
            context.misses.retain(|uid| live.contains(uid));
            context.children.prune();
        }
    });
}

/// Closes, now and then, health watches whose last waiter left while they were young.
fn sweep_watches(context: Arc<Context>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(WATCH_SWEEP);
        loop {
            every.tick().await;
            context.engine.watches().sweep();
        }
    });
}

/// Says ready once the Apply cache has listed everything.
fn report_ready(store: Store<Apply>, ready: Arc<AtomicBool>) {
    tokio::spawn(async move {
        // Polled again and again: the store wakes only its most recent waiter, and the
        // controller's own runner waits on it too.
        loop {
            match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                Err(_) => continue,
            }
        }
        ready.store(true, Ordering::Relaxed);
        tracing::info!("caches synced; ready");
    });
}

pub(crate) fn error_policy(apply: Arc<Apply>, error: &Error, context: Arc<Context>) -> Action {
    context.metrics.failed("apply", error);
    if error.is_namespace_terminating() {
        // The Apply is going with its namespace: the change that marks it deleted wakes it, and
        // that pass creates nothing.
        tracing::debug!(apply = %kube::ResourceExt::name_any(apply.as_ref()), %error, "namespace terminating");
        return Action::await_change();
    }
    let uid = apply.metadata.uid.as_deref().unwrap_or_default();
    let action = pacing::after_error(&context.misses, uid, error);
    tracing::warn!(apply = %kube::ResourceExt::name_any(apply.as_ref()), %error, ?action, "reconcile failed; retrying");
    action
}
