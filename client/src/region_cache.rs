//! The client's view of the cluster: regions by key range, each region's leader (as
//! far as the client knows), store addresses, and which stores recently failed.
//!
//! Invariants:
//! - Cached regions never overlap. `by_start` maps each cached region's start key to
//!   its id; a key belongs to the region with the greatest start key <= the key, if
//!   that region's end key is past the key (otherwise the key falls in a hole and the
//!   client reloads).
//! - Information only moves forward: a region is not inserted if a cached region that
//!   overlaps it has a newer epoch (`version` grows on every split and merge, and the
//!   regions that replace a range always have a higher version than the ones they
//!   replace), so a lagging store's `ListRegions` cannot undo a split the client
//!   already learned from an `EpochNotMatch`.
//! - The cache lives behind a plain lock and is never held across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::{Duration, Instant};

use shoal_proto::adminpb::ListRegionsResponse;
use shoal_proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use shoal_proto::RegionExt;

/// A cached region and the leader the client believes it has.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedRegion {
    /// The region (range, epoch, peers).
    pub region: Region,
    /// The peer believed to lead it; `None` when unknown.
    pub leader: Option<Peer>,
}

/// Where to send one attempt: a peer of the region and its store's address.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) peer: Peer,
    pub(crate) address: String,
}

/// The region cache. See the module docs for its invariants.
#[derive(Debug, Default)]
pub(crate) struct RegionCache {
    by_start: BTreeMap<Vec<u8>, u64>,
    regions: HashMap<u64, CachedRegion>,
    stores: HashMap<u64, String>,
    /// Stores whose last RPC failed at the transport level, and when.
    down: HashMap<u64, Instant>,
}

fn epoch(region: &Region) -> RegionEpoch {
    region.region_epoch.unwrap_or_default()
}

impl RegionCache {
    /// The cached region containing `key`.
    pub(crate) fn lookup_key(&self, key: &[u8]) -> Option<&CachedRegion> {
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let cached = &self.regions[id];
        cached.region.contains_key(key).then_some(cached)
    }

    /// The cached region with this id.
    pub(crate) fn get(&self, region_id: u64) -> Option<&CachedRegion> {
        self.regions.get(&region_id)
    }

    /// Every cached region, in key order.
    pub(crate) fn snapshot(&self) -> Vec<CachedRegion> {
        self.by_start
            .values()
            .map(|id| self.regions[id].clone())
            .collect()
    }

    /// Known store addresses, healthy stores first.
    pub(crate) fn store_addresses(&self, now: Instant, cooldown: Duration) -> Vec<String> {
        let mut stores: Vec<(bool, u64, &String)> = self
            .stores
            .iter()
            .map(|(id, addr)| (self.is_down(*id, now, cooldown), *id, addr))
            .collect();
        stores.sort();
        stores.into_iter().map(|(_, _, a)| a.clone()).collect()
    }

    /// The address of `store_id`, if known.
    pub(crate) fn store_address(&self, store_id: u64) -> Option<&str> {
        self.stores.get(&store_id).map(String::as_str)
    }

    /// The store serving at `address`, if known.
    pub(crate) fn store_at(&self, address: &str) -> Option<u64> {
        self.stores
            .iter()
            .find(|(_, a)| a.as_str() == address)
            .map(|(id, _)| *id)
    }

    /// Records a store's address.
    pub(crate) fn set_store(&mut self, store: &Store) {
        if !store.address.is_empty() {
            self.stores.insert(store.id, store.address.clone());
        }
    }

    /// Merges a `ListRegions` answer: stores, then regions (stale ones are skipped).
    pub(crate) fn apply_list(&mut self, resp: &ListRegionsResponse) {
        for store in &resp.stores {
            self.set_store(store);
        }
        for info in &resp.regions {
            if let Some(region) = &info.region {
                self.insert(region.clone(), info.leader);
            }
        }
    }

