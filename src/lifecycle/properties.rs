//! Property tests: random histories of claims, health results, stops, resumes, dismissals,
//! lease moves, Operations deleted by hand and statuses overwritten by hand, driven through
//! [`decide`] against an in-memory API, with the spec's invariants checked after every step and
//! a liveness check at the end.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::fixtures::{self, at, children, facts, spec};
use super::*;
use crate::crd::{ApplyPhase, ApplySpec, FailurePolicy, OperationPhase, OperationStatus};

const REPLICAS: [&str; 3] = ["replica-0", "replica-1", "replica-2"];

#[derive(Clone, Debug)]
enum Event {
    /// The lease holder reconciles.
    Reconcile,
    /// The lease holder reconciles, but the writes whose position (mod 32) is set in the mask
    /// fail (a conflict, an unreachable API server); the rest go through as the reconciler
    /// makes them: batch by batch, stopping after the first batch with a failure.
    ReconcileCutShort(u32),
    /// A replica without the lease reconciles.
    ReconcileWithoutLease,
    /// The kubelet reports on the applied objects of operation `n % len`.
    Report(usize, HealthChoice),
    SetStop(bool),
    DismissCurrent,
    DismissStale(u8),
    /// The lease moves to another replica (the old one crashed or lost it).
    LeaseMoves(usize),
    Tick(u16),
    /// Someone deletes the Operation of step `n % len`.
    Vanish(usize),
    /// Someone overwrites the status of step `n % len` by hand: a pending one to `Succeeded`, a
    /// running one to `Failed`.
    Overwrite(usize),
    /// Someone approves step `n % len` (adds it to `spec.approvals`).
    Approve(usize),
    /// Someone withdraws the approval of step `n % len`.
    Withdraw(usize),
}

/// The gates a history's Apply carries: which steps need approval or soak (bit `i` for step
/// `i`), and the failure budget.
#[derive(Clone, Copy, Debug)]
struct Gates {
    approvals: u16,
    soaks: u16,
    budget: u32,
}

fn gates() -> impl Strategy<Value = Gates> {
    (any::<u16>(), any::<u16>(), 0u32..3).prop_map(|(approvals, soaks, budget)| Gates {
        approvals,
        soaks,
        budget,
    })
}

/// The fixture spec with `gates` on it.
fn gated_spec(count: usize, policy: FailurePolicy, max_concurrent: u32, gates: Gates) -> ApplySpec {
    let mut spec = spec(count, policy, max_concurrent);
    for (index, entry) in spec.operations.iter_mut().enumerate() {
        if gates.approvals & (1 << (index % 16)) != 0 {
            entry.approval = Some(crate::crd::Approval::Required);
        }
        if gates.soaks & (1 << (index % 16)) != 0 {
            entry.soak = Some(SOAK.into());
        }
    }
    spec.max_failed = Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
        i32::try_from(gates.budget).unwrap_or(0),
    ));
    spec
}

/// The soak of the steps that soak in these histories.
const SOAK: &str = "30s";

#[derive(Clone, Copy, Debug)]
enum HealthChoice {
    Progressing,
    Healthy,
    Unhealthy,
    DispatchFailed,
}

fn event() -> impl Strategy<Value = Event> {
    let health = prop_oneof![
        Just(HealthChoice::Progressing),
        Just(HealthChoice::Healthy),
        Just(HealthChoice::Unhealthy),
        Just(HealthChoice::DispatchFailed),
    ];
    prop_oneof![
        6 => Just(Event::Reconcile),
        2 => any::<u32>().prop_map(Event::ReconcileCutShort),
        1 => Just(Event::ReconcileWithoutLease),
        5 => (0usize..8, health).prop_map(|(n, h)| Event::Report(n, h)),
        1 => any::<bool>().prop_map(Event::SetStop),
        1 => Just(Event::DismissCurrent),
        1 => any::<u8>().prop_map(Event::DismissStale),
        1 => (0usize..3).prop_map(Event::LeaseMoves),
        1 => (0u16..900).prop_map(Event::Tick),
        1 => (0usize..8).prop_map(Event::Vanish),
        1 => (0usize..8).prop_map(Event::Overwrite),
        1 => (0usize..8).prop_map(Event::Approve),
        1 => (0usize..8).prop_map(Event::Withdraw),
    ]
}

