//! `kubectl baton dashboard`: a local web page over the rollouts of one namespace, served by
//! the plugin's own process with the user's own kubeconfig, so the user's RBAC applies to every
//! read and every action, and nothing is installed in the cluster.
//!
//! Reads come from two shared watches ([`events::Watches`]); pages are rendered on the server
//! ([`view`]) and pushed to the browser as server-sent events after each change. Actions are the
//! plugin's own calls ([`crate::plugin::Plugin`]): the same patches, the same words, and the API
//! server's refusal passed on as it said it. The operator is not involved and sees no request.
//!
//! The server acts with the user's credentials, so it refuses what a foreign web page could make
//! a browser send: a request whose `Host` is not the loopback address it listens on (DNS
//! rebinding), and an action (always a POST) without the [`ACTION_HEADER`] a page on another
//! origin cannot set without a CORS preflight the server never grants, or with a foreign
//! `Origin`.

pub mod events;
pub mod view;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::reflector::ObjectRef;

use crate::crd::{Apply, LABEL_APPLY, Operation};
use crate::plugin::Plugin;
use crate::{Error, Result};
use events::Watches;

/// Where the dashboard listens unless told otherwise: loopback only.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:3210";
/// The header every action must carry: a cross-origin page cannot add it to a simple request.
pub const ACTION_HEADER: &str = "x-baton-action";

const STYLESHEET: &str = include_str!("assets/dashboard.css");
const SCRIPT: &str = include_str!("assets/dashboard.js");

/// What every request handler shares.
struct Dashboard {
    /// The namespace shown.
    namespace: String,
    /// The namespace's Applies and Operations, as the user's watches see them.
    watches: Watches,
    /// The plugin, acting as the user.
    plugin: Plugin,
    /// The address bound, for the `Host` check.
    address: SocketAddr,
}

type Shared = Arc<Dashboard>;

/// Serves the dashboard for `namespace` on `address` until interrupted, after writing its URL
/// to `out` (one line: a script may read it to learn the port when `address` ends in `:0`).
pub async fn serve(
    client: Client,
    namespace: &str,
    address: SocketAddr,
    out: &mut impl Write,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Io { path: address.to_string(), source })?;
    let address =
        listener.local_addr().map_err(|source| Error::Io { path: address.to_string(), source })?;
    let dashboard = Arc::new(Dashboard {
        namespace: namespace.to_owned(),
        watches: Watches::start(&client, namespace),
        plugin: Plugin::new(client, namespace),
        address,
    });
    let io_error = |source| Error::Io { path: "standard output".into(), source };
    writeln!(
        out,
        "kubectl baton dashboard: http://{address}/ (namespace {namespace}; Ctrl-C stops)"
    )
    .map_err(io_error)?;
    if !address.ip().is_loopback() {
        writeln!(
            out,
            "kubectl baton dashboard: warning: listening beyond loopback; whoever reaches {address} acts with your credentials"
        )
        .map_err(io_error)?;
    }
    out.flush().map_err(io_error)?;
    axum::serve(listener, router(dashboard))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|source| Error::Io { path: address.to_string(), source })
}

fn router(dashboard: Shared) -> Router {
    Router::new()
        .route("/", get(list_page))
        .route("/events", get(list_events))
        .route("/applies/{name}", get(apply_page))
        .route("/applies/{name}/events", get(apply_events))
        .route("/applies/{name}/stop", post(stop))
        .route("/applies/{name}/resume", post(resume))
        .route("/applies/{name}/dismiss/{id}", post(dismiss))
        .route("/applies/{name}/approve/{operation}", post(approve))
        .route("/assets/dashboard.css", get(stylesheet))
        .route("/assets/dashboard.js", get(script))
        .layer(middleware::from_fn_with_state(dashboard.clone(), guard))
        .with_state(dashboard)
}

/// Refuses requests a foreign page could have made the browser send (see the module header).
async fn guard(State(dashboard): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(refusal) = refusal(dashboard.address, request.method(), request.headers()) {
        return (StatusCode::FORBIDDEN, refusal).into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // The page is never framed, and the browser sniffs nothing.
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    response
}

/// Why a request must be refused, if it must: see the module header.
fn refusal(address: SocketAddr, method: &Method, headers: &HeaderMap) -> Option<&'static str> {
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok()).unwrap_or_default();
    if address.ip().is_loopback() && !loopback_hosts(address).iter().any(|known| known == host) {
        return Some("refused: the Host header does not name this dashboard's loopback address");
    }
    if method == Method::POST {
        if !headers.contains_key(ACTION_HEADER) {
            return Some("refused: an action must come from the dashboard's own page");
        }
        let origin = headers.get(header::ORIGIN).and_then(|origin| origin.to_str().ok());
        if origin.is_some_and(|origin| origin != format!("http://{host}")) {
            return Some("refused: an action from another origin");
        }
    }
    None
}

/// The `Host` values a browser sends for `address`: the address itself, or `localhost`.
fn loopback_hosts(address: SocketAddr) -> Vec<String> {
    let port = address.port();
    vec![address.to_string(), format!("localhost:{port}")]
}

async fn list_page(State(dashboard): State<Shared>) -> Html<String> {
    dashboard.watches.first_list().await;
    Html(view::page(
        &format!("Applies in {}", dashboard.namespace),
        "/events",
        &list_fragment(&dashboard),
    ))
}

async fn apply_page(State(dashboard): State<Shared>, Path(name): Path<String>) -> Html<String> {
    dashboard.watches.first_list().await;
    Html(view::page(
        &format!("apply/{name}"),
        &format!("/applies/{}/events", view::path_segment(&name)),
        &apply_fragment(&dashboard, &name),
    ))
}

