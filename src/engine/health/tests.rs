//! kstatus's rules over objects in every state.

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
        Value::Object(map) => map.iter().for_each(|(k, v)| pointers(v, &format!("{at}/{k}"), out)),
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
