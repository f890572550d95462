//! Dispatching a run: server-side apply of its manifests, in order, into the place it runs
//! (`Engine::place`), as the Apply's service account. A failure names the object and carries
//! the API server's words; what was applied before it stays and is reported.

use super::*;

/// A dispatch that failed part way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchError {
    /// What failed, naming the object, with the API server's message.
    pub message: String,
    /// What was applied before the failure.
    pub applied: Vec<InventoryEntry>,
    /// The API server could not answer (unreachable, overloaded, timing out): worth another
    /// try, not a verdict on the manifests.
    pub transient: bool,
}

impl Engine {
    /// Server-side applies every manifest, in order, and returns what was applied. A failure
    /// names the object, carries the API server's message, and keeps what was applied before it:
    /// objects already applied stay, and the operation records them.
    pub async fn dispatch(
        &self,
        target: &RunTarget<'_>,
    ) -> Result<Vec<InventoryEntry>, DispatchError> {
        let mut inventory = Vec::with_capacity(target.operation.manifests.len());
        if let Some(error) = &target.operation.values_error {
            // Nothing is applied from manifests that could not be expanded.
            return Err(DispatchError {
                message: error.clone(),
                applied: inventory,
                transient: false,
            });
        }
        // An expression that does not parse fails the run before anything is applied.
        if let Some(message) =
            target.health_checks.iter().find_map(|check| expressions::compile(check).err())
        {
            return Err(DispatchError { message, applied: inventory, transient: false });
        }
        let outcome = match self.place(target, true).await {
            Ok(place) => {
                let applied = self.apply_all(target, &place, &mut inventory).await;
                self.note_outage(target.apply_namespace, &place, applied)
            }
            Err(failure) => Err(failure),
        };
        match outcome {
            Ok(()) => Ok(inventory),
            Err(Failure { message, transient }) => {
                Err(DispatchError { message, applied: inventory, transient })
            }
        }
    }

    async fn apply_all(
        &self,
        target: &RunTarget<'_>,
        place: &Place,
        inventory: &mut Vec<InventoryEntry>,
    ) -> Result<(), Failure> {
        self.apply_each(target, place, inventory).await.map_err(|failure| Failure {
            message: format!("{}{}", place.prefix(), failure.message),
            transient: failure.transient,
        })
    }

    async fn apply_each(
        &self,
        target: &RunTarget<'_>,
        place: &Place,
        inventory: &mut Vec<InventoryEntry>,
    ) -> Result<(), Failure> {
        for (position, manifest) in target.operation.manifests.iter().enumerate() {
            inventory.push(self.apply_one(target, place, position, manifest).await?);
        }
        Ok(())
    }

    /// Server-side applies manifest #`position` where the run applies and says what it applied.
    async fn apply_one(
        &self,
        target: &RunTarget<'_>,
        place: &Place,
        position: usize,
        manifest: &serde_json::Value,
    ) -> Result<InventoryEntry, Failure> {
        let namespace = &target.operation.target.namespace;
        let mut object: DynamicObject = serde_json::from_value(manifest.clone())
            .map_err(|error| format!("manifest #{position} is not a Kubernetes object: {error}"))?;
        let types = object
            .types
            .clone()
            .ok_or_else(|| format!("manifest #{position} has no apiVersion or kind"))?;
        let gvk = GroupVersionKind::try_from(&types)
            .map_err(|error| format!("manifest #{position}: {error}"))?;
        let name = object
            .metadata
            .name
            .clone()
            .ok_or_else(|| format!("{} manifest #{position} has no metadata.name", gvk.kind))?;
        let (resource, capabilities) = self.resolve(place, &gvk).await?;
        // The label baton's watches select on (see `watches`).
        object
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(MANAGED_LABEL.to_owned(), MANAGED_VALUE.to_owned());
        object.metadata.namespace = match capabilities.scope {
            Scope::Namespaced => {
                if let Some(other) =
                    object.metadata.namespace.as_deref().filter(|ns| ns != namespace)
                {
                    return Err(format!(
                        "{} `{name}` sets namespace `{other}`, but the operation's target is `{namespace}`",
                        gvk.kind
                    )
                    .into());
                }
                Some(namespace.clone())
            }
            Scope::Cluster => None,
        };
        let api = objects_in(&place.client, object.metadata.namespace.as_deref(), &resource);
        let applied = api
            .patch(&name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&object))
            .await
            .map_err(|error| Failure {
                message: describe_api_error(
                    &gvk.kind,
                    &name,
                    object.metadata.namespace.as_deref(),
                    &error,
                ),
                transient: transient(&error),
            })?;
        // What the apply returned is newer than anything a watch said before it: a health
        // check must not read the object's state from before this run (a Deployment rolled out
        // by the previous change would pass for this one).
        let key =
            place.watch_key(&types.api_version, &gvk.kind, object.metadata.namespace.as_deref());
        if let Some(value) = watches::to_value(&key, applied) {
            self.remember(&key, &name, Some(value));
        }
        Ok(InventoryEntry {
            api_version: types.api_version,
            kind: gvk.kind,
            namespace: object.metadata.namespace,
            name,
            cluster: place.cluster.clone(),
        })
    }
}
