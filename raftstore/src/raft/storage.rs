//! [`PeerStorage`]: raft-rs's `Storage` for one peer, over the shared log engine plus
//! an in-memory cache of the newest entries.
//!
//! Invariants:
//! - The cache holds a contiguous run of entries ending at the last index. Entries
//!   not yet persisted are always in it: raft-rs reads entries right after
//!   `advance_append_async`, before the log writer has synced them.
//! - An entry leaves the cache only when the log writer has persisted every append
//!   this peer made so far (tracked by ready number), so a conflicting append that
//!   is still in flight can never be evicted in favour of the stale entry on disk.
//! - `first_index` is the truncated index + 1, from the apply state; the log engine
//!   may still hold older entries (its compaction is lazy), they are never read.
//! - Snapshots: a leader's come from [`SnapSource`] (no IO: the snapshot worker
//!   generates them); a follower's replace the log's bounds at once
//!   ([`PeerStorage::apply_snapshot_meta`]), before its data is applied.

use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState as PbHardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use shoal_engine::{LogEngine, LogEntry};
use shoal_proto::metapb::{PeerRole, Region};
use shoal_proto::raft_serverpb::{HardState, RaftApplyState, RaftLocalState};
use shoal_proto::RegionExt;

use crate::operation::snapshot::gen::SnapSource;
use crate::raft::encode_pb;
use crate::raft::entry_cache::{CacheLimits, EntryCache};
use crate::store::ranges::RegionRanges;
use crate::worker::snap_gen::SnapTask;

/// One peer's view of its Raft log and state.
pub struct PeerStorage {
    region_id: u64,
    log: Arc<dyn LogEngine>,
    region: Region,
    raft_state: RaftLocalState,
    apply_state: RaftApplyState,
    cache: EntryCache,
    /// Last log index known durable.
    persisted_last: u64,
    /// Ready number of the newest append; a persist report older than it does not
    /// cover every cached entry.
    last_append_ready: u64,
    /// The store's region ranges, kept as this peer's region changes.
    ranges: Arc<RegionRanges>,
    /// Bytes of entries in the log, estimated: what was appended, scaled down by
    /// each truncation (`raft-log-gc-size-limit` is checked against it).
    log_bytes: u64,
    /// A leader's snapshots.
    pub(crate) snap: SnapSource,
}

/// What a peer's storage shares with the store.
pub(crate) struct StorageDeps {
    /// The shared log.
    pub(crate) log: Arc<dyn LogEngine>,
    /// The entry cache's bounds.
    pub(crate) cache: CacheLimits,
    /// The store's region ranges.
    pub(crate) ranges: Arc<RegionRanges>,
    /// The snapshot worker's queue (`None`: no snapshots on this store).
    pub(crate) snap_tasks: Option<crossbeam_channel::Sender<SnapTask>>,
}

/// The raft-rs `ConfState` of a region's membership. In a joint configuration the
/// outgoing voters are the voters and demoting voters, and demoting voters are the
/// learners of the next configuration (raft-rs's own model); Shoal leaves joint
/// configurations explicitly (`auto_leave` off).
pub fn conf_state_of(region: &Region) -> ConfState {
    let mut cs = ConfState::default();
    let joint = region.is_joint();
    for p in &region.peers {
        match PeerRole::try_from(p.role).unwrap_or(PeerRole::Voter) {
            PeerRole::Voter => {
                cs.voters.push(p.id);
                if joint {
                    cs.voters_outgoing.push(p.id);
                }
            }
            PeerRole::Learner => cs.learners.push(p.id),
            PeerRole::IncomingVoter => cs.voters.push(p.id),
            PeerRole::DemotingVoter => {
                cs.voters_outgoing.push(p.id);
                cs.learners_next.push(p.id);
            }
        }
    }
    cs
}

fn to_log_entry(e: &Entry) -> LogEntry {
    LogEntry {
        index: e.index,
        term: e.term,
        data: encode_pb(e),
    }
}

fn from_log_entry(region_id: u64, e: &LogEntry) -> raft::Result<Entry> {
    Entry::parse_from_bytes(&e.data).map_err(|err| {
        raft::Error::Store(StorageError::Other(
            format!(
                "region {region_id}: entry {} does not decode: {err}",
                e.index
            )
            .into(),
        ))
    })
}

fn engine_error(e: shoal_engine::Error) -> raft::Error {
    match e {
        shoal_engine::Error::Compacted { .. } => raft::Error::Store(StorageError::Compacted),
        shoal_engine::Error::Unavailable { .. } => raft::Error::Store(StorageError::Unavailable),
        other => raft::Error::Store(StorageError::Other(Box::new(other))),
    }
}

