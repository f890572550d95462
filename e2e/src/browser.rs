//! A real browser for the dashboard's tests, and the dashboard it looks at.
//!
//! [`Browser`] is headless Chromium driven over WebDriver by chromedriver, both the
//! distribution's packages, installed by `hack/browser.sh` when missing (the tests run it, so a
//! fresh clone needs no step of its own). Each browser has its own driver on a free loopback
//! port and a fresh profile; dropping it ends the driver's process group, the browser with it.
//!
//! [`DashboardProcess`] is `kubectl baton dashboard` as a user starts it: the plugin binary of
//! this checkout, a kubeconfig, a namespace, a loopback port of its choosing (or the flags a
//! test gives).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use fantoccini::{Client as WebDriver, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{baton_binary, repo_root, wait_for};

/// How long a browser check waits for the page to show something.
pub const PAGE_PATIENCE: Duration = Duration::from_secs(45);

/// Flags without which Chromium hangs on a machine with no network (it tries to reach Google's
/// services at start) or without a GPU; `--no-sandbox` because tests may run as root.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
];

/// Chromium and chromedriver, as `hack/browser.sh` reports them (installing them first when
/// missing): run once per test binary.
fn browser_paths() -> &'static (PathBuf, PathBuf) {
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS.get_or_init(|| {
        let output = Command::new("bash")
            .arg(repo_root().join("hack/browser.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running hack/browser.sh");
        assert!(output.status.success(), "hack/browser.sh could not provide Chromium");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut lines = text.lines().map(PathBuf::from);
        let chromium = lines.next().expect("hack/browser.sh prints Chromium's path");
        let driver = lines.next().expect("hack/browser.sh prints chromedriver's path");
        (chromium, driver)
    })
}

/// A free loopback port (free when asked; the driver binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Headless Chromium under WebDriver.
pub struct Browser {
    /// The WebDriver session.
    pub driver: WebDriver,
    /// Declared last: the session's client goes first.
    _processes: Processes,
}

/// chromedriver (leading its own process group, the browser in it) and the browser's profile.
struct Processes {
    chromedriver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a browser session with a fresh profile.
    pub async fn start() -> Browser {
        let (chromium, chromedriver) = browser_paths();
        let port = free_port();
        // Its own process group, so dropping the browser ends the driver and every Chromium
        // process it started, even when the session was never closed.
        let chromedriver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let profile = std::env::temp_dir().join(format!("baton-e2e-chromium-{port}"));
        // Owned before anything can fail, so a failed start leaves no process behind.
        let processes = Processes { chromedriver, profile };
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        wait_for("chromedriver to listen", Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(address).await.ok().map(drop)
        })
        .await;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
        args.push(format!("--user-data-dir={}", processes.profile.display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
        let driver = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://{address}"))
            .await
            .expect("a Chromium session");
        Browser { driver, _processes: processes }
    }

    /// Opens `url` and waits until its document has loaded.
    pub async fn open(&self, url: &str) {
        self.driver.goto(url).await.unwrap_or_else(|error| panic!("opening {url}: {error}"));
    }

    /// Waits until the first element matching `css` has text for which `check` holds, and
    /// returns that text. The page changes under the test, so it looks again each time.
    pub async fn wait_text<F>(&self, what: &str, css: &str, check: F) -> String
    where
        F: Fn(&str) -> bool,
    {
        let check = &check;
        wait_for(what, PAGE_PATIENCE, || async move {
            let element = self.driver.find(Locator::Css(css)).await.ok()?;
            let text = element.text().await.ok()?;
            check(&text).then_some(text)
        })
        .await
    }

    /// Waits until `script` (a function body returning a value) returns something truthy.
    pub async fn wait_script(&self, what: &str, script: &str) -> Value {
        wait_for(what, PAGE_PATIENCE, || async move {
            let value = self.driver.execute(script, Vec::new()).await.ok()?;
            let truthy = !matches!(value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            truthy.then_some(value)
        })
        .await
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn script(&self, script: &str) -> Value {
        self.driver.execute(script, Vec::new()).await.expect("running a script in the page")
    }

    /// Clicks the element `css`, as a person would (the browser checks it can be clicked).
    pub async fn click(&self, css: &str) {
        let element =
            wait_for(&format!("`{css}` to be on the page"), PAGE_PATIENCE, || async move {
                self.driver.find(Locator::Css(css)).await.ok()
            })
            .await;
        element.click().await.unwrap_or_else(|error| panic!("clicking `{css}`: {error}"));
    }

    /// Presses a key on the focused element (`\u{e007}` is Enter, `\u{e004}` Tab in WebDriver).
    pub async fn press(&self, css: &str, keys: &str) {
        let element = self.driver.find(Locator::Css(css)).await.expect("the element to type into");
        element
            .send_keys(keys)
            .await
            .unwrap_or_else(|error| panic!("typing into `{css}`: {error}"));
    }

    /// The page's current HTML, as the browser holds it.
    pub async fn source(&self) -> String {
        self.driver.source().await.expect("the page source")
    }

    /// Resizes the window (the page's layout follows).
    pub async fn resize(&self, width: u32, height: u32) {
        self.driver.set_window_size(width, height).await.expect("resizing the window");
    }

    /// Saves a PNG of the visible page to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.driver.screenshot().await.expect("a screenshot");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the screenshot's directory");
        }
        std::fs::write(path, png)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    }

    /// Ends the session cleanly (the drop would end the processes anyway).
    pub async fn close(self) {
        let _ = self.driver.clone().close().await;
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        // The driver leads its process group: end it and every browser process together.
        let group = format!("-{}", self.chromedriver.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `kubectl baton dashboard`, running.
pub struct DashboardProcess {
    /// Where it serves, as it printed it: `http://127.0.0.1:PORT/`.
    pub url: String,
    child: tokio::process::Child,
    /// Kept open: a closed pipe would fail the dashboard's next line.
    output: BufReader<tokio::process::ChildStdout>,
}

impl DashboardProcess {
    /// Starts the dashboard of `namespace` with `kubeconfig` on a loopback port it picks.
    pub async fn start(kubeconfig: &Path, namespace: &str) -> DashboardProcess {
        DashboardProcess::start_with(kubeconfig, namespace, &["--address", "127.0.0.1:0"]).await
    }

    /// Starts the dashboard of `namespace` with `kubeconfig` and the flags `extra` (which name
    /// its address).
    pub async fn start_with(
        kubeconfig: &Path,
        namespace: &str,
        extra: &[&str],
    ) -> DashboardProcess {
        let plugin = baton_binary().with_file_name("kubectl-baton");
        let mut child = tokio::process::Command::new(&plugin)
            .args(["dashboard", "--namespace", namespace])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", plugin.display()));
        let stdout = child.stdout.take().expect("the dashboard's output");
        let mut first = String::new();
        let mut output = BufReader::new(stdout);
        tokio::time::timeout(Duration::from_secs(20), output.read_line(&mut first))
            .await
            .expect("the dashboard to print its address")
            .expect("reading the dashboard's output");
        let url = first
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in the dashboard's first line: {first}"))
            .to_owned();
        DashboardProcess { url, child, output }
    }

    /// The dashboard's next line of output (after the URL: its warnings).
    pub async fn next_line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), self.output.read_line(&mut line))
            .await
            .expect("the dashboard to print a line")
            .expect("reading the dashboard's output");
        line
    }

    /// The URL of `path` (which starts with `/`) on this dashboard.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url.trim_end_matches('/'), path)
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
