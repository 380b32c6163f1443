//! [`EntryCache`]: one peer's newest Raft entries in memory, bounded in entries and
//! bytes per peer and in bytes per store.
//!
//! The cache is a contiguous run of entries ending at the peer's last index. Only
//! persisted entries may leave it (the storage decides which, `storage.rs`); once
//! they may, they leave while the peer holds more than `entry-cache-limit` entries
//! or `entry-cache-max-bytes` bytes, or while the store's peers together hold more
//! than `entry-cache-store-max-bytes`. Entries not yet persisted always stay: their
//! amount is bounded by Raft itself (uncommitted bytes on a leader, in-flight
//! appends toward a follower).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use raft::eraftpb::Entry;

/// The bounds of every peer's cache on one store.
#[derive(Clone, Debug)]
pub struct CacheLimits {
    /// Most entries one peer keeps once persisted.
    pub entries: usize,
    /// Most bytes one peer keeps once persisted.
    pub bytes: u64,
    /// The store's budget, shared by its peers.
    pub store: Arc<StoreCacheBudget>,
}

/// Bytes cached by every peer of a store, against one budget.
#[derive(Debug, Default)]
pub struct StoreCacheBudget {
    /// Bytes cached now.
    pub used: AtomicU64,
    /// Most bytes the store's peers keep once persisted.
    pub max: u64,
}

impl StoreCacheBudget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Self {
        StoreCacheBudget {
            used: AtomicU64::new(0),
            max,
        }
    }
}

/// Bytes an entry is counted for: its payloads plus the struct around them.
fn cost(e: &Entry) -> u64 {
    (e.data.len() + e.context.len() + std::mem::size_of::<Entry>()) as u64
}

/// One peer's cached entries.
pub struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: u64,
    limits: CacheLimits,
}

impl EntryCache {
    /// An empty cache under `limits`.
    pub fn new(limits: CacheLimits) -> Self {
        EntryCache {
            entries: VecDeque::new(),
            bytes: 0,
            limits,
        }
    }

    /// The index of the first cached entry.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    /// The index of the last cached entry.
    #[cfg(test)]
    pub fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|e| e.index)
    }

    /// Cached entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes cached.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The cached entry at `index`, if cached.
    pub fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.first_index()?;
        self.entries.get(index.checked_sub(first)? as usize)
    }

    /// Cached entries from `index` on (from the first cached one if `index` is
    /// below it).
    pub fn iter_from(&self, index: u64) -> impl Iterator<Item = &Entry> {
        let skip = self
            .first_index()
            .map_or(0, |first| index.saturating_sub(first) as usize);
        self.entries.iter().skip(skip)
    }

    /// Appends `entries` (starting at most one past the last cached index): cached
    /// entries from the first new index on are replaced; a gap drops the old run.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first().map(|e| e.index) else {
            return;
        };
        while self.entries.back().is_some_and(|e| e.index >= first) {
            self.pop_back();
        }
        if self.entries.back().is_some_and(|e| e.index + 1 != first) {
            self.clear();
        }
        for e in entries {
            self.account(cost(e), true);
            self.entries.push_back(e.clone());
        }
    }

    /// Drops entries up to and including `index`.
    pub fn drop_through(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            self.pop_front();
        }
    }

    /// Drops persisted entries (those up to `persisted`) from the front while a
    /// limit is exceeded.
    pub fn trim(&mut self, persisted: u64) {
        while self.entries.front().is_some_and(|e| e.index <= persisted) && self.over_limit() {
            self.pop_front();
        }
    }

    fn over_limit(&self) -> bool {
        let store = &self.limits.store;
        self.entries.len() > self.limits.entries
            || self.bytes > self.limits.bytes
            || store.used.load(Ordering::Relaxed) > store.max
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        let bytes = self.bytes;
        self.entries.clear();
        self.account(bytes, false);
    }

    /// Drops every entry and gives back the memory the queue held.
    pub fn release(&mut self) {
        self.clear();
        self.entries = VecDeque::new();
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.account(cost(&e), false);
        }
    }

    fn pop_back(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.account(cost(&e), false);
        }
    }

    fn account(&mut self, n: u64, add: bool) {
        let used = &self.limits.store.used;
        if add {
            self.bytes += n;
            used.fetch_add(n, Ordering::Relaxed);
        } else {
            self.bytes -= n;
            used.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

impl Drop for EntryCache {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry {
            index,
            term: 1,
            data: vec![0; bytes].into(),
            ..Default::default()
        }
    }

    fn limits(entries: usize, bytes: u64, store: &Arc<StoreCacheBudget>) -> CacheLimits {
        CacheLimits {
            entries,
            bytes,
            store: store.clone(),
        }
    }

    #[test]
    fn persisted_entries_leave_past_the_byte_limit_and_the_store_total_follows() {
        let store = Arc::new(StoreCacheBudget::new(u64::MAX));
        let mut c = EntryCache::new(limits(1000, 10_000, &store));
        c.append(&(1..=10).map(|i| entry(i, 2000)).collect::<Vec<_>>());
        assert_eq!(store.used.load(Ordering::Relaxed), c.bytes());
        // Nothing persisted: nothing leaves, however far over the limit.
        c.trim(0);
        assert_eq!(c.len(), 10);
        c.trim(10);
        assert!(c.bytes() <= 10_000, "{}", c.bytes());
        assert_eq!(c.last_index(), Some(10));
        assert_eq!(store.used.load(Ordering::Relaxed), c.bytes());
        drop(c);
        assert_eq!(store.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_store_over_its_budget_makes_every_peer_give_up_persisted_entries() {
        let store = Arc::new(StoreCacheBudget::new(5_000));
        let mut a = EntryCache::new(limits(1000, u64::MAX, &store));
        let mut b = EntryCache::new(limits(1000, u64::MAX, &store));
        a.append(&(1..=4).map(|i| entry(i, 2000)).collect::<Vec<_>>());
        b.append(&(1..=4).map(|i| entry(i, 2000)).collect::<Vec<_>>());
        a.trim(4);
        b.trim(4);
        assert!(store.used.load(Ordering::Relaxed) <= 5_000);
        assert_eq!(store.used.load(Ordering::Relaxed), a.bytes() + b.bytes());
    }

    #[test]
    fn a_conflicting_append_replaces_the_tail_and_keeps_the_count_right() {
        let store = Arc::new(StoreCacheBudget::new(u64::MAX));
        let mut c = EntryCache::new(limits(1000, u64::MAX, &store));
        c.append(&(1..=5).map(|i| entry(i, 100)).collect::<Vec<_>>());
        c.append(&[entry(3, 10)]);
        assert_eq!((c.first_index(), c.last_index()), (Some(1), Some(3)));
        assert_eq!(c.get(3).unwrap().data.len(), 10);
        assert_eq!(store.used.load(Ordering::Relaxed), c.bytes());
        c.drop_through(2);
        assert_eq!(c.iter_from(0).map(|e| e.index).collect::<Vec<_>>(), [3]);
        assert_eq!(store.used.load(Ordering::Relaxed), c.bytes());
    }
}
