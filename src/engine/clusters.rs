//! The clusters operations run on (SPEC.md section 9): the management cluster, where the
//! operator runs, as the Apply's service account; and registered clusters, whose kubeconfig is
//! a Secret in the Apply's namespace named by `target.cluster`.
//!
//! The Secret is read as the Apply's service account, never with the operator's identity, so a
//! team reaches only the clusters whose credentials it may read. It is read at every dispatch,
//! so rotated credentials take effect at the next one; the client built from it is kept (with
//! its discovery answers) until the kubeconfig changes. Remote clients have short connect and
//! read timeouts: an unreachable cluster never holds a worker for long.
//!
//! A registration is a tenant's input: a kubeconfig is used only with credentials carried
//! inline. Every field that would run a program (`exec`, `auth-provider`), read a file of the
//! operator's (`tokenFile`, `client-certificate`, `client-key`, `certificate-authority`), assume
//! another identity (`as`, `as-uid`, `as-groups`, `as-user-extra`), send basic credentials or
//! route traffic through a proxy is refused here, before any client exists; the client is then
//! built from a copy holding only the allowed fields, so nothing else can reach kube's loader.
//!
//! Clients are kept in [`Recent`] caches: one not used for [`CLIENT_IDLE`] is dropped, and at
//! most [`CLIENT_CAPACITY`] impersonating clients and [`REMOTE_CAPACITY`] registered clusters'
//! are kept. Nothing running depends on an entry staying: a watch holds its own clone of its
//! client, a run its own [`Place`], and a dropped entry is built again at its next use.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, GroupVersionKind};
use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};
use kube::discovery::ApiCapabilities;
use kube::{Api, Client, Config};

use super::Failure;

use self::kubeconfig::{inline_only, refused_field};
pub use self::recent::Recent;

/// Keys of a registration Secret that may hold the kubeconfig, in order (Flux's convention).
pub const KUBECONFIG_KEYS: [&str; 2] = ["value", "value.yaml"];
/// How long connecting to a registered cluster may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a registered cluster may take to answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a watch of a registered cluster may stay silent: longer than the API server's own
/// watch timeout (kube's watcher asks for 290 s), so a quiet watch is not cut and re-opened.
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a cached client may go unused before it is dropped. A running operation uses its
/// client at least once a minute (the health safety re-read), so ten minutes never drops one in
/// use; an Apply that is done, or a namespace that went away, stops costing memory after that.
/// Building a client again costs one Secret read and, for a registered cluster, its discovery.
pub const CLIENT_IDLE: Duration = Duration::from_secs(10 * 60);
/// How many impersonating clients (one per Apply namespace and service account) are kept at
/// most; when full, the least recently used goes. One costs about 13 KiB (1,000 measured
/// together: 13 MiB), so the cache stays under 15 MiB however many names tenants make.
pub const CLIENT_CAPACITY: usize = 1_000;
/// How many registered clusters' clients (one per namespace, registration and service account)
/// are kept at most. One costs about 37 KiB with an inline CA, and up to 230 KiB with the system
/// roots (each client loads them): 200 stay under 46 MiB, a fifth of the chart's 256 MiB.
pub const REMOTE_CAPACITY: usize = 200;
/// How long an outage is remembered without news: an operation waiting on an unreachable
/// cluster reports it at every try, and retries come far more often than this.
const OUTAGE_IDLE: Duration = Duration::from_secs(60 * 60);
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
    /// The shared watch of `kind` objects in `namespace` (cluster-wide for `None`) here.
    pub fn watch_key(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> super::watches::WatchKey {
        super::watches::WatchKey {
            identity: self.identity.clone(),
            cluster: self.cluster.clone(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
        }
    }

    /// `text (cluster `eu`)` about an object of a registered cluster, `text` otherwise.
    pub fn suffix(&self, text: &str) -> String {
        match &self.cluster {
            Some(cluster) => format!("{text} (cluster `{cluster}`)"),
            None => text.to_owned(),
        }
    }

    /// `cluster `eu`: ` before a message about a registered cluster, nothing otherwise.
    pub fn prefix(&self) -> String {
        self.cluster.as_ref().map(|cluster| format!("cluster `{cluster}`: ")).unwrap_or_default()
    }
}

/// A cache of impersonating clients with baton's bounds ([`CLIENT_IDLE`], [`CLIENT_CAPACITY`]).
pub fn client_cache<K: Eq + Hash + Clone, V>() -> Recent<K, V> {
    Recent::new(CLIENT_IDLE, CLIENT_CAPACITY)
}

/// Locks `mutex`, taking over a poisoned one: the caches hold no invariant a panic could break.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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

/// The clients of every cluster this replica runs operations on.
pub struct Clusters {
    remotes: Mutex<Recent<RemoteKey, Remote>>,
    /// When each registered cluster stopped answering, by `namespace/secret`.
    outages: Mutex<Recent<String, Timestamp>>,
}

impl Default for Clusters {
    fn default() -> Self {
        Clusters {
            remotes: Mutex::new(Recent::new(CLIENT_IDLE, REMOTE_CAPACITY)),
            outages: Mutex::new(Recent::new(OUTAGE_IDLE, CLIENT_CAPACITY)),
        }
    }
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
    ) -> Result<Place, Failure> {
        let kubeconfig = read_kubeconfig(reader, namespace, cluster).await?;
        let fingerprint = fingerprint(&kubeconfig);
        let key = (namespace.to_owned(), cluster.to_owned(), service_account.map(str::to_owned));
        if let Some(remote) =
            locked(&self.remotes).get(&key, Instant::now()).filter(|r| r.fingerprint == fingerprint)
        {
            return Ok(remote.place(&key));
        }
        let (client, watch_client) =
            clients_from(&kubeconfig, namespace, cluster, service_account).await?;
        let remote =
            Remote { fingerprint, client, watch_client, kinds: Arc::new(Kinds::default()) };
        let place = remote.place(&key);
        locked(&self.remotes).insert(key, remote, Instant::now());
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
        locked(&self.remotes).get(&key, Instant::now()).map(|remote| remote.place(&key))
    }

    /// Notes that `place` did not answer; returns since when it has not.
    pub fn unreachable(&self, namespace: &str, place: &Place, now: Timestamp) -> Timestamp {
        let key = outage_key(namespace, place);
        let mut outages = locked(&self.outages);
        let at = Instant::now();
        if let Some(since) = outages.get(&key, at) {
            return *since;
        }
        outages.insert(key, now, at);
        now
    }

    /// Notes that `place` answered.
    pub fn reachable(&self, namespace: &str, place: &Place) {
        locked(&self.outages).remove(&outage_key(namespace, place));
    }
}

