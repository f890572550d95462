//! Notes: what a pass did that a user cares about, and the words an Event says about it.
//!
//! The wording lives here, beside the decisions that produce the notes, so a new note or a
//! change of phrasing never touches the controller, which only records what this gives it.

use crate::crd::{ApplyPhase, FailureReason};

/// Something a user cares about, recorded as an Event on the Apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A new holder took over a running operation.
    TakenOver { operation: String, attempt: u32, from: Option<String> },
    /// An operation failed.
    Failed { operation: String, attempt: u32, reason: FailureReason, message: String },
    /// An operation's Operation was deleted and recreated as a `Lost` failure.
    Lost { operation: String },
    /// A running operation was stopped (its objects stay as far as they got). Pending siblings
    /// are stopped without an Event each: `StopCompleted` counts them.
    Stopped { operation: String },
    /// The current error was dismissed; its failed operations will run again.
    ErrorDismissed { id: String },
    /// `spec.dismissError` named no current error; nothing changed.
    DismissalIgnored { id: String, why: String },
    /// Operations claim to belong to the Apply and are not its children; they are not run.
    ForeignOperations { message: String },
    /// A stop request took effect.
    StopRequested,
    /// Nothing runs any more after a stop.
    StopCompleted,
    /// The stop was withdrawn: stopped operations are pending again.
    Resumed,
    /// The Apply reached a terminal phase.
    Settled { phase: ApplyPhase, message: String },
}

/// Whether an Event reports something normal or something that needs attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The rollout's story.
    Normal,
    /// Someone should look.
    Warning,
}

/// The Event a note is recorded as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventText {
    /// Normal or Warning.
    pub severity: Severity,
    /// The Event's reason, one word.
    pub reason: &'static str,
    /// The Event's action. Event recorders fold Events that share reason, action and related
    /// object into one series: naming the attempt keeps every run of an operation apart.
    pub action: String,
    /// The message a person reads.
    pub message: String,
}

impl Note {
    /// The operation the note is about, if any.
    pub fn operation(&self) -> Option<&str> {
        match self {
            Note::TakenOver { operation, .. }
            | Note::Failed { operation, .. }
            | Note::Stopped { operation }
            | Note::Lost { operation } => Some(operation),
            _ => None,
        }
    }

    /// The attempt the note is about, if any.
    pub fn attempt(&self) -> Option<u32> {
        match self {
            Note::TakenOver { attempt, .. } | Note::Failed { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }

    /// The Event that records this note; `holder` is the replica recording it.
    pub fn event(&self, holder: &str) -> EventText {
        let (severity, reason, message) = self.words(holder);
        let action = match self.attempt() {
            Some(attempt) => format!("{reason}Attempt{attempt}"),
            None => reason.to_owned(),
        };
        EventText { severity, reason, action, message }
    }

    fn words(&self, holder: &str) -> (Severity, &'static str, String) {
        use Severity::{Normal, Warning};
        match self {
            Note::TakenOver { operation, attempt, from } => (
                Normal,
                "OperationTakenOver",
                format!(
                    "operation `{operation}` taken over by {holder} from {} in attempt {attempt}",
                    from.as_deref().unwrap_or("an unknown holder")
                ),
            ),
            Note::Failed { operation, attempt, reason, message } => (
                Warning,
                "OperationFailed",
                format!(
                    "operation `{operation}` failed ({}) on attempt {attempt}: {message}",
                    reason.as_str()
                ),
            ),
            Note::Stopped { operation } => (
                Normal,
                "OperationStopped",
                format!(
                    "operation `{operation}` stopped while running; its objects stay as applied"
                ),
            ),
            Note::Lost { operation } => (
                Warning,
                "OperationLost",
                format!(
                    "the Operation of step `{operation}` was deleted after baton created it; it is \
                     recreated as a failure (Lost) and its step runs again only if the error is \
                     dismissed"
                ),
            ),
            Note::Resumed => {
                (Normal, "Resumed", "stop withdrawn: stopped operations are pending again".into())
            }
            Note::ErrorDismissed { id } => (
                Normal,
                "ErrorDismissed",
                format!("error `{id}` dismissed; its failed operations run again"),
            ),
            Note::DismissalIgnored { id, why } => {
                (Warning, "DismissalIgnored", format!("dismissal of `{id}` ignored: {why}"))
            }
            Note::ForeignOperations { message } => (Warning, "ForeignOperations", message.clone()),
            Note::StopRequested => {
                (Normal, "StopRequested", "stop requested: no operation will be claimed".into())
            }
            Note::StopCompleted => {
                (Normal, "StopCompleted", "stop completed: nothing is running".into())
            }
            Note::Settled { phase, message } => {
                let (severity, reason) = match phase {
                    ApplyPhase::Succeeded => (Normal, "RolloutSucceeded"),
                    ApplyPhase::Failed => (Warning, "RolloutFailed"),
                    ApplyPhase::Stopped => (Normal, "RolloutStopped"),
                    _ => (Normal, "RolloutSkipped"),
                };
                (severity, reason, message.clone())
            }
        }
    }
}

/// The Event recorded when a reconcile fails for a reason retrying will not fix soon.
pub fn reconcile_failed(message: &str) -> EventText {
    EventText {
        severity: Severity::Warning,
        reason: "ReconcileFailed",
        action: "Reconcile".to_owned(),
        message: message.to_owned(),
    }
}

/// The Event recorded when the Apply or one of its Operations is too large to write: no status
/// can say it, since the status itself may be what is too large.
pub fn too_large(error: &str) -> EventText {
    EventText {
        severity: Severity::Warning,
        reason: "TooLarge",
        action: "Track".to_owned(),
        message: format!(
            "this Apply is too large to track ({error}); keep its manifests well under the API \
             server's 1.5 MiB object limit, or split the rollout"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_of_an_operation_gets_its_own_event_series() {
        let failed = |attempt| Note::Failed {
            operation: "eu".into(),
            attempt,
            reason: FailureReason::Unhealthy,
            message: "Job `m` in `shop`: BackoffLimitExceeded".into(),
        };
        let (first, second) = (failed(1).event("me"), failed(2).event("me"));
        assert_eq!(first.reason, second.reason);
        assert_ne!(first.action, second.action);
        assert_eq!(first.severity, Severity::Warning);
        assert_eq!(
            first.message,
            "operation `eu` failed (Unhealthy) on attempt 1: Job `m` in `shop`: BackoffLimitExceeded"
        );
    }

    #[test]
    fn a_failed_rollout_is_a_warning_and_a_stopped_one_is_not() {
        let settled = |phase| Note::Settled { phase, message: "m".into() }.event("me");
        assert_eq!(settled(ApplyPhase::Failed).severity, Severity::Warning);
        assert_eq!(settled(ApplyPhase::Failed).reason, "RolloutFailed");
        assert_eq!(settled(ApplyPhase::Stopped).severity, Severity::Normal);
        assert_eq!(settled(ApplyPhase::Succeeded).reason, "RolloutSucceeded");
    }
}
