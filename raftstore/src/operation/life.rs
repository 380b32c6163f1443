//! The life of a peer on this store: created ([`start_peer`]: at start-up for every
//! region loaded, or when a split applied here makes a region), and destroyed
//! ([`Peer::destroy`]: a merge source whose merge committed;
//! [`Peer::destroy_removed`]: a replica removed from its region). Also the one place
//! that fails every pending request of a peer ([`Peer::fail_proposals`],
//! [`Peer::fail_reads`]).
//!
//! Creating a peer registers the region with its apply worker, builds its raft-rs
//! `RawNode`, puts it in the router and schedules its ticks; no disk IO (the states
//! it starts from were read before: at load, or by apply for a split).
//! Destroying it answers what is pending, cancels its ticks, closes its mailbox and
//! hands the removal of its raft log to the log writer, behind any write of the
//! peer still queued there.

use raft::RawNode;
use shoal_proto::metapb::{Peer as PeerMeta, Region};
use shoal_proto::raft_serverpb::{MergeState, RaftApplyState, RaftLocalState};
use shoal_proto::RegionExt;

use crate::error::{region_not_found, CmdError, StartError};
use crate::fsm::{PeerFsm, PollCtx};
use crate::msg::{PeerMsg, PeerTick};
use crate::operation::propose::Proposal;
use crate::raft::apply::{ApplyMsg, Registration};
use crate::raft::logger::raft_logger;
use crate::raft::peer::Peer;
use crate::raft::storage::PeerStorage;
use crate::store::bootstrap::initial_raft_state;
use crate::store::context::StoreContext;
use crate::store::ranges::Tombstone;
use crate::worker::log_gc::LogGcTask;

/// What a peer starts from.
pub(crate) struct PeerStart {
    /// The region as of `apply_state`.
    pub(crate) region: Region,
    /// The raft state in the log; `None` for a region never started here (split
    /// off, its first ready not yet written): it starts from the initial state.
    pub(crate) raft_state: Option<RaftLocalState>,
    /// Where apply resumes.
    pub(crate) apply_state: RaftApplyState,
    /// The merge in progress, when the region is a frozen merge source.
    pub(crate) merging: Option<MergeState>,
}

/// Starts this store's peer of `start.region`; `campaign` makes it stand for
/// election at once. A region without a peer on this store is skipped.
pub(crate) fn start_peer(
    ctx: &StoreContext,
    start: PeerStart,
    campaign: Start,
) -> Result<(), StartError> {
    let Some(me) = start.region.peer_on_store(ctx.store_id).cloned() else {
        return Ok(());
    };
    start_peer_as(ctx, start, me, campaign)
}

/// Starts peer `me` of `start.region` on this store (a region that does not list
/// it yet: an uninitialized peer waiting for its snapshot).
pub(crate) fn start_peer_as(
    ctx: &StoreContext,
    start: PeerStart,
    me: PeerMeta,
    campaign: Start,
) -> Result<(), StartError> {
    let PeerStart {
        region,
        raft_state,
        apply_state,
        merging,
    } = start;
    let mut raft_state = raft_state.unwrap_or_else(initial_raft_state);
    // The commit index is persisted lazily; what was applied was committed.
    let hs = raft_state.hard_state.get_or_insert_with(Default::default);
    hs.commit = hs.commit.max(apply_state.applied_index);
    let raft_cfg = ctx.cfg.raft_config(me.id, apply_state.applied_index);
    let span = crate::fsm::peer_span(region.id, me.id);
    let _ = ctx
        .apply_worker(region.id)
        .send(ApplyMsg::Register(Box::new(Registration {
            peer_id: me.id,
            region: region.clone(),
            state: apply_state,
            merging: merging.clone(),
            span: span.clone(),
        })));
    let applied = apply_state.applied_index;
    let truncated = apply_state.truncated_index;
    let storage = PeerStorage::new(ctx.storage_deps(), region.clone(), raft_state, apply_state);
    let region_id = region.id;
    let raw =
        RawNode::new(&raft_cfg, storage, &raft_logger(region_id, me.id)).map_err(|source| {
            StartError::Raft {
                region: region_id,
                source,
            }
        })?;
    let waiting = ctx.metrics.pending_writes.clone();
    let mut peer = Peer::new(ctx.store_id, me.id, raw, applied, merging, waiting);
    // At start-up a store's peers start dormant and are woken at a bounded pace
    // (`dormant-wake-rate`), the store's liveness round waking them (a message
    // or a request wakes one at once): 100,000 regions never tick all at once.
    let dormant = campaign == Start::Loaded && ctx.cfg.dormant_regions;
    if dormant {
        peer.start_dormant(ctx);
    }
    ctx.router
        .register(region_id, Box::new(PeerFsm::new(peer, span.clone())))
        .map_err(|e| StartError::Register {
            region: region_id,
            reason: e.to_string(),
        })?;
    if !dormant {
        schedule_ticks(ctx, region_id);
    }
    // Truncated entries whose (unsynced) deletion a crash undid go again.
    let _ = ctx.log_gc.send(LogGcTask::Truncate {
        region_id,
        to: truncated + 1,
        span: span.clone(),
    });
    ctx.metrics.region_count.inc();
    if campaign == Start::Campaign {
        let _ = ctx.router.send(region_id, PeerMsg::Campaign);
    }
    if dormant {
        ctx.liveness.queue_start(region_id);
    }
    Ok(())
}

