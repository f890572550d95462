//! The operator's image, run as a cluster runs it. `hack/image.sh` builds it (what `make image`
//! does); the test checks the OCI archive's configuration (user, entrypoint, labels, the SBOM),
//! loads the archive into podman and runs it with `podman run --network host` as a kubelet
//! would: the image's own user and entrypoint, the container's args replacing its command, a
//! read-only root filesystem, no capabilities, and the service account's token, CA and
//! namespace mounted at `/var/run/secrets/kubernetes.io/serviceaccount/` with the
//! `KUBERNETES_SERVICE_*` variables (the in-cluster config, no kubeconfig). The operator then
//! carries an Apply to `Succeeded`: one operation on the cluster it runs in, and one on a
//! cluster registered by a kubeconfig that names no CA, reached as `localhost` (a name looked
//! up by the static binary) and verified against the image's CA bundle, to which the test adds
//! the local control plane's CA as an administrator adds a private CA. A dynamic binary, a wrong
//! entrypoint or user, a missing CA bundle or a file the user cannot read fails here as in a pod.
//!
//! podman runs here with runc and the cgroupfs manager, and without its default ulimits:
//! podman's default runtime (crun) refuses these machines' hybrid cgroup hierarchy, and its
//! default limits (1,048,576 open files) exceed the hard limits, which root may not raise here
//! (no CAP_SYS_RESOURCE). `hack/image.sh` installs podman and runc (Debian packages).
//!
//! A separate test binary: building the image takes minutes on a machine without the cached
//! release build (`make tools` builds it first), and no timing-bound test of the main suite
//! runs meanwhile. podman needs root (CI runs as root); elsewhere the test uses sudo.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use baton::crd::{
    Apply, ApplyPhase, ApplySpec, ApplyTemplate, DedupOn, FailurePolicy, OperationEntry, Target,
};
use baton_e2e::{
    TestNamespace, admin_client, cluster, fleet, http_get, install_operator_rbac,
    service_account_with_rules,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

/// The image's user, as the chart's security context also names it.
const USER: &str = "65532:65532";
/// How long `hack/image.sh` may take: a first build on a fresh clone (cargo-auditable, then
/// the release build of every dependency) took 18 minutes on a busy 2-core machine.
const BUILD_BOUND: Duration = Duration::from_secs(30 * 60);
/// The service account the Apply impersonates.
const DEPLOYER: &str = "deployer";
/// The name the local control plane is registered under.
const REGISTERED: &str = "self";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `program args` as root: directly when the test is root, else through sudo.
fn as_root(program: &str) -> Command {
    // `id -u` rather than a libc call: the workspace forbids unsafe code.
    let uid = Command::new("id").arg("-u").output().expect("id runs");
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg(program);
        command
    }
}

/// Builds the image with `hack/image.sh` (bounded by [`BUILD_BOUND`]) and returns its
/// `key: value` report.
fn build_image() -> Vec<(String, String)> {
    let mut command = Command::new("timeout");
    // What cargo sets for this test process describes the e2e crate; a build script that
    // watches one of these (ring's watches CARGO_MANIFEST_DIR) would otherwise see it change
    // and rebuild, with everything above it, the release build `make tools` just made.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let from_cargo_test = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_", "CARGO_BIN_"]
            .iter()
            .any(|prefix| key.starts_with(prefix))
            || key == "CARGO_PRIMARY_PACKAGE"
            || key == "CARGO_TARGET_TMPDIR";
        if from_cargo_test {
            command.env_remove(key.as_ref());
        }
    }
    let output = command
        .arg(BUILD_BOUND.as_secs().to_string())
        .arg("bash")
        .arg(repo_root().join("hack/image.sh"))
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("running hack/image.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "hack/image.sh failed ({}; exit 124 is the {BUILD_BOUND:?} bound):\n{stdout}",
        output.status
    );
    print!("{stdout}");
    stdout
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