fn policy() -> impl Strategy<Value = FailurePolicy> {
    prop_oneof![
        Just(FailurePolicy::Halt),
        Just(FailurePolicy::Pause),
        Just(FailurePolicy::Continue),
        Just(FailurePolicy::Unknown),
    ]
}

/// The cluster as the lifecycle sees it: the Apply, its Operations, the kubelet's reports.
struct World {
    spec: ApplySpec,
    children: Vec<Child>,
    holder: usize,
    health: BTreeMap<String, Health>,
    now: i64,
    /// Every Operation was created once and the status written (a full pass went through).
    created: bool,
    /// The uids handed out so far.
    uids: u32,
    /// A claim of a window was lost while a higher one may have won (a cut-short pass), and no
    /// full pass has closed the gap since: the only way a Pending may sit under a Running.
    lost_claim: bool,
}

impl World {
    fn new(spec: ApplySpec) -> Self {
        World {
            spec,
            children: Vec::new(),
            holder: 0,
            health: BTreeMap::new(),
            now: 0,
            created: false,
            uids: 0,
            lost_claim: false,
        }
    }

    fn facts(&self) -> ApplyFacts<'_> {
        ApplyFacts { operations_created: self.created, ..facts(&self.spec) }
    }

    fn decide_as(&self, holder: &str, lease: LeaseState) -> Plan {
        decide(&Observed {
            apply: self.facts(),
            children: &self.children,
            lease,
            holder,
            health: &self.health,
            previous: None,
            now: at(self.now),
        })
    }

    /// The in-memory API server: every write goes through.
    fn write(&mut self, plan: &Plan) {
        for write in &plan.writes {
            self.write_one(write);
        }
    }

    /// Writes as the reconciler does when the writes in `failing` fail.
    fn write_cut_short(&mut self, plan: &Plan, failing: u32) {
        for batch in plan.batches() {
            let mut complete = true;
            for position in batch {
                if failing & (1 << (position % 32)) != 0 {
                    complete = false;
                } else {
                    self.write_one(&plan.writes[position]);
                }
            }
            if !complete {
                break;
            }
        }
    }

    fn write_one(&mut self, write: &OperationWrite) {
        match write {
            OperationWrite::Create { index, name, recreated } => {
                self.uids += 1;
                self.children.push(Child {
                    name: name.clone(),
                    index: *index,
                    status: OperationStatus::default(),
                    uid: format!("{:05}", self.uids),
                    recreated: *recreated,
                });
            }
            OperationWrite::Status { index, name, status, kind } => {
                // The finalizer goes on before the first claim: from then on a missing
                // Operation was deleted.
                self.created |= *kind == WriteKind::Claim;
                if let Some(child) = self.children.iter_mut().find(|c| c.index == *index) {
                    child.status = (**status).clone();
                }
                // A new run, or its end, starts the kubelet's report afresh.
                self.health.remove(name);
            }
        }
    }

    fn project(&self) -> crate::crd::ApplyStatus {
        project(&facts(&self.spec), &self.children)
    }

    fn step(&mut self, event: &Event) -> Result<(), TestCaseError> {
        match event {
            Event::Reconcile => {
                let before = self.children.clone();
                let plan = self.decide_as(REPLICAS[self.holder], LeaseState::Held);
                self.write(&plan);
                check_reconcile(&self.spec, &before, &self.children, &plan)?;
                self.created |= self.children.len() == self.spec.operations.len();
                if plan.then() != Then::Done {
                    // The same pass decides again on what it created or claimed.
                    return self.step(&Event::Reconcile);
                }
                self.check_gap_closed()?;
            }
            Event::ReconcileCutShort(failing) => {
                let plan = self.decide_as(REPLICAS[self.holder], LeaseState::Held);
                self.write_cut_short(&plan, *failing);
                self.lost_claim |= plan.writes.iter().enumerate().any(|(position, write)| {
                    failing & (1 << (position % 32)) != 0
                        && matches!(write, OperationWrite::Status { kind: WriteKind::Claim, .. })
                });
            }
            Event::ReconcileWithoutLease => {
                let other = REPLICAS[(self.holder + 1) % REPLICAS.len()];
                prop_assert_eq!(self.decide_as(other, LeaseState::NotHeld), Plan::default());
            }
            Event::Report(n, choice) => {
                if let Some(child) = self.children.get(n % self.children.len().max(1))
                    && child.status.phase == OperationPhase::Running
                {
                    let health = match choice {
                        HealthChoice::Progressing => Health::Progressing,
                        HealthChoice::Healthy => Health::Healthy,
                        HealthChoice::Unhealthy => {
                            Health::Unhealthy(format!("Job `{}` failed", child.name))
                        }
                        HealthChoice::DispatchFailed => Health::DispatchFailed("forbidden".into()),
                    };
                    self.health.insert(child.name.clone(), health);
                }
            }
            Event::SetStop(stop) => self.spec.stop = *stop,
            Event::DismissCurrent => {
                self.spec.dismiss_error = self.project().error.map(|error| error.id)
            }
            Event::DismissStale(n) => self.spec.dismiss_error = Some(format!("zz-{n}")),
            Event::LeaseMoves(to) => self.holder = *to,
            Event::Tick(seconds) => self.now += i64::from(*seconds),
            Event::Vanish(n) => {
                if !self.children.is_empty() {
                    self.children.remove(n % self.children.len());
                }
            }
            Event::Approve(n) | Event::Withdraw(n) => {
                let name = fixtures::op_name(n % self.spec.operations.len().max(1));
                self.spec.approvals.retain(|approved| *approved != name);
                if matches!(event, Event::Approve(_)) {
                    self.spec.approvals.push(name);
                }
            }
            Event::Overwrite(n) => {
                let now = at(self.now);
                let position = n % self.children.len().max(1);
                if let Some(child) = self.children.get_mut(position) {
                    overwrite(&mut child.status, now);
                }
            }
        }
        check_state(&self.spec, &self.children, self.lost_claim)
    }

    /// Rule 3: after a full pass no Pending sits under a Running one, unless the gate is shut
    /// for a reason of its own (a stop, a failure, an approval) that holds the gap's claim too.
    fn check_gap_closed(&mut self) -> Result<(), TestCaseError> {
        if gap(&self.children).is_none() {
            self.lost_claim = false;
            return Ok(());
        }
        let gate = claimable(&self.facts(), &self.children, LeaseState::Held);
        prop_assert!(
            !matches!(gate, Ok(_) | Err(GateClosed::WindowFull(_) | GateClosed::NothingPending)),
            "a gap outlived the next pass: {:?} ({gate:?})",
            self.children.iter().map(|c| c.status.phase).collect::<Vec<_>>()
        );
        Ok(())
    }
}

