//! `baton-bench`: baton against a baseline on one local control plane, side by side.
//!
//! The baseline is a plain `kube` client making the fewest writes that express the same end
//! state (create the operations, claim each with a status write, server-side apply its
//! manifests, write its terminal status, write the parent status once per change of phase).
//! Request counts come from the API server's own `apiserver_request_total`, scraped before and
//! after each run, so they include everything each side sent: writes are `POST`, `PUT`,
//! `PATCH`, `APPLY`, `DELETE` and `DELETECOLLECTION`, reads every other verb (`GET`, `LIST`,
//! `WATCH`; a watch counts once, when it opens, from `apiserver_longrunning_requests`). The
//! runner's own polls of the Apply while it waits are taken out (its scrapes of `/metrics` are
//! not counted by the API server), and so are the writes of the cluster's own components (see
//! [`CLUSTER_WRITES`]); what else the idle cluster sends is about one write in five seconds.
//!
//! Each scenario of the main table runs each side `BATON_BENCH_RUNS` times (3 by default, 1 in
//! the short profile), alternating baton and baseline, each run in a fresh namespace with, for
//! baton, a fresh operator (it watches one namespace). A row shows the median of the runs and
//! their spread (min–max), writes and reads per operation, and the operator's CPU seconds
//! (utime + stime of its process over the run); a line per scenario below the table gives the
//! spread of every figure.
//!
//! Run: `cargo run --release -p baton-e2e --bin baton-bench`. Environment:
//! - `BATON_BENCH_ONLY=throughput,fan-in,stop,heavy,verdict,fleet,waiting,signals,scale` picks
//!   scenarios (`fleet` starts two workload clusters beside the management one and counts each
//!   API server's requests; `heavy` is one Apply of 500 operations of ~2 KB ConfigMaps, about
//!   1 MiB, window 20);
//! - `BATON_BENCH_PROFILE=short` runs small sizes once (what `make test` runs);
//! - `BATON_BENCH_RUNS` sets the runs per side and scenario;
//! - `BATON_BENCH_HEAVY_OPERATIONS` sizes the heavy scenario (500 at most, 50 in the short profile);
//! - `BATON_BENCH_SCALE_APPLIES` / `BATON_BENCH_IDLE_SECONDS` size the scale scenario;
//! - `BATON_BENCH_LOG` sets the operator's `RUST_LOG`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton::crd::{
    Apply, ApplyPhase, ApplySpec, ApplyStatus, Claim, DedupOn, FailurePolicy, InventoryEntry,
    LABEL_APPLY, LABEL_INDEX, Operation, OperationEntry, OperationPhase, OperationSpec,
    OperationStatus, Target,
};
use baton::lifecycle::{ApplyFacts, Child, Idempotency, project};
use baton_e2e::{Operator, TestNamespace, admin_client, fleet, http_get, pods, policy, wait_for};
use futures::StreamExt;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

/// The service account both sides apply as (the baseline applies as the administrator, which
/// costs the same requests).
const DEPLOYER: &str = "deployer";
/// How often the runner looks at an object while waiting for a state other than an Apply's
/// phase, and samples the operator's memory (reads only, taken out of the counts).
const POLL: Duration = Duration::from_millis(20);

/// How big each scenario is.
#[derive(Clone, Copy)]
struct Sizes {
    /// Operations of the throughput Apply (window 20).
    throughput: usize,
    /// Applies of five operations created at once.
    fan_in: usize,
    /// Operations of the stop-latency Apply (the issue asks for 1,000; the CRD allows 500).
    stop: usize,
    /// Operations of the failure-to-verdict Apply (the one in the middle fails).
    verdict: usize,
    /// Settled Applies of five operations for the scale scenario.
    scale: usize,
    /// Seconds the scale scenario idles.
    idle: u64,
    /// Applies of three operations, one per cluster, for the fleet scenario.
    fleet: usize,
    /// Operations waiting at once on Deployments that never become healthy.
    waiting: usize,
    /// Seconds the waiting scenario counts requests for.
    waiting_window: u64,
    /// Failing health signals timed one by one.
    signals: usize,
    /// Operations of the heavy Apply (window 20), each a ConfigMap of [`HEAVY_MANIFEST_BYTES`]
    /// (`BATON_BENCH_HEAVY_OPERATIONS` overrides).
    heavy: usize,
    /// Runs of each side per scenario of the main table.
    runs: usize,
}

impl Sizes {
    /// The full profile, or with `BATON_BENCH_PROFILE=short` the small one CI runs so the runner
    /// does not rot (no targets apply to it). `BATON_BENCH_SCALE_APPLIES` and
    /// `BATON_BENCH_IDLE_SECONDS` override the scale scenario, `BATON_BENCH_HEAVY_OPERATIONS` the
    /// heavy one, `BATON_BENCH_RUNS` the runs.
    fn from_env() -> Sizes {
        let short = std::env::var("BATON_BENCH_PROFILE").is_ok_and(|profile| profile == "short");
        let number = |name: &str, default: u64| {
            std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
        };
        let (full, small) = (
            Sizes {
                throughput: 500,
                fan_in: 200,
                stop: 500,
                verdict: 200,
                scale: 2000,
                idle: 60,
                fleet: 100,
                waiting: 200,
                waiting_window: 60,
                signals: 20,
                heavy: 500,
                runs: 3,
            },
            Sizes {
                throughput: 60,
                fan_in: 20,
                stop: 40,
                verdict: 40,
                scale: 40,
                idle: 3,
                fleet: 5,
                waiting: 10,
                waiting_window: 5,
                signals: 3,
                heavy: 50,
                runs: 1,
            },
        );
        let sizes = if short { small } else { full };
        Sizes {
            scale: usize::try_from(number("BATON_BENCH_SCALE_APPLIES", sizes.scale as u64))
                .unwrap_or(sizes.scale),
            idle: number("BATON_BENCH_IDLE_SECONDS", sizes.idle),
            heavy: usize::try_from(number("BATON_BENCH_HEAVY_OPERATIONS", sizes.heavy as u64))
                .unwrap_or(sizes.heavy)
                .clamp(1, 500),
            runs: usize::try_from(number("BATON_BENCH_RUNS", sizes.runs as u64))
                .unwrap_or(sizes.runs)
                .max(1),
            ..sizes
        }
    }
}

/// Requests the API server counted, by `(verb, resource, subresource)`.
type Counts = BTreeMap<(String, String, String), f64>;

/// One look at the API server's request metrics.
#[derive(Default)]
struct Scrape {
    /// Requests served (a watch is counted when it ends).
    requests: Counts,
    /// Watches open now (`apiserver_longrunning_requests{verb="WATCH"}`).
    watching: f64,
}

/// Writes only the cluster's own components make (the workload controllers, the scheduler and
/// kwok, running a Deployment or Job a scenario applies): neither baton's nor the baseline's,
/// so left out of both columns.
const CLUSTER_WRITES: &[&str] = &[
    "pods",
    "pods/binding",
    "pods/status",
    "replicasets",
    "replicasets/status",
    "deployments/status",
    "jobs/status",
    "nodes",
    "nodes/status",
];

