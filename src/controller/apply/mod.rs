//! The Apply reconciler: a short driver over named steps, each in its own module.
//!
//! read a snapshot (`snapshot`) → begin or let go (`lifecycle::begin`) → hold the lease →
//! take the idempotency key (`key`) → observe the running operations (`observe`) → decide and
//! write (`writes`; after claims, observe what was claimed and decide again, for up to a second)
//! → publish the parent status (`status`) → record Events (`events`, in the background) → settle
//! (`lifecycle::next`: end the key, remove the finalizer, or look again).
//!
//! No step decides what the lifecycle core can decide: the steps read, ask the core, and write.

mod events;
mod finalizer;
mod key;
mod observe;
mod snapshot;
mod status;
mod writes;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{debug, instrument};

use super::Context;
use super::pacing::{
    HEALTH_RETRY, IDLE_LOOK, KEY_RETRY, LEASE_MARGIN, LEASE_RETRY, STALE_RETRY, lost_write,
};
use crate::Result;
use crate::crd::Apply;
use crate::lease::Acquired;
use crate::lifecycle::{self, Begin, Next, Pace};

use self::snapshot::Snapshot;
pub(super) use self::snapshot::keep_approval_fields;

/// How long one pass goes on deciding again on what it claimed before it publishes the parent
/// status (about the progress pace: a reader never waits much longer for news).
const PASS_BUDGET: Duration = Duration::from_secs(1);

/// Ends the pass early with `action` when a step says so.
macro_rules! step {
    ($flow:expr) => {
        match $flow {
            ControlFlow::Continue(value) => value,
            ControlFlow::Break(action) => return Ok(action),
        }
    };
}

/// Reconciles one Apply: the driver, plus the metrics and Events of a failed pass.
#[instrument(skip(apply, context), fields(apply = %apply.name_any(), namespace = apply.namespace().unwrap_or_default()))]
pub async fn reconcile(apply: Arc<Apply>, context: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let uid = apply.uid().unwrap_or_default();
    let misses = context.misses.count(&uid);
    let outcome = drive(&apply, &context).await;
    context.metrics.reconciled("apply", started.elapsed());
    match &outcome {
        Err(error) => events::record_failure(&apply, error, &context).await,
        // A pass that went through ends the Apply's run of misses.
        Ok(_) if context.misses.count(&uid) == misses => context.misses.clear(&uid),
        Ok(_) => {}
    }
    outcome
}

/// One pass over the Apply, step by step.
async fn drive(apply: &Apply, context: &Context) -> Result<Action> {
    let mut timings = Timings::start();
    if context
        .status_writes
        .is_stale(&apply.uid().unwrap_or_default(), apply.resource_version().as_deref())
    {
        // Handed a version older than this replica's last status write of it: the write's own
        // event brings the next pass (or, should it be lost, the retry).
        debug!("a version older than this replica's last status write; waiting for the newer");
        return Ok(Action::requeue(STALE_RETRY));
    }
    let mut snapshot = Snapshot::read(apply, context).await?;
    let (Begin::Drive { observe, lease }, key_write) = snapshot.begin() else {
        let_go(context, &snapshot.uid);
        return Ok(Action::await_change());
    };
    snapshot.under_lease = lease;
    if !lease {
        // Stop renewing at once: the lease may be going with its namespace.
        context.leases.lapse(&snapshot.uid);
    } else if let Acquired::Elsewhere(left) = context.leases.acquire(apply).await? {
        debug!(?left, "lease held elsewhere; waiting");
        // The holder watches what its runs wait on.
        context.engine.watches().forget(&snapshot.uid);
        // Look again as it would expire unless renewed (a moment after, so the version seen
        // has stood for the whole duration).
        return Ok(Action::requeue((left + LEASE_MARGIN).min(LEASE_RETRY)));
    }
    step!(key::take(&mut snapshot, &key_write, context).await?);
    timings.mark("read");
    let mut observed = observe_runs(&snapshot, observe, context).await;
    timings.mark("observed");
    let mut notes = Vec::new();
    let written = loop {
        let round =
            writes::decide_and_write(&mut snapshot, &observed.health, context, &mut notes).await;
        let round = match round {
            Ok(ControlFlow::Continue(round)) => round,
            cut_short => {
                // The Events of the writes that went through are recorded either way.
                events::publish_all(apply, &notes, context);
                return cut_short.map(|flow| match flow {
                    ControlFlow::Break(action) => action,
                    ControlFlow::Continue(_) => lost_write(&context.misses, &snapshot.uid),
                });
            }
        };
        // What the round claimed runs at once. The rounds of one pass are bounded so that the
        // parent's progress is never long out of date; the claims' own watch events bring the
        // next pass.
        if !round.observe_again || timings.since_start() >= PASS_BUDGET {
            break round;
        }
        let again = observe_runs(&snapshot, observe, context).await;
        observed.retry_soon |= again.retry_soon;
        observed.health = again.health;
    };
    timings.mark("written");
    let published = match status::publish(&snapshot, context).await? {
        ControlFlow::Continue(published) => published,
        ControlFlow::Break(action) => {
            // The Operation writes went through, so their Events are recorded; the Apply's own
            // (a stop, an end) follow the status, which the next pass projects again.
            let written: Vec<_> =
                notes.into_iter().filter(|note| note.operation().is_some()).collect();
            events::publish_all(apply, &written, context);
            return Ok(action);
        }
    };
    timings.mark("projected");
    events::publish_all(apply, &notes, context);
    timings.mark("recorded");
    debug!(timings = %timings, operations = snapshot.operations.len(), "pass");
    settle(&snapshot, &published, written.timeout, observed.retry_soon, context).await
}

