//! Health from watches (SPEC.md section 3): the objects running operations wait on are watched,
//! not polled. One watch per cluster, identity (the Apply's impersonated service account, so
//! reads stay within what that account may read), kind and namespace, narrowed to what baton
//! applied by the label [`MANAGED_LABEL`], shared by every run that waits on that kind there.
//! A watch starts when a run begins to wait on its kind and stops once no run does.
//!
//! What a watch delivers goes into its cache, stamped with when it was learned; a change of an
//! object some Apply waits on wakes that Apply's reconcile at once. A cached object not heard of
//! for the safety re-read interval (`--health-reread-seconds`, a minute by default) is read
//! again with a GET by the engine, so a watch that silently stalls delays a verdict by at most
//! that long.
//!
//! `Interest` (who waits on what, and which watches are idle) is pure and tested without a
//! cluster; `Watches` runs the watch tasks around it. Nothing here decides health.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::crd::Apply;

/// The label baton sets on everything it applies, and the selector of its watches: one value
/// for every Apply, so Applies that target the same namespace share one watch, and a watch never
/// carries the namespace's other objects.
pub const MANAGED_LABEL: &str = "baton.dev/managed";
/// The value of [`MANAGED_LABEL`].
pub const MANAGED_VALUE: &str = "true";
/// How long a watch no run waits on is kept: a run that started it registers its interest at
/// the end of its pass, and a watch is not stopped under it meanwhile.
const IDLE_GRACE: Duration = Duration::from_secs(10);

/// One shared watch: where, as whom, what.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchKey {
    /// The reading identity (`Place::identity`), which also names the cluster.
    pub identity: String,
    /// The registered cluster, `None` for the management cluster (for messages).
    pub cluster: Option<String>,
    /// The watched kind's apiVersion.
    pub api_version: String,
    /// The watched kind.
    pub kind: String,
    /// The namespace watched; `None` for a cluster-scoped kind.
    pub namespace: Option<String>,
}

