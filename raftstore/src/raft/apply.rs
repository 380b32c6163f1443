//! What apply knows and produces, shared by the apply worker (`worker/apply.rs`,
//! which runs the batches) and the operations (`operation/*`, which apply their
//! commands): the messages to an apply worker, a region's apply-side state
//! ([`Delegate`]), one batch's context ([`ApplyCtx`]) and what a batch reports to
//! each peer ([`ApplyRes`]).

use std::collections::HashMap;

use raft::eraftpb::Entry;
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{KvBatch, LogEngine};
use shoal_proto::metapb::{PeerChange, Region};
use shoal_proto::raft_serverpb::{MergeState, RaftApplyState, RaftLocalState};

use crate::msg::Reply;
use crate::operation::snapshot::apply::SnapshotTask;

/// Committed entries of one region, with the answers owed for some of them.
pub(crate) struct ApplyTask {
    /// The region.
    pub(crate) region_id: u64,
    /// Committed entries in index order.
    pub(crate) entries: Vec<Entry>,
    /// `(index, reply)` for entries proposed through this peer.
    pub(crate) replies: Vec<(u64, Reply)>,
    /// When the entries were handed to apply (`shoal_raft_commit_apply_seconds`).
    pub(crate) committed_at: std::time::Instant,
}

/// A region an apply worker starts applying for.
pub(crate) struct Registration {
    /// This store's peer of the region.
    pub(crate) peer_id: u64,
    /// The region as of `state.applied_index`.
    pub(crate) region: Region,
    /// Where apply resumes.
    pub(crate) state: RaftApplyState,
    /// The region's merge in progress, when it is a frozen merge source.
    pub(crate) merging: Option<MergeState>,
    /// The peer's `peer{region, peer}` span, entered while its entries apply.
    pub(crate) span: tracing::Span,
}

/// Messages to an apply worker.
pub(crate) enum ApplyMsg {
    /// Starts applying for a region (boxed: rare, and large next to `Tasks`).
    Register(Box<Registration>),
    /// Committed entries from one poll round.
    Tasks(Vec<ApplyTask>),
    /// A snapshot replacing a region's data, after the tasks before it.
    Snapshot(Box<SnapshotTask>),
    /// The region's peer learned it was removed from the region (a tombstone
    /// message, or one for its successor): after the tasks before it, its data
    /// goes and a tombstone is written, synced (`operation/conf_change/removed.rs`).
    Destroy { region_id: u64 },
}

/// What apply knows of one region on this store.
pub(crate) struct Delegate {
    /// This store's peer of the region.
    pub(crate) peer_id: u64,
    pub(crate) region: Region,
    pub(crate) state: RaftApplyState,
    /// Set by an applied `PrepareMerge` until commit or rollback.
    pub(crate) merging: Option<Box<MergeState>>,
    /// This store's peer was removed by a membership change just applied: the
    /// region's entries stop applying here.
    pub(crate) removed: bool,
    /// The peer's span (shared with its FSM): entered while this region's work
    /// is done on the apply thread.
    pub(crate) span: tracing::Span,
}

impl From<Registration> for Delegate {
    fn from(r: Registration) -> Self {
        Delegate {
            peer_id: r.peer_id,
            removed: false,
            region: r.region,
            state: r.state,
            merging: r.merging.map(Box::new),
            span: r.span,
        }
    }
}

/// A region a split made, and the raft state its peer on this store left in the
/// log in an earlier life (`None` for a peer never started here).
pub(crate) struct NewPeer {
    /// The new region.
    pub(crate) region: Region,
    /// The peer's persisted raft state, if any.
    pub(crate) raft_state: Option<RaftLocalState>,
}

/// The effect of one applied admin command, for the region's peer to take on.
pub(crate) enum AdminResult {
    /// A split: the region shrank to `parent`; peers start for `new_regions`.
    Split {
        /// This region after the split.
        parent: Region,
        /// The regions split off, in key order, with what their peers start from.
        new_regions: Vec<NewPeer>,
    },
    /// The region was frozen as a merge source.
    PrepareMerge {
        /// The region with its new epoch.
        region: Region,
        /// The merge in progress.
        state: MergeState,
    },
    /// The region's merge was rolled back: it is unfrozen.
    RollbackMerge {
        /// The region with its new epoch.
        region: Region,
    },
    /// This region (the target) took over a merge source: it now spans `region`.
    CommitMerge {
        /// The region after the merge.
        region: Region,
    },
    /// This region (the source) was merged into `target`: its peer goes away.
    MergedAway {
        /// The target that took the range.
        target: u64,
    },
    /// The log was truncated up to `index` (of `term`), durably applied.
    CompactLog {
        /// The last index removed.
        index: u64,
        /// Its term.
        term: u64,
    },
    /// A membership change: the region is now `region`; raft-rs takes `changes`.
    ChangePeer {
        /// The region with its new peers and `conf_ver`.
        region: Region,
        /// The changes applied (none: the joint configuration was left).
        changes: Vec<PeerChange>,
        /// This store's peer is no longer in the region: its data is gone and its
        /// tombstone durable.
        removed: bool,
    },
    /// The peer learned from its group that it was removed; its data is gone and
    /// its tombstone durable, at the `conf_ver` it learned that at.
    Removed {
        /// The tombstone's `conf_ver`.
        conf_ver: u64,
    },
    /// A snapshot's data is applied and durable (the log is replaced next).
    SnapshotApplied {
        /// The snapshot's index.
        index: u64,
    },
}

/// What one apply batch did to one region, sent to its peer as one message.
#[derive(Default)]
pub(crate) struct ApplyRes {
    /// The region's applied index after the batch.
    pub(crate) applied_index: u64,
    /// The admin commands' effects, in log order.
    pub(crate) results: Vec<AdminResult>,
}

/// Everything one drained batch of tasks writes and reports.
pub(crate) struct ApplyCtx<'a> {
    pub(crate) kv: &'a RocksKvEngine,
    pub(crate) log: &'a dyn LogEngine,
    pub(crate) batch: KvBatch,
    /// The batch's own writes, for CAS.
    pub(crate) overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// What each touched region's peer is told once the batch is written.
    pub(crate) results: HashMap<u64, ApplyRes>,
    /// The other regions of this worker (a merge catches its source up here).
    pub(crate) delegates: &'a mut HashMap<u64, Delegate>,
    /// An admin command (split, merge step) is in the batch: the write is synced
    /// before its effects (peers created or destroyed) happen. Otherwise a power
    /// loss could forget the command while its effects' own writes (a new peer's
    /// votes and entries in the synced log) survive.
    pub(crate) sync: bool,
}

impl ApplyCtx<'_> {
    /// Records an admin command's effect on `region_id`, applied up to `applied`.
    pub(crate) fn report(&mut self, region_id: u64, applied: u64, result: AdminResult) {
        let res = self.results.entry(region_id).or_default();
        res.applied_index = res.applied_index.max(applied);
        res.results.push(result);
    }

    /// Records that `region_id` is applied up to `applied`.
    pub(crate) fn applied(&mut self, region_id: u64, applied: u64) {
        let res = self.results.entry(region_id).or_default();
        res.applied_index = res.applied_index.max(applied);
    }
}
