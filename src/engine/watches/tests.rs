//! Watch bookkeeping: who waits on what, closing, the one-LIST re-read.

use super::*;

#[test]
fn one_relist_refreshes_every_object_of_a_watch_and_learns_what_is_gone() {
    let old = Instant::now() - Duration::from_secs(120);
    let mut cache = Cache::default();
    let stale = |object| Known { object, at: old };
    cache.objects.insert("web".into(), stale(Some(Arc::new(Value::Null))));
    cache.objects.insert("gone".into(), stale(Some(Arc::new(Value::Null))));
    assert!(!cache.recently_relisted(Duration::from_secs(6)));
    cache.relisted(vec![("web".into(), Arc::new(Value::Bool(true)))], "api");
    let reread = Duration::from_secs(60);
    assert!(cache.objects.values().all(|known| known.fresh(reread)), "all fresh at once");
    assert!(cache.objects["web"].object.is_some());
    assert!(cache.objects["gone"].object.is_none(), "not listed: deleted");
    assert!(cache.objects["api"].object.is_none(), "the one asked for, not listed: deleted");
    assert!(cache.recently_relisted(Duration::from_secs(6)), "the next check reads the cache");
}

#[test]
fn a_lagging_event_never_brings_back_an_earlier_generation() {
    let at = |generation: i64| Known {
        object: Some(Arc::new(serde_json::json!({"metadata": {"generation": generation}}))),
        at: Instant::now(),
    };
    let mut cache = Cache::default();
    cache.learn("web", at(2));
    cache.learn("web", at(1));
    assert_eq!(
        cache.objects["web"].object.as_ref().map(|o| o["metadata"]["generation"].clone()),
        Some(serde_json::json!(2))
    );
    cache.learn("web", at(3));
    assert_eq!(
        cache.objects["web"].object.as_ref().map(|o| o["metadata"]["generation"].clone()),
        Some(serde_json::json!(3))
    );
}

fn key(kind: &str, namespace: &str) -> WatchKey {
    WatchKey {
        identity: "shop/deployer".into(),
        cluster: None,
        api_version: "apps/v1".into(),
        kind: kind.into(),
        namespace: Some(namespace.into()),
    }
}

fn wants(entries: &[(WatchKey, &str)]) -> BTreeMap<WatchKey, BTreeSet<String>> {
    let mut wants: BTreeMap<WatchKey, BTreeSet<String>> = BTreeMap::new();
    for (key, name) in entries {
        wants.entry(key.clone()).or_default().insert((*name).to_owned());
    }
    wants
}

#[test]
fn a_change_wakes_only_the_applies_waiting_on_that_object() {
    let deployments = key("Deployment", "shop");
    let mut interest = Interest::default();
    interest.set("a", wants(&[(deployments.clone(), "web")]));
    interest.set("b", wants(&[(deployments.clone(), "api"), (key("Job", "shop"), "web")]));
    assert_eq!(interest.waiting_on(&deployments, "web"), vec!["a".to_owned()]);
    assert_eq!(interest.waiting_on(&key("Job", "shop"), "web"), vec!["b".to_owned()]);
    assert!(interest.waiting_on(&deployments, "db").is_empty());
    let mut any = interest.waiting_on_any(&deployments);
    any.sort();
    assert_eq!(any, vec!["a".to_owned(), "b".to_owned()], "a relist wakes every waiter");
}

#[test]
fn a_watch_closes_once_no_apply_waits_on_it_and_its_grace_passed() {
    let shop = key("Deployment", "shop");
    let edge = key("Deployment", "edge");
    let old = Duration::from_secs(60);
    let mut interest = Interest::default();
    interest.set("a", wants(&[(shop.clone(), "web")]));
    interest.set("b", wants(&[(shop.clone(), "api"), (edge.clone(), "web")]));
    let open = [(&shop, old), (&edge, old)];
    assert!(interest.idle(open, IDLE_GRACE).is_empty());
    interest.set("b", BTreeMap::new());
    assert_eq!(interest.idle(open, IDLE_GRACE), vec![edge.clone()], "shared watches stay");
    interest.set("a", BTreeMap::new());
    let mut idle = interest.idle(open, IDLE_GRACE);
    idle.sort();
    assert_eq!(idle, vec![edge.clone(), shop.clone()]);
    let young = [(&shop, Duration::from_secs(1))];
    assert!(
        interest.idle(young, IDLE_GRACE).is_empty(),
        "a watch just opened by a pass that has not said what it waits on stays"
    );
}

#[test]
fn watches_of_different_identities_are_not_shared() {
    let mine = key("Deployment", "shop");
    let theirs = WatchKey { identity: "shop/other".into(), ..mine.clone() };
    let mut interest = Interest::default();
    interest.set("a", wants(&[(mine.clone(), "web")]));
    assert!(interest.waiting_on(&theirs, "web").is_empty());
    assert_eq!(
        interest.idle([(&theirs, Duration::from_secs(60))], IDLE_GRACE),
        vec![theirs.clone()]
    );
}

#[test]
fn knowledge_goes_stale_before_the_safety_requeue_comes() {
    let reread = Duration::from_secs(60);
    let now = Known { object: None, at: Instant::now() };
    assert!(now.fresh(reread));
    let at = Instant::now().checked_sub(Duration::from_secs(57));
    let at = at.expect("the clock has run for a minute");
    assert!(!Known { object: None, at }.fresh(reread));
}