/// The objects of `resource` in `namespace`, or cluster-wide for `None`, read with `client`.
pub fn objects_in(
    client: &Client,
    namespace: Option<&str>,
    resource: &ApiResource,
) -> Api<DynamicObject> {
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// What Applies wait on: per Apply (by uid), the watches and object names of its running
/// operations. Pure bookkeeping.
#[derive(Debug, Default)]
pub struct Interest {
    by_apply: HashMap<String, BTreeMap<WatchKey, BTreeSet<String>>>,
}

impl Interest {
    /// Replaces what the Apply `uid` waits on (empty: nothing).
    pub fn set(&mut self, uid: &str, wants: BTreeMap<WatchKey, BTreeSet<String>>) {
        if wants.is_empty() {
            self.by_apply.remove(uid);
        } else {
            self.by_apply.insert(uid.to_owned(), wants);
        }
    }

    /// The Applies that wait on object `name` of the watch `key`.
    pub fn waiting_on(&self, key: &WatchKey, name: &str) -> Vec<String> {
        self.by_apply
            .iter()
            .filter(|(_, wants)| wants.get(key).is_some_and(|names| names.contains(name)))
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// The Applies that wait on anything of the watch `key`.
    pub fn waiting_on_any(&self, key: &WatchKey) -> Vec<String> {
        self.by_apply
            .iter()
            .filter(|(_, wants)| wants.contains_key(key))
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// Of `open` watches (with their age), those no Apply waits on and older than `grace`.
    pub fn idle<'a>(
        &self,
        open: impl IntoIterator<Item = (&'a WatchKey, Duration)>,
        grace: Duration,
    ) -> Vec<WatchKey> {
        let wanted: BTreeSet<&WatchKey> = self.by_apply.values().flat_map(BTreeMap::keys).collect();
        open.into_iter()
            .filter(|(key, age)| !wanted.contains(key) && *age >= grace)
            .map(|(key, _)| key.clone())
            .collect()
    }
}

/// What is known of one object, and since when.
#[derive(Clone, Debug)]
pub struct Known {
    /// The object as last listed, watched or read; `None`: it does not exist.
    pub object: Option<Arc<Value>>,
    /// When that was learned.
    pub at: Instant,
}

impl Known {
    /// Whether it is recent enough to decide on without reading the object again, when a
    /// cached object is trusted for `reread` without news (its watch may have stalled silently).
    pub fn fresh(&self, reread: Duration) -> bool {
        // A little early, so the re-read falls in the pass that the safety requeue brings
        // rather than the one after it.
        self.at.elapsed() + reread / 10 < reread
    }
}

/// The cache of one watch.
#[derive(Debug, Default)]
pub struct Cache {
    /// The initial list completed: an object missing here does not exist.
    pub ready: bool,
    /// The watch's last error, until it lists again.
    pub error: Option<String>,
    /// By object name.
    pub objects: HashMap<String, Known>,
    /// When the safety re-read last listed everything this watch carries.
    pub relisted: Option<Instant>,
}

impl Cache {
    /// Takes in what one LIST of the watch's scope returned: every listed object is known now,
    /// and every other one it knew of (and `wanted`) is known not to exist.
    pub fn relisted(&mut self, listed: Vec<(String, Arc<Value>)>, wanted: &str) {
        let now = Instant::now();
        for known in self.objects.values_mut() {
            *known = Known { object: None, at: now };
        }
        self.objects.insert(wanted.to_owned(), Known { object: None, at: now });
        for (name, object) in listed {
            self.objects.insert(name, Known { object: Some(object), at: now });
        }
        self.relisted = Some(now);
    }

    /// Takes in what a watch event says of `name`, unless the object known already is of a
    /// later generation: an event that lags behind baton's own apply (whose answer is in the
    /// cache) must not bring back the state of before it.
    pub fn learn(&mut self, name: &str, known: Known) {
        let generation = |known: &Known| {
            known.object.as_ref().and_then(|o| o["metadata"]["generation"].as_i64()).unwrap_or(0)
        };
        let newer =
            self.objects.get(name).is_some_and(|cached| generation(cached) > generation(&known));
        if !newer {
            self.objects.insert(name.to_owned(), known);
        }
    }

    /// Whether a re-read of this watch's scope was made within `window`: another check that
    /// finds a stale object then reads its cache, it does not list again.
    pub fn recently_relisted(&self, window: Duration) -> bool {
        self.relisted.is_some_and(|at| at.elapsed() < window)
    }
}

struct Open {
    cache: Arc<Mutex<Cache>>,
    started: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct State {
    interest: Interest,
    applies: HashMap<String, ObjectRef<Apply>>,
    open: HashMap<WatchKey, Open>,
}

struct Shared {
    state: Mutex<State>,
    wake: Option<UnboundedSender<ObjectRef<Apply>>>,
    gauge: Gauge,
    reread: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self, uids: Vec<String>) {
        let Some(wake) = &self.wake else { return };
        let state = self.lock();
        for uid in uids {
            if let Some(apply) = state.applies.get(&uid) {
                // The controller is gone only while the process stops.
                let _ = wake.send(apply.clone());
            }
        }
    }
}

/// The watches of this replica.
#[derive(Clone)]
pub struct Watches(Arc<Shared>);

impl Watches {
    /// Watches that wake Applies through `wake` and count themselves in `gauge`; what they
    /// cache is trusted for `reread` without news.
    pub fn new(
        wake: Option<UnboundedSender<ObjectRef<Apply>>>,
        gauge: Gauge,
        reread: Duration,
    ) -> Self {
        Watches(Arc::new(Shared { state: Mutex::default(), wake, gauge, reread }))
    }

    /// How long what a watch cached is trusted without news.
    pub fn reread(&self) -> Duration {
        self.0.reread
    }

    /// The cache of the watch `key`, if it is open.
    pub fn cache(&self, key: &WatchKey) -> Option<Arc<Mutex<Cache>>> {
        self.0.lock().open.get(key).map(|open| open.cache.clone())
    }

    /// Opens the watch `key` (reading with `client`) unless it is open.
    pub fn open(&self, key: &WatchKey, client: &Client, resource: &ApiResource) {
        let mut state = self.0.lock();
        if state.open.contains_key(key) {
            return;
        }
        let cache = Arc::new(Mutex::new(Cache::default()));
        let api = objects_in(client, key.namespace.as_deref(), resource);
        let task = tokio::spawn(run(api, key.clone(), cache.clone(), Arc::downgrade(&self.0)));
        state.open.insert(key.clone(), Open { cache, started: Instant::now(), task });
        self.0.gauge.set(i64::try_from(state.open.len()).unwrap_or(i64::MAX));
        tracing::debug!(kind = %key.kind, namespace = ?key.namespace, cluster = ?key.cluster, "health watch opened");
    }

    /// Replaces what `apply` waits on, and closes the watches nobody waits on any more.
    pub fn want(
        &self,
        apply: ObjectRef<Apply>,
        uid: &str,
        wants: BTreeMap<WatchKey, BTreeSet<String>>,
    ) {
        let mut state = self.0.lock();
        if wants.is_empty() {
            state.applies.remove(uid);
        } else {
            state.applies.insert(uid.to_owned(), apply);
        }
        state.interest.set(uid, wants);
        self.close_idle(&mut state);
    }

    /// The Apply `uid` waits on nothing any more (settled, deleted, stopping, or driven by
    /// another replica).
    pub fn forget(&self, uid: &str) {
        let mut state = self.0.lock();
        state.applies.remove(uid);
        state.interest.set(uid, BTreeMap::new());
        self.close_idle(&mut state);
    }

    /// Closes the watches nobody waits on, once their grace passed (called now and then, for
    /// those whose grace had not passed when their last waiter left).
    pub fn sweep(&self) {
        let mut state = self.0.lock();
        self.close_idle(&mut state);
    }

    fn close_idle(&self, state: &mut State) {
        let open = state.open.iter().map(|(key, open)| (key, open.started.elapsed()));
        for key in state.interest.idle(open, IDLE_GRACE) {
            state.open.remove(&key);
            tracing::debug!(kind = %key.kind, namespace = ?key.namespace, cluster = ?key.cluster, "health watch closed");
        }
        self.0.gauge.set(i64::try_from(state.open.len()).unwrap_or(i64::MAX));
    }

    /// How many watches are open.
    pub fn count(&self) -> usize {
        self.0.lock().open.len()
    }
}

fn lock(cache: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The object as the health rules read it, without what they never read. Items of a list come
/// without `apiVersion` and `kind`, which the rules go by: they are the watch's.
pub fn to_value(key: &WatchKey, mut object: DynamicObject) -> Option<Arc<Value>> {
    object.metadata.managed_fields = None;
    object.types =
        Some(kube::api::TypeMeta { api_version: key.api_version.clone(), kind: key.kind.clone() });
    serde_json::to_value(object).ok().map(Arc::new)
}

/// One watch task: fills `cache` and wakes the Applies waiting on what changed. Ends when its
/// `Open` is dropped (aborted) or the registry is gone.
async fn run(
    api: Api<DynamicObject>,
    key: WatchKey,
    cache: Arc<Mutex<Cache>>,
    shared: std::sync::Weak<Shared>,
) {
    let config = watcher::Config::default().labels(&format!("{MANAGED_LABEL}={MANAGED_VALUE}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listing: HashMap<String, Known> = HashMap::new();
    while let Some(event) = events.next().await {
        let Some(shared) = shared.upgrade() else { return };
        let woken = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(object)) => {
                if let Some(name) = object.metadata.name.clone() {
                    listing
                        .insert(name, Known { object: to_value(&key, object), at: Instant::now() });
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let mut cache = lock(&cache);
                let now = Instant::now();
                // What was known and is no longer listed was deleted meanwhile.
                for (name, known) in &cache.objects {
                    if known.object.is_some() && !listing.contains_key(name) {
                        listing.insert(name.clone(), Known { object: None, at: now });
                    }
                }
                cache.objects = std::mem::take(&mut listing);
                cache.ready = true;
                cache.error = None;
                drop(cache);
                shared.lock().interest.waiting_on_any(&key)
            }
            Ok(watcher::Event::Apply(object)) => {
                let Some(name) = object.metadata.name.clone() else { continue };
                let known = Known { object: to_value(&key, object), at: Instant::now() };
                lock(&cache).learn(&name, known);
                shared.lock().interest.waiting_on(&key, &name)
            }
            Ok(watcher::Event::Delete(object)) => {
                let Some(name) = object.metadata.name.clone() else { continue };
                lock(&cache)
                    .objects
                    .insert(name.clone(), Known { object: None, at: Instant::now() });
                shared.lock().interest.waiting_on(&key, &name)
            }
            Err(error) => {
                let message = error.to_string();
                let mut cache = lock(&cache);
                let first = cache.error.as_deref() != Some(message.as_str());
                cache.error = Some(message);
                drop(cache);
                // Say so once, not at every retry of the backoff.
                if !first {
                    continue;
                }
                tracing::debug!(kind = %key.kind, namespace = ?key.namespace, cluster = ?key.cluster, %error, "health watch failed; retrying");
                shared.lock().interest.waiting_on_any(&key)
            }
        };
        shared.wake(woken);
    }
}

#[cfg(test)]
mod tests;
