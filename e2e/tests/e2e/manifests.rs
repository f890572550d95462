//! The plain manifests of `config/`: kustomize renders them and the API server accepts every
//! object in a server-side dry run.

use std::process::Command;

use baton_e2e::admin_client;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

#[tokio::test]
async fn kustomized_config_passes_a_server_side_dry_run() {
    // A dry run creates nothing, so what the namespaced objects need must exist: the CRDs (the
    // harness installs them) and the namespace.
    let client = admin_client().await;
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some("baton-system".into()), ..ObjectMeta::default() },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client).create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("creating baton-system: {error}"),
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rendered = Command::new("kubectl")
        .args(["kustomize", "config/default"])
        .current_dir(&root)
        .output()
        .expect("kubectl kustomize runs");
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    let text = String::from_utf8_lossy(&rendered.stdout).into_owned();
    for kind in
        ["CustomResourceDefinition", "ClusterRole", "Deployment", "ServiceAccount", "Service"]
    {
        assert!(text.contains(&format!("kind: {kind}\n")), "config/default lacks a {kind}");
    }
    // The image `make image` builds, tagged with the operator crate's version.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the crate's version");
    assert!(text.contains(&format!("image: localhost/baton:{version}\n")), "{text}");
    let output = baton_e2e::server_side_dry_run(&text);
    assert!(
        output.status.success(),
        "the API server rejected config/default:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("deployment.apps/baton serverside-applied (server dry run)")
    );
}