/// The verbs that write; every other verb reads.
const WRITE_VERBS: &[&str] = &["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];

fn label(labels: &str, key: &str) -> Option<String> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    Some(labels[start..].split('"').next()?.to_owned())
}

async fn scrape(client: &Client) -> Scrape {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("a request");
    let text = client.request_text(request).await.expect("the API server's /metrics");
    let mut scrape = Scrape::default();
    for line in text.lines() {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let value = value.parse::<f64>().unwrap_or(0.0);
        if labels.starts_with("apiserver_request_total{") {
            let key = (
                label(labels, "verb").unwrap_or_default(),
                label(labels, "resource").unwrap_or_default(),
                label(labels, "subresource").unwrap_or_default(),
            );
            *scrape.requests.entry(key).or_default() += value;
        } else if labels.starts_with("apiserver_longrunning_requests{")
            && label(labels, "verb").as_deref() == Some("WATCH")
        {
            scrape.watching += value;
        }
    }
    scrape
}

/// What one side did in one run: its wall time, the writes the API server saw by kind, the
/// reads, and (baton's side) the operator's CPU seconds.
#[derive(Default, Clone)]
struct Run {
    seconds: f64,
    writes: BTreeMap<String, f64>,
    reads: f64,
    cpu: Option<f64>,
}

impl Run {
    fn total_writes(&self) -> f64 {
        self.writes.values().sum()
    }
}

/// The requests between two scrapes: writes by kind (less the cluster's own), and reads, where
/// a watch counts when it opens: the watches that ended in between, plus the change in those
/// open (so a watch that outlives the run counts in it, one opened before it does not).
fn delta(before: &Scrape, after: &Scrape, seconds: f64) -> Run {
    let mut run = Run { seconds, ..Run::default() };
    for (key, value) in &after.requests {
        let change = value - before.requests.get(key).copied().unwrap_or(0.0);
        if change <= 0.0 {
            continue;
        }
        let (verb, resource, subresource) = key;
        if WRITE_VERBS.contains(&verb.as_str()) {
            let name = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            if CLUSTER_WRITES.contains(&name.as_str()) {
                continue;
            }
            *run.writes.entry(name).or_default() += change;
        } else {
            run.reads += change;
        }
    }
    run.reads = (run.reads + after.watching - before.watching).max(0.0);
    run
}

/// The runner's own reads of the management cluster (its polls while it waits), taken out of
/// the side's reads by [`Window`].
static RUNNER_READS: AtomicU64 = AtomicU64::new(0);

fn runner_read() {
    RUNNER_READS.fetch_add(1, Ordering::Relaxed);
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// One side's measured run on one or more API servers (the management cluster first): opened
/// just before the side's first request, closed when the end state is reached.
struct Window {
    before: Vec<Scrape>,
    runner_reads: u64,
    /// The operator's pid and CPU ticks at the start, on baton's side.
    ticks: Option<(u32, u64)>,
    started: Instant,
}

impl Window {
    async fn open(clients: &[&Client], operator: Option<&Operator>) -> Window {
        let mut before = Vec::new();
        for client in clients {
            before.push(scrape(client).await);
        }
        Window {
            before,
            runner_reads: RUNNER_READS.load(Ordering::Relaxed),
            ticks: operator.map(|operator| (operator.pid(), cpu_ticks(operator.pid()))),
            started: Instant::now(),
        }
    }

    /// A run per API server, in the order `open` had them.
    async fn close(self, clients: &[&Client]) -> Vec<Run> {
        let seconds = self.started.elapsed().as_secs_f64();
        let cpu = self
            .ticks
            .map(|(pid, ticks)| cpu_ticks(pid).saturating_sub(ticks) as f64 / clock_ticks());
        let polls = (RUNNER_READS.load(Ordering::Relaxed) - self.runner_reads) as f64;
        let mut runs = Vec::new();
        for (index, (client, before)) in clients.iter().zip(&self.before).enumerate() {
            let mut run = delta(before, &scrape(client).await, seconds);
            // The runner polls the management cluster only; its scrapes of `/metrics` are not
            // counted by `apiserver_request_total`.
            if index == 0 {
                run.reads = (run.reads - polls).max(0.0);
            }
            run.cpu = cpu;
            runs.push(run);
        }
        runs
    }

    async fn close_one(self, client: &Client) -> Run {
        self.close(&[client]).await.remove(0)
    }
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"bench": name}})
}

