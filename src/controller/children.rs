//! The Operations of an Apply, read from the controller's watch cache instead of a list per
//! pass, overlaid with this replica's own writes the cache has not caught up with yet.
//!
//! The cache keeps Operations without their manifests ([`lighten`]): they are fixed at
//! creation and needed only to apply a run, so memory follows the count of Operations, not
//! their size. A run applied from a cached Operation reads its manifests first
//! ([`manifests_left_out`]); one applied right after its claim has them from the claim's answer.
//!
//! Which Operations an Apply owns is kept in an index that follows the watch's events, so a
//! pass reads its own few Operations, not every Operation of the cluster.
//!
//! The overlay is exact, not a guess: each write remembers the `resourceVersion` it replaced.
//! While the cache still shows that version, the written object is newer; once the cache shows
//! anything else (the write itself, or someone's later write), the cache is. A stale read can
//! therefore only come from another writer, and every Operation write is a compare-and-swap, so
//! it ends in a conflict and a fresh decision, never in a lost update.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures::FutureExt;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::crd::{Apply, Operation};

/// Marks a cached Operation whose manifests were left out (never written: a status write
/// carries only the status).
pub const MANIFESTS_LEFT_OUT: &str = "baton.dev/manifests-left-out";

/// What the cache keeps of an Operation: no managed fields (nothing here reads them) and no
/// manifests (marked as left out).
pub fn lighten(op: &mut Operation) {
    op.managed_fields_mut().clear();
    if !op.spec.manifests.is_empty() {
        op.spec.manifests = Vec::new();
        op.annotations_mut().insert(MANIFESTS_LEFT_OUT.to_owned(), "true".to_owned());
    }
}

/// Whether `op` came from the cache without its manifests.
pub fn manifests_left_out(op: &Operation) -> bool {
    op.annotations().contains_key(MANIFESTS_LEFT_OUT)
}

/// One of this replica's writes, until the cache shows it or something newer.
struct OwnWrite {
    /// The Apply that owns the Operation.
    owner: String,
    /// The `resourceVersion` the write replaced (`None`: the write created the Operation).
    replaced: Option<String>,
    /// What the API server returned.
    object: Operation,
}

/// Which Operations each Apply owns (by the owner's uid), as the watch has told.
#[derive(Default)]
struct Owners {
    current: HashMap<String, HashSet<ObjectRef<Operation>>>,
    /// Filled during a (re)list, in place of `current` once it is done (as the store does).
    listing: Option<HashMap<String, HashSet<ObjectRef<Operation>>>>,
}

fn owners_of(op: &Operation) -> impl Iterator<Item = &str> {
    op.owner_references().iter().map(|reference| reference.uid.as_str())
}

fn add(index: &mut HashMap<String, HashSet<ObjectRef<Operation>>>, op: &Operation) {
    for owner in owners_of(op) {
        index.entry(owner.to_owned()).or_default().insert(ObjectRef::from_obj(op));
    }
}

/// Operations by owner, from the watch cache plus this replica's recent writes.
pub struct Children {
    store: Store<Operation>,
    owners: Mutex<Owners>,
    /// By Operation uid.
    written: Mutex<HashMap<String, OwnWrite>>,
}

