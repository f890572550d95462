//! baton's end-to-end harness. It starts one real cluster per test binary (etcd, kube-apiserver,
//! kube-controller-manager with the workload controllers, kube-scheduler, and kwok running fake
//! nodes, all built from Go modules by `e2e/control-plane/build.sh`), installs `crds/`, and
//! gives each test its own namespace. Workloads roll out for real: kwok reports the pods, the
//! controllers the workloads' status; [`pods`] decides what the containers do.
//!
//! With `BATON_E2E_USE_EXISTING=1` the tests run against the cluster in `KUBECONFIG` instead
//! (it needs kwok with `e2e/control-plane/kwok/stages.yaml` for the workload tests).

pub mod argocd;
pub mod browser;
pub mod fleet;
pub mod kstatus;
pub mod pods;
pub mod policy;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::Deserialize;

/// Field manager of everything the harness writes.
pub const HARNESS_MANAGER: &str = "baton-e2e";
/// Label on every namespace the harness creates, so leftovers are easy to find.
pub const TEST_NAMESPACE_LABEL: &str = "baton.dev/e2e";

/// Where the cluster under test is.
#[derive(Debug)]
pub struct ClusterHandle {
    /// Kubeconfig of a cluster administrator.
    pub kubeconfig: PathBuf,
    /// Kubeconfig of the operator's own service account (`baton-system/baton`), when the
    /// harness started the control plane.
    pub operator_kubeconfig: Option<PathBuf>,
    /// The control plane's state directory, when the harness started it.
    pub state: Option<PathBuf>,
}

static CLUSTER: OnceLock<ClusterHandle> = OnceLock::new();

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cluster of this test run: started on first use, stopped when the test process ends.
pub fn cluster() -> &'static ClusterHandle {
    CLUSTER.get_or_init(|| {
        if std::env::var("BATON_E2E_USE_EXISTING").is_ok_and(|v| v == "1") {
            let kubeconfig = std::env::var_os("KUBECONFIG")
                .map(PathBuf::from)
                .expect("BATON_E2E_USE_EXISTING=1 needs KUBECONFIG to point at the cluster");
            return ClusterHandle { kubeconfig, operator_kubeconfig: None, state: None };
        }
        start_control_plane()
    })
}

/// Starts the local control plane in a fresh state directory and arranges for it to be stopped
/// when this process exits, however it exits: a detached watchdog waits for our pid to go away
/// and then runs `stop.sh`, so a failed or interrupted run leaves no process behind.
fn start_control_plane() -> ClusterHandle {
    let scripts = repo_root().join("e2e/control-plane");
    let state = std::env::temp_dir().join(format!("baton-e2e-{}", std::process::id()));
    let status = Command::new("bash")
        .arg(scripts.join("start.sh"))
        .arg(&state)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("running e2e/control-plane/start.sh");
    watch_over(&state);
    assert!(
        status.success(),
        "the local control plane did not start; logs are in {}",
        state.display()
    );
    ClusterHandle {
        kubeconfig: state.join("kubeconfig"),
        operator_kubeconfig: Some(state.join("kubeconfig-baton")),
        state: Some(state),
    }
}

/// Arranges for the control plane in `state` to be stopped when this process exits, however it
/// exits: a detached watchdog waits for our pid to go away and then runs `stop.sh`, so a failed
/// or interrupted run leaves no process behind.
pub fn watch_over(state: &Path) {
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; exec bash '{stop}' '{state}'",
        pid = std::process::id(),
        stop = repo_root().join("e2e/control-plane/stop.sh").display(),
        state = state.display(),
    );
    // Never waited for: the watchdog must outlive this process to clean up after it.
    #[allow(clippy::zombie_processes)]
    Command::new("setsid")
        .args(["bash", "-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the control-plane watchdog");
}

/// A client for a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("reading the test kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

/// An administrator client for the cluster under test, with `crds/` and baton's admission
/// policy (`config/policy/`) installed.
pub async fn admin_client() -> Client {
    let client = client_for(&cluster().kubeconfig).await;
    install_crds(&client).await;
    static POLICY: std::sync::Once = std::sync::Once::new();
    POLICY.call_once(policy::install_policy);
    client
}

