//! What a replica remembers between passes that the cluster does not hold: the runs it
//! dispatched (so a run is applied once, and its inventory recorded when it ends), its last
//! write of each Apply's status (to pace progress-only writes, and to know a stale Apply) and
//! how many passes of each Apply in a row did not go through (to back off). All are only ever a
//! shortcut: after a restart they are empty, the new holder re-applies (server-side apply is
//! idempotent) and writes the next status change at once.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crd::InventoryEntry;
use crate::engine::DispatchError;
use crate::lifecycle::Backoff;

/// How many passes of each Apply in a row did not go through (a lost write, a failed pass), by
/// uid; an Apply leaves it at its next pass that does.
#[derive(Default)]
pub struct Misses(Mutex<HashMap<String, u32>>);

impl Misses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many passes of the Apply in a row missed.
    pub fn count(&self, uid: &str) -> u32 {
        self.lock().get(uid).copied().unwrap_or(0)
    }

    /// Notes one more miss and says how long to wait before the next pass.
    pub fn missed(&self, uid: &str, backoff: Backoff) -> Duration {
        let retry = {
            let mut misses = self.lock();
            let count = misses.entry(uid.to_owned()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        backoff.delay(retry, jitter(uid, retry))
    }

    /// Forgets the Apply's misses: its pass went through, or it is gone.
    pub fn clear(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// Keeps only the Applies that still exist.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        self.lock().retain(|uid, _| exists(uid));
    }
}

/// A number in `[0, 1)` that differs between replicas, Applies and retries (std's hasher keys
/// are random per process), so replicas that missed together spread their retries.
fn jitter(uid: &str, retry: u32) -> f64 {
    let hash = RandomState::new().hash_one((uid, retry));
    // The top 53 bits, as a fraction.
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// This replica's last status write of each Apply, by uid: when (to pace progress-only writes)
/// and which versions of the Apply it made stale (so a pass handed one of them, by a watch that
/// has not delivered the write yet, is not driven from it). Only a shortcut: after a restart it
/// is empty, the next change is written at once, and a stale pass only repeats a write.
#[derive(Default)]
pub struct StatusWrites(Mutex<HashMap<String, LastWrite>>);

struct LastWrite {
    at: Instant,
    superseded: Vec<String>,
}

impl StatusWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LastWrite>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long ago this replica last wrote the Apply's status.
    pub fn since(&self, uid: &str) -> Option<Duration> {
        self.lock().get(uid).map(|last| last.at.elapsed())
    }

    /// Notes a status write now, which made the Apply's `superseded` versions stale.
    pub fn written(&self, uid: &str, superseded: Vec<String>) {
        self.lock().insert(uid.to_owned(), LastWrite { at: Instant::now(), superseded });
    }

    /// Whether `version` of the Apply is older than this replica's last status write of it.
    pub fn is_stale(&self, uid: &str, version: Option<&str>) -> bool {
        let Some(version) = version else { return false };
        self.lock().get(uid).is_some_and(|last| last.superseded.iter().any(|v| v == version))
    }

    /// Keeps only the Applies that still exist.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        self.lock().retain(|uid, _| exists(uid));
    }

    /// Forgets a deleted Apply.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

/// What this replica's dispatch of a run gave.
#[derive(Clone, Debug)]
pub enum Dispatch {
    /// Every manifest was applied.
    Applied(Vec<InventoryEntry>),
    /// A manifest failed; the ones before it were applied.
    Failed(DispatchError),
}

/// One run of an operation: its Operation's uid and the attempt.
pub type Run = (String, u32);

/// The run an Operation's status is at.
pub fn run_of(op: &crate::crd::Operation) -> Run {
    let uid = op.metadata.uid.clone().unwrap_or_default();
    (uid, op.status.as_ref().map_or(0, |status| status.attempt))
}

/// The runs this replica dispatched, by `(operation uid, attempt)`.
#[derive(Default)]
pub struct Runs(Mutex<HashMap<Run, Dispatch>>);

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Run, Dispatch>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The dispatch of a run, if this replica made it.
    pub fn get(&self, run: &Run) -> Option<Dispatch> {
        self.lock().get(run).cloned()
    }

    /// Records the dispatch of a run.
    pub fn record(&self, run: Run, dispatch: Dispatch) {
        self.lock().insert(run, dispatch);
    }

    /// What the run applied, if this replica dispatched it.
    pub fn inventory(&self, run: &Run) -> Option<Vec<InventoryEntry>> {
        self.get(run).map(|dispatch| match dispatch {
            Dispatch::Applied(inventory) => inventory,
            Dispatch::Failed(failure) => failure.applied,
        })
    }

    /// Forgets a run that ended.
    pub fn forget(&self, run: &Run) {
        self.lock().remove(run);
    }
}
