//! Idempotency keys (SPEC.md section 7) as pure decisions: what an Apply sees of its key, and
//! what it must write to the key's record. The record lives in a Lease `baton-idem-<hash>`;
//! reading and writing it is the controller's job, never this module's.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::Idempotency;
use crate::crd::{ApplyPhase, DedupOn};

/// Where a key's record stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// An Apply is rolling the change out and renews the record.
    InFlight,
    /// The change was rolled out; final.
    Succeeded,
    /// The holder failed and the key is kept as done (`dedupOn: Any`).
    Failed,
}

/// The record of a key, as read from its Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The Apply holding the key, as `<name>/<uid>`.
    pub holder: String,
    /// Its state.
    pub state: KeyState,
    /// When the holder last renewed it.
    pub renewed_at: Timestamp,
}

/// What to write to the key's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyWrite {
    /// Nothing.
    Keep,
    /// Take the key: write `InFlight` with this Apply as holder (with the record's
    /// resourceVersion as precondition, so two takers cannot both win).
    Take,
    /// Renew the holder's `InFlight` record.
    Renew,
    /// The holder succeeded: mark the key `Succeeded`, once and for good.
    MarkSucceeded,
    /// The holder failed under `dedupOn: Any`: mark the key `Failed` (it counts as done).
    MarkFailed,
    /// Release the key at once, so a retry proceeds without waiting for the TTL.
    Release,
}

impl KeyWrite {
    /// Takes or renews the key for a rollout going on: made before deciding, so the claim gate
    /// can open in the same pass.
    pub fn holds_the_key(&self) -> bool {
        matches!(self, KeyWrite::Take | KeyWrite::Renew)
    }

    /// Records how the rollout ended: made once the parent status says so.
    pub fn ends_the_key(&self) -> bool {
        matches!(self, KeyWrite::MarkSucceeded | KeyWrite::MarkFailed | KeyWrite::Release)
    }
}

fn expired(record: &KeyRecord, now: Timestamp, ttl: SignedDuration) -> bool {
    record.renewed_at + ttl <= now
}

/// Whether the record leaves the key free for anyone to take.
fn free(
    record: Option<&KeyRecord>,
    dedup_on: DedupOn,
    now: Timestamp,
    ttl: SignedDuration,
) -> bool {
    match record {
        None => true,
        Some(record) => match record.state {
            KeyState::Succeeded => false,
            KeyState::Failed => dedup_on == DedupOn::Success,
            KeyState::InFlight => expired(record, now, ttl),
        },
    }
}

/// What the Apply `me` sees of its key: the fact the projection and the claim gate use.
pub fn observe_key(
    record: Option<&KeyRecord>,
    me: &str,
    dedup_on: DedupOn,
    now: Timestamp,
    ttl: SignedDuration,
) -> Idempotency {
    match record {
        Some(record) if record.holder == me => Idempotency::Held,
        Some(record) if record.state == KeyState::Succeeded => {
            Idempotency::AlreadyDone { by: record.holder.clone() }
        }
        Some(record) if record.state == KeyState::Failed && dedup_on == DedupOn::Any => {
            Idempotency::AlreadyDone { by: record.holder.clone() }
        }
        _ if free(record, dedup_on, now, ttl) => Idempotency::Free,
        Some(record) => Idempotency::InFlightElsewhere { holder: record.holder.clone() },
        None => Idempotency::Free,
    }
}

