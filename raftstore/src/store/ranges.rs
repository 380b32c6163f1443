//! [`RegionRanges`]: the key range of every peer on this store, and the regions
//! it tombstoned, in memory: what a snapshot is checked against before it may
//! create a peer or widen one (two regions of a store never overlap), without a
//! disk read on the poller.
//!
//! Kept by the peers' storage (`PeerStorage::new` and `set_region`: creation,
//! split, merge, snapshot) and by destruction; loaded with the tombstones at
//! start-up.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use shoal_proto::metapb::Region;

/// The ranges of a store's regions; see the module docs.
#[derive(Default)]
pub(crate) struct RegionRanges {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Region id -> `[start, end)` (an empty end: no bound).
    ranges: HashMap<u64, (Vec<u8>, Vec<u8>)>,
    /// Regions merged away on this store: never created again.
    tombstones: HashSet<u64>,
}

/// Whether `[s1, e1)` and `[s2, e2)` share a key (an empty end has no bound).
pub(crate) fn overlap(s1: &[u8], e1: &[u8], s2: &[u8], e2: &[u8]) -> bool {
    (e1.is_empty() || s2 < e1) && (e2.is_empty() || s1 < e2)
}

impl RegionRanges {
    /// Records (or moves) `region`'s range.
    pub(crate) fn set(&self, region: &Region) {
        self.set_range(region.id, &region.start_key, &region.end_key);
    }

    /// Records (or moves) a region's range.
    pub(crate) fn set_range(&self, region_id: u64, start: &[u8], end: &[u8]) {
        self.inner
            .lock()
            .ranges
            .insert(region_id, (start.to_vec(), end.to_vec()));
    }

    /// Forgets a region; `tombstone` when it was merged away (never to return).
    pub(crate) fn remove(&self, region_id: u64, tombstone: bool) {
        let mut inner = self.inner.lock();
        inner.ranges.remove(&region_id);
        if tombstone {
            inner.tombstones.insert(region_id);
        }
    }

    /// Marks regions as merged away on this store (at start-up).
    pub(crate) fn add_tombstones(&self, ids: impl IntoIterator<Item = u64>) {
        self.inner.lock().tombstones.extend(ids);
    }

    /// A region other than `except` whose range overlaps `[start, end)`.
    pub(crate) fn overlapping(&self, start: &[u8], end: &[u8], except: u64) -> Option<u64> {
        let inner = self.inner.lock();
        inner
            .ranges
            .iter()
            .find(|(id, (s, e))| **id != except && overlap(s, e, start, end))
            .map(|(id, _)| *id)
    }

    /// Records `[start, end)` for a new region unless it overlaps one this store
    /// has or the region was merged away here: the check and the record are one
    /// step, so two snapshots cannot both take a range. The region in the way, if
    /// any.
    pub(crate) fn reserve(&self, region_id: u64, start: &[u8], end: &[u8]) -> Result<(), String> {
        let mut inner = self.inner.lock();
        if inner.tombstones.contains(&region_id) {
            return Err(format!("region {region_id} was merged away on this store"));
        }
        if inner.ranges.contains_key(&region_id) {
            return Err(format!("region {region_id} is already here"));
        }
        if let Some((id, _)) = inner
            .ranges
            .iter()
            .find(|(_, (s, e))| overlap(s, e, start, end))
        {
            return Err(format!("its range overlaps region {id} of this store"));
        }
        inner
            .ranges
            .insert(region_id, (start.to_vec(), end.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_overlap_when_they_share_a_key() {
        assert!(overlap(b"a", b"c", b"b", b"d"));
        assert!(!overlap(b"a", b"b", b"b", b"c"), "end is exclusive");
        assert!(overlap(b"a", b"", b"x", b"y"), "no end bound");
        assert!(overlap(b"", b"", b"", b"b"));
        assert!(!overlap(b"c", b"", b"a", b"c"));
    }

    #[test]
    fn a_reservation_is_refused_over_a_region_or_a_tombstone() {
        let r = RegionRanges::default();
        r.set_range(1, b"", b"m");
        assert!(r.reserve(2, b"k", b"z").is_err());
        r.reserve(2, b"m", b"").unwrap();
        assert!(r.reserve(2, b"m", b"").is_err(), "already here");
        r.remove(1, true);
        assert!(r.reserve(1, b"", b"m").is_err(), "merged away");
        r.reserve(3, b"", b"m").unwrap();
        assert_eq!(r.overlapping(b"a", b"b", 0), Some(3));
        assert_eq!(r.overlapping(b"a", b"b", 3), None);
    }
}
