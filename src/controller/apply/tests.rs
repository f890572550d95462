//! Request shapes of whole passes against a fake API server (the `tower-test` pattern): which
//! requests one reconcile makes, in which order, and how many. These are not end-to-end tests:
//! the fake keeps objects by path and answers as the API server would for the few calls a pass
//! makes (create, get, replace with a resourceVersion precondition, patch, delete), so a doubled,
//! missing or reordered request fails here in milliseconds. The real API server is exercised
//! by the end-to-end suite.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use super::reconcile;
use crate::controller::children::Children;
use crate::controller::{Context, Runs, Settings, StatusWrites};
use crate::crd::{Apply, FailurePolicy, Operation};
use crate::engine::Engine;
use crate::lease::{ApplyLeases, LeaseTiming, lease_name};
use crate::lifecycle::fixtures;
use crate::metrics::Metrics;

const NAMESPACE: &str = "shop";
const UID: &str = "5d0c2f0e-0000-4000-8000-000000000001";
const ME: &str = "replica-me";
const OPERATIONS: &str = "/apis/baton.dev/v1alpha1/namespaces/shop/operations";
const APPLY: &str = "/apis/baton.dev/v1alpha1/namespaces/shop/applies/app";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/shop/leases";

/// Objects by path, and every request seen as `METHOD path`.
#[derive(Default)]
struct FakeApi {
    objects: HashMap<String, Value>,
    requests: Vec<String>,
    version: u64,
    /// A competitor writes the Lease right after every read of it (a renewal racing a take).
    lease_written_after_read: bool,
    /// The body of every patch that went through, by path.
    patches: Vec<(String, Value)>,
    /// Requests (`METHOD path`, as recorded) answered `503 Service Unavailable`.
    unavailable: Vec<String>,
}

impl FakeApi {
    fn answer(&mut self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let name = body.as_ref().and_then(|object| object["metadata"]["name"].as_str());
        match name {
            // Recorded under the lease's own path, with the lease manager's traffic.
            Some(name) if name.starts_with("baton-apply-") && !path.ends_with(name) => {
                self.requests.push(format!("{method} {path}/{name}"));
            }
            _ => self.requests.push(format!("{method} {path}")),
        }
        if self.requests.last().is_some_and(|request| self.unavailable.contains(request)) {
            return (StatusCode::SERVICE_UNAVAILABLE, status(503, "ServiceUnavailable"));
        }
        let object_path = path.trim_end_matches("/status").to_owned();
        match (method, body) {
            ("GET", _) => match self.objects.get(&object_path).cloned() {
                Some(object) => {
                    if self.lease_written_after_read && object_path.contains("/leases/") {
                        self.store(&object_path, object.clone(), None);
                    }
                    (StatusCode::OK, object)
                }
                None => (StatusCode::NOT_FOUND, status(404, "NotFound")),
            },
            ("POST", Some(object)) => {
                let name = object["metadata"]["name"].as_str().unwrap_or("event").to_owned();
                let path = format!("{path}/{name}");
                if self.objects.contains_key(&path) {
                    return (StatusCode::CONFLICT, status(409, "AlreadyExists"));
                }
                let stored = self.store(&path, object, Some(format!("{name}-uid")));
                (StatusCode::CREATED, stored)
            }
            ("PUT", Some(object)) => {
                let current = self.objects.get(&object_path).map(|o| o["metadata"].clone());
                let read = &object["metadata"]["resourceVersion"];
                match current {
                    Some(meta) if &meta["resourceVersion"] == read => {
                        (StatusCode::OK, self.store(&object_path, object, None))
                    }
                    Some(_) => (StatusCode::CONFLICT, status(409, "Conflict")),
                    None => (StatusCode::NOT_FOUND, status(404, "NotFound")),
                }
            }
            ("PATCH", Some(patch)) => match self.objects.get(&object_path).cloned() {
                // A version in the body is a precondition, as the API server makes it.
                Some(object)
                    if patch["metadata"]["resourceVersion"].is_string()
                        && patch["metadata"]["resourceVersion"]
                            != object["metadata"]["resourceVersion"] =>
                {
                    (StatusCode::CONFLICT, status(409, "Conflict"))
                }
                Some(mut object) => {
                    self.patches.push((path.to_owned(), patch.clone()));
                    merge(&mut object, &patch);
                    (StatusCode::OK, self.store(&object_path, object, None))
                }
                None => (StatusCode::NOT_FOUND, status(404, "NotFound")),
            },
            ("DELETE", _) => {
                self.objects.remove(&object_path);
                (StatusCode::OK, status(200, "Success"))
            }
            _ => (StatusCode::BAD_REQUEST, status(400, "BadRequest")),
        }
    }

