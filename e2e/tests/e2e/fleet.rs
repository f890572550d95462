//! Rollouts over a fleet (specification section 9): the management cluster (where the operator
//! and the Applies live) and two workload clusters, `eu` and `us`, each a control plane of its
//! own (`baton_e2e::fleet`). Every test registers them in its namespace as Secrets holding a
//! kubeconfig, lets its `deployer` read them, and prepares a target namespace of the same name
//! on each workload cluster where `deployer` (impersonated there) may manage workloads.

use std::time::{Duration, Instant};

use baton::crd::{Apply, ApplyPhase, ApplySpec, FailurePolicy, Operation, OperationPhase};
use baton_e2e::fleet::{self, WorkloadCluster};
use baton_e2e::{Operator, TEST_LEASE_SECONDS, TestNamespace, pods, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::{RwLockReadGuard, RwLockWriteGuard};

use super::support::{
    DEPLOYER, PATIENCE, World, app, config_map, deployer_rules, deployment, held_deployment, spec,
};

/// Where an operation goes: the management cluster (`None`) or a registered one.
type Step<'a> = (&'a str, Option<&'a str>, Value);

/// A spec whose operations all target `namespace`, each in its own cluster, with `timeout`.
fn fleet_spec(
    namespace: &str,
    policy: FailurePolicy,
    max_concurrent: u32,
    timeout: &str,
    steps: Vec<Step<'_>>,
) -> ApplySpec {
    let clusters: Vec<Option<&str>> = steps.iter().map(|(_, cluster, _)| *cluster).collect();
    let manifests = steps.into_iter().map(|(name, _, manifest)| (name, manifest)).collect();
    let mut spec = spec(namespace, policy, max_concurrent, manifests);
    for (entry, cluster) in spec.operations.iter_mut().zip(clusters) {
        entry.target.cluster = cluster.map(str::to_owned);
        entry.timeout = timeout.to_owned();
    }
    spec
}

/// How a test uses `us`: sharing it, or alone because it takes its API server away.
enum UsAccess<'a> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

/// A test's fleet: its world on the management cluster, `eu` and `us` registered under those
/// names, and the target namespace (the test namespace's name) on both.
struct Fleet {
    world: World,
    eu: &'static WorkloadCluster,
    us: &'static WorkloadCluster,
    eu_client: Client,
    us_client: Client,
    _targets: Vec<TestNamespace>,
    // Declared last: released after the namespaces' clean-up was sent.
    _eu_access: RwLockReadGuard<'static, ()>,
    _us_access: UsAccess<'static>,
}

impl Fleet {
    /// `None` (and the test is skipped) against an existing cluster, where the harness starts
    /// no workload clusters.
    async fn new(prefix: &str, us_exclusive: bool) -> Option<Fleet> {
        if !fleet::available() {
            eprintln!("skipped: workload clusters are started only by the local harness");
            return None;
        }
        let (eu, us) = (fleet::workload_cluster("eu"), fleet::workload_cluster("us"));
        // In name order, so two tests never wait on each other crosswise.
        let eu_access = eu.shared().await;
        let us_access = if us_exclusive {
            UsAccess::Exclusive(us.exclusive().await)
        } else {
            UsAccess::Shared(us.shared().await)
        };
        // A test that failed during an outage started the API server again without waiting.
        eu.wait_usable().await;
        us.wait_usable().await;
        let world = World::new(prefix).await;
        let ns = world.ns.name.clone();
        fleet::register(&world.client, &ns, "eu", "eu").await;
        fleet::register(&world.client, &ns, "us", "us").await;
        fleet::allow_reading(&world.client, &ns, DEPLOYER, &["eu", "us"]).await;
        let mut targets = Vec::new();
        for cluster in [eu, us] {
            targets.push(cluster.target_namespace(&ns, &ns, DEPLOYER, deployer_rules()).await);
        }
        Some(Fleet {
            eu_client: eu.admin().await,
            us_client: us.admin().await,
            world,
            eu,
            us,
            _targets: targets,
            _eu_access: eu_access,
            _us_access: us_access,
        })
    }

    fn ns(&self) -> String {
        self.world.ns.name.clone()
    }

    /// The admin client of `cluster` (`None`: the management cluster).
    fn client(&self, cluster: Option<&str>) -> &Client {
        match cluster {
            None => &self.world.client,
            Some("eu") => &self.eu_client,
            Some("us") => &self.us_client,
            Some(other) => panic!("no cluster `{other}` in this fleet"),
        }
    }

    /// Which of the three clusters hold the Deployment `name` in the test namespace.
    async fn deployment_in(&self, name: &str) -> Vec<&'static str> {
        let mut found = Vec::new();
        for (label, cluster) in [("dev", None), ("eu", Some("eu")), ("us", Some("us"))] {
            let api: Api<Deployment> = Api::namespaced(self.client(cluster).clone(), &self.ns());
            if api.get_opt(name).await.expect("reading a Deployment").is_some() {
                found.push(label);
            }
        }
        found
    }

    /// Which of the three clusters hold the ConfigMap `name` in the test namespace.
    async fn config_map_in(&self, name: &str) -> Vec<&'static str> {
        let mut found = Vec::new();
        for (label, cluster) in [("dev", None), ("eu", Some("eu")), ("us", Some("us"))] {
            let api: Api<ConfigMap> = Api::namespaced(self.client(cluster).clone(), &self.ns());
            if api.get_opt(name).await.expect("reading a ConfigMap").is_some() {
                found.push(label);
            }
        }
        found
    }

    /// The Operation `<apply>-<operation>` as JSON, with the fields this checkout's types may
    /// not know yet (the inventory's `cluster`).
    async fn raw_operation(&self, apply: &str, operation: &str) -> Value {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.world.client.clone(),
            &self.ns(),
            &ApiResource::erase::<Operation>(&()),
        );
        let object = api.get(&format!("{apply}-{operation}")).await.expect("reading an Operation");
        serde_json::to_value(object).expect("an Operation as JSON")
    }

    /// Waits until the operation's `status.message` contains every piece of `pieces`; on
    /// timeout, says what the operation last showed and where the operator's log is.
    async fn wait_message(&self, apply: &str, operation: &str, pieces: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        let object = format!("{apply}-{operation}");
        loop {
            // Not created yet is not yet: the Apply's first pass may still be coming.
            let found = self.world.operations().get_opt(&object).await.ok().flatten();
            let status = found.as_ref().map(status_of).unwrap_or_default();
            let message = status.message.clone().unwrap_or_default();
            if pieces.iter().all(|piece| message.contains(piece)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for `{object}`'s message to say {pieces:?}; \
                 it is {:?} {:?}: `{message}` (operator log: {})",
                status.phase,
                status.reason,
                self.world.operator.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn status_of(op: &Operation) -> baton::crd::OperationStatus {
    op.status.clone().unwrap_or_default()
}

fn message_of(op: &Operation) -> String {
    status_of(op).message.unwrap_or_default()
}

/// Asserts that `message` contains every piece of `pieces`.
fn assert_says(what: &str, message: &str, pieces: &[&str]) {
    for piece in pieces {
        assert!(message.contains(piece), "{what}: `{message}` does not contain `{piece}`");
    }
}

#[tokio::test]
async fn a_rollout_over_dev_eu_and_us_lands_each_step_in_its_cluster_in_order() {
    let Some(fleet) = Fleet::new("fleet-order", false).await else { return };
    let ns = fleet.ns();
    let steps: Vec<Step> = vec![
        ("dev", None, held_deployment("web-dev")),
        ("eu", Some("eu"), held_deployment("web-eu")),
        ("us", Some("us"), held_deployment("web-us")),
    ];
    let names = ["dev", "eu", "us"];
    fleet.world.create("fleet", fleet_spec(&ns, FailurePolicy::Halt, 1, "2m", steps)).await;
    for (position, (name, cluster)) in names.iter().zip([None, Some("eu"), Some("us")]).enumerate()
    {
        fleet.world.wait_operation_phase("fleet", name, OperationPhase::Running).await;
        for (later, phase, _) in &fleet.world.phases("fleet").await[position + 1..] {
            assert_eq!(*phase, OperationPhase::Pending, "`{later}` must wait for `{name}`");
        }
        pods::release(fleet.client(cluster), &ns, &app(&format!("web-{name}"))).await;
        fleet.world.wait_operation_phase("fleet", name, OperationPhase::Succeeded).await;
    }
    fleet.world.wait_apply_phase("fleet", ApplyPhase::Succeeded).await;

    // Each object is in the cluster its operation named, and only there.
    for name in names {
        assert_eq!(
            fleet.deployment_in(&format!("web-{name}")).await,
            vec![name],
            "Deployment web-{name} must be in `{name}` only"
        );
    }
    // One after the other: each started no earlier than the previous one completed.
    let mut previous_end = None;
    for name in names {
        let status = status_of(&fleet.world.operation("fleet", name).await);
        let (started, completed) = (
            status.started_at.expect("startedAt of a finished operation").0,
            status.completed_at.expect("completedAt of a finished operation").0,
        );
        if let Some(end) = previous_end {
            assert!(started >= end, "`{name}` started at {started}, before {end}");
        }
        previous_end = Some(completed);
    }
    // The records name the cluster: inventory entries and `kubectl get operations`.
    for (name, cluster) in [("dev", None), ("eu", Some("eu")), ("us", Some("us"))] {
        let op = fleet.raw_operation("fleet", name).await;
        let entry = &op["status"]["inventory"][0];
        assert_eq!(entry["name"], json!(format!("web-{name}")), "{op}");
        assert_eq!(entry["cluster"].as_str(), cluster, "inventory of `{name}`: {entry}");
    }
    let listed = baton_e2e::kubectl(&["get", "operations", "-n", &ns]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "kubectl get operations: {listed:?}");
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains("CLUSTER"), "no CLUSTER column: {table}");
    for (name, cluster) in [("eu", "eu"), ("us", "us")] {
        let row = table
            .lines()
            .find(|line| line.starts_with(&format!("fleet-{name} ")))
            .unwrap_or_else(|| panic!("no row for fleet-{name}: {table}"));
        assert!(row.split_whitespace().any(|cell| cell == cluster), "row `{row}`");
    }
}

#[tokio::test]
async fn a_fleet_rollout_stops_while_eu_runs_and_resumes_to_its_end() {
    let Some(fleet) = Fleet::new("fleet-stop", false).await else { return };
    let ns = fleet.ns();
    let steps: Vec<Step> = vec![
        ("dev", None, config_map("step-dev")),
        ("eu", Some("eu"), held_deployment("web-eu")),
        ("us", Some("us"), config_map("step-us")),
    ];
    fleet.world.create("paused", fleet_spec(&ns, FailurePolicy::Halt, 1, "2m", steps)).await;
    fleet.world.wait_operation_phase("paused", "eu", OperationPhase::Running).await;
    // The Deployment is on eu, its pod running there, not ready.
    wait_for("the eu Deployment's pod", PATIENCE, || async {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(fleet.eu_client.clone(), &ns);
        let list = pods.list(&kube::api::ListParams::default().labels("app=web-eu")).await.ok()?;
        (!list.items.is_empty()).then_some(())
    })
    .await;
    fleet.world.patch_spec("paused", json!({"stop": true})).await;
    fleet.world.wait_apply_phase("paused", ApplyPhase::Stopped).await;
    let phases = fleet.world.phases("paused").await;
    let phase_of = |name: &str| phases.iter().find(|(n, _, _)| n == name).map(|(_, p, _)| *p);
    assert_eq!(phase_of("dev"), Some(OperationPhase::Succeeded), "{phases:?}");
    assert_eq!(phase_of("eu"), Some(OperationPhase::Stopped), "{phases:?}");
    assert_eq!(phase_of("us"), Some(OperationPhase::Stopped), "{phases:?}");
    assert!(fleet.config_map_in("step-us").await.is_empty(), "nothing reached us while stopped");
    assert_eq!(fleet.deployment_in("web-eu").await, vec!["eu"], "what eu got stays there");

    fleet.world.patch_spec("paused", json!({"stop": false})).await;
    fleet.world.wait_operation_phase("paused", "eu", OperationPhase::Running).await;
    pods::release(&fleet.eu_client, &ns, &app("web-eu")).await;
    fleet.world.wait_apply_phase("paused", ApplyPhase::Succeeded).await;
    assert_eq!(fleet.config_map_in("step-dev").await, vec!["dev"]);
    assert_eq!(fleet.deployment_in("web-eu").await, vec!["eu"]);
    assert_eq!(fleet.config_map_in("step-us").await, vec!["us"]);
}

/// Runs a two-operation Apply on the management cluster and returns how long it took.
async fn local_rollout(fleet: &Fleet, name: &str) -> Duration {
    let ns = fleet.ns();
    let started = Instant::now();
    let steps: Vec<Step> = vec![
        ("one", None, config_map(&format!("{name}-one"))),
        ("two", None, deployment(&format!("{name}-two"))),
    ];
    fleet.world.create(name, fleet_spec(&ns, FailurePolicy::Halt, 1, "1m", steps)).await;
    fleet.world.wait_apply_phase(name, ApplyPhase::Succeeded).await;
    started.elapsed()
}

#[tokio::test]
async fn an_unreachable_cluster_holds_only_its_own_operations_until_their_timeout() {
    let Some(fleet) = Fleet::new("fleet-down", true).await else { return };
    let ns = fleet.ns();
    let usual = local_rollout(&fleet, "before").await;

    // Continue, a window of two: e1 holds on eu and u1 on us when us goes away; once e1 is
    // released, e2 runs on eu and u2 is dispatched to the unreachable us.
    let steps: Vec<Step> = vec![
        ("e1", Some("eu"), held_deployment("web-e1")),
        ("u1", Some("us"), held_deployment("web-u1")),
        ("e2", Some("eu"), config_map("step-e2")),
        ("u2", Some("us"), config_map("step-u2")),
    ];
    fleet.world.create("onward", fleet_spec(&ns, FailurePolicy::Continue, 2, "20s", steps)).await;
    fleet.world.wait_operation_phase("onward", "e1", OperationPhase::Running).await;
    fleet.world.wait_operation_phase("onward", "u1", OperationPhase::Running).await;
    let us_deployments: Api<Deployment> = Api::namespaced(fleet.us_client.clone(), &ns);
    wait_for("web-u1 on us", PATIENCE, || async {
        us_deployments.get_opt("web-u1").await.ok().flatten()
    })
    .await;
    let down = fleet.us.stop_apiserver().await;
    let outage = Instant::now();
    // Halt: its us step comes after an eu step that succeeds.
    let steps: Vec<Step> = vec![
        ("e", Some("eu"), config_map("halt-e")),
        ("u", Some("us"), config_map("halt-u")),
        ("after", Some("eu"), config_map("halt-after")),
    ];
    fleet.world.create("halting", fleet_spec(&ns, FailurePolicy::Halt, 1, "20s", steps)).await;
    pods::release(&fleet.eu_client, &ns, &app("web-e1")).await;

    // The us operations run, saying which cluster cannot be reached and since when.
    for (apply, operation) in [("onward", "u1"), ("halting", "u")] {
        fleet
            .wait_message(apply, operation, &["cluster `us`", "unreachable since"], PATIENCE)
            .await;
        let op = fleet.world.operation(apply, operation).await;
        assert_eq!(status_of(&op).phase, OperationPhase::Running, "{}", message_of(&op));
    }
    // The eu operations are not held up by it.
    fleet.world.wait_operation_phase("onward", "e2", OperationPhase::Succeeded).await;
    fleet.world.wait_operation_phase("halting", "e", OperationPhase::Succeeded).await;
    // Nor is an Apply on the management cluster.
    let meanwhile = local_rollout(&fleet, "meanwhile").await;
    assert!(
        meanwhile <= usual * 3 + Duration::from_secs(2),
        "a management-cluster Apply took {meanwhile:?} during the outage, {usual:?} before"
    );
    fleet
        .wait_message("onward", "u2", &["cluster `us`", "unreachable"], Duration::from_secs(30))
        .await;

    // At their timeout they fail, naming the cluster.
    let mut failed_us = Vec::new();
    for (apply, operation) in [("onward", "u1"), ("onward", "u2"), ("halting", "u")] {
        let op =
            wait_for(&format!("{apply}-{operation} to time out"), Duration::from_secs(60), || {
                let world = &fleet.world;
                async move {
                    let op = world.operation(apply, operation).await;
                    (status_of(&op).phase == OperationPhase::Failed).then_some(op)
                }
            })
            .await;
        let status = status_of(&op);
        assert_eq!(status.reason.as_deref(), Some("Timeout"), "{:?}", status.message);
        assert_says(&format!("{apply}-{operation}"), &message_of(&op), &["cluster `us`"]);
        failed_us.push(message_of(&op));
    }
    let onward = fleet.world.wait_apply_phase("onward", ApplyPhase::Failed).await;
    let halting = fleet.world.wait_apply_phase("halting", ApplyPhase::Failed).await;
    let phases = fleet.world.phases("onward").await;
    let succeeded: Vec<&str> = phases
        .iter()
        .filter(|(_, phase, _)| *phase == OperationPhase::Succeeded)
        .map(|(name, _, _)| name.as_str())
        .collect();
    assert_eq!(succeeded, ["e1", "e2"], "under Continue the eu steps finish: {phases:?}");
    let status = halting.status.expect("a status");
    assert_says("the halted Apply's message", &status.message, &["cluster `us`"]);
    let error = status.error.expect("the halted Apply's error");
    assert_eq!(error.operation, "u");
    assert_says("the halted Apply's error", &error.message, &["cluster `us`"]);
    let halted = fleet.world.operation("halting", "after").await;
    assert_eq!(status_of(&halted).phase, OperationPhase::Pending, "Halt claims nothing after u");
    assert_says(
        "the continued Apply's message",
        &onward.status.expect("a status").message,
        &["u1"],
    );

    fleet.us.start_apiserver(down).await;
    println!(
        "unreachable cluster: us down {:.1}s; a management-cluster Apply took {:.2}s before, \
         {:.2}s during; timeout messages: {failed_us:?}",
        outage.elapsed().as_secs_f64(),
        usual.as_secs_f64(),
        meanwhile.as_secs_f64()
    );
    // A timed-out operation applies nothing afterwards.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["step-u2", "halt-u", "halt-after"] {
        let found = fleet.config_map_in(name).await;
        assert!(!found.contains(&"us"), "{name} reached us after its operation failed: {found:?}");
        assert!(!found.contains(&"dev"), "{name} reached the management cluster: {found:?}");
    }
}

#[tokio::test]
async fn a_cluster_back_before_the_timeout_finishes_its_operation_applying_once() {
    let Some(fleet) = Fleet::new("fleet-back", true).await else { return };
    let ns = fleet.ns();
    let steps: Vec<Step> = vec![
        ("us", Some("us"), held_deployment("web-us")),
        ("eu", Some("eu"), config_map("step-eu")),
    ];
    fleet.world.create("back", fleet_spec(&ns, FailurePolicy::Halt, 1, "300s", steps)).await;
    fleet.world.wait_operation_phase("back", "us", OperationPhase::Running).await;
    let deployments: Api<Deployment> = Api::namespaced(fleet.us_client.clone(), &ns);
    let before = wait_for("the Deployment on us", PATIENCE, || async {
        deployments.get_opt("web-us").await.ok().flatten()
    })
    .await;
    let down = fleet.us.stop_apiserver().await;
    // Back as soon as the operator found us gone (what it says then is the unreachable test's
    // business): a longer outage only lengthens the back-off of us's own controllers.
    fleet.wait_message("back", "us", &["cluster `us`", "unreachable since"], PATIENCE).await;
    fleet.us.start_apiserver(down).await;
    pods::release(&fleet.us_client, &ns, &app("web-us")).await;
    // us's controller-manager and kwok reconnect with client-go's back-off (up to 30 s each)
    // before the released pods turn Ready and the Deployment says so: hence the longer wait,
    // well within the 300 s timeout.
    let settled = wait_for("Apply `back` to be Succeeded", Duration::from_secs(150), || async {
        let apply = fleet.world.applies().get("back").await.ok()?;
        (apply.status?.phase == Some(ApplyPhase::Succeeded)).then_some(())
    });
    settled.await;

    let op = fleet.world.operation("back", "us").await;
    assert_eq!(status_of(&op).attempt, 1, "one attempt");
    let after = deployments.get("web-us").await.expect("the Deployment on us");
    assert_eq!(after.metadata.generation, Some(1), "the spec was written once");
    assert_eq!(before.metadata.generation, after.metadata.generation);
    let applies: Vec<_> = after
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|entry| entry.manager.as_deref() == Some("baton"))
        .collect();
    assert_eq!(applies.len(), 1, "one field manager entry of baton: {applies:?}");
    assert_eq!(
        applies[0].time,
        before
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .find(|entry| entry.manager.as_deref() == Some("baton"))
            .and_then(|entry| entry.time),
        "baton's apply is the one from before the outage"
    );
    assert_eq!(fleet.config_map_in("step-eu").await, vec!["eu"]);
}