fn spec(namespace: &str, policy: FailurePolicy, max: u32, manifests: Vec<Value>) -> ApplySpec {
    ApplySpec {
        operations: manifests
            .into_iter()
            .enumerate()
            .map(|(index, manifest)| OperationEntry {
                name: format!("op{index}"),
                target: Target { namespace: namespace.to_owned(), cluster: None },
                manifests: Some(vec![manifest]),
                timeout: "10m".to_owned(),
                values: Default::default(),
                approval: None,
                soak: None,
            })
            .collect(),
        template: None,
        on_failure: policy,
        max_concurrent: max,
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

fn config_maps(prefix: &str, count: usize) -> Vec<Value> {
    (0..count).map(|index| config_map(&format!("{prefix}-{index}"))).collect()
}

async fn phase(applies: &Api<Apply>, name: &str) -> Option<ApplyPhase> {
    runner_read();
    applies.get(name).await.ok()?.status?.phase
}

/// Waits until every Apply of `names` is in `wanted`, watching the namespace's Applies (a list,
/// then a watch from it; both counted as the runner's own reads). Polling instead would cost
/// the API server, and a runner sharing the machine, a read of every Apply each time (a heavy
/// Apply is 1 MiB), on baton's side only.
async fn wait_phase(applies: &Api<Apply>, names: &[String], wanted: ApplyPhase) {
    let mut pending: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let reached = |apply: &Apply| apply.status.as_ref().and_then(|s| s.phase) == Some(wanted);
    while !pending.is_empty() {
        runner_read();
        let Ok(list) = applies.list(&ListParams::default()).await else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        for apply in list.items.iter().filter(|apply| reached(apply)) {
            pending.remove(apply.name_any().as_str());
        }
        let version = list.metadata.resource_version.unwrap_or_default();
        if pending.is_empty() {
            break;
        }
        runner_read();
        let Ok(events) = applies.watch(&WatchParams::default().timeout(290), &version).await else {
            continue;
        };
        let mut events = std::pin::pin!(events);
        // Until the watch ends or fails; then a fresh list.
        while let Some(Ok(event)) = events.next().await {
            match event {
                WatchEvent::Added(apply) | WatchEvent::Modified(apply) if reached(&apply) => {
                    pending.remove(apply.name_any().as_str());
                    if pending.is_empty() {
                        break;
                    }
                }
                WatchEvent::Error(_) => break,
                _ => {}
            }
        }
    }
}

async fn is_running(operations: &Api<Operation>, name: &str) -> bool {
    runner_read();
    let status = operations.get_opt(name).await.ok().flatten().and_then(|op| op.status);
    status.is_some_and(|status| status.phase == OperationPhase::Running)
}

/// A namespace with the deployer account and an operator, for baton's side.
async fn baton_side(client: &Client, prefix: &str) -> (TestNamespace, Operator) {
    let ns = TestNamespace::create(client, prefix).await;
    let rules = vec![PolicyRule {
        api_groups: Some(vec![String::new(), "apps".into(), "batch".into()]),
        resources: Some(vec!["configmaps".into(), "deployments".into(), "jobs".into()]),
        verbs: ["get", "list", "watch", "create", "update", "patch"].map(String::from).to_vec(),
        ..PolicyRule::default()
    }];
    baton_e2e::service_account_with_rules(client, &ns.name, DEPLOYER, rules).await;
    let operator = Operator::start_plain(client, &ns.name, &[]).await;
    wait_for("the operator to be ready", Duration::from_secs(60), || async {
        matches!(http_get(operator.admin, "/readyz").await, Some((200, _))).then_some(())
    })
    .await;
    (ns, operator)
}

/// Runs `specs` through baton until every Apply reaches `until`.
async fn run_baton(
    client: &Client,
    prefix: &str,
    specs: impl Fn(&str) -> Vec<(String, ApplySpec)>,
    until: ApplyPhase,
) -> Run {
    let (ns, operator) = baton_side(client, prefix).await;
    let specs = specs(&ns.name);
    let applies: Api<Apply> = Api::namespaced(client.clone(), &ns.name);
    let names: Vec<String> = specs.iter().map(|(name, _)| name.clone()).collect();
    let window = Window::open(&[client], Some(&operator)).await;
    for (name, spec) in specs {
        if let Err(error) = applies.create(&PostParams::default(), &Apply::new(&name, spec)).await {
            panic!("creating the Apply {name}: {error}");
        }
    }
    wait_phase(&applies, &names, until).await;
    let run = window.close_one(client).await;
    drop(operator);
    run
}

fn op_object(apply: &Apply, index: usize, entry: &OperationEntry) -> Operation {
    Operation {
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", apply.name_any(), entry.name)),
            namespace: apply.namespace(),
            labels: Some(
                [
                    (LABEL_APPLY.to_owned(), apply.name_any()),
                    (LABEL_INDEX.to_owned(), index.to_string()),
                ]
                .into(),
            ),
            owner_references: apply.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: OperationSpec {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            name: entry.name.clone(),
            target: entry.target.clone(),
            manifests: entry.manifests.clone().unwrap_or_default(),
            timeout: entry.timeout.clone(),
            approval: None,
            soak: None,
            values_error: None,
        },
        status: None,
    }
}

async fn parent_status(applies: &Api<Apply>, name: &str, phase: ApplyPhase) {
    let status = ApplyStatus { phase: Some(phase), ..ApplyStatus::default() };
    let body = json!({"apiVersion": "baton.dev/v1alpha1", "kind": "Apply", "status": status});
    applies
        .patch_status(name, &PatchParams::apply("baseline").force(), &Patch::Apply(&body))
        .await
        .expect("parent status");
}

async fn write_status(operations: &Api<Operation>, op: &mut Operation, status: OperationStatus) {
    op.status = Some(status);
    op.metadata.managed_fields = None;
    *op = operations
        .replace_status(&op.name_any(), &PostParams::default(), op)
        .await
        .expect("an operation status");
}

/// The baseline: the fewest writes for the same end state, no controller logic.
async fn run_baseline(
    client: &Client,
    prefix: &str,
    specs: impl Fn(&str) -> Vec<(String, ApplySpec)>,
) -> Run {
    let ns = TestNamespace::create(client, prefix).await;
    // The baseline writes Operation statuses as an administrator, which baton's admission
    // policy refuses outside a break-glass namespace.
    policy::break_glass(client, &ns.name).await;
    let specs = specs(&ns.name);
    let window = Window::open(&[client], None).await;
    baseline_in(client, &ns, &BTreeMap::new(), specs).await;
    window.close_one(client).await
}

/// The baseline in `ns` (break-glass, see [`run_baseline`]): an operation targeting a
/// registered cluster is applied with that cluster's client in `remotes` (one client per
/// cluster, as an administrator), in the namespace of the same name there.
async fn baseline_in(
    client: &Client,
    ns: &TestNamespace,
    remotes: &BTreeMap<String, Client>,
    specs: Vec<(String, ApplySpec)>,
) {
    let applies: Api<Apply> = Api::namespaced(client.clone(), &ns.name);
    let operations: Api<Operation> = Api::namespaced(client.clone(), &ns.name);
    futures::stream::iter(specs)
        .for_each_concurrent(16, |(name, spec)| {
            let (applies, operations, client, namespace) =
                (applies.clone(), operations.clone(), client.clone(), ns.name.clone());
            async move {
                let apply = applies
                    .create(&PostParams::default(), &Apply::new(&name, spec.clone()))
                    .await
                    .expect("an Apply");
                let mut ops = Vec::new();
                for (index, entry) in spec.operations.iter().enumerate() {
                    ops.push(
                        operations
                            .create(&PostParams::default(), &op_object(&apply, index, entry))
                            .await
                            .expect("an Operation"),
                    );
                }
                parent_status(&applies, &name, ApplyPhase::Running).await;
                let window = usize::try_from(spec.max_concurrent).unwrap_or(1);
                futures::stream::iter(ops)
                    .for_each_concurrent(window, |mut op| {
                        let cluster = op.spec.target.cluster.clone();
                        let client = match &cluster {
                            Some(name) => remotes.get(name).expect("a client per cluster").clone(),
                            None => client.clone(),
                        };
                        let (operations, namespace) = (operations.clone(), namespace.clone());
                        async move {
                            let now = Time(Timestamp::now());
                            let claim = Claim { holder: "baseline".into(), at: now.clone() };
                            let running = OperationStatus {
                                phase: OperationPhase::Running,
                                attempt: 1,
                                claim: Some(claim),
                                started_at: Some(now.clone()),
                                ..OperationStatus::default()
                            };
                            write_status(&operations, &mut op, running).await;
                            let mut inventory = Vec::new();
                            for manifest in &op.spec.manifests {
                                let name = manifest["metadata"]["name"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_owned();
                                let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
                                    Api::namespaced(client.clone(), &namespace);
                                cms.patch(
                                    &name,
                                    &PatchParams::apply("baseline"),
                                    &Patch::Apply(manifest),
                                )
                                .await
                                .expect("an apply");
                                inventory.push(InventoryEntry {
                                    api_version: "v1".into(),
                                    kind: "ConfigMap".into(),
                                    namespace: Some(namespace.clone()),
                                    name,
                                    cluster: cluster.clone(),
                                });
                            }
                            let done = OperationStatus {
                                phase: OperationPhase::Succeeded,
                                attempt: 1,
                                started_at: Some(now),
                                completed_at: Some(Time(Timestamp::now())),
                                inventory,
                                ..OperationStatus::default()
                            };
                            write_status(&operations, &mut op, done).await;
                        }
                    })
                    .await;
                parent_status(&applies, &name, ApplyPhase::Succeeded).await;
            }
        })
        .await;
}

/// A scenario of the main table: every run of each side (no baseline for some).
struct Row {
    /// Its `BATON_BENCH_ONLY` name.
    key: &'static str,
    scenario: String,
    operations: usize,
    baton: Vec<Run>,
    baseline: Vec<Run>,
}

impl Row {
    fn new(key: &'static str, scenario: String, operations: usize) -> Row {
        Row { key, scenario, operations, baton: Vec::new(), baseline: Vec::new() }
    }

    /// Records one run of one side, and says so on stderr as it goes.
    fn push(&mut self, side: &str, run: Run, runs: usize) {
        let per_op = self.operations.max(1) as f64;
        let list = if side == "baton" { &mut self.baton } else { &mut self.baseline };
        list.push(run.clone());
        eprintln!(
            "{} run {}/{runs}, {side}: {:.3}s, {:.2} writes/op, {:.2} reads/op{}",
            self.key,
            list.len(),
            run.seconds,
            run.total_writes() / per_op,
            run.reads / per_op,
            run.cpu.map(|cpu| format!(", operator CPU {cpu:.2}s")).unwrap_or_default()
        );
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `(min, max)`.
fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// Seconds, with more digits below one.
fn secs(value: f64) -> String {
    if value < 1.0 { format!("{value:.3}") } else { format!("{value:.2}") }
}

/// The figures of one side's runs, in the row's units.
struct Side {
    seconds: Vec<f64>,
    writes: Vec<f64>,
    reads: Vec<f64>,
    cpu: Vec<f64>,
    kinds: BTreeMap<String, Vec<f64>>,
}

impl Side {
    fn of(runs: &[Run], operations: usize) -> Option<Side> {
        if runs.is_empty() {
            return None;
        }
        let per_op = operations.max(1) as f64;
        let mut kinds: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for run in runs {
            for kind in run.writes.keys() {
                kinds.entry(kind.clone()).or_default();
            }
        }
        for (kind, counts) in &mut kinds {
            counts.extend(runs.iter().map(|run| run.writes.get(kind).copied().unwrap_or(0.0)));
        }
        Some(Side {
            seconds: runs.iter().map(|run| run.seconds).collect(),
            writes: runs.iter().map(|run| run.total_writes() / per_op).collect(),
            reads: runs.iter().map(|run| run.reads / per_op).collect(),
            cpu: runs.iter().filter_map(|run| run.cpu).collect(),
            kinds,
        })
    }

    /// The median seconds, and their range when there is more than one run.
    fn seconds_cell(&self) -> String {
        let (min, max) = spread(&self.seconds);
        if self.seconds.len() > 1 {
            format!("{} ({}–{})", secs(median(&self.seconds)), secs(min), secs(max))
        } else {
            secs(median(&self.seconds))
        }
    }

    /// Writes by kind, the median of each over the runs (kinds written in fewer than half of
    /// them left out).
    fn kinds_cell(&self) -> String {
        self.kinds
            .iter()
            .map(|(kind, counts)| (kind, median(counts)))
            .filter(|(_, count)| *count >= 0.5)
            .map(|(kind, count)| format!("{kind} {count:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| scenario | runs | baton s | baseline s | ratio | baton writes/op | baseline writes/op | baton reads/op | baseline reads/op | baton CPU s | baton writes by kind | baseline writes by kind |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let or_dash = |side: &Option<Side>, cell: &dyn Fn(&Side) -> String| {
        side.as_ref().map_or_else(|| "-".to_owned(), cell)
    };
    for row in rows {
        let baton = Side::of(&row.baton, row.operations);
        let baseline = Side::of(&row.baseline, row.operations);
        let ratio = match (&baton, &baseline) {
            (Some(ours), Some(theirs)) => {
                format!("{:.2}x", median(&ours.seconds) / median(&theirs.seconds).max(1e-9))
            }
            _ => "-".to_owned(),
        };
        let cpu = |side: &Side| {
            if side.cpu.is_empty() { "-".to_owned() } else { format!("{:.2}", median(&side.cpu)) }
        };
        println!(
            "| {} | {} | {} | {} | {ratio} | {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.baton.len().max(row.baseline.len()),
            or_dash(&baton, &Side::seconds_cell),
            or_dash(&baseline, &Side::seconds_cell),
            or_dash(&baton, &|side| format!("{:.2}", median(&side.writes))),
            or_dash(&baseline, &|side| format!("{:.2}", median(&side.writes))),
            or_dash(&baton, &|side| format!("{:.2}", median(&side.reads))),
            or_dash(&baseline, &|side| format!("{:.2}", median(&side.reads))),
            or_dash(&baton, &cpu),
            or_dash(&baton, &Side::kinds_cell),
            or_dash(&baseline, &Side::kinds_cell),
        );
    }
    println!();
    println!("Spread (min–max over the runs; figures per operation unless in seconds):");
    for row in rows {
        let range = |values: &[f64], digits: usize| {
            let (min, max) = spread(values);
            let (min, max) = (format!("{min:.digits$}"), format!("{max:.digits$}"));
            if min == max { min } else { format!("{min}–{max}") }
        };
        let mut parts = Vec::new();
        for (name, side) in [
            ("baton", Side::of(&row.baton, row.operations)),
            ("baseline", Side::of(&row.baseline, row.operations)),
        ] {
            let Some(side) = side else { continue };
            let mut part = format!(
                "{name} {} s, {} writes, {} reads",
                range(&side.seconds, 3),
                range(&side.writes, 2),
                range(&side.reads, 2)
            );
            if !side.cpu.is_empty() {
                part.push_str(&format!(", CPU {} s", range(&side.cpu, 2)));
            }
            parts.push(part);
        }
        let runs = row.baton.len().max(row.baseline.len());
        let plural = if runs == 1 { "" } else { "s" };
        println!("- {} ({runs} run{plural}): {}", row.key, parts.join("; "));
    }
}

/// Runs both sides `runs` times, alternating, each run in fresh namespaces.
async fn both_sides(
    client: &Client,
    mut row: Row,
    runs: usize,
    prefix: &str,
    specs: impl Fn(&str) -> Vec<(String, ApplySpec)> + Copy,
) -> Row {
    let (ours, theirs) = (format!("bench-{prefix}"), format!("base-{prefix}"));
    for _ in 0..runs {
        row.push("baton", run_baton(client, &ours, specs, ApplyPhase::Succeeded).await, runs);
        row.push("baseline", run_baseline(client, &theirs, specs).await, runs);
    }
    row
}

async fn throughput(client: &Client, sizes: Sizes) -> Row {
    let count = sizes.throughput;
    let specs = |ns: &str| {
        vec![("wide".to_owned(), spec(ns, FailurePolicy::Halt, 20, config_maps("tp", count)))]
    };
    let row =
        Row::new("throughput", format!("throughput: 1 Apply x {count} ops, window 20"), count);
    both_sides(client, row, sizes.runs, "tp", specs).await
}

async fn fan_in(client: &Client, sizes: Sizes) -> Row {
    let count = sizes.fan_in;
    let specs = |ns: &str| {
        (0..count)
            .map(|i| {
                (
                    format!("f{i}"),
                    spec(ns, FailurePolicy::Halt, 1, config_maps(&format!("f{i}"), 5)),
                )
            })
            .collect()
    };
    let row = Row::new("fan-in", format!("fan-in: {count} Applies x 5 ops"), count * 5);
    both_sides(client, row, sizes.runs, "fan", specs).await
}

/// The serialized size of each heavy manifest.
const HEAVY_MANIFEST_BYTES: usize = 2048;

/// A ConfigMap of `HEAVY_MANIFEST_BYTES` as JSON: its name and a payload of filler text.
fn heavy_config_map(name: &str) -> Value {
    let mut manifest = config_map(name);
    let bare = manifest.to_string().len() + r#","payload":"""#.len();
    let filler: String = "0123456789abcdefghijklmnopqrstuvwxyz"
        .chars()
        .cycle()
        .take(HEAVY_MANIFEST_BYTES.saturating_sub(bare))
        .collect();
    manifest["data"]["payload"] = Value::String(filler);
    manifest
}

/// The heavy Apply, targeting `namespace`.
fn heavy_specs(namespace: &str, count: usize) -> Vec<(String, ApplySpec)> {
    let manifests = (0..count).map(|index| heavy_config_map(&format!("hv-{index}"))).collect();
    vec![("heavy".to_owned(), spec(namespace, FailurePolicy::Halt, 20, manifests))]
}

/// Heavy: one Apply of operations whose manifests are ~2 KB each (500 of them make an Apply of
/// about 1 MiB, under etcd's default request limit of 1.5 MiB), window 20.
async fn heavy(client: &Client, sizes: Sizes) -> Row {
    let count = sizes.heavy;
    let bytes = heavy_specs("e2e-bench-heavy-0000000", count)
        .into_iter()
        .map(|(name, spec)| serde_json::to_vec(&Apply::new(&name, spec)).map_or(0, |v| v.len()))
        .sum::<usize>();
    let mib = bytes as f64 / 1024.0 / 1024.0;
    println!(
        "\nheavy: the Apply is {bytes} bytes ({mib:.2} MiB; {count} operations of {HEAVY_MANIFEST_BYTES}-byte manifests); etcd's default request limit is 1.5 MiB"
    );
    let row = Row::new(
        "heavy",
        format!(
            "heavy: 1 Apply x {count} ops of {} KiB ({mib:.2} MiB), window 20",
            HEAVY_MANIFEST_BYTES / 1024
        ),
        count,
    );
    let row = both_sides(client, row, sizes.runs, "hv", |ns| heavy_specs(ns, count)).await;
    println!("heavy: the API server accepted the {mib:.2} MiB Apply on both sides");
    row
}

/// Stop latency: from the stop patch to the Apply `Stopped`, every sibling stopped.
async fn stop_latency(client: &Client, sizes: Sizes) -> Row {
    let count = sizes.stop;
    let mut row = Row::new("stop", format!("stop latency: {count} ops, first running"), count);
    for _ in 0..sizes.runs {
        row.push("baton", stop_baton(client, count).await, sizes.runs);
        row.push("baseline", stop_baseline(client, count).await, sizes.runs);
    }
    row
}

async fn stop_baton(client: &Client, count: usize) -> Run {
    // baton: the first operation is a Deployment whose pod never becomes ready, so it stays
    // running.
    let (ns, operator) = baton_side(client, "bench-stop").await;
    let applies: Api<Apply> = Api::namespaced(client.clone(), &ns.name);
    let mut manifests = vec![held_deployment("held")];
    manifests.extend(config_maps("st", count - 1));
    applies
        .create(
            &PostParams::default(),
            &Apply::new("long", spec(&ns.name, FailurePolicy::Halt, 1, manifests)),
        )
        .await
        .expect("an Apply");
    let operations: Api<Operation> = Api::namespaced(client.clone(), &ns.name);
    loop {
        let running = is_running(&operations, "long-op0").await;
        if running && phase(&applies, "long").await == Some(ApplyPhase::Running) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let window = Window::open(&[client], Some(&operator)).await;
    applies
        .patch("long", &PatchParams::default(), &Patch::Merge(json!({"spec": {"stop": true}})))
        .await
        .expect("stop");
    wait_phase(&applies, &["long".to_owned()], ApplyPhase::Stopped).await;
    let run = window.close_one(client).await;
    drop(operator);
    run
}

/// The baseline: `count` operations, the first running; stop = `count` status writes and the
/// parent's.
async fn stop_baseline(client: &Client, count: usize) -> Run {
    let base = TestNamespace::create(client, "base-stop").await;
    policy::break_glass(client, &base.name).await;
    let applies: Api<Apply> = Api::namespaced(client.clone(), &base.name);
    let operations: Api<Operation> = Api::namespaced(client.clone(), &base.name);
    let spec = spec(&base.name, FailurePolicy::Halt, 1, config_maps("st", count));
    let apply = applies
        .create(&PostParams::default(), &Apply::new("long", spec.clone()))
        .await
        .expect("an Apply");
    let mut ops = Vec::new();
    for (index, entry) in spec.operations.iter().enumerate() {
        ops.push(
            operations
                .create(&PostParams::default(), &op_object(&apply, index, entry))
                .await
                .expect("an Operation"),
        );
    }
    let window = Window::open(&[client], None).await;
    futures::stream::iter(ops)
        .for_each_concurrent(16, |mut op| {
            let operations = operations.clone();
            async move {
                let stopped = OperationStatus {
                    phase: OperationPhase::Stopped,
                    stopped_at: Some(Time(Timestamp::now())),
                    ..OperationStatus::default()
                };
                write_status(&operations, &mut op, stopped).await;
            }
        })
        .await;
    parent_status(&applies, "long", ApplyPhase::Stopped).await;
    window.close_one(client).await
}

/// Failure to verdict under Continue: from the failing health signal to `status.error`.
async fn failure_to_verdict(client: &Client, sizes: Sizes) -> Row {
    let count = sizes.verdict;
    let scenario = format!("failure to verdict (Continue, {count} ops)");
    // Per operation here means per verdict.
    let mut row = Row::new("verdict", scenario, 1);
    for _ in 0..sizes.runs {
        row.push("baton", verdict_baton(client, count).await, sizes.runs);
    }
    row
}

async fn verdict_baton(client: &Client, count: usize) -> Run {
    let middle = count / 2;
    let (ns, operator) = baton_side(client, "bench-fail").await;
    let applies: Api<Apply> = Api::namespaced(client.clone(), &ns.name);
    let mut manifests = config_maps("fv", count);
    manifests[middle] = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "breaks"},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {pods::CONTAINER: pods::NOT_READY}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "registry.invalid/c:1"}]},
        }},
    });
    applies
        .create(
            &PostParams::default(),
            &Apply::new("mixed", spec(&ns.name, FailurePolicy::Continue, 20, manifests)),
        )
        .await
        .expect("an Apply");
    let operations: Api<Operation> = Api::namespaced(client.clone(), &ns.name);
    loop {
        let running = is_running(&operations, &format!("mixed-op{middle}")).await;
        let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns.name);
        if running && jobs.get_opt("breaks").await.ok().flatten().is_some() {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // The pod fails for real and the Job controller reports it; the clock starts when the
    // Job's Failed condition is there, so the figure is baton's time from the health signal.
    pods::fail(client, &ns.name, "job-name=breaks").await;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns.name);
    loop {
        let job = jobs.get_opt("breaks").await.ok().flatten();
        let conditions = job.and_then(|j| j.status).and_then(|s| s.conditions).unwrap_or_default();
        if conditions.iter().any(|c| c.type_ == "Failed" && c.status == "True") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let window = Window::open(&[client], Some(&operator)).await;
    loop {
        runner_read();
        let error = applies.get("mixed").await.ok().and_then(|a| a.status).and_then(|s| s.error);
        if error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let run = window.close_one(client).await;
    drop(operator);
    run
}

/// A Deployment whose one pod runs but never becomes ready.
fn held_deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}, "annotations": {pods::CONTAINER: pods::NOT_READY}},
            "spec": {"containers": [{"name": "c", "image": "registry.invalid/c:1"}]},
        }},
    })
}

