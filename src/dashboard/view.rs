//! The dashboard's HTML, rendered on the server from Applies and Operations as the watches hold
//! them. Pure: every function takes the objects and the clock and returns text, so what a person
//! sees is tested without a browser or an API server.
//!
//! Accessibility rules kept here, not in the stylesheet: a phase is always written out in words
//! beside its mark (colour and the mark only repeat it), every table has a caption and column
//! headers, every action is a `<button>` whose text names what it acts on, and the live region
//! is announced politely.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{Apply, ApplyPhase, Operation, OperationEntry, OperationPhase, OperationStatus};
use crate::lifecycle::awaits_approval;
use crate::plugin::age;

/// The condition the operator sets when a dismissal names a stale or unknown error id.
const DISMISSAL_REJECTED: &str = "DismissalRejected";

/// Escapes text for HTML element content and quoted attribute values. Carriage returns become
/// character references: server-sent events cannot carry them raw.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            '\r' => escaped.push_str("&#13;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Percent-encodes a path segment (object names are DNS labels, error ids `<op>-<n>`, but the
/// page must not break on anything else).
pub fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A phase as the page shows it: a mark (decoration, hidden from screen readers) and the word.
/// The class only picks a colour; the word and the mark already tell the phases apart.
fn phase_badge(phase: &str) -> String {
    let mark = match phase {
        "Pending" => "○",
        "Running" => "▶",
        "Paused" => "‖",
        "Succeeded" => "✓",
        "Failed" => "✕",
        "Stopped" => "■",
        "Skipped" => "↷",
        _ => "·",
    };
    format!(
        r#"<span class="phase phase-{class}"><span class="mark" aria-hidden="true">{mark}</span> {phase}</span>"#,
        class = phase.to_ascii_lowercase(),
        phase = escape(phase),
    )
}

/// A point in time: the kubectl-style age (or time left) now, with the instant for the page's
/// script to keep counting without asking the server.
fn time_element(at: &Time, now: Timestamp, future: bool) -> String {
    let text = if future { time_left(at, now) } else { age(Some(at), now) };
    format!(
        r#"<time datetime="{at}" data-relative="{direction}" title="{at}">{text}</time>"#,
        at = at.0,
        direction = if future { "future" } else { "past" },
    )
}