#[tokio::test]
async fn unusable_registrations_fail_their_operation_naming_cluster_and_secret() {
    let Some(fleet) = Fleet::new("fleet-bad", false).await else { return };
    let ns = fleet.ns();
    let client = &fleet.world.client;
    let kubeconfig = fleet.eu.kubeconfig_with_token(&fleet.eu.identity("baton-remote").await);
    fleet::put_secret(client, &ns, "blank", &[("token", "not a kubeconfig key")]).await;
    fleet::put_secret(client, &ns, "garbled", &[("value", "clusters: [this is: not yaml")]).await;
    fleet::put_secret(client, &ns, "hidden", &[("value", &kubeconfig)]).await;
    fleet::put_secret(client, &ns, "euyaml", &[("value.yaml", &kubeconfig)]).await;
    // `ghost` is readable but does not exist; `hidden` exists but is not readable.
    fleet::allow_reading(
        client,
        &ns,
        DEPLOYER,
        &["eu", "us", "ghost", "blank", "garbled", "euyaml"],
    )
    .await;
    // A namespace on eu where deployer may do nothing.
    let bare = format!("{ns}-bare");
    let _bare = TestNamespace::create_named(&fleet.eu_client, &bare).await;

    let cases: Vec<(&str, &str, String, Vec<String>)> = vec![
        (
            "missing",
            "ghost",
            ns.clone(),
            vec!["cluster `ghost`".into(), format!("Secret `ghost` in `{ns}`"), "not found".into()],
        ),
        (
            "forbidden",
            "hidden",
            ns.clone(),
            vec!["cluster `hidden`".into(), "Secret `hidden`".into(), "forbidden".into()],
        ),
        (
            "blank",
            "blank",
            ns.clone(),
            vec!["cluster `blank`".into(), "no kubeconfig under `value` or `value.yaml`".into()],
        ),
        (
            "garbled",
            "garbled",
            ns.clone(),
            vec!["cluster `garbled`".into(), "does not parse".into()],
        ),
        (
            "remote-forbidden",
            "eu",
            bare.clone(),
            vec![
                "cluster `eu`".into(),
                format!("Deployment `web-remote-forbidden` in `{bare}`"),
                "forbidden".into(),
            ],
        ),
    ];
    for (name, cluster, target, _) in &cases {
        let manifest = deployment(&format!("web-{name}"));
        let spec = fleet_spec(
            target,
            FailurePolicy::Halt,
            1,
            "1m",
            vec![("only", Some(cluster), manifest)],
        );
        fleet.world.create(name, spec).await;
    }
    // `value.yaml` is read when `value` is absent.
    let steps: Vec<Step> = vec![("only", Some("euyaml"), config_map("from-value-yaml"))];
    fleet.world.create("valueyaml", fleet_spec(&ns, FailurePolicy::Halt, 1, "1m", steps)).await;

    let mut problems = Vec::new();
    for (name, _, _, pieces) in &cases {
        let apply = fleet.world.wait_apply_phase(name, ApplyPhase::Failed).await;
        let op = fleet.world.operation(name, "only").await;
        let status = status_of(&op);
        if status.phase != OperationPhase::Failed
            || status.reason.as_deref() != Some("DispatchFailed")
        {
            problems.push(format!("{name}: {:?} {:?}", status.phase, status.reason));
        }
        let message = status.message.unwrap_or_default();
        for piece in pieces {
            if !message.contains(piece.as_str()) {
                problems.push(format!("{name}: `{message}` lacks `{piece}`"));
            }
        }
        let apply_message = apply.status.map(|s| s.message).unwrap_or_default();
        if !apply_message.contains(pieces[0].as_str()) {
            problems
                .push(format!("{name}: the Apply's message `{apply_message}` lacks the cluster"));
        }
        // Nothing created anywhere.
        let found = fleet.deployment_in(&format!("web-{name}")).await;
        let bare_api: Api<Deployment> = Api::namespaced(fleet.eu_client.clone(), &bare);
        let in_bare = bare_api.get_opt(&format!("web-{name}")).await.expect("reading eu");
        if !found.is_empty() || in_bare.is_some() {
            problems.push(format!("{name}: web-{name} was created in {found:?}"));
        }
    }
    fleet.world.wait_apply_phase("valueyaml", ApplyPhase::Succeeded).await;
    assert_eq!(fleet.config_map_in("from-value-yaml").await, vec!["eu"]);
    assert!(
        problems.is_empty(),
        "(operator log: {})\n{}",
        fleet.world.operator.log.display(),
        problems.join("\n")
    );
}