/// The lowest Pending operation under a Running one, if any. A recreated record waiting to be
/// marked Lost is Pending for one pass, but never claimable: it is not part of the window.
fn gap(children: &[Child]) -> Option<u32> {
    let mut sorted = children.to_vec();
    sorted.sort_by_key(|c| c.index);
    let last_running = sorted.iter().rposition(|c| c.status.phase == OperationPhase::Running)?;
    let awaiting_lost = |c: &Child| c.recreated && c.status.dismissed.is_none();
    sorted[..last_running]
        .iter()
        .find(|c| c.status.phase == OperationPhase::Pending && !awaiting_lost(c))
        .map(|c| c.index)
}

/// Invariants of one reconcile: what changed from `before` to `after` by `plan`.
fn check_reconcile(
    spec: &ApplySpec,
    before: &[Child],
    after: &[Child],
    plan: &Plan,
) -> Result<(), TestCaseError> {
    // Each write is checked against the state left by the writes before it in the same plan.
    let mut state = before.to_vec();
    let mut dismissed_error = None;
    for write in &plan.writes {
        let OperationWrite::Status { index, kind, status, .. } = write else {
            continue;
        };
        let from = state.iter().find(|c| c.index == *index).map(|c| c.status.phase);
        match kind {
            WriteKind::Claim => {
                prop_assert!(!spec.stop, "no claim while a stop is pending");
                let facts = facts(spec);
                let entry = usize::try_from(*index).ok().and_then(|i| spec.operations.get(i));
                prop_assert!(
                    entry.is_some_and(|entry| facts.approved(entry)),
                    "an unapproved operation was claimed"
                );
                let passed = state.iter().any(|c| {
                    c.index < *index
                        && c.status.phase == OperationPhase::Pending
                        && usize::try_from(c.index)
                            .ok()
                            .and_then(|i| spec.operations.get(i))
                            .is_some_and(|entry| !facts.approved(entry))
                });
                prop_assert!(!passed, "the window passed an unapproved operation");
                let child = state.iter().find(|c| c.index == *index);
                prop_assert!(
                    child.is_some_and(|c| !c.recreated || c.status.dismissed.is_some()),
                    "a step whose Operation vanished ran again without a dismissal"
                );
            }
            WriteKind::Waiting => prop_assert_eq!(from, Some(OperationPhase::Running)),
            WriteKind::Lost => {
                let child = state.iter().find(|c| c.index == *index);
                prop_assert!(child.is_some_and(|c| c.recreated), "only a recreated record is Lost");
            }
            WriteKind::Stop => {
                prop_assert!(spec.stop, "only a stop request stops");
                prop_assert!(
                    matches!(from, Some(OperationPhase::Pending | OperationPhase::Running)),
                    "stop touched a {from:?} operation"
                );
            }
            WriteKind::Dismiss => {
                // One dismissal resets every failed operation: the id is checked at its first write.
                let error = dismissed_error
                    .get_or_insert_with(|| project(&facts(spec), &state).error.map(|e| e.id));
                prop_assert_eq!(&spec.dismiss_error, error, "dismissed by a stale id");
                prop_assert_eq!(from, Some(OperationPhase::Failed));
                prop_assert!(
                    state.iter().all(|c| c.status.phase != OperationPhase::Running),
                    "dismissed while an operation runs"
                );
            }
            WriteKind::Resume => prop_assert_eq!(from, Some(OperationPhase::Stopped)),
            WriteKind::Finish | WriteKind::TakeOver => {
                prop_assert_eq!(from, Some(OperationPhase::Running))
            }
        }
        if let Some(child) = state.iter_mut().find(|c| c.index == *index) {
            child.status = (**status).clone();
        }
    }
    for old in before {
        let Some(new) = after.iter().find(|c| c.index == old.index) else {
            return Err(TestCaseError::fail("an operation disappeared"));
        };
        prop_assert!(new.status.attempt >= old.status.attempt, "attempt went backwards");
        if old.status.phase == OperationPhase::Succeeded {
            prop_assert_eq!(&new.status, &old.status, "Succeeded is final");
        }
        if old.status.phase == OperationPhase::Failed && new.status.phase != OperationPhase::Failed
        {
            prop_assert!(spec.dismiss_error.is_some(), "only a dismissal retries a failure");
        }
    }
    // The decision is maximal: nothing it could claim is left unclaimed.
    let complete = before.len() == spec.operations.len();
    if complete {
        let leftover = claimable(&facts(spec), after, LeaseState::Held);
        prop_assert!(leftover.is_err(), "claimable after decide: {leftover:?}");
        if spec.stop {
            prop_assert!(
                after.iter().all(|c| c.status.phase != OperationPhase::Pending),
                "stop left a Pending"
            );
        }
    }
    Ok(())
}

