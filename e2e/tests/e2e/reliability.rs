//! The reliability suite: a crash loop, racing replicas and a replica whose clock is ahead, each
//! printing its figures (the API server outage has a binary of its own, `tests/outage.rs`, since
//! it takes the API server away from every test running beside it). Workloads roll out on the
//! cluster's own controllers and kwok; the stuck and failing ones say so in their pod templates.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};

use baton::crd::{Apply, ApplyPhase, FailurePolicy, OperationPhase};
use baton_e2e::{Operator, TEST_LEASE_SECONDS, pods, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{Value, json};

use super::support::{
    DEPLOYER, World, all_operations, check_single_attempts, config_map, deployer_rules, deployment,
    deployment_with, failing_job, held_deployment, spec,
};
use k8s_openapi::api::apps::v1::Deployment;

/// A small deterministic generator: the suite is random in shape, repeatable in outcome checks.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound.max(1)
    }
}

/// One Apply of the crash loop and the phase the spec predicts for it.
struct Planned {
    name: String,
    expected: ApplyPhase,
    stop: bool,
}

/// The registered cluster some crash-loop steps target (see [`remote_step`]).
const REMOTE: &str = "eu";

/// Whether step `step` of Apply `index` targets [`REMOTE`]: the fourth step (a Deployment) of
/// every fifth Apply, so every policy and every kind of Apply has remote steps.
fn remote_step(index: usize, step: usize) -> bool {
    index.is_multiple_of(5) && step == 3
}

/// Builds the crash loop's Applies: five operations each, the three policies in turn, some with
/// a failing Job, some stopped while an operation is stuck running, some with a step on a
/// registered cluster when `remote` (see [`remote_step`]).
fn crash_loop_plan(
    namespace: &str,
    count: usize,
    remote: bool,
) -> Vec<(Planned, baton::crd::ApplySpec)> {
    let policies = [FailurePolicy::Halt, FailurePolicy::Pause, FailurePolicy::Continue];
    (0..count)
        .map(|index| {
            let name = format!("c{index}");
            let policy = policies[index % 3];
            let kind = index % 4; // 0, 1: healthy; 2: a failure; 3: stopped
            let manifests: Vec<(String, Value)> = (0..5)
                .map(|step| {
                    let object = format!("{name}-{step}");
                    let manifest = match (kind, step) {
                        (2, 2) => failing_job(&format!("fail-{object}"), 0),
                        (3, 1) => held_deployment(&format!("stuck-{object}")),
                        (_, 0 | 3) => deployment(&object),
                        _ => config_map(&object),
                    };
                    (format!("s{step}"), manifest)
                })
                .collect();
            let ops = manifests
                .iter()
                .map(|(step, manifest)| (step.as_str(), manifest.clone()))
                .collect();
            let expected = match (kind, policy) {
                (2, FailurePolicy::Pause) => ApplyPhase::Paused,
                (2, _) => ApplyPhase::Failed,
                (3, _) => ApplyPhase::Stopped,
                _ => ApplyPhase::Succeeded,
            };
            let mut spec = spec(namespace, policy, 1 + (index % 2) as u32, ops);
            for (step, operation) in spec.operations.iter_mut().enumerate() {
                if remote && remote_step(index, step) {
                    operation.target.cluster = Some(REMOTE.to_owned());
                }
            }
            (Planned { name, expected, stop: kind == 3 }, spec)
        })
        .collect()
}