fn field<'a>(report: &'a [(String, String)], key: &str) -> &'a str {
    report
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("hack/image.sh reported no {key}"))
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The image's configuration (`config` of its OCI config blob), with its layers unpacked into
/// `rootfs` as root, so owners and modes are the image's.
fn unpack(archive: &Path, dir: &Path) -> (Value, PathBuf) {
    let layout = dir.join("oci");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&layout).expect("creating the layout directory");
    run(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout));
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        layout.join("blobs/sha256").join(hex)
    };
    let index = read_json(&layout.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().expect("a manifest");
    let manifest = read_json(&blob(manifest_digest));
    let config = read_json(&blob(manifest["config"]["digest"].as_str().expect("a config")));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer: the root filesystem");
    std::fs::create_dir_all(&rootfs).expect("creating the root filesystem directory");
    for layer in layers {
        let digest = layer["digest"].as_str().expect("a layer digest");
        // GNU tar recognises a compressed layer by itself.
        run(as_root("tar")
            .args(["--same-owner", "--same-permissions", "-xf"])
            .arg(blob(digest))
            .arg("-C")
            .arg(&rootfs));
    }
    (config, rootfs)
}

/// A kubeconfig's server and user token.
fn server_and_token(kubeconfig: &Path) -> (String, String) {
    let text = std::fs::read_to_string(kubeconfig).expect("reading a kubeconfig");
    let value: Value = serde_yaml_ng::from_str(&text).expect("a kubeconfig");
    let server = value["clusters"][0]["cluster"]["server"].as_str().expect("a server");
    let token = value["users"][0]["user"]["token"].as_str().expect("a token");
    (server.to_owned(), token.to_owned())
}

/// `podman` as root with the settings these machines need (see the module's header).
fn podman(conf: &Path) -> Command {
    let mut command = as_root("env");
    command
        .arg(format!("CONTAINERS_CONF={}", conf.display()))
        .args(["podman", "--storage-driver", "vfs", "--runtime", "runc"])
        .args(["--cgroup-manager", "cgroupfs"]);
    command
}