impl Children {
    /// Children read from `store`, the reflector behind the controller's Operation watch, whose
    /// events also go to [`Children::follow`].
    pub fn new(store: Store<Operation>) -> Self {
        Children { store, owners: Mutex::default(), written: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OwnWrite>> {
        self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.owners.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows one event of the Operation watch into the owner index.
    pub fn follow(&self, event: &watcher::Event<Operation>) {
        let mut owners = self.owners();
        match event {
            watcher::Event::Init => owners.listing = Some(HashMap::new()),
            watcher::Event::InitApply(op) => add(owners.listing.get_or_insert_default(), op),
            watcher::Event::InitDone => {
                owners.current = owners.listing.take().unwrap_or_default();
            }
            watcher::Event::Apply(op) => add(&mut owners.current, op),
            watcher::Event::Delete(op) => {
                let gone = ObjectRef::from_obj(op);
                for owner in owners_of(op) {
                    if let Some(set) = owners.current.get_mut(owner) {
                        set.remove(&gone);
                        if set.is_empty() {
                            owners.current.remove(owner);
                        }
                    }
                }
            }
        }
    }

    /// The Operations `apply` owns, or `None` while the cache has not finished its first list
    /// (the caller lists instead).
    pub fn of(&self, apply: &Apply) -> Option<Vec<Operation>> {
        let owner = apply.uid()?;
        self.store.wait_until_ready().now_or_never()?.ok()?;
        let refs: Vec<ObjectRef<Operation>> = self
            .owners()
            .current
            .get(&owner)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        let mut children: HashMap<String, Operation> = refs
            .iter()
            .filter_map(|reference| self.store.get(reference))
            // The index may trail the store by an event: the store's object is the truth.
            .filter(|op| owners_of(op).any(|uid| uid == owner))
            .filter_map(|op| Some((op.uid()?, op.as_ref().clone())))
            .collect();
        self.lock().retain(|uid, written| {
            if written.owner != owner {
                return true;
            }
            let cached = children.get(uid).map(ResourceExt::resource_version);
            match (cached, &written.replaced) {
                // The cache is still behind this write.
                (Some(cached), Some(replaced)) if cached.as_ref() == Some(replaced) => {
                    children.insert(uid.clone(), written.object.clone());
                    true
                }
                (None, None) => {
                    children.insert(uid.clone(), written.object.clone());
                    true
                }
                // The cache shows this write or a later one, or the Operation is gone.
                _ => false,
            }
        });
        Some(children.into_values().collect())
    }

    /// Remembers a write until the cache shows it: `before` is the object it replaced.
    pub fn wrote(&self, owner: &str, before: Option<&Operation>, after: &Operation) {
        let Some(uid) = after.uid() else { return };
        let mut object = after.clone();
        lighten(&mut object);
        let written = OwnWrite {
            owner: owner.to_owned(),
            replaced: before.and_then(ResourceExt::resource_version),
            object,
        };
        self.lock().insert(uid, written);
    }

    /// Drops the writes the cache has shown (or moved past), whichever Apply they are of: a
    /// settled Apply is read no more, so its writes are not dropped by a read.
    pub fn prune(&self) {
        self.lock().retain(|_, written| {
            let cached = self.store.get(&ObjectRef::from_obj(&written.object));
            match (cached, &written.replaced) {
                (Some(cached), Some(replaced)) => {
                    cached.resource_version().as_ref() == Some(replaced)
                }
                (None, None) => true,
                _ => false,
            }
        });
    }

    /// Forgets the writes for an Apply that is gone.
    pub fn forget(&self, owner: &str) {
        self.lock().retain(|_, written| written.owner != owner);
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use kube::runtime::reflector::{self, store::Writer};
    use kube::runtime::watcher::Event;

    use super::*;
    use crate::crd::{OperationSpec, OperationStatus, Target};

    fn apply() -> Apply {
        let mut apply =
            Apply::new("app", crate::lifecycle::fixtures::spec(1, Default::default(), 1));
        apply.metadata.namespace = Some("ns".into());
        apply.metadata.uid = Some("apply-uid".into());
        apply
    }

    fn op(name: &str, version: &str, attempt: u32) -> Operation {
        let owner = kube::Resource::controller_owner_ref(&apply(), &()).expect("an owner");
        Operation {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("{name}-uid")),
                resource_version: Some(version.into()),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            spec: OperationSpec {
                index: 0,
                name: name.into(),
                target: Target { namespace: "ns".into(), cluster: None },
                manifests: Vec::new(),
                timeout: "1m".into(),
                approval: None,
                soak: None,
                values_error: None,
            },
            status: Some(OperationStatus { attempt, ..OperationStatus::default() }),
        }
    }

    /// A cache and its index, fed the same events as the controller feeds them.
    struct Cache {
        children: std::sync::Arc<Children>,
        writer: Writer<Operation>,
    }

    impl Cache {
        fn apply_watcher_event(&mut self, event: &Event<Operation>) {
            self.children.follow(event);
            self.writer.apply_watcher_event(event);
        }
    }

    fn ready() -> (std::sync::Arc<Children>, Cache) {
        let (store, writer) = reflector::store();
        let children = std::sync::Arc::new(Children::new(store));
        let mut cache = Cache { children: children.clone(), writer };
        cache.apply_watcher_event(&Event::Init);
        cache.apply_watcher_event(&Event::InitDone);
        (children, cache)
    }

    fn versions(children: &Children) -> Vec<String> {
        let mut seen: Vec<String> = children
            .of(&apply())
            .expect("a ready cache")
            .iter()
            .map(|op| format!("{}@{}", op.name_any(), op.resource_version().unwrap_or_default()))
            .collect();
        seen.sort();
        seen
    }

    #[test]
    fn a_cache_that_has_not_listed_yet_is_not_read() {
        let (store, _writer) = reflector::store::<Operation>();
        assert!(Children::new(store).of(&apply()).is_none());
    }

    #[test]
    fn own_writes_stand_in_until_the_cache_shows_them() {
        let (children, mut writer) = ready();
        writer.apply_watcher_event(&Event::Apply(op("a", "1", 0)));
        children.wrote("apply-uid", Some(&op("a", "1", 0)), &op("a", "2", 1));
        assert_eq!(versions(&children), ["a@2"], "the cache is behind the write");
        writer.apply_watcher_event(&Event::Apply(op("a", "2", 1)));
        assert_eq!(versions(&children), ["a@2"]);
        // Caught up: the overlay is gone, and a later write by someone else shows.
        writer.apply_watcher_event(&Event::Apply(op("a", "3", 1)));
        assert_eq!(versions(&children), ["a@3"]);
    }

    #[test]
    fn someone_elses_later_write_wins_over_an_own_write() {
        let (children, mut writer) = ready();
        children.wrote("apply-uid", Some(&op("a", "1", 0)), &op("a", "2", 1));
        writer.apply_watcher_event(&Event::Apply(op("a", "5", 2)));
        assert_eq!(versions(&children), ["a@5"]);
    }

    #[test]
    fn a_created_operation_shows_before_the_cache_has_it_and_a_deleted_one_goes() {
        let (children, mut writer) = ready();
        children.wrote("apply-uid", None, &op("b", "7", 0));
        assert_eq!(versions(&children), ["b@7"]);
        writer.apply_watcher_event(&Event::Apply(op("a", "1", 0)));
        children.wrote("apply-uid", Some(&op("a", "1", 0)), &op("a", "2", 1));
        writer.apply_watcher_event(&Event::Delete(op("a", "1", 0)));
        assert_eq!(versions(&children), ["b@7"], "a deleted Operation is not brought back");
    }

    #[test]
    fn the_cache_keeps_no_manifests_and_says_so() {
        let mut heavy = op("a", "1", 0);
        heavy.spec.manifests = vec![serde_json::json!({"kind": "ConfigMap", "data": {"k": "v"}})];
        lighten(&mut heavy);
        assert!(heavy.spec.manifests.is_empty() && manifests_left_out(&heavy));
        let mut empty = op("b", "1", 0);
        lighten(&mut empty);
        assert!(!manifests_left_out(&empty), "nothing was left out");
        let (children, _writer) = ready();
        let mut written = op("c", "2", 1);
        written.spec.manifests = vec![serde_json::json!({"kind": "ConfigMap"})];
        children.wrote("apply-uid", None, &written);
        let overlaid = children.of(&apply()).expect("a ready cache");
        assert!(overlaid.iter().all(|op| op.spec.manifests.is_empty() && manifests_left_out(op)));
    }

    #[test]
    fn a_relist_replaces_what_the_index_knew_once_it_is_done() {
        let (children, mut writer) = ready();
        writer.apply_watcher_event(&Event::Apply(op("a", "1", 0)));
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(op("b", "2", 0)));
        assert_eq!(versions(&children), ["a@1"], "the old view until the list is done");
        writer.apply_watcher_event(&Event::InitDone);
        assert_eq!(versions(&children), ["b@2"]);
    }

    #[test]
    fn other_applies_children_are_not_read() {
        let (children, mut writer) = ready();
        let mut foreign = op("x", "1", 0);
        foreign.metadata.owner_references = None;
        writer.apply_watcher_event(&Event::Apply(foreign));
        assert!(versions(&children).is_empty());
    }
}
