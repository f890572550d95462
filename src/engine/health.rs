//! Health of any Kubernetes object baton applied, judged from the object as the API server
//! returned it, with kstatus's rules so that baton calls an object ready exactly when Flux,
//! Argo CD or `kubectl rollout status` would.
//!
//! This module owns only the rules. It takes a `serde_json::Value` and must not do I/O (no
//! client, no clock): the engine re-evaluates the same object on every check, and the rules are
//! tested without a cluster. Malformed input never panics; a field of the wrong shape counts as
//! not reported.

use serde_json::Value;

/// What an object's status says about reaching its desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectHealth {
    /// Healthy: the object reached its desired state.
    Current,
    /// Still converging; the message says what is awaited (e.g. "2 of 3 replicas available").
    InProgress(String),
    /// Failed for good; the message names the condition/reason (e.g. "Progressing=False
    /// ProgressDeadlineExceeded: ReplicaSet has timed out progressing.").
    Failed(String),
}

use ObjectHealth::{Current, Failed, InProgress};

/// Reason fragments that make `Ready=False` terminal. kstatus ignores `Ready`, and controllers
/// following its conventions set `Ready=False` both while retrying and when stuck, so only a
/// reason that names a failure counts; any other reason keeps the caller waiting until its own
/// timeout, which is the safe side of the guess.
const TERMINAL_REASON_PARTS: &[&str] = &["Failed", "Error"];
/// Whole reasons that make `Ready=False` terminal although they name no failure.
const TERMINAL_REASONS: &[&str] = &["ProgressDeadlineExceeded"];

/// The health of `object`, the full object (apiVersion, kind, metadata, spec, status).
pub fn health(object: &Value) -> ObjectHealth {
    let kind = Kind::of(object);
    if !text(object, "/metadata/deletionTimestamp").is_empty() {
        // kstatus's Terminating: an object on its way out is not in its desired state.
        return InProgress("waiting for deletion to finish".into());
    }
    if !object.get("status").is_some_and(Value::is_object) {
        return match kind {
            Kind::Other => Current,
            _ => InProgress("waiting for the controller to report status".into()),
        };
    }
    if let Some(waiting) = unobserved_generation(object, kind) {
        return waiting;
    }
    if let Some(stalled) = condition_is(object, "Stalled", "True") {
        return Failed(stalled.describe());
    }
    // Before `Ready`, as kstatus does: a controller that says it is reconciling has not settled,
    // whatever its last `Ready` said.
    if let Some(reconciling) = condition_is(object, "Reconciling", "True") {
        return InProgress(reconciling.describe());
    }
    match kind {
        Kind::Deployment => deployment(object),
        Kind::StatefulSet => stateful_set(object),
        Kind::DaemonSet => daemon_set(object),
        Kind::Job => job(object),
        Kind::Pod => pod(object),
        Kind::Other => match condition(object, "Ready") {
            None => Current,
            Some(ready) if ready.status == "True" => Current,
            Some(ready) if ready.status == "False" && is_terminal(ready.reason) => {
                Failed(ready.describe())
            }
            Some(ready) => InProgress(ready.describe()),
        },
    }
}

/// The kinds whose status a built-in controller always reports, and which have their own rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    Pod,
    Other,
}

impl Kind {
    fn of(object: &Value) -> Self {
        // Core kinds carry a bare version ("v1"): no slash means the empty group.
        let api_version = text(object, "/apiVersion");
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        match (group, text(object, "/kind")) {
            ("apps", "Deployment") => Self::Deployment,
            ("apps", "StatefulSet") => Self::StatefulSet,
            ("apps", "DaemonSet") => Self::DaemonSet,
            ("batch", "Job") => Self::Job,
            ("", "Pod") => Self::Pod,
            _ => Self::Other,
        }
    }
}

fn unobserved_generation(object: &Value, kind: Kind) -> Option<ObjectHealth> {
    let generation = int(object, "/metadata/generation")?;
    // The apps controllers always write observedGeneration. Without it the status is the empty
    // one the API server created, where a DaemonSet reads "0 desired" and would look done; kubectl
    // treats it as unobserved too. Other kinds may simply not report it.
    let reports = matches!(kind, Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet);
    match int(object, "/status/observedGeneration") {
        Some(observed) if observed >= generation => None,
        None if !reports => None,
        _ => Some(InProgress(format!(
            "waiting for the controller to observe generation {generation}"
        ))),
    }
}

fn deployment(object: &Value) -> ObjectHealth {
    if let Some(progressing) = condition_is(object, "Progressing", "False")
        .filter(|c| c.reason == "ProgressDeadlineExceeded")
    {
        return Failed(progressing.describe());
    }
    let desired = int(object, "/spec/replicas").unwrap_or(1);
    let replicas = count(object, "replicas");
    let updated = count(object, "updatedReplicas");
    let available = count(object, "availableReplicas");
    let ready = count(object, "readyReplicas");
    short_of(&[(updated, desired, "replicas updated")])
        .or_else(|| pending_termination(replicas, desired))
        .or_else(|| {
            short_of(&[
                (available, desired, "replicas available"),
                (ready, desired, "replicas ready"),
            ])
        })
        .or_else(|| condition_is(object, "Available", "False").map(|c| InProgress(c.describe())))
        .unwrap_or(Current)
}

