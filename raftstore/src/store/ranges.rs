//! [`RegionRanges`]: the key range of every peer on this store, and the regions
//! it tombstoned, in memory: what a snapshot is checked against before it may
//! create a peer or widen one (two regions of a store never overlap), without a
//! disk read on the poller.
//!
//! Kept by the peers' storage (`PeerStorage::new` and `set_region`: creation,
//! split, merge, snapshot) and by destruction; loaded with the tombstones at
//! start-up.

use std::collections::HashMap;

use parking_lot::Mutex;
use shoal_proto::metapb::Region;

/// The ranges of a store's regions; see the module docs.
#[derive(Default)]
pub(crate) struct RegionRanges {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Region id -> `[start, end)` (an empty end: no bound) and epoch version.
    ranges: HashMap<u64, (Vec<u8>, Vec<u8>, u64)>,
    /// Regions merged away or removed on this store: a peer of one is created
    /// again only by a message from a newer membership (the region added a
    /// replica here again), never for the peer that went.
    tombstones: HashMap<u64, Tombstone>,
}

/// A region merged away or removed on this store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tombstone {
    /// Messages from this membership or an older one create nothing
    /// (`u64::MAX`: merged away, never again).
    pub(crate) conf_ver: u64,
    /// The peer that went (0: not known): messages to it create nothing.
    pub(crate) peer_id: u64,
}

/// What overlaps a snapshot's region on this store.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Overlaps {
    /// Regions inside the snapshot's range at an older epoch version: stale (see
    /// [`RegionRanges::overlaps`]), to be removed.
    pub(crate) stale: Vec<u64>,
    /// Any other region in the way.
    pub(crate) others: Vec<u64>,
}

/// Whether `[s1, e1)` and `[s2, e2)` share a key (an empty end has no bound).
pub(crate) fn overlap(s1: &[u8], e1: &[u8], s2: &[u8], e2: &[u8]) -> bool {
    (e1.is_empty() || s2 < e1) && (e2.is_empty() || s1 < e2)
}

/// Whether `[s1, e1)` lies within `[s2, e2)` (an empty end has no bound).
pub(crate) fn within(s1: &[u8], e1: &[u8], s2: &[u8], e2: &[u8]) -> bool {
    s1 >= s2 && (e2.is_empty() || (!e1.is_empty() && e1 <= e2))
}

impl RegionRanges {
    /// Records (or moves) `region`'s range.
    pub(crate) fn set(&self, region: &Region) {
        let version = region.region_epoch.unwrap_or_default().version;
        self.inner.lock().ranges.insert(
            region.id,
            (region.start_key.clone(), region.end_key.clone(), version),
        );
    }

    /// Forgets a region; `tombstone` when it was merged away or removed here.
    pub(crate) fn remove(&self, region_id: u64, tombstone: Option<Tombstone>) {
        let mut inner = self.inner.lock();
        inner.ranges.remove(&region_id);
        if let Some(t) = tombstone {
            inner.add_tombstone(region_id, t);
        }
    }

    /// The region's tombstone on this store, if it was merged away or removed here.
    pub(crate) fn tombstone(&self, region_id: u64) -> Option<Tombstone> {
        self.inner.lock().tombstones.get(&region_id).copied()
    }

    /// Records the tombstones found at start-up.
    pub(crate) fn add_tombstones(&self, ids: impl IntoIterator<Item = (u64, Tombstone)>) {
        let mut inner = self.inner.lock();
        for (id, t) in ids {
            inner.add_tombstone(id, t);
        }
    }

    /// The regions other than `region` that overlap its range, told apart: a
    /// region **inside** its range at an **older** epoch version is stale. (A
    /// range changes by split, which raises the version of every region it makes,
    /// or by merge, which raises the target's; so at `region`'s version that range
    /// was `region`'s alone, and a region inside it with an older version was
    /// merged in or split away before, under every id it had: it is not alive
    /// anywhere. A region that only partly overlaps may be alive under its id with
    /// a newer range, e.g. the parent of a split this store missed: it catches up.)
    pub(crate) fn overlaps(&self, region: &Region) -> Overlaps {
        let inner = self.inner.lock();
        let version = region.region_epoch.unwrap_or_default().version;
        let (start, end) = (&region.start_key, &region.end_key);
        let mut out = Overlaps::default();
        for (id, (s, e, v)) in &inner.ranges {
            if *id == region.id || !overlap(s, e, start, end) {
                continue;
            }
            // An uninitialized region (version 0) is never judged stale: its
            // version is not known yet.
            match *v > 0 && *v < version && within(s, e, start, end) {
                true => out.stale.push(*id),
                false => out.others.push(*id),
            }
        }
        out
    }

