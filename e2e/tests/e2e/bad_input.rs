//! The runtime bad-input corpus (`e2e/bad-input/runtime/`, format in `e2e/bad-input/README.md`):
//! every case is an Apply with one operation that the API server accepts and the operator must
//! fail with the reason and message the case expects, while it keeps serving healthy Applies.

use std::path::{Path, PathBuf};

use baton::crd::{Apply, ApplyPhase, FailurePolicy, Operation, OperationPhase};
use baton_e2e::{TestNamespace, service_account_with_rules, wait_for};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};

use super::support::{DEPLOYER, PATIENCE, World, config_map, deployer_rules, spec};

/// One file of the runtime corpus.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    expect: Expect,
    /// One entry of `spec.operations`, without `target` (the runner sets it).
    operation: Value,
    /// The account the Apply impersonates; `deployer` when absent.
    #[serde(default)]
    service_account_name: Option<String>,
    /// `other` (a namespace of this run where nobody is granted anything) or a literal name;
    /// the test namespace when absent.
    #[serde(default)]
    target_namespace: Option<String>,
    /// The operation's `target.cluster`: a registration Secret in the test namespace (made by
    /// `existing`, or missing), which `deployer` may read; none when absent.
    #[serde(default)]
    target_cluster: Option<String>,
    /// Adds `data.blob` of this many bytes to the first manifest (kept out of the repository).
    #[serde(default)]
    huge_data_bytes: Option<usize>,
    /// Objects server-side applied in the test namespace by field manager `someone-else`
    /// before the Apply is created.
    #[serde(default)]
    existing: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Expect {
    /// The operation's `status.reason`.
    #[serde(default)]
    reason: Option<String>,
    /// A piece of the operation's `status.message`.
    #[serde(default)]
    message: Option<String>,
    /// The operation's `status.inventory`, as `Kind/name`.
    #[serde(default)]
    inventory: Option<Vec<String>>,
    /// Instead of all the above: creating the Apply fails with a message containing this.
    #[serde(default)]
    rejected: Option<String>,
}

/// Where the cases run: placeholders `{namespace}` and `{other}` in expected messages.
struct Places {
    namespace: String,
    other: String,
}

impl Places {
    fn fill(&self, text: &str) -> String {
        text.replace("{namespace}", &self.namespace).replace("{other}", &self.other)
    }
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bad-input")
}

/// The `*.yaml` files directly in `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

/// The Apply of a case is named after its file.
fn apply_name(path: &Path) -> String {
    let name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    assert!(name.len() <= 63, "{name}: the file name is the Apply's name, 63 characters at most");
    name
}

fn load(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).expect("a readable case");
    let case: Case = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|error| panic!("{}: not a well-formed case: {error}", file_name(path)));
    let expect = &case.expect;
    let runs = expect.reason.is_some() || expect.message.is_some() || expect.inventory.is_some();
    assert!(
        runs != expect.rejected.is_some(),
        "{}: expect either `rejected` or `reason`/`message`/`inventory`",
        file_name(path)
    );
    assert!(case.operation["name"].is_string(), "{}: the operation needs a name", file_name(path));
    case
}

/// The Apply of a case: `Halt`, one operation, `deployer` unless the case names an account.
fn apply_of(name: &str, case: &Case, places: &Places) -> Value {
    let mut operation = case.operation.clone();
    let target = match case.target_namespace.as_deref() {
        None => places.namespace.clone(),
        Some("other") => places.other.clone(),
        Some(literal) => literal.to_owned(),
    };
    operation["target"] = json!({"namespace": target});
    if let Some(cluster) = &case.target_cluster {
        operation["target"]["cluster"] = json!(cluster);
    }
    if let Some(bytes) = case.huge_data_bytes {
        let first = operation["manifests"][0]
            .as_object_mut()
            .unwrap_or_else(|| panic!("{name}: hugeDataBytes needs a first manifest"));
        let data = first.entry("data").or_insert_with(|| json!({}));
        data["blob"] = Value::String("x".repeat(bytes));
    }
    let account = case.service_account_name.clone().unwrap_or_else(|| DEPLOYER.to_owned());
    json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Apply",
        "metadata": {"name": name},
        "spec": {"onFailure": "Halt", "serviceAccountName": account, "operations": [operation]},
    })
}

