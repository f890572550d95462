//! When a new projection of the parent status is written.
//!
//! The projection itself is pure and exact (SPEC.md section 6); this only paces its
//! publication. A change someone must see or act on (phase, error, stop, conditions, start and
//! end times, generation) is written at once. A change of progress alone (counts, the running
//! operations, the messages that quote them) is written at most once per interval, so a wide
//! rollout does not rewrite a large Apply for every operation that ends.
//!
//! It also owns how soon a pass that did not go through is tried again ([`Backoff`]): a write
//! that lost to another, or an error that may pass, waits longer after each consecutive miss, up
//! to a ceiling, with jitter so replicas that missed together do not retry together (SPEC.md
//! section 8: never at a fixed rate forever). An error the same input gives again waits far
//! longer; what changes the input (an edit of the Apply or its Operations) wakes it at once.

use std::time::Duration;

use crate::crd::{ApplyStatus, OperationCounts};

/// The spec size that adds a second to the progress pace (see [`progress_interval`]).
const BYTES_PER_SECOND_OF_PACE: usize = 256 * 1024;
/// The slowest progress pace, however large the Apply.
const SLOWEST_PACE: Duration = Duration::from_secs(8);

/// How often a change of progress alone is written for an Apply whose spec serializes to
/// `spec_bytes`: once a second, plus a second per 256 KiB. Every status write carries (and the
/// API server re-encodes and stores) the whole object, so a 1 MiB Apply pays about five times
/// what a small one does per write and is rewritten about five times less often; at most every
/// eight seconds.
pub fn progress_interval(spec_bytes: usize) -> Duration {
    let extra = u32::try_from(spec_bytes / BYTES_PER_SECOND_OF_PACE).unwrap_or(u32::MAX);
    (Duration::from_secs(1) + Duration::from_secs(1).saturating_mul(extra)).min(SLOWEST_PACE)
}

/// A growing delay between retries: `first`, doubled after each consecutive miss, at most `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub first: Duration,
    /// The longest delay.
    pub cap: Duration,
}

/// A pass cut short by a write that lost to a concurrent one: re-read and re-decide soon.
pub const LOST_WRITE: Backoff =
    Backoff { first: Duration::from_millis(200), cap: Duration::from_secs(5) };
/// A pass that failed on an error that may pass (the API server unavailable, a timeout).
pub const PASSING_ERROR: Backoff =
    Backoff { first: Duration::from_secs(1), cap: Duration::from_secs(60) };
/// A pass that failed on an error its input will give again (an object too large, a name taken
/// by an object baton does not own): only a change helps, and changes wake the Apply anyway.
pub const LASTING_ERROR: Backoff =
    Backoff { first: Duration::from_secs(60), cap: Duration::from_secs(15 * 60) };

impl Backoff {
    /// The delay before retry number `retry` (1 for the first after a miss). `jitter`, in
    /// `[0, 1)`, spreads the second half of the delay: half of it is fixed, so the delay never
    /// shrinks below half of its step.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let step = self.first.saturating_mul(1 << doublings).min(self.cap);
        step / 2 + step.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }
}

/// What to do with a newly projected parent status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWrite {
    /// The status written already says the same.
    Unchanged,
    /// Write it now.
    Now,
    /// Only progress changed and the last write is recent: write it once this much more time
    /// has passed (a later pass may have more to say by then).
    After(Duration),
}

/// Decides whether `next` is written now, given the status on the Apply, how long ago this
/// replica last wrote it (`None`: not since it started), and the pace for progress-only changes.
pub fn status_write(
    previous: Option<&ApplyStatus>,
    next: &ApplyStatus,
    since_last_write: Option<Duration>,
    progress_interval: Duration,
) -> StatusWrite {
    let Some(previous) = previous else { return StatusWrite::Now };
    if previous == next {
        return StatusWrite::Unchanged;
    }
    if without_progress(previous) != without_progress(next) {
        return StatusWrite::Now;
    }
    match since_last_write {
        Some(since) if since < progress_interval => StatusWrite::After(progress_interval - since),
        _ => StatusWrite::Now,
    }
}