/// What the Apply `me`, now in `phase` (or being deleted), writes to its key's record.
pub fn key_write(
    record: Option<&KeyRecord>,
    me: &str,
    phase: Option<ApplyPhase>,
    deleting: bool,
    dedup_on: DedupOn,
    now: Timestamp,
    ttl: SignedDuration,
) -> KeyWrite {
    let mine = record.filter(|record| record.holder == me);
    let ended = phase.is_some_and(ApplyPhase::is_terminal);
    match mine {
        // `Succeeded` is one-shot: never renewed, released or overwritten.
        Some(record) if record.state == KeyState::Succeeded => KeyWrite::Keep,
        Some(record) if record.state == KeyState::Failed => KeyWrite::Keep,
        // A success is recorded even when the Apply is deleted right after it.
        Some(_) if phase == Some(ApplyPhase::Succeeded) => KeyWrite::MarkSucceeded,
        Some(_) if deleting || phase == Some(ApplyPhase::Failed) => match dedup_on {
            DedupOn::Success => KeyWrite::Release,
            DedupOn::Any => KeyWrite::MarkFailed,
        },
        // A stopped rollout stops renewing: after the TTL another Apply may take the key.
        Some(_) if ended => KeyWrite::Keep,
        Some(record) if record.renewed_at + ttl / 3 <= now => KeyWrite::Renew,
        Some(_) => KeyWrite::Keep,
        None if deleting || ended => KeyWrite::Keep,
        None if free(record, dedup_on, now, ttl) => KeyWrite::Take,
        None => KeyWrite::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::fixtures::at;

    const TTL: SignedDuration = SignedDuration::from_secs(3600);
    const ME: &str = "shop/release-42-retry";
    const OTHER: &str = "shop/release-42";

    fn record(holder: &str, state: KeyState, renewed: i64) -> KeyRecord {
        KeyRecord { holder: holder.to_owned(), state, renewed_at: at(renewed) }
    }

    fn write(
        record: Option<&KeyRecord>,
        phase: Option<ApplyPhase>,
        dedup_on: DedupOn,
        now: i64,
    ) -> KeyWrite {
        key_write(record, ME, phase, false, dedup_on, at(now), TTL)
    }

    #[test]
    fn an_unheld_key_is_taken_and_then_held() {
        assert_eq!(observe_key(None, ME, DedupOn::Success, at(0), TTL), Idempotency::Free);
        assert_eq!(write(None, Some(ApplyPhase::Pending), DedupOn::Success, 0), KeyWrite::Take);
        let mine = record(ME, KeyState::InFlight, 0);
        assert_eq!(observe_key(Some(&mine), ME, DedupOn::Success, at(1), TTL), Idempotency::Held);
    }

    #[test]
    fn a_succeeded_key_skips_the_apply_and_names_who_did_the_work() {
        let done = record(OTHER, KeyState::Succeeded, 0);
        assert_eq!(
            observe_key(Some(&done), ME, DedupOn::Success, at(10_000), TTL),
            Idempotency::AlreadyDone { by: OTHER.into() }
        );
        assert_eq!(
            write(Some(&done), Some(ApplyPhase::Pending), DedupOn::Success, 10_000),
            KeyWrite::Keep
        );
    }

    #[test]
    fn an_in_flight_key_of_a_live_apply_makes_others_wait() {
        let live = record(OTHER, KeyState::InFlight, 0);
        assert_eq!(
            observe_key(Some(&live), ME, DedupOn::Success, at(60), TTL),
            Idempotency::InFlightElsewhere { holder: OTHER.into() }
        );
        assert_eq!(
            write(Some(&live), Some(ApplyPhase::Pending), DedupOn::Success, 60),
            KeyWrite::Keep
        );
    }

    #[test]
    fn a_key_whose_holder_stopped_renewing_is_taken_over_after_the_ttl() {
        let stale = record(OTHER, KeyState::InFlight, 0);
        assert_eq!(
            write(Some(&stale), Some(ApplyPhase::Pending), DedupOn::Success, 3599),
            KeyWrite::Keep
        );
        assert_eq!(
            write(Some(&stale), Some(ApplyPhase::Pending), DedupOn::Success, 3600),
            KeyWrite::Take
        );
    }

    #[test]
    fn the_holder_renews_while_active() {
        let mine = record(ME, KeyState::InFlight, 0);
        assert_eq!(
            write(Some(&mine), Some(ApplyPhase::Running), DedupOn::Success, 60),
            KeyWrite::Keep
        );
        assert_eq!(
            write(Some(&mine), Some(ApplyPhase::Running), DedupOn::Success, 1200),
            KeyWrite::Renew
        );
    }

    #[test]
    fn success_marks_the_key_succeeded_once_and_never_again() {
        let mine = record(ME, KeyState::InFlight, 0);
        assert_eq!(
            write(Some(&mine), Some(ApplyPhase::Succeeded), DedupOn::Success, 5),
            KeyWrite::MarkSucceeded
        );
        let marked = record(ME, KeyState::Succeeded, 5);
        for phase in [ApplyPhase::Succeeded, ApplyPhase::Failed, ApplyPhase::Running] {
            assert_eq!(write(Some(&marked), Some(phase), DedupOn::Success, 9), KeyWrite::Keep);
        }
        assert_eq!(
            key_write(Some(&marked), ME, None, true, DedupOn::Success, at(9), TTL),
            KeyWrite::Keep
        );
    }

    #[test]
    fn failure_releases_the_key_at_once_under_dedup_on_success() {
        let mine = record(ME, KeyState::InFlight, 0);
        assert_eq!(
            write(Some(&mine), Some(ApplyPhase::Failed), DedupOn::Success, 5),
            KeyWrite::Release
        );
    }

    #[test]
    fn failure_marks_the_key_under_dedup_on_any_and_it_counts_as_done() {
        let mine = record(ME, KeyState::InFlight, 0);
        assert_eq!(
            write(Some(&mine), Some(ApplyPhase::Failed), DedupOn::Any, 5),
            KeyWrite::MarkFailed
        );
        let failed = record(OTHER, KeyState::Failed, 5);
        assert_eq!(
            observe_key(Some(&failed), ME, DedupOn::Any, at(6), TTL),
            Idempotency::AlreadyDone { by: OTHER.into() }
        );
        assert_eq!(
            write(Some(&failed), Some(ApplyPhase::Pending), DedupOn::Success, 6),
            KeyWrite::Take
        );
    }

    #[test]
    fn deleting_the_holder_releases_the_key() {
        let mine = record(ME, KeyState::InFlight, 0);
        assert_eq!(
            key_write(
                Some(&mine),
                ME,
                Some(ApplyPhase::Running),
                true,
                DedupOn::Success,
                at(5),
                TTL
            ),
            KeyWrite::Release
        );
        assert_eq!(key_write(None, ME, None, true, DedupOn::Success, at(5), TTL), KeyWrite::Keep);
    }

    #[test]
    fn deleting_the_holder_marks_the_key_under_dedup_on_any() {
        let mine = record(ME, KeyState::InFlight, 0);
        assert_eq!(
            key_write(Some(&mine), ME, Some(ApplyPhase::Running), true, DedupOn::Any, at(5), TTL),
            KeyWrite::MarkFailed
        );
    }

    #[test]
    fn deleting_right_after_success_still_marks_the_key_succeeded() {
        let mine = record(ME, KeyState::InFlight, 0);
        assert_eq!(
            key_write(
                Some(&mine),
                ME,
                Some(ApplyPhase::Succeeded),
                true,
                DedupOn::Success,
                at(5),
                TTL
            ),
            KeyWrite::MarkSucceeded
        );
    }

    #[test]
    fn a_stopped_holder_stops_renewing() {
        let mine = record(ME, KeyState::InFlight, 0);
        assert_eq!(
            write(Some(&mine), Some(ApplyPhase::Stopped), DedupOn::Success, 3000),
            KeyWrite::Keep
        );
    }
}
