//! The Helm chart `charts/baton/`: its CRDs are the generated ones, it lints and renders what
//! the operator needs, and the API server accepts every object it renders (server-side dry
//! run). Helm comes from `hack/helm.sh`: the `helm` on PATH, or a pinned helm built from Go
//! modules on first use and cached in `~/.cache/baton/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use baton_e2e::{TestNamespace, admin_client};
use serde::Deserialize;
use serde_json::{Value, json};

/// The release namespace of the rendering tests.
const NAMESPACE: &str = "baton-system";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart_dir() -> String {
    repo_root().join("charts/baton").display().to_string()
}

/// Runs `hack/helm.sh` with `args`: `Ok(stdout)` or `Err(stderr)`. The first call of the
/// process builds helm if needed; the others wait for it instead of racing (the script also
/// locks across processes).
fn try_helm(args: &[&str]) -> Result<String, String> {
    static READY: OnceLock<()> = OnceLock::new();
    let run = |args: &[&str]| {
        let output = Command::new("bash")
            .arg(repo_root().join("hack/helm.sh"))
            .args(args)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .expect("running hack/helm.sh");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() { Ok(stdout) } else { Err(format!("{stdout}{stderr}")) }
    };
    READY.get_or_init(|| {
        if let Err(error) = run(&["version", "--short"]) {
            panic!("hack/helm.sh could not provide helm:\n{error}");
        }
    });
    run(args)
}

/// Runs `hack/helm.sh` with `args` and returns its stdout; fails the test on an error.
fn helm(args: &[&str]) -> String {
    try_helm(args)
        .unwrap_or_else(|error| panic!("hack/helm.sh {} failed:\n{error}", args.join(" ")))
}

/// `helm template <release> charts/baton --namespace <namespace> <extra>` as the rendered text.
fn render_text(release: &str, namespace: &str, extra: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec!["template", release, chart.as_str(), "--namespace", namespace];
    args.extend_from_slice(extra);
    helm(&args)
}

/// The documents of a multi-document YAML stream, empty ones left out.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("a YAML document"))
        .filter(|value| !value.is_null())
        .collect()
}

/// The chart rendered as release `t` in `baton-system` with `extra` arguments.
fn render(extra: &[&str]) -> Vec<Value> {
    documents(&render_text("t", NAMESPACE, extra))
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    let mut kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    kinds.sort_unstable();
    kinds
}

/// The one object of `kind`.
fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let mut found = objects.iter().filter(|o| o["kind"] == kind);
    let object = found.next().unwrap_or_else(|| panic!("no {kind} rendered"));
    assert!(found.next().is_none(), "more than one {kind} rendered");
    object
}

/// The operator crate's version (`version` of the repository's Cargo.toml): the image's tag.
fn crate_version() -> String {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the crate's version")
        .to_owned()
}

