//! `Apply`: one change carried through an ordered list of targets.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// Default `timeout` of an operation (a Go duration, like the rest of Kubernetes).
pub const DEFAULT_OPERATION_TIMEOUT: &str = "10m";
/// Most operations one Apply may list.
pub const MAX_OPERATIONS: usize = 500;

/// Desired state of an Apply. `operations`, `template`, `idempotencyKey` and `healthChecks` are
/// immutable; `stop`, `dismissError` and `approvals` are the intents users change later, and
/// `maxConcurrent`, `maxFailed` and `onFailure` take effect at the next claim.
// kube's `printcolumn(...)` repeats keys such as `type_` by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "Apply",
    plural = "applies",
    singular = "apply",
    shortname = "bapply",
    category = "baton",
    namespaced,
    status = "ApplyStatus",
    doc = "An Apply carries one change through an ordered list of targets, one operation per target.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress"),
    printcolumn(name = "Current", type_ = "string", json_path = ".status.current"),
    printcolumn(name = "Error", type_ = "string", json_path = ".status.error.id"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 63").message(
        "an Apply name is at most 63 characters: it is the value of the baton.dev/apply label on its operations"
    ),
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.template) || self.operations.all(o, has(o.manifests))",
        "message": "an operation has no manifests: give every operation its own manifests or set spec.template.manifests",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "has(self.template) == has(oldSelf.template)",
        "message": "spec.template is immutable: create a new Apply to roll out a different change",
    },
    {
        "rule": "has(self.idempotencyKey) == has(oldSelf.idempotencyKey)",
        "message": "spec.idempotencyKey is immutable: create a new Apply to roll out a different change",
    },
    {
        "rule": "has(self.healthChecks) == has(oldSelf.healthChecks)",
        "message": "spec.healthChecks is immutable: create a new Apply to roll out a different change",
    },
]))]
pub struct ApplySpec {
    /// The ordered steps of the rollout, one per target; names are unique DNS labels.
    #[schemars(length(min = 1, max = 500))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
        "x-kubernetes-validations" = [{
            "rule": "self == oldSelf",
            "message": "spec.operations is immutable: create a new Apply to roll out a different change",
        }],
    ))]
    pub operations: Vec<OperationEntry>,

    /// Manifests for every operation that lists none of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.template is immutable: create a new Apply to roll out a different change",
    }]))]
    pub template: Option<ApplyTemplate>,

    /// What one failed operation does to the rest: `Halt` (default), `Pause` or `Continue`.
    #[serde(default)]
    pub on_failure: FailurePolicy,

    /// How many operations may run at once, in order (a sliding window).
    #[serde(default = "default_max_concurrent")]
    #[schemars(range(min = 1, max = 500))]
    pub max_concurrent: u32,

    /// Level-triggered stop request; setting it back to false resumes.
    #[serde(default)]
    pub stop: bool,

    /// The `status.error.id` being dismissed; failed operations then run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub dismiss_error: Option<String>,

    /// Service account in this namespace that the operator impersonates to apply manifests.
    /// Empty means the operator's configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// De-duplicates re-runs of the same change: Applies sharing a key run it at most once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.idempotencyKey is immutable: create a new Apply to roll out a different change",
    }]))]
    pub idempotency_key: Option<String>,

    /// Which earlier outcomes of the same key count as done: `Success` (default) or `Any`.
    #[serde(default)]
    pub dedup_on: DedupOn,

    /// The failure budget under `Halt` and `Pause`: how many operations may stand failed (not
    /// dismissed) before the policy acts, as a count (`2`) or a percentage of the operations
    /// rounded down (`"10%"`). A failed operation still fails the verdict. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::count_or_percent")]
    pub max_failed: Option<IntOrString>,

    /// Names of operations whose `approval: Required` gate is open (level-triggered: removing a
    /// name before the operation is claimed withdraws the approval).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub approvals: Vec<String>,

    /// How to read the health of kinds the built-in rules don't know: CEL expressions over the
    /// object as `self`, by `apiVersion` and `kind` (Flux's `healthCheckExprs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["apiVersion", "kind"],
        "x-kubernetes-validations" = [{
            "rule": "self == oldSelf",
            "message": "spec.healthChecks is immutable: create a new Apply to roll out a different change",
        }],
    ))]
    pub health_checks: Vec<HealthCheck>,
}

/// The health of one kind, as CEL expressions over the object as `self`: `failed` true is
/// unhealthy, else `current` true is healthy, else the object is in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// The apiVersion of the objects this check reads (`example.com/v1`).
    #[schemars(length(min = 1, max = 253))]
    pub api_version: String,

    /// The kind of the objects this check reads.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,

    /// True when the object reached its desired state.
    #[schemars(length(min = 1, max = 2048))]
    pub current: String,

    /// True when the object failed for good; read before `current`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub failed: Option<String>,

    /// True while the object converges; read after `failed` and `current`. When absent (or
    /// false), an object neither failed nor current is in progress anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub in_progress: Option<String>,
}

fn default_max_concurrent() -> u32 {
    1
}