impl PeerStorage {
    /// A storage for `region` with the given persisted states; records the
    /// region's range with the store.
    pub(crate) fn new(
        deps: StorageDeps,
        region: Region,
        raft_state: RaftLocalState,
        apply_state: RaftApplyState,
    ) -> Self {
        let persisted_last = raft_state.last_index;
        deps.ranges.set(&region);
        PeerStorage {
            region_id: region.id,
            log: deps.log,
            snap: SnapSource::new(region.id, deps.snap_tasks),
            region,
            raft_state,
            apply_state,
            cache: EntryCache::new(deps.cache),
            persisted_last,
            last_append_ready: 0,
            ranges: deps.ranges,
            log_bytes: 0,
        }
    }

    /// The region as this peer knows it.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Replaces the region (after a split, a merge or a snapshot is applied).
    pub fn set_region(&mut self, region: Region) {
        self.ranges.set(&region);
        self.region = region;
    }

    /// The store's region ranges.
    pub(crate) fn ranges(&self) -> &RegionRanges {
        &self.ranges
    }

    /// A follower takes a snapshot at `index` (of `term`) of `region`: its log now
    /// starts after that index, holds nothing yet (the ready's own entries are
    /// appended next), and the region is the snapshot's. The log engine gets the
    /// same once the data is applied (`operation/snapshot/apply.rs`).
    pub(crate) fn apply_snapshot_meta(&mut self, index: u64, term: u64, region: Region) {
        self.apply_state.applied_index = index;
        self.apply_state.truncated_index = index;
        self.apply_state.truncated_term = term;
        self.apply_state.commit_index = index;
        self.apply_state.commit_term = term;
        self.cache.clear();
        self.log_bytes = 0;
        self.raft_state.last_index = index;
        self.persisted_last = index;
        self.set_region(region);
    }

    /// The current (possibly not yet persisted) raft state.
    pub fn raft_state(&self) -> &RaftLocalState {
        &self.raft_state
    }

    /// Records new entries from a ready (numbered `ready`) and returns them encoded for the
    /// log engine. Entries at or after the first new index are replaced.
    pub fn append(&mut self, entries: &[Entry], ready: u64) -> Vec<LogEntry> {
        let Some(first) = entries.first().map(|e| e.index) else {
            return Vec::new();
        };
        self.cache.append(entries);
        let last = entries.last().expect("non-empty").index;
        self.raft_state.last_index = last;
        self.persisted_last = self.persisted_last.min(first - 1);
        self.last_append_ready = ready;
        let encoded: Vec<LogEntry> = entries.iter().map(to_log_entry).collect();
        self.log_bytes += encoded.iter().map(|e| e.size() as u64).sum::<u64>();
        encoded
    }

    /// Records a new hard state.
    pub fn set_hard_state(&mut self, hs: &PbHardState) {
        self.raft_state.hard_state = Some(HardState {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        });
    }

    /// The log writer persisted this peer's readies up to `ready`.
    pub fn on_persisted(&mut self, ready: u64) {
        if ready >= self.last_append_ready {
            self.persisted_last = self.raft_state.last_index;
        }
        self.cache.trim(self.persisted_last);
    }

    /// A dormant peer lets its cached entries go (they are all in the log engine:
    /// a dormant peer has nothing unpersisted), and their memory.
    pub(crate) fn release_cache(&mut self) {
        if self.persisted_last == self.raft_state.last_index {
            self.cache.release();
        }
    }

    fn first_cached(&self) -> u64 {
        self.cache.first_index().unwrap_or(u64::MAX)
    }

    /// The log is truncated up to `index` (of `term`), applied and durable: entries
    /// up to it are never read again and leave the cache. False when the log was
    /// already truncated that far.
    pub fn compact_to(&mut self, index: u64, term: u64) -> bool {
        if index <= self.apply_state.truncated_index {
            return false;
        }
        let (first, last) = (
            self.apply_state.truncated_index + 1,
            self.raft_state.last_index,
        );
        if last >= first {
            let kept = last.saturating_sub(index);
            self.log_bytes =
                (self.log_bytes as u128 * kept as u128 / (last - first + 1) as u128) as u64;
        }
        self.apply_state.truncated_index = index;
        self.apply_state.truncated_term = term;
        self.cache.drop_through(index);
        self.snap.on_truncated(index);
        true
    }