/// A hand edit of a status, as `kubectl patch --subresource=status` would make it: a pending
/// step marked `Succeeded`, a running one `Failed`.
fn overwrite(status: &mut OperationStatus, now: k8s_openapi::jiff::Timestamp) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let phase = match status.phase {
        OperationPhase::Pending => OperationPhase::Succeeded,
        OperationPhase::Running => OperationPhase::Failed,
        _ => return,
    };
    status.phase = phase;
    status.claim = None;
    status.completed_at = Some(Time(now));
    status.reason = Some("EditedByHand".into());
}

/// Invariants of any state the history reaches.
fn check_state(
    spec: &ApplySpec,
    children: &[Child],
    lost_claim: bool,
) -> Result<(), TestCaseError> {
    let facts = facts(spec);
    let status = project(&facts, children);
    let counts = &status.operations;
    prop_assert_eq!(
        counts.pending + counts.running + counts.succeeded + counts.failed + counts.stopped,
        counts.total,
        "every operation has exactly one phase"
    );
    prop_assert_eq!(usize::try_from(counts.total).ok(), Some(spec.operations.len()));
    let mut reversed = children.to_vec();
    reversed.reverse();
    prop_assert_eq!(&status, &project(&facts, &reversed), "projection ignores read order");
    prop_assert_eq!(&status, &project(&facts, children), "projection is deterministic");

    let phase = status.phase.ok_or_else(|| TestCaseError::fail("no phase"))?;
    if phase.is_terminal() {
        prop_assert_eq!(counts.running, 0, "terminal Apply with a running operation");
    }
    prop_assert!(counts.running <= spec.max_concurrent, "more than maxConcurrent running");
    if spec.on_failure.effective() == FailurePolicy::Continue
        && !spec.stop
        && counts.failed > 0
        && counts.running + counts.pending + counts.stopped == 0
    {
        prop_assert_eq!(phase, ApplyPhase::Failed, "a continued failure still fails the verdict");
    }
    for child in children {
        let s = &child.status;
        prop_assert_eq!(
            s.claim.is_some(),
            s.phase == OperationPhase::Running,
            "claim only while Running"
        );
        prop_assert_eq!(
            s.completed_at.is_some(),
            s.phase.is_terminal(),
            "completedAt only when terminal"
        );
    }
    if let Some(index) = gap(children) {
        prop_assert!(
            lost_claim,
            "operation #{} Pending under a Running one without a lost claim: the window skipped it",
            index
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(10_000)
}

/// The soak run: fewer, much longer histories over larger Applies. `BATON_SOAK_CASES` bounds it.
fn soak_cases() -> u32 {
    std::env::var("BATON_SOAK_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(1_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_every_invariant(
        count in 1usize..7,
        policy in policy(),
        max_concurrent in 1u32..4,
        gates in gates(),
        history in prop::collection::vec(event(), 1..60),
    ) {
        run_history(gated_spec(count, policy, max_concurrent, gates), &history)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: soak_cases(), ..ProptestConfig::default() })]

    /// The fuzzing run of the decision function: long, arbitrary histories; no panic, and every
    /// invariant after every step.
    #[test]
    fn long_histories_keep_every_invariant(
        count in 1usize..13,
        policy in policy(),
        max_concurrent in 1u32..6,
        gates in gates(),
        history in prop::collection::vec(event(), 100..400),
    ) {
        run_history(gated_spec(count, policy, max_concurrent, gates), &history)?;
    }
}

