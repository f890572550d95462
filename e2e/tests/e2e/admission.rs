//! Admission: valid Applies are accepted and shown with their printer columns; every case of
//! `e2e/bad-input/admission/` is rejected with the message it expects.

use std::path::{Path, PathBuf};

use baton_e2e::{TestNamespace, admin_client, kubectl};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    expect: String,
    create: serde_json::Value,
    #[serde(default)]
    update: Option<serde_json::Value>,
}

fn applies(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<baton::crd::Apply>(&());
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn object(value: serde_json::Value) -> DynamicObject {
    serde_json::from_value(value).expect("a Kubernetes object")
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bad-input/admission");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the admission corpus")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// Runs one case; returns what went wrong, if anything.
async fn check(client: &Client, namespace: &str, path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).expect("a readable case");
    let case: Case = serde_yaml_ng::from_str(&text).expect("a well-formed case");
    let api = applies(client, namespace);
    let created = api.create(&PostParams::default(), &object(case.create)).await;
    let outcome = match (case.update, created) {
        (None, created) => created.map(|_| ()),
        (Some(update), Ok(created)) => {
            let name = created.metadata.name.unwrap_or_default();
            api.patch(&name, &PatchParams::default(), &Patch::Merge(update)).await.map(|_| ())
        }
        (Some(_), Err(error)) => {
            return Some(format!("the valid Apply before the update was rejected: {error}"));
        }
    };
    match outcome {
        Ok(()) => Some("accepted, but must be rejected".to_owned()),
        Err(kube::Error::Api(status)) if status.message.contains(&case.expect) => None,
        Err(error) => Some(format!(
            "rejected with `{error}`, expected a message containing `{}`",
            case.expect
        )),
    }
}

#[tokio::test]
async fn bad_input_is_rejected_at_admission_with_the_intended_message() {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "admission").await;
    let files = cases();
    assert!(files.len() >= 10, "the corpus is missing: {} cases", files.len());
    let mut failures = Vec::new();
    for path in &files {
        if let Some(problem) = check(&client, &ns.name, path).await {
            failures.push(format!(
                "{}: {problem}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn valid_apply_is_accepted_with_defaults_and_printer_columns() {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "valid").await;
    let apply = object(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Apply",
        "metadata": {"name": "web"},
        "spec": {
            "template": {"manifests": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}]},
            "operations": [
                {"name": "eu", "target": {"namespace": "shop-eu"}},
                {"name": "us", "target": {"namespace": "shop-us"}, "timeout": "1h30m"},
            ],
        },
    }));
    let created = applies(&client, &ns.name)
        .create(&PostParams::default(), &apply)
        .await
        .expect("a valid Apply is accepted");
    let spec = &created.data["spec"];
    assert_eq!(spec["onFailure"], "Halt");
    assert_eq!(spec["maxConcurrent"], 1);
    assert_eq!(spec["stop"], false);
    assert_eq!(spec["operations"][0]["timeout"], "10m");

    // The typed client reads what the API server stored.
    let typed: Api<baton::crd::Apply> = Api::namespaced(client.clone(), &ns.name);
    let read = typed.get("web").await.expect("the typed Apply reads back");
    assert_eq!(read.spec.operations.len(), 2);

    let output = kubectl(&["get", "applies", "-n", &ns.name]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let header =
        String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().to_owned();
    for column in ["NAME", "PHASE", "PROGRESS", "CURRENT", "ERROR", "AGE"] {
        assert!(header.contains(column), "`kubectl get applies` lacks {column}: {header}");
    }
    let by_category = kubectl(&["get", "baton", "-n", &ns.name, "-o", "name"]);
    assert!(String::from_utf8_lossy(&by_category.stdout).contains("apply.baton.dev/web"));

    // Changing what may change is accepted: stop and dismissError.
    let patch = serde_json::json!({"spec": {"stop": true, "dismissError": "eu-1"}});
    applies(&client, &ns.name)
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("stop and dismissError may change");
}
