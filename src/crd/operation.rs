//! `Operation`: one step of an Apply, created and written only by the operator.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Approval, DismissedError, Target, schema};

/// A copy of one `spec.operations` entry plus its index; immutable.
// kube's `printcolumn(...)` repeats keys such as `type_` by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "Operation",
    plural = "operations",
    singular = "operation",
    shortname = "bop",
    category = "baton",
    namespaced,
    status = "OperationStatus",
    doc = "One step of an Apply: its manifests applied to one target. Written only by the operator.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.target.cluster"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Attempt", type_ = "integer", json_path = ".status.attempt"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.namespace"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self == oldSelf",
    "message": "an Operation's spec is immutable: it is a copy of its Apply's entry",
}]))]
pub struct OperationSpec {
    /// Position of this step in the Apply's `spec.operations`, from 0.
    #[schemars(range(min = 0, max = 499))]
    pub index: u32,
    /// Name of the step, unique within its Apply.
    pub name: String,
    /// Where the manifests go.
    pub target: Target,
    /// The manifests this step applies (its own, or the Apply's template).
    #[schemars(schema_with = "schema::manifests")]
    pub manifests: Vec<serde_json::Value>,
    /// How long the step may take from its claim to healthy.
    pub timeout: String,
    /// `Required`: claimed only once approved in the Apply's `spec.approvals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// How long its objects must stay healthy before it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
    /// Why the manifests could not be expanded with the step's values (an undefined variable):
    /// the operation then fails `DispatchFailed` at its first run, before anything is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_error: Option<String>,
}

/// Phase of an Operation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum OperationPhase {
    /// Waiting for a claim.
    #[default]
    Pending,
    /// Claimed: manifests applied or being applied, health being watched.
    Running,
    /// Applied and healthy. Final.
    Succeeded,
    /// Failed; runs again only after its error is dismissed.
    Failed,
    /// Stopped by request before it finished; resumable.
    Stopped,
}

impl OperationPhase {
    /// `Succeeded` and `Failed` end a run; `Stopped` does not (it is resumable).
    pub fn is_terminal(self) -> bool {
        matches!(self, OperationPhase::Succeeded | OperationPhase::Failed)
    }

    /// The phase as written in `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationPhase::Pending => "Pending",
            OperationPhase::Running => "Running",
            OperationPhase::Succeeded => "Succeeded",
            OperationPhase::Failed => "Failed",
            OperationPhase::Stopped => "Stopped",
        }
    }
}

/// Why an operation failed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum FailureReason {
    /// The apply call itself failed: invalid object, forbidden, missing namespace, unknown kind.
    DispatchFailed,
    /// An applied object reported a terminal failure.
    Unhealthy,
    /// The objects were not healthy before the operation's timeout.
    Timeout,
    /// The Operation was deleted after baton created it: whether its step ran is unknown, so
    /// it is recreated as this failure and runs again only when the error is dismissed.
    Lost,
}

impl FailureReason {
    /// The reason as written in `status.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::DispatchFailed => "DispatchFailed",
            FailureReason::Unhealthy => "Unhealthy",
            FailureReason::Timeout => "Timeout",
            FailureReason::Lost => "Lost",
        }
    }
}

/// Observed state of an Operation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// Where this step stands.
    #[serde(default)]
    pub phase: OperationPhase,
    /// Number of runs started; each claim that starts a new run increments it.
    #[serde(default)]
    pub attempt: u32,
    /// Who runs it now; present only while `Running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// When the current run was claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the current run succeeded or failed (never set for `Stopped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// When the current run was stopped; cleared when it goes back to `Pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Time>,
    /// When the first run was claimed; kept across retries, so the Apply's start never moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_started_at: Option<Time>,
    /// Machine-readable cause of the last transition (`DispatchFailed`, `Unhealthy`, `Timeout`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The dismissal that last put this operation back to `Pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dismissed: Option<DismissedError>,
    /// The approval this run was claimed under: who wrote it into `spec.approvals`, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRecord>,
    /// While soaking: since when its objects have been healthy without a break.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<Time>,
    /// While soaking: when the soak ends and the operation succeeds, unless health breaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<Time>,
    /// The objects applied by the current run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// Conditions of the operation (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Who approved an operation, as the API server recorded the write of `spec.approvals`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// The field manager that wrote the approval (`kubectl-baton`, a GitOps tool, ...).
    pub by: String,
    /// When it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// The replica that claimed an operation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// Identity of the claiming replica (pod name plus a random suffix).
    pub holder: String,
    /// When it claimed (or took over) the operation.
    pub at: Time,
}

/// One object applied by an operation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    /// `group/version` of the object.
    pub api_version: String,
    /// Kind of the object.
    pub kind: String,
    /// Namespace, absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the object.
    pub name: String,
    /// The registered cluster it was applied to; absent for the management cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}
