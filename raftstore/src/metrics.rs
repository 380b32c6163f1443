//! Store counters: what the poll round, the log writer, the transport and apply did.
//! Sums, so that two reads give averages over the interval between them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
    /// Raft messages dropped before raft-rs: not addressed to this store or peer, or
    /// from a peer the region does not have.
    pub raft_messages_refused: AtomicU64,
    /// Commands proposed to Raft.
    pub proposals: AtomicU64,
    /// Entries applied to the kv engine.
    pub applied_entries: AtomicU64,
    /// Synced kv writes of apply batches holding an admin command (split, merge).
    pub admin_kv_syncs: AtomicU64,
    /// Reads answered.
    pub reads_served: AtomicU64,
    /// Peers on this store.
    pub region_count: AtomicI64,
    /// Peers on this store that lead their region.
    pub leader_count: AtomicI64,
}

impl StoreMetrics {
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
            proposals: get(&self.proposals),
            applied_entries: get(&self.applied_entries),
            reads_served: get(&self.reads_served),
            region_count: gauge(&self.region_count),
            leader_count: gauge(&self.leader_count),
        }
    }
}
