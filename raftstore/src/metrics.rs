//! Store counters: what the poll round, the log writer, the transport and apply did.
//! Sums, so that two reads give averages over the interval between them.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use shoal_proto::adminpb::StoreCounters;

/// Counters shared by every thread of one store.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Synced log writes.
    pub fsyncs: AtomicU64,
    /// Sum over fsyncs of the regions each covered.
    pub regions_per_fsync_sum: AtomicU64,
    /// Sum over fsyncs of the entries each carried.
    pub entries_per_fsync_sum: AtomicU64,
    /// Raft messages handed to the transport.
    pub raft_messages_sent: AtomicU64,
    /// Batches handed to the transport (one per remote store per round).
    pub transport_batches_sent: AtomicU64,
    /// Encoded bytes of the Raft messages handed to the transport (what goes on the
    /// wire, before gRPC's framing).
    pub raft_message_bytes_sent: AtomicU64,
    /// Raft messages dropped before raft-rs: not addressed to this store or peer, or
    /// from a peer the region does not have.
    pub raft_messages_refused: AtomicU64,
    /// Commands proposed to Raft.
    pub proposals: AtomicU64,
    /// Writes proposed in another write's entry (`raft_merge_writes`): a proposal
    /// of N merged writes adds N - 1.
    pub writes_merged: AtomicU64,
    /// Entries applied to the kv engine.
    pub applied_entries: AtomicU64,
    /// Synced kv writes of apply batches holding an admin command (split, merge).
    pub admin_kv_syncs: AtomicU64,
    /// Reads answered.
    pub reads_served: AtomicU64,
    /// Raft log entries deleted by log GC.
    pub log_entries_truncated: AtomicU64,
    /// Compactions of the log engine that gave truncated entries' space back.
    pub log_reclaims: AtomicU64,
    /// Raft snapshots generated, their bytes, and the milliseconds generating took.
    pub snapshots_generated: AtomicU64,
    pub snapshot_generated_bytes: AtomicU64,
    pub snapshot_generate_millis: AtomicU64,
    /// Raft snapshots sent to other stores, their bytes and sending time.
    pub snapshots_sent: AtomicU64,
    pub snapshot_sent_bytes: AtomicU64,
    pub snapshot_send_millis: AtomicU64,
    /// Raft snapshots received whole (checked and kept), their bytes and the
    /// milliseconds receiving took.
    pub snapshots_received: AtomicU64,
    pub snapshot_received_bytes: AtomicU64,
    pub snapshot_receive_millis: AtomicU64,
    /// Raft snapshots applied, and the milliseconds applying took.
    pub snapshots_applied: AtomicU64,
    pub snapshot_apply_millis: AtomicU64,
    /// Snapshots that failed to generate, send, receive or apply.
    pub snapshot_failures: AtomicU64,
    /// Peers on this store.
    pub region_count: AtomicI64,
    /// Peers on this store that lead their region.
    pub leader_count: AtomicI64,
    /// A write found the disk full: proposals are refused until a write succeeds
    /// again (the log writer and apply retry theirs, losing nothing).
    pub disk_full: AtomicBool,
}

impl StoreMetrics {
    /// Runs `write` until it does not fail for a full disk: while it does, the
    /// store is marked disk-full (proposals are refused) and the write is tried
    /// again, 50 ms to 1 s apart, until space returns. `what` names it in the logs.
    /// Any other outcome is returned.
    pub(crate) fn retry_while_disk_full<T>(
        &self,
        what: &str,
        mut write: impl FnMut() -> shoal_engine::Result<T>,
    ) -> shoal_engine::Result<T> {
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match write() {
                Err(shoal_engine::Error::NoSpace(e)) => {
                    if !self.disk_full.swap(true, Ordering::AcqRel) {
                        tracing::error!(
                            "{what}: the disk is full ({e}); refusing writes until space returns"
                        );
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
                other => {
                    if other.is_ok() && self.disk_full.swap(false, Ordering::AcqRel) {
                        tracing::warn!("{what}: the disk has space again; taking writes");
                    }
                    return other;
                }
            }
        }
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A snapshot of every counter.
    pub fn counters(&self) -> StoreCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let gauge = |c: &AtomicI64| c.load(Ordering::Relaxed).max(0) as u64;
        StoreCounters {
            fsyncs: get(&self.fsyncs),
            regions_per_fsync_sum: get(&self.regions_per_fsync_sum),
            entries_per_fsync_sum: get(&self.entries_per_fsync_sum),
            raft_messages_sent: get(&self.raft_messages_sent),
            transport_batches_sent: get(&self.transport_batches_sent),
            raft_message_bytes_sent: get(&self.raft_message_bytes_sent),
            proposals: get(&self.proposals),
            writes_merged: get(&self.writes_merged),
            applied_entries: get(&self.applied_entries),
            reads_served: get(&self.reads_served),
            region_count: gauge(&self.region_count),
            leader_count: gauge(&self.leader_count),
            log_entries_truncated: get(&self.log_entries_truncated),
            log_reclaims: get(&self.log_reclaims),
            snapshots_generated: get(&self.snapshots_generated),
            snapshot_generated_bytes: get(&self.snapshot_generated_bytes),
            snapshot_generate_millis: get(&self.snapshot_generate_millis),
            snapshots_sent: get(&self.snapshots_sent),
            snapshot_sent_bytes: get(&self.snapshot_sent_bytes),
            snapshot_send_millis: get(&self.snapshot_send_millis),
            snapshots_received: get(&self.snapshots_received),
            snapshot_received_bytes: get(&self.snapshot_received_bytes),
            snapshot_receive_millis: get(&self.snapshot_receive_millis),
            snapshots_applied: get(&self.snapshots_applied),
            snapshot_apply_millis: get(&self.snapshot_apply_millis),
            snapshot_failures: get(&self.snapshot_failures),
            // Filled in by the store, which has the log engine and the caches.
            log_engine_disk_bytes: 0,
            entry_cache_bytes: 0,
        }
    }
}