/// Observes the runs, or, with a stop in effect, lets them stop at this check unobserved.
async fn observe_runs(
    snapshot: &Snapshot<'_>,
    observe: bool,
    context: &Context,
) -> observe::Checked {
    if observe {
        return observe::runs(snapshot, context).await;
    }
    context.engine.watches().forget(&snapshot.uid);
    observe::Checked { health: BTreeMap::new(), retry_soon: false }
}

/// The last step: the key's end-of-rollout write, then what the core says comes next.
async fn settle(
    snapshot: &Snapshot<'_>,
    published: &status::Published,
    timeout: Option<Duration>,
    retry_soon: bool,
    context: &Context,
) -> Result<Action> {
    step!(key::end(snapshot, published.status.phase, context).await?);
    // Health changes wake the Apply through the watches; what is left is the safety re-read.
    let pace = Pace {
        health_check: context.settings.health_reread_interval,
        health_retry: HEALTH_RETRY,
        key_holder: KEY_RETRY,
        idle: IDLE_LOOK,
    };
    let status = &published.status;
    match lifecycle::next(
        &snapshot.facts(),
        status,
        timeout,
        published.held_back,
        retry_soon,
        &pace,
    ) {
        Next::Requeue(wait) => Ok(Action::requeue(wait)),
        Next::RemoveFinalizer => {
            finalizer::remove(snapshot, context).await?;
            // Gone for good: its operations leave the gauge.
            context.metrics.count_operations(&snapshot.uid, None);
            forget(context, &snapshot.uid);
            Ok(Action::await_change())
        }
        Next::LetGo => {
            let_go(context, &snapshot.uid);
            Ok(Action::await_change())
        }
    }
}

/// Stops driving a settled Apply: its lease lapses and its watches go. What this replica last
/// wrote stays known until the watches show it (the Operation overlay, the status write), so a
/// pass handed an older version meanwhile is not driven from it.
pub(super) fn let_go(context: &Context, uid: &str) {
    context.leases.lapse(uid);
    context.engine.watches().forget(uid);
}

/// Forgets a deleted Apply altogether.
pub(super) fn forget(context: &Context, uid: &str) {
    let_go(context, uid);
    context.status_writes.forget(uid);
    context.children.forget(uid);
    context.misses.clear(uid);
}

/// Where a pass spends its time, cumulatively, for tuning (logged at debug).
struct Timings {
    started: Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl Timings {
    fn start() -> Self {
        Timings { started: Instant::now(), marks: Vec::new() }
    }

    fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    fn mark(&mut self, step: &'static str) {
        self.marks.push((step, self.started.elapsed()));
    }
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (step, at) in &self.marks {
            write!(f, "{step}={at:?} ")?;
        }
        Ok(())
    }
}
