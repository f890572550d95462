//! Workload clusters beside the management cluster of [`crate::cluster`], for rollouts over a
//! fleet (`target.cluster`). Each one is a whole control plane of its own
//! (`e2e/control-plane/start.sh`, with the workload controllers, the scheduler and kwok, since
//! tests roll Deployments out there): its own etcd, kube-apiserver, certificates and ports.
//! They start on first use, once per test binary, are shared by its tests, and are stopped by
//! the same kind of watchdog as the management cluster when the process ends. A cluster takes
//! about 0.5 GB, so a binary runs at most two of them ([`MAX_WORKLOAD_CLUSTERS`]).
//!
//! A cluster is registered the way the specification says (section 9): a Secret in the Apply's
//! namespace whose key `value` holds a kubeconfig. The kubeconfig's identity is a service
//! account of the workload cluster (`baton-system/<account>`) whose only right is to
//! impersonate service accounts, with a token from the TokenRequest API: deleting the service
//! account revokes it at once, which the credential-rotation tests rely on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{HARNESS_MANAGER, StoppedApiserver, TestNamespace, client_for, repo_root, wait_for};

/// How many workload clusters one test binary may start (with the management cluster, three
/// control planes, about 1.5 GB).
pub const MAX_WORKLOAD_CLUSTERS: usize = 2;
/// Namespace of the registration identities on a workload cluster.
pub const IDENTITY_NAMESPACE: &str = "baton-system";
/// The identity [`register`] writes into registration Secrets.
pub const DEFAULT_IDENTITY: &str = "baton-remote";
/// The ClusterRole of registration identities: impersonating service accounts, nothing else.
const IMPERSONATOR_ROLE: &str = "baton-remote-impersonator";

/// A workload cluster the harness started.
pub struct WorkloadCluster {
    /// The name it is registered under in the tests (`eu`, `us`).
    pub name: String,
    /// Its control plane's state directory.
    pub state: PathBuf,
    /// An administrator kubeconfig (`system:masters`).
    pub kubeconfig: PathBuf,
    /// Its API server's URL (loopback).
    pub server: String,
    /// Its CA, base64 as in a kubeconfig's `certificate-authority-data`.
    ca_data: String,
    /// Tests that take the API server away hold this exclusively; the others share it, so no
    /// test sees an outage it did not cause.
    users: RwLock<()>,
    /// Tokens of identities already made, by account.
    tokens: Mutex<BTreeMap<String, String>>,
}

type Slot = Arc<OnceLock<&'static WorkloadCluster>>;

fn slots() -> &'static Mutex<BTreeMap<String, Slot>> {
    static SLOTS: OnceLock<Mutex<BTreeMap<String, Slot>>> = OnceLock::new();
    SLOTS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Whether the harness can start workload clusters: not against an existing cluster
/// (`BATON_E2E_USE_EXISTING=1`), where nothing local is started.
pub fn available() -> bool {
    !std::env::var("BATON_E2E_USE_EXISTING").is_ok_and(|v| v == "1")
}

/// The workload cluster `name`: started on first use (blocking, about 5 s), shared by every test
/// of this binary, stopped when the process ends.
pub fn workload_cluster(name: &str) -> &'static WorkloadCluster {
    assert!(available(), "workload clusters are started only by the local harness");
    let slot = {
        let mut slots = slots().lock().expect("the workload cluster table");
        if !slots.contains_key(name) {
            assert!(
                slots.len() < MAX_WORKLOAD_CLUSTERS,
                "a test binary runs at most {MAX_WORKLOAD_CLUSTERS} workload clusters (asked for \
                 `{name}` beside {:?})",
                slots.keys().collect::<Vec<_>>()
            );
        }
        slots.entry(name.to_owned()).or_default().clone()
    };
    // Outside the table's lock: two clusters start side by side.
    slot.get_or_init(|| Box::leak(Box::new(start(name))))
}