fn run_history(spec: ApplySpec, history: &[Event]) -> Result<(), TestCaseError> {
    let count = spec.operations.len();
    let mut world = World::new(spec);
    for event in history {
        world.step(event)?;
    }
    // Liveness needs every gate opened: a person approves what waits.
    world.spec.approvals = world.spec.operations.iter().map(|entry| entry.name.clone()).collect();

    // Liveness: with a kubelet that reports every running operation healthy, the Apply
    // settles (or pauses for a person) within a bounded number of reconciles.
    for _ in 0..(4 * count + 8) {
        let running: Vec<String> = world
            .children
            .iter()
            .filter(|c| c.status.phase == OperationPhase::Running)
            .map(|c| c.name.clone())
            .collect();
        for name in running {
            world.health.insert(name, Health::Healthy);
        }
        world.step(&Event::Reconcile)?;
        // Past any soak begun in this pass, well within the timeouts.
        world.step(&Event::Tick(31))?;
    }
    let phase = world.project().phase;
    prop_assert!(
        phase.is_some_and(|p| p.is_terminal() || p == ApplyPhase::Paused),
        "the Apply did not settle: {:?} {:?}",
        phase,
        world.children.iter().map(|c| c.status.phase).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn a_stop_on_an_idle_continue_failure_settles() {
    let mut spec = spec(3, FailurePolicy::Continue, 1);
    let mut world = World::new(spec.clone());
    world.children = children(vec![
        super::fixtures::failed(1),
        OperationStatus::default(),
        OperationStatus::default(),
    ]);
    spec.stop = true;
    world.spec = spec;
    world.step(&Event::Reconcile).expect("invariants hold");
    assert_eq!(world.project().phase, Some(ApplyPhase::Failed));
}