fn stateful_set(object: &Value) -> ObjectHealth {
    let desired = int(object, "/spec/replicas").unwrap_or(1);
    let replicas = count(object, "replicas");
    let ready = count(object, "readyReplicas");
    let updated = count(object, "updatedReplicas");
    let counted =
        short_of(&[(replicas, desired, "replicas created"), (ready, desired, "replicas ready")])
            .or_else(|| pending_termination(replicas, desired));
    // OnDelete replaces pods only when someone deletes them: waiting for the new revision would
    // never end, so kstatus stops at the replica counts.
    if !rolling_update(object) {
        return counted.unwrap_or(Current);
    }
    // Ordinals below the partition stay at the old revision by design, so a partitioned rollout
    // is done once the ordinals above it are updated, with the revisions still differing.
    let partition = int(object, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
    let to_update = desired.saturating_sub(partition.max(0));
    let current = text(object, "/status/currentRevision");
    let update = text(object, "/status/updateRevision");
    let compare_revisions = partition <= 0 && !current.is_empty() && !update.is_empty();
    counted
        .or_else(|| short_of(&[(updated, to_update, "replicas updated")]))
        .or_else(|| {
            (compare_revisions && current != update)
                .then(|| InProgress(format!("waiting for revision {update} to replace {current}")))
        })
        .unwrap_or(Current)
}

fn daemon_set(object: &Value) -> ObjectHealth {
    let desired = count(object, "desiredNumberScheduled");
    // As for StatefulSets, the controller never replaces OnDelete pods itself.
    let updated =
        if rolling_update(object) { count(object, "updatedNumberScheduled") } else { desired };
    short_of(&[
        (count(object, "currentNumberScheduled"), desired, "pods scheduled"),
        (updated, desired, "pods updated"),
        (count(object, "numberAvailable"), desired, "pods available"),
        (count(object, "numberReady"), desired, "pods ready"),
    ])
    .unwrap_or(Current)
}

fn job(object: &Value) -> ObjectHealth {
    if let Some(failed) = condition_is(object, "Failed", "True") {
        return Failed(failed.describe());
    }
    if condition_is(object, "Complete", "True").is_some() {
        return Current;
    }
    let succeeded = count(object, "succeeded");
    InProgress(format!("job running: {succeeded} succeeded"))
}

fn pod(object: &Value) -> ObjectHealth {
    let phase = text(object, "/status/phase");
    match phase {
        "Succeeded" => Current,
        "Failed" => Failed(
            Condition {
                kind: "phase",
                status: phase,
                reason: text(object, "/status/reason"),
                message: text(object, "/status/message"),
            }
            .describe(),
        ),
        _ => match condition(object, "Ready") {
            Some(ready) if ready.status == "True" => Current,
            Some(ready) => InProgress(ready.describe()),
            None if phase.is_empty() => InProgress("waiting for the pod to report a phase".into()),
            None => InProgress(format!("phase {phase}")),
        },
    }
}

/// The first `(have, want, what)` still short, as "have of want what".
fn short_of(counts: &[(i64, i64, &str)]) -> Option<ObjectHealth> {
    let (have, want, what) = counts.iter().find(|(have, want, _)| have < want)?;
    Some(InProgress(format!("{have} of {want} {what}")))
}

fn pending_termination(replicas: i64, desired: i64) -> Option<ObjectHealth> {
    (replicas > desired).then(|| {
        let extra = replicas.saturating_sub(desired);
        InProgress(format!("{extra} extra replica(s) pending termination"))
    })
}

/// RollingUpdate is the API server's default, so anything but an explicit other type is one.
fn rolling_update(object: &Value) -> bool {
    matches!(text(object, "/spec/updateStrategy/type"), "" | "RollingUpdate")
}

fn is_terminal(reason: &str) -> bool {
    TERMINAL_REASON_PARTS.iter().any(|part| reason.contains(part))
        || TERMINAL_REASONS.contains(&reason)
}

struct Condition<'a> {
    kind: &'a str,
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

impl Condition<'_> {
    /// "Type=Status Reason: message", leaving out what the controller did not set.
    fn describe(&self) -> String {
        let mut out = format!("{}={}", self.kind, self.status);
        if !self.reason.is_empty() {
            out = format!("{out} {}", self.reason);
        }
        if !self.message.is_empty() {
            out = format!("{out}: {}", self.message);
        }
        out
    }
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<Condition<'a>> {
    let conditions = object.pointer("/status/conditions")?.as_array()?;
    conditions
        .iter()
        .map(|c| Condition {
            kind: text(c, "/type"),
            status: text(c, "/status"),
            reason: text(c, "/reason"),
            message: text(c, "/message"),
        })
        .find(|c| c.kind == kind)
}

fn condition_is<'a>(object: &'a Value, kind: &str, status: &str) -> Option<Condition<'a>> {
    condition(object, kind).filter(|c| c.status == status)
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

/// A status counter, 0 when missing or not a number (the API server omits zeros).
fn count(object: &Value, field: &str) -> i64 {
    int(object, &format!("/status/{field}")).unwrap_or(0)
}

#[cfg(test)]
mod tests;