    /// Caches `region`, replacing every cached region it overlaps. Returns false (and
    /// changes nothing) when an overlapping cached region is newer. When `leader` is
    /// `None`, a previously known leader of the same region id is kept if it is still
    /// one of the region's peers.
    pub(crate) fn insert(&mut self, region: Region, leader: Option<Peer>) -> bool {
        if !region.end_key.is_empty() && region.start_key >= region.end_key {
            return false;
        }
        let new = epoch(&region);
        let mut victims = self.overlapping(&region.start_key, &region.end_key);
        if self.regions.contains_key(&region.id) && !victims.contains(&region.id) {
            victims.push(region.id);
        }
        for id in &victims {
            let old = epoch(&self.regions[id].region);
            let same_id = *id == region.id;
            if old.version > new.version
                || (same_id && old.version == new.version && old.conf_ver > new.conf_ver)
            {
                return false;
            }
        }
        let old_leader = self
            .regions
            .get(&region.id)
            .and_then(|c| c.leader)
            .filter(|l| region.peers.contains(l));
        for id in victims {
            self.remove(id);
        }
        self.by_start.insert(region.start_key.clone(), region.id);
        let leader = leader.or(old_leader);
        self.regions
            .insert(region.id, CachedRegion { region, leader });
        true
    }

    /// Drops a region from the cache.
    pub(crate) fn remove(&mut self, region_id: u64) -> Option<CachedRegion> {
        let cached = self.regions.remove(&region_id)?;
        if self.by_start.get(&cached.region.start_key) == Some(&region_id) {
            self.by_start.remove(&cached.region.start_key);
        }
        Some(cached)
    }

    /// Drops a region only if the cache still holds the epoch a failed request was
    /// routed with (another task may already have replaced it with fresher data).
    pub(crate) fn invalidate(&mut self, routed: &Region) {
        if self
            .regions
            .get(&routed.id)
            .is_some_and(|c| epoch(&c.region) == epoch(routed))
        {
            self.remove(routed.id);
        }
    }

    /// Replaces `routed` by the regions a store says now cover its range (from
    /// `EpochNotMatch{current_regions}` or a split/merge answer):
    /// drops the stale entry and caches the store's current regions. A region without a
    /// known leader gets its peer on `answering_store` as leader guess: after a split,
    /// the new regions usually elect a leader where the parent's leader was.
    pub(crate) fn replace_regions(
        &mut self,
        routed: &Region,
        current: Vec<Region>,
        answering_store: u64,
    ) {
        self.invalidate(routed);
        for region in current {
            let known = self
                .regions
                .get(&region.id)
                .and_then(|c| c.leader)
                .filter(|l| region.peers.contains(l));
            let guess = region.peer_on_store(answering_store).copied();
            self.insert(region, known.or(guess));
        }
    }

    /// Records `peer` as the leader of `region_id` (if the region is cached).
    pub(crate) fn set_leader(&mut self, region_id: u64, peer: Peer) {
        if let Some(c) = self.regions.get_mut(&region_id) {
            c.leader = Some(peer);
        }
    }

    /// Forgets the leader of `region_id` if it is still `peer`.
    pub(crate) fn clear_leader_if(&mut self, region_id: u64, peer: &Peer) {
        if let Some(c) = self.regions.get_mut(&region_id) {
            if c.leader.as_ref() == Some(peer) {
                c.leader = None;
            }
        }
    }

    /// A transport failure on `store_id`: avoid the store for a while and forget every
    /// leader guess that points at it, so that all its regions try other peers.
    pub(crate) fn mark_down(&mut self, store_id: u64, now: Instant) {
        self.down.insert(store_id, now);
        for c in self.regions.values_mut() {
            if c.leader.as_ref().is_some_and(|l| l.store_id == store_id) {
                c.leader = None;
            }
        }
    }

    /// The store answered: it is up.
    pub(crate) fn mark_up(&mut self, store_id: u64) {
        self.down.remove(&store_id);
    }

    /// Whether `store_id` has a transport failure on record (however old).
    pub(crate) fn has_down_mark(&self, store_id: u64) -> bool {
        self.down.contains_key(&store_id)
    }