    fn store(&mut self, path: &str, mut object: Value, uid: Option<String>) -> Value {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        if let Some(uid) = uid {
            object["metadata"]["uid"] = json!(uid);
        }
        self.objects.insert(path.to_owned(), object.clone());
        object
    }

    /// The requests of the pass, without the lease manager's own renewals (which run on their
    /// own clock) and reads of the lease (counted apart).
    fn pass(&self) -> Vec<String> {
        self.requests.iter().filter(|r| !r.contains("/leases/baton-apply-")).cloned().collect()
    }
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason})
}

/// A JSON merge patch (also good enough for the server-side applies a pass makes here).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) if value.is_object() => merge(existing, value),
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// A pass's world: the context whose client talks to the fake, the watch cache behind it, and
/// the receiver of lease wake-ups (dropping it would make the lease managers let go).
struct Harness {
    context: Arc<Context>,
    cache: Writer<Operation>,
    _woken: tokio::sync::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<Apply>>,
}

/// A fake API server serving `api`, and a context whose client talks to it.
fn harness(api: Arc<Mutex<FakeApi>>) -> Harness {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let bytes = request.into_body().collect_bytes().await.unwrap_or_default();
            let body = serde_json::from_slice(&bytes).ok();
            let (code, answer) = lock(&api).answer(&method, &path, body);
            let response = Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()));
            if let Ok(response) = response {
                respond.send_response(response);
            }
        }
    });
    let client = Client::new(service, NAMESPACE);
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitDone);
    let metrics = Arc::new(Metrics::default());
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let timing = LeaseTiming { duration: Duration::from_secs(15), grace: Duration::from_secs(5) };
    let settings = Settings {
        namespace: None,
        identity: ME.to_owned(),
        default_service_account: "default".to_owned(),
        health_reread_interval: Duration::from_secs(60),
        lease: timing,
        idempotency_ttl: Duration::from_secs(3600),
        admin_address: ([127, 0, 0, 1], 0).into(),
        concurrency: 1,
    };
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a valid URI"));
    let context = Context {
        recorder: Recorder::new(client.clone(), Reporter::from("baton")),
        leases: ApplyLeases::new(client.clone(), ME.to_owned(), timing, wake, metrics.clone()),
        engine: Engine::new(
            config,
            client.clone(),
            crate::engine::watches::Watches::new(None, Default::default(), Duration::from_secs(60)),
        ),
        metrics,
        settings,
        runs: Runs::default(),
        status_writes: StatusWrites::default(),
        misses: crate::controller::Misses::default(),
        children: Children::new(store),
        client,
    };
    Harness { context: Arc::new(context), cache: writer, _woken: woken }
}

fn lock(api: &Mutex<FakeApi>) -> std::sync::MutexGuard<'_, FakeApi> {
    api.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An Apply `app` of `count` operations, stored in the fake with its lease held by this replica.
fn apply(count: usize, max_concurrent: u32, api: &Mutex<FakeApi>) -> Apply {
    let mut apply = Apply::new("app", fixtures::spec(count, FailurePolicy::Halt, max_concurrent));
    apply.metadata.namespace = Some(NAMESPACE.into());
    apply.metadata.uid = Some(UID.into());
    apply.metadata.resource_version = Some("1".into());
    apply.metadata.generation = Some(1);
    let now = k8s_openapi::jiff::Timestamp::now();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease_name(UID), "namespace": NAMESPACE, "resourceVersion": "1"},
        "spec": {"holderIdentity": ME, "leaseDurationSeconds": 15,
                 "acquireTime": now.to_string(), "renewTime": now.to_string()}
    });
    let mut fake = lock(api);
    fake.objects.insert(format!("{LEASES}/{}", lease_name(UID)), lease);
    fake.objects.insert(APPLY.to_owned(), serde_json::to_value(&apply).unwrap_or_default());
    apply
}

fn op(name: &str) -> String {
    format!("{OPERATIONS}/app-{name}")
}