#[tokio::test]
async fn rotated_credentials_are_used_by_the_next_apply() {
    let Some(fleet) = Fleet::new("fleet-rotate", false).await else { return };
    let ns = fleet.ns();
    let client = &fleet.world.client;
    // Identities of this test alone, so revoking one touches no other test.
    let suffix = ns.rsplit('-').next().unwrap_or_default().to_owned();
    let (old, new) = (format!("rotate-old-{suffix}"), format!("rotate-new-{suffix}"));
    let old_token = fleet.eu.identity(&old).await;
    fleet::put_secret(client, &ns, "eu", &[("value", &fleet.eu.kubeconfig_with_token(&old_token))])
        .await;
    let steps: Vec<Step> = vec![("eu", Some("eu"), config_map("first"))];
    fleet.world.create("first", fleet_spec(&ns, FailurePolicy::Halt, 1, "1m", steps)).await;
    fleet.world.wait_apply_phase("first", ApplyPhase::Succeeded).await;

    // The old token is revoked (the API server refuses it from now on), the Secret replaced.
    fleet.eu.revoke(&old).await;
    let new_token = fleet.eu.identity(&new).await;
    fleet::put_secret(client, &ns, "eu", &[("value", &fleet.eu.kubeconfig_with_token(&new_token))])
        .await;
    let steps: Vec<Step> = vec![("eu", Some("eu"), config_map("second"))];
    fleet.world.create("second", fleet_spec(&ns, FailurePolicy::Halt, 1, "30s", steps)).await;
    let apply = wait_for("the second Apply to settle", Duration::from_secs(60), || async {
        let apply = fleet.world.apply("second").await;
        apply.status.as_ref()?.phase.filter(|phase| phase.is_terminal()).map(|_| apply)
    })
    .await;
    let op = fleet.world.operation("second", "eu").await;
    assert_eq!(
        apply.status.and_then(|s| s.phase),
        Some(ApplyPhase::Succeeded),
        "the second Apply must use the new credentials: {:?}",
        status_of(&op).message
    );
    assert_eq!(fleet.config_map_in("second").await, vec!["eu"]);
    fleet.eu.revoke(&new).await;
}

