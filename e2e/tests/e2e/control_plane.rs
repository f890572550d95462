//! The control plane itself behaves like a real cluster: CRDs are served, RBAC is enforced,
//! garbage collection follows ownerReferences.

use std::time::Duration;

use baton_e2e::{TestNamespace, admin_client, client_for, cluster, kubectl, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};

#[tokio::test]
async fn crds_install_and_are_established() {
    // admin_client() installs crds/ and waits for `Established`; listing proves they are served.
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "crds").await;
    let applies: Api<baton::crd::Apply> = Api::namespaced(client.clone(), &ns.name);
    let list = applies.list(&Default::default()).await.expect("applies are served");
    assert!(list.items.is_empty());
    let operations: Api<baton::crd::Operation> = Api::namespaced(client, &ns.name);
    operations.list(&Default::default()).await.expect("operations are served");
}

#[tokio::test]
async fn rbac_is_enforced_for_the_operator_account() {
    let Some(operator) = cluster().operator_kubeconfig.as_ref() else {
        eprintln!("skipped: an existing cluster has no operator token of ours");
        return;
    };
    let admin = admin_client().await;
    let ns = TestNamespace::create(&admin, "rbac").await;
    let client = client_for(operator).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &ns.name);
    match config_maps.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("an unbound service account must be forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_collection_deletes_owned_objects() {
    let client = admin_client().await;
    let ns = TestNamespace::create(&client, "gc").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns.name);
    let named = |name: &str| ConfigMap {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        ..ConfigMap::default()
    };
    let owner = api.create(&PostParams::default(), &named("owner")).await.expect("owner created");
    let mut child = named("child");
    child.metadata.owner_references =
        Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().expect("a uid"),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
    api.create(&PostParams::default(), &child).await.expect("child created");
    api.delete("owner", &DeleteParams::background()).await.expect("owner deleted");
    wait_for("the garbage collector to delete the child", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            match api.get("child").await {
                Err(kube::Error::Api(status)) if status.code == 404 => Some(()),
                _ => None,
            }
        }
    })
    .await;
}

#[tokio::test]
async fn kubectl_reaches_the_cluster() {
    let output = kubectl(&["get", "namespace", "default", "-o", "name"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "namespace/default");
}