#[tokio::test]
async fn crash_loop_keeps_every_rollout_on_its_predicted_course() {
    let mut world = World::new("crashloop").await;
    let ns = world.ns.name.clone();
    // Some steps run on a registered cluster (unless the tests run on an existing cluster,
    // where the harness starts none).
    let remote = baton_e2e::fleet::available().then(|| baton_e2e::fleet::workload_cluster(REMOTE));
    let _remote_access = match remote {
        Some(cluster) => Some(cluster.shared().await),
        None => None,
    };
    let mut _remote_namespace = None;
    if let Some(cluster) = remote {
        baton_e2e::fleet::register(&world.client, &ns, REMOTE, REMOTE).await;
        baton_e2e::fleet::allow_reading(&world.client, &ns, DEPLOYER, &[REMOTE]).await;
        _remote_namespace =
            Some(cluster.target_namespace(&ns, &ns, DEPLOYER, deployer_rules()).await);
    }
    let plan = crash_loop_plan(&ns, 20, remote.is_some());
    for (planned, spec) in &plan {
        world.create(&planned.name, spec.clone()).await;
    }
    let mut random = Lcg(0x5eed);
    let mut kills = 0;
    let started = Instant::now();
    let mut stopped = false;
    while kills < 30 {
        tokio::time::sleep(Duration::from_millis(300 + random.next(1500))).await;
        world.operator.kill();
        kills += 1;
        if !stopped && kills >= 5 {
            // Stops are requested while the operator is down, in the middle of the run.
            for (planned, _) in &plan {
                if planned.stop {
                    world.patch_spec(&planned.name, json!({"stop": true})).await;
                }
            }
            stopped = true;
        }
        world.operator = Operator::start(&world.client, &ns).await;
    }
    let killing = started.elapsed();
    for (planned, _) in &plan {
        let deadline = Duration::from_secs(120);
        let applies = world.applies();
        let name = planned.name.clone();
        let expected = planned.expected;
        wait_for(&format!("{name} to settle {expected:?}"), deadline, || {
            let applies = applies.clone();
            let name = name.clone();
            async move { (applies.get(&name).await.ok()?.status?.phase == Some(expected)).then_some(()) }
        })
        .await;
    }
    let operations = all_operations(&world.client, &ns).await;
    let running: Vec<_> = operations
        .iter()
        .filter(|op| op.status.as_ref().is_some_and(|s| s.phase == OperationPhase::Running))
        .map(|op| op.metadata.name.clone().unwrap_or_default())
        .collect();
    let attempts = check_single_attempts(&operations);
    println!(
        "crash loop: {} Applies, {} operations, {kills} SIGKILLs over {:.1}s, settled {:.1}s after the first kill; \
         operations still Running: {}; operations with a duplicated or abandoned run: {}",
        plan.len(),
        operations.len(),
        killing.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        running.len(),
        attempts.len()
    );
    assert!(running.is_empty(), "operations left Running after every Apply settled: {running:?}");
    assert!(attempts.is_empty(), "runs duplicated or abandoned:\n{}", attempts.join("\n"));
    if let Some(cluster) = remote {
        // Every step that succeeded put its Deployment in the cluster it named, and only there.
        let here: Api<Deployment> = Api::namespaced(world.client.clone(), &ns);
        let there: Api<Deployment> = Api::namespaced(cluster.admin().await, &ns);
        let mut misplaced = Vec::new();
        let mut remote_steps = 0;
        for op in &operations {
            let succeeded =
                op.status.as_ref().is_some_and(|s| s.phase == OperationPhase::Succeeded);
            let Some(name) = op.spec.manifests.first().and_then(|m| m["metadata"]["name"].as_str())
            else {
                continue;
            };
            let is_deployment = op.spec.manifests[0]["kind"] == "Deployment";
            if !succeeded || !is_deployment {
                continue;
            }
            let remote_target = op.spec.target.cluster.is_some();
            remote_steps += usize::from(remote_target);
            let (in_here, in_there) = (
                here.get_opt(name).await.expect("reading the management cluster").is_some(),
                there.get_opt(name).await.expect("reading the registered cluster").is_some(),
            );
            if (in_here, in_there) != (!remote_target, remote_target) {
                misplaced.push(format!("{name}: management {in_here}, {REMOTE} {in_there}"));
            }
        }
        println!("crash loop: {remote_steps} remote steps succeeded on `{REMOTE}`");
        assert!(remote_steps >= 2, "the crash loop ran too few remote steps: {remote_steps}");
        assert!(misplaced.is_empty(), "objects in the wrong cluster:\n{}", misplaced.join("\n"));
    }
}

/// Samples every apply lease's holder, so writes can be checked against who held the lease.
async fn sample_holders(client: &Client, namespace: &str) -> Vec<(String, Option<String>)> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = leases.list(&ListParams::default()).await else { return Vec::new() };
    list.items
        .into_iter()
        .filter_map(|lease| {
            let name = lease.metadata.name.clone()?;
            name.starts_with("baton-apply-")
                .then(|| (name, lease.spec.and_then(|s| s.holder_identity)))
        })
        .collect()
}

/// `(time seen, lease, holder)` for every change of an apply lease.
type HolderHistory = Arc<Mutex<Vec<(Timestamp, String, Option<String>)>>>;

