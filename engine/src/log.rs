//! The log engine: every region's Raft log and hard state, in one store.
//!
//! Contract (what raftstore relies on):
//! - **Durability.** When [`LogEngine::write`] returns `Ok`, every entry and state in the
//!   batch is on disk (one synced write for the whole batch, however many regions it spans).
//!   A batch is atomic: after a crash either all of it is there or none of it.
//! - **Order and overwrite.** Within a batch, writes apply in the order they were added.
//!   Appending entries that start at index `i` replaces every existing entry `>= i` of
//!   that region, including ones past the end of the new entries: this is the rule Raft
//!   needs when a follower's log conflicts with the leader's.
//! - **No holes.** A region's entries are contiguous from its first to its last index.
//!   Appending at `i` requires `i <= last + 1` (or an empty log); a gap is refused.
//!   [`LogBatch::replace`] starts a region's log afresh at any index.
//! - **Compaction.** [`LogEngine::compact_to`] removes entries below an index. Asking for
//!   a removed entry is [`Error::Compacted`](crate::Error::Compacted), never a silent
//!   empty answer. Compaction is not synced: after a crash some compacted entries may
//!   come back, which is harmless because the caller keeps its truncated index elsewhere.

use shoal_proto::raft_serverpb::RaftLocalState;

use crate::Result;

/// One Raft log entry as the log engine sees it: its position, its term, and the
/// caller's encoding of the entry (raftstore stores a raft-rs `eraftpb::Entry`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogEntry {
    /// The entry's log index (>= 1).
    pub index: u64,
    /// The term the entry was proposed in.
    pub term: u64,
    /// The encoded entry, opaque to the engine.
    pub data: Vec<u8>,
}

impl LogEntry {
    /// The bytes this entry takes against a fetch's byte limit.
    pub fn size(&self) -> usize {
        self.data.len() + 16
    }
}

/// What one region contributes to a [`LogBatch`].
#[derive(Clone, Debug, Default)]
pub struct RegionLogWrite {
    /// The region written.
    pub region_id: u64,
    /// Entries to append (contiguous, ascending); may be empty.
    pub entries: Vec<LogEntry>,
    /// The region's new hard state and last index, if it changed.
    pub state: Option<RaftLocalState>,
    /// Every existing entry of the region goes before `entries` are written: its log
    /// becomes exactly `entries` (a replica that took a snapshot starts a new log
    /// after it, which may not join the old one).
    pub replace: bool,
}

/// A write to many regions' logs that becomes durable with one sync.
#[derive(Clone, Debug, Default)]
pub struct LogBatch {
    writes: Vec<RegionLogWrite>,
}

impl LogBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `entries` to `region_id`'s log and, when given, sets its state.
    pub fn add(&mut self, region_id: u64, entries: Vec<LogEntry>, state: Option<RaftLocalState>) {
        if entries.is_empty() && state.is_none() {
            return;
        }
        self.writes.push(RegionLogWrite {
            region_id,
            entries,
            state,
            replace: false,
        });
    }

    /// Makes `region_id`'s log exactly `entries` (possibly none), dropping every
    /// entry it held, and sets its state when given: in the same synced write as the
    /// rest of the batch.
    pub fn replace(
        &mut self,
        region_id: u64,
        entries: Vec<LogEntry>,
        state: Option<RaftLocalState>,
    ) {
        self.writes.push(RegionLogWrite {
            region_id,
            entries,
            state,
            replace: true,
        });
    }

    /// Moves every write of `other` to the end of this batch (the log writer uses this
    /// to turn the tasks of several pollers into one write).
    pub fn extend(&mut self, other: LogBatch) {
        self.writes.extend(other.writes);
    }

    /// The writes, in the order they were added.
    pub fn writes(&self) -> &[RegionLogWrite] {
        &self.writes
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The number of distinct regions written.
    pub fn region_count(&self) -> usize {
        let mut ids: Vec<u64> = self.writes.iter().map(|w| w.region_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// The number of entries written.
    pub fn entry_count(&self) -> usize {
        self.writes.iter().map(|w| w.entries.len()).sum()
    }
}

/// Cumulative counters of a log engine since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Synced writes (each is one fsync of the engine's WAL).
    pub syncs: u64,
    /// Sum over synced writes of the regions each covered.
    pub regions_written: u64,
    /// Sum over synced writes of the entries each carried.
    pub entries_written: u64,
    /// Sum of the bytes of entry data written.
    pub bytes_written: u64,
}

/// The shared Raft log of every region on a store. See the module docs for the contract.
pub trait LogEngine: Send + Sync + 'static {
    /// Writes the batch with one sync. On return the batch is durable.
    fn write(&self, batch: &LogBatch) -> Result<()>;

    /// Appends the entries of `region_id` in `[lo, hi)` to `out`, stopping once their total
    /// [`LogEntry::size`] would exceed `max_bytes` (at least one entry is always returned).
    /// Errors with `Compacted` when `lo` is below the first index and `Unavailable` when
    /// `hi - 1` is past the last index.
    fn fetch(
        &self,
        region_id: u64,
        lo: u64,
        hi: u64,
        max_bytes: Option<usize>,
        out: &mut Vec<LogEntry>,
    ) -> Result<()>;

    /// The term of entry `index` of `region_id` (`Compacted` / `Unavailable` as for fetch).
    fn term(&self, region_id: u64, index: u64) -> Result<u64>;

    /// The lowest index present, or `None` when the region has no entries.
    fn first_index(&self, region_id: u64) -> Result<Option<u64>>;

    /// The highest index present, or `None` when the region has no entries.
    fn last_index(&self, region_id: u64) -> Result<Option<u64>>;

    /// The region's last written state, or `None` if none was ever written.
    fn raft_state(&self, region_id: u64) -> Result<Option<RaftLocalState>>;

    /// Removes every entry of `region_id` with an index below `to` (log GC). Returns how
    /// many were removed. Not synced (see the module docs).
    fn compact_to(&self, region_id: u64, to: u64) -> Result<u64>;

    /// Removes the region's whole log and state (the region was destroyed). Synced.
    fn remove_region(&self, region_id: u64) -> Result<()>;

    /// Every region that has entries or a state, ascending (used on restart).
    fn regions(&self) -> Result<Vec<u64>>;

    /// Counters since the engine was opened.
    fn stats(&self) -> LogStats;

    /// Gives the space of removed entries back to the file system now (a removal
    /// only hides entries until the storage compacts them). May take a while: call
    /// it off the write path.
    fn reclaim(&self) -> Result<()>;

    /// Bytes the engine takes on disk now (its files and write-ahead log).
    fn disk_size(&self) -> Result<u64>;
}