/// The operator container's args of a rendering.
fn args(objects: &[Value]) -> Vec<String> {
    let container = &the(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    serde_json::from_value(container["args"].clone()).expect("container args are strings")
}

#[test]
fn chart_crds_match_the_generated_crds() {
    for file in ["apply.yaml", "operation.yaml"] {
        let generated = repo_root().join("crds").join(file);
        let copied = repo_root().join("charts/baton/crds").join(file);
        let generated = std::fs::read(&generated).expect("reading crds/");
        let copied = std::fs::read(&copied).unwrap_or_default();
        assert!(
            generated == copied,
            "charts/baton/crds/{file} differs from crds/{file}; copy it:\n    \
             cp crds/{file} charts/baton/crds/{file}"
        );
    }
    let mut chart_files: Vec<String> = std::fs::read_dir(repo_root().join("charts/baton/crds"))
        .expect("reading charts/baton/crds/")
        .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    chart_files.sort();
    assert_eq!(chart_files, ["apply.yaml", "operation.yaml"], "charts/baton/crds/ has extra files");
}

#[test]
fn chart_lints_and_renders() {
    let chart = chart_dir();
    let lint = helm(&["lint", "--strict", chart.as_str()]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    helm(&["lint", "--strict", chart.as_str(), "--set", "replicas=1,serviceMonitor.enabled=true"]);

    // Defaults: two replicas, so a PodDisruptionBudget; no ServiceMonitor; no CRDs (they are
    // installed from crds/ by `helm install`, never templated).
    let objects = render(&[]);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    // The admission policy lets the chart's own service account write baton's records.
    let policy = the(&objects, "ValidatingAdmissionPolicy");
    let writers = policy["spec"]["variables"][0]["expression"].as_str().unwrap_or_default();
    assert!(writers.contains(&format!("system:serviceaccount:{NAMESPACE}:t-baton")), "{writers}");
    assert!(
        !kinds(&render(&["--set", "admissionPolicy.enabled=false"]))
            .contains(&"ValidatingAdmissionPolicy"),
        "admissionPolicy.enabled=false installs no policy"
    );
    for object in &objects {
        let name = object["metadata"]["name"].as_str().expect("a named object");
        assert!(name.starts_with("t-baton"), "{name} is not named after the release");
        assert_eq!(object["metadata"]["labels"]["app.kubernetes.io/instance"], "t", "{name}");
        let cluster_scoped = matches!(
            object["kind"].as_str(),
            Some(
                "ClusterRole"
                    | "ClusterRoleBinding"
                    | "ValidatingAdmissionPolicy"
                    | "ValidatingAdmissionPolicyBinding"
            )
        );
        let expected = if cluster_scoped { Value::Null } else { json!(NAMESPACE) };
        assert_eq!(object["metadata"]["namespace"], expected, "namespace of {name}");
    }

    // RBAC: exactly the rules of config/rbac/role.yaml, bound to the chart's service account.
    let role_yaml = std::fs::read_to_string(repo_root().join("config/rbac/role.yaml"))
        .expect("reading config/rbac/role.yaml");
    let reference = documents(&role_yaml);
    assert_eq!(the(&objects, "ClusterRole")["rules"], the(&reference, "ClusterRole")["rules"]);
    let binding = the(&objects, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], the(&objects, "ClusterRole")["metadata"]["name"]);
    let account = the(&objects, "ServiceAccount")["metadata"]["name"].clone();
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}])
    );

    // The Deployment runs `baton run` with the values' flags, as the service account.
    let deployment = the(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account);
    let container = &pod["containers"][0];
    // The image `make image` builds: localhost/baton, tagged with the operator crate's version
    // (the chart's appVersion must follow it); a digest pins it.
    let image = format!("localhost/baton:{}", crate_version());
    assert_eq!(container["image"], image);
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let pinned = render(&["--set", &format!("image.digest={digest}")]);
    let pinned = &the(&pinned, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(pinned["image"], format!("{image}@{digest}"));
    assert_eq!(
        args(&objects),
        [
            "run",
            "--log-format=json",
            "--default-service-account=default",
            "--lease-duration-seconds=15",
            "--lease-grace-seconds=5",
            "--idempotency-ttl-seconds=3600",
            "--health-reread-seconds=60",
            "--concurrency=16",
        ]
    );
    assert_eq!(
        container["env"][0],
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    );
    assert_eq!(
        container["ports"],
        json!([{"name": "admin", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "admin"}));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "admin"}));
    assert!(container["resources"]["requests"].is_object(), "{container}");
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(security["seccompProfile"], json!({"type": "RuntimeDefault"}));

    // The metrics Service and the PodDisruptionBudget select the operator pods.
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in selector.as_object().expect("matchLabels") {
        assert_eq!(&pod_labels[key], value, "pod label {key}");
    }
    let service = the(&objects, "Service");
    assert_eq!(&service["spec"]["selector"], selector);
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "metrics", "port": 8080, "targetPort": "admin", "protocol": "TCP"}])
    );
    let budget = the(&objects, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], selector);

    // One replica: no PodDisruptionBudget (it would block every drain).
    let single = render(&["--set", "replicas=1"]);
    assert_eq!(the(&single, "Deployment")["spec"]["replicas"], 1);
    assert!(!kinds(&single).contains(&"PodDisruptionBudget"), "{:?}", kinds(&single));

    // The ServiceMonitor scrapes the metrics port of the metrics Service.
    let monitored = render(&["--set", "serviceMonitor.enabled=true"]);
    let monitor = the(&monitored, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["namespace"], NAMESPACE);
    assert_eq!(&monitor["spec"]["selector"]["matchLabels"], selector);
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    // The flags follow the values; `--namespace` only when one is set.
    let tuned = render(&[
        "--set",
        "watchNamespace=apps,logFormat=text,concurrency=4,healthRereadSeconds=2",
        "--set",
        "defaultServiceAccount=deployer,leaseDurationSeconds=30,leaseGraceSeconds=10",
        "--set",
        "idempotencyTtlSeconds=600",
    ]);
    assert_eq!(
        args(&tuned),
        [
            "run",
            "--log-format=text",
            "--default-service-account=deployer",
            "--lease-duration-seconds=30",
            "--lease-grace-seconds=10",
            "--idempotency-ttl-seconds=600",
            "--health-reread-seconds=2",
            "--concurrency=4",
            "--namespace=apps",
        ]
    );

    // values.schema.json turns a bad value into an error at render time.
    let chart = chart_dir();
    let rejected = try_helm(&["template", "t", chart.as_str(), "--set", "logFormat=xml"])
        .expect_err("logFormat=xml");
    assert!(rejected.contains("logFormat"), "{rejected}");
}

#[tokio::test]
async fn chart_passes_a_server_side_dry_run() {
    // admin_client() installs crds/ (the chart's CRDs are the same, see above).
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "chart").await;
    // The defaults: everything but the ServiceMonitor, whose CRD this cluster does not have.
    // Not `baton`: the cluster-scoped policy of that name is the test cluster's own
    // (config/policy/, installed by the harness).
    let rendered = render_text("baton-dry", &ns.name, &[]);
    let expected = documents(&rendered).len();

    let output = baton_e2e::server_side_dry_run(&rendered);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the API server rejected the chart:\n{stdout}{stderr}");
    let applied = stdout.lines().filter(|line| line.ends_with("(server dry run)")).count();
    assert_eq!(applied, expected, "every rendered object is accepted:\n{stdout}{stderr}");
}
