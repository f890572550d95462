//! The clusters operations run on (SPEC.md section 9): the management cluster, where the
//! operator runs, as the Apply's service account; and registered clusters, whose kubeconfig is
//! a Secret in the Apply's namespace named by `target.cluster`.
//!
//! The Secret is read as the Apply's service account, never with the operator's identity, so a
//! team reaches only the clusters whose credentials it may read. It is read at every dispatch,
//! so rotated credentials take effect at the next one; the client built from it is kept (with
//! its discovery answers) until the kubeconfig changes. Remote clients have short connect and
//! read timeouts: an unreachable cluster never holds a worker for long.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiCapabilities;
use kube::{Api, Client, Config};

/// Keys of a registration Secret that may hold the kubeconfig, in order (Flux's convention).
pub const KUBECONFIG_KEYS: [&str; 2] = ["value", "value.yaml"];
/// How long connecting to a registered cluster may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a registered cluster may take to answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a watch of a registered cluster may stay silent: longer than the API server's own
/// watch timeout (kube's watcher asks for 290 s), so a quiet watch is not cut and re-opened.
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Discovery answers of one cluster: its kinds rarely change while baton runs.
pub type Kinds = Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>;

/// Where one run applies and reads, resolved.
#[derive(Clone)]
pub struct Place {
    /// The client: impersonating the Apply's service account, or a registered cluster's.
    pub client: Client,
    /// The same identity for watches: on a registered cluster without the short read timeout.
    pub watch_client: Client,
    /// Who reads through `client`, as a key: watches are shared by identity, never across.
    pub identity: String,
    /// The registered cluster's name; `None` for the management cluster.
    pub cluster: Option<String>,
    /// The cluster's discovery answers.
    pub kinds: Arc<Kinds>,
}

impl Place {
    /// `cluster `eu`: ` before a message about a registered cluster, nothing otherwise.
    pub fn prefix(&self) -> String {
        self.cluster.as_ref().map(|cluster| format!("cluster `{cluster}`: ")).unwrap_or_default()
    }
}

/// Why no client could be had for a registered cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    /// What is wrong, naming the cluster and the Secret.
    pub message: String,
    /// The API server could not answer the Secret's read: worth another try.
    pub transient: bool,
}

/// A registered cluster's client, kept until its kubeconfig changes.
struct Remote {
    fingerprint: u64,
    client: Client,
    watch_client: Client,
    kinds: Arc<Kinds>,
}

impl Remote {
    fn place(&self, key: &RemoteKey) -> Place {
        let (namespace, cluster, account) = key;
        Place {
            client: self.client.clone(),
            watch_client: self.watch_client.clone(),
            // A rotated kubeconfig is another identity: its watches start afresh.
            identity: format!(
                "{namespace}/{cluster}/{}/{:016x}",
                account.as_deref().unwrap_or("-"),
                self.fingerprint
            ),
            cluster: Some(cluster.clone()),
            kinds: self.kinds.clone(),
        }
    }
}

/// A registered cluster as one Apply namespace's service account reaches it: the namespace,
/// the registration Secret's name, and the service account impersonated there (if any).
type RemoteKey = (String, String, Option<String>);

/// When each registered cluster stopped answering, by `namespace/secret`.
type Outages = Mutex<HashMap<String, Timestamp>>;

/// The clients of every cluster this replica runs operations on.
#[derive(Default)]
pub struct Clusters {
    remotes: Mutex<HashMap<RemoteKey, Remote>>,
    outages: Outages,
}

impl Clusters {
    /// The place of a run on the registered cluster `cluster`: reads its Secret with `reader`
    /// (the Apply's service account on the management cluster) and, when the Apply names a
    /// service account, impersonates it there as `system:serviceaccount:<namespace>:<name>`.
    pub async fn remote(
        &self,
        reader: &Client,
        namespace: &str,
        cluster: &str,
        service_account: Option<&str>,
    ) -> Result<Place, Unusable> {
        let kubeconfig = read_kubeconfig(reader, namespace, cluster).await?;
        let fingerprint = fingerprint(&kubeconfig);
        let key = (namespace.to_owned(), cluster.to_owned(), service_account.map(str::to_owned));
        if let Some(remote) = self.lock().get(&key).filter(|r| r.fingerprint == fingerprint) {
            return Ok(remote.place(&key));
        }
        let config = config_from(&kubeconfig, namespace, cluster, service_account).await?;
        let not_usable = |error: kube::Error| {
            unusable(cluster, namespace, &format!("the kubeconfig is not usable: {error}"))
        };
        let mut watching = config.clone();
        watching.read_timeout = Some(WATCH_READ_TIMEOUT);
        let client = Client::try_from(config).map_err(not_usable)?;
        let watch_client = Client::try_from(watching).map_err(not_usable)?;
        let remote =
            Remote { fingerprint, client, watch_client, kinds: Arc::new(Kinds::default()) };
        let place = remote.place(&key);
        self.lock().insert(key, remote);
        Ok(place)
    }

