//! Reading a run's health: every object it applied, from the watch of its kind when that has
//! recent news of it, else with a GET (one LIST of the watch's scope when its news is stale),
//! judged by the Apply's health check for its kind or by kstatus's rules.

use super::*;

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
            let object_text = describe_entry(entry);
            let on = match &place.cluster {
                Some(cluster) => format!("{object_text} (cluster `{cluster}`)"),
                None => object_text.clone(),
            };
            let gvk = api_version_kind(&entry.api_version, &entry.kind);
            let resource = match self.resolve(&place, &gvk).await {
                Ok((resource, _)) => resource,
                Err(failure) => {
                    retry_soon |= failure.transient;
                    waiting.push(format!("waiting for {on}: {}", failure.message));
                    continue;
                }
            };
            let key = WatchKey {
                identity: place.identity.clone(),
                cluster: place.cluster.clone(),
                api_version: entry.api_version.clone(),
                kind: entry.kind.clone(),
                namespace: entry.namespace.clone(),
            };
            let (mut known, watch_error) = self.known(&key, &entry.name);
            if watch_error.is_some() {
                // While its watch fails (an API server restarting, a registered cluster going
                // away), the object is read directly and looked at again soon: what the watch
                // would have said is not waited for, and an unreachable cluster is said at once.
                known = None;
                retry_soon = true;
            } else if known.is_none() {
                // Stale (its watch may have stalled): one LIST re-reads everything the watch
                // carries, so the safety re-read costs a request per watch, not per object.
                let relisted = self.relist(&place, &key, &resource, &entry.name).await;
                if self.note_outage(target.apply_namespace, &place, relisted).is_ok() {
                    known = self.known(&key, &entry.name).0;
                }
            }
            let object = match known {
                Some(object) => object,
                None => {
                    let read = self.read(&place, entry, &resource).await;
                    match self.note_outage(target.apply_namespace, &place, read) {
                        Ok(object) => {
                            self.remember(&key, &entry.name, object.clone());
                            object
                        }
                        Err(failure) if failure.transient && place.cluster.is_some() => {
                            return Check::retry(Health::Waiting(failure.message));
                        }
                        // A read that fails is a reason to look again, not a verdict: the
                        // timeout decides.
                        Err(failure) => {
                            retry_soon |= failure.transient;
                            let detail = failure.message.strip_prefix(&format!("{object_text}: "));
                            let detail = detail.unwrap_or(&failure.message);
                            waiting.push(format!("waiting for {on}: {detail}"));
                            watched.push((key, entry.name.clone(), resource));
                            continue;
                        }
                    }
                }
            };
            watched.push((key, entry.name.clone(), resource));
            let stalled = watch_error
                .map(|error| {
                    format!(" (its watch fails, so it is read directly until it recovers: {error})")
                })
                .unwrap_or_default();
            let Some(object) = object else {
                // Deleted after it was applied. baton does not apply again within a run (the
                // object's owner may have meant it); the timeout decides, as kstatus waits would.
                waiting.push(format!(
                    "waiting for {on}: not found (deleted after it was applied){stalled}"
                ));
                continue;
            };
            match judge(target.health_checks, entry, &object).await {
                Ok(ObjectHealth::Current) => {}
                Ok(ObjectHealth::InProgress(message)) => {
                    waiting.push(format!("waiting for {on}: {message}{stalled}"));
                }
                Ok(ObjectHealth::Failed(message)) => {
                    let prefix = place.prefix();
                    return Check::settled(Health::Unhealthy(format!(
                        "{prefix}{object_text}: {message}"
                    )));
                }
                Err(message) => {
                    let prefix = place.prefix();
                    return Check::settled(Health::DispatchFailed(format!(
                        "{prefix}{object_text}: {message}"
                    )));
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
        let api: Api<DynamicObject> = match &key.namespace {
            Some(namespace) => Api::namespaced_with(place.client.clone(), namespace, resource),
            None => Api::all_with(place.client.clone(), resource),
        };
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
        let api: Api<DynamicObject> = match &entry.namespace {
            Some(namespace) => Api::namespaced_with(place.client.clone(), namespace, resource),
            None => Api::all_with(place.client.clone(), resource),
        };
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