    /// Whether `store_id` failed less than `cooldown` ago.
    pub(crate) fn is_down(&self, store_id: u64, now: Instant, cooldown: Duration) -> bool {
        self.down
            .get(&store_id)
            .is_some_and(|since| now.duration_since(*since) < cooldown)
    }

    /// Where to send the next attempt for `region_id`: the cached leader if its store is
    /// usable (address known, not recently down); otherwise the `cursor`-th usable
    /// voter (callers bump `cursor` to walk the peers); otherwise, when every store is
    /// down, the `cursor`-th voter with a known address anyway.
    pub(crate) fn pick_target(
        &self,
        region_id: u64,
        cursor: usize,
        now: Instant,
        cooldown: Duration,
    ) -> Option<Target> {
        let cached = self.regions.get(&region_id)?;
        let target = |peer: &Peer| {
            self.stores.get(&peer.store_id).map(|a| Target {
                peer: *peer,
                address: a.clone(),
            })
        };
        let usable = |peer: &Peer| {
            self.stores.contains_key(&peer.store_id) && !self.is_down(peer.store_id, now, cooldown)
        };
        if let Some(leader) = cached.leader.as_ref().filter(|l| usable(l)) {
            return target(leader);
        }
        let mut voters: Vec<&Peer> = cached
            .region
            .peers
            .iter()
            .filter(|p| p.role() == PeerRole::Voter)
            .collect();
        if voters.is_empty() {
            voters = cached.region.peers.iter().collect();
        }
        let up: Vec<&Peer> = voters.iter().copied().filter(|p| usable(p)).collect();
        let candidates: Vec<&Peer> = if up.is_empty() {
            voters
                .into_iter()
                .filter(|p| self.stores.contains_key(&p.store_id))
                .collect()
        } else {
            up
        };
        if candidates.is_empty() {
            return None;
        }
        target(candidates[cursor % candidates.len()])
    }

