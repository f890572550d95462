//! The engine runs an operation: server-side apply of its manifests into the target while
//! impersonating the Apply's service account (on a registered cluster, with its kubeconfig, see
//! `clusters`), then the health of what it applied: kstatus rules (`health`), or the Apply's
//! CEL health checks for the kinds they name (`expressions`), read from shared watches
//! (`watches`) rather than by polling.
//!
//! It reports what it saw as a [`Health`]; it never writes an Operation or an Apply — the
//! lifecycle decides and the reconciler writes.

pub mod clusters;
pub mod expressions;
pub mod health;
pub mod watches;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, Scope, pinned_kind};
use kube::{Api, Client, Config};

use self::clusters::{Clusters, Kinds, Place, Recent};
use self::health::ObjectHealth;
use self::watches::{Known, MANAGED_LABEL, MANAGED_VALUE, WatchKey, Watches};
use crate::crd::{HealthCheck, InventoryEntry, OperationSpec};
use crate::lifecycle::Health;

/// Field manager of everything baton writes: applied objects and status.
pub const FIELD_MANAGER: &str = "baton";

/// Applies manifests and reads their health, as the service account of each Apply.
pub struct Engine {
    /// The operator's own configuration, the base of every impersonating client.
    config: Config,
    /// The operator's own client, for discovery.
    client: Client,
    /// One impersonating client per `namespace/serviceaccount`, dropped when unused (see
    /// [`clusters::CLIENT_IDLE`]): namespaces and accounts come and go while baton runs.
    clients: Mutex<Recent<String, Client>>,
    /// The management cluster's discovery answers: its kinds rarely change while baton runs.
    kinds: Arc<Kinds>,
    /// Registered clusters' clients and outages.
    clusters: Clusters,
    /// The watches health is read from.
    watches: Watches,
}

/// What the engine saw of one run at one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The verdict.
    pub health: Health,
    /// A read failed in a way the next try may not repeat (an API server that did not answer):
    /// look again soon rather than at the next safety re-read, since no watch will say when.
    pub retry_soon: bool,
}

impl Check {
    fn settled(health: Health) -> Self {
        Check { health, retry_soon: false }
    }

    fn retry(health: Health) -> Self {
        Check { health, retry_soon: true }
    }
}

/// What the runs of one Apply wait on, by watch: filled by [`Engine::health`], handed to
/// [`Watches::want`].
pub type Wants = BTreeMap<WatchKey, BTreeSet<String>>;

/// A dispatch that failed part way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchError {
    /// What failed, naming the object, with the API server's message.
    pub message: String,
    /// What was applied before the failure.
    pub applied: Vec<InventoryEntry>,
    /// The API server could not answer (unreachable, overloaded, timing out): worth another
    /// try, not a verdict on the manifests.
    pub transient: bool,
}

/// A failure while applying, and whether another try may succeed.
struct Failure {
    message: String,
    transient: bool,
}

impl From<String> for Failure {
    /// Problems with the manifests themselves never go away by retrying.
    fn from(message: String) -> Self {
        Failure { message, transient: false }
    }
}

/// Transport errors, timeouts, throttling and an unavailable server may pass. The rest are
/// verdicts on the manifest, including most 500s: server-side apply answers 500 for a manifest
/// that does not fit its type ("failed to create typed patch object").
fn transient(error: &kube::Error) -> bool {
    const RETRYABLE: [&str; 4] = ["timeout", "try again", "leader changed", "unavailable"];
    match error {
        kube::Error::Api(status) => match status.code {
            408 | 429 | 502 | 503 | 504 => true,
            500 => {
                let message = status.message.to_lowercase();
                RETRYABLE.iter().any(|hint| message.contains(hint))
            }
            _ => false,
        },
        kube::Error::Discovery(_) => false,
        _ => true,
    }
}

