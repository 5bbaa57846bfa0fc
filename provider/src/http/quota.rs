//! Per-key counts of work in progress, and bytes per key per hour: one peer's requests in
//! progress ([`super::guard`]), one address's and one peer's uploads ([`super::upload`]).
//!
//! A key enters with [`Quotas::enter`] and holds a [`Ticket`] while its work is in progress;
//! dropping the ticket ends it. A key with nothing in progress and no bytes counted in the
//! current hour is forgotten, so the map holds only the keys that are doing something.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::error::{ApiError, ApiResult};

/// The window an hourly byte budget counts over.
const WINDOW: Duration = Duration::from_secs(3600);

/// Keys, bounded in work in progress and in bytes per hour.
#[derive(Debug)]
pub(crate) struct Quotas<K> {
    /// What a key is, for messages ("peer", "address").
    what: &'static str,
    /// What is in progress, for messages ("requests", "uploads").
    work: &'static str,
    /// Work in progress at once per key (0: no bound).
    max_active: usize,
    /// Bytes per key per hour (0: no bound).
    budget: u64,
    map: Mutex<HashMap<K, Quota>>,
}

#[derive(Debug)]
struct Quota {
    active: usize,
    window_start: Instant,
    bytes: u64,
}

impl Quota {
    /// Nothing in progress and no bytes counted that still matter: the key can go.
    fn idle(&self, budget: u64) -> bool {
        self.active == 0 && (budget == 0 || self.bytes == 0 || self.window_start.elapsed() >= WINDOW)
    }
}

/// One key's work in progress, counted until dropped.
#[derive(Debug)]
pub(crate) struct Ticket<K: std::hash::Hash + Eq + Copy> {
    quotas: Arc<Quotas<K>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Copy + std::fmt::Display> Ticket<K> {
    /// Counts `n` more bytes against the key's hourly budget: a 429 when they do not fit.
    pub(crate) fn charge(&self, n: u64) -> ApiResult<()> {
        let mut map = self.quotas.lock();
        let Some(q) = map.get_mut(&self.key) else { return Ok(()) };
        self.quotas.check_bytes(q, n)?;
        q.bytes = q.bytes.saturating_add(n);
        Ok(())
    }
}

impl<K: std::hash::Hash + Eq + Copy> Drop for Ticket<K> {
    fn drop(&mut self) {
        let budget = self.quotas.budget;
        let mut map = self.quotas.lock();
        if let Some(q) = map.get_mut(&self.key) {
            q.active = q.active.saturating_sub(1);
            if q.idle(budget) {
                map.remove(&self.key);
            }
        }
    }
}

impl<K: std::hash::Hash + Eq> Quotas<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Quota>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Past this many keys of a map with a byte budget, `enter` forgets the idle ones (those whose
/// hour has run out).
const SWEEP_ABOVE: usize = 10_000;

impl<K: std::hash::Hash + Eq + Copy + std::fmt::Display> Quotas<K> {
    /// Keys that are `what`, with at most `max_active` of their `work` in progress at once
    /// and `budget` bytes an hour each (0: no bound, for either).
    pub(crate) fn new(what: &'static str, work: &'static str, max_active: usize, budget: u64) -> Arc<Self> {
        Arc::new(Self { what, work, max_active, budget, map: Mutex::new(HashMap::new()) })
    }

    /// Counts a piece of work of `key` that declares `declared` bytes (0 when unknown): a 429
    /// when `key` has `max_active` in progress already or its hour's budget has no room for
    /// them. `None` when there is no bound to count against.
    pub(crate) fn enter(self: &Arc<Self>, key: K, declared: u64) -> ApiResult<Option<Ticket<K>>> {
        if self.max_active == 0 && self.budget == 0 {
            return Ok(None);
        }
        let mut map = self.lock();
        // Without a byte budget a key goes with its last ticket: the map holds busy keys only,
        // and a sweep would find nothing to forget.
        if self.budget > 0 && map.len() > SWEEP_ABOVE {
            map.retain(|_, q| !q.idle(self.budget));
        }
        let q = map.entry(key).or_insert_with(|| Quota { active: 0, window_start: Instant::now(), bytes: 0 });
        if q.window_start.elapsed() >= WINDOW {
            q.window_start = Instant::now();
            q.bytes = 0;
        }
        let refused = if self.max_active > 0 && q.active >= self.max_active {
            Some(ApiError::TooManyRequests {
                retry_after_secs: 1,
                message: format!(
                    "{key} already has {} {} in progress; at most {} at once",
                    q.active, self.work, self.max_active
                ),
            })
        } else {
            self.check_bytes(q, declared).err()
        };
        if let Some(e) = refused {
            if q.idle(self.budget) {
                map.remove(&key);
            }
            return Err(e);
        }
        q.active += 1;
        Ok(Some(Ticket { quotas: self.clone(), key }))
    }

    fn check_bytes(&self, q: &Quota, more: u64) -> ApiResult<()> {
        if self.budget > 0 && q.bytes.saturating_add(more) > self.budget {
            let wait = WINDOW.saturating_sub(q.window_start.elapsed()).as_secs().max(1);
            return Err(ApiError::TooManyRequests {
                retry_after_secs: wait,
                message: format!("over the upload quota of {} bytes per hour for this {}", self.budget, self.what),
            });
        }
        Ok(())
    }

    /// Keys remembered (for tests).
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.lock().len()
    }

    /// Work in progress, all keys together (for tests).
    #[cfg(test)]
    pub(crate) fn in_progress(&self) -> usize {
        self.lock().values().map(|q| q.active).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_has_at_most_its_limit_in_progress_and_is_forgotten_when_idle() {
        let peers = Quotas::<u32>::new("peer", "requests", 2, 0);
        let first = peers.enter(1, 0).unwrap();
        let _second = peers.enter(1, 0).unwrap();
        let err = peers.enter(1, 0).unwrap_err();
        assert_eq!(err.status(), 429);
        assert!(err.to_string().contains("1 already has 2 requests in progress"), "{err}");
        let other = peers.enter(2, 0).unwrap();
        drop(first);
        let again = peers.enter(1, 0).unwrap();
        assert!(again.is_some());
        drop((_second, again, other));
        assert_eq!(peers.keys(), 0, "no key is kept once it has nothing in progress");
        let unbounded = Quotas::<u32>::new("peer", "requests", 0, 0);
        assert!((0..1000).all(|_| unbounded.enter(1, 0).unwrap().is_none()));
        assert_eq!(unbounded.keys(), 0);
    }

    #[test]
    fn bytes_are_counted_for_the_hour_even_with_nothing_in_progress() {
        let addresses = Quotas::<u32>::new("address", "uploads", 0, 100);
        let t = addresses.enter(7, 10).unwrap().unwrap();
        t.charge(60).unwrap();
        let err = t.charge(60).unwrap_err();
        assert_eq!(err.status(), 429);
        assert!(err.to_string().contains("for this address"), "{err}");
        drop(t);
        // Its hour is not over: it is remembered, and what it used still counts.
        assert_eq!(addresses.keys(), 1);
        assert_eq!(addresses.enter(7, 50).unwrap_err().status(), 429, "a declared length over what is left");
        assert!(addresses.enter(7, 40).unwrap().is_some());
        // A key refused before it ever counted anything is not remembered.
        assert_eq!(addresses.enter(8, 101).unwrap_err().status(), 429);
        assert_eq!(addresses.keys(), 1);
    }
}
