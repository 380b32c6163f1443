//! The log GC worker: deletes the Raft log entries that peers truncated
//! (`operation/log_gc.rs`) and gives their space back, on a thread of its own so
//! that neither a poller nor the log writer (the fsync path) waits on it.
//!
//! It also removes, at start-up, the logs of regions this store tombstoned (merged
//! away) whose removal a crash prevented (`store/load.rs` finds them).
//!
//! Deleting is one range delete per region (`LogEngine::compact_to`, unsynced:
//! entries that come back after a crash are deleted again at start-up). A range
//! delete only hides the entries; RocksDB frees their space when it compacts the
//! files that hold them, which it may put off for long. So once
//! [`RECLAIM_AFTER_ENTRIES`] entries were deleted, or [`RECLAIM_EVERY`] passed with
//! any deleted, the worker compacts the log engine (`LogEngine::reclaim`): the
//! space of truncated entries comes back within that bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use shoal_engine::LogEngine;

use crate::metrics::StoreMetrics;

/// Deleted entries after which the log engine is compacted.
pub(crate) const RECLAIM_AFTER_ENTRIES: u64 = 64 * 1024;

/// Longest time deleted entries wait for the log engine to be compacted.
pub(crate) const RECLAIM_EVERY: Duration = Duration::from_secs(60);

/// Work for the log GC worker.
#[derive(Debug)]
pub(crate) enum LogGcTask {
    /// Delete `region_id`'s entries below `to`.
    Truncate {
        /// The region.
        region_id: u64,
        /// The first index kept.
        to: u64,
        /// The peer's span, entered while its entries are deleted.
        span: tracing::Span,
    },
    /// Remove the whole log and raft state of a region tombstoned on this store
    /// (merged away) whose removal a crash prevented.
    RemoveOrphan {
        /// The region.
        region_id: u64,
    },
}

/// The worker's parts.
pub(crate) struct LogGcWorker {
    pub(crate) log: Arc<dyn LogEngine>,
    pub(crate) metrics: Arc<StoreMetrics>,
}

impl LogGcWorker {
    /// The worker's loop; returns when every sender is gone.
    pub(crate) fn run(self, rx: Receiver<LogGcTask>) {
        let mut unreclaimed = 0u64;
        let mut since = Instant::now();
        loop {
            let wait = RECLAIM_EVERY.saturating_sub(since.elapsed());
            match rx.recv_timeout(wait) {
                Ok(first) => {
                    // Several truncations of one region queued: the last one wins.
                    let mut to: HashMap<u64, (u64, tracing::Span)> = HashMap::new();
                    for t in std::iter::once(first).chain(rx.try_iter()) {
                        match t {
                            LogGcTask::Truncate {
                                region_id,
                                to: i,
                                span,
                            } => {
                                let e = to.entry(region_id).or_insert((0, span));
                                e.0 = e.0.max(i);
                            }
                            LogGcTask::RemoveOrphan { region_id } => self.remove(region_id),
                        }
                    }
                    for (region_id, (to, span)) in to {
                        let _entered = span.enter();
                        unreclaimed += self.delete(region_id, to);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let due = unreclaimed > 0 && since.elapsed() >= RECLAIM_EVERY;
            if unreclaimed >= RECLAIM_AFTER_ENTRIES || due {
                self.reclaim();
                unreclaimed = 0;
            }
            if unreclaimed == 0 {
                since = Instant::now();
            }
        }
    }

    /// Deletes the entries; returns how many there were.
    fn delete(&self, region_id: u64, to: u64) -> u64 {
        match self.log.compact_to(region_id, to) {
            Ok(n) => {
                StoreMetrics::add(&self.metrics.log_entries_truncated, n);
                n
            }
            Err(e) => {
                // Harmless for correctness (the entries are never read again) but
                // their space stays taken until the next start deletes them.
                tracing::warn!(
                    region = region_id,
                    "cannot delete truncated log entries: {e}"
                );
                0
            }
        }
    }

    fn remove(&self, region_id: u64) {
        match self.log.remove_region(region_id) {
            Ok(()) => tracing::info!(
                region = region_id,
                "removed the log of a region merged away before a crash"
            ),
            Err(e) => tracing::warn!(region = region_id, "cannot remove an orphaned log: {e}"),
        }
    }

    fn reclaim(&self) {
        let start = Instant::now();
        if let Err(e) = self.log.reclaim() {
            tracing::warn!("cannot compact the log engine: {e}");
            return;
        }
        StoreMetrics::add(&self.metrics.log_reclaims, 1);
        tracing::debug!(took = ?start.elapsed(), "log engine compacted");
    }
}
