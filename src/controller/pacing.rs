//! How soon a reconciler looks at an object again: the waits of a pass (a lease held
//! elsewhere, a key held by another Apply, health that could not be read, nothing to wait for)
//! and the back-off of passes that did not go through (the curves of `lifecycle::pacing`,
//! counted per object in [`Misses`]). Every reconciler and every step takes its waits here.

use std::time::Duration;

use kube::runtime::controller::Action;

use super::Misses;
use crate::Error;
use crate::lifecycle::{LASTING_ERROR, LOST_WRITE, PASSING_ERROR};

/// How soon to look again at an object handed in a version older than this replica's last
/// status write, should that write's own event not come.
pub const STALE_RETRY: Duration = Duration::from_secs(2);
/// How soon to look again when the lease is held elsewhere and no wake-up comes.
pub const LEASE_RETRY: Duration = Duration::from_secs(5);
/// How long after another holder's lease would expire, by this replica's own observation, to
/// look at it again.
pub const LEASE_MARGIN: Duration = Duration::from_millis(100);
/// How soon to look again while another Apply holds the idempotency key.
pub const KEY_RETRY: Duration = Duration::from_secs(2);
/// How soon to look again at an object that waits for nothing.
pub const IDLE_LOOK: Duration = Duration::from_secs(60);
/// How soon to look again at a run whose health could not be read (an API server that did not
/// answer): no watch says when it can be.
pub const HEALTH_RETRY: Duration = Duration::from_secs(1);

/// Ends a pass whose write lost to a concurrent one (not an error): the object is read and
/// decided again, a little later after each loss in a row.
pub fn lost_write(misses: &Misses, uid: &str) -> Action {
    Action::requeue(misses.missed(uid, LOST_WRITE))
}

/// When to try a failed pass again: what the same input gives again waits long (a change of
/// the object wakes it anyway), what may pass sooner, each time a little later.
pub fn after_error(misses: &Misses, uid: &str, error: &Error) -> Action {
    let backoff = if error.is_lasting() { LASTING_ERROR } else { PASSING_ERROR };
    Action::requeue(misses.missed(uid, backoff))
}