/// The status with everything that only reports progress blanked.
fn without_progress(status: &ApplyStatus) -> ApplyStatus {
    let mut status = status.clone();
    status.operations = OperationCounts { total: status.operations.total, ..Default::default() };
    status.progress.clear();
    status.current.clear();
    status.message.clear();
    for condition in &mut status.conditions {
        condition.message.clear();
    }
    status
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::crd::{ApplyPhase, FailurePolicy};
    use crate::lifecycle::fixtures::{children, facts, failed, pending, running, spec, succeeded};
    use crate::lifecycle::{carry_transition_times, project};

    const PACE: Duration = Duration::from_secs(1);

    #[test]
    fn the_progress_pace_grows_with_the_apply_and_has_a_ceiling() {
        assert_eq!(progress_interval(2_000), Duration::from_secs(1));
        assert_eq!(progress_interval(1_080_000), Duration::from_secs(5), "a 1 MiB Apply");
        assert_eq!(progress_interval(usize::MAX), SLOWEST_PACE);
    }

    fn projected(statuses: Vec<crate::crd::OperationStatus>) -> ApplyStatus {
        let spec = spec(statuses.len(), FailurePolicy::Continue, 3);
        project(&facts(&spec), &children(statuses))
    }

    #[test]
    fn retries_back_off_to_a_ceiling_with_jitter() {
        let at = |retry| LOST_WRITE.delay(retry, 0.0);
        assert_eq!(at(1), Duration::from_millis(100));
        assert_eq!(at(2), Duration::from_millis(200));
        assert_eq!(at(3), Duration::from_millis(400));
        assert_eq!(at(10), Duration::from_millis(2500), "capped at 5 s, half of it fixed");
        assert_eq!(at(u32::MAX), Duration::from_millis(2500));
        let most = LOST_WRITE.delay(10, 0.999_999);
        assert!(most > Duration::from_millis(4990) && most < Duration::from_secs(5), "{most:?}");
        assert_eq!(PASSING_ERROR.delay(1, 0.5), Duration::from_millis(750));
        assert!(LASTING_ERROR.delay(100, 1.0) <= Duration::from_secs(900));
    }

    #[test]
    fn the_first_status_is_written_at_once() {
        let next = projected(vec![pending(0), pending(0), pending(0)]);
        assert_eq!(status_write(None, &next, None, PACE), StatusWrite::Now);
    }

    #[test]
    fn an_unchanged_status_is_not_written() {
        let next = projected(vec![running("r", 1), pending(0), pending(0)]);
        let same = next.clone();
        let at = Some(Duration::ZERO);
        assert_eq!(status_write(Some(&same), &next, at, PACE), StatusWrite::Unchanged);
    }

    #[test]
    fn progress_alone_waits_for_the_pace() {
        let before = projected(vec![running("r", 1), running("r", 1), pending(0)]);
        let mut next = projected(vec![succeeded(1), running("r", 1), running("r", 1)]);
        carry_transition_times(Some(&before), &mut next);
        assert_eq!(without_progress(&before), without_progress(&next));
        let soon = Some(Duration::from_millis(300));
        assert_eq!(
            status_write(Some(&before), &next, soon, PACE),
            StatusWrite::After(Duration::from_millis(700))
        );
        assert_eq!(status_write(Some(&before), &next, Some(PACE), PACE), StatusWrite::Now);
        // After a restart this replica does not know when it last wrote: it writes.
        assert_eq!(status_write(Some(&before), &next, None, PACE), StatusWrite::Now);
    }

    #[test]
    fn an_error_is_written_at_once() {
        let before = projected(vec![running("r", 1), running("r", 1), pending(0)]);
        let next = projected(vec![failed(1), running("r", 1), running("r", 1)]);
        assert!(next.error.is_some());
        let soon = Some(Duration::from_millis(10));
        assert_eq!(status_write(Some(&before), &next, soon, PACE), StatusWrite::Now);
    }

    #[test]
    fn a_new_phase_is_written_at_once() {
        let before = projected(vec![succeeded(1), succeeded(1), running("r", 1)]);
        let next = projected(vec![succeeded(1), succeeded(1), succeeded(1)]);
        assert_eq!(next.phase, Some(ApplyPhase::Succeeded));
        let soon = Some(Duration::from_millis(10));
        assert_eq!(status_write(Some(&before), &next, soon, PACE), StatusWrite::Now);
    }
}
