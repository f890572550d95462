//! `kubectl baton dashboard` end to end: the plugin binary serves the page with a kubeconfig,
//! headless Chromium (over WebDriver) reads it and clicks its buttons, the operator runs the
//! rollouts and the test plays the kubelet. What the page does is checked on the Apply itself,
//! as the plugin's tests check the plugin. The request guard is checked with plain HTTP requests
//! carrying the headers a rebound page would send.

use std::net::SocketAddr;
use std::path::PathBuf;

use baton::crd::{ApplyPhase, Approval, FailurePolicy, OperationPhase};
use baton_e2e::browser::{Browser, DashboardProcess};
use baton_e2e::{cluster, fleet, pods, service_account_with_rules};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::{
    DEPLOYER, World, app, config_map, create_rollout_failing_until_a_namespace, deployer_rules,
    held_deployment, spec,
};

/// The accessibility basics, checked on the live DOM: landmarks, a caption and column headers
/// on every table, a text on every button, every phase written in words (its mark hidden from
/// screen readers, so colour and mark are never the only signal), every action reachable by
/// keyboard. Returns the problems found.
const ACCESSIBILITY_CHECK: &str = r#"
const problems = [];
const phases = ["Pending", "Running", "Paused", "Succeeded", "Failed", "Stopped", "Skipped"];
if (document.documentElement.lang !== "en") problems.push("no language on <html>");
if (!document.querySelector("main")) problems.push("no <main>");
if (!document.querySelector("nav[aria-label]")) problems.push("no labelled <nav>");
if (!document.querySelector("[role=status][aria-live=polite]")) problems.push("no polite status region");
if (!document.querySelector("h1")) problems.push("no <h1>");
for (const table of document.querySelectorAll("table")) {
  if (!table.querySelector("caption") || !table.querySelector("caption").textContent.trim()) problems.push("a table without a caption");
  for (const th of table.querySelectorAll("thead th")) if (th.getAttribute("scope") !== "col") problems.push("a column header without scope: " + th.textContent);
}
for (const button of document.querySelectorAll("button")) {
  if (!button.textContent.trim()) problems.push("a button without text: " + button.outerHTML);
  if (button.tabIndex < 0) problems.push("a button out of the tab order: " + button.id);
}
for (const link of document.querySelectorAll("a")) if (link.tabIndex < 0) problems.push("a link out of the tab order");
const badges = document.querySelectorAll(".phase");
for (const badge of badges) {
  const words = Array.from(badge.childNodes).filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent.trim()).join("");
  if (!phases.includes(words)) problems.push("a phase not in words: " + badge.outerHTML);
  const mark = badge.querySelector(".mark");
  if (!mark || mark.getAttribute("aria-hidden") !== "true") problems.push("a phase mark read aloud: " + badge.outerHTML);
}
if (badges.length === 0) problems.push("no phase shown");
return problems;
"#;

async fn assert_accessible(browser: &Browser, page: &str) {
    let problems = browser.script(ACCESSIBILITY_CHECK).await;
    assert_eq!(problems, json!([]), "accessibility problems on {page}");
}

/// Whether the page fits the window's width (no sideways scrolling).
async fn fits_width(browser: &Browser) -> bool {
    browser.script("return document.documentElement.scrollWidth <= window.innerWidth + 1;").await
        == json!(true)
}

/// Puts a value in the page's window: it survives live updates, not a reload.
async fn mark_page(browser: &Browser) {
    browser.script("window.batonNoReload = 'still here'; return true;").await;
}

async fn page_not_reloaded(browser: &Browser) -> bool {
    browser.script("return window.batonNoReload === 'still here';").await == json!(true)
}

/// The text of the action notice once it says something other than the dots of a request.
async fn notice(browser: &Browser, class: &str) -> String {
    browser
        .wait_text(&format!("the notice to be `{class}`"), &format!("#notice.{class}"), |text| {
            !text.is_empty() && text != "…"
        })
        .await
}