fn list_fragment(dashboard: &Dashboard) -> String {
    let applies: Vec<Apply> =
        dashboard.watches.applies.state().iter().map(|apply| (**apply).clone()).collect();
    view::applies_list(
        &dashboard.namespace,
        &applies,
        &dashboard.watches.errors(),
        Timestamp::now(),
    )
}

fn apply_fragment(dashboard: &Dashboard, name: &str) -> String {
    let errors = dashboard.watches.errors();
    let key = ObjectRef::<Apply>::new(name).within(&dashboard.namespace);
    let Some(apply) = dashboard.watches.applies.get(&key) else {
        return view::apply_missing(&dashboard.namespace, name, &errors);
    };
    let operations: Vec<Operation> = dashboard
        .watches
        .operations
        .state()
        .iter()
        .filter(|op| {
            op.metadata.labels.as_ref().and_then(|l| l.get(LABEL_APPLY)).map(String::as_str)
                == Some(name)
        })
        .map(|op| (**op).clone())
        .collect();
    view::apply_detail(&apply, &operations, &errors, Timestamp::now())
}

async fn list_events(
    State(dashboard): State<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    live(dashboard, list_fragment)
}

async fn apply_events(
    State(dashboard): State<Shared>,
    Path(name): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    live(dashboard, move |dashboard| apply_fragment(dashboard, &name))
}

/// The fragment rendered again after every change the watches see; a burst of changes while a
/// render is being sent collapses into one render.
fn live<F>(dashboard: Shared, render: F) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn(&Dashboard) -> String + Send + 'static,
{
    let changes = dashboard.watches.subscribe();
    let stream = futures::stream::unfold(
        (changes, dashboard, render),
        |(mut changes, dashboard, render)| async move {
            changes.changed().await.ok()?;
            let event = Event::default().event("view").data(render(&dashboard));
            Some((Ok(event), (changes, dashboard, render)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn stop(State(dashboard): State<Shared>, Path(name): Path<String>) -> Response {
    answer(dashboard.plugin.stop(&name).await)
}

async fn resume(State(dashboard): State<Shared>, Path(name): Path<String>) -> Response {
    answer(dashboard.plugin.resume(&name).await)
}

async fn dismiss(
    State(dashboard): State<Shared>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    answer(dashboard.plugin.dismiss_id(&name, &id).await)
}

async fn approve(
    State(dashboard): State<Shared>,
    Path((name, operation)): Path<(String, String)>,
) -> Response {
    answer(dashboard.plugin.approve(&name, &operation).await)
}

/// An action's outcome as the page shows it: the plugin's line, or the refusal with the status
/// the API server gave it.
fn answer(outcome: Result<String>) -> Response {
    match outcome {
        Ok(line) => (StatusCode::OK, line).into_response(),
        Err(error) => {
            let (status, text) = refusal_of(&error);
            (status, text).into_response()
        }
    }
}

/// The HTTP status and words for a failed action: the API server's own code and message when it
/// refused, after what the plugin was doing.
pub fn refusal_of(error: &Error) -> (StatusCode, String) {
    match error {
        Error::Kube { context, source: kube::Error::Api(status) } => (
            StatusCode::from_u16(status.code).unwrap_or(StatusCode::BAD_GATEWAY),
            format!("{context}: {} ({})", status.message, status.reason),
        ),
        Error::NotFound(message) => (StatusCode::NOT_FOUND, message.clone()),
        Error::Conflict(message) => (StatusCode::CONFLICT, message.clone()),
        other => (StatusCode::BAD_GATEWAY, other.to_string()),
    }
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET)
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).expect("a header value"));
        }
        headers
    }

    #[test]
    fn reads_need_only_the_loopback_host() {
        let address: SocketAddr = "127.0.0.1:3210".parse().expect("an address");
        assert_eq!(refusal(address, &Method::GET, &headers(&[("host", "127.0.0.1:3210")])), None);
        assert_eq!(refusal(address, &Method::GET, &headers(&[("host", "localhost:3210")])), None);
        assert!(
            refusal(address, &Method::GET, &headers(&[("host", "evil.example:3210")])).is_some()
        );
        assert!(refusal(address, &Method::GET, &headers(&[])).is_some());
    }

    #[test]
    fn actions_need_the_header_and_no_foreign_origin() {
        let address: SocketAddr = "127.0.0.1:3210".parse().expect("an address");
        let host = ("host", "127.0.0.1:3210");
        assert!(refusal(address, &Method::POST, &headers(&[host])).is_some());
        assert_eq!(refusal(address, &Method::POST, &headers(&[host, (ACTION_HEADER, "1")])), None);
        let same = ("origin", "http://127.0.0.1:3210");
        assert_eq!(
            refusal(address, &Method::POST, &headers(&[host, (ACTION_HEADER, "1"), same])),
            None
        );
        let foreign = ("origin", "http://evil.example");
        assert!(
            refusal(address, &Method::POST, &headers(&[host, (ACTION_HEADER, "1"), foreign]))
                .is_some()
        );
    }

    #[test]
    fn a_refusal_keeps_the_api_servers_code_and_words() {
        let status = kube::core::Status {
            code: 403,
            message: "applies.baton.dev \"a\" is forbidden: User \"u\" cannot patch resource"
                .into(),
            reason: "Forbidden".into(),
            ..kube::core::Status::default()
        };
        let error = Error::Kube {
            context: "patching apply `a`".into(),
            source: kube::Error::Api(Box::new(status)),
        };
        let (code, text) = refusal_of(&error);
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert_eq!(
            text,
            "patching apply `a`: applies.baton.dev \"a\" is forbidden: User \"u\" cannot patch resource (Forbidden)"
        );
    }
}