/// Server-side applies `object` in `namespace` as another field manager than baton.
async fn put_existing(client: &Client, namespace: &str, object: &Value) {
    let object: DynamicObject = serde_json::from_value(object.clone()).expect("an object");
    let types = object.types.clone().expect("an existing object has apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("a group, version and kind");
    let (resource, _) =
        kube::discovery::pinned_kind(client, &gvk).await.expect("a kind the API server serves");
    let name = object.metadata.name.clone().expect("an existing object has a name");
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        .patch(&name, &PatchParams::apply("someone-else"), &Patch::Apply(&object))
        .await
        .unwrap_or_else(|error| panic!("applying the existing {} `{name}`: {error}", gvk.kind));
}

/// What is wrong with a settled case, if anything.
fn verdict(
    case: &Case,
    places: &Places,
    apply: Option<&Apply>,
    op: Option<&Operation>,
) -> Option<String> {
    let apply_phase = apply.and_then(|apply| apply.status.as_ref()?.phase);
    let Some(status) = op.and_then(|op| op.status.as_ref()) else {
        return Some(format!("the operation has no status (the Apply is {apply_phase:?})"));
    };
    let seen = format!(
        "{:?} {:?}: {:?} (the Apply is {apply_phase:?})",
        status.phase, status.reason, status.message
    );
    let mut problems = Vec::new();
    if status.phase != OperationPhase::Failed {
        problems.push("the operation is not Failed".to_owned());
    }
    if apply_phase != Some(ApplyPhase::Failed) {
        problems.push("the Apply is not Failed".to_owned());
    }
    if let Some(reason) = &case.expect.reason
        && status.reason.as_deref() != Some(reason.as_str())
    {
        problems.push(format!("reason is not {reason}"));
    }
    if let Some(message) = &case.expect.message {
        let message = places.fill(message);
        if !status.message.as_deref().unwrap_or_default().contains(&message) {
            problems.push(format!("the message lacks `{message}`"));
        }
    }
    if let Some(expected) = &case.expect.inventory {
        let inventory: Vec<String> =
            status.inventory.iter().map(|entry| format!("{}/{}", entry.kind, entry.name)).collect();
        if &inventory != expected {
            problems.push(format!("inventory is {inventory:?}, expected {expected:?}"));
        }
    }
    (!problems.is_empty()).then(|| format!("{}; saw {seen}", problems.join(", ")))
}

#[tokio::test]
async fn runtime_bad_input_fails_operations_with_the_expected_reason() {
    let admission = yaml_files(&corpus().join("admission"));
    let runtime = yaml_files(&corpus().join("runtime"));
    let known_bugs = yaml_files(&corpus().join("runtime/known-bugs"));
    assert!(
        admission.len() + runtime.len() >= 40,
        "the bad-input corpus shrank: {} admission and {} runtime cases",
        admission.len(),
        runtime.len()
    );
    let mut files = runtime;
    // Known bugs are kept well-formed; BATON_E2E_KNOWN_BUGS=1 runs them too (they fail).
    for path in &known_bugs {
        load(path);
    }
    if std::env::var("BATON_E2E_KNOWN_BUGS").is_ok_and(|v| v == "1") {
        files.extend(known_bugs);
    }
    let cases: Vec<(PathBuf, String, Case)> =
        files.into_iter().map(|path| (path.clone(), apply_name(&path), load(&path))).collect();

    let world = World::new("badinput").await;
    let ns = world.ns.name.clone();
    let other = TestNamespace::create(&world.client, "badinput-other").await;
    let places = Places { namespace: ns.clone(), other: other.name.clone() };
    let mut rules = deployer_rules();
    rules.push(PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["services".to_owned()]),
        verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
            .map(String::from)
            .to_vec(),
        ..PolicyRule::default()
    });
    service_account_with_rules(&world.client, &ns, "service-deployer", rules).await;
    // Registrations are read as the Apply's service account: deployer may read every one the
    // cases name (service-deployer none).
    let clusters: Vec<&str> =
        cases.iter().filter_map(|(_, _, case)| case.target_cluster.as_deref()).collect();
    if !clusters.is_empty() {
        baton_e2e::fleet::allow_reading(&world.client, &ns, DEPLOYER, &clusters).await;
    }

    // Every case's Apply up front, then the healthy one alongside; then wait for them all.
    let applies: Api<DynamicObject> =
        Api::namespaced_with(world.client.clone(), &ns, &ApiResource::erase::<Apply>(&()));
    let mut failures = Vec::new();
    let mut accepted = Vec::new();
    for (path, name, case) in &cases {
        for object in &case.existing {
            put_existing(&world.client, &ns, object).await;
        }
        let object: DynamicObject =
            serde_json::from_value(apply_of(name, case, &places)).expect("an Apply");
        let created = applies.create(&PostParams::default(), &object).await;
        match (&case.expect.rejected, created) {
            (None, Ok(_)) => accepted.push((path, name, case)),
            (Some(_), Ok(_)) => {
                failures.push(format!("{}: accepted, but must be rejected", file_name(path)));
            }
            (Some(expected), Err(kube::Error::Api(status)))
                if status.message.contains(&places.fill(expected)) => {}
            (expected, Err(error)) => failures.push(format!(
                "{}: creating the Apply failed with `{error}`{}",
                file_name(path),
                expected.as_ref().map(|e| format!(", expected `{e}`")).unwrap_or_default()
            )),
        }
    }
    let healthy = vec![
        ("one", config_map("healthy-one")),
        ("two", config_map("healthy-two")),
        ("three", config_map("healthy-three")),
    ];
    world.create("healthy", spec(&ns, FailurePolicy::Halt, 1, healthy)).await;

    let typed_applies = world.applies();
    let operations = world.operations();
    let names: Vec<String> = accepted.iter().map(|(_, name, _)| (*name).clone()).collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (settled_applies, settled_operations) = loop {
        let listed = typed_applies.list(&ListParams::default()).await.expect("listing Applies");
        let ops = operations.list(&ListParams::default()).await.expect("listing Operations");
        let settled = names.iter().all(|name| {
            listed.items.iter().any(|apply| {
                apply.metadata.name.as_ref() == Some(name)
                    && apply
                        .status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .is_some_and(|phase| phase.is_terminal() || phase == ApplyPhase::Paused)
            })
        });
        if settled || tokio::time::Instant::now() >= deadline {
            break (listed.items, ops.items);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };

    for (path, name, case) in &accepted {
        let apply = settled_applies.iter().find(|a| a.metadata.name.as_ref() == Some(*name));
        let operation = format!("{name}-{}", case.operation["name"].as_str().unwrap_or_default());
        let op = settled_operations.iter().find(|o| o.metadata.name.as_ref() == Some(&operation));
        if let Some(problem) = verdict(case, &places, apply, op) {
            failures.push(format!("{}: {problem}", file_name(path)));
        }
    }

    // The operator kept serving: the healthy Apply created alongside succeeds, and so does
    // one created after every bad case settled.
    let healthy = world.wait_apply_phase("healthy", ApplyPhase::Succeeded).await;
    assert_eq!(healthy.status.map(|s| s.progress).as_deref(), Some("3/3"));
    let after = vec![("one", config_map("after-one"))];
    world.create("healthy-after", spec(&ns, FailurePolicy::Halt, 1, after)).await;
    world.wait_apply_phase("healthy-after", ApplyPhase::Succeeded).await;
    let admin = world.operator.admin;
    wait_for("the operator's /healthz", PATIENCE, || async move {
        matches!(baton_e2e::http_get(admin, "/healthz").await, Some((200, _))).then_some(())
    })
    .await;

    assert!(
        failures.is_empty(),
        "{} of {} runtime cases failed (operator log: {}):\n{}",
        failures.len(),
        cases.len(),
        world.operator.log.display(),
        failures.join("\n")
    );
}