    /// Ids of the cached regions overlapping `[start, end)` (empty `end` = unbounded).
    fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<u64> {
        let mut ids = Vec::new();
        if let Some((_, id)) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(start)))
            .next_back()
        {
            // It starts before `start`: it overlaps if it reaches past `start`.
            if self.regions[id].region.contains_key(start) {
                ids.push(*id);
            }
        }
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        ids.extend(
            self.by_start
                .range::<[u8], _>((Bound::Included(start), upper))
                .map(|(_, id)| *id),
        );
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, store_id: u64) -> Peer {
        Peer {
            id,
            store_id,
            role: PeerRole::Voter as i32,
        }
    }

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version,
            }),
            peers: vec![peer(id * 10 + 1, 1), peer(id * 10 + 2, 2)],
        }
    }

    fn cache_with_stores() -> RegionCache {
        let mut cache = RegionCache::default();
        for id in [1, 2] {
            cache.set_store(&Store {
                id,
                address: format!("s{id}"),
                ..Default::default()
            });
        }
        cache
    }

    fn ids(cache: &RegionCache) -> Vec<u64> {
        cache.snapshot().iter().map(|c| c.region.id).collect()
    }

    #[test]
    fn lookup_finds_the_covering_region_and_reports_holes() {
        let mut cache = RegionCache::default();
        assert!(cache.insert(region(1, b"", b"b", 1), None));
        assert!(cache.insert(region(2, b"c", b"", 1), None));
        assert_eq!(cache.lookup_key(b"").unwrap().region.id, 1);
        assert_eq!(cache.lookup_key(b"a").unwrap().region.id, 1);
        assert!(cache.lookup_key(b"b").is_none(), "[b, c) is a hole");
        assert_eq!(cache.lookup_key(b"c").unwrap().region.id, 2);
        assert_eq!(cache.lookup_key(b"zzz").unwrap().region.id, 2);
    }

    #[test]
    fn split_replaces_the_parent_and_stale_parent_is_refused() {
        let mut cache = RegionCache::default();
        cache.insert(region(1, b"", b"", 1), Some(peer(11, 1)));
        cache.insert(region(1, b"", b"m", 2), None);
        cache.insert(region(5, b"m", b"", 2), None);
        assert_eq!(ids(&cache), vec![1, 5]);
        assert_eq!(
            cache.get(1).unwrap().leader,
            Some(peer(11, 1)),
            "leader kept across the split"
        );
        // A lagging store still reports the unsplit parent: ignored.
        assert!(!cache.insert(region(1, b"", b"", 1), None));
        assert_eq!(ids(&cache), vec![1, 5]);
        assert_eq!(cache.lookup_key(b"x").unwrap().region.id, 5);
    }

    #[test]
    fn merge_replaces_both_halves() {
        let mut cache = RegionCache::default();
        cache.insert(region(1, b"", b"m", 2), None);
        cache.insert(region(5, b"m", b"t", 2), None);
        cache.insert(region(6, b"t", b"", 2), None);
        assert!(cache.insert(region(5, b"", b"t", 3), None));
        assert_eq!(ids(&cache), vec![5, 6]);
        assert_eq!(cache.lookup_key(b"a").unwrap().region.id, 5);
    }

    #[test]
    fn epoch_not_match_guesses_leader_on_the_answering_store() {
        let mut cache = RegionCache::default();
        let parent = region(1, b"", b"", 1);
        cache.insert(parent.clone(), Some(peer(12, 2)));
        cache.replace_regions(
            &parent,
            vec![region(1, b"", b"m", 2), region(5, b"m", b"", 2)],
            2,
        );
        assert_eq!(ids(&cache), vec![1, 5]);
        assert_eq!(cache.get(1).unwrap().leader, Some(peer(12, 2)));
        assert_eq!(cache.get(5).unwrap().leader, Some(peer(52, 2)));
    }

    #[test]
    fn pick_target_prefers_leader_then_walks_usable_peers() {
        let mut cache = cache_with_stores();
        let now = Instant::now();
        let cool = Duration::from_secs(1);
        cache.insert(region(1, b"", b"", 1), Some(peer(12, 2)));
        assert_eq!(cache.pick_target(1, 0, now, cool).unwrap().peer.id, 12);
        // Store 2 goes down: the leader guess is dropped, store 1's peer is tried,
        // whatever the cursor.
        cache.mark_down(2, now);
        assert_eq!(cache.get(1).unwrap().leader, None);
        assert_eq!(cache.pick_target(1, 0, now, cool).unwrap().peer.id, 11);
        assert_eq!(cache.pick_target(1, 1, now, cool).unwrap().peer.id, 11);
        // Even a reported leader on a down store is skipped during the cooldown.
        cache.set_leader(1, peer(12, 2));
        assert_eq!(cache.pick_target(1, 0, now, cool).unwrap().peer.id, 11);
        // After the cooldown the store is tried again.
        let later = now + cool;
        assert_eq!(cache.pick_target(1, 0, later, cool).unwrap().peer.id, 12);
        // Every store down: still pick someone, rotating with the cursor.
        cache.mark_down(1, now);
        cache.mark_down(2, now);
        let a = cache.pick_target(1, 0, now, cool).unwrap().peer.id;
        let b = cache.pick_target(1, 1, now, cool).unwrap().peer.id;
        assert_ne!(a, b);
        cache.mark_up(2);
        assert_eq!(cache.pick_target(1, 0, now, cool).unwrap().peer.id, 12);
    }

    #[test]
    fn apply_list_records_stores_and_regions() {
        let mut cache = RegionCache::default();
        cache.apply_list(&ListRegionsResponse {
            regions: vec![shoal_proto::adminpb::RegionInfo {
                region: Some(region(3, b"", b"", 1)),
                leader: Some(peer(31, 1)),
                ..Default::default()
            }],
            stores: vec![Store {
                id: 1,
                address: "127.0.0.1:1".into(),
                ..Default::default()
            }],
        });
        assert_eq!(cache.store_at("127.0.0.1:1"), Some(1));
        let t = cache
            .pick_target(3, 0, Instant::now(), Duration::from_secs(1))
            .unwrap();
        assert_eq!((t.peer.id, t.address.as_str()), (31, "127.0.0.1:1"));
    }
}
