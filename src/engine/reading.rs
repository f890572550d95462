//! Reading a run's health: every object it applied, from the watch of its kind when that has
//! recent news of it, else with a GET (one LIST of the watch's scope when its news is stale),
//! judged by the Apply's health check for its kind or by kstatus's rules.

use super::*;

/// A watch a run's object is read from: its key, the object's name, and its kind's resource.
type Watched = (WatchKey, String, ApiResource);

/// What one applied object says of its run.
enum Seen {
    /// Healthy (watched on: health can go back); look again soon when its watch fails.
    Current { watch: Watched, retry_soon: bool },
    /// Not yet, or not readable now: why, whether to look again soon, what to watch.
    Waiting { message: String, retry_soon: bool, watch: Option<Watched> },
    /// The run's verdict, whatever its other objects say.
    Verdict(Check),
}

impl Engine {
    /// Reads every applied object where the run applied it — from the watch of its kind when
    /// that has recent news of it, else with a GET — and folds their health into one verdict:
    /// the first failure, else waiting while any is not current (saying on what), else
    /// healthy. While the run waits, `wants` receives what it waits on, and those watches are
    /// opened: their next change wakes the Apply.
    pub async fn health(
        &self,
        target: &RunTarget<'_>,
        inventory: &[InventoryEntry],
        wants: &mut Wants,
    ) -> Check {
        let place = match self.place(target, false).await {
            Ok(place) => place,
            Err(failure) if failure.transient => {
                return Check::retry(Health::Waiting(failure.message));
            }
            Err(failure) => return Check::settled(Health::DispatchFailed(failure.message)),
        };
        let mut waiting: Vec<String> = Vec::new();
        let mut retry_soon = false;
        let mut watched = Vec::with_capacity(inventory.len());
        for entry in inventory {
            match self.object_health(target, &place, entry).await {
                Seen::Verdict(check) => return check,
                Seen::Current { watch, retry_soon: soon } => {
                    retry_soon |= soon;
                    watched.push(watch);
                }
                Seen::Waiting { message, retry_soon: soon, watch } => {
                    retry_soon |= soon;
                    waiting.push(message);
                    watched.extend(watch);
                }
            }
        }
        // Every object of a run is watched, the current ones too: health can go back, and a
        // healthy run may still soak (a run that ends lets its watches close).
        for (key, name, resource) in watched {
            self.watches.open(&key, &place.watch_client, &resource);
            wants.entry(key).or_default().insert(name);
        }
        let Some(first) = waiting.first() else { return Check::settled(Health::Healthy) };
        let message = match waiting.len() - 1 {
            0 => first.clone(),
            more => format!("{first} (and {more} more)"),
        };
        Check { health: Health::Waiting(message), retry_soon }
    }

    /// What one applied object says of its run: read from its watch when that has recent
    /// news of it (one LIST of the watch's scope when its news is stale), else with a GET, and
    /// judged by the Apply's health check for its kind or by kstatus's rules.
    async fn object_health(
        &self,
        target: &RunTarget<'_>,
        place: &Place,
        entry: &InventoryEntry,
    ) -> Seen {
        let object_text = describe_entry(entry);
        let on = place.suffix(&object_text);
        let gvk = api_version_kind(&entry.api_version, &entry.kind);
        let resource = match self.resolve(place, &gvk).await {
            Ok((resource, _)) => resource,
            Err(failure) => {
                return Seen::Waiting {
                    message: format!("waiting for {on}: {}", failure.message),
                    retry_soon: failure.transient,
                    watch: None,
                };
            }
        };
        let key = place.watch_key(&entry.api_version, &entry.kind, entry.namespace.as_deref());
        let (known, watch_error) = self.watched(target, place, &key, &resource, &entry.name).await;
        // While its watch fails, the object is looked at again soon.
        let retry_soon = watch_error.is_some();
        let object = match known {
            Some(object) => object,
            None => {
                let read = self.read(place, entry, &resource).await;
                let read = self.note_outage(target.apply_namespace, place, read);
                match read.inspect(|object| self.remember(&key, &entry.name, object.clone())) {
                    Ok(object) => object,
                    Err(failure) if failure.transient && place.cluster.is_some() => {
                        return Seen::Verdict(Check::retry(Health::Waiting(failure.message)));
                    }
                    // A read that fails is a reason to look again, not a verdict: the
                    // timeout decides.
                    Err(failure) => {
                        let detail = failure.message.strip_prefix(&format!("{object_text}: "));
                        let detail = detail.unwrap_or(&failure.message);
                        return Seen::Waiting {
                            message: format!("waiting for {on}: {detail}"),
                            retry_soon: retry_soon || failure.transient,
                            watch: Some((key, entry.name.clone(), resource)),
                        };
                    }
                }
            }
        };
        let watch = (key, entry.name.clone(), resource);
        let stalled = watch_error
            .map(|error| {
                format!(" (its watch fails, so it is read directly until it recovers: {error})")
            })
            .unwrap_or_default();
        let Some(object) = object else {
            // Deleted after it was applied. baton does not apply again within a run (the
            // object's owner may have meant it); the timeout decides, as kstatus waits would.
            return Seen::Waiting {
                message: format!(
                    "waiting for {on}: not found (deleted after it was applied){stalled}"
                ),
                retry_soon,
                watch: Some(watch),
            };
        };
        match judge(target.health_checks, entry, &object).await {
            Ok(ObjectHealth::Current) => Seen::Current { watch, retry_soon },
            Ok(ObjectHealth::InProgress(message)) => Seen::Waiting {
                message: format!("waiting for {on}: {message}{stalled}"),
                retry_soon,
                watch: Some(watch),
            },
            Ok(ObjectHealth::Failed(message)) => Seen::Verdict(Check::settled(Health::Unhealthy(
                format!("{}{object_text}: {message}", place.prefix()),
            ))),
            Err(message) => Seen::Verdict(Check::settled(Health::DispatchFailed(format!(
                "{}{object_text}: {message}",
                place.prefix()
            )))),
        }
    }