    /// Bytes of entries in the log (an estimate; see the field).
    pub(crate) fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// The index of the last entry removed by log compaction (5 when none was).
    pub fn truncated_index(&self) -> u64 {
        self.apply_state.truncated_index
    }
}

impl raft::Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let hs = self.raft_state.hard_state.unwrap_or_default();
        let pb = PbHardState {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
            ..Default::default()
        };
        Ok(RaftState::new(pb, conf_state_of(&self.region)))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.raft_state.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let engine_hi = self.first_cached().clamp(low, high);
        if low < engine_hi {
            let mut fetched = Vec::new();
            self.log
                .fetch(
                    self.region_id,
                    low,
                    engine_hi,
                    Some(max as usize),
                    &mut fetched,
                )
                .map_err(engine_error)?;
            for le in &fetched {
                let e = from_log_entry(self.region_id, le)?;
                size += u64::from(e.compute_size());
                out.push(e);
            }
            if (out.len() as u64) < engine_hi - low {
                return Ok(out);
            }
        }
        // The cache is contiguous: start at `low`'s slot instead of filtering it all.
        for e in self.cache.iter_from(low).take_while(|e| e.index < high) {
            let esize = u64::from(e.compute_size());
            if !out.is_empty() && size + esize > max {
                break;
            }
            size += esize;
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index() {
            return Ok(self.apply_state.truncated_term);
        }
        if idx < self.truncated_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.raft_state.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(e) = self.cache.get(idx) {
            return Ok(e.term);
        }
        self.log.term(self.region_id, idx).map_err(engine_error)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.raft_state.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.snap
            .snapshot(request_index, self.truncated_index(), to)
    }
}

#[cfg(test)]
mod tests {
    use raft::Storage as _;
    use shoal_engine::LogBatch;

    use super::*;
    use crate::store::bootstrap::{initial_apply_state, initial_raft_state, INIT_INDEX, INIT_TERM};
    use crate::testing::region;