fn managed_by_plugin(apply: &baton::crd::Apply, field: &str) -> bool {
    apply.metadata.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some("kubectl-baton")
            && entry.fields_v1.as_ref().is_some_and(|fields| {
                serde_json::to_string(&fields.0).unwrap_or_default().contains(field)
            })
    })
}

#[tokio::test]
async fn dashboard_lists_applies_and_follows_a_rollout_live_then_approves_by_keyboard() {
    let world = World::new("dash-live").await;
    let ns = world.ns.name.clone();
    world
        .create("first", spec(&ns, FailurePolicy::Halt, 1, vec![("a", config_map("first"))]))
        .await;
    let mut gated = spec(
        &ns,
        FailurePolicy::Halt,
        1,
        vec![("a", held_deployment("web-a")), ("b", config_map("second"))],
    );
    gated.operations[1].approval = Some(Approval::Required);
    world.create("second", gated).await;
    world.wait_apply_phase("first", ApplyPhase::Succeeded).await;

    let dashboard = DashboardProcess::start(&cluster().kubeconfig, &ns).await;
    let browser = Browser::start().await;
    browser.open(&dashboard.url).await;
    browser
        .wait_text("`first` listed as Succeeded", r#"tr[data-apply="first"]"#, |row| {
            row.contains("Succeeded") && row.contains("1/1")
        })
        .await;
    browser
        .wait_text("`second` listed", r#"tr[data-apply="second"]"#, |row| row.contains("0/2"))
        .await;
    assert_accessible(&browser, "the list").await;

    browser.click(r#"tr[data-apply="second"] a"#).await;
    browser.wait_text("`a` Running", "#operation-a", |row| row.contains("Running")).await;
    assert_accessible(&browser, "an Apply").await;
    mark_page(&browser).await;

    // The kubelet (kwok) makes the Deployment's pods ready: the page follows without a reload.
    pods::release(&world.client, &ns, &app("web-a")).await;
    browser.wait_text("`a` Succeeded", "#operation-a", |row| row.contains("Succeeded")).await;
    let gate = browser
        .wait_text("`b` to await its approval", "#operation-b", |row| {
            row.contains("awaits approval")
        })
        .await;
    assert!(gate.contains("Approve b"), "the approval button is in the row: {gate}");
    assert!(page_not_reloaded(&browser).await, "the page was reloaded");

    // Approve from the keyboard: the button takes Enter, as any button does.
    browser.press("#approve-b", "\u{e007}").await;
    let said = notice(&browser, "done").await;
    assert_eq!(said, "apply/second: operation `b` approved", "the plugin's own words");
    let apply = world.wait_apply_phase("second", ApplyPhase::Succeeded).await;
    assert_eq!(apply.spec.approvals, vec!["b".to_owned()]);
    let record = world.operation("second", "b").await.status.and_then(|s| s.approval);
    assert_eq!(record.map(|r| r.by).as_deref(), Some("kubectl-baton"), "recorded as the plugin's");
    browser
        .wait_text("the Apply to show Succeeded", "h1", |title| title.contains("Succeeded"))
        .await;
    assert!(page_not_reloaded(&browser).await, "the page was reloaded");
    browser.close().await;
}

#[tokio::test]
async fn dashboard_stops_resumes_and_dismisses_as_the_plugin_does() {
    let world = World::new("dash-act").await;
    let ns = world.ns.name.clone();
    let missing = create_rollout_failing_until_a_namespace(&world).await;

    let dashboard = DashboardProcess::start(&cluster().kubeconfig, &ns).await;
    let browser = Browser::start().await;
    browser.open(&dashboard.at("/applies/rollout")).await;
    browser.wait_text("`a` Running", "#operation-a", |row| row.contains("Running")).await;
    mark_page(&browser).await;

    browser.click("#action-stop").await;
    assert!(notice(&browser, "done").await.starts_with("apply/rollout: stop requested"));
    let apply = world.wait_apply_phase("rollout", ApplyPhase::Stopped).await;
    assert!(apply.spec.stop && managed_by_plugin(&apply, "f:stop"), "the plugin's patch");
    browser
        .wait_text("the stop shown completed", ".summary", |text| text.contains("completed"))
        .await;
    browser
        .wait_text("every operation Stopped", "#operation-c", |row| row.contains("Stopped"))
        .await;

    browser.click("#action-resume").await;
    assert!(notice(&browser, "done").await.starts_with("apply/rollout: resumed"));
    assert!(!world.apply("rollout").await.spec.stop);
    world.wait_operation_phase("rollout", "a", OperationPhase::Running).await;
    pods::release(&world.client, &ns, &app("web-a")).await;
    world.wait_apply_phase("rollout", ApplyPhase::Paused).await;
    let error =
        browser.wait_text("the error and its id", "#error-heading", |h| h.contains("b-1")).await;
    assert!(error.contains("Error b-1"), "{error}");

    let _later = baton_e2e::TestNamespace::create_named(&world.client, &missing).await;
    baton_e2e::grant(&world.client, &missing, (&ns, DEPLOYER), deployer_rules()).await;
    browser.click("#action-dismiss").await;
    assert!(notice(&browser, "done").await.contains("dismissal of error b-1 requested"));
    let apply = world.wait_apply_phase("rollout", ApplyPhase::Succeeded).await;
    assert_eq!(apply.spec.dismiss_error.as_deref(), Some("b-1"));
    assert!(managed_by_plugin(&apply, "f:dismissError"), "the plugin's patch");
    browser
        .wait_text("the Apply to show Succeeded", "h1", |title| title.contains("Succeeded"))
        .await;
    assert!(page_not_reloaded(&browser).await, "the page was reloaded");
    browser.close().await;
}

/// A kubeconfig acting as `system:serviceaccount:<namespace>:<account>`: the administrator's,
/// impersonating the account (the dashboard's client honours kubeconfig's `as`).
fn impersonating_kubeconfig(namespace: &str, account: &str) -> PathBuf {
    let text = std::fs::read_to_string(&cluster().kubeconfig).expect("the admin kubeconfig");
    let mut config: Value = serde_yaml_ng::from_str(&text).expect("a kubeconfig");
    let users = config["users"].as_array_mut().expect("kubeconfig users");
    for user in users {
        user["user"]["as"] = json!(format!("system:serviceaccount:{namespace}:{account}"));
        user["user"]["as-groups"] =
            json!(["system:serviceaccounts", format!("system:serviceaccounts:{namespace}")]);
    }
    let path = std::env::temp_dir().join(format!("baton-e2e-{namespace}-{account}.kubeconfig"));
    std::fs::write(&path, serde_yaml_ng::to_string(&config).expect("YAML")).expect("writing it");
    path
}

#[tokio::test]
async fn dashboard_shows_the_api_servers_refusal_in_its_words() {
    let world = World::new("dash-deny").await;
    let ns = world.ns.name.clone();
    let mut gated =
        spec(&ns, FailurePolicy::Halt, 1, vec![("a", config_map("a")), ("b", config_map("b"))]);
    gated.operations[1].approval = Some(Approval::Required);
    world.create("gated", gated).await;
    // A viewer: may read Applies and Operations, may change nothing.
    let read = PolicyRule {
        api_groups: Some(vec!["baton.dev".into()]),
        resources: Some(vec!["applies".into(), "operations".into()]),
        verbs: ["get", "list", "watch"].map(String::from).to_vec(),
        ..PolicyRule::default()
    };
    service_account_with_rules(&world.client, &ns, "viewer", vec![read]).await;
    let kubeconfig = impersonating_kubeconfig(&ns, "viewer");

    let dashboard = DashboardProcess::start(&kubeconfig, &ns).await;
    let browser = Browser::start().await;
    browser.open(&dashboard.at("/applies/gated")).await;
    browser
        .wait_text("`b` awaiting approval", "#operation-b", |row| row.contains("awaits approval"))
        .await;

    browser.click("#action-stop").await;
    let refused = notice(&browser, "refused").await;
    // What the API server says to the viewer for the same patch, read directly.
    let viewer = baton_e2e::client_for(&kubeconfig).await;
    let direct = Api::<baton::crd::Apply>::namespaced(viewer, &ns)
        .patch("gated", &PatchParams::default(), &Patch::Merge(json!({"spec": {"stop": true}})))
        .await
        .expect_err("the viewer may not patch");
    let kube::Error::Api(status) = direct else { panic!("an API refusal: {direct}") };
    assert_eq!(status.code, 403);
    assert_eq!(
        refused,
        format!("patching apply `gated`: {} (Forbidden)", status.message),
        "the server's words, after what was being done"
    );
    assert!(!world.apply("gated").await.spec.stop, "nothing changed");

    browser.click("#approve-b").await;
    browser
        .wait_text("the approval refused", "#notice.refused", |text| {
            text.starts_with("approving operation `b` of apply `gated`")
                && text.contains("forbidden")
        })
        .await;
    assert!(world.apply("gated").await.spec.approvals.is_empty(), "nothing changed");
    browser.close().await;
}

#[tokio::test]
async fn dashboard_shows_a_fleet_rollout_by_cluster_and_saves_its_screenshot() {
    let world = World::new("dash-fleet").await;
    let ns = world.ns.name.clone();
    // `eu` and `us` registered as this same cluster (as the demo does on a user's cluster):
    // the page groups by the names the Apply uses, with no extra control planes to start.
    let admin_kubeconfig =
        std::fs::read_to_string(&cluster().kubeconfig).expect("the admin kubeconfig");
    for name in ["eu", "us"] {
        fleet::put_secret(&world.client, &ns, name, &[("value", &admin_kubeconfig)]).await;
    }
    fleet::allow_reading(&world.client, &ns, DEPLOYER, &["eu", "us"]).await;
    let steps: Vec<(&str, Option<&str>, Value)> = vec![
        ("dev", None, config_map("flags-dev")),
        ("staging", None, config_map("flags-staging")),
        ("eu-canary", Some("eu"), config_map("flags-eu-canary")),
        ("us-canary", Some("us"), held_deployment("web-us-canary")),
        ("eu", Some("eu"), config_map("flags-eu")),
        ("us", Some("us"), config_map("flags-us")),
    ];
    let clusters: Vec<Option<&str>> = steps.iter().map(|(_, cluster, _)| *cluster).collect();
    let manifests = steps.into_iter().map(|(name, _, manifest)| (name, manifest)).collect();
    let mut spec = spec(&ns, FailurePolicy::Pause, 2, manifests);
    for (entry, cluster) in spec.operations.iter_mut().zip(clusters) {
        entry.target.cluster = cluster.map(str::to_owned);
    }
    spec.operations[2].soak = Some("10m".into());
    spec.operations[5].approval = Some(Approval::Required);
    world.create("fleet", spec).await;
    world.wait_operation_phase("fleet", "staging", OperationPhase::Succeeded).await;
    world.wait_operation_phase("fleet", "us-canary", OperationPhase::Running).await;

    let dashboard = DashboardProcess::start(&cluster().kubeconfig, &ns).await;
    let browser = Browser::start().await;
    browser.open(&dashboard.at("/applies/fleet")).await;
    browser
        .wait_text("the canary soaking", "#operation-eu-canary", |row| row.contains("soak ends in"))
        .await;
    let clusters = browser
        .script("return Array.from(document.querySelectorAll('.cluster h3')).map((h) => h.textContent);")
        .await;
    let clusters: Vec<String> = serde_json::from_value(clusters).expect("headings");
    assert_eq!(clusters.len(), 3, "{clusters:?}");
    assert!(clusters[0].starts_with("This cluster 2 of 2 succeeded"), "{clusters:?}");
    assert!(clusters[1].starts_with("Cluster eu 0 of 2 succeeded"), "{clusters:?}");
    assert!(clusters[2].starts_with("Cluster us 0 of 2 succeeded"), "{clusters:?}");
    browser
        .wait_text("`us` awaiting approval", "#operation-us", |row| row.contains("awaits approval"))
        .await;
    assert_accessible(&browser, "a fleet Apply").await;
    assert!(fits_width(&browser).await, "the page fits 1280×800");
    // The README's picture: taller than 800 so that every cluster is in it.
    browser.resize(1280, 1000).await;
    // Saved under target/ so a test run leaves the tree clean; the README's copy is
    // docs/dashboard.png, refreshed from it by hand.
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    browser.screenshot(&shots.join("dashboard.png")).await;

    // A narrow window: rows become labelled cards, nothing scrolls sideways.
    browser.resize(480, 900).await;
    browser.wait_script("the narrow layout", "return window.innerWidth < 760;").await;
    assert!(fits_width(&browser).await, "the page fits a narrow window");
    let label = browser
        .script("return getComputedStyle(document.querySelector('#operation-us td[data-label=Phase]'), '::before').content;")
        .await;
    assert_eq!(label, json!("\"Phase: \""), "each cell says its column");
    browser.close().await;
}

/// One HTTP/1.1 request as a script sends it, with exactly the headers given (`Host` among
/// them): the status code and the body.
async fn request(
    dashboard: &DashboardProcess,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let address: SocketAddr = dashboard
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("the dashboard's address");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connecting");
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).await.expect("sending the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("reading the response");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response}"));
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn dashboard_on_every_address_refuses_a_forged_host_and_a_foreign_origin() {
    let world = World::new("dash-host").await;
    let ns = world.ns.name.clone();
    world
        .create("first", spec(&ns, FailurePolicy::Halt, 1, vec![("a", config_map("first"))]))
        .await;
    world.wait_apply_phase("first", ApplyPhase::Succeeded).await;

    // Every address: where the guard once checked nothing. The page shows one test namespace.
    let mut dashboard = DashboardProcess::start_with(
        &cluster().kubeconfig,
        &ns,
        &["--address", "0.0.0.0:0", "--allowed-host", "dash.test"],
    )
    .await;
    let port =
        dashboard.url.trim_end_matches('/').rsplit(':').next().unwrap_or_default().to_owned();
    let warning = dashboard.next_line().await;
    assert!(
        warning.contains("warning") && warning.contains(&format!("dash.test:{port}")),
        "the warning names the allowed hosts: {warning}"
    );

    // A page at evil.example whose name now resolves here (DNS rebinding): the browser sends
    // that name as Host, and as Origin on an action.
    let forged = format!("evil.example:{port}");
    let (code, body) = request(&dashboard, "GET", "/", &[("Host", &forged)]).await;
    assert_eq!(code, 421, "{body}");
    assert!(body.contains("--allowed-host"), "the refusal says what to do: {body}");
    let rebound: [(&str, &str); 3] = [
        ("Host", forged.as_str()),
        ("Origin", &format!("http://{forged}")),
        ("X-Baton-Action", "1"),
    ];
    let (code, body) = request(&dashboard, "POST", "/applies/first/stop", &rebound).await;
    assert_eq!(code, 421, "{body}");
    assert!(!world.apply("first").await.spec.stop, "nothing changed");

    // The name the user allowed is answered; an action from another origin through it is not.
    let allowed = format!("dash.test:{port}");
    let (code, body) = request(&dashboard, "GET", "/", &[("Host", &allowed)]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#"data-apply="first""#), "the list: {body}");
    let foreign: [(&str, &str); 3] = [
        ("Host", allowed.as_str()),
        ("Origin", &format!("http://{forged}")),
        ("X-Baton-Action", "1"),
    ];
    let (code, body) = request(&dashboard, "POST", "/applies/first/stop", &foreign).await;
    assert_eq!(code, 403, "{body}");
    assert!(!world.apply("first").await.spec.stop, "nothing changed");
    let own: [(&str, &str); 3] = [
        ("Host", allowed.as_str()),
        ("Origin", &format!("http://{allowed}")),
        ("X-Baton-Action", "1"),
    ];
    let (code, body) = request(&dashboard, "POST", "/applies/first/stop", &own).await;
    assert_eq!(code, 200, "{body}");
    assert!(world.apply("first").await.spec.stop, "the stop was requested");
    assert!(dashboard.running());
}