/// Server-side applies `crds/*.yaml` and waits until the API server serves them.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in ["apply.yaml", "operation.yaml"] {
        let path = repo_root().join("crds").join(file);
        let text = std::fs::read_to_string(&path).expect("reading a CRD file");
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).expect("a CRD");
        let name = crd.metadata.name.clone().expect("a named CRD");
        crds.patch(&name, &PatchParams::apply(HARNESS_MANAGER).force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|error| panic!("installing {file}: {error}"));
        wait_for(&format!("CRD {name} to be Established"), Duration::from_secs(30), || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .into_iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            }
        })
        .await;
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` saying what
/// it was waiting for.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A namespace of one test, deleted when dropped unless `BATON_E2E_KEEP=1`.
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<unique suffix>`.
    pub async fn create(client: &Client, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        TestNamespace::create_named(client, &name).await
    }

    /// Creates the namespace `name`.
    pub async fn create_named(client: &Client, name: &str) -> TestNamespace {
        let name = name.to_owned();
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|error| panic!("creating namespace {name}: {error}"));
        TestNamespace { name, client: client.clone() }
    }
}

fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("e2e-{prefix}-{:x}{:x}", nanos % 0xfffff, COUNTER.fetch_add(1, Ordering::Relaxed))
}

static KEEP_NAMESPACES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps every test namespace: benchmarks must not count the namespace controller's clean-up.
pub fn keep_namespaces() {
    KEEP_NAMESPACES.store(true, Ordering::Relaxed);
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if KEEP_NAMESPACES.load(Ordering::Relaxed)
            || std::env::var("BATON_E2E_KEEP").is_ok_and(|v| v == "1")
        {
            return;
        }
        let client = self.client.clone();
        let name = self.name.clone();
        // Best effort, off the test's runtime: the namespace controller does the rest.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ =
                    Api::<Namespace>::all(client).delete(&name, &DeleteParams::background()).await;
            });
        }
    }
}

/// Creates service account `name` in `namespace` bound to a Role with `rules` there.
pub async fn service_account_with_rules(
    client: &Client,
    namespace: &str,
    name: &str,
    rules: Vec<PolicyRule>,
) {
    let meta = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..ObjectMeta::default()
    };
    let account = ServiceAccount { metadata: meta, ..ServiceAccount::default() };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::apply(HARNESS_MANAGER).force(), &Patch::Apply(&account))
        .await
        .expect("applying the service account");
    grant(client, namespace, (namespace, name), rules).await;
}

/// Grants service account `account` (`(namespace, name)`) `rules` in `namespace`, with a Role
/// and RoleBinding named after the account.
pub async fn grant(
    client: &Client,
    namespace: &str,
    account: (&str, &str),
    rules: Vec<PolicyRule>,
) {
    let (account_namespace, name) = account;
    let pp = PatchParams::apply(HARNESS_MANAGER).force();
    let meta = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..ObjectMeta::default()
    };
    let role = Role { metadata: meta.clone(), rules: Some(rules) };
    Api::<Role>::namespaced(client.clone(), namespace)
        .patch(name, &pp, &Patch::Apply(&role))
        .await
        .expect("applying the role");
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.to_owned(),
            namespace: Some(account_namespace.to_owned()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .patch(name, &pp, &Patch::Apply(&binding))
        .await
        .expect("applying the role binding");
    // The authorizer learns of new bindings through a cache: wait until it has.
    let first = role.rules.as_ref().and_then(|rules| rules.first()).cloned().unwrap_or_default();
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{account_namespace}:{name}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{account_namespace}"),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                group: first.api_groups.and_then(|groups| groups.into_iter().next()),
                resource: first.resources.and_then(|resources| resources.into_iter().next()),
                verb: first.verbs.into_iter().next(),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    wait_for(
        &format!("RBAC to allow {name} in {namespace}"),
        std::time::Duration::from_secs(30),
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

/// Runs `kubectl` against the cluster under test and returns its output.
pub fn kubectl(args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .output()
        .expect("kubectl is installed (see e2e/control-plane/README.md)")
}

/// Installs the operator's RBAC from `config/rbac/` (idempotent).
pub async fn install_operator_rbac(client: &Client) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let text = std::fs::read_to_string(repo_root().join("config/rbac/role.yaml"))
        .expect("config/rbac/role.yaml");
    let pp = PatchParams::apply(HARNESS_MANAGER).force();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(document).expect("a YAML document");
        match value["kind"].as_str() {
            Some("ClusterRole") => {
                let role: ClusterRole = serde_json::from_value(value).expect("a ClusterRole");
                let name = role.metadata.name.clone().unwrap_or_default();
                Api::<ClusterRole>::all(client.clone())
                    .patch(&name, &pp, &Patch::Apply(&role))
                    .await
                    .expect("applying the ClusterRole");
            }
            Some("ClusterRoleBinding") => {
                let binding: ClusterRoleBinding =
                    serde_json::from_value(value).expect("a ClusterRoleBinding");
                let name = binding.metadata.name.clone().unwrap_or_default();
                Api::<ClusterRoleBinding>::all(client.clone())
                    .patch(&name, &pp, &Patch::Apply(&binding))
                    .await
                    .expect("applying the ClusterRoleBinding");
            }
            other => panic!("unexpected kind {other:?} in config/rbac/role.yaml"),
        }
    }
}