/// Watches the apply leases of `namespace`, recording `(time seen, lease, holder)` per change.
fn watch_holders(client: Client, namespace: String) -> HolderHistory {
    let history = Arc::new(Mutex::new(Vec::new()));
    let record = history.clone();
    tokio::spawn(async move {
        let leases: Api<Lease> = Api::namespaced(client, &namespace);
        let mut changes =
            std::pin::pin!(watcher(leases, watcher::Config::default()).applied_objects());
        while let Some(change) = changes.next().await {
            let Ok(lease) = change else { continue };
            let Some(name) = lease.metadata.name.clone().filter(|n| n.starts_with("baton-apply-"))
            else {
                continue;
            };
            let holder = lease.spec.and_then(|spec| spec.holder_identity);
            record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((
                Timestamp::now(),
                name,
                holder,
            ));
        }
    });
    history
}

/// `(time, apply, holder)` of every "parent status written" line in an operator log.
fn status_writes(log: &std::path::Path) -> Vec<(Timestamp, String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|line| line.contains("parent status written"))
        .filter_map(|line| {
            let time: Timestamp = line.split_whitespace().next()?.parse().ok()?;
            let field = |key: &str| {
                let start = line.find(key)? + key.len();
                Some(
                    line[start..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '}' && *c != ':')
                        .collect::<String>(),
                )
            };
            Some((time, field("apply=")?, field("holder=")?.trim_matches('"').to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn racing_replicas_never_double_claim_and_take_over_in_time() {
    let world = World::new("racing").await;
    let ns = world.ns.name.clone();
    let mut replicas =
        [Operator::start(&world.client, &ns).await, Operator::start(&world.client, &ns).await];
    // Slow rollouts keep Applies active long enough to kill replicas that hold them.
    let slow = json!({ pods::READY_AFTER: "3s" });
    for index in 0..50 {
        let name = format!("r{index}");
        let ops = vec![
            ("a", deployment_with(&format!("{name}-a"), slow.clone())),
            ("b", deployment_with(&format!("{name}-b"), slow.clone())),
            ("c", config_map(&format!("{name}-c"))),
        ];
        world.create(&name, spec(&ns, FailurePolicy::Halt, 1, ops)).await;
    }
    // Lease holders by lease name and Apply uid, sampled every 100 ms: (time, lease, holder).
    let applies: Api<Apply> = world.applies();
    let uid_to_name: HashMap<String, String> = applies
        .list(&ListParams::default())
        .await
        .expect("listing applies")
        .items
        .into_iter()
        .filter_map(|apply| Some((apply.metadata.uid?, apply.metadata.name?)))
        .collect();
    // Every change of every apply lease, as the API server reports it: no hand-over is missed
    // between two looks.
    let history = watch_holders(world.client.clone(), ns.clone());
    let mut takeovers: Vec<Duration> = Vec::new();
    let mut kills = 0;
    let started = Instant::now();
    let mut next_kill = Instant::now() + Duration::from_secs(2);
    let mut pending_takeover: Option<(Instant, String, Vec<String>)> = None;
    loop {
        let sample = sample_holders(&world.client, &ns).await;
        if let Some((killed_at, identity, leases)) = &pending_takeover {
            let still_dead = sample.iter().any(|(lease, holder)| {
                leases.contains(lease) && holder.as_deref() == Some(identity)
            });
            if !still_dead {
                takeovers.push(killed_at.elapsed());
                pending_takeover = None;
            }
        }
        let settled = applies
            .list(&ListParams::default())
            .await
            .map(|list| {
                list.items
                    .iter()
                    .all(|a| a.status.as_ref().and_then(|s| s.phase) == Some(ApplyPhase::Succeeded))
            })
            .unwrap_or(false);
        if settled {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the racing replicas did not finish in 120 s"
        );
        if Instant::now() >= next_kill && pending_takeover.is_none() {
            // Kill the replica holding the most leases, then start a fresh one in its place.
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for (_, holder) in &sample {
                if let Some(holder) = holder {
                    *counts.entry(holder.clone()).or_default() += 1;
                }
            }
            let mut victim = None;
            for (position, replica) in replicas.iter().enumerate() {
                let identity = replica.identity().await;
                if counts.get(&identity).copied().unwrap_or(0) > 0 {
                    victim = Some((position, identity));
                    break;
                }
            }
            if let Some((position, identity)) = victim {
                let held: Vec<String> = sample
                    .iter()
                    .filter(|(_, holder)| holder.as_deref() == Some(identity.as_str()))
                    .map(|(lease, _)| lease.clone())
                    .collect();
                replicas[position].kill();
                kills += 1;
                pending_takeover = Some((Instant::now(), identity, held));
                replicas[position] = Operator::start(&world.client, &ns).await;
            }
            next_kill = Instant::now() + Duration::from_secs(2);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let operations = all_operations(&world.client, &ns).await;
    let double_claims = check_single_attempts(&operations);

    // Every parent status write happened while its writer held the Apply's lease, as sampled
    // just before or just after the write.
    let mut logs = vec![world.operator.log.clone()];
    logs.extend(replicas.iter().map(|replica| replica.log.clone()));
    let lease_of = |apply: &str| {
        uid_to_name
            .iter()
            .find(|(_, name)| name.as_str() == apply)
            .map(|(uid, _)| format!("baton-apply-{uid}"))
    };
    let mut writes = 0;
    let mut foreign = Vec::new();
    for log in &logs {
        for (time, apply, holder) in status_writes(log) {
            let Some(lease) = lease_of(&apply) else { continue };
            writes += 1;
            let history = history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            let samples: Vec<_> = history.iter().filter(|(_, l, _)| *l == lease).collect();
            let before =
                samples.iter().rev().find(|(t, _, _)| *t <= time).map(|(_, _, h)| h.clone());
            let after = samples.iter().find(|(t, _, _)| *t >= time).map(|(_, _, h)| h.clone());
            let matches = |sample: &Option<Option<String>>| {
                sample.as_ref().is_some_and(|h| h.as_deref() == Some(&holder))
            };
            // Writes after the last sample (the Apply settled and released) have nothing to compare.
            if (before.is_some() || after.is_some()) && !matches(&before) && !matches(&after) {
                foreign.push(format!("{apply} written by {holder} at {time}"));
            }
        }
    }
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    let bound = Duration::from_secs(TEST_LEASE_SECONDS + (TEST_LEASE_SECONDS - 1));
    println!(
        "racing replicas: 3 replicas, 50 Applies, {kills} kills in {:.1}s; double claims: {}; \
         parent status writes: {writes}, by a replica not holding the lease: {}; \
         take-over after a kill: max {:.2}s over {} kills (bound {:.0}s)",
        started.elapsed().as_secs_f64(),
        double_claims.len(),
        foreign.len(),
        slowest.as_secs_f64(),
        takeovers.len(),
        bound.as_secs_f64()
    );
    assert!(double_claims.is_empty(), "double claims:\n{}", double_claims.join("\n"));
    assert!(foreign.is_empty(), "status written without the lease:\n{}", foreign.join("\n"));
    assert!(kills >= 2, "the run was too short to kill replicas ({kills} kills)");
    assert!(
        slowest < bound + Duration::from_millis(500),
        "take-over took {slowest:?}, bound {bound:?}"
    );
}

/// libfaketime, as `hack/faketime.sh` reports it (installing it first when missing).
fn libfaketime() -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/faketime.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running hack/faketime.sh");
    assert!(output.status.success(), "hack/faketime.sh could not provide libfaketime");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// How many lines of an operator log contain every one of `words`.
fn log_lines(log: &std::path::Path, words: &[&str]) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter(|line| words.iter().all(|word| line.contains(word))).count()
}

#[tokio::test]
async fn a_replica_with_its_clock_a_minute_ahead_steals_no_lease() {
    let world = World::new("skew").await;
    let ns = world.ns.name.clone();
    // The wall clock a minute ahead, the monotonic clock left alone (lease expiry is judged on
    // the monotonic clock; a minute is twenty test lease durations).
    let library = libfaketime();
    let skew = [
        ("LD_PRELOAD", library.as_str()),
        ("FAKETIME", "+60s"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let ahead = Operator::start_with_env(&world.client, &ns, &[], &skew).await;
    let replicas = [(&world.operator, "on time"), (&ahead, "a minute ahead")];
    let mut identities = Vec::new();
    for (replica, _) in &replicas {
        identities.push(replica.identity().await);
    }
    let history = watch_holders(world.client.clone(), ns.clone());
    let started = Instant::now();
    for index in 0..20 {
        let name = format!("k{index}");
        let ops = (0..5)
            .map(|step| {
                let object = format!("{name}-{step}");
                let manifest =
                    if step % 2 == 0 { deployment(&object) } else { config_map(&object) };
                (["a", "b", "c", "d", "e"][step], manifest)
            })
            .collect();
        world.create(&name, spec(&ns, FailurePolicy::Halt, 1, ops)).await;
    }
    let applies = world.applies();
    for index in 0..20 {
        let name = format!("k{index}");
        wait_for(&format!("{name} to succeed"), Duration::from_secs(180), || {
            let applies = applies.clone();
            let name = name.clone();
            async move {
                let phase = applies.get(&name).await.ok()?.status?.phase;
                (phase == Some(ApplyPhase::Succeeded)).then_some(())
            }
        })
        .await;
    }
    let elapsed = started.elapsed();

    let operations = all_operations(&world.client, &ns).await;
    let twice = check_single_attempts(&operations);
    let leases: Vec<Lease> = Api::<Lease>::namespaced(world.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("listing leases")
        .items
        .into_iter()
        .filter(|lease| {
            lease.metadata.name.as_deref().is_some_and(|n| n.starts_with("baton-apply-"))
        })
        .collect();
    let transitions: i32 =
        leases.iter().filter_map(|lease| lease.spec.as_ref()?.lease_transitions).sum();
    // Holder changes from one replica to the other, as the API server reported them.
    let mut changes = history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    changes.sort_by_key(|(time, _, _)| *time);
    let ever_held =
        |identity: &String| changes.iter().any(|(_, _, holder)| holder.as_ref() == Some(identity));
    let on_time_held = ever_held(&identities[0]);
    let mut last: HashMap<String, String> = HashMap::new();
    let mut handovers = 0;
    for (_, lease, holder) in changes {
        let Some(holder) = holder else { continue };
        if last.insert(lease, holder.clone()).is_some_and(|previous| previous != holder) {
            handovers += 1;
        }
    }
    let mut report = Vec::new();
    let mut lost = 0;
    let mut lapsed = 0;
    for ((replica, clock), identity) in replicas.iter().zip(&identities) {
        let held = leases
            .iter()
            .filter(|lease| {
                lease.spec.as_ref().and_then(|s| s.holder_identity.as_ref()) == Some(identity)
            })
            .count();
        let writes = status_writes(&replica.log).len();
        // A renewal that lost: someone took the lease from a live holder.
        let replica_lost = log_lines(&replica.log, &["baton::lease", "lease lost"]);
        // A holder that could not renew in time let its lease go (a take-over is then due).
        let replica_lapsed =
            log_lines(&replica.log, &["baton::lease", "lease not renewed in time"]);
        lost += replica_lost;
        lapsed += replica_lapsed;
        report.push(format!(
            "{clock}: {held} leases held at the end, {writes} parent status writes, \
             {replica_lost} leases lost, {replica_lapsed} let go"
        ));
    }
    println!(
        "skewed replicas: 20 Applies of 5 steps in {:.1}s; lease transitions {transitions}, \
         hand-overs seen {handovers}; {}; steps run twice: {}",
        elapsed.as_secs_f64(),
        report.join("; "),
        twice.len()
    );
    assert!(twice.is_empty(), "steps run twice:\n{}", twice.join("\n"));
    assert_eq!(lost, 0, "a live holder lost its lease to a take");
    // A take-over is allowed only after a holder let its lease go (a starved renewal).
    let steals = usize::try_from(transitions).unwrap_or(usize::MAX).saturating_sub(lapsed);
    assert_eq!(steals, 0, "{transitions} take-overs, {lapsed} of them after a holder let go");
    // The run could have shown a steal: the replica on time held leases, and the skew took
    // effect (the replica ahead wrote its own wall clock, a minute past the API server's, into
    // the Leases it took).
    let ahead_by = leases
        .iter()
        .filter(|lease| {
            lease.spec.as_ref().and_then(|s| s.holder_identity.as_ref()) == Some(&identities[1])
        })
        .filter_map(|lease| {
            let acquired = lease.spec.as_ref()?.acquire_time.as_ref()?.0;
            let created = lease.metadata.creation_timestamp.as_ref()?.0;
            Some(acquired.duration_since(created).as_secs())
        })
        .max();
    assert!(ahead_by.is_some_and(|seconds| seconds >= 50), "the clock was not ahead: {ahead_by:?}");
    assert!(on_time_held, "the replica on time held no lease: nothing could be stolen from it");
}
