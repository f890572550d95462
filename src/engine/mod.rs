//! The engine runs an operation: server-side apply of its manifests into the target while
//! impersonating the Apply's service account, then kstatus health of what it applied.
//!
//! It reports what it saw as a [`Health`]; it never writes an Operation or an Apply — the
//! lifecycle decides and the reconciler writes.

pub mod health;

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, Scope, pinned_kind};
use kube::{Api, Client, Config};

use self::health::ObjectHealth;
use crate::crd::{InventoryEntry, OperationSpec};
use crate::lifecycle::Health;

/// Field manager of everything baton writes: applied objects and status.
pub const FIELD_MANAGER: &str = "baton";

/// Applies manifests and reads their health, as the service account of each Apply.
pub struct Engine {
    /// The operator's own configuration, the base of every impersonating client.
    config: Config,
    /// The operator's own client, for discovery.
    client: Client,
    /// One impersonating client per `namespace/serviceaccount`.
    clients: Mutex<HashMap<String, Client>>,
    /// Discovery answers per kind: the API server's kinds rarely change while baton runs.
    kinds: Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>,
}

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
}

impl Engine {
    /// An engine on top of the operator's own configuration.
    pub fn new(config: Config, client: Client) -> Self {
        Engine {
            config,
            client,
            clients: Mutex::new(HashMap::new()),
            kinds: Mutex::new(HashMap::new()),
        }
    }

    fn impersonating(&self, namespace: &str, service_account: &str) -> Result<Client, String> {
        let key = format!("{namespace}/{service_account}");
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut config = self.config.clone();
        // The API server adds the service account's groups itself when none are asserted.
        config.auth_info.impersonate =
            Some(format!("system:serviceaccount:{namespace}:{service_account}"));
        let client = Client::try_from(config)
            .map_err(|error| format!("building a client for service account `{key}`: {error}"))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    async fn resolve(
        &self,
        gvk: &GroupVersionKind,
    ) -> Result<(ApiResource, ApiCapabilities), Failure> {
        if let Some(found) =
            self.kinds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(gvk)
        {
            return Ok(found.clone());
        }
        let found = pinned_kind(&self.client, gvk).await.map_err(|error| {
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
        self.kinds
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
        match self.apply_all(target, &mut inventory).await {
            Ok(()) => Ok(inventory),
            Err(Failure { message, transient }) => {
                Err(DispatchError { message, applied: inventory, transient })
            }
        }
    }

    async fn apply_all(
        &self,
        target: &RunTarget<'_>,
        inventory: &mut Vec<InventoryEntry>,
    ) -> Result<(), Failure> {
        let client = self.impersonating(target.apply_namespace, target.service_account)?;
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
            let (resource, capabilities) = self.resolve(&gvk).await?;
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
            api.patch(&name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&object))
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
            inventory.push(InventoryEntry {
                api_version: types.api_version,
                kind: gvk.kind.clone(),
                namespace: object.metadata.namespace.clone(),
                name,
            });
        }
        Ok(())
    }

    /// Reads every applied object and folds their kstatus health into one verdict: the first
    /// failure, else progressing while any is not current, else healthy.
    pub async fn health(
        &self,
        apply_namespace: &str,
        service_account: &str,
        inventory: &[InventoryEntry],
    ) -> Health {
        let client = match self.impersonating(apply_namespace, service_account) {
            Ok(client) => client,
            Err(message) => return Health::DispatchFailed(message),
        };
        let mut progressing = false;
        for entry in inventory {
            // A read that fails is a reason to look again, not a verdict: the timeout decides.
            let Ok(object) = self.read(&client, entry).await else {
                progressing = true;
                continue;
            };
            match health::health(&object) {
                ObjectHealth::Current => {}
                ObjectHealth::InProgress(_) => progressing = true,
                ObjectHealth::Failed(message) => {
                    return Health::Unhealthy(format!("{}: {message}", describe_entry(entry)));
                }
            }
        }
        if progressing { Health::Progressing } else { Health::Healthy }
    }

    async fn read(
        &self,
        client: &Client,
        entry: &InventoryEntry,
    ) -> Result<serde_json::Value, String> {
        let gvk = api_version_kind(&entry.api_version, &entry.kind);
        let (resource, _) = self.resolve(&gvk).await.map_err(|failure| failure.message)?;
        let api: Api<DynamicObject> = match &entry.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let object = api.get(&entry.name).await.map_err(|error| {
            describe_api_error(&entry.kind, &entry.name, entry.namespace.as_deref(), &error)
        })?;
        serde_json::to_value(object).map_err(|error| format!("{}: {error}", describe_entry(entry)))
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
