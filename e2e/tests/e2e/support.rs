//! Helpers shared by the operator scenarios: building Applies, waiting for phases, reading
//! operations and Events.

use std::time::Duration;

use baton::crd::{
    Apply, ApplyPhase, ApplySpec, ApplyTemplate, DedupOn, FailurePolicy, Operation, OperationEntry,
    OperationPhase, Target,
};
use baton_e2e::{
    Operator, TestNamespace, admin_client, pods, service_account_with_rules, wait_for,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// The service account Applies in these tests impersonate.
pub const DEPLOYER: &str = "deployer";
/// How long a scenario waits for any one thing.
pub const PATIENCE: Duration = Duration::from_secs(45);

/// A test's world: a namespace, a deployer service account allowed to manage workloads
/// there, and an operator watching it.
pub struct World {
    pub client: Client,
    pub ns: TestNamespace,
    pub operator: Operator,
}

impl World {
    pub async fn new(prefix: &str) -> World {
        let client = admin_client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        World::new_in(client, ns, &[]).await
    }

    /// A world in `ns`, its operator started with `extra` flags.
    pub async fn new_in(client: Client, ns: TestNamespace, extra: &[&str]) -> World {
        allow_deployer(&client, &ns.name).await;
        let operator = Operator::start_with(&client, &ns.name, extra).await;
        World { client, ns, operator }
    }

    pub fn applies(&self) -> Api<Apply> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub fn operations(&self) -> Api<Operation> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub async fn create(&self, name: &str, spec: ApplySpec) -> Apply {
        self.applies()
            .create(&PostParams::default(), &Apply::new(name, spec))
            .await
            .expect("creating the Apply")
    }

    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.applies()
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec })))
            .await
            .expect("patching the Apply");
    }

    pub async fn apply(&self, name: &str) -> Apply {
        self.applies().get(name).await.expect("reading the Apply")
    }

    pub async fn operation(&self, apply: &str, operation: &str) -> Operation {
        self.operations().get(&format!("{apply}-{operation}")).await.expect("reading an Operation")
    }

    pub async fn phases(&self, apply: &str) -> Vec<(String, OperationPhase, u32)> {
        let mut operations = self
            .operations()
            .list(&ListParams::default().labels(&format!("baton.dev/apply={apply}")))
            .await
            .expect("listing operations")
            .items;
        operations.sort_by_key(|op| op.spec.index);
        operations
            .into_iter()
            .map(|op| {
                let status = op.status.unwrap_or_default();
                (op.spec.name, status.phase, status.attempt)
            })
            .collect()
    }

    pub async fn wait_apply_phase(&self, name: &str, phase: ApplyPhase) -> Apply {
        let applies = self.applies();
        wait_for(&format!("Apply `{name}` to be {phase:?}"), PATIENCE, || {
            let applies = applies.clone();
            async move {
                let apply = applies.get(name).await.ok()?;
                (apply.status.as_ref()?.phase == Some(phase)).then_some(apply)
            }
        })
        .await
    }

    pub async fn wait_operation_phase(
        &self,
        apply: &str,
        operation: &str,
        phase: OperationPhase,
    ) -> Operation {
        let operations = self.operations();
        let object = format!("{apply}-{operation}");
        wait_for(&format!("operation `{object}` to be {phase:?}"), PATIENCE, || {
            let operations = operations.clone();
            let object = object.clone();
            async move {
                let op = operations.get(&object).await.ok()?;
                (op.status.as_ref()?.phase == phase).then_some(op)
            }
        })
        .await
    }

    /// Events recorded on the Apply, oldest first, as `(reason, note)`.
    pub async fn events(&self, apply: &str) -> Vec<(String, String)> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        let mut items: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(apply))
            .collect();
        items.sort_by_key(|event| {
            event.event_time.as_ref().map(|t| t.0).or(event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0))
        });
        items
            .into_iter()
            .map(|event| (event.reason.unwrap_or_default(), event.note.unwrap_or_default()))
            .collect()
    }
}

/// What the deployer may do in a namespace: manage ConfigMaps and workloads.
pub fn deployer_rules() -> Vec<PolicyRule> {
    let rule = |groups: &[&str], resources: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
            .map(String::from)
            .to_vec(),
        ..PolicyRule::default()
    };
    vec![
        rule(&[""], &["configmaps"]),
        rule(&["apps"], &["deployments", "statefulsets", "daemonsets"]),
        rule(&["batch"], &["jobs"]),
    ]
}

