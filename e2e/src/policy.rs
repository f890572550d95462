//! baton's admission policy (`config/policy/`), installed on the test cluster as users install
//! it, and the break-glass label that exempts one namespace: tests of what baton does without
//! the policy run in such namespaces.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};

use crate::{kubectl, repo_root, wait_for};

/// The namespace label that exempts a namespace from the policy.
pub const BREAK_GLASS: &str = "baton.dev/break-glass";

/// Installs `config/policy/` with `kubectl apply --server-side`, as the demo and users do.
pub fn install_policy() {
    let path = repo_root().join("config/policy/protect-records.yaml");
    // The field manager of the harness's dry runs of config/default: they apply the same
    // policy, and a second manager would conflict on any field it writes differently.
    let output = kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=baton-e2e",
        "-f",
        &path.to_string_lossy(),
    ]);
    assert!(
        output.status.success(),
        "installing the admission policy: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Labels `namespace` so the policy lets anyone edit baton's records there.
pub async fn break_glass(client: &Client, namespace: &str) {
    let patch = serde_json::json!({"metadata": {"labels": {BREAK_GLASS: "true"}}});
    Api::<Namespace>::all(client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("labelling the namespace");
}

/// Waits until the API server enforces the policy on Operation `name` in `namespace`: a
/// server-side dry-run delete is refused (a new policy takes a moment to be loaded). Returns the
/// refusal's message.
pub async fn wait_until_enforced(client: &Client, namespace: &str, name: &str) -> String {
    let operations: Api<baton::crd::Operation> = Api::namespaced(client.clone(), namespace);
    wait_for("the admission policy to be enforced", Duration::from_secs(30), || {
        let operations = operations.clone();
        async move {
            let params = DeleteParams { dry_run: true, ..DeleteParams::default() };
            match operations.delete(name, &params).await {
                Err(kube::Error::Api(status)) if status.code == 403 => Some(status.message),
                _ => None,
            }
        }
    })
    .await
}