/// A gauge of the operator's `/metrics`.
async fn operator_gauge(operator: &Operator, name: &str) -> Option<f64> {
    let (_, body) = http_get(operator.admin, "/metrics").await?;
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

/// Every request the API server counted, all verbs and resources.
fn all_requests(before: &Counts, after: &Counts) -> f64 {
    after.iter().map(|(key, value)| value - before.get(key).copied().unwrap_or(0.0)).sum()
}

/// Waiting: operations that wait at once, each on a Deployment that never becomes healthy,
/// spread over ten target namespaces. Counts every request the API server serves in a window
/// while they wait, less the same window with the operator idle before (the cluster's own
/// components), per waiting operation per minute; then stops the rollout and times the
/// watches closing.
async fn waiting(client: &Client, sizes: Sizes) {
    let count = sizes.waiting;
    let window = Duration::from_secs(sizes.waiting_window);
    let (ns, operator) = baton_side(client, "bench-wait").await;
    let rules = vec![PolicyRule {
        api_groups: Some(vec!["apps".into()]),
        resources: Some(vec!["deployments".into()]),
        verbs: ["get", "list", "watch", "create", "update", "patch"].map(String::from).to_vec(),
        ..PolicyRule::default()
    }];
    let mut targets = Vec::new();
    for _ in 0..count.clamp(1, 10) {
        let target = TestNamespace::create(client, "bench-wait-t").await;
        baton_e2e::grant(client, &target.name, (&ns.name, DEPLOYER), rules.clone()).await;
        targets.push(target);
    }
    let operations: Vec<OperationEntry> = (0..count)
        .map(|index| OperationEntry {
            name: format!("op{index}"),
            target: Target {
                namespace: targets[index % targets.len()].name.clone(),
                cluster: None,
            },
            manifests: Some(vec![held_deployment(&format!("held-{index}"))]),
            timeout: "1h".to_owned(),
            values: Default::default(),
            approval: None,
            soak: None,
        })
        .collect();
    let max = u32::try_from(count).unwrap_or(500);
    let spec = ApplySpec { operations, ..spec(&ns.name, FailurePolicy::Halt, max, Vec::new()) };
    // Quiet: what the cluster's own components request in the same window.
    let quiet_before = scrape(client).await.requests;
    tokio::time::sleep(window).await;
    let quiet = all_requests(&quiet_before, &scrape(client).await.requests);
    let applies: Api<Apply> = Api::namespaced(client.clone(), &ns.name);
    applies.create(&PostParams::default(), &Apply::new("wait", spec)).await.expect("an Apply");
    let ops: Api<Operation> = Api::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    wait_for("every operation waiting on its replicas", Duration::from_secs(600), || async {
        let list = ops.list(&Default::default()).await.ok()?;
        let waiting = list
            .items
            .iter()
            .filter(|op| {
                op.status.as_ref().is_some_and(|status| {
                    status.phase == OperationPhase::Running
                        && status.message.as_deref().is_some_and(|m| m.contains("replicas"))
                })
            })
            .count();
        (waiting == count).then_some(())
    })
    .await;
    let settled_in = started.elapsed();
    // Let the workload controllers finish reporting the held pods.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = scrape(client).await.requests;
    tokio::time::sleep(window).await;
    let after = scrape(client).await.requests;
    let busy = all_requests(&before, &after);
    let minutes = window.as_secs_f64() / 60.0;
    let per_op = (busy - quiet).max(0.0) / count as f64 / minutes;
    let watches = operator_gauge(&operator, "baton_health_watches").await.unwrap_or(-1.0);
    let rss = rss_kib(operator.pid()) as f64 / 1024.0;
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for ((verb, resource, subresource), value) in &after {
        let change = value
            - before
                .get(&(verb.clone(), resource.clone(), subresource.clone()))
                .copied()
                .unwrap_or(0.0);
        if change > 0.0 {
            *by_kind
                .entry(format!(
                    "{verb} {resource}{}{subresource}",
                    if subresource.is_empty() { "" } else { "/" }
                ))
                .or_default() += change;
        }
    }
    let kinds: Vec<String> = by_kind.iter().map(|(kind, n)| format!("{kind} {n:.0}")).collect();
    applies
        .patch("wait", &PatchParams::default(), &Patch::Merge(json!({"spec": {"stop": true}})))
        .await
        .expect("stop");
    let stopping = Instant::now();
    wait_for("the health watches to close", Duration::from_secs(120), || async {
        (operator_gauge(&operator, "baton_health_watches").await == Some(0.0)).then_some(())
    })
    .await;
    println!(
        "\nwaiting: {count} operations over {} namespaces, all waiting {:.1}s after the Apply was created; \
         requests in {}s: {busy:.0} (cluster alone: {quiet:.0}) = {per_op:.2} per waiting operation per minute; \
         health watches open: {watches:.0}; operator RSS {rss:.1} MiB; after the stop the watches closed in {:.1}s\n  requests by kind: {}",
        targets.len(),
        settled_in.as_secs_f64(),
        window.as_secs(),
        stopping.elapsed().as_secs_f64(),
        kinds.join(", ")
    );
    drop(operator);
}

/// Failure to verdict, signal by signal: Applies each wait on a Job whose pod is held; one at
/// a time, its pod fails, and the time from the Job's `Failed` condition (the health signal)
/// to the Apply's `status.error` is taken.
async fn signals(client: &Client, sizes: Sizes) {
    let count = sizes.signals;
    let (ns, operator) = baton_side(client, "bench-sig").await;
    let applies: Api<Apply> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns.name);
    let ops: Api<Operation> = Api::namespaced(client.clone(), &ns.name);
    for index in 0..count {
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": format!("sig-{index}")},
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"annotations": {pods::CONTAINER: pods::NOT_READY}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "registry.invalid/c:1"}]},
            }},
        });
        let spec = spec(&ns.name, FailurePolicy::Halt, 1, vec![job]);
        applies
            .create(&PostParams::default(), &Apply::new(&format!("sig{index}"), spec))
            .await
            .expect("an Apply");
    }
    let mut latencies = Vec::with_capacity(count);
    for index in 0..count {
        let operation = format!("sig{index}-op0");
        while !is_running(&ops, &operation).await {
            tokio::time::sleep(POLL).await;
        }
        pods::fail(client, &ns.name, &format!("job-name=sig-{index}")).await;
        loop {
            let job = jobs.get_opt(&format!("sig-{index}")).await.ok().flatten();
            let conditions =
                job.and_then(|j| j.status).and_then(|s| s.conditions).unwrap_or_default();
            if conditions.iter().any(|c| c.type_ == "Failed" && c.status == "True") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let signal = Instant::now();
        loop {
            let apply = applies.get(&format!("sig{index}")).await.ok();
            if apply.and_then(|a| a.status).and_then(|s| s.error).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(signal.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |quantile: f64| {
        let position = ((latencies.len() as f64 - 1.0) * quantile).round() as usize;
        latencies.get(position).copied().unwrap_or(f64::NAN)
    };
    println!(
        "\nfailure to verdict over {count} signals (Job Failed condition seen by the runner to status.error): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        at(0.5),
        at(0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    drop(operator);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| {
            let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Scale and memory: many settled Applies exist; the operator starts, syncs and idles.
async fn scale(client: &Client, sizes: Sizes) {
    let (count, idle) = (sizes.scale, sizes.idle);
    let ns = TestNamespace::create(client, "bench-scale").await;
    // Settled Applies are made here by writing their statuses directly (see below).
    policy::break_glass(client, &ns.name).await;
    let applies: Api<Apply> = Api::namespaced(client.clone(), &ns.name);
    let operations: Api<Operation> = Api::namespaced(client.clone(), &ns.name);
    let created = Instant::now();
    futures::stream::iter(0..count)
        .for_each_concurrent(32, |index| {
            let (applies, operations, namespace) =
                (applies.clone(), operations.clone(), ns.name.clone());
            async move {
                let name = format!("s{index}");
                let spec = spec(&namespace, FailurePolicy::Halt, 1, config_maps(&name, 5));
                let apply = applies
                    .create(&PostParams::default(), &Apply::new(&name, spec.clone()))
                    .await
                    .expect("an Apply");
                let mut children = Vec::new();
                for (position, entry) in spec.operations.iter().enumerate() {
                    let mut op = operations
                        .create(&PostParams::default(), &op_object(&apply, position, entry))
                        .await
                        .expect("an Operation");
                    let now = Time(Timestamp::now());
                    let done = OperationStatus {
                        phase: OperationPhase::Succeeded,
                        attempt: 1,
                        started_at: Some(now.clone()),
                        first_started_at: Some(now.clone()),
                        completed_at: Some(now),
                        ..OperationStatus::default()
                    };
                    write_status(&operations, &mut op, done).await;
                    children.push(Child::from(&op));
                }
                // The status baton itself would project, so the Applies are settled as it sees them.
                let facts = ApplyFacts {
                    spec: &apply.spec,
                    generation: apply.metadata.generation,
                    created_at: apply.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    deleting: false,
                    finalizer: false,
                    operations_created: false,
                    idempotency: Idempotency::NotRequired,
                    approvers: Default::default(),
                    foreign: &[],
                };
                let status = project(&facts, &children);
                let body =
                    json!({"apiVersion": "baton.dev/v1alpha1", "kind": "Apply", "status": status});
                applies
                    .patch_status(&name, &PatchParams::apply("baton").force(), &Patch::Apply(&body))
                    .await
                    .expect("a status");
            }
        })
        .await;
    println!(
        "\nscale: {count} settled Applies ({} Operations) created in {:.1}s",
        count * 5,
        created.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let operator = Operator::start_plain(client, &ns.name, &[]).await;
    let pid = operator.pid();
    wait_for("the operator to be ready", Duration::from_secs(300), || async {
        matches!(http_get(operator.admin, "/readyz").await, Some((200, _))).then_some(())
    })
    .await;
    let ready = started.elapsed();
    // Synced: reconciles stop moving.
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let metrics =
            http_get(operator.admin, "/metrics").await.map(|(_, body)| body).unwrap_or_default();
        let line = metrics
            .lines()
            .find(|l| l.starts_with("baton_reconciles_total"))
            .unwrap_or_default()
            .to_owned();
        if line == last {
            break;
        }
        last = line;
    }
    let synced = started.elapsed();
    let rss_synced = rss_kib(pid);
    let ticks_before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let ticks = cpu_ticks(pid).saturating_sub(ticks_before);
    let idle_cpu = ticks as f64 / clock_ticks() / idle as f64 * 100.0;
    println!(
        "scale: ready (/readyz) {:.1}s after start, reconciles settled {:.1}s after start ({last}); \
         RSS {:.1} MiB after sync, {:.1} MiB after {idle}s idle; idle CPU {idle_cpu:.2}% of one core",
        ready.as_secs_f64(),
        synced.as_secs_f64(),
        rss_synced as f64 / 1024.0,
        rss_kib(pid) as f64 / 1024.0
    );
}

/// The workload clusters of the fleet scenario, beside the management cluster.
const FLEET: [&str; 2] = ["eu", "us"];

/// What each API server of the fleet counted during one side's run: `(cluster, run)`.
type PerCluster = Vec<(String, Run)>;

/// The clients of every cluster of the fleet, the management cluster first.
fn fleet_clients(clients: &[(String, Client)]) -> Vec<&Client> {
    clients.iter().map(|(_, client)| client).collect()
}

fn per_cluster(clients: &[(String, Client)], runs: Vec<Run>) -> PerCluster {
    clients.iter().map(|(name, _)| name.clone()).zip(runs).collect()
}

/// All of a fleet run's writes in one [`Run`], for the table.
fn fleet_total(per_cluster: &PerCluster) -> Run {
    let mut total = Run::default();
    for (cluster, run) in per_cluster {
        total.seconds = run.seconds;
        total.cpu = run.cpu;
        total.reads += run.reads;
        for (kind, count) in &run.writes {
            let kind = if cluster == "dev" { kind.clone() } else { format!("{cluster}:{kind}") };
            *total.writes.entry(kind).or_default() += count;
        }
    }
    total
}

/// Applies of three operations: a ConfigMap in dev (the management cluster), then in `eu`,
/// then in `us`, in `namespace` of each.
fn fleet_specs(namespace: &str, count: usize) -> Vec<(String, ApplySpec)> {
    (0..count)
        .map(|index| {
            let name = format!("fl{index}");
            let mut spec = spec(namespace, FailurePolicy::Halt, 1, config_maps(&name, 3));
            for (operation, cluster) in spec.operations.iter_mut().skip(1).zip(FLEET) {
                operation.target.cluster = Some(cluster.to_owned());
            }
            (name, spec)
        })
        .collect()
}

/// Fleet: Applies over three clusters (the management one and two workload clusters, each its
/// own control plane), baton against a baseline with one administrator client per cluster.
/// Requests are counted by each API server. Returns the row and each run's counts by cluster.
async fn fleet(client: &Client, sizes: Sizes) -> (Row, Vec<PerCluster>, Vec<PerCluster>) {
    let count = sizes.fleet;
    let mut clients = vec![("dev".to_owned(), client.clone())];
    for name in FLEET {
        clients.push((name.to_owned(), fleet::workload_cluster(name).admin().await));
    }
    let scenario = format!("fleet: {count} Applies x 3 ops (dev, eu, us)");
    let mut row = Row::new("fleet", scenario, count * 3);
    let (mut batons, mut baselines) = (Vec::new(), Vec::new());
    let (mut end_rss, mut peak_rss) = (0, 0);
    for _ in 0..sizes.runs {
        let (baton, end, peak) = fleet_baton(client, &clients, count).await;
        (end_rss, peak_rss) = (end_rss.max(end), peak_rss.max(peak));
        row.push("baton", fleet_total(&baton), sizes.runs);
        batons.push(baton);
        let baseline = fleet_baseline(client, &clients, count).await;
        row.push("baseline", fleet_total(&baseline), sizes.runs);
        baselines.push(baseline);
    }
    println!(
        "\nfleet: operator RSS with 3 clusters (2 registered){}: {:.1} MiB at the end, {:.1} MiB peak (sampled every {}ms)",
        if sizes.runs > 1 { format!(", the most of {} runs", sizes.runs) } else { String::new() },
        end_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        POLL.as_millis()
    );
    (row, batons, baselines)
}

/// baton's side of a fleet run: the counts by cluster, and the operator's RSS (KiB) at the end
/// and at its peak.
async fn fleet_baton(
    client: &Client,
    clients: &[(String, Client)],
    count: usize,
) -> (PerCluster, u64, u64) {
    let rules = || {
        vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: ["get", "list", "watch", "create", "update", "patch"].map(String::from).to_vec(),
            ..PolicyRule::default()
        }]
    };
    // The clusters registered as Secrets its deployer may read; deployer impersonated on each.
    let (ns, operator) = baton_side(client, "bench-fleet").await;
    for name in FLEET {
        fleet::register(client, &ns.name, name, name).await;
        let target = fleet::workload_cluster(name)
            .target_namespace(&ns.name, &ns.name, DEPLOYER, rules())
            .await;
        // Kept: a benchmark's namespaces stay (see keep_namespaces).
        drop(target);
    }
    fleet::allow_reading(client, &ns.name, DEPLOYER, &FLEET).await;
    let applies: Api<Apply> = Api::namespaced(client.clone(), &ns.name);
    let specs = fleet_specs(&ns.name, count);
    let names: Vec<String> = specs.iter().map(|(name, _)| name.clone()).collect();
    let window = Window::open(&fleet_clients(clients), Some(&operator)).await;
    for (name, spec) in specs {
        applies
            .create(&PostParams::default(), &Apply::new(&name, spec))
            .await
            .expect("creating an Apply");
    }
    let pid = operator.pid();
    let mut peak_rss = 0;
    let sample = async {
        loop {
            peak_rss = peak_rss.max(rss_kib(pid));
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::select! {
        () = wait_phase(&applies, &names, ApplyPhase::Succeeded) => {}
        () = sample => {}
    }
    let runs = window.close(&fleet_clients(clients)).await;
    let end_rss = rss_kib(pid);
    drop(operator);
    (per_cluster(clients, runs), end_rss, peak_rss.max(end_rss))
}

/// The baseline's side of a fleet run: the same namespaces on every cluster, one client per
/// cluster.
async fn fleet_baseline(client: &Client, clients: &[(String, Client)], count: usize) -> PerCluster {
    let base = TestNamespace::create(client, "base-fleet").await;
    // As in run_baseline: Operation statuses written by an administrator need break-glass.
    policy::break_glass(client, &base.name).await;
    let mut remotes = BTreeMap::new();
    for (name, remote) in clients.iter().skip(1) {
        drop(TestNamespace::create_named(remote, &base.name).await);
        remotes.insert(name.clone(), remote.clone());
    }
    let specs = fleet_specs(&base.name, count);
    let window = Window::open(&fleet_clients(clients), None).await;
    baseline_in(client, &base, &remotes, specs).await;
    per_cluster(clients, window.close(&fleet_clients(clients)).await)
}

/// Requests by cluster, the median of each figure over the runs.
fn print_fleet(baton: &[PerCluster], baseline: &[PerCluster]) {
    println!();
    println!(
        "| cluster | baton requests | baton writes | baton reads | baseline requests | baseline writes | baseline reads |"
    );
    println!("|---|---|---|---|---|---|---|");
    let Some(first) = baton.first() else { return };
    let figures = |runs: &[PerCluster], index: usize| {
        let pick = |figure: &dyn Fn(&Run) -> f64| {
            let values: Vec<f64> = runs.iter().map(|run| figure(&run[index].1)).collect();
            median(&values)
        };
        (
            pick(&|run| run.total_writes() + run.reads),
            pick(&Run::total_writes),
            pick(&|run| run.reads),
        )
    };
    for (index, (cluster, _)) in first.iter().enumerate() {
        let ours = figures(baton, index);
        let theirs = figures(baseline, index);
        println!(
            "| {cluster} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            ours.0, ours.1, ours.2, theirs.0, theirs.1, theirs.2
        );
    }
}

/// Whether a scenario runs: `BATON_BENCH_ONLY` names some (comma-separated), else all run.
fn selected(scenario: &str) -> bool {
    std::env::var("BATON_BENCH_ONLY")
        .map_or(true, |only| only.split(',').any(|name| name.trim() == scenario))
}

fn main() {
    let sizes = Sizes::from_env();
    // The operator under test is the optimized build, like the one users run; the short
    // profile only keeps the runner working, and takes the test build.
    if std::env::var("BATON_BENCH_PROFILE").is_err() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let built =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "--quiet", "-p", "baton", "--bin", "baton"])
                .current_dir(&root)
                .status()
                .expect("cargo runs");
        assert!(built.success(), "building the release operator failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| root.join("target"), std::path::PathBuf::from);
        baton_e2e::use_baton_binary(target.join("release/baton"));
    }
    baton_e2e::keep_namespaces();
    // `BATON_BENCH_LOG=info,baton=debug` keeps the per-pass timings in target/e2e-logs.
    baton_e2e::use_operator_log(
        &std::env::var("BATON_BENCH_LOG").unwrap_or_else(|_| "info".into()),
    );
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let client = admin_client().await;
        let mut rows = Vec::new();
        if selected("throughput") {
            rows.push(throughput(&client, sizes).await);
        }
        if selected("fan-in") {
            rows.push(fan_in(&client, sizes).await);
        }
        if selected("stop") {
            rows.push(stop_latency(&client, sizes).await);
        }
        if selected("heavy") {
            rows.push(heavy(&client, sizes).await);
        }
        if selected("verdict") {
            rows.push(failure_to_verdict(&client, sizes).await);
        }
        let mut by_cluster = None;
        if selected("fleet") {
            let (row, baton, baseline) = fleet(&client, sizes).await;
            rows.push(row);
            by_cluster = Some((baton, baseline));
        }
        if !rows.is_empty() {
            print_table(&rows);
        }
        if let Some((baton, baseline)) = by_cluster {
            print_fleet(&baton, &baseline);
        }
        if selected("waiting") {
            waiting(&client, sizes).await;
        }
        if selected("signals") {
            signals(&client, sizes).await;
        }
        if selected("scale") {
            scale(&client, sizes).await;
        }
    });
}
