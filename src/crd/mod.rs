//! The `baton.dev/v1alpha1` API: `Apply` (written by users) and `Operation` (written only by
//! the operator). Types only: no behaviour beyond small accessors lives here, the lifecycle
//! module decides everything.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON,
};

mod apply;
mod operation;
mod schema;

pub use apply::*;
pub use operation::*;

/// API group of every baton resource.
pub const GROUP: &str = "baton.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// Label on each Operation naming the Apply that owns it.
pub const LABEL_APPLY: &str = "baton.dev/apply";
/// Label on each Operation carrying its index in `spec.operations`.
pub const LABEL_INDEX: &str = "baton.dev/index";
/// Annotation on an Operation that baton recreated after it was deleted: the record of a step
/// whose first Operation vanished (see `FailureReason::Lost`).
pub const ANNOTATION_RECREATED: &str = "baton.dev/recreated";
/// baton's finalizer on an Apply: held from its first claim (or its idempotency key) until
/// deleting it has stopped what runs and released the key.
pub const FINALIZER: &str = "baton.dev/cleanup";

/// Renders both CRDs as one multi-document YAML stream, the form `crds/` stores.
pub fn crds_yaml() -> Result<Vec<(&'static str, String)>, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    // Every object shows a status from the moment it exists, at no write: the API server fills
    // in these defaults when it reads an object that has none. A new Operation reads as
    // `Pending`; a new Apply as `observedGeneration: 0`, so kstatus (Flux), `kubectl wait` and
    // Argo CD see a rollout the operator has not looked at yet as in progress, never as done.
    let apply = with_status_default(Apply::crd(), serde_json::json!({"observedGeneration": 0}));
    let operation = with_status_default(Operation::crd(), serde_json::json!({}));
    Ok(vec![
        ("apply.yaml", serde_yaml_ng::to_string(&apply)?),
        ("operation.yaml", serde_yaml_ng::to_string(&operation)?),
    ])
}

fn with_status_default(
    mut crd: CustomResourceDefinition,
    default: serde_json::Value,
) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|schema| schema.open_api_v3_schema.as_mut())
            .and_then(|schema| schema.properties.as_mut())
            .and_then(|properties| properties.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(JSON(default.clone()));
            // A defaulted field cannot be null.
            status.nullable = None;
        }
    }
    crd
}