#[tokio::test]
async fn a_first_pass_creates_every_operation_adds_the_finalizer_once_and_claims_the_window() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let Harness { context, _woken, .. } = harness(api.clone());
    let apply = apply(3, 2, &api);

    reconcile(Arc::new(apply), context).await.expect("the pass succeeds");

    let fake = lock(&api);
    let pass = fake.pass();
    let (creates, rest) = pass.split_at(4);
    let mut creates = creates.to_vec();
    creates.sort();
    let mut expected = vec![format!("PATCH {APPLY}")];
    expected.extend(vec![format!("POST {OPERATIONS}"); 3]);
    assert_eq!(creates, expected, "the creations and the finalizer, side by side");
    let mut claims = rest[0..2].to_vec();
    claims.sort();
    assert_eq!(
        claims,
        [format!("PUT {}/status", op("a")), format!("PUT {}/status", op("b"))],
        "then the window's claims, side by side"
    );
    // The fake serves no discovery: the claimed runs' apply starts with it, in the same pass.
    assert_eq!(rest[2], "GET /api/v1", "then the apply of what was claimed");
    let parent = rest.iter().filter(|r| **r == format!("PATCH {APPLY}/status")).count();
    assert_eq!(parent, 1, "the parent status once, at the end: {rest:#?}");
    let finalizers = pass.iter().filter(|r| **r == format!("PATCH {APPLY}")).count();
    assert_eq!(finalizers, 1, "the finalizer once: {pass:#?}");
}

#[tokio::test]
async fn a_keyed_first_pass_adds_the_finalizer_once_before_the_key_and_claims() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let Harness { context, _woken, .. } = harness(api.clone());
    let mut apply = apply(1, 1, &api);
    apply.spec.idempotency_key = Some("release-42".into());
    let key = format!("{LEASES}/{}", crate::controller::keys::key_lease_name("release-42"));

    reconcile(Arc::new(apply), context).await.expect("the pass succeeds");

    let pass = lock(&api).pass();
    let finalizers = pass.iter().filter(|r| **r == format!("PATCH {APPLY}")).count();
    assert_eq!(finalizers, 1, "the finalizer is added once: {pass:#?}");
    let position = |request: &str| pass.iter().position(|r| r == request);
    assert!(position(&format!("PATCH {APPLY}")) < position(&format!("POST {LEASES}")));
    assert!(position(&format!("GET {key}")) < position(&format!("POST {LEASES}")));
    assert!(position(&format!("POST {LEASES}")) < position(&format!("PUT {}/status", op("a"))));
}

/// Lets the Events a pass records in the background reach the fake.
async fn events_recorded() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Puts `statuses` in the fake and the watch cache (and its owner index) as the Apply's
/// Operations.
fn seed(
    apply: &Apply,
    statuses: Vec<crate::crd::OperationStatus>,
    api: &Mutex<FakeApi>,
    cache: &mut Writer<Operation>,
    children: &Children,
) {
    let owner = kube::Resource::controller_owner_ref(apply, &()).expect("an owner");
    for (index, status) in statuses.into_iter().enumerate() {
        let entry = &apply.spec.operations[index];
        let operation = Operation {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("app-{}", entry.name)),
                namespace: Some(NAMESPACE.into()),
                uid: Some(format!("op-{index}")),
                resource_version: Some(format!("{}", 100 + index)),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            spec: crate::crd::OperationSpec {
                index: u32::try_from(index).expect("small"),
                name: entry.name.clone(),
                target: entry.target.clone(),
                manifests: Vec::new(),
                timeout: entry.timeout.clone(),
                approval: None,
                soak: None,
                values_error: None,
            },
            status: Some(status),
        };
        let value = serde_json::to_value(&operation).unwrap_or_default();
        lock(api).objects.insert(op(&entry.name), value);
        let event = Event::Apply(operation);
        children.follow(&event);
        cache.apply_watcher_event(&event);
    }
}

#[tokio::test]
async fn a_stop_pass_stops_what_runs_and_what_waits_and_writes_the_parent_once() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let Harness { context, mut cache, _woken } = harness(api.clone());
    let mut apply = apply(3, 1, &api);
    apply.spec.stop = true;
    apply.metadata.finalizers = Some(vec![crate::crd::FINALIZER.into()]);
    let statuses = vec![fixtures::succeeded(1), fixtures::running(ME, 1), fixtures::pending(0)];
    seed(&apply, statuses, &api, &mut cache, &context.children);

    reconcile(Arc::new(apply), context).await.expect("the pass succeeds");
    events_recorded().await;

    let pass = lock(&api).pass();
    let (stops, rest) = pass.split_at(2);
    let mut stops = stops.to_vec();
    stops.sort();
    assert_eq!(
        stops,
        [format!("PUT {}/status", op("b")), format!("PUT {}/status", op("c"))],
        "the running and the pending operation stop, side by side; the succeeded one stays"
    );
    let events = "POST /apis/events.k8s.io/v1/namespaces/shop/events".to_owned();
    assert_eq!(rest.first(), Some(&format!("PATCH {APPLY}/status")));
    assert!(rest[1..].iter().all(|r| *r == events), "then Events only: {rest:#?}");
    assert!(!pass.iter().any(|r| r.starts_with("GET")), "no reads besides the lease's");
}