static BINARY_OVERRIDE: OnceLock<PathBuf> = OnceLock::new();

/// Makes [`Operator`] run `binary` instead of the debug build (benchmarks run the release one).
pub fn use_baton_binary(binary: PathBuf) {
    let _ = BINARY_OVERRIDE.set(binary);
}

static LOG_OVERRIDE: OnceLock<String> = OnceLock::new();

/// Makes [`Operator`] log with `filter` (a `RUST_LOG` value) instead of the tests' debug level:
/// benchmarks measure the operator as users run it.
pub fn use_operator_log(filter: &str) {
    let _ = LOG_OVERRIDE.set(filter.to_owned());
}

/// The `baton` binary of this checkout (and `kubectl-baton` beside it), built once per test run.
pub fn baton_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // Benchmarks run an optimized operator they built themselves.
            if let Some(binary) = BINARY_OVERRIDE.get() {
                return binary.clone();
            }
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--quiet", "-p", "baton", "--bins"])
                .current_dir(repo_root())
                .status()
                .expect("running cargo build");
            assert!(status.success(), "building the baton binary failed");
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target"));
            target.join("debug").join("baton")
        })
        .clone()
}

/// A running `baton run` process, scoped to one namespace, killed when dropped.
pub struct Operator {
    child: std::process::Child,
    /// Where its logs go.
    pub log: PathBuf,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`.
    pub admin: std::net::SocketAddr,
}

/// Timings that make failover quick in tests: a 3 s lease renewed 1 s before expiry. Health
/// keeps the operator's own default (watches, with a safety re-read each minute), so a test that
/// sees a change within seconds sees it through a watch.
pub const TEST_LEASE_SECONDS: u64 = 3;

impl Operator {
    /// Starts an operator that runs with the operator's own service account (RBAC from
    /// `config/rbac/`) and watches only `namespace`.
    pub async fn start(client: &Client, namespace: &str) -> Operator {
        Operator::start_with(client, namespace, &[]).await
    }

    /// Like [`Operator::start`], with extra `baton run` flags.
    pub async fn start_with(client: &Client, namespace: &str, extra: &[&str]) -> Operator {
        Operator::start_with_env(client, namespace, extra, &[]).await
    }

    /// Like [`Operator::start_with`], with extra environment variables for the process (a
    /// preloaded library that shifts its wall clock, for one).
    pub async fn start_with_env(
        client: &Client,
        namespace: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let lease = TEST_LEASE_SECONDS.to_string();
        let mut args = vec!["--lease-duration-seconds", &lease, "--lease-grace-seconds", "1"];
        args.extend_from_slice(extra);
        Operator::spawn(client, namespace, &args, env).await
    }

    /// An operator with `baton run`'s own defaults (no test timings) and `args`.
    pub async fn start_plain(client: &Client, namespace: &str, extra: &[&str]) -> Operator {
        Operator::spawn(client, namespace, extra, &[]).await
    }

    async fn spawn(
        client: &Client,
        namespace: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        install_operator_rbac(client).await;
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let logs = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&logs).expect("creating target/e2e-logs");
        let log = logs.join(format!("{namespace}-{}.log", COUNT.fetch_add(1, Ordering::Relaxed)));
        let file = std::fs::File::create(&log).expect("creating the operator log");
        let kubeconfig =
            cluster().operator_kubeconfig.clone().unwrap_or_else(|| cluster().kubeconfig.clone());
        let admin = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port");
        let child = Command::new(baton_binary())
            .args(["run", "--namespace", namespace, "--admin-address", &admin.to_string()])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", LOG_OVERRIDE.get().map_or("info,baton=debug", String::as_str))
            .env_remove("POD_NAME")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log handle"))
            .stderr(file)
            .spawn()
            .expect("starting baton run");
        Operator { child, log, admin }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as Kubernetes stops a pod: how long the process took to exit, or `None` when it
    /// still ran after `within` (it is then killed).
    pub fn terminate(&mut self, within: Duration) -> Option<Duration> {
        let sent = std::time::Instant::now();
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        while sent.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(sent.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        None
    }

    /// SIGKILL: no cleanup, no lease release, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.0 GET on loopback: `(status code, body)`, or `None` while nothing answers.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// Runs `kubectl baton ARGS` the way a user would: kubectl finds the plugin on the PATH.
pub fn kubectl_baton(args: &[&str]) -> std::process::Output {
    let bin_dir = baton_binary().parent().map(Path::to_path_buf).unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin_dir];
    dirs.extend(std::env::split_paths(&path));
    Command::new("kubectl")
        .arg("baton")
        .args(args)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env("PATH", std::env::join_paths(dirs).expect("a PATH"))
        .output()
        .expect("kubectl is installed")
}

/// Stops kube-apiserver (SIGTERM), keeps it down for `pause`, and starts it again with the same
/// command line, as an outage of the API server. Returns `false` (doing nothing) on a cluster the
/// harness did not start.
pub async fn restart_apiserver(pause: std::time::Duration) -> bool {
    let Some(state) = cluster().state.clone() else { return false };
    let stopped = StoppedApiserver::stop(&state).await;
    tokio::time::sleep(pause).await;
    stopped.start(&cluster().kubeconfig).await;
    true
}

/// A kube-apiserver the harness stopped, with what it needs to start it again: the same
/// command line, so the same port, certificates and etcd. Dropped without
/// [`StoppedApiserver::start`] (a test that failed during the outage), it starts the API server
/// again all the same, so no later test of the cluster finds it gone.
#[must_use = "an API server left stopped fails every later test of its cluster"]
pub struct StoppedApiserver {
    state: PathBuf,
    args: Vec<String>,
    started: bool,
}

impl StoppedApiserver {
    /// Stops the kube-apiserver of the control plane in `state` (SIGTERM, then SIGKILL if it is
    /// still draining requests after 10 s) and waits until it is gone.
    pub async fn stop(state: &Path) -> StoppedApiserver {
        let pid_file = state.join("kube-apiserver.pid");
        let pid = std::fs::read_to_string(&pid_file).expect("kube-apiserver.pid").trim().to_owned();
        let cmdline =
            std::fs::read(format!("/proc/{pid}/cmdline")).expect("the kube-apiserver command line");
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let gone = std::path::Path::new("/proc").join(&pid);
        for signal in ["-TERM", "-KILL"] {
            if !gone.exists() {
                break;
            }
            // A failure here means it exited between the check and the signal.
            let _ = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
            for _ in 0..200 {
                if !gone.exists() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        assert!(!gone.exists(), "kube-apiserver {pid} did not exit after SIGKILL");
        StoppedApiserver { state: state.to_owned(), args, started: false }
    }

    /// Launches the API server again, recording its pid so `stop.sh` and the watchdog stop it.
    fn launch(&mut self) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let pid_file = self.state.join("kube-apiserver.pid");
        let log = self.state.join("kube-apiserver.log");
        let started = Command::new("bash")
            .args(["-c", "setsid \"$@\" >> \"$LOG\" 2>&1 < /dev/null & echo $!", "restart"])
            .args(&self.args)
            .env("LOG", &log)
            .output()
            .expect("restarting kube-apiserver");
        let new_pid = String::from_utf8_lossy(&started.stdout).trim().to_owned();
        std::fs::write(&pid_file, format!("{new_pid}\n")).expect("recording the new pid");
        let mut pids = std::fs::read_to_string(self.state.join("pids")).unwrap_or_default();
        pids.push_str(&format!("{new_pid}\n"));
        std::fs::write(self.state.join("pids"), pids).expect("recording the new pid");
    }

    /// Starts it again and waits until it serves `kubeconfig`'s requests.
    pub async fn start(mut self, kubeconfig: &Path) {
        self.launch();
        let client = client_for(kubeconfig).await;
        wait_for("kube-apiserver to serve again", std::time::Duration::from_secs(60), || {
            let client = client.clone();
            async move { client.apiserver_version().await.ok().map(|_| ()) }
        })
        .await;
    }
}

impl Drop for StoppedApiserver {
    fn drop(&mut self) {
        self.launch();
    }
}

impl Operator {
    /// The replica identity the operator logged at start-up (its lease holder identity).
    pub async fn identity(&self) -> String {
        let log = self.log.clone();
        wait_for("the operator to log its identity", std::time::Duration::from_secs(30), || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).ok()?;
                let start = text.find("identity=")? + "identity=".len();
                let identity: String =
                    text[start..].chars().take_while(|c| !c.is_whitespace()).collect();
                (!identity.is_empty()).then_some(identity)
            }
        })
        .await
    }
}

/// Pipes `manifests` to `kubectl apply --server-side --dry-run=server`: the API server validates
/// every object and creates none.
pub fn server_side_dry_run(manifests: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args([
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=baton-e2e",
            "-f",
            "-",
        ])
        .env("KUBECONFIG", &cluster().kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    child
        .stdin
        .take()
        .expect("kubectl's stdin")
        .write_all(manifests.as_bytes())
        .expect("writing to kubectl");
    child.wait_with_output().expect("waiting for kubectl")
}
