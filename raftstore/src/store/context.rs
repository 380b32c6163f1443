//! [`StoreContext`]: what every poller of a store shares (settings, engines,
//! counters, the transport, the workers' queues, the router and the ticker).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crossbeam_channel::Sender;
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::LogEngine;
use shoal_proto::raft_serverpb::RaftMessage;
use shoal_router::Ticker;

use crate::config::Config;
use crate::fsm::StoreRouter;
use crate::metrics::StoreMetrics;
use crate::msg::PeerTick;
use crate::raft::apply::ApplyMsg;
use crate::raft::entry_cache::{CacheLimits, StoreCacheBudget};
use crate::raft::storage::StorageDeps;
use crate::store::liveness::StoreLiveness;
use crate::store::ranges::RegionRanges;
use crate::transport::{send_counted, Transport};
use crate::worker::log_gc::LogGcTask;
use crate::worker::log_writer::WriteTask;
use crate::worker::read_pool::ReadPool;
use crate::worker::region::RegionTask;
use crate::worker::snap_gen::SnapTask;

/// What every poller of a store shares.
pub(crate) struct StoreContext {
    /// This store's id.
    pub(crate) store_id: u64,
    /// Settings.
    pub(crate) cfg: Config,
    /// The shared Raft log (peers read entries through it; only the log writer
    /// writes).
    pub(crate) log: Arc<dyn LogEngine>,
    /// The state machine (pollers only take snapshots of it).
    pub(crate) kv: RocksKvEngine,
    /// Counters.
    pub(crate) metrics: Arc<StoreMetrics>,
    /// Where messages to other stores go.
    pub(crate) transport: Arc<dyn Transport>,
    /// The log writer's queue.
    pub(crate) writer: Sender<WriteTask>,
    /// The apply workers' queues; region `r` goes to `apply[r % len]`.
    pub(crate) apply: Vec<Sender<ApplyMsg>>,
    /// The region worker's queue.
    pub(crate) region_worker: Sender<RegionTask>,
    /// The log GC worker's queue.
    pub(crate) log_gc: Sender<LogGcTask>,
    /// Threads for scans and checksums (never on a poller).
    pub(crate) read_pool: ReadPool,
    /// The store's router, to start peers of regions split off.
    pub(crate) router: StoreRouter,
    /// The store's ticker, to register new peers' ticks.
    pub(crate) ticker: Ticker<PeerTick>,
    /// What the peers' entry caches may hold together.
    pub(crate) entry_cache: Arc<StoreCacheBudget>,
    /// The key ranges of this store's regions and its tombstones.
    pub(crate) ranges: Arc<RegionRanges>,
    /// The snapshot worker's queue (`None`: no snapshot directory).
    pub(crate) snap_tasks: Option<Sender<SnapTask>>,
    /// Snapshot directories to remove (by the snapshot worker).
    pub(crate) snap_removals: Sender<PathBuf>,
    /// Snapshots being received now.
    pub(crate) receiving: Arc<AtomicUsize>,
    /// Store liveness: heartbeats to send, and dormant peers waiting on stores.
    pub(crate) liveness: Arc<StoreLiveness>,
    /// The regions whose peer here leads and is awake: what an unreachable store
    /// is reported to (a dormant leader sends nothing; a follower has no use for
    /// it), so a report costs a message per leader, not per peer.
    pub(crate) awake_leaders: parking_lot::Mutex<std::collections::HashSet<u64>>,
}

impl StoreContext {
    /// The bounds of a new peer's entry cache.
    pub(crate) fn cache_limits(&self) -> CacheLimits {
        CacheLimits {
            entries: self.cfg.entry_cache_limit,
            bytes: self.cfg.entry_cache_max_bytes,
            store: self.entry_cache.clone(),
        }
    }

    /// What a new peer's storage shares with the store.
    pub(crate) fn storage_deps(&self) -> StorageDeps {
        StorageDeps {
            log: self.log.clone(),
            cache: self.cache_limits(),
            ranges: self.ranges.clone(),
            snap_tasks: self.snap_tasks.clone(),
        }
    }

    /// Where snapshots live, if this store has them.
    pub(crate) fn snap_root(&self) -> Option<&Path> {
        self.cfg.snap_dir.as_deref()
    }

    /// Has the snapshot worker remove a snapshot directory.
    pub(crate) fn remove_snapshot_dir(&self, dir: PathBuf) {
        let _ = self.snap_removals.send(dir);
    }

    /// The apply worker of a region.
    pub(crate) fn apply_worker(&self, region_id: u64) -> &Sender<ApplyMsg> {
        &self.apply[(region_id % self.apply.len() as u64) as usize]
    }

    /// Records whether region `region_id`'s peer here leads and is awake.
    pub(crate) fn awake_leader(&self, region_id: u64, yes: bool) {
        let mut set = self.awake_leaders.lock();
        match yes {
            true => set.insert(region_id),
            false => set.remove(&region_id),
        };
    }

    /// Sends messages, one batch per store, and counts them.
    pub(crate) fn send_messages(&self, msgs: Vec<RaftMessage>) {
        send_counted(self.transport.as_ref(), &self.metrics, msgs);
    }
}
