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
mod tests {
    use serde_json::{Value, json};

    use super::ObjectHealth::{self, Current, Failed, InProgress};
    use super::health;

    const REPORT: &str = "waiting for the controller to report status";
    const OBSERVE: &str = "waiting for the controller to observe generation 2";
    const RUNNING: &str = "job running: 0 succeeded";

    /// A case's name, its object and the health it must have.
    type Case = (&'static str, Value, ObjectHealth);

    /// A `web` object at generation 2. A status object gets observedGeneration 2 (caught up)
    /// unless it sets the field (to null for "not reported"); a null status is left out.
    fn object(api_version: &str, kind: &str, spec: Value, status: Value) -> Value {
        let mut object = json!({
            "apiVersion": api_version, "kind": kind,
            "metadata": {"name": "web", "generation": 2}, "spec": spec,
        });
        match status {
            Value::Null => {}
            Value::Object(mut status) => {
                status.entry("observedGeneration").or_insert(json!(2));
                object["status"] = Value::Object(status);
            }
            other => object["status"] = other,
        }
        object
    }

    fn cond(kind: &str, status: &str, reason: &str, message: &str) -> Value {
        json!({"type": kind, "status": status, "reason": reason, "message": message})
    }

    fn wait(message: &str) -> ObjectHealth {
        InProgress(message.to_owned())
    }

    fn fail(message: &str) -> ObjectHealth {
        Failed(message.to_owned())
    }

    #[rustfmt::skip]
    fn deployment_cases() -> Vec<Case> {
        let deploy = |replicas: Value, status: Value| {
            object("apps/v1", "Deployment", json!({"replicas": replicas}), status)
        };
        let counts = |replicas: i64, updated: i64, available: i64, ready: i64| json!({
            "replicas": replicas, "updatedReplicas": updated,
            "availableReplicas": available, "readyReplicas": ready,
        });
        let mut unavailable = counts(3, 3, 3, 3);
        unavailable["conditions"] =
            json!([cond("Available", "False", "MinimumReplicasUnavailable", "too few")]);
        let deadline = cond("Progressing", "False", "ProgressDeadlineExceeded",
            "ReplicaSet \"web-1\" has timed out progressing.");
        let stale = json!({"observedGeneration": 1, "conditions": [deadline.clone()]});
        let strings = json!({"replicas": "3", "updatedReplicas": "3", "readyReplicas": "3"});
        vec![
            ("all replicas ready", deploy(json!(3), counts(3, 3, 3, 3)), Current),
            ("scaled to zero", deploy(json!(0), json!({})), Current),
            ("replicas default to 1", deploy(json!(null), counts(1, 1, 1, 1)), Current),
            ("no status", deploy(json!(3), json!(null)), wait(REPORT)),
            ("generation unobserved", deploy(json!(3), json!({"observedGeneration": 1})),
                wait(OBSERVE)),
            ("observedGeneration missing", deploy(json!(0), json!({"observedGeneration": null})),
                wait(OBSERVE)),
            ("rolling out", deploy(json!(3), counts(4, 1, 3, 3)), wait("1 of 3 replicas updated")),
            ("old replicas terminating", deploy(json!(3), counts(4, 3, 3, 3)),
                wait("1 extra replica(s) pending termination")),
            ("not available", deploy(json!(3), counts(3, 3, 2, 3)), wait("2 of 3 replicas available")),
            ("not ready", deploy(json!(3), counts(3, 3, 3, 2)), wait("2 of 3 replicas ready")),
            ("Available=False", deploy(json!(3), unavailable),
                wait("Available=False MinimumReplicasUnavailable: too few")),
            ("deadline exceeded", deploy(json!(3), json!({"conditions": [deadline]})),
                fail("Progressing=False ProgressDeadlineExceeded: \
                    ReplicaSet \"web-1\" has timed out progressing.")),
            ("deadline of an older generation", deploy(json!(3), stale), wait(OBSERVE)),
            ("replicas as a string", deploy(json!("3"), counts(1, 1, 1, 1)), Current),
            ("counters as strings", deploy(json!(3), strings), wait("0 of 3 replicas updated")),
            ("status as a string", deploy(json!(3), json!("ready")), wait(REPORT)),
        ]
    }

    #[rustfmt::skip]
    fn stateful_set_cases() -> Vec<Case> {
        let sts = |spec: &Value, status: Value| {
            object("apps/v1", "StatefulSet", spec.clone(), status)
        };
        let status = |replicas: i64, ready: i64, updated: i64, update: &str| json!({
            "replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated,
            "currentRevision": "web-1", "updateRevision": update,
        });
        let three = json!({"replicas": 3});
        let partition = |partition: Value| {
            json!({"replicas": 3, "updateStrategy": {"rollingUpdate": {"partition": partition}}})
        };
        let on_delete = json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"}});
        vec![
            ("rolled out", sts(&three, status(3, 3, 3, "web-1")), Current),
            ("replicas default to 1", sts(&json!({}), status(1, 1, 1, "web-1")), Current),
            ("no status", sts(&three, json!(null)), wait(REPORT)),
            ("generation unobserved", sts(&three, json!({"observedGeneration": 1})), wait(OBSERVE)),
            ("scaling up", sts(&three, status(2, 2, 2, "web-1")), wait("2 of 3 replicas created")),
            ("not ready", sts(&three, status(3, 1, 3, "web-1")), wait("1 of 3 replicas ready")),
            ("scaling down", sts(&three, status(4, 4, 4, "web-1")),
                wait("1 extra replica(s) pending termination")),
            ("updating", sts(&three, status(3, 3, 1, "web-2")), wait("1 of 3 replicas updated")),
            ("revision not promoted", sts(&three, status(3, 3, 3, "web-2")),
                wait("waiting for revision web-2 to replace web-1")),
            ("partition rolled out", sts(&partition(json!(2)), status(3, 3, 1, "web-2")), Current),
            ("partition rolling", sts(&partition(json!(2)), status(3, 3, 0, "web-2")),
                wait("0 of 1 replicas updated")),
            ("OnDelete ignores revisions", sts(&on_delete, status(3, 3, 0, "web-2")), Current),
            ("partition as a string", sts(&partition(json!("2")), status(3, 3, 1, "web-2")),
                wait("1 of 3 replicas updated")),
        ]
    }

    #[rustfmt::skip]
    fn daemon_set_cases() -> Vec<Case> {
        let ds = |spec: Value, status: Value| object("apps/v1", "DaemonSet", spec, status);
        let status = |desired: i64, updated: i64, available: i64, ready: i64| json!({
            "desiredNumberScheduled": desired, "currentNumberScheduled": desired,
            "updatedNumberScheduled": updated, "numberAvailable": available, "numberReady": ready,
        });
        // What the API server stores on create, before the controller has looked.
        let created = json!({"observedGeneration": null, "desiredNumberScheduled": 0});
        let on_delete = json!({"updateStrategy": {"type": "OnDelete"}});
        vec![
            ("all nodes ready", ds(json!({}), status(3, 3, 3, 3)), Current),
            ("no nodes match", ds(json!({}), status(0, 0, 0, 0)), Current),
            ("no status", ds(json!({}), json!(null)), wait(REPORT)),
            ("created, not yet observed", ds(json!({}), created), wait(OBSERVE)),
            ("updating", ds(json!({}), status(3, 1, 3, 3)), wait("1 of 3 pods updated")),
            ("not available", ds(json!({}), status(3, 3, 2, 2)), wait("2 of 3 pods available")),
            ("not ready", ds(json!({}), status(3, 3, 3, 2)), wait("2 of 3 pods ready")),
            ("OnDelete ignores updates", ds(on_delete, status(3, 0, 3, 3)), Current),
            ("counters as strings", ds(json!({}), json!({"desiredNumberScheduled": "3"})), Current),
        ]
    }

    #[rustfmt::skip]
    fn job_cases() -> Vec<Case> {
        let job = |status: Value| object("batch/v1", "Job", json!({}), status);
        let done = |kind: &str, reason: &str, message: &str| json!({"succeeded": 1, "conditions": [
            cond("SuccessCriteriaMet", "True", "", ""), cond(kind, "True", reason, message),
        ]});
        let backoff = "Job has reached the specified backoff limit";
        vec![
            ("complete", job(done("Complete", "CompletionsReached", "")), Current),
            ("failed", job(done("Failed", "BackoffLimitExceeded", backoff)),
                fail(&format!("Failed=True BackoffLimitExceeded: {backoff}"))),
            ("running", job(json!({"succeeded": 1})), wait("job running: 1 succeeded")),
            ("Complete=False", job(json!({"conditions": [cond("Complete", "False", "", "")]})),
                wait(RUNNING)),
            ("no status", job(json!(null)), wait(REPORT)),
            ("conditions not a list", job(json!({"conditions": {"type": "Complete"}})),
                wait(RUNNING)),
            ("conditions of the wrong shape", job(json!({"conditions": [1, "Complete", null]})),
                wait(RUNNING)),
        ]
    }

    #[rustfmt::skip]
    fn pod_cases() -> Vec<Case> {
        let pod = |status: Value| object("v1", "Pod", json!({}), status);
        let unready = "containers with unready status: [app]";
        let ready = |status: &str| json!({"phase": "Running",
            "conditions": [cond("Ready", status, "ContainersNotReady", unready)]});
        let evicted = json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"});
        vec![
            ("succeeded", pod(json!({"phase": "Succeeded"})), Current),
            ("ready", pod(ready("True")), Current),
            ("evicted", pod(evicted), fail("phase=Failed Evicted: low on memory")),
            ("not ready", pod(ready("False")),
                wait(&format!("Ready=False ContainersNotReady: {unready}"))),
            ("pending", pod(json!({"phase": "Pending"})), wait("phase Pending")),
            ("no status", pod(json!(null)), wait(REPORT)),
            ("phase as a number", pod(json!({"phase": 3})),
                wait("waiting for the pod to report a phase")),
        ]
    }

    #[rustfmt::skip]
    fn generic_cases() -> Vec<Case> {
        let plain = |api_version: &str, kind: &str| {
            object(api_version, kind, json!({}), json!(null))
        };
        let widget = |status: Value| object("example.com/v1", "Widget", json!({}), status);
        let ready = |status: &str, reason: &str| {
            widget(json!({"conditions": [cond("Ready", status, reason, "")]}))
        };
        let beside_ready = |kind: &str| widget(json!({"conditions": [
            cond("Ready", "True", "", ""), cond(kind, "True", "Why", "because"),
        ]}));
        let mut deleting = plain("v1", "ConfigMap");
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        vec![
            ("ConfigMap", plain("v1", "ConfigMap"), Current),
            ("Role", plain("rbac.authorization.k8s.io/v1", "Role"), Current),
            ("Service", object("v1", "Service", json!({}), json!({"loadBalancer": {}})), Current),
            ("apps kind without rules", plain("apps/v1", "ControllerRevision"), Current),
            ("Deployment of another group", plain("example.com/v1", "Deployment"), Current),
            ("being deleted", deleting, wait("waiting for deletion to finish")),
            ("Ready=True", ready("True", "Succeeded"), Current),
            ("Ready=False, failed", ready("False", "InstallFailed"),
                fail("Ready=False InstallFailed")),
            ("Ready=False, error", ready("False", "ApplyError"), fail("Ready=False ApplyError")),
            ("Ready=False, deadline", ready("False", "ProgressDeadlineExceeded"),
                fail("Ready=False ProgressDeadlineExceeded")),
            ("Ready=False, waiting", ready("False", "DependencyNotReady"),
                wait("Ready=False DependencyNotReady")),
            ("Ready=Unknown", ready("Unknown", "Progressing"), wait("Ready=Unknown Progressing")),
            ("Stalled", beside_ready("Stalled"), fail("Stalled=True Why: because")),
            ("Reconciling", beside_ready("Reconciling"), wait("Reconciling=True Why: because")),
            ("generation unobserved", widget(json!({"observedGeneration": 1})), wait(OBSERVE)),
            ("observedGeneration not reported", widget(json!({"observedGeneration": null})),
                Current),
            ("status as a string", widget(json!("ok")), Current),
            ("conditions not a list", widget(json!({"conditions": "Ready"})), Current),
            ("not an object", json!("Deployment"), Current),
            ("null", json!(null), Current),
        ]
    }

    fn check(cases: Vec<Case>) {
        for (name, object, want) in cases {
            assert_eq!(health(&object), want, "case `{name}`");
        }
    }

    #[test]
    fn deployment() {
        check(deployment_cases());
    }

    #[test]
    fn stateful_set() {
        check(stateful_set_cases());
    }

    #[test]
    fn daemon_set() {
        check(daemon_set_cases());
    }

    #[test]
    fn job() {
        check(job_cases());
    }

    #[test]
    fn pod() {
        check(pod_cases());
    }

    #[test]
    fn generic() {
        check(generic_cases());
    }

    /// JSON pointers to every value inside `value`, `value` itself included.
    fn pointers(value: &Value, at: &str, out: &mut Vec<String>) {
        out.push(at.to_owned());
        match value {
            Value::Object(map) => {
                map.iter().for_each(|(k, v)| pointers(v, &format!("{at}/{k}"), out))
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    pointers(v, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    /// Every fixture with each of its values, one at a time, swapped for one of the wrong shape
    /// or an extreme number: health must answer without panicking or overflowing.
    #[test]
    #[rustfmt::skip]
    fn malformed_values_never_panic() {
        let junk = [
            json!(null), json!("3"), json!(-1), json!(i64::MIN), json!(i64::MAX), json!(u64::MAX),
            json!(1.5), json!(true), json!([]), json!({}), json!([1, "x", null]),
        ];
        let cases = [
            deployment_cases(), stateful_set_cases(), daemon_set_cases(),
            job_cases(), pod_cases(), generic_cases(),
        ];
        for (_, fixture, _) in cases.into_iter().flatten() {
            let mut paths = Vec::new();
            pointers(&fixture, "", &mut paths);
            for path in paths {
                for value in &junk {
                    let mut broken = fixture.clone();
                    *broken.pointer_mut(&path).expect("a pointer from the walk") = value.clone();
                    health(&broken);
                }
            }
        }
    }
}