fn start(name: &str) -> WorkloadCluster {
    // The management cluster first, so its state dir exists before ours and a failed start of
    // ours does not leave it half-made.
    let _ = crate::cluster();
    let state = std::env::temp_dir().join(format!("baton-e2e-{}-{name}", std::process::id()));
    let status = Command::new("bash")
        .arg(repo_root().join("e2e/control-plane/start.sh"))
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("running e2e/control-plane/start.sh");
    crate::watch_over(&state);
    assert!(
        status.success(),
        "workload cluster `{name}` did not start; logs are in {}",
        state.display()
    );
    let kubeconfig = state.join("kubeconfig");
    let parsed = Kubeconfig::read_from(&kubeconfig).expect("the workload cluster's kubeconfig");
    let cluster = parsed
        .clusters
        .first()
        .and_then(|named| named.cluster.clone())
        .expect("a cluster in the kubeconfig start.sh wrote");
    WorkloadCluster {
        name: name.to_owned(),
        state,
        kubeconfig,
        server: cluster.server.expect("a server URL"),
        ca_data: cluster.certificate_authority_data.expect("the CA embedded in the kubeconfig"),
        users: RwLock::new(()),
        tokens: Mutex::new(BTreeMap::new()),
    }
}

impl WorkloadCluster {
    /// An administrator client.
    pub async fn admin(&self) -> Client {
        client_for(&self.kubeconfig).await
    }

