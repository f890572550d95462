//! The record step: Events on the Apply for the notes whose writes went through, side by side
//! in the background, and for a pass that failed in a way retrying soon will not fix. The words are the
//! lifecycle's (`Note::event`); this only sends them.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use tracing::debug;

use crate::Error;
use crate::controller::Context;
use crate::crd::{Apply, Operation};
use crate::lifecycle::{EventText, Note, Severity, operation_name, reconcile_failed, too_large};

/// The longest Event message sent; the API server refuses longer notes.
const MAX_MESSAGE: usize = 1000;

/// Records the notes' Events side by side, in the background: they are independent of each
/// other and of the rollout, and a pass should not wait on them (an Event that cannot be
/// recorded is logged, never retried).
pub(super) fn publish_all(apply: &Apply, notes: &[Note], context: &Context) {
    if notes.is_empty() {
        return;
    }
    let events: Vec<Event> = notes
        .iter()
        .map(|note| {
            // The related Operation keeps one operation's Events apart from another's: the
            // recorder folds Events with the same reason and references into one series.
            let related = note.operation().map(|operation| operation_ref(apply, operation));
            event(note.event(context.leases.identity()), related)
        })
        .collect();
    let recorder = context.recorder.clone();
    let reference = apply.object_ref(&());
    tokio::spawn(async move {
        let sends = events.iter().map(|event| publish(&recorder, event, &reference));
        futures::future::join_all(sends).await;
    });
}

/// Records a failed pass that needs a person: a user's conflict, a malformed object, or an
/// Apply too large to write (no status can say that, as the status may be what is too large).
pub(super) async fn record_failure(apply: &Apply, error: &Error, context: &Context) {
    let text = if error.is_too_large() {
        too_large(&error.to_string())
    } else if error.is_lasting() {
        reconcile_failed(&error.to_string())
    } else {
        return;
    };
    send(apply, text, None, context).await;
}

async fn send(apply: &Apply, text: EventText, related: Option<ObjectReference>, context: &Context) {
    publish(&context.recorder, &event(text, related), &apply.object_ref(&())).await;
}

fn event(text: EventText, related: Option<ObjectReference>) -> Event {
    Event {
        type_: match text.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        },
        reason: text.reason.to_owned(),
        note: Some(truncate(text.message, MAX_MESSAGE)),
        action: text.action,
        secondary: related,
    }
}

async fn publish(recorder: &Recorder, event: &Event, reference: &ObjectReference) {
    if let Err(error) = recorder.publish(event, reference).await {
        debug!(%error, reason = event.reason, "could not record an event");
    }
}

fn operation_ref(apply: &Apply, operation: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(Operation::api_version(&()).into_owned()),
        kind: Some(Operation::kind(&()).into_owned()),
        name: Some(operation_name(&apply.name_any(), operation)),
        namespace: apply.namespace(),
        ..ObjectReference::default()
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