    const REGION: u64 = 1;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 10].into(),
            ..Default::default()
        }
    }

    /// A storage over a fresh log engine (kept alive by the returned dir) with a
    /// cache of `limit` entries.
    fn storage(limit: usize) -> (tempfile::TempDir, Arc<dyn LogEngine>, PeerStorage) {
        let dir = tempfile::tempdir().unwrap();
        let engines = shoal_engine::rocks::Engines::open(dir.path()).unwrap();
        let log: Arc<dyn LogEngine> = engines.log.clone();
        let deps = StorageDeps {
            log: log.clone(),
            cache: CacheLimits {
                entries: limit,
                bytes: u64::MAX,
                store: Arc::new(crate::raft::entry_cache::StoreCacheBudget::new(u64::MAX)),
            },
            ranges: Arc::default(),
            snap_tasks: None,
        };
        let s = PeerStorage::new(
            deps,
            region(REGION, b"", b"", 1, &[]),
            initial_raft_state(),
            initial_apply_state(),
        );
        (dir, log, s)
    }

    /// Appends `entries` as ready `ready` and, when `persist`, writes them to the
    /// log engine and reports them persisted (what the log writer does).
    fn append(s: &mut PeerStorage, log: &Arc<dyn LogEngine>, entries: &[Entry], ready: u64) {
        let encoded = s.append(entries, ready);
        let mut batch = LogBatch::new();
        batch.add(REGION, encoded, Some(*s.raft_state()));
        log.write(&batch).unwrap();
    }

    fn indexes(s: &PeerStorage, low: u64, high: u64, max: Option<u64>) -> Vec<(u64, u64)> {
        s.entries(low, high, max, GetEntriesContext::empty(false))
            .unwrap()
            .iter()
            .map(|e| (e.index, e.term))
            .collect()
    }

    #[test]
    fn bounds_follow_the_truncated_index_and_the_last_index() {
        let (_dir, log, mut s) = storage(16);
        assert_eq!(s.first_index().unwrap(), INIT_INDEX + 1);
        assert_eq!(s.last_index().unwrap(), INIT_INDEX);
        assert_eq!(s.term(INIT_INDEX).unwrap(), INIT_TERM);
        let es: Vec<Entry> = (6..=8).map(|i| entry(i, 6)).collect();
        append(&mut s, &log, &es, 1);
        assert_eq!(s.last_index().unwrap(), 8);
        let ctx = || GetEntriesContext::empty(false);
        let compacted = s.entries(INIT_INDEX, 7, None, ctx());
        assert!(matches!(
            compacted,
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let beyond = s.entries(6, 10, None, ctx());
        assert!(matches!(
            beyond,
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
        assert!(matches!(
            s.term(4),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            s.term(9),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
        assert_eq!(indexes(&s, 6, 9, None), vec![(6, 6), (7, 6), (8, 6)]);
    }

    #[test]
    fn a_compacted_log_starts_after_the_truncated_index_and_keeps_its_term() {
        let (_dir, log, mut s) = storage(16);
        let es: Vec<Entry> = (6..=10).map(|i| entry(i, 6 + i / 9)).collect();
        append(&mut s, &log, &es, 1);
        s.on_persisted(1);
        assert!(s.compact_to(8, 6));
        assert!(!s.compact_to(7, 6), "an older truncation changes nothing");
        assert_eq!(s.first_index().unwrap(), 9);
        assert_eq!(s.term(8).unwrap(), 6, "the truncated index keeps its term");
        let ctx = || GetEntriesContext::empty(false);
        assert!(matches!(
            s.entries(8, 10, None, ctx()),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            s.term(7),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(indexes(&s, 9, 11, None), vec![(9, 7), (10, 7)]);
        // Entries up to the truncated index left the cache: only 9 and 10 remain.
        assert_eq!(s.cache.len(), 2);
    }

    #[test]
    fn unpersisted_entries_are_served_from_the_cache() {
        let (_dir, log, mut s) = storage(2);
        // Appended but not written to the engine: only the cache has them.
        let es: Vec<Entry> = (6..=9).map(|i| entry(i, 6)).collect();
        let _ = s.append(&es, 1);
        assert_eq!(indexes(&s, 6, 10, None).len(), 4);
        assert_eq!(s.term(9).unwrap(), 6);
        // Over the cache limit, but nothing is evicted before it is persisted.
        s.on_persisted(0);
        assert_eq!(indexes(&s, 6, 10, None).len(), 4);
        drop(log);
    }

    #[test]
    fn persisted_entries_leave_the_cache_and_are_read_from_the_engine() {
        let (_dir, log, mut s) = storage(2);
        let es: Vec<Entry> = (6..=10).map(|i| entry(i, 6)).collect();
        append(&mut s, &log, &es, 1);
        s.on_persisted(1);
        assert_eq!(s.cache.len(), 2, "trimmed to the limit once persisted");
        assert_eq!(s.first_cached(), 9);
        // Reads span the engine and the cache, in order, and term lookups too.
        assert_eq!(
            indexes(&s, 6, 11, None),
            (6..=10).map(|i| (i, 6)).collect::<Vec<_>>()
        );
        assert_eq!(s.term(7).unwrap(), 6);
        // A size limit still returns at least one entry.
        assert_eq!(indexes(&s, 6, 11, Some(1)), vec![(6, 6)]);
    }

    #[test]
    fn a_conflicting_append_replaces_the_tail_and_pins_the_cache_until_persisted() {
        // No cache beyond what is unpersisted: anything persisted is evicted.
        let (_dir, log, mut s) = storage(0);
        let es: Vec<Entry> = (6..=9).map(|i| entry(i, 6)).collect();
        append(&mut s, &log, &es, 1);
        s.on_persisted(1);
        // A new leader overwrites from index 8 with term 7; ready 2 is in flight.
        let newer = [entry(8, 7)];
        let _ = s.append(&newer, 2);
        assert_eq!(s.last_index().unwrap(), 8);
        assert_eq!(
            s.term(8).unwrap(),
            7,
            "the new entry, not the stale one on disk"
        );
        // The report for ready 1 does not cover ready 2: entry 8 (term 7) stays
        // cached although the cache is over its limit (evicted, the stale entry 8
        // of term 6 on disk would be read instead).
        s.on_persisted(1);
        assert_eq!(s.term(8).unwrap(), 7);
        assert!(matches!(
            s.term(9),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
    }

    #[test]
    fn the_conf_state_lists_voters_and_learners() {
        let mut r = region(REGION, b"", b"", 1, &[]);
        r.peers = vec![
            shoal_proto::metapb::Peer {
                id: 1,
                store_id: 1,
                role: PeerRole::Voter as i32,
            },
            shoal_proto::metapb::Peer {
                id: 2,
                store_id: 2,
                role: PeerRole::Learner as i32,
            },
        ];
        let cs = conf_state_of(&r);
        assert_eq!((cs.voters, cs.learners), (vec![1], vec![2]));
    }
}