fn time_left(until: &Time, now: Timestamp) -> String {
    let seconds = until.0.duration_since(now).as_secs();
    if seconds <= 0 {
        return "now".to_owned();
    }
    match seconds {
        0..60 => format!("in {seconds}s"),
        60..3600 => format!("in {}m{}s", seconds / 60, seconds % 60),
        _ => format!("in {}h{}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// A full page: `fragment` inside the live region, which the script replaces with what the
/// server sends on `events` after every change the watches see.
pub fn page(title: &str, events: &str, fragment: &str) -> String {
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · baton</title>
<link rel="stylesheet" href="/assets/dashboard.css">
</head>
<body data-events="{events}">
<a class="skip" href="#live">Skip to content</a>
<header>
<nav aria-label="Main"><a href="/">baton</a></nav>
<p id="connection" role="status" aria-live="polite">connecting…</p>
</header>
<div id="notice" role="status" aria-live="polite" tabindex="-1"></div>
<main id="live" tabindex="-1">
{fragment}
</main>
<script src="/assets/dashboard.js"></script>
</body>
</html>
"##,
        title = escape(title),
        events = escape(events),
    )
}

/// A watch that cannot read (forbidden, gone): said on the page, in the server's words.
fn watch_errors(errors: &[String]) -> String {
    errors
        .iter()
        .map(|error| format!(r#"<p class="banner" role="alert">{}</p>"#, escape(error)))
        .collect()
}

/// The list of Applies in `namespace`, newest first, with phase, progress, error and age.
pub fn applies_list(
    namespace: &str,
    applies: &[Apply],
    errors: &[String],
    now: Timestamp,
) -> String {
    let mut sorted: Vec<&Apply> = applies.iter().collect();
    sorted.sort_by(|a, b| {
        let created = |apply: &Apply| apply.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(b).cmp(&created(a)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let mut html = format!(
        r#"<h1>Applies <span class="subtle">in namespace {}</span></h1>
{}"#,
        escape(namespace),
        watch_errors(errors)
    );
    if sorted.is_empty() {
        html.push_str(r#"<p class="empty">No Applies in this namespace.</p>"#);
        return html;
    }
    html.push_str(&format!(
        r#"<table class="applies">
<caption>{count} {noun} in namespace {namespace}, newest first</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Phase</th><th scope="col">Progress</th><th scope="col">Running</th><th scope="col">Error</th><th scope="col">Age</th></tr></thead>
<tbody>
"#,
        count = sorted.len(),
        noun = if sorted.len() == 1 { "Apply" } else { "Applies" },
        namespace = escape(namespace),
    ));
    for apply in sorted {
        let name = apply.metadata.name.clone().unwrap_or_default();
        let status = apply.status.clone().unwrap_or_default();
        let phase = status.phase.map_or("Pending", ApplyPhase::as_str);
        let error = status.error.as_ref().map_or_else(
            || "—".to_owned(),
            |error| {
                format!(
                    "<code>{}</code> {}",
                    escape(&error.id),
                    escape(&first_line(&error.message))
                )
            },
        );
        let created = apply
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(|| "—".to_owned(), |at| time_element(at, now, false));
        html.push_str(&format!(
            r#"<tr data-apply="{name}" data-phase="{phase}"><th scope="row" data-label="Name"><a href="/applies/{link}">{name}</a></th><td data-label="Phase">{badge}</td><td data-label="Progress">{progress}</td><td data-label="Running">{current}</td><td data-label="Error">{error}</td><td data-label="Age">{created}</td></tr>
"#,
            name = escape(&name),
            link = path_segment(&name),
            badge = phase_badge(phase),
            progress = escape(or_dash(&status.progress)),
            current = escape(or_dash(&status.current)),
        ));
    }
    html.push_str("</tbody>\n</table>\n");
    html
}

/// One Apply: its summary, the actions it allows now, its current error, and its operations in
/// order, grouped by cluster. Operations not created yet are shown from the spec as Pending.
pub fn apply_detail(
    apply: &Apply,
    operations: &[Operation],
    errors: &[String],
    now: Timestamp,
) -> String {
    let name = apply.metadata.name.clone().unwrap_or_default();
    let link = format!("/applies/{}", path_segment(&name));
    let status = apply.status.clone().unwrap_or_default();
    let phase = status.phase.map_or("Pending", ApplyPhase::as_str);
    let mut html = format!(
        r#"<h1>apply/{name} {badge}</h1>
{errors}<section aria-labelledby="summary-heading">
<h2 id="summary-heading">Summary</h2>
<dl class="summary">
<div><dt>Progress</dt><dd>{progress} succeeded</dd></div>
<div><dt>Running</dt><dd>{current}</dd></div>
<div><dt>Message</dt><dd>{message}</dd></div>
<div><dt>Stop</dt><dd>{stop}</dd></div>
<div><dt>Age</dt><dd>{created}</dd></div>
</dl>
"#,
        name = escape(&name),
        badge = phase_badge(phase),
        errors = watch_errors(errors),
        progress = escape(or_dash(&status.progress)),
        current = escape(or_dash(&status.current)),
        message = escape(or_dash(&status.message)),
        stop = stop_state(apply, now),
        created = apply
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(|| "—".to_owned(), |at| time_element(at, now, false)),
    );
    // One of stop and resume, by the intent in the spec: the same patch as the plugin's.
    let (action, label) = if apply.spec.stop {
        ("resume", format!("Resume {name}"))
    } else {
        ("stop", format!("Stop {name}"))
    };
    html.push_str(&format!(
        r#"<div class="actions" role="group" aria-label="Rollout actions">{}</div>
</section>
"#,
        button(&format!("action-{action}"), &format!("{link}/{action}"), &label, action == "stop")
    ));
    html.push_str(&error_section(apply, &link, now));
    html.push_str(&operations_section(apply, operations, &link, now));
    html
}

/// The stop: whether one is asked for, when the operator saw it and whether it completed.
fn stop_state(apply: &Apply, now: Timestamp) -> String {
    let recorded = apply.status.as_ref().and_then(|status| status.stop.clone());
    match (apply.spec.stop, recorded) {
        (false, _) => "not requested".to_owned(),
        (true, Some(stop)) => {
            let requested = stop
                .requested_at
                .as_ref()
                .map_or_else(String::new, |at| format!(" {} ago", time_element(at, now, false)));
            match stop.completed_at {
                Some(at) => format!(
                    "requested{requested}; completed {} ago: nothing runs until resumed",
                    time_element(&at, now, false)
                ),
                None => {
                    format!("requested{requested}; running operations stop at their next check")
                }
            }
        }
        (true, None) => "requested; not yet seen by the operator".to_owned(),
    }
}

/// The current error with its id and a button dismissing exactly that id, the last dismissal,
/// and the operator's word on a rejected dismissal.
fn error_section(apply: &Apply, link: &str, now: Timestamp) -> String {
    let status = apply.status.clone().unwrap_or_default();
    let mut html = String::new();
    if let Some(error) = &status.error {
        let at = error
            .at
            .as_ref()
            .map_or_else(String::new, |at| format!(", {} ago", time_element(at, now, false)));
        html.push_str(&format!(
            r#"<section class="error" aria-labelledby="error-heading">
<h2 id="error-heading"><span class="mark" aria-hidden="true">✕</span> Error <code>{id}</code></h2>
<p>Operation <strong>{operation}</strong>: {reason}{at}</p>
<p class="message">{message}</p>
<div class="actions" role="group" aria-label="Error actions">{button}</div>
</section>
"#,
            id = escape(&error.id),
            operation = escape(&error.operation),
            reason = escape(&error.reason),
            message = escape(&error.message),
            button = button(
                "action-dismiss",
                &format!("{link}/dismiss/{}", path_segment(&error.id)),
                &format!("Dismiss error {}", error.id),
                false
            ),
        ));
    }
    if let Some(dismissed) = &status.last_dismissed_error {
        html.push_str(&format!(
            r#"<p class="note">Last dismissed error: <code>{}</code>, {} ago</p>
"#,
            escape(&dismissed.id),
            time_element(&dismissed.at, now, false)
        ));
    }
    let rejected = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == DISMISSAL_REJECTED && condition.status == "True");
    if let Some(rejected) = rejected {
        html.push_str(&format!(
            r#"<p class="note" role="note">Dismissal rejected: {}</p>
"#,
            escape(&rejected.message)
        ));
    }
    html
}

/// A cluster (`None`: the Apply's own) and its operations, with their positions in the spec.
type ClusterGroup<'a> = (Option<String>, Vec<(usize, &'a OperationEntry)>);

/// The operations in spec order, grouped by cluster in the order clusters first appear.
fn operations_section(
    apply: &Apply,
    operations: &[Operation],
    link: &str,
    now: Timestamp,
) -> String {
    let mut groups: Vec<ClusterGroup<'_>> = Vec::new();
    for (index, entry) in apply.spec.operations.iter().enumerate() {
        let cluster = entry.target.cluster.clone();
        match groups.iter_mut().find(|(existing, _)| *existing == cluster) {
            Some((_, entries)) => entries.push((index, entry)),
            None => groups.push((cluster, vec![(index, entry)])),
        }
    }
    let mut html = format!(
        r#"<section aria-labelledby="operations-heading">
<h2 id="operations-heading">Operations <span class="subtle">{} in {} cluster{}</span></h2>
"#,
        apply.spec.operations.len(),
        groups.len(),
        if groups.len() == 1 { "" } else { "s" }
    );
    for (group, (cluster, entries)) in groups.iter().enumerate() {
        let title = match cluster {
            Some(cluster) => format!("Cluster {}", escape(cluster)),
            None => "This cluster".to_owned(),
        };
        let rows: Vec<(usize, &OperationEntry, OperationStatus)> = entries
            .iter()
            .map(|(index, entry)| {
                let status = operations
                    .iter()
                    .find(|op| op.spec.name == entry.name)
                    .and_then(|op| op.status.clone())
                    .unwrap_or_default();
                (*index, *entry, status)
            })
            .collect();
        let succeeded =
            rows.iter().filter(|(_, _, status)| status.phase == OperationPhase::Succeeded).count();
        html.push_str(&format!(
            r#"<section class="cluster" aria-labelledby="cluster-{group}">
<h3 id="cluster-{group}">{title} <span class="subtle">{succeeded} of {total} succeeded</span></h3>
<table class="operations">
<caption class="visually-hidden">Operations on {caption}, in rollout order</caption>
<thead><tr><th scope="col">#</th><th scope="col">Operation</th><th scope="col">Namespace</th><th scope="col">Phase</th><th scope="col">Attempt</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">Gate</th></tr></thead>
<tbody>
"#,
            total = rows.len(),
            caption = title.to_lowercase(),
        ));
        for (index, entry, status) in rows {
            html.push_str(&operation_row(apply, index, entry, &status, link, now));
        }
        html.push_str("</tbody>\n</table>\n</section>\n");
    }
    html.push_str("</section>\n");
    html
}

fn operation_row(
    apply: &Apply,
    index: usize,
    entry: &OperationEntry,
    status: &OperationStatus,
    link: &str,
    now: Timestamp,
) -> String {
    let phase = status.phase.as_str();
    format!(
        r##"<tr id="operation-{id}" data-operation="{name}" data-phase="{phase}"><td data-label="#">{index}</td><th scope="row" data-label="Operation">{name}</th><td data-label="Namespace">{namespace}</td><td data-label="Phase">{badge}</td><td data-label="Attempt">{attempt}</td><td data-label="Reason">{reason}</td><td data-label="Message" class="message">{message}</td><td data-label="Gate">{gate}</td></tr>
    "##,
        id = path_segment(&entry.name),
        name = escape(&entry.name),
        namespace = escape(&entry.target.namespace),
        badge = phase_badge(phase),
        attempt = status.attempt,
        reason = escape(status.reason.as_deref().unwrap_or("—")),
        message = escape(status.message.as_deref().filter(|m| !m.is_empty()).unwrap_or("—")),
        gate = gate(apply, entry, status, link, now),
    )
}

/// What holds the operation: an approval it awaits (with the button giving it), the approval it
/// got, or the soak it is in.
fn gate(
    apply: &Apply,
    entry: &OperationEntry,
    status: &OperationStatus,
    link: &str,
    now: Timestamp,
) -> String {
    let mut parts = Vec::new();
    if awaits_approval(&apply.spec, &entry.name, status.phase) {
        parts.push(format!(
            r#"<span class="gate-wait"><span class="mark" aria-hidden="true">◆</span> awaits approval</span> {}"#,
            button(
                &format!("approve-{}", path_segment(&entry.name)),
                &format!("{link}/approve/{}", path_segment(&entry.name)),
                &format!("Approve {}", entry.name),
                false
            )
        ));
    } else if let Some(record) = &status.approval {
        parts.push(format!("approved by {}", escape(&record.by)));
    } else if entry.approval.is_some() && apply.spec.approvals.contains(&entry.name) {
        parts.push("approved".to_owned());
    }
    if let Some(until) = &status.soak_until
        && status.phase == OperationPhase::Running
    {
        parts.push(format!("soak ends {}", time_element(until, now, true)));
    } else if let Some(soak) = &entry.soak
        && !status.phase.is_terminal()
    {
        parts.push(format!("soaks {}", escape(soak)));
    }
    if parts.is_empty() { "—".to_owned() } else { parts.join("<br>") }
}

/// An action button: the script POSTs to `action` and shows the answer in the notice region.
fn button(id: &str, action: &str, label: &str, warns: bool) -> String {
    format!(
        r#"<button type="button" id="{id}" class="{class}" data-action="{action}">{label}</button>"#,
        id = escape(id),
        class = if warns { "warn" } else { "primary" },
        action = escape(action),
        label = escape(label),
    )
}

/// What the page says for an Apply the watch does not hold (never created, or deleted).
pub fn apply_missing(namespace: &str, name: &str, errors: &[String]) -> String {
    format!(
        r#"<h1>apply/{name}</h1>
{errors}<p class="empty">No Apply named {name} in namespace {namespace} (it may have been deleted). <a href="/">All Applies</a></p>
"#,
        name = escape(name),
        namespace = escape(namespace),
        errors = watch_errors(errors),
    )
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "—" } else { text }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        ApplyError, ApplySpec, ApplyStatus, Approval, FailurePolicy, OperationSpec, StopStatus,
        Target,
    };

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("a valid instant"))
    }

    fn now() -> Timestamp {
        Timestamp::from_second(100_000).expect("a valid instant")
    }

    fn entry(name: &str, cluster: Option<&str>) -> OperationEntry {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "target": {"namespace": "apps", "cluster": cluster},
        }))
        .expect("an operation entry")
    }

    fn apply(entries: Vec<OperationEntry>) -> Apply {
        let spec = ApplySpec {
            operations: entries,
            on_failure: FailurePolicy::Pause,
            ..serde_json::from_value(serde_json::json!({"operations": []})).expect("a spec")
        };
        let mut apply = Apply::new("rings", spec);
        apply.metadata.creation_timestamp = Some(at(99_000));
        apply
    }

    fn operation(entry: &OperationEntry, index: u32, status: OperationStatus) -> Operation {
        let spec = OperationSpec {
            index,
            name: entry.name.clone(),
            target: Target {
                namespace: entry.target.namespace.clone(),
                cluster: entry.target.cluster.clone(),
            },
            manifests: Vec::new(),
            timeout: "10m".into(),
            approval: entry.approval,
            soak: entry.soak.clone(),
            values_error: None,
        };
        let mut operation = Operation::new(&format!("rings-{}", entry.name), spec);
        operation.status = Some(status);
        operation
    }

    fn running(attempt: u32) -> OperationStatus {
        OperationStatus { phase: OperationPhase::Running, attempt, ..OperationStatus::default() }
    }

    #[test]
    fn escaping_leaves_no_markup_and_no_carriage_return() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert!(!escape("one\r\ntwo").contains('\r'));
        assert_eq!(path_segment("b-1"), "b-1");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn every_phase_is_written_in_words_beside_a_hidden_mark() {
        for phase in ["Pending", "Running", "Paused", "Succeeded", "Failed", "Stopped", "Skipped"] {
            let badge = phase_badge(phase);
            assert!(badge.contains(&format!("</span> {phase}</span>")), "{badge}");
            assert!(badge.contains(r#"class="mark" aria-hidden="true""#), "{badge}");
        }
        let marks: std::collections::HashSet<String> =
            ["Pending", "Running", "Paused", "Succeeded", "Failed", "Stopped"]
                .iter()
                .map(|phase| {
                    phase_badge(phase)
                        .split("aria-hidden=\"true\">")
                        .nth(1)
                        .unwrap_or_default()
                        .chars()
                        .next()
                        .map(String::from)
                        .unwrap_or_default()
                })
                .collect();
        assert_eq!(marks.len(), 6, "each phase has its own mark: {marks:?}");
    }

    #[test]
    fn the_list_shows_each_apply_with_phase_progress_error_and_age() {
        let mut old = apply(vec![entry("dev", None)]);
        old.metadata.name = Some("old".into());
        old.metadata.creation_timestamp = Some(at(10_000));
        old.status = Some(ApplyStatus {
            phase: Some(ApplyPhase::Paused),
            progress: "0/1".into(),
            error: Some(ApplyError {
                id: "dev-1".into(),
                operation: "dev".into(),
                reason: "DispatchFailed".into(),
                message: "namespace <eu> not found\nmore".into(),
                at: None,
            }),
            ..ApplyStatus::default()
        });
        let new = apply(vec![entry("dev", None)]);
        let html = applies_list("team-a", &[old, new], &[], now());
        assert!(html.contains("<caption>2 Applies in namespace team-a"), "{html}");
        let rings = html.find(r#"data-apply="rings""#).expect("rings is listed");
        let old_row = html.find(r#"data-apply="old""#).expect("old is listed");
        assert!(rings < old_row, "newest first");
        assert!(html.contains("<code>dev-1</code> namespace &lt;eu&gt; not found<"), "{html}");
        assert!(html.contains("> Paused</span>"));
        assert!(html.contains(">16m40s</time>"), "the age, kubectl style: {html}");
        assert!(html.contains(r#"<th scope="col">Phase</th>"#));
    }

    #[test]
    fn an_apply_groups_its_operations_by_cluster_in_rollout_order() {
        let entries = vec![
            entry("dev", None),
            entry("eu-1", Some("eu")),
            entry("us", Some("us")),
            entry("eu-2", Some("eu")),
        ];
        let apply = apply(entries.clone());
        let operations = vec![
            operation(
                &entries[0],
                0,
                OperationStatus {
                    phase: OperationPhase::Succeeded,
                    attempt: 1,
                    ..OperationStatus::default()
                },
            ),
            operation(&entries[1], 1, running(2)),
        ];
        let html = apply_detail(&apply, &operations, &[], now());
        let position =
            |needle: &str| html.find(needle).unwrap_or_else(|| panic!("{needle} missing:\n{html}"));
        assert!(position("This cluster") < position("Cluster eu"));
        assert!(position("Cluster eu") < position("Cluster us"));
        assert!(position(r#"data-operation="eu-1""#) < position(r#"data-operation="eu-2""#));
        assert!(position(r#"data-operation="eu-2""#) < position("Cluster us"), "eu-2 sits with eu");
        assert!(html.contains("1 of 1 succeeded"));
        assert!(html.contains("0 of 2 succeeded"));
        assert!(html.contains("4 in 3 clusters"));
        let eu_1 = &html[position(r#"data-operation="eu-1""#)..];
        assert!(eu_1.starts_with(r#"data-operation="eu-1" data-phase="Running""#));
        assert!(eu_1.contains(r#"<td data-label="Attempt">2</td>"#));
        // `us` has no Operation object yet: Pending, from the spec.
        assert!(html.contains(r#"data-operation="us" data-phase="Pending""#));
    }

    #[test]
    fn an_awaited_approval_has_its_button_and_a_granted_one_does_not() {
        let mut prod = entry("prod", None);
        prod.approval = Some(Approval::Required);
        let mut apply = apply(vec![prod.clone()]);
        let html = apply_detail(&apply, &[], &[], now());
        assert!(html.contains("awaits approval"), "{html}");
        assert!(
            html.contains(r#"data-action="/applies/rings/approve/prod">Approve prod</button>"#),
            "{html}"
        );
        apply.spec.approvals.push("prod".into());
        let html = apply_detail(&apply, &[], &[], now());
        assert!(!html.contains("Approve prod"), "{html}");
        assert!(html.contains("approved"));
    }

    #[test]
    fn a_soak_shows_when_it_ends() {
        let mut canary = entry("canary", None);
        canary.soak = Some("5m".into());
        let apply = apply(vec![canary.clone()]);
        let status = OperationStatus { soak_until: Some(at(100_090)), ..running(1) };
        let html = apply_detail(&apply, &[operation(&canary, 0, status)], &[], now());
        assert!(
            html.contains(
                r#"soak ends <time datetime="1970-01-02T03:48:10Z" data-relative="future""#
            ),
            "{html}"
        );
        assert!(html.contains(">in 1m30s</time>"), "{html}");
    }

    #[test]
    fn the_error_is_shown_with_its_id_and_a_button_dismissing_that_id() {
        let mut apply = apply(vec![entry("dev", None)]);
        apply.status = Some(ApplyStatus {
            phase: Some(ApplyPhase::Paused),
            error: Some(ApplyError {
                id: "dev-3".into(),
                operation: "dev".into(),
                reason: "Timeout".into(),
                message: "not healthy after 10m".into(),
                at: Some(at(99_900)),
            }),
            ..ApplyStatus::default()
        });
        let html = apply_detail(&apply, &[], &[], now());
        assert!(html.contains("Error <code>dev-3</code>"), "{html}");
        assert!(
            html.contains(
                r#"data-action="/applies/rings/dismiss/dev-3">Dismiss error dev-3</button>"#
            ),
            "{html}"
        );
        assert!(html.contains("not healthy after 10m"));
    }

    #[test]
    fn stop_and_resume_follow_the_spec_and_the_stop_state_is_said() {
        let mut apply = apply(vec![entry("dev", None)]);
        let html = apply_detail(&apply, &[], &[], now());
        assert!(html.contains(">Stop rings</button>") && !html.contains("Resume rings"));
        assert!(html.contains("<dd>not requested</dd>"));
        apply.spec.stop = true;
        let html = apply_detail(&apply, &[], &[], now());
        assert!(html.contains(">Resume rings</button>") && !html.contains(">Stop rings<"));
        assert!(html.contains("not yet seen by the operator"));
        apply.status = Some(ApplyStatus {
            stop: Some(StopStatus {
                requested_at: Some(at(99_990)),
                completed_at: Some(at(99_995)),
            }),
            ..ApplyStatus::default()
        });
        let html = apply_detail(&apply, &[], &[], now());
        assert!(html.contains("completed <time"), "{html}");
    }

    #[test]
    fn watch_errors_are_alerts_in_the_servers_words() {
        let html = applies_list("ns", &[], &["watching applies: \"x\" is forbidden".into()], now());
        assert!(html.contains(
            r#"<p class="banner" role="alert">watching applies: &quot;x&quot; is forbidden</p>"#
        ));
    }

    #[test]
    fn the_page_has_a_language_a_viewport_landmarks_and_a_polite_live_status() {
        let html = page("Applies", "/events", "<h1>x</h1>");
        for needle in [
            r#"<html lang="en">"#,
            r#"name="viewport""#,
            "<main id=\"live\"",
            r#"<nav aria-label="Main">"#,
            r#"id="notice" role="status" aria-live="polite""#,
            r#"data-events="/events""#,
        ] {
            assert!(html.contains(needle), "{needle} missing");
        }
    }
}
