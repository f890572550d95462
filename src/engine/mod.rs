//! The engine runs an operation: server-side apply of its manifests into the target
//! (`dispatch`) while impersonating the Apply's service account (on a registered cluster, with
//! its kubeconfig, see `clusters`), then the health of what it applied (`reading`): kstatus
//! rules (`health`), or the Apply's CEL health checks for the kinds they name (`expressions`),
//! read from shared watches (`watches`) rather than by polling. This module owns where a run
//! runs (`Engine::place`), the impersonated clients and discovery.
//!
//! It reports what it saw as a [`Health`]; it never writes an Operation or an Apply — the
//! lifecycle decides and the reconciler writes.

pub mod clusters;
mod dispatch;
pub mod expressions;
pub mod health;
mod reading;
pub mod watches;

pub use dispatch::DispatchError;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, Scope, pinned_kind};
use kube::{Client, Config};

use self::clusters::{Clusters, Kinds, Place, Recent};
use self::health::ObjectHealth;
use self::watches::{Known, MANAGED_LABEL, MANAGED_VALUE, WatchKey, Watches, objects_in};
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

/// A failure while placing, applying or reading, and whether another try may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What is wrong, naming the object (or the cluster and its Secret).
    pub message: String,
    /// The API server could not answer: worth another try, not a verdict.
    pub transient: bool,
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