    /// The place last built for the registered cluster `cluster`, without reading its Secret.
    pub fn known(
        &self,
        namespace: &str,
        cluster: &str,
        service_account: Option<&str>,
    ) -> Option<Place> {
        let key = (namespace.to_owned(), cluster.to_owned(), service_account.map(str::to_owned));
        self.lock().get(&key).map(|remote| remote.place(&key))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RemoteKey, Remote>> {
        self.remotes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that `place` did not answer; returns since when it has not.
    pub fn unreachable(&self, namespace: &str, place: &Place, now: Timestamp) -> Timestamp {
        let key = outage_key(namespace, place);
        *self
            .outages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_insert(now)
    }

    /// Notes that `place` answered.
    pub fn reachable(&self, namespace: &str, place: &Place) {
        let key = outage_key(namespace, place);
        self.outages.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
    }
}

fn outage_key(namespace: &str, place: &Place) -> String {
    format!("{namespace}/{}", place.cluster.as_deref().unwrap_or_default())
}

fn unusable(cluster: &str, namespace: &str, reason: &str) -> Unusable {
    Unusable {
        message: format!("cluster `{cluster}`: Secret `{cluster}` in `{namespace}`: {reason}"),
        transient: false,
    }
}

/// The kubeconfig text of the registration Secret `cluster`, read as the Apply's account.
async fn read_kubeconfig(
    reader: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<String, Unusable> {
    let secrets: Api<Secret> = Api::namespaced(reader.clone(), namespace);
    let secret = match secrets.get(cluster).await {
        Ok(secret) => secret,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            return Err(unusable(
                cluster,
                namespace,
                "not found; register the cluster with `kubectl create secret generic NAME --from-file=value=KUBECONFIG`",
            ));
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Err(unusable(cluster, namespace, &format!("forbidden: {}", status.message)));
        }
        Err(error) => {
            return Err(Unusable {
                message: format!(
                    "cluster `{cluster}`: reading Secret `{cluster}` in `{namespace}`: {error}"
                ),
                transient: true,
            });
        }
    };
    let data = secret.data.unwrap_or_default();
    let bytes = KUBECONFIG_KEYS.iter().find_map(|key| data.get(*key)).ok_or_else(|| {
        unusable(cluster, namespace, "has no kubeconfig under `value` or `value.yaml`")
    })?;
    String::from_utf8(bytes.0.clone()).map_err(|_| {
        unusable(cluster, namespace, "the kubeconfig does not parse: it is not UTF-8 text")
    })
}

async fn config_from(
    text: &str,
    namespace: &str,
    cluster: &str,
    service_account: Option<&str>,
) -> Result<Config, Unusable> {
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|error| {
        unusable(cluster, namespace, &format!("the kubeconfig does not parse: {error}"))
    })?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|error| {
            unusable(cluster, namespace, &format!("the kubeconfig does not parse: {error}"))
        })?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    if let Some(account) = service_account {
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{account}"));
    }
    Ok(config)
}

/// A fingerprint of a kubeconfig: a changed Secret builds a new client.
fn fingerprint(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kubeconfig_that_does_not_parse_names_the_cluster_and_the_secret() {
        let unusable = config_from("clusters: [", "shop", "eu", None).await.err();
        let message = unusable.map(|u| u.message).unwrap_or_default();
        assert!(
            message
                .starts_with("cluster `eu`: Secret `eu` in `shop`: the kubeconfig does not parse"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_named_service_account_is_impersonated_on_the_registered_cluster() {
        let kubeconfig = r#"
apiVersion: v1
kind: Config
clusters: [{name: eu, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: baton, user: {token: t0k3n}}]
contexts: [{name: eu, context: {cluster: eu, user: baton}}]
current-context: eu
"#;
        let config = config_from(kubeconfig, "shop", "eu", Some("deployer")).await;
        let config = config.map_err(|u| u.message).expect("a usable kubeconfig");
        assert_eq!(
            config.auth_info.impersonate.as_deref(),
            Some("system:serviceaccount:shop:deployer")
        );
        assert_eq!(
            config.connect_timeout,
            Some(CONNECT_TIMEOUT),
            "an unreachable cluster fails fast"
        );
        let plain = config_from(kubeconfig, "shop", "eu", None).await.map_err(|u| u.message);
        assert_eq!(plain.expect("usable").auth_info.impersonate, None);
    }
}