fn outage_key(namespace: &str, place: &Place) -> String {
    format!("{namespace}/{}", place.cluster.as_deref().unwrap_or_default())
}

fn unusable(cluster: &str, namespace: &str, reason: &str) -> Failure {
    Failure {
        message: format!("cluster `{cluster}`: Secret `{cluster}` in `{namespace}`: {reason}"),
        transient: false,
    }
}

/// The kubeconfig text of the registration Secret `cluster`, read as the Apply's account.
async fn read_kubeconfig(
    reader: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<String, Failure> {
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
            return Err(Failure {
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

/// The clients (for requests, for watches) of a registration's kubeconfig `text`.
async fn clients_from(
    text: &str,
    namespace: &str,
    cluster: &str,
    service_account: Option<&str>,
) -> Result<(Client, Client), Failure> {
    let config = config_from(text, namespace, cluster, service_account).await?;
    let not_usable = |error: kube::Error| {
        unusable(cluster, namespace, &format!("the kubeconfig is not usable: {error}"))
    };
    let mut watching = config.clone();
    watching.read_timeout = Some(WATCH_READ_TIMEOUT);
    let client = Client::try_from(config).map_err(not_usable)?;
    let watch_client = Client::try_from(watching).map_err(not_usable)?;
    Ok((client, watch_client))
}

/// The client configuration of a registration's kubeconfig `text`: refused if any user or
/// cluster entry carries a field baton does not accept ([`refused_field`]), else built from a
/// copy that holds only the accepted fields ([`inline_only`]).
async fn config_from(
    text: &str,
    namespace: &str,
    cluster: &str,
    service_account: Option<&str>,
) -> Result<Config, Failure> {
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|error| {
        unusable(cluster, namespace, &format!("the kubeconfig does not parse: {error}"))
    })?;
    // Every entry, not only the current context's: what is refused is refused wherever it is.
    if let Some(refusal) = refused_field(&kubeconfig) {
        return Err(unusable(cluster, namespace, &refusal));
    }
    let mut config =
        Config::from_custom_kubeconfig(inline_only(kubeconfig), &KubeConfigOptions::default())
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

mod kubeconfig;
mod recent;
#[cfg(test)]
mod tests;