/// Where and as whom an operation runs.
pub struct RunTarget<'a> {
    /// The Apply's namespace (where its service account lives).
    pub apply_namespace: &'a str,
    /// The service account to impersonate.
    pub service_account: &'a str,
    /// The operation.
    pub operation: &'a OperationSpec,
    /// The service account the Apply names, if it names one: impersonated on a registered
    /// cluster too (there the kubeconfig's own identity is used otherwise).
    pub named_service_account: Option<&'a str>,
    /// The Apply's `spec.healthChecks`.
    pub health_checks: &'a [HealthCheck],
}

impl Engine {
    /// An engine on top of the operator's own configuration, reading health from `watches`.
    pub fn new(config: Config, client: Client, watches: Watches) -> Self {
        Engine {
            config,
            client,
            clients: Mutex::new(clusters::client_cache()),
            kinds: Arc::default(),
            clusters: Clusters::default(),
            watches,
        }
    }

    /// The watches health is read from.
    pub fn watches(&self) -> &Watches {
        &self.watches
    }

    /// Where `target` runs: the management cluster as the Apply's service account, or the
    /// registered cluster it names. A dispatch reads the cluster's Secret again (`fresh`), so
    /// changed credentials take effect; a health check uses the client its dispatch built.
    async fn place(&self, target: &RunTarget<'_>, fresh: bool) -> Result<Place, Failure> {
        let local = self.impersonating(target.apply_namespace, target.service_account)?;
        let Some(cluster) = target.operation.target.cluster.as_deref() else {
            return Ok(Place {
                watch_client: local.clone(),
                client: local,
                identity: format!("{}/{}", target.apply_namespace, target.service_account),
                cluster: None,
                kinds: self.kinds.clone(),
            });
        };
        let known =
            self.clusters.known(target.apply_namespace, cluster, target.named_service_account);
        if let Some(place) = known.filter(|_| !fresh) {
            return Ok(place);
        }
        self.clusters
            .remote(&local, target.apply_namespace, cluster, target.named_service_account)
            .await
            .map_err(|unusable| Failure {
                message: unusable.message,
                transient: unusable.transient,
            })
    }

    /// Says, for a failure on `place` that another try may fix, since when a registered cluster
    /// has not answered; clears the outage on success.
    fn note_outage<T>(
        &self,
        namespace: &str,
        place: &Place,
        outcome: Result<T, Failure>,
    ) -> Result<T, Failure> {
        match outcome {
            Err(failure) if failure.transient && place.cluster.is_some() => {
                let since = self.clusters.unreachable(namespace, place, Timestamp::now());
                let cluster = place.cluster.as_deref().unwrap_or_default();
                let prefix = place.prefix();
                let detail = failure.message.strip_prefix(&prefix).unwrap_or(&failure.message);
                Err(Failure {
                    message: format!(
                        "cluster `{cluster}` unreachable since {}: {detail}",
                        since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    ),
                    transient: true,
                })
            }
            outcome => {
                if outcome.is_ok() {
                    self.clusters.reachable(namespace, place);
                }
                outcome
            }
        }
    }

