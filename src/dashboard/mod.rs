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
//! a browser send, on every address it may listen on:
//! - a request whose `Host` is not on its allow-list ([`AllowedHosts`]: the loopback names with
//!   its port, the address it is bound to, and the names given with `--allowed-host`). A page
//!   served from a name the attacker controls can have that name resolve to this dashboard (DNS
//!   rebinding), but the browser then sends the attacker's name as `Host`;
//! - an action (always a POST) without the [`ACTION_HEADER`], which a page on another origin
//!   cannot set without a CORS preflight the server never grants, or with an `Origin` that is not
//!   `http://` and a name on the allow-list. The `Origin` is never compared with the request's
//!   own `Host`: under DNS rebinding both name the attacker.

pub mod events;
pub mod view;

use std::convert::Infallible;
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
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
/// The names a browser on the same machine uses for the dashboard, always on its allow-list.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];
/// The port a `Host` or `Origin` without one means (the dashboard speaks plain HTTP).
const HTTP_PORT: u16 = 80;

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
    /// The `Host` names requests must carry.
    allowed: AllowedHosts,
}

type Shared = Arc<Dashboard>;

/// Serves the dashboard for `namespace` on `address` until interrupted, after writing its URL
/// to `out` (one line: a script may read it to learn the port when `address` ends in `:0`).
/// Requests must name it by a loopback name, the address bound, or one of `allowed_hosts`.
pub async fn serve(
    client: Client,
    namespace: &str,
    address: SocketAddr,
    allowed_hosts: &[AllowedHost],
    out: &mut impl Write,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Io { path: address.to_string(), source })?;
    let address =
        listener.local_addr().map_err(|source| Error::Io { path: address.to_string(), source })?;
    let allowed = AllowedHosts::new(address, allowed_hosts);
    let io_error = |source| Error::Io { path: "standard output".into(), source };
    writeln!(
        out,
        "kubectl baton dashboard: http://{}/ (namespace {namespace}; Ctrl-C stops)",
        browsable(address)
    )
    .map_err(io_error)?;
    if !address.ip().is_loopback() {
        writeln!(
            out,
            "kubectl baton dashboard: warning: listening beyond loopback on {address}; whoever reaches it acts with your credentials. It answers only to Host {allowed}; add the name you browse to with --allowed-host NAME[:PORT]"
        )
        .map_err(io_error)?;
    }
    let dashboard = Arc::new(Dashboard {
        namespace: namespace.to_owned(),
        watches: Watches::start(&client, namespace),
        plugin: Plugin::new(client, namespace),
        allowed,
    });
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
    let refused = refusal(&dashboard.allowed, request.method(), request.uri(), request.headers());
    let mut response = match refused {
        Some(refusal) => (refusal.status(), refusal.to_string()).into_response(),
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    // The page is never framed, and the browser sniffs nothing (a refusal echoes a Host).
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    response
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// No `Host`, or more than one.
    NoHost,
    /// A `Host` (or an absolute request target) naming something not on the allow-list.
    UnknownHost(String),
    /// A POST without the [`ACTION_HEADER`].
    NotFromThePage,
    /// A POST whose `Origin` is not an allowed host's.
    ForeignOrigin,
}

impl Refusal {
    /// 421 for a request that names another server, 403 for an action refused.
    fn status(&self) -> StatusCode {
        match self {
            Refusal::NoHost | Refusal::UnknownHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Refusal::NotFromThePage | Refusal::ForeignOrigin => StatusCode::FORBIDDEN,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoHost => f.write_str("refused: a request must carry exactly one Host header"),
            // The allowed names are not listed: under DNS rebinding the attacker's page reads
            // this answer. The user finds them in the dashboard's own output.
            Refusal::UnknownHost(host) => write!(
                f,
                "refused: this dashboard does not answer to Host `{host}`; to browse to it by that name, start it with --allowed-host {host}"
            ),
            Refusal::NotFromThePage => {
                f.write_str("refused: an action must come from the dashboard's own page")
            }
            Refusal::ForeignOrigin => f.write_str(
                "refused: an action from another origin (an allowed Origin is http:// and a name given to --allowed-host)",
            ),
        }
    }
}

