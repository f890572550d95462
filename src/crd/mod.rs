//! The `baton.dev/v1alpha1` API: `Apply` (written by users) and `Operation` (written only by
//! the operator). Types only: no behaviour beyond small accessors lives here, the lifecycle
//! module decides everything.

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
/// baton's finalizer on an Apply: held from its first claim (or its idempotency key) until
/// deleting it has stopped what runs and released the key.
pub const FINALIZER: &str = "baton.dev/cleanup";

/// Renders both CRDs as one multi-document YAML stream, the form `crds/` stores.
pub fn crds_yaml() -> Result<Vec<(&'static str, String)>, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    Ok(vec![
        ("apply.yaml", serde_yaml_ng::to_string(&Apply::crd())?),
        ("operation.yaml", serde_yaml_ng::to_string(&Operation::crd())?),
    ])
}