    fn impersonating(&self, namespace: &str, service_account: &str) -> Result<Client, String> {
        let key = format!("{namespace}/{service_account}");
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&key, Instant::now()) {
            return Ok(client.clone());
        }
        let mut config = self.config.clone();
        // The API server adds the service account's groups itself when none are asserted.
        config.auth_info.impersonate =
            Some(format!("system:serviceaccount:{namespace}:{service_account}"));
        let client = Client::try_from(config)
            .map_err(|error| format!("building a client for service account `{key}`: {error}"))?;
        clients.insert(key, client.clone(), Instant::now());
        Ok(client)
    }

    async fn resolve(
        &self,
        place: &Place,
        gvk: &GroupVersionKind,
    ) -> Result<(ApiResource, ApiCapabilities), Failure> {
        if let Some(found) =
            place.kinds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(gvk)
        {
            return Ok(found.clone());
        }
        // The management cluster is discovered as the operator; a registered one as the run.
        let discovering = if place.cluster.is_some() { &place.client } else { &self.client };
        let found = pinned_kind(discovering, gvk).await.map_err(|error| {
            let api_version = if gvk.group.is_empty() {
                gvk.version.clone()
            } else {
                format!("{}/{}", gvk.group, gvk.version)
            };
            let unknown = format!(
                "kind {} of apiVersion {api_version} is not served by the API server",
                gvk.kind
            );
            match error {
                // Discovery answers "not found" (or finds no such kind): the kind is unknown.
                kube::Error::Api(status) if status.code == 404 => Failure::from(unknown),
                kube::Error::Discovery(_) => Failure::from(unknown),
                other => Failure {
                    message: format!("looking up kind {}: {other}", gvk.kind),
                    transient: transient(&other),
                },
            }
        })?;
        place
            .kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(gvk.clone(), found.clone());
        Ok(found)
    }

    /// Server-side applies every manifest, in order, and returns what was applied. A failure
    /// names the object, carries the API server's message, and keeps what was applied before it:
    /// objects already applied stay, and the operation records them.
    pub async fn dispatch(
        &self,
        target: &RunTarget<'_>,
    ) -> Result<Vec<InventoryEntry>, DispatchError> {
        let mut inventory = Vec::with_capacity(target.operation.manifests.len());
        if let Some(error) = &target.operation.values_error {
            // Nothing is applied from manifests that could not be expanded.
            return Err(DispatchError {
                message: error.clone(),
                applied: inventory,
                transient: false,
            });
        }
        // An expression that does not parse fails the run before anything is applied.
        if let Some(message) =
            target.health_checks.iter().find_map(|check| expressions::compile(check).err())
        {
            return Err(DispatchError { message, applied: inventory, transient: false });
        }
        let outcome = match self.place(target, true).await {
            Ok(place) => {
                let applied = self.apply_all(target, &place, &mut inventory).await;
                self.note_outage(target.apply_namespace, &place, applied)
            }
            Err(failure) => Err(failure),
        };
        match outcome {
            Ok(()) => Ok(inventory),
            Err(Failure { message, transient }) => {
                Err(DispatchError { message, applied: inventory, transient })
            }
        }
    }

    async fn apply_all(
        &self,
        target: &RunTarget<'_>,
        place: &Place,
        inventory: &mut Vec<InventoryEntry>,
    ) -> Result<(), Failure> {
        self.apply_each(target, place, inventory).await.map_err(|failure| Failure {
            message: format!("{}{}", place.prefix(), failure.message),
            transient: failure.transient,
        })
    }

    async fn apply_each(
        &self,
        target: &RunTarget<'_>,
        place: &Place,
        inventory: &mut Vec<InventoryEntry>,
    ) -> Result<(), Failure> {
        let client = &place.client;
        let namespace = &target.operation.target.namespace;
        for (position, manifest) in target.operation.manifests.iter().enumerate() {
            let mut object: DynamicObject =
                serde_json::from_value(manifest.clone()).map_err(|error| {
                    format!("manifest #{position} is not a Kubernetes object: {error}")
                })?;
            let types = object
                .types
                .clone()
                .ok_or_else(|| format!("manifest #{position} has no apiVersion or kind"))?;
            let gvk = GroupVersionKind::try_from(&types)
                .map_err(|error| format!("manifest #{position}: {error}"))?;
            let name =
                object.metadata.name.clone().ok_or_else(|| {
                    format!("{} manifest #{position} has no metadata.name", gvk.kind)
                })?;
            let (resource, capabilities) = self.resolve(place, &gvk).await?;
            // The label baton's watches select on (see `watches`).
            object
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(MANAGED_LABEL.to_owned(), MANAGED_VALUE.to_owned());
            let api: Api<DynamicObject> = match capabilities.scope {
                Scope::Namespaced => {
                    if let Some(other) =
                        object.metadata.namespace.as_deref().filter(|ns| ns != namespace)
                    {
                        return Err(format!(
                            "{} `{name}` sets namespace `{other}`, but the operation's target is `{namespace}`",
                            gvk.kind
                        )
                        .into());
                    }
                    object.metadata.namespace = Some(namespace.clone());
                    Api::namespaced_with(client.clone(), namespace, &resource)
                }
                Scope::Cluster => {
                    object.metadata.namespace = None;
                    Api::all_with(client.clone(), &resource)
                }
            };
            let applied = api
                .patch(&name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&object))
                .await
                .map_err(|error| Failure {
                    message: describe_api_error(
                        &gvk.kind,
                        &name,
                        object.metadata.namespace.as_deref(),
                        &error,
                    ),
                    transient: transient(&error),
                })?;
            // What the apply returned is newer than anything a watch said before it: a health
            // check must not read the object's state from before this run (a Deployment
            // rolled out by the previous change would pass for this one).
            let key = WatchKey {
                identity: place.identity.clone(),
                cluster: place.cluster.clone(),
                api_version: types.api_version.clone(),
                kind: gvk.kind.clone(),
                namespace: object.metadata.namespace.clone(),
            };
            if let Some(value) = watches::to_value(&key, applied) {
                self.remember(&key, &name, Some(value));
            }
            inventory.push(InventoryEntry {
                api_version: types.api_version,
                kind: gvk.kind.clone(),
                namespace: object.metadata.namespace.clone(),
                name,
                cluster: place.cluster.clone(),
            });
        }
        Ok(())
    }

    /// Reads every applied object where the run applied it — from the watch of its kind when
    /// that has recent news of it, else with a GET — and folds their health into one verdict:
    /// the first failure, else waiting while any is not current (saying on what), else
    /// healthy. While the run waits, `wants` receives what it waits on, and those watches are
    /// opened: their next change wakes the Apply.
    pub async fn health(
        &self,
        target: &RunTarget<'_>,
        inventory: &[InventoryEntry],
        wants: &mut Wants,
    ) -> Check {
        let place = match self.place(target, false).await {
            Ok(place) => place,
            Err(failure) if failure.transient => {
                return Check::retry(Health::Waiting(failure.message));
            }
            Err(failure) => return Check::settled(Health::DispatchFailed(failure.message)),
        };
        let mut waiting: Vec<String> = Vec::new();
        let mut retry_soon = false;
        let mut watched = Vec::with_capacity(inventory.len());
        for entry in inventory {
            let object_text = describe_entry(entry);
            let on = match &place.cluster {
                Some(cluster) => format!("{object_text} (cluster `{cluster}`)"),
                None => object_text.clone(),
            };
            let gvk = api_version_kind(&entry.api_version, &entry.kind);
            let resource = match self.resolve(&place, &gvk).await {
                Ok((resource, _)) => resource,
                Err(failure) => {
                    retry_soon |= failure.transient;
                    waiting.push(format!("waiting for {on}: {}", failure.message));
                    continue;
                }
            };
            let key = WatchKey {
                identity: place.identity.clone(),
                cluster: place.cluster.clone(),
                api_version: entry.api_version.clone(),
                kind: entry.kind.clone(),
                namespace: entry.namespace.clone(),
            };
            let (mut known, watch_error) = self.known(&key, &entry.name);
            if watch_error.is_some() {
                // While its watch fails (an API server restarting, a registered cluster going
                // away), the object is read directly and looked at again soon: what the watch
                // would have said is not waited for, and an unreachable cluster is said at once.
                known = None;
                retry_soon = true;
            } else if known.is_none() {
                // Stale (its watch may have stalled): one LIST re-reads everything the watch
                // carries, so the safety re-read costs a request per watch, not per object.
                let relisted = self.relist(&place, &key, &resource, &entry.name).await;
                if self.note_outage(target.apply_namespace, &place, relisted).is_ok() {
                    known = self.known(&key, &entry.name).0;
                }
            }
            let object = match known {
                Some(object) => object,
                None => {
                    let read = self.read(&place, entry, &resource).await;
                    match self.note_outage(target.apply_namespace, &place, read) {
                        Ok(object) => {
                            self.remember(&key, &entry.name, object.clone());
                            object
                        }
                        Err(failure) if failure.transient && place.cluster.is_some() => {
                            return Check::retry(Health::Waiting(failure.message));
                        }
                        // A read that fails is a reason to look again, not a verdict: the
                        // timeout decides.
                        Err(failure) => {
                            retry_soon |= failure.transient;
                            let detail = failure.message.strip_prefix(&format!("{object_text}: "));
                            let detail = detail.unwrap_or(&failure.message);
                            waiting.push(format!("waiting for {on}: {detail}"));
                            watched.push((key, entry.name.clone(), resource));
                            continue;
                        }
                    }
                }
            };
            watched.push((key, entry.name.clone(), resource));
            let stalled = watch_error
                .map(|error| {
                    format!(" (its watch fails, so it is read directly until it recovers: {error})")
                })
                .unwrap_or_default();
            let Some(object) = object else {
                // Deleted after it was applied. baton does not apply again within a run (the
                // object's owner may have meant it); the timeout decides, as kstatus waits would.
                waiting.push(format!(
                    "waiting for {on}: not found (deleted after it was applied){stalled}"
                ));
                continue;
            };
            match judge(target.health_checks, entry, &object).await {
                Ok(ObjectHealth::Current) => {}
                Ok(ObjectHealth::InProgress(message)) => {
                    waiting.push(format!("waiting for {on}: {message}{stalled}"));
                }
                Ok(ObjectHealth::Failed(message)) => {
                    let prefix = place.prefix();
                    return Check::settled(Health::Unhealthy(format!(
                        "{prefix}{object_text}: {message}"
                    )));
                }
                Err(message) => {
                    let prefix = place.prefix();
                    return Check::settled(Health::DispatchFailed(format!(
                        "{prefix}{object_text}: {message}"
                    )));
                }
            }
        }
        // Every object of a run is watched, the current ones too: health can go back, and a
        // healthy run may still soak (a run that ends lets its watches close).
        for (key, name, resource) in watched {
            self.watches.open(&key, &place.watch_client, &resource);
            wants.entry(key).or_default().insert(name);
        }
        let Some(first) = waiting.first() else { return Check::settled(Health::Healthy) };
        let message = match waiting.len() - 1 {
            0 => first.clone(),
            more => format!("{first} (and {more} more)"),
        };
        Check { health: Health::Waiting(message), retry_soon }
    }

    /// What the watch `key` knows of `name` recently enough to decide on, and the watch's
    /// error if it is failing. `None` (the first value): read the object.
    fn known(
        &self,
        key: &WatchKey,
        name: &str,
    ) -> (Option<Option<Arc<serde_json::Value>>>, Option<String>) {
        let Some(cache) = self.watches.cache(key) else { return (None, None) };
        let cache = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let reread = self.watches.reread();
        let known = cache.objects.get(name).filter(|known| known.fresh(reread));
        (known.map(|known| known.object.clone()), cache.error.clone())
    }

    /// Re-reads the scope of the open watch `key` (what baton applied there) with one LIST, at
    /// most once per tenth of the re-read interval; nothing when no watch is open (the object
    /// is then read alone).
    async fn relist(
        &self,
        place: &Place,
        key: &WatchKey,
        resource: &ApiResource,
        wanted: &str,
    ) -> Result<(), Failure> {
        let Some(cache) = self.watches.cache(key) else { return Ok(()) };
        let window = self.watches.reread() / 10;
        if cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recently_relisted(window)
        {
            return Ok(());
        }
        let api: Api<DynamicObject> = match &key.namespace {
            Some(namespace) => Api::namespaced_with(place.client.clone(), namespace, resource),
            None => Api::all_with(place.client.clone(), resource),
        };
        let selector = format!("{MANAGED_LABEL}={MANAGED_VALUE}");
        let listed =
            api.list(&ListParams::default().labels(&selector)).await.map_err(|error| Failure {
                message: format!("listing {} objects baton applied: {error}", key.kind),
                transient: transient(&error),
            })?;
        let listed = listed
            .items
            .into_iter()
            .filter_map(|object| {
                let name = object.metadata.name.clone()?;
                Some((name, watches::to_value(key, object)?))
            })
            .collect();
        cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).relisted(listed, wanted);
        Ok(())
    }

    /// Keeps what a GET returned in the watch's cache, if one is open: until the watch brings
    /// news, or the safety re-read comes, it is the latest word on the object.
    fn remember(&self, key: &WatchKey, name: &str, object: Option<Arc<serde_json::Value>>) {
        if let Some(cache) = self.watches.cache(key) {
            let mut cache = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            cache.objects.insert(name.to_owned(), Known { object, at: Instant::now() });
        }
    }

    /// The object of `entry`, or `None` when it does not exist.
    async fn read(
        &self,
        place: &Place,
        entry: &InventoryEntry,
        resource: &ApiResource,
    ) -> Result<Option<Arc<serde_json::Value>>, Failure> {
        let api: Api<DynamicObject> = match &entry.namespace {
            Some(namespace) => Api::namespaced_with(place.client.clone(), namespace, resource),
            None => Api::all_with(place.client.clone(), resource),
        };
        let object = match api.get(&entry.name).await {
            Ok(object) => object,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(error) => {
                return Err(Failure {
                    message: describe_api_error(
                        &entry.kind,
                        &entry.name,
                        entry.namespace.as_deref(),
                        &error,
                    ),
                    transient: transient(&error),
                });
            }
        };
        serde_json::to_value(object)
            .map(|object| Some(Arc::new(object)))
            .map_err(|error| Failure::from(format!("{}: {error}", describe_entry(entry))))
    }
}