/// Why a request must be refused, if it must: see the module header.
fn refusal(
    allowed: &AllowedHosts,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Some(Refusal::NoHost);
    };
    let Ok(host) = host.to_str() else {
        return Some(Refusal::UnknownHost(String::from_utf8_lossy(host.as_bytes()).into_owned()));
    };
    if !allowed.allows(host) {
        return Some(Refusal::UnknownHost(host.to_owned()));
    }
    // An absolute request target (`POST http://name/...`) names the server too, over `Host`.
    if let Some(authority) = uri.authority()
        && !allowed.allows(authority.as_str())
    {
        return Some(Refusal::UnknownHost(authority.to_string()));
    }
    if method == Method::POST {
        if !headers.contains_key(ACTION_HEADER) {
            return Some(Refusal::NotFromThePage);
        }
        let foreign = headers
            .get_all(header::ORIGIN)
            .iter()
            .any(|origin| !origin.to_str().is_ok_and(|origin| allowed.allows_origin(origin)));
        if foreign {
            return Some(Refusal::ForeignOrigin);
        }
    }
    None
}

/// The scheme of every `Origin` the dashboard's own page can have.
const HTTP_SCHEME: &str = "http://";

/// A name given with `--allowed-host NAME[:PORT]`: a DNS name or an IP address (IPv6 in
/// brackets); without a port, the port the dashboard listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    /// In lower case; an IP address in its canonical form.
    name: String,
    /// `None`: the port bound.
    port: Option<u16>,
}

impl FromStr for AllowedHost {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let (name, port) = authority(text).ok_or_else(|| {
            format!(
                "`{text}` is not NAME or NAME:PORT (a DNS name, an IPv4 address or an IPv6 address in brackets)"
            )
        })?;
        Ok(AllowedHost { name, port })
    }
}

/// The `Host` names the dashboard answers to, each with its port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHosts(Vec<(String, u16)>);

impl AllowedHosts {
    /// For a dashboard bound to `bound`: the loopback names and the bound address (when it is
    /// one address, not a wildcard: a browser sends an IP literal only when the user typed it)
    /// with the port bound, then `extra`.
    pub fn new(bound: SocketAddr, extra: &[AllowedHost]) -> Self {
        let port = bound.port();
        let mut names: Vec<(String, u16)> =
            LOOPBACK_NAMES.iter().map(|name| ((*name).to_owned(), port)).collect();
        if !bound.ip().is_unspecified() {
            names.push((host_name(bound.ip()), port));
        }
        names.extend(extra.iter().map(|host| (host.name.clone(), host.port.unwrap_or(port))));
        let mut unique = Vec::with_capacity(names.len());
        for name in names {
            if !unique.contains(&name) {
                unique.push(name);
            }
        }
        AllowedHosts(unique)
    }

    /// Whether `host` (a `Host` value, `NAME[:PORT]`, port 80 when absent) is on the list:
    /// names compare without regard to case, ports exactly.
    fn allows(&self, host: &str) -> bool {
        authority(host).is_some_and(|(name, port)| {
            let port = port.unwrap_or(HTTP_PORT);
            self.0.iter().any(|(allowed, allowed_port)| *allowed == name && *allowed_port == port)
        })
    }

    /// Whether `origin` is `http://` and an allowed host: the dashboard's own page, however
    /// the user reached it.
    fn allows_origin(&self, origin: &str) -> bool {
        origin.split_at_checked(HTTP_SCHEME.len()).is_some_and(|(scheme, authority)| {
            scheme.eq_ignore_ascii_case(HTTP_SCHEME) && self.allows(authority)
        })
    }
}

impl fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, (name, port)) in self.0.iter().enumerate() {
            let separator = if position == 0 { "" } else { ", " };
            write!(f, "{separator}{name}:{port}")?;
        }
        Ok(())
    }
}

/// `NAME[:PORT]` split and normalised: the name in lower case (an IP address in its canonical
/// form, IPv6 in brackets), the port if any. `None` for anything else: userinfo, a path, an
/// empty or zero port, an IPv6 address without brackets, a character no DNS name has.
fn authority(text: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let address: Ipv6Addr = inside.parse().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (host_name(IpAddr::V6(address)), port)
    } else {
        let (name, port) = match text.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if name.is_empty() || !name.chars().all(valid) {
            return None;
        }
        let name = match name.parse::<Ipv4Addr>() {
            Ok(address) => address.to_string(),
            Err(_) => name.to_ascii_lowercase(),
        };
        (name, port)
    };
    let port = match port {
        None => None,
        Some(digits) => {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(digits.parse::<u16>().ok().filter(|port| *port != 0)?)
        }
    };
    Some((name, port))
}

/// An IP address as a `Host` names it: IPv6 in brackets.
fn host_name(address: IpAddr) -> String {
    match address {
        IpAddr::V4(address) => address.to_string(),
        IpAddr::V6(address) => format!("[{address}]"),
    }
}