/// The operator's container, removed when dropped.
struct Container {
    child: std::process::Child,
    name: String,
    conf: PathBuf,
    log: PathBuf,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&self.conf)
            .args(["rm", "--force", "--time", "0", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Container {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The container's process on this host, once it runs.
    fn pid(&self) -> Option<u32> {
        let output = podman(&self.conf)
            .args(["inspect", "--format", "{{.State.Pid}}", &self.name])
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok().filter(|pid| *pid > 0)
    }
}

fn spec(namespace: &str) -> ApplySpec {
    let operation = |name: &str, cluster: Option<&str>| OperationEntry {
        name: name.to_owned(),
        target: Target { namespace: namespace.to_owned(), cluster: cluster.map(str::to_owned) },
        manifests: Some(vec![json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": format!("from-the-image-{name}")},
            "data": {"step": name},
        })]),
        timeout: "2m".to_owned(),
        values: Default::default(),
        approval: None,
        soak: None,
    };
    ApplySpec {
        operations: vec![operation("local", None), operation("registered", Some(REGISTERED))],
        template: None::<ApplyTemplate>,
        on_failure: FailurePolicy::Halt,
        max_concurrent: 1,
        stop: false,
        dismiss_error: None,
        service_account_name: Some(DEPLOYER.to_owned()),
        idempotency_key: None,
        dedup_on: DedupOn::Success,
        max_failed: None,
        approvals: Vec::new(),
        health_checks: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_its_user_and_carries_an_apply_to_succeeded() {
    let report = tokio::task::spawn_blocking(build_image).await.expect("building the image");
    let archive = PathBuf::from(field(&report, "archive"));

    let work = std::env::temp_dir().join(format!("baton-image-{}", std::process::id()));
    let _ = as_root("rm").arg("-rf").arg(&work).status();
    std::fs::create_dir_all(&work).expect("creating the work directory");
    let (image, rootfs) = unpack(&archive, &work);
    let config = &image["config"];

    // What users deploy: the labels, the user, the command, the SBOM.
    let cargo_toml = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    let version = cargo_toml
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the crate version");
    assert_eq!(config["User"], USER, "{config:#}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version, "{labels:#}");
    let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(repo_root()).output();
    let head = String::from_utf8_lossy(&head.expect("git runs").stdout).trim().to_owned();
    let revision = labels["org.opencontainers.image.revision"].as_str().unwrap_or_default();
    assert!(revision.starts_with(&head) && !head.is_empty(), "revision {revision}, HEAD {head}");
    assert_eq!(field(&report, "image"), format!("localhost/baton:{version}"));
    // The entrypoint is proved below by running the image (podman takes it from the image,
    // as a kubelet does when the chart names no command); the command is what the chart's
    // container args replace.
    let command: Vec<String> = serde_json::from_value(config["Cmd"].clone()).expect("a command");
    assert_eq!(command, ["run"], "the image's command runs the operator");
    let sbom = read_json(Path::new(field(&report, "sbom").split(' ').next().unwrap_or_default()));
    let crates = sbom["packages"].as_array().map(Vec::len).unwrap_or_default();
    assert!(crates > 100, "the SBOM lists {crates} crates");

    // The cluster, and what the operator needs in it.
    let client = admin_client().await;
    install_operator_rbac(&client).await;
    let ns = TestNamespace::create(&client, "image").await;
    let namespace = ns.name.clone();
    let configmaps = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: ["get", "list", "watch", "create", "update", "patch"].map(String::from).to_vec(),
        ..PolicyRule::default()
    };
    service_account_with_rules(&client, &namespace, DEPLOYER, vec![configmaps]).await;

    // A registration naming no CA: the client verifies the API server against the image's
    // system roots, reached by name.
    let handle = cluster();
    let (server, admin_token) = server_and_token(&handle.kubeconfig);
    let port = server.rsplit(':').next().expect("a port").trim_end_matches('/').to_owned();
    let registration = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {REGISTERED}\n  cluster:\n    \
         server: https://localhost:{port}\nusers:\n- name: admin\n  user:\n    token: \
         {admin_token}\ncontexts:\n- name: {REGISTERED}\n  context:\n    cluster: {REGISTERED}\n    \
         user: admin\ncurrent-context: {REGISTERED}\n"
    );
    fleet::put_secret(&client, &namespace, REGISTERED, &[("value", &registration)]).await;
    fleet::allow_reading(&client, &namespace, DEPLOYER, &[REGISTERED]).await;

    // What the kubelet mounts into a pod: the service account's token, CA and namespace.
    let state =
        handle.state.clone().expect("the harness's own control plane (not an existing cluster)");
    let ca = std::fs::read(state.join("pki/ca.crt")).expect("the control plane's CA");
    let operator_kubeconfig =
        handle.operator_kubeconfig.clone().expect("the operator's kubeconfig");
    let (_, operator_token) = server_and_token(&operator_kubeconfig);
    let account = work.join("serviceaccount");
    std::fs::create_dir_all(&account).expect("creating the service account directory");
    std::fs::write(account.join("token"), &operator_token).expect("writing the token");
    std::fs::write(account.join("ca.crt"), &ca).expect("writing the CA");
    std::fs::write(account.join("namespace"), "baton-system").expect("writing the namespace");
    // The image's CA bundle with the control plane's CA added, in place of the image's own.
    let mut roots =
        std::fs::read(rootfs.join("etc/ssl/certs/ca-certificates.crt")).expect("the CA bundle");
    assert!(roots.len() > 100_000, "the image's CA bundle has only {} bytes", roots.len());
    roots.extend_from_slice(&ca);
    let bundle = work.join("ca-certificates.crt");
    std::fs::write(&bundle, &roots).expect("writing the CA bundle");
    // Readable by the image's user, as a kubelet's projected volume is (mode 0644).
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(&work));

    let conf = work.join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").expect("containers.conf");
    run(podman(&conf).arg("load").arg("--quiet").arg("--input").arg(&archive));
    // Containers of runs that were killed before they could remove theirs.
    let leftovers = podman(&conf)
        .args(["ps", "--all", "--quiet", "--filter", "name=^baton-image-"])
        .output()
        .expect("podman ps");
    for id in String::from_utf8_lossy(&leftovers.stdout).split_whitespace() {
        let _ = podman(&conf).args(["rm", "--force", "--time", "0", id]).output();
    }

    let logs = repo_root().join("target/e2e-logs");
    std::fs::create_dir_all(&logs).expect("creating target/e2e-logs");
    let log = logs.join(format!("{namespace}-image.log"));
    let file = std::fs::File::create(&log).expect("creating the operator log");
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port");
    let name = format!("baton-image-{}", std::process::id());
    let child = podman(&conf)
        .args(["run", "--rm", "--name", &name, "--network", "host", "--pull", "never"])
        // The chart's security context: read-only root filesystem, no capabilities, no
        // privilege escalation; the user is the image's own.
        .args(["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"])
        .arg("--volume")
        .arg(format!("{}:/var/run/secrets/kubernetes.io/serviceaccount:ro", account.display()))
        .arg("--volume")
        .arg(format!("{}:/etc/ssl/certs/ca-certificates.crt:ro", bundle.display()))
        .args(["--env", "KUBERNETES_SERVICE_HOST=127.0.0.1"])
        .arg("--env")
        .arg(format!("KUBERNETES_SERVICE_PORT={port}"))
        .args(["--env", &format!("POD_NAME={name}"), "--env", "RUST_LOG=info,baton=debug"])
        .arg(field(&report, "image"))
        .args(["run", "--namespace", &namespace, "--admin-address", &admin.to_string()])
        .args(["--lease-duration-seconds", "3", "--lease-grace-seconds", "1"])
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("a log handle"))
        .stderr(file)
        .spawn()
        .expect("starting podman run");
    let mut container = Container { child, name, conf, log };

    // Ready, and running as the image's user; a container that exits fails at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(exit)) = container.child.try_wait() {
            panic!("the image's operator exited ({exit}):\n{}", container.log());
        }
        if http_get(admin, "/readyz").await.is_some_and(|(code, _)| code == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the image's operator was not ready within 60 s:\n{}",
            container.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = container.pid().expect("the container's process");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the operator's process status");
    let ids = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .map(|ids| ids.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(ids("Uid:"), "65532 65532 65532 65532", "{status}");
    assert_eq!(ids("Gid:"), "65532 65532 65532 65532", "{status}");
    assert_eq!(ids("CapEff:"), "0000000000000000", "{status}");

    let applies: Api<Apply> = Api::namespaced(client.clone(), &namespace);
    applies
        .create(&PostParams::default(), &Apply::new("from-the-image", spec(&namespace)))
        .await
        .expect("creating the Apply");
    let settled = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let apply = applies.get("from-the-image").await.expect("reading the Apply");
            let phase = apply.status.as_ref().and_then(|status| status.phase);
            if matches!(phase, Some(ApplyPhase::Succeeded | ApplyPhase::Failed)) {
                return apply;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let apply = settled.unwrap_or_else(|_| {
        panic!("the Apply did not settle within 90 s; the operator's log:\n{}", container.log())
    });
    let status = serde_json::to_string_pretty(&apply.status).unwrap_or_default();
    assert_eq!(
        apply.status.and_then(|status| status.phase),
        Some(ApplyPhase::Succeeded),
        "{status}\nthe operator's log:\n{}",
        container.log()
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    for name in ["from-the-image-local", "from-the-image-registered"] {
        configmaps.get(name).await.unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    drop(container);
    let _ = as_root("rm").arg("-rf").arg(&work).status();
}
