//! Playing the kubelet and the workload controllers: there are none on the test control plane,
//! so tests write the status a real cluster would write.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;

/// Deployments whose name starts with this are never rolled out by [`Background`]: they keep
/// an operation running.
pub const STUCK: &str = "stuck-";
/// Jobs whose name starts with this are failed by [`Background`].
pub const FAILING: &str = "fail-";

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

/// Plays the kubelet until dropped: Deployments are rolled out (unless stuck), failing Jobs
/// fail. Errors (an API server that is down) are ignored: it simply tries again.
pub struct Background {
    stop: Arc<AtomicBool>,
}

impl Background {
    /// Starts playing the kubelet in `namespace`; Deployments are rolled out once `delay` old.
    pub fn start(client: Client, namespace: String, delay: Duration) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        tokio::spawn(async move {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
            let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
            while !flag.load(Ordering::Relaxed) {
                if let Ok(list) = deployments.list(&ListParams::default()).await {
                    for deployment in list.items {
                        let name = deployment.metadata.name.clone().unwrap_or_default();
                        let ready = deployment
                            .status
                            .as_ref()
                            .and_then(|s| s.available_replicas)
                            .unwrap_or(0)
                            > 0;
                        let age = deployment
                            .metadata
                            .creation_timestamp
                            .as_ref()
                            .map(|t| Timestamp::now().duration_since(t.0))
                            .unwrap_or_default();
                        let old_enough = age >= SignedDuration::try_from(delay).unwrap_or_default();
                        if !ready && !name.starts_with(STUCK) && old_enough {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(5),
                                deployment_rolled_out(&client, &namespace, &name),
                            )
                            .await;
                        }
                    }
                }
                if let Ok(list) = jobs.list(&ListParams::default()).await {
                    for job in list.items {
                        let name = job.metadata.name.clone().unwrap_or_default();
                        let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0) > 0;
                        if !failed && name.starts_with(FAILING) {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(5),
                                job_failed(&client, &namespace, &name),
                            )
                            .await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Background { stop }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