/// An Apply of two whose second, last operation this replica runs, applied earlier and healthy
/// now: its next pass settles it, with nothing to dispatch and nothing to read.
fn about_to_settle(
    api: &Mutex<FakeApi>,
    cache: &mut Writer<Operation>,
    context: &Context,
) -> Apply {
    let mut apply = apply(2, 1, api);
    apply.metadata.finalizers = Some(vec![crate::crd::FINALIZER.into()]);
    let statuses = vec![fixtures::succeeded(1), fixtures::running(ME, 1)];
    seed(&apply, statuses, api, cache, &context.children);
    context.runs.record(("op-1".into(), 1), crate::controller::Dispatch::Applied(Vec::new()));
    apply
}

#[tokio::test]
async fn a_settling_pass_writes_the_last_status_and_lets_the_apply_go() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let Harness { context, mut cache, _woken } = harness(api.clone());
    let apply = about_to_settle(&api, &mut cache, &context);

    let action = reconcile(Arc::new(apply), context).await.expect("the pass succeeds");
    events_recorded().await;

    let pass = lock(&api).pass();
    assert_eq!(
        pass[..2],
        [format!("PUT {}/status", op("b")), format!("PATCH {APPLY}/status")],
        "the finish, then the parent"
    );
    assert_eq!(pass[2..].len(), 1, "one Event: the rollout succeeded: {pass:#?}");
    assert_eq!(action, kube::runtime::controller::Action::await_change(), "let go");
}

fn lease_requests(api: &Mutex<FakeApi>) -> Vec<String> {
    lock(api).requests.iter().filter(|r| r.contains("/leases/baton-apply-")).cloned().collect()
}

#[tokio::test]
async fn a_held_lease_costs_no_request_after_its_take() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let Harness { context, _woken, .. } = harness(api.clone());
    let apply = apply(2, 1, &api);

    let held = crate::lease::Acquired::Held;
    assert_eq!(context.leases.acquire(&apply).await.expect("no error"), held);
    let lease = format!("{LEASES}/{}", lease_name(UID));
    assert_eq!(
        lease_requests(&api),
        [format!("POST {lease}"), format!("GET {lease}"), format!("PUT {lease}")],
        "the take: the create finds it, the read sees it free or this replica's, the replace takes it"
    );
    assert_eq!(context.leases.acquire(&apply).await.expect("no error"), held);
    assert!(context.leases.holds(UID));
    assert_eq!(lease_requests(&api).len(), 3, "no lease request once held");
}

#[tokio::test]
async fn a_take_from_a_stale_read_loses_to_the_write_made_since() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let Harness { context, _woken, .. } = harness(api.clone());
    let apply = apply(1, 1, &api);
    {
        let mut fake = lock(&api);
        fake.lease_written_after_read = true;
        // Past the resourceVersion the lease was seeded with.
        fake.version = 100;
    }

    let taken = context.leases.acquire(&apply).await.expect("no error");
    assert_ne!(taken, crate::lease::Acquired::Held, "the take loses: {:#?}", lock(&api).requests);
    assert!(!context.leases.holds(UID), "and nothing is held");
    let lease = format!("{LEASES}/{}", lease_name(UID));
    assert_eq!(lease_requests(&api).last(), Some(&format!("PUT {lease}")));
}

#[tokio::test]
async fn a_pass_handed_the_version_its_status_write_superseded_writes_nothing() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let Harness { context, mut cache, _woken } = harness(api.clone());
    let apply = about_to_settle(&api, &mut cache, &context);
    reconcile(Arc::new(apply.clone()), context.clone()).await.expect("the pass succeeds");
    events_recorded().await;
    let before = lock(&api).requests.len();

    // The watch has not delivered the status write yet: the same version comes again.
    reconcile(Arc::new(apply), context).await.expect("the pass succeeds");
    events_recorded().await;
    assert_eq!(lock(&api).requests[before..], [] as [String; 0], "nothing read, nothing written");
}