    /// Shares the cluster with the other tests: no outage while held.
    pub async fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.users.read().await
    }

    /// The cluster for this test alone, for an outage. Take clusters in name order (`eu`
    /// before `us`) when a test holds several.
    pub async fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.users.write().await
    }

    /// Stops its kube-apiserver (etcd and the rest keep running). Hold [`Self::exclusive`].
    pub async fn stop_apiserver(&self) -> StoppedApiserver {
        StoppedApiserver::stop(&self.state).await
    }

    /// Starts a kube-apiserver [`Self::stop_apiserver`] stopped and waits until the cluster is
    /// whole again ([`Self::wait_usable`]).
    pub async fn start_apiserver(&self, stopped: StoppedApiserver) {
        stopped.start(&self.kubeconfig).await;
        self.wait_usable().await;
    }

    /// Waits until the API server serves and every fake node is Ready without a
    /// `node.kubernetes.io/*` taint. After a long outage the node lifecycle controller may have
    /// marked the node unreachable (kwok could not renew its lease meanwhile); until kwok's next
    /// heartbeat lifts that, no pod is scheduled, which a test would misread as baton's fault.
    pub async fn wait_usable(&self) {
        let admin = self.admin().await;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(admin);
        wait_for(
            &format!("workload cluster `{}` to serve with schedulable nodes", self.name),
            Duration::from_secs(120),
            || {
                let nodes = nodes.clone();
                async move {
                    let list = nodes.list(&Default::default()).await.ok()?;
                    let usable = !list.items.is_empty()
                        && list.items.iter().all(|node| {
                            let spec = node.spec.clone().unwrap_or_default();
                            let tainted = spec
                                .taints
                                .unwrap_or_default()
                                .iter()
                                .any(|taint| taint.key.starts_with("node.kubernetes.io/"));
                            let ready = node
                                .status
                                .as_ref()
                                .and_then(|status| status.conditions.as_ref())
                                .is_some_and(|conditions| {
                                    conditions
                                        .iter()
                                        .any(|c| c.type_ == "Ready" && c.status == "True")
                                });
                            ready && !tainted
                        });
                    usable.then_some(())
                }
            },
        )
        .await;
    }

    /// A kubeconfig (YAML) for this cluster with `token`, as a registration Secret holds it.
    pub fn kubeconfig_with_token(&self, token: &str) -> String {
        let name = &self.name;
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: baton\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: baton\ncurrent-context: {name}\n",
            server = self.server,
            ca = self.ca_data,
        )
    }

    /// A token for the service account `baton-system/<account>` of this cluster, which may
    /// impersonate service accounts and nothing else; made (account, binding, TokenRequest)
    /// on first use. Deleting the account ([`Self::revoke`]) revokes every token it had.
    pub async fn identity(&self, account: &str) -> String {
        if let Some(token) = self.tokens.lock().expect("the token table").get(account) {
            return token.clone();
        }
        let admin = self.admin().await;
        let pp = PatchParams::apply(HARNESS_MANAGER).force();
        let namespace = Namespace {
            metadata: ObjectMeta { name: Some(IDENTITY_NAMESPACE.into()), ..ObjectMeta::default() },
            ..Namespace::default()
        };
        Api::<Namespace>::all(admin.clone())
            .patch(IDENTITY_NAMESPACE, &pp, &Patch::Apply(&namespace))
            .await
            .expect("applying the identity namespace");
        let role = ClusterRole {
            metadata: ObjectMeta { name: Some(IMPERSONATOR_ROLE.into()), ..ObjectMeta::default() },
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["serviceaccounts".into()]),
                verbs: vec!["impersonate".into()],
                ..PolicyRule::default()
            }]),
            ..ClusterRole::default()
        };
        Api::<ClusterRole>::all(admin.clone())
            .patch(IMPERSONATOR_ROLE, &pp, &Patch::Apply(&role))
            .await
            .expect("applying the impersonator ClusterRole");
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), IDENTITY_NAMESPACE);
        let meta = ObjectMeta {
            name: Some(account.to_owned()),
            namespace: Some(IDENTITY_NAMESPACE.into()),
            ..ObjectMeta::default()
        };
        accounts
            .patch(
                account,
                &pp,
                &Patch::Apply(&ServiceAccount { metadata: meta, ..ServiceAccount::default() }),
            )
            .await
            .expect("applying the identity's service account");
        let binding_name = format!("{IMPERSONATOR_ROLE}-{account}");
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta { name: Some(binding_name.clone()), ..ObjectMeta::default() },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: IMPERSONATOR_ROLE.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: account.to_owned(),
                namespace: Some(IDENTITY_NAMESPACE.into()),
                ..Subject::default()
            }]),
        };
        Api::<ClusterRoleBinding>::all(admin.clone())
            .patch(&binding_name, &pp, &Patch::Apply(&binding))
            .await
            .expect("applying the impersonator binding");
        let request = TokenRequest {
            spec: TokenRequestSpec {
                // Longer than any run; the tests revoke by deleting the account.
                expiration_seconds: Some(24 * 3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .expect("a token for the identity")
            .status
            .expect("a token request's status")
            .token;
        // The authorizer learns of new bindings through a cache: wait until it has.
        let user = format!("system:serviceaccount:{IDENTITY_NAMESPACE}:{account}");
        allowed(&admin, &user, "impersonate", "serviceaccounts", None, None).await;
        self.tokens.lock().expect("the token table").insert(account.to_owned(), token.clone());
        token
    }

    /// Revokes the tokens of `baton-system/<account>` by deleting the account, and waits until
    /// the API server refuses them.
    pub async fn revoke(&self, account: &str) {
        let token = self.tokens.lock().expect("the token table").remove(account);
        let admin = self.admin().await;
        Api::<ServiceAccount>::namespaced(admin, IDENTITY_NAMESPACE)
            .delete(account, &DeleteParams::default())
            .await
            .expect("deleting the identity's service account");
        let Some(token) = token else { return };
        let kubeconfig = self.kubeconfig_with_token(&token);
        wait_for(
            &format!("the token of {account} to be refused by `{}`", self.name),
            Duration::from_secs(30),
            || {
                let kubeconfig = kubeconfig.clone();
                async move {
                    let client = client_from_yaml(&kubeconfig).await;
                    match client.apiserver_version().await {
                        Err(kube::Error::Api(status)) if status.code == 401 => Some(()),
                        _ => None,
                    }
                }
            },
        )
        .await;
    }

    /// Creates namespace `namespace` here (deleted when dropped, like any test namespace) and
    /// grants `rules` in it to the service account `<apply_namespace>:<account>` that the
    /// operator impersonates for an Apply of `apply_namespace` naming `account`.
    pub async fn target_namespace(
        &self,
        namespace: &str,
        apply_namespace: &str,
        account: &str,
        rules: Vec<PolicyRule>,
    ) -> TestNamespace {
        let admin = self.admin().await;
        let created = TestNamespace::create_named(&admin, namespace).await;
        crate::grant(&admin, namespace, (apply_namespace, account), rules).await;
        created
    }
}

/// A client for a kubeconfig given as text.
pub async fn client_from_yaml(kubeconfig: &str) -> Client {
    let parsed = Kubeconfig::from_yaml(kubeconfig).expect("a kubeconfig");
    let config = Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

/// Registers the workload cluster `cluster_name` in `namespace` of the management cluster as
/// the Secret `secret_name` (key `value`), with the default impersonating identity: what
/// `kubectl create secret generic NAME --from-file=value=kubeconfig` makes.
pub async fn register(client: &Client, namespace: &str, cluster_name: &str, secret_name: &str) {
    let cluster = workload_cluster(cluster_name);
    let token = cluster.identity(DEFAULT_IDENTITY).await;
    put_secret(
        client,
        namespace,
        secret_name,
        &[("value", &cluster.kubeconfig_with_token(&token))],
    )
    .await;
}

/// Writes the Secret `name` in `namespace` with exactly the keys `data` (server-side apply by
/// the harness, so keys it wrote before and not now are removed).
pub async fn put_secret(client: &Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(key, value)| ((*key).to_owned(), ByteString(value.as_bytes().to_vec())))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::apply(HARNESS_MANAGER).force(), &Patch::Apply(&secret))
        .await
        .unwrap_or_else(|error| panic!("writing Secret {name} in {namespace}: {error}"));
}

