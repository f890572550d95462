//! A cache that forgets, for the clients of impersonated service accounts and registered
//! clusters: namespaces, accounts and registrations come and go while baton runs.

use super::*;

/// A cache that forgets: an entry not used for `idle` is never handed out again, and is dropped
/// by a sweep that runs on access at most every tenth of `idle`; when `capacity` entries are held, a new one replaces the least
/// recently used. The time is an argument, so tests move it without sleeping.
#[derive(Debug)]
pub struct Recent<K, V> {
    entries: HashMap<K, (V, Instant)>,
    idle: Duration,
    capacity: usize,
    swept: Option<Instant>,
}

impl<K: Eq + Hash + Clone, V> Recent<K, V> {
    /// An empty cache dropping entries unused for `idle`, holding at most `capacity`.
    pub fn new(idle: Duration, capacity: usize) -> Self {
        Recent { entries: HashMap::new(), idle, capacity: capacity.max(1), swept: None }
    }

    /// The entry `key`, marked used at `now`; none if it went unused for `idle`.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        self.sweep(now);
        let expired = self
            .entries
            .get(key)
            .is_some_and(|(_, used)| now.saturating_duration_since(*used) >= self.idle);
        if expired {
            self.entries.remove(key);
        }
        let (value, used) = self.entries.get_mut(key)?;
        *used = now;
        Some(value)
    }

    /// Keeps `value` under `key`, used at `now`, making room if the cache is full.
    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        self.sweep(now);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest =
                self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (value, now));
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn sweep(&mut self, now: Instant) {
        let due =
            self.swept.is_none_or(|swept| now.saturating_duration_since(swept) >= self.idle / 10);
        if !due {
            return;
        }
        self.swept = Some(now);
        let idle = self.idle;
        self.entries.retain(|_, (_, used)| now.saturating_duration_since(*used) < idle);
    }
}