#[tokio::test]
async fn an_apply_driven_before_reads_its_lease_instead_of_creating_it() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let Harness { context, _woken, .. } = harness(api.clone());
    let mut apply = apply(1, 1, &api);
    apply.status = Some(crate::crd::ApplyStatus {
        phase: Some(crate::crd::ApplyPhase::Running),
        ..Default::default()
    });

    let held = context.leases.acquire(&apply).await.expect("no error");
    assert_eq!(held, crate::lease::Acquired::Held);
    let lease = format!("{LEASES}/{}", lease_name(UID));
    assert_eq!(lease_requests(&api), [format!("GET {lease}"), format!("PUT {lease}")]);
}

#[tokio::test]
async fn a_status_write_carries_the_version_the_pass_read() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let Harness { context, mut cache, _woken } = harness(api.clone());
    let apply = about_to_settle(&api, &mut cache, &context);

    reconcile(Arc::new(apply), context).await.expect("the pass succeeds");

    let fake = lock(&api);
    let status = format!("{APPLY}/status");
    let bodies: Vec<&Value> =
        fake.patches.iter().filter(|(path, _)| *path == status).map(|(_, body)| body).collect();
    assert_eq!(bodies.len(), 1, "one status write: {:#?}", fake.requests);
    assert_eq!(bodies[0]["metadata"]["resourceVersion"], "1", "the version read: {:#?}", bodies[0]);
}

#[tokio::test]
async fn a_status_write_loses_to_a_write_made_since_the_read_and_looks_again_soon() {
    let api = Arc::new(Mutex::new(FakeApi::default()));
    let Harness { context, mut cache, _woken } = harness(api.clone());
    let apply = about_to_settle(&api, &mut cache, &context);
    let theirs = json!({"phase": "Running", "message": "written by the replica that took over"});
    {
        // Another replica took the lease over and wrote the status since this pass read it.
        let mut fake = lock(&api);
        let mut current = fake.objects[APPLY].clone();
        current["status"] = theirs.clone();
        fake.version = 100;
        fake.store(APPLY, current, None);
    }

    let action =
        reconcile(Arc::new(apply), context.clone()).await.expect("a lost write is no error");

    let fake = lock(&api);
    assert_eq!(fake.objects[APPLY]["status"], theirs, "their status stands");
    // Looked at again soon, backing off as a lost write (the first of a row).
    assert_ne!(action, kube::runtime::controller::Action::await_change());
    assert_eq!(context.misses.count(UID), 1, "counted as a lost write");
    let writes = fake.pass().iter().filter(|r| **r == format!("PATCH {APPLY}/status")).count();
    assert_eq!(writes, 1, "one write, which lost: {:#?}", fake.requests);
    assert_eq!(context.status_writes.since(UID), None, "a lost write is not remembered as made");
}

#[tokio::test]
async fn a_failed_pass_is_counted_by_the_step_it_failed_in_and_what_went_wrong() {
    let key = format!("{LEASES}/{}", crate::controller::keys::key_lease_name("release-7"));
    let cases = [
        ("lease", format!("POST {LEASES}/{}", lease_name(UID)), false),
        ("key", format!("GET {key}"), true),
        ("finalizer", format!("PATCH {APPLY}"), false),
        ("write", format!("POST {OPERATIONS}"), false),
        ("status", format!("PATCH {APPLY}/status"), false),
    ];
    for (step, request, keyed) in cases {
        let api = Arc::new(Mutex::new(FakeApi::default()));
        let Harness { context, _woken, .. } = harness(api.clone());
        let mut apply = apply(1, 1, &api);
        if keyed {
            apply.spec.idempotency_key = Some("release-7".into());
        }
        // The Lease is created by the pass itself (the fake holds none), so its create is a
        // request the pass makes.
        lock(&api).objects.retain(|path, _| !path.contains("/leases/"));
        lock(&api).unavailable.push(request.clone());
        let apply = Arc::new(apply);

        let error = reconcile(apply.clone(), context.clone()).await.expect_err("the pass fails");
        crate::controller::error_policy(apply, &error, context.clone());

        let metrics = context.metrics.encode();
        let line = format!(
            "baton_reconcile_errors_total{{controller=\"apply\",step=\"{step}\",error=\"unavailable\"}} 1"
        );
        assert!(metrics.contains(&line), "{request} answered 503: `{line}` in\n{metrics}");
        assert_eq!(metrics.matches("baton_reconcile_errors_total{").count(), 1, "{metrics}");
    }
}
