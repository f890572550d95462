//! What the dashboard knows: one watch of the Applies and one of the Operations in its namespace,
//! each mirrored in a reflector store, shared by every browser connected. A change seen by either
//! watch bumps one counter; each page's event stream wakes on it and renders again from the
//! stores. Nothing here asks the API server per object or per browser, and nothing here writes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::crd::{Apply, Operation};

/// How long a page load waits for the first list before rendering what it has.
const FIRST_LIST_PATIENCE: Duration = Duration::from_secs(5);

/// The namespace's Applies and Operations as last seen, and a signal of every change.
#[derive(Clone)]
pub struct Watches {
    /// The Applies of the namespace.
    pub applies: Store<Apply>,
    /// The Operations of the namespace (all Applies'; filtered by owner when rendered).
    pub operations: Store<Operation>,
    /// Bumped on every event either watch sees, including its errors.
    changes: watch::Receiver<u64>,
    /// The last error of each watch, cleared by its next event: shown on every page.
    errors: Arc<Mutex<WatchErrors>>,
}

#[derive(Default)]
struct WatchErrors {
    applies: Option<String>,
    operations: Option<String>,
}

impl Watches {
    /// Starts both watches in `namespace` with the user's `client`. They run until the process
    /// ends; a failing watch retries with backoff and says why on the page meanwhile.
    pub fn start(client: &Client, namespace: &str) -> Watches {
        let (changed, changes) = watch::channel(0_u64);
        let changed = Arc::new(changed);
        let errors = Arc::new(Mutex::new(WatchErrors::default()));
        let applies = mirror::<Apply>(
            Api::namespaced(client.clone(), namespace),
            changed.clone(),
            errors.clone(),
            |errors, error| errors.applies = error,
        );
        let operations = mirror::<Operation>(
            Api::namespaced(client.clone(), namespace),
            changed,
            errors.clone(),
            |errors, error| errors.operations = error,
        );
        Watches { applies, operations, changes, errors }
    }

    /// A receiver that wakes on the next change (and, when new, at once for the first render).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut changes = self.changes.clone();
        changes.mark_changed();
        changes
    }

    /// Waits (a little) until both watches have listed once, so a first page load is not empty.
    pub async fn first_list(&self) {
        let ready = async {
            let _ = self.applies.wait_until_ready().await;
            let _ = self.operations.wait_until_ready().await;
        };
        let _ = tokio::time::timeout(FIRST_LIST_PATIENCE, ready).await;
    }

    /// The watches' current errors, in the API server's words.
    pub fn errors(&self) -> Vec<String> {
        let errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        errors.applies.iter().chain(errors.operations.iter()).cloned().collect()
    }
}

/// Mirrors `api` in a store from a background task; `record` keeps the watch's last error.
fn mirror<K>(
    api: Api<K>,
    changed: Arc<watch::Sender<u64>>,
    errors: Arc<Mutex<WatchErrors>>,
    record: fn(&mut WatchErrors, Option<String>),
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let plural = K::plural(&()).into_owned();
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let error = event.err().map(|error| format!("watching {plural}: {}", describe(&error)));
            record(&mut errors.lock().unwrap_or_else(PoisonError::into_inner), error);
            changed.send_modify(|count| *count = count.wrapping_add(1));
        }
    });
    store
}

/// A watch error as the API server put it (its message), else as the client did.
fn describe(error: &watcher::Error) -> String {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.message.clone(),
        watcher::Error::WatchError(status) => status.message.clone(),
        other => other.to_string(),
    }
}
