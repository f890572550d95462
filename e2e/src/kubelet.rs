//! Playing the kubelet and the workload controllers: there are none on the test control plane,
//! so tests write the status a real cluster would write.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

/// Waits until the operator applied `name`: an operation is `Running` from its claim, a moment
/// before its manifests reach the API server.
async fn applied<K>(api: &Api<K>, name: &str) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    crate::wait_for(&format!("{name} to be applied"), std::time::Duration::from_secs(30), || {
        let api = api.clone();
        async move { api.get_opt(name).await.ok().flatten() }
    })
    .await
}

async fn patch_status<K>(api: Api<K>, name: &str, status: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    applied(&api, name).await;
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .unwrap_or_else(|error| panic!("writing the status of {name}: {error}"));
}

/// The Deployment's pods all came up: rolled out and available.
pub async fn deployment_rolled_out(client: &Client, namespace: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = applied(&api, name).await;
    let generation = deployment.metadata.generation.unwrap_or(1);
    let replicas = deployment.spec.and_then(|spec| spec.replicas).unwrap_or(1);
    patch_status(api, name, json!({
        "observedGeneration": generation,
        "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }))
    .await;
}

/// The Deployment ran past its progress deadline.
pub async fn deployment_failed(client: &Client, namespace: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let generation =
        api.get(name).await.expect("the Deployment exists").metadata.generation.unwrap_or(1);
    patch_status(
        api,
        name,
        json!({
            "observedGeneration": generation,
            "conditions": [{
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet has timed out progressing.",
            }],
        }),
    )
    .await;
}

/// The Job's pod finished successfully.
pub async fn job_complete(client: &Client, namespace: &str, name: &str) {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    patch_status(api, name, json!({
        "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:01Z", "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached"},
        ],
    }))
    .await;
}

/// The Job's pods kept failing.
pub async fn job_failed(client: &Client, namespace: &str, name: &str) {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    patch_status(api, name, json!({
        "startTime": "2026-01-01T00:00:00Z", "failed": 1,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"},
        ],
    }))
    .await;
}
