//! Deciding what a test's containers do. The test clusters run real workload controllers and
//! kwok as the kubelet of fake nodes (`e2e/control-plane/kwok/stages.yaml`): a pod's status is
//! written by kwok, a Deployment's or Job's by its controller, never by a test. What a test
//! decides is what the containers would do, through the pod annotation [`CONTAINER`]: set in a
//! pod template (`not-ready`, `fail`) it holds from the start; removed from a running pod it
//! lets the containers become ready (and a Job's pod exit 0); changed to `fail` on a pod it
//! makes the containers exit 1.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// The pod annotation kwok's stages read: absent, [`NOT_READY`] or [`FAIL`].
pub const CONTAINER: &str = "kwok.baton.dev/container";
/// The containers run but never become ready; a Job's pod never ends.
pub const NOT_READY: &str = "not-ready";
/// The containers exit 1: the pod fails.
pub const FAIL: &str = "fail";
/// A Go duration kwok waits before it reports the containers ready.
pub const READY_AFTER: &str = "kwok.baton.dev/ready-after";

/// How long a helper waits for the pods it acts on to appear.
const PODS_APPEAR: Duration = Duration::from_secs(45);

/// The pod template annotations that make containers behave as `container` says.
pub fn template_annotations(container: &str) -> Value {
    json!({ CONTAINER: container })
}

/// Waits until pods matching `selector` exist and at least one carries [`CONTAINER`] (they are
/// created by their controller a moment after the workload is applied), then sets the
/// annotation on every matching pod that carries it to `value`, or removes it (`None`).
/// Returns how many pods were changed.
async fn set_container(
    client: &Client,
    namespace: &str,
    selector: &str,
    value: Option<&str>,
) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let held =
        crate::wait_for(&format!("held pods `{selector}` in {namespace}"), PODS_APPEAR, || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&ListParams::default().labels(selector)).await.ok()?;
                let held: Vec<String> = list
                    .items
                    .into_iter()
                    .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                    .filter(|pod| {
                        pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(CONTAINER))
                    })
                    .filter_map(|pod| pod.metadata.name)
                    .collect();
                (!held.is_empty()).then_some(held)
            }
        })
        .await;
    let patch = json!({"metadata": {"annotations": { CONTAINER: value }}});
    for name in &held {
        pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|error| panic!("annotating pod {name}: {error}"));
    }
    held.len()
}

/// The held containers of the pods matching `selector` become ready (a Job's pod then exits 0):
/// removes [`CONTAINER`] from them, once they exist. Returns how many pods it released.
pub async fn release(client: &Client, namespace: &str, selector: &str) -> usize {
    set_container(client, namespace, selector, None).await
}

/// The held containers of the pods matching `selector` exit 1, once the pods exist.
pub async fn fail(client: &Client, namespace: &str, selector: &str) -> usize {
    set_container(client, namespace, selector, Some(FAIL)).await
}

/// Releases the held pods matching `selector` as they appear, until `done` says so or `timeout`
/// passes (then panics): for rollouts that create pods one after another.
pub async fn release_until<F, Fut>(
    client: &Client,
    namespace: &str,
    selector: &str,
    timeout: Duration,
    mut done: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"metadata": {"annotations": { CONTAINER: Value::Null }}});
    let deadline = tokio::time::Instant::now() + timeout;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} releasing pods `{selector}` in {namespace}"
        );
        if let Ok(list) = pods.list(&ListParams::default().labels(selector)).await {
            for pod in list.items {
                let held =
                    pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(CONTAINER));
                if let (true, Some(name)) = (held, pod.metadata.name) {
                    // A pod deleted meanwhile is no error: the rollout moved on.
                    let _ = pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
