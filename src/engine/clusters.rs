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
/// What every refused credential field of a kubeconfig is told.
const INLINE_ONLY: &str = "baton uses only credentials carried inline (`token`, or \
     `client-certificate-data` and `client-key-data`); exec plugins, auth providers, file \
     references and impersonation fields are refused";

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

/// A cache that forgets: an entry not used for `idle` is never handed out again, and is dropped
/// by a sweep that runs on access at most every tenth of `idle`; when `capacity` entries are held, a new one replaces the least
/// recently used. The time is an argument, so tests move it without sleeping.
#[derive(Debug)]
pub struct Recent<K, V> {
    entries: HashMap<K, (V, Instant)>,
    idle: Duration,
    capacity: usize,
    swept: Option<Instant>,
}

impl<K: Eq + Hash + Clone, V> Recent<K, V> {
    /// An empty cache dropping entries unused for `idle`, holding at most `capacity`.
    pub fn new(idle: Duration, capacity: usize) -> Self {
        Recent { entries: HashMap::new(), idle, capacity: capacity.max(1), swept: None }
    }

    /// The entry `key`, marked used at `now`; none if it went unused for `idle`.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        self.sweep(now);
        let expired = self
            .entries
            .get(key)
            .is_some_and(|(_, used)| now.saturating_duration_since(*used) >= self.idle);
        if expired {
            self.entries.remove(key);
        }
        let (value, used) = self.entries.get_mut(key)?;
        *used = now;
        Some(value)
    }

    /// Keeps `value` under `key`, used at `now`, making room if the cache is full.
    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        self.sweep(now);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest =
                self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (value, now));
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn sweep(&mut self, now: Instant) {
        let due =
            self.swept.is_none_or(|swept| now.saturating_duration_since(swept) >= self.idle / 10);
        if !due {
            return;
        }
        self.swept = Some(now);
        let idle = self.idle;
        self.entries.retain(|_, (_, used)| now.saturating_duration_since(*used) < idle);
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
    ) -> Result<Place, Unusable> {
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

/// The clients (for requests, for watches) of a registration's kubeconfig `text`.
async fn clients_from(
    text: &str,
    namespace: &str,
    cluster: &str,
    service_account: Option<&str>,
) -> Result<(Client, Client), Unusable> {
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
) -> Result<Config, Unusable> {
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

/// The first field of `kubeconfig` that a registration may not carry, as a reason naming the
/// entry and the field. Basic authentication (`username`, `password`) is refused too: the
/// specification accepts a bearer token or a client certificate, and Kubernetes dropped basic
/// authentication in 1.19. `insecure-skip-tls-verify` and `tls-server-name` are accepted: they
/// weaken or name only the tenant's own connection.
fn refused_field(kubeconfig: &Kubeconfig) -> Option<String> {
    for named in &kubeconfig.auth_infos {
        let Some(user) = &named.auth_info else { continue };
        let refused = [
            ("exec", user.exec.is_some()),
            ("auth-provider", user.auth_provider.is_some()),
            ("tokenFile", user.token_file.is_some()),
            ("client-certificate", user.client_certificate.is_some()),
            ("client-key", user.client_key.is_some()),
            ("as", user.impersonate.is_some()),
            ("as-uid", user.impersonate_uid.is_some()),
            ("as-groups", user.impersonate_groups.is_some()),
            ("as-user-extra", user.impersonate_user_extra.is_some()),
        ];
        if let Some((field, _)) = refused.iter().find(|(_, present)| *present) {
            return Some(format!("kubeconfig user `{}` uses `{field}`: {INLINE_ONLY}", named.name));
        }
        let basic = [("username", user.username.is_some()), ("password", user.password.is_some())];
        if let Some((field, _)) = basic.iter().find(|(_, present)| *present) {
            return Some(format!(
                "kubeconfig user `{}` uses `{field}`: basic authentication is refused; baton uses \
                 only a bearer `token`, or `client-certificate-data` and `client-key-data`",
                named.name
            ));
        }
    }
    for named in &kubeconfig.clusters {
        let Some(cluster) = &named.cluster else { continue };
        if cluster.certificate_authority.is_some() {
            return Some(format!(
                "kubeconfig cluster `{}` uses `certificate-authority`: baton trusts only a CA \
                 carried inline (`certificate-authority-data`) or the system roots; file \
                 references are refused",
                named.name
            ));
        }
        if cluster.proxy_url.is_some() {
            return Some(format!(
                "kubeconfig cluster `{}` uses `proxy-url`: baton connects to a registered cluster \
                 directly; a proxy named by the kubeconfig would route the operator's traffic",
                named.name
            ));
        }
    }
    None
}

/// A copy of `kubeconfig` with only what a registration may use: for each cluster its server,
/// inline CA, TLS server name and the two connection switches; for each user its inline token,
/// client certificate and key; the contexts' cluster, user and namespace. Everything else
/// (plugins, file references, extensions, fields kube does not model) is left behind, so kube's
/// loader has nothing to run or read even if [`refused_field`] missed a field.
fn inline_only(kubeconfig: Kubeconfig) -> Kubeconfig {
    let clusters = kubeconfig
        .clusters
        .into_iter()
        .map(|named| NamedCluster {
            name: named.name,
            cluster: named.cluster.map(|cluster| Cluster {
                server: cluster.server,
                insecure_skip_tls_verify: cluster.insecure_skip_tls_verify,
                certificate_authority_data: cluster.certificate_authority_data,
                disable_compression: cluster.disable_compression,
                tls_server_name: cluster.tls_server_name,
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        })
        .collect();
    let auth_infos = kubeconfig
        .auth_infos
        .into_iter()
        .map(|named| NamedAuthInfo {
            name: named.name,
            auth_info: named.auth_info.map(|user| AuthInfo {
                token: user.token,
                client_certificate_data: user.client_certificate_data,
                client_key_data: user.client_key_data,
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        })
        .collect();
    let contexts = kubeconfig
        .contexts
        .into_iter()
        .map(|named| NamedContext {
            name: named.name,
            context: named.context.map(|context| Context {
                cluster: context.cluster,
                user: context.user,
                namespace: context.namespace,
                ..Context::default()
            }),
            ..NamedContext::default()
        })
        .collect();
    Kubeconfig {
        clusters,
        auth_infos,
        contexts,
        current_context: kubeconfig.current_context,
        ..Kubeconfig::default()
    }
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

    /// A kubeconfig with one cluster `eu`, one user `admin` and a context on them; `cluster`
    /// and `user` are the entries' fields (YAML flow mappings without braces).
    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: eu, cluster: {{server: \"https://127.0.0.1:6443\", {cluster}}}}}]\n\
             users: [{{name: admin, user: {{{user}}}}}]\n\
             contexts: [{{name: eu, context: {{cluster: eu, user: admin}}}}]\n\
             current-context: eu\n"
        )
    }

    /// A self-signed certificate (`CN=baton-test`), base64 as a kubeconfig carries it: the CA
    /// and the client certificate of the accepted rows.
    const CERTIFICATE_DATA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJnakNDQVNlZ0F3SUJBZ0lVY0FnWjNBakYxek8rUUNYcEpHK0tEYzMzSnpNd0NnWUlLb1pJemowRUF3SXcKRlRFVE1CRUdBMVVFQXd3S1ltRjBiMjR0ZEdWemREQWdGdzB5TmpFeU1EVXdPRFEzTVROYUdBOHlNVEkyTVRFeApNVEE0TkRjeE0xb3dGVEVUTUJFR0ExVUVBd3dLWW1GMGIyNHRkR1Z6ZERCWk1CTUdCeXFHU000OUFnRUdDQ3FHClNNNDlBd0VIQTBJQUJQTWRQY1N2MTVlQ3FyYXhUQmlzYVhzNk9tcDNubTZKTHM5V2pZSUhuNHdTRzl2WWlFSFQKQWgzd1JsTHBXRExFczVFMjlJNnNjTGJhMjhCRjFvSmNwV2lqVXpCUk1CMEdBMVVkRGdRV0JCUlN3SkN5Z21maQp5RzJKTTZBdWFqamF0NTQ0WXpBZkJnTlZIU01FR0RBV2dCUlN3SkN5Z21maXlHMkpNNkF1YWpqYXQ1NDRZekFQCkJnTlZIUk1CQWY4RUJUQURBUUgvTUFvR0NDcUdTTTQ5QkFNQ0Ewa0FNRVlDSVFEM2hiL0FRa1lvSTJHZjlueGoKUytwN0szME15dU11c292U1ExRlBwL2xNVUFJaEFQcXMwZFZJdTI2amRqcHFJL24vbG1VRzR2WlJaRmtIM2dycgpYNXEwN1owZgotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg==";
    /// The throwaway key of [`CERTIFICATE_DATA`] (PKCS#8, P-256), base64.
    const KEY_DATA: &str = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JR0hBZ0VBTUJNR0J5cUdTTTQ5QWdFR0NDcUdTTTQ5QXdFSEJHMHdhd0lCQVFRZ1dNTk5adnpQQXo1K2tHdm8KQzI0UlAyT290ZnBWUGJtWlRWMFlPRWl0cHhDaFJBTkNBQVR6SFQzRXI5ZVhncXEyc1V3WXJHbDdPanBxZDU1dQppUzdQVm8yQ0I1K01FaHZiMkloQjB3SWQ4RVpTNlZneXhMT1JOdlNPckhDMjJ0dkFSZGFDWEtWbwotLS0tLUVORCBQUklWQVRFIEtFWS0tLS0tCg==";

    #[tokio::test]
    async fn every_field_that_runs_reads_or_impersonates_is_refused_by_name() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let marker =
            std::env::temp_dir().join(format!("baton-exec-marker-{}-{nanos}", std::process::id()));
        let marker_path = marker.display().to_string();
        // A plugin that would work: it leaves the marker and prints a credential. In YAML's
        // single quotes, `''` is one quote.
        let credential = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t"}}"#;
        let exec = format!(
            "exec: {{apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, \
             args: [-c, 'touch {marker_path}; echo ''{credential}''']}}"
        );
        // (the entry and field the message must name, cluster fields, user fields)
        let rows: Vec<(&str, &str, String)> = vec![
            ("user `admin` uses `exec`", "", exec),
            (
                "user `admin` uses `auth-provider`",
                "",
                "auth-provider: {name: oidc, config: {id-token: t}}".into(),
            ),
            (
                "user `admin` uses `tokenFile`",
                "",
                "tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            ),
            (
                "user `admin` uses `client-certificate`",
                "",
                format!("client-certificate: /etc/baton/tls.crt, client-key-data: {KEY_DATA}"),
            ),
            (
                "user `admin` uses `client-key`",
                "",
                format!(
                    "client-certificate-data: {CERTIFICATE_DATA}, client-key: /etc/baton/tls.key"
                ),
            ),
            ("user `admin` uses `as`", "", "token: t, as: system:admin".into()),
            ("user `admin` uses `as-uid`", "", "token: t, as-uid: \"0\"".into()),
            ("user `admin` uses `as-groups`", "", "token: t, as-groups: [system:masters]".into()),
            (
                "user `admin` uses `as-user-extra`",
                "",
                "token: t, as-user-extra: {scopes: [all]}".into(),
            ),
            ("user `admin` uses `username`", "", "username: admin, password: secret".into()),
            ("user `admin` uses `password`", "", "token: t, password: secret".into()),
            (
                "cluster `eu` uses `certificate-authority`",
                "certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                "token: t".into(),
            ),
            (
                "cluster `eu` uses `proxy-url`",
                "proxy-url: \"http://10.0.0.1:3128\"",
                "token: t".into(),
            ),
        ];
        for (named, cluster, user) in &rows {
            let text = kubeconfig(cluster, user);
            let refused = clients_from(&text, "shop", "eu", Some("deployer")).await.err();
            assert!(!marker.exists(), "{named}: the exec plugin ran: {marker_path} exists");
            let message = refused.as_ref().map(|u| u.message.clone()).unwrap_or_default();
            let expected = format!("cluster `eu`: Secret `eu` in `shop`: kubeconfig {named}: ");
            assert!(message.starts_with(&expected), "{named}: refused with `{message}`");
            assert_eq!(refused.map(|u| u.transient), Some(false), "{named}: a permanent refusal");
        }

        // An entry the current context does not use is refused all the same.
        let unused = format!(
            "{}users: [{{name: admin, user: {{token: t}}}}, {{name: other, user: {{tokenFile: /etc/passwd}}}}]\n",
            kubeconfig("", "token: t").replace("users: [{name: admin, user: {token: t}}]\n", "")
        );
        let message = config_from(&unused, "shop", "eu", None).await.err().map(|u| u.message);
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("kubeconfig user `other` uses `tokenFile`")),
            "{message:?}"
        );
    }

    #[tokio::test]
    async fn inline_credentials_are_accepted_and_nothing_else_reaches_the_client() {
        let rows = [
            ("a token with the system roots", kubeconfig("", "token: t0k3n")),
            (
                "a client certificate and key with an inline CA",
                kubeconfig(
                    &format!(
                        "certificate-authority-data: {CERTIFICATE_DATA}, tls-server-name: eu.example"
                    ),
                    &format!(
                        "client-certificate-data: {CERTIFICATE_DATA}, client-key-data: {KEY_DATA}"
                    ),
                ),
            ),
            (
                "a token with an inline CA and extensions",
                kubeconfig(
                    &format!(
                        "certificate-authority-data: {CERTIFICATE_DATA}, extensions: [{{name: \
                         client.authentication.k8s.io/exec, extension: {{audience: x}}}}]"
                    ),
                    "token: t0k3n, extensions: [{name: x, extension: {y: z}}]",
                ),
            ),
        ];
        for (what, text) in &rows {
            let config = config_from(text, "shop", "eu", None).await.map_err(|u| u.message);
            let config = config.unwrap_or_else(|message| panic!("{what}: refused: {message}"));
            let user = &config.auth_info;
            assert!(
                user.exec.is_none()
                    && user.auth_provider.is_none()
                    && user.token_file.is_none()
                    && user.extensions.is_none()
                    && user.impersonate.is_none(),
                "{what}: {user:?}"
            );
            assert!(config.root_cert_file.is_none() && config.proxy_url.is_none(), "{what}");
            assert!(
                clients_from(text, "shop", "eu", None).await.is_ok(),
                "{what}: no client was built"
            );
        }
    }

    #[test]
    fn an_entry_unused_for_the_idle_bound_is_dropped() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut cache: Recent<&str, u32> = Recent::new(10 * minute, 100);
        cache.insert("kept", 1, start);
        cache.insert("idle", 2, start);
        // "kept" is used every minute, "idle" never again.
        for m in 1..=15 {
            assert_eq!(cache.get(&"kept", start + m * minute), Some(&1), "minute {m}");
        }
        assert_eq!(cache.get(&"idle", start + 15 * minute), None);
        assert_eq!(cache.len(), 1);
        // Not used for ten minutes, it goes too.
        assert_eq!(cache.get(&"kept", start + 25 * minute), None);
        assert!(cache.is_empty());

        // Between two sweeps, an entry that just reached the bound is not handed out.
        cache.insert("late", 3, start + 30 * minute);
        cache.insert("other", 4, start + 39 * minute + 30 * Duration::from_secs(1));
        assert_eq!(cache.get(&"late", start + 40 * minute), None);
    }

    #[test]
    fn a_full_cache_drops_the_least_recently_used() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut cache: Recent<u32, u32> = Recent::new(CLIENT_IDLE, 3);
        for key in 0..3 {
            cache.insert(key, key, start + key * second);
        }
        // 0 is the oldest insert, but used since: 1 is the least recently used.
        assert_eq!(cache.get(&0, start + 5 * second), Some(&0));
        cache.insert(3, 3, start + 6 * second);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&1, start + 7 * second), None);
        for key in [0, 2, 3] {
            assert_eq!(cache.get(&key, start + 7 * second), Some(&key));
        }
        // Replacing an entry makes no room.
        cache.insert(3, 30, start + 8 * second);
        assert_eq!((cache.len(), cache.get(&3, start + 8 * second)), (3, Some(&30)));
    }
}