async fn allow_deployer(client: &Client, namespace: &str) {
    service_account_with_rules(client, namespace, DEPLOYER, deployer_rules()).await;
}

/// Creates `rollout` under Pause: `a` a held Deployment, `b` a ConfigMap into a namespace that
/// does not exist yet (it fails until that namespace is created), `c` a ConfigMap. Returns the
/// missing namespace's name.
pub async fn create_rollout_failing_until_a_namespace(world: &World) -> String {
    let ns = world.ns.name.clone();
    let missing = format!("{ns}-later");
    let mut spec = spec(
        &ns,
        FailurePolicy::Pause,
        1,
        vec![("a", held_deployment("web-a")), ("b", config_map("b")), ("c", config_map("c"))],
    );
    spec.operations[1].target.namespace = missing.clone();
    world.create("rollout", spec).await;
    missing
}

pub fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"step": name}})
}

/// A one-replica Deployment whose pods become ready at once: it rolls out by itself.
pub fn deployment(name: &str) -> Value {
    deployment_with(name, json!({}))
}

/// A one-replica Deployment whose pod runs but is not ready until the test releases it
/// ([`baton_e2e::pods::release`] with `app=<name>`): its operation stays `Running` meanwhile.
pub fn held_deployment(name: &str) -> Value {
    deployment_with(name, pods::template_annotations(pods::NOT_READY))
}

/// A one-replica Deployment whose pod template carries `annotations`.
pub fn deployment_with(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    })
}

/// A Job whose pod runs until the test decides: [`baton_e2e::pods::fail`] (the Job then fails,
/// `BackoffLimitExceeded`) or [`baton_e2e::pods::release`] (it completes), with `job-name=<name>`.
pub fn held_job(name: &str) -> Value {
    job_with(name, 0, pods::template_annotations(pods::NOT_READY))
}

/// A Job whose pods fail: it fails once `backoff_limit` + 1 pods failed.
pub fn failing_job(name: &str, backoff_limit: u32) -> Value {
    job_with(name, backoff_limit, pods::template_annotations(pods::FAIL))
}

/// A Job whose pod completes at once.
pub fn job(name: &str) -> Value {
    job_with(name, 0, json!({}))
}

fn job_with(name: &str, backoff_limit: u32, annotations: Value) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "run", "image": "registry.invalid/job:1"}]},
            },
        },
    })
}

/// The pods of the Deployment `name` built by these helpers.
pub fn app(name: &str) -> String {
    format!("app={name}")
}

/// The pods of the Job `name`.
pub fn job_pods(name: &str) -> String {
    format!("job-name={name}")
}

/// A spec whose operations all target `namespace`, each with its own manifests.
pub fn spec(
    namespace: &str,
    policy: FailurePolicy,
    max_concurrent: u32,
    operations: Vec<(&str, Value)>,
) -> ApplySpec {
    ApplySpec {
        operations: operations
            .into_iter()
            .map(|(name, manifest)| OperationEntry {
                name: name.to_owned(),
                target: Target { namespace: namespace.to_owned(), cluster: None },
                manifests: Some(vec![manifest]),
                timeout: "10m".to_owned(),
                values: Default::default(),
                approval: None,
                soak: None,
            })
            .collect(),
        template: None::<ApplyTemplate>,
        on_failure: policy,
        max_concurrent,
        stop: false,
        dismiss_error: None,
        service_account_name: Some(DEPLOYER.to_owned()),
        idempotency_key: None,
        dedup_on: DedupOn::Success,
        max_failed: None,
        approvals: Vec::new(),
        health_checks: Vec::new(),
    }
}

/// Every Operation in `namespace`.
pub async fn all_operations(client: &Client, namespace: &str) -> Vec<Operation> {
    let api: Api<Operation> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default()).await.expect("listing operations").items
}

/// Every operation that left `Pending` ran exactly one attempt: none was claimed twice, none was
/// abandoned and claimed again. (Take-overs keep the attempt.)
pub fn check_single_attempts(operations: &[Operation]) -> Vec<String> {
    operations
        .iter()
        .filter_map(|op| {
            let status = op.status.clone().unwrap_or_default();
            let allowed = match status.phase {
                OperationPhase::Pending => 0..=0,
                // Stopped before or after its claim.
                OperationPhase::Stopped => 0..=1,
                _ => 1..=1,
            };
            (!allowed.contains(&status.attempt)).then(|| {
                format!(
                    "{}: attempt {} in phase {:?}",
                    op.metadata.name.clone().unwrap_or_default(),
                    status.attempt,
                    status.phase
                )
            })
        })
        .collect()
}