/// One step of the rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationEntry {
    /// Unique name of the step, a DNS label; the Operation is named `<apply>-<name>`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
        "messageExpression": "'operation name ' + self + ' is not a DNS label: use lower-case letters, digits and -, starting and ending with a letter or digit'",
    }]))]
    pub name: String,

    /// Where the manifests go.
    pub target: Target,

    /// Manifests of this step; when absent, `spec.template.manifests` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::manifests")]
    pub manifests: Option<Vec<serde_json::Value>>,

    /// How long the step may take from its claim to healthy (a duration such as `90s`, `10m`).
    #[serde(default = "default_timeout")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s')",
        "message": "timeout must be a duration of at least 1s, such as 90s, 10m or 1h30m",
    }]))]
    pub timeout: String,

    /// Values of the `${name}` variables of the manifests (SPEC.md section 10); `${target.namespace}`,
    /// `${target.cluster}` and `${operation.name}` are always defined, `$${x}` is a literal `${x}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,

    /// `Required`: the step is claimed only once its name is in `spec.approvals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,

    /// How long the step's objects must stay healthy without a break before it succeeds (a
    /// duration such as `5m`); its timeout counts the soak too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s')",
        "message": "soak must be a duration of at least 1s, such as 90s, 10m or 1h30m",
    }]))]
    pub soak: Option<String>,
}

/// A gate on an operation's claim.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Approval {
    /// The operation waits for its name in `spec.approvals`.
    Required,
}

fn default_timeout() -> String {
    DEFAULT_OPERATION_TIMEOUT.to_owned()
}

/// The place an operation applies its manifests to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Namespace that receives the namespaced manifests.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: String,

    /// Cluster to apply to; absent means the cluster the operator runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub cluster: Option<String>,
}

/// Manifests shared by every operation that lists none of its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyTemplate {
    /// The manifests, at least one.
    #[schemars(schema_with = "schema::manifests")]
    pub manifests: Vec<serde_json::Value>,
}

/// What one failed operation does to the rest of the rollout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(schema_with = "failure_policy_schema")]
pub enum FailurePolicy {
    /// No new claim after a failure; the Apply fails once nothing runs.
    #[default]
    Halt,
    /// Like `Halt`, but the Apply is `Paused` and waits for a dismissal or a stop.
    Pause,
    /// Siblings keep running; the verdict is still `Failed`.
    Continue,
    /// A value this version does not know (written under a newer schema); treated as `Halt`.
    #[serde(other)]
    Unknown,
}

fn failure_policy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Halt", "Pause", "Continue"],
        "default": "Halt",
    })
}

impl FailurePolicy {
    /// The policy the lifecycle applies: anything unknown fails closed, as `Halt`.
    pub fn effective(self) -> FailurePolicy {
        match self {
            FailurePolicy::Unknown => FailurePolicy::Halt,
            known => known,
        }
    }
}

/// Which earlier outcomes of the same idempotency key count as done.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum DedupOn {
    /// Only a succeeded run counts; a failed one releases the key at once.
    #[default]
    Success,
    /// Any finished run counts.
    Any,
}

/// Observed state of an Apply: a projection of its operations, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyStatus {
    /// Where the rollout stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ApplyPhase>,
    /// One line a person can act on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Operations counted by phase.
    #[serde(default)]
    pub operations: OperationCounts,
    /// Succeeded operations over the total, as `3/5`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub progress: String,
    /// The running operations, comma separated, lowest index first.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current: String,
    /// The current error: the failed operation with the lowest index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApplyError>,
    /// Progress of a requested stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopStatus>,
    /// The last error that a dismissal cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_dismissed_error: Option<DismissedError>,
    /// When the first operation was claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the Apply reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The `metadata.generation` this status was projected from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready`, `Reconciling`, `Stalled`, `Degraded`, `DismissalRejected`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Phase of an Apply.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ApplyPhase {
    /// Nothing has been claimed yet.
    Pending,
    /// Operations are running or will be claimed.
    Running,
    /// An operation failed under `Pause`: waiting for a dismissal or a stop.
    Paused,
    /// Every operation succeeded.
    Succeeded,
    /// An operation failed and the rollout is over.
    Failed,
    /// A stop completed before every operation ran.
    Stopped,
    /// Another Apply with the same idempotency key already did this change.
    Skipped,
}

impl ApplyPhase {
    /// Terminal phases end the rollout: the lease is released and end-of-rollout effects run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ApplyPhase::Succeeded | ApplyPhase::Failed | ApplyPhase::Stopped | ApplyPhase::Skipped
        )
    }

    /// The phase as written in `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyPhase::Pending => "Pending",
            ApplyPhase::Running => "Running",
            ApplyPhase::Paused => "Paused",
            ApplyPhase::Succeeded => "Succeeded",
            ApplyPhase::Failed => "Failed",
            ApplyPhase::Stopped => "Stopped",
            ApplyPhase::Skipped => "Skipped",
        }
    }
}

/// Operations counted by phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationCounts {
    /// Waiting to be claimed (including operations not created yet).
    pub pending: u32,
    /// Claimed and not settled.
    pub running: u32,
    /// Applied and healthy.
    pub succeeded: u32,
    /// Failed and not dismissed.
    pub failed: u32,
    /// Stopped by request; resumable.
    pub stopped: u32,
    /// Every operation of the Apply.
    pub total: u32,
}

/// The error that blocks or fails the rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyError {
    /// `<operation>-<attempt>`: what `spec.dismissError` must name to dismiss this error.
    pub id: String,
    /// The failed operation's name.
    pub operation: String,
    /// Why it failed: `DispatchFailed`, `Unhealthy` or `Timeout`.
    pub reason: String,
    /// What the API server or the health check said.
    pub message: String,
    /// When the operation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// Progress of a stop request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StopStatus {
    /// When the stop took effect on the first operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Time>,
    /// When nothing was running any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// A dismissed error.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DismissedError {
    /// The error's id.
    pub id: String,
    /// When the dismissal put the failed operations back to `Pending`.
    pub at: Time,
}

impl Apply {
    /// Whether baton has written this Apply's status with a phase (it has driven it before).
    pub fn driven_before(&self) -> bool {
        self.status.as_ref().is_some_and(|status| status.phase.is_some())
    }
}