/// Lets the service account `account` of `namespace` `get` the Secrets `secrets` there (a Role
/// `<account>-clusters`): the operator reads registrations as the Apply's service account.
pub async fn allow_reading(client: &Client, namespace: &str, account: &str, secrets: &[&str]) {
    let pp = PatchParams::apply(HARNESS_MANAGER).force();
    let name = format!("{account}-clusters");
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.to_owned()),
        ..ObjectMeta::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(secrets.iter().map(|s| (*s).to_owned()).collect()),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), namespace)
        .patch(&name, &pp, &Patch::Apply(&role))
        .await
        .expect("applying the Role for registration Secrets");
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.to_owned(),
            namespace: Some(namespace.to_owned()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .patch(&name, &pp, &Patch::Apply(&binding))
        .await
        .expect("applying the RoleBinding for registration Secrets");
    let user = format!("system:serviceaccount:{namespace}:{account}");
    for secret in secrets {
        allowed(client, &user, "get", "secrets", Some(namespace), Some(secret)).await;
    }
}

/// Waits until the authorizer of `client`'s cluster allows `user` (a service account) `verb`
/// on `resource` (core group).
async fn allowed(
    client: &Client,
    user: &str,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) {
    let account_namespace = user.split(':').nth(2).unwrap_or_default();
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{account_namespace}"),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: namespace.map(str::to_owned),
                resource: Some(resource.to_owned()),
                name: name.map(str::to_owned),
                verb: Some(verb.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    wait_for(
        &format!("RBAC to allow {user} to {verb} {resource}"),
        Duration::from_secs(30),
        || {
            let reviews = reviews.clone();
            let review = review.clone();
            async move {
                let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
                answer.status.is_some_and(|status| status.allowed).then_some(())
            }
        },
    )
    .await;
}