    /// What the watch `key` says of `name`, refreshed by one LIST of its scope when its news is
    /// stale (a watch may stall silently: the safety re-read costs a request per watch, not per
    /// object); `None` to read it directly. The second value is the watch's error while it
    /// fails (an API server restarting, a registered cluster going away): the object is then
    /// read directly, since what the watch would say is not waited for.
    async fn watched(
        &self,
        target: &RunTarget<'_>,
        place: &Place,
        key: &WatchKey,
        resource: &ApiResource,
        name: &str,
    ) -> (Option<Option<Arc<serde_json::Value>>>, Option<String>) {
        let (known, watch_error) = self.known(key, name);
        if watch_error.is_some() {
            return (None, watch_error);
        }
        if known.is_none() {
            let relisted = self.relist(place, key, resource, name).await;
            if self.note_outage(target.apply_namespace, place, relisted).is_ok() {
                return (self.known(key, name).0, None);
            }
        }
        (known, None)
    }

    /// What the watch `key` knows of `name` recently enough to decide on, and the watch's
    /// error if it is failing. `None` (the first value): read the object.
    fn known(
        &self,
        key: &WatchKey,
        name: &str,
    ) -> (Option<Option<Arc<serde_json::Value>>>, Option<String>) {
        let Some(cache) = self.watches.cache(key) else { return (None, None) };
        let cache = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let reread = self.watches.reread();
        let known = cache.objects.get(name).filter(|known| known.fresh(reread));
        (known.map(|known| known.object.clone()), cache.error.clone())
    }

    /// Re-reads the scope of the open watch `key` (what baton applied there) with one LIST, at
    /// most once per tenth of the re-read interval; nothing when no watch is open (the object
    /// is then read alone).
    async fn relist(
        &self,
        place: &Place,
        key: &WatchKey,
        resource: &ApiResource,
        wanted: &str,
    ) -> Result<(), Failure> {
        let Some(cache) = self.watches.cache(key) else { return Ok(()) };
        let window = self.watches.reread() / 10;
        if cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recently_relisted(window)
        {
            return Ok(());
        }
        let api = objects_in(&place.client, key.namespace.as_deref(), resource);
        let selector = format!("{MANAGED_LABEL}={MANAGED_VALUE}");
        let listed =
            api.list(&ListParams::default().labels(&selector)).await.map_err(|error| Failure {
                message: format!("listing {} objects baton applied: {error}", key.kind),
                transient: transient(&error),
            })?;
        let listed = listed
            .items
            .into_iter()
            .filter_map(|object| {
                let name = object.metadata.name.clone()?;
                Some((name, watches::to_value(key, object)?))
            })
            .collect();
        cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).relisted(listed, wanted);
        Ok(())
    }

    /// Keeps what a GET returned in the watch's cache, if one is open: until the watch brings
    /// news, or the safety re-read comes, it is the latest word on the object.
    pub(super) fn remember(
        &self,
        key: &WatchKey,
        name: &str,
        object: Option<Arc<serde_json::Value>>,
    ) {
        if let Some(cache) = self.watches.cache(key) {
            let mut cache = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            cache.objects.insert(name.to_owned(), Known { object, at: Instant::now() });
        }
    }

    /// The object of `entry`, or `None` when it does not exist.
    async fn read(
        &self,
        place: &Place,
        entry: &InventoryEntry,
        resource: &ApiResource,
    ) -> Result<Option<Arc<serde_json::Value>>, Failure> {
        let api = objects_in(&place.client, entry.namespace.as_deref(), resource);
        let object = match api.get(&entry.name).await {
            Ok(object) => object,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(error) => {
                return Err(Failure {
                    message: describe_api_error(
                        &entry.kind,
                        &entry.name,
                        entry.namespace.as_deref(),
                        &error,
                    ),
                    transient: transient(&error),
                });
            }
        };
        serde_json::to_value(object)
            .map(|object| Some(Arc::new(object)))
            .map_err(|error| Failure::from(format!("{}: {error}", describe_entry(entry))))
    }
}

/// The health of `object` by the Apply's health check for its kind (evaluated off the async
/// runtime's threads, within its cost budget), else by kstatus's rules. An error is a health
/// check that cannot be evaluated; one over its budget is a failed object (SPEC section 8).
async fn judge(
    checks: &[HealthCheck],
    entry: &InventoryEntry,
    object: &Arc<serde_json::Value>,
) -> Result<ObjectHealth, String> {
    match expressions::find(checks, &entry.api_version, &entry.kind) {
        Some(check) => expressions::evaluate_apart(check.clone(), object.clone()).await,
        None => Ok(health::health(object)),
    }
}