/// The health of `object` by the Apply's health check for its kind (evaluated off the async
/// runtime's threads, within its cost budget), else by kstatus's rules. An error is a health
/// check that cannot be evaluated; one over its budget is a failed object (SPEC section 8).
async fn judge(
    checks: &[HealthCheck],
    entry: &InventoryEntry,
    object: &Arc<serde_json::Value>,
) -> Result<ObjectHealth, String> {
    match expressions::find(checks, &entry.api_version, &entry.kind) {
        Some(check) => expressions::evaluate_apart(check.clone(), object.clone()).await,
        None => Ok(health::health(object)),
    }
}

fn api_version_kind(api_version: &str, kind: &str) -> GroupVersionKind {
    match api_version.split_once('/') {
        Some((group, version)) => GroupVersionKind::gvk(group, version, kind),
        None => GroupVersionKind::gvk("", api_version, kind),
    }
}

fn describe_object(kind: &str, name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) => format!("{kind} `{name}` in `{namespace}`"),
        None => format!("{kind} `{name}`"),
    }
}

fn describe_entry(entry: &InventoryEntry) -> String {
    describe_object(&entry.kind, &entry.name, entry.namespace.as_deref())
}

/// `Deployment `web` in `shop`: forbidden: <the API server's message>`.
fn describe_api_error(
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    error: &kube::Error,
) -> String {
    let object = describe_object(kind, name, namespace);
    match error {
        kube::Error::Api(status) => {
            let reason =
                if status.reason.is_empty() { "error".to_owned() } else { words(&status.reason) };
            format!("{object}: {reason}: {}", status.message)
        }
        other => format!("{object}: {other}"),
    }
}

/// `NotFound` → `not found`: the API server's reason, as words.
fn words(reason: &str) -> String {
    let mut text = String::with_capacity(reason.len() + 4);
    for (position, c) in reason.chars().enumerate() {
        if c.is_uppercase() && position > 0 {
            text.push(' ');
        }
        text.extend(c.to_lowercase());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_reasons_read_as_words() {
        assert_eq!(words("NotFound"), "not found");
        assert_eq!(words("Forbidden"), "forbidden");
        assert_eq!(words("AlreadyExists"), "already exists");
    }

    #[test]
    fn api_versions_split_into_group_and_version() {
        assert_eq!(
            api_version_kind("apps/v1", "Deployment"),
            GroupVersionKind::gvk("apps", "v1", "Deployment")
        );
        assert_eq!(
            api_version_kind("v1", "ConfigMap"),
            GroupVersionKind::gvk("", "v1", "ConfigMap")
        );
    }
}