/// How a peer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// Ticking (a split's new peer, one created for a snapshot).
    Awake,
    /// Ticking, and campaigning at once (a split's new peer on the leader's store).
    Campaign,
    /// Loaded at the store's start: dormant until woken (paced), or ticking when
    /// dormancy is off.
    Loaded,
}

impl Peer {
    /// Answers every proposal still waiting, with `why(proposal)`.
    pub(crate) fn fail_proposals(&mut self, why: impl Fn(&Proposal) -> CmdError) {
        self.set_waiting_writes(0);
        for p in self.proposals.drain(..) {
            let err = why(&p);
            p.reply.send(Err(err));
        }
    }

    /// Answers every read still waiting (confirmed or not), with `why()`.
    pub(crate) fn fail_reads(&mut self, why: impl Fn() -> CmdError) {
        let batches = self.read_batches.drain(..).flat_map(|b| b.reads);
        for r in batches.chain(self.new_reads.drain(..)) {
            let _ = r.reply.send(Err(why()));
        }
    }

    /// The merge into `target` committed here: answer what is pending, drop the
    /// ticks and the mailbox, and have the log writer remove the raft log.
    pub(crate) fn destroy(&mut self, target: u64, ctx: &mut PollCtx) {
        tracing::info!(
            region = self.region_id,
            merged_into = target,
            "destroying the merged source"
        );
        let region_id = self.region_id;
        // Entries up to the prepare were applied by the target's catch-up: the
        // outcome of a write still pending there is unknown to this peer. Entries
        // after it never apply.
        let prepared_at = self.merging.as_ref().map_or(u64::MAX, |m| m.commit);
        self.fail_proposals(|p| match p.index <= prepared_at {
            true => CmdError::Undetermined(format!(
                "region {region_id} was merged into {target}; the write may have been applied"
            )),
            false => CmdError::Dropped(format!(
                "region {region_id} was merged into {target} before the write applied"
            )),
        });
        fail::fail_point!("merge_destroy_source");
        // Merged away: no message creates it again.
        let gone = Tombstone {
            conf_ver: u64::MAX,
            peer_id: self.peer_id,
        };
        self.tear_down(gone, ctx);
    }

    /// This replica was removed from its region (a membership change applied here,
    /// or a tombstone message from the group): its tombstone and the removal of its
    /// data are durable (apply synced them, at `conf_ver`); the rest goes as for a
    /// merged source.
    pub(crate) fn destroy_removed(&mut self, conf_ver: u64, ctx: &mut PollCtx) {
        tracing::info!(
            region = self.region_id,
            peer = self.peer_id,
            "destroying a replica removed from its region"
        );
        let region_id = self.region_id;
        // What was proposed after the removal may still commit in the group.
        self.fail_proposals(|_| {
            CmdError::Undetermined(format!(
                "region {region_id}: this replica was removed from the region"
            ))
        });
        let gone = Tombstone {
            conf_ver,
            peer_id: self.peer_id,
        };
        self.tear_down(gone, ctx);
    }

    /// Answers the reads still pending, drops the ticks, the mailbox and the range
    /// (keeping `gone`: only a message from a newer membership, to another peer,
    /// may create a peer of the region here again), and has the log writer remove
    /// the raft log after every write of this peer queued before.
    fn tear_down(&mut self, gone: Tombstone, ctx: &mut PollCtx) {
        let region_id = self.region_id;
        self.fail_reads(|| region_not_found(region_id));
        let store = &ctx.store;
        if self.is_leader {
            store.metrics.leader_count.dec();
            self.is_leader = false;
        }
        store.metrics.region_count.dec();
        store.ticker.cancel_all(region_id);
        self.forget_dormancy(store);
        store.router.close(region_id);
        store.ranges.remove(region_id, Some(gone));
        ctx.write.remove_region(region_id);
        self.destroyed = true;
    }
}

/// Registers a peer's periodic ticks (at start, and when it wakes from dormancy).
pub(crate) fn schedule_ticks(ctx: &StoreContext, region_id: u64) {
    ctx.ticker.schedule_every(region_id, PeerTick::Raft, 1);
    let every = ctx.cfg.split_check_ticks();
    ctx.ticker
        .schedule_every(region_id, PeerTick::SplitCheck, every);
    ctx.ticker
        .schedule_every(region_id, PeerTick::LogGc, ctx.cfg.raft_log_gc_ticks());
}