    /// Records `[start, end)` for peer `peer_id` of a new, uninitialized region
    /// unless it overlaps one this store has, or the region was merged away or
    /// removed here (the peer that went, or a membership no newer than the
    /// tombstone's; `conf_ver` is the sender's): the check and the record are one
    /// step, so two messages cannot both take a range.
    pub(crate) fn reserve(
        &self,
        region_id: u64,
        peer_id: u64,
        conf_ver: u64,
        start: &[u8],
        end: &[u8],
    ) -> Result<(), String> {
        let mut inner = self.inner.lock();
        if let Some(&t) = inner.tombstones.get(&region_id) {
            if conf_ver <= t.conf_ver || peer_id == t.peer_id {
                return Err(format!(
                    "region {region_id} was merged away or removed on this store ({t:?}; \
                     the message is to peer {peer_id}, from conf_ver {conf_ver})"
                ));
            }
        }
        if inner.ranges.contains_key(&region_id) {
            return Err(format!("region {region_id} is already here"));
        }
        if let Some((id, _)) = inner
            .ranges
            .iter()
            .find(|(_, (s, e, _))| overlap(s, e, start, end))
        {
            return Err(format!("its range overlaps region {id} of this store"));
        }
        inner
            .ranges
            .insert(region_id, (start.to_vec(), end.to_vec(), 0));
        Ok(())
    }
}

impl Inner {
    /// Keeps the stronger of two tombstones of a region (the newer `conf_ver`; the
    /// peer of the newer one).
    fn add_tombstone(&mut self, region_id: u64, t: Tombstone) {
        let slot = self.tombstones.entry(region_id).or_default();
        if t.conf_ver >= slot.conf_ver {
            *slot = t;
        }
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
    fn a_range_within_another_is_within_it() {
        assert!(within(b"b", b"c", b"a", b"d"));
        assert!(within(b"b", b"c", b"b", b"c"));
        assert!(within(b"b", b"", b"a", b""));
        assert!(!within(b"b", b"", b"a", b"z"));
        assert!(!within(b"a", b"c", b"b", b""));
    }

    #[test]
    fn a_reservation_is_refused_over_a_region_or_a_tombstone() {
        let r = RegionRanges::default();
        r.set(&region(1, b"", b"m", 1));
        assert!(r.reserve(2, 20, 1, b"k", b"z").is_err());
        r.reserve(2, 20, 1, b"m", b"").unwrap();
        assert!(r.reserve(2, 20, 1, b"m", b"").is_err(), "already here");
        let gone = Tombstone {
            conf_ver: 3,
            peer_id: 10,
        };
        r.remove(1, Some(gone));
        assert!(
            r.reserve(1, 11, 3, b"", b"m").is_err(),
            "no newer membership"
        );
        assert!(
            r.reserve(1, 10, 9, b"", b"m").is_err(),
            "the peer that went"
        );
        r.reserve(1, 11, 4, b"", b"m").unwrap();
        r.remove(1, None);
        r.reserve(3, 30, 1, b"", b"m").unwrap();
    }

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(shoal_proto::metapb::RegionEpoch {
                conf_ver: 1,
                version,
            }),
            peers: Vec::new(),
        }
    }

    #[test]
    fn an_older_region_inside_a_snapshot_is_stale_one_partly_in_it_is_not() {
        let r = RegionRanges::default();
        r.set(&region(1, b"", b"m", 2));
        r.set(&region(2, b"m", b"t", 2));
        r.set(&region(3, b"t", b"", 2));
        // 2 merged into 1 (version 3): 2 is stale under 1's snapshot.
        let o = r.overlaps(&region(1, b"", b"t", 3));
        assert_eq!((o.stale, o.others), (vec![2], vec![]));
        // At 2's own version, 1 cannot have taken 2's range: 2 is in the way.
        let o = r.overlaps(&region(1, b"", b"t", 2));
        assert_eq!((o.stale, o.others), (vec![], vec![2]));
        // A region split off 3's range at a newer version only partly covers 3,
        // which may be alive with a smaller range: in the way, not stale.
        let o = r.overlaps(&region(9, b"x", b"", 3));
        assert_eq!((o.stale, o.others), (vec![], vec![3]));
    }
}