/// The address to print for a browser: the one bound, or loopback when bound to every address
/// (a browser does not go to `0.0.0.0`, and loopback is on the allow-list).
fn browsable(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, bound.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, bound.port()).into(),
        _ => bound,
    }
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
        Error::Kube { context, source: kube::Error::Api(status), .. } => (
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

    fn allowed(address: &str, extra: &[&str]) -> AllowedHosts {
        let extra: Vec<AllowedHost> =
            extra.iter().map(|host| host.parse().expect("an allowed host")).collect();
        AllowedHosts::new(address.parse().expect("an address"), &extra)
    }

    fn get(allowed: &AllowedHosts, pairs: &[(&'static str, &str)]) -> Option<Refusal> {
        refusal(allowed, &Method::GET, &Uri::from_static("/"), &headers(pairs))
    }

    #[test]
    fn every_request_needs_a_host_on_the_allow_list() {
        // (bound address, --allowed-host, Host, answered)
        let table: &[(&str, &[&str], &str, bool)] = &[
            ("127.0.0.1:3210", &[], "127.0.0.1:3210", true),
            ("127.0.0.1:3210", &[], "localhost:3210", true),
            ("127.0.0.1:3210", &[], "LocalHost:3210", true),
            ("127.0.0.1:3210", &[], "[::1]:3210", true),
            ("127.0.0.1:3210", &[], "[0:0:0:0:0:0:0:1]:3210", true),
            ("127.0.0.1:3210", &[], "evil.example:3210", false),
            ("127.0.0.1:3210", &[], "localhost:3211", false),
            ("127.0.0.1:3210", &[], "localhost", false),
            ("127.0.0.1:3210", &[], "localhost.:3210", false),
            ("127.0.0.1:3210", &[], "user@localhost:3210", false),
            ("127.0.0.1:3210", &[], "::1:3210", false),
            ("127.0.0.1:3210", &[], "localhost:", false),
            ("[::1]:3210", &[], "[::1]:3210", true),
            ("[::1]:3210", &[], "localhost:3210", true),
            // Every address: the loopback names only, until the user names more.
            ("0.0.0.0:3210", &[], "localhost:3210", true),
            ("0.0.0.0:3210", &[], "0.0.0.0:3210", false),
            ("0.0.0.0:3210", &[], "evil.example:3210", false),
            ("0.0.0.0:3210", &[], "dash.corp.example:3210", false),
            ("0.0.0.0:3210", &["dash.corp.example"], "dash.corp.example:3210", true),
            ("0.0.0.0:3210", &["Dash.Corp.Example"], "DASH.corp.example:3210", true),
            ("0.0.0.0:3210", &["dash.corp.example"], "dash.corp.example:8080", false),
            ("0.0.0.0:3210", &["dash.corp.example"], "evil.example:3210", false),
            ("0.0.0.0:3210", &["dash.corp.example:443"], "dash.corp.example:443", true),
            ("0.0.0.0:3210", &["dash.corp.example:443"], "dash.corp.example:3210", false),
            ("0.0.0.0:3210", &["dash.corp.example:80"], "dash.corp.example", true),
            ("0.0.0.0:3210", &["10.0.0.7"], "10.0.0.7:3210", true),
            ("[::]:3210", &["[fd00::7]"], "[fd00::7]:3210", true),
            ("[::]:3210", &["[fd00::7]"], "[fd00::8]:3210", false),
            // One address: it is named by its IP literal, which no other site can be.
            ("10.0.0.7:3210", &[], "10.0.0.7:3210", true),
            ("10.0.0.7:3210", &[], "evil.example:3210", false),
        ];
        for (address, extra, host, answered) in table {
            let refused = get(&allowed(address, extra), &[("host", host)]);
            assert_eq!(
                refused.is_none(),
                *answered,
                "bound {address}, --allowed-host {extra:?}, Host {host}: {refused:?}"
            );
            if let Some(refused) = refused {
                assert_eq!(refused, Refusal::UnknownHost((*host).to_owned()));
                assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
                assert!(refused.to_string().contains("--allowed-host"), "{refused}");
            }
        }
    }

    #[test]
    fn a_request_without_exactly_one_host_is_refused() {
        let allowed = allowed("0.0.0.0:3210", &[]);
        assert_eq!(get(&allowed, &[]), Some(Refusal::NoHost));
        let mut two = headers(&[("host", "localhost:3210")]);
        two.append(header::HOST, HeaderValue::from_static("evil.example:3210"));
        assert_eq!(
            refusal(&allowed, &Method::GET, &Uri::from_static("/"), &two),
            Some(Refusal::NoHost)
        );
    }

    #[test]
    fn an_absolute_request_target_must_name_an_allowed_host_too() {
        let allowed = allowed("0.0.0.0:3210", &[]);
        let uri = Uri::from_static("http://evil.example:3210/");
        assert_eq!(
            refusal(&allowed, &Method::GET, &uri, &headers(&[("host", "localhost:3210")])),
            Some(Refusal::UnknownHost("evil.example:3210".into()))
        );
    }

    #[test]
    fn actions_need_the_header_and_an_origin_on_the_allow_list() {
        let allowed = allowed("0.0.0.0:3210", &["dash.corp.example"]);
        let post = |pairs: &[(&'static str, &str)]| {
            refusal(&allowed, &Method::POST, &Uri::from_static("/applies/a/stop"), &headers(pairs))
        };
        let host = ("host", "localhost:3210");
        let action = (ACTION_HEADER, "1");
        assert_eq!(post(&[host]), Some(Refusal::NotFromThePage));
        assert_eq!(post(&[host, action]), None, "no Origin: the header suffices");
        // (Host, Origin, answered)
        let table: &[(&str, &str, bool)] = &[
            ("localhost:3210", "http://localhost:3210", true),
            ("localhost:3210", "HTTP://LOCALHOST:3210", true),
            ("localhost:3210", "http://127.0.0.1:3210", true),
            ("dash.corp.example:3210", "http://dash.corp.example:3210", true),
            ("localhost:3210", "http://evil.example", false),
            ("localhost:3210", "http://evil.example:3210", false),
            ("localhost:3210", "https://localhost:3210", false),
            ("localhost:3210", "http://localhost:3211", false),
            ("localhost:3210", "http://localhost:3210/", false),
            ("localhost:3210", "null", false),
            ("localhost:3210", "", false),
            ("dash.corp.example:3210", "http://evil.example:3210", false),
        ];
        for (host, origin, answered) in table {
            let refused = post(&[("host", host), action, ("origin", origin)]);
            assert_eq!(refused.is_none(), *answered, "Host {host}, Origin {origin}: {refused:?}");
            if let Some(refused) = refused {
                assert_eq!(refused, Refusal::ForeignOrigin);
                assert_eq!(refused.status(), StatusCode::FORBIDDEN);
            }
        }
    }

    #[test]
    fn an_origin_equal_to_a_forged_host_is_refused() {
        // DNS rebinding: the attacker's name resolves to the dashboard, and the browser sends
        // that name as both Host and Origin, on every address the dashboard may listen on.
        for address in ["127.0.0.1:3210", "0.0.0.0:3210", "10.0.0.7:3210"] {
            let refused = refusal(
                &allowed(address, &[]),
                &Method::POST,
                &Uri::from_static("/applies/a/stop"),
                &headers(&[
                    ("host", "evil.example:3210"),
                    (ACTION_HEADER, "1"),
                    ("origin", "http://evil.example:3210"),
                ]),
            );
            assert_eq!(
                refused,
                Some(Refusal::UnknownHost("evil.example:3210".into())),
                "{address}"
            );
        }
    }

    #[test]
    fn allowed_hosts_are_names_or_addresses_with_an_optional_port() {
        for text in ["dash.corp.example", "dash:8080", "10.0.0.7", "[fd00::7]:3210", "Node-1_a"] {
            assert!(text.parse::<AllowedHost>().is_ok(), "{text}");
        }
        for text in ["", ":3210", "fd00::7", "dash:0", "dash:99999", "dash:x", "a/b", "u@dash", "*"]
        {
            assert!(text.parse::<AllowedHost>().is_err(), "{text}");
        }
        let list = allowed("0.0.0.0:3210", &["Dash.Corp.Example", "localhost", "x:443"]);
        assert_eq!(
            list.to_string(),
            "localhost:3210, 127.0.0.1:3210, [::1]:3210, dash.corp.example:3210, x:443"
        );
    }

    #[test]
    fn the_printed_url_is_one_a_browser_reaches_and_the_guard_answers() {
        for (bound, printed) in [
            ("127.0.0.1:3210", "127.0.0.1:3210"),
            ("0.0.0.0:3210", "127.0.0.1:3210"),
            ("[::]:3210", "[::1]:3210"),
            ("10.0.0.7:3210", "10.0.0.7:3210"),
        ] {
            let address: SocketAddr = bound.parse().expect("an address");
            assert_eq!(browsable(address).to_string(), printed);
            assert!(AllowedHosts::new(address, &[]).allows(printed), "{bound}");
        }
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
            step: crate::Step::Client,
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