#[tokio::test]
async fn a_killed_operator_is_replaced_on_the_remote_operation_in_the_same_attempt() {
    let Some(mut fleet) = Fleet::new("fleet-crash", false).await else { return };
    let ns = fleet.ns();
    let steps: Vec<Step> = vec![
        ("eu", Some("eu"), held_deployment("web-eu")),
        ("us", Some("us"), config_map("step-us")),
    ];
    fleet.world.create("crash", fleet_spec(&ns, FailurePolicy::Halt, 1, "2m", steps)).await;
    fleet.world.wait_operation_phase("crash", "eu", OperationPhase::Running).await;
    fleet.world.operator.kill();
    let replacement = Operator::start(&fleet.world.client, &ns).await;
    pods::release(&fleet.eu_client, &ns, &app("web-eu")).await;
    let applies: Api<Apply> = fleet.world.applies();
    wait_for(
        "the replacement to finish the rollout",
        PATIENCE + Duration::from_secs(TEST_LEASE_SECONDS),
        || {
            let applies = applies.clone();
            async move {
                (applies.get("crash").await.ok()?.status?.phase == Some(ApplyPhase::Succeeded))
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(status_of(&fleet.world.operation("crash", "eu").await).attempt, 1, "same attempt");
    let events = fleet.world.events("crash").await;
    assert!(events.iter().any(|(reason, _)| reason == "OperationTakenOver"), "{events:?}");
    assert_eq!(fleet.deployment_in("web-eu").await, vec!["eu"]);
    let deployment: Deployment = Api::namespaced(fleet.eu_client.clone(), &ns)
        .get("web-eu")
        .await
        .expect("the Deployment on eu");
    assert_eq!(deployment.metadata.generation, Some(1), "the take-over changed nothing");
    assert_eq!(fleet.config_map_in("step-us").await, vec!["us"]);
    fleet.world.operator = replacement;
}

/// The harness's own check: a registration Secret holds a kubeconfig that reaches its cluster
/// as an identity that may impersonate the Apply's service account and do nothing itself, and
/// the impersonated account may do there what its target namespace grants, nothing more.
#[tokio::test]
async fn a_registration_reaches_its_cluster_as_an_impersonator_only() {
    let Some(fleet) = Fleet::new("fleet-reg", false).await else { return };
    let ns = fleet.ns();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(fleet.world.client.clone(), &ns);
    for (name, cluster) in [("eu", fleet.eu), ("us", fleet.us)] {
        let secret = secrets.get(name).await.expect("the registration Secret");
        let value = secret.data.and_then(|data| data.get("value").cloned()).expect("key `value`");
        let kubeconfig = String::from_utf8(value.0).expect("a UTF-8 kubeconfig");
        assert!(kubeconfig.contains(&cluster.server), "{name}'s Secret names its API server");
        let itself = fleet::client_from_yaml(&kubeconfig).await;
        let own: Api<ConfigMap> = Api::namespaced(itself, &ns);
        match own.list(&Default::default()).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
            other => panic!("the registration identity must not read ConfigMaps: {other:?}"),
        }
        let mut parsed = kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("a kubeconfig");
        for named in &mut parsed.auth_infos {
            if let Some(info) = named.auth_info.as_mut() {
                info.impersonate = Some(format!("system:serviceaccount:{ns}:{DEPLOYER}"));
            }
        }
        let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
            .await
            .expect("an impersonating config");
        let deployer = Client::try_from(config).expect("an impersonating client");
        let cms: Api<ConfigMap> = Api::namespaced(deployer.clone(), &ns);
        let created: ConfigMap =
            serde_json::from_value(config_map("as-deployer")).expect("a ConfigMap");
        cms.create(&Default::default(), &created).await.expect("deployer may create ConfigMaps");
        let elsewhere: Api<ConfigMap> = Api::namespaced(deployer, "default");
        match elsewhere.create(&Default::default(), &created).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
            other => panic!("deployer must not write in `default` on {name}: {other:?}"),
        }
    }
    assert_eq!(fleet.config_map_in("as-deployer").await, vec!["eu", "us"]);
}
