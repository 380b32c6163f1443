//! The end of a peer's round: ReadIndex for the reads gathered, then raft-rs's
//! `Ready`; and what comes back later: the log writer's "persisted" and apply's
//! results.
//!
//! A ready's entries and hard state go into the round's shared write task; its
//! messages go out with the round (a leader's appends at once, the rest after the
//! write is durable, sent by the log writer); its committed entries go to apply
//! together with the answers owed to their proposers (`propose.rs`).

use raft::eraftpb::Message as RaftPbMessage;
use raft::StateRole;
use shoal_proto::metapb::Peer as PeerMeta;
use shoal_proto::raft_serverpb::RaftMessage;

use crate::error::not_leader;
use crate::fsm::PollCtx;
use crate::metrics::StoreMetrics;
use crate::operation::snapshot::apply::is_snapshot;
use crate::raft::apply::{AdminResult, ApplyRes};
use crate::raft::encode_pb;
use crate::raft::peer::Peer;
use crate::store::context::StoreContext;

impl Peer {
    /// After the round's messages: one read index for the reads gathered, then the ready.
    pub(crate) fn on_round_end(&mut self, ctx: &mut PollCtx) {
        if self.destroyed {
            return;
        }
        self.propose_pending(&ctx.store);
        self.ask_read_index();
        self.handle_ready(ctx);
        // A read index may already be applied: serve without waiting for apply.
        self.serve_applied_reads(ctx);
    }

    fn handle_ready(&mut self, ctx: &mut PollCtx) {
        // While a snapshot is applied no ready is taken: its log write would be
        // reported persisted ahead of the snapshot's (`operation/snapshot`).
        if self.applying_snapshot.is_some() || !self.raw.has_ready() {
            return;
        }
        // A snapshot waits for the results of every entry already sent to apply:
        // one arriving after it (a split's, say) would take the peer's region back.
        let snapshot_pending = self.raw.raft.raft_log.unstable.snapshot.is_some();
        if snapshot_pending && self.applied_index < self.scheduled_index {
            return;
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state, &ctx.store);
        }
        if !rd.snapshot().is_empty() {
            return self.on_ready_snapshot(rd, ctx);
        }
        if !rd.messages().is_empty() {
            let (snapshots, msgs): (Vec<_>, Vec<_>) =
                rd.take_messages().into_iter().partition(is_snapshot);
            self.build_messages(msgs, &mut ctx.outgoing, &ctx.store.metrics);
            self.send_snapshots(snapshots, ctx);
        }
        let committed = rd.take_committed_entries();
        self.schedule_apply(committed, ctx);
        for rs in rd.take_read_states() {
            self.on_read_state(rs);
        }
        let number = rd.number();
        let entries = self.raw.mut_store().append(rd.entries(), number);
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs);
        }
        let must_persist = !entries.is_empty() || rd.must_sync();
        if must_persist || self.unpersisted_ready.is_some() {
            let mut after_persist = Vec::new();
            self.build_messages(
                rd.take_persisted_messages(),
                &mut after_persist,
                &ctx.store.metrics,
            );
            let state = must_persist.then(|| *self.raw.store().raft_state());
            ctx.write
                .add(self.region_id, number, entries, state, after_persist);
            self.unpersisted_ready = Some(number);
            self.raw.advance_append_async(rd);
        } else {
            let persisted = rd.take_persisted_messages();
            self.build_messages(persisted, &mut ctx.outgoing, &ctx.store.metrics);
            self.advance_light(rd, ctx);
        }
    }

    /// A ready with nothing to persist (and nothing of this peer still being
    /// persisted): advance at once and handle the light ready.
    fn advance_light(&mut self, rd: raft::Ready, ctx: &mut PollCtx) {
        let mut light = self.raw.advance_append(rd);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.raft.hard_state();
            hs.commit = commit;
            self.raw.mut_store().set_hard_state(&hs);
        }
        let msgs = light.take_messages();
        self.build_messages(msgs, &mut ctx.outgoing, &ctx.store.metrics);
        let committed = light.take_committed_entries();
        self.schedule_apply(committed, ctx);
    }

    fn on_soft_state(&mut self, leader_id: u64, role: StateRole, store: &StoreContext) {
        self.leader_id = leader_id;
        let leading = role == StateRole::Leader;
        if leading == self.is_leader {
            return;
        }
        self.is_leader = leading;
        store.awake_leader(self.region_id, leading);
        let metrics = &store.metrics;
        let delta = if leading { 1 } else { -1 };
        metrics.leader_count.add(delta);
        if !leading {
            // Its followers hear from the new leader: no store is heartbeaten for
            // this region's sake any more.
            store.liveness.clear_targets(self.region_id);
            // A generated snapshot is a leader's: its files go.
            self.raw.store().snap.clear();
            // Reads wait on this peer's leadership: without it their index means nothing.
            let (region_id, leader) = (self.region_id, self.leader_meta());
            self.fail_reads(|| not_leader(region_id, leader));
        }
    }

    /// Wraps raft-rs's messages for the transport (counted by type in `metrics`).
    pub(crate) fn build_messages(
        &self,
        msgs: Vec<RaftPbMessage>,
        out: &mut Vec<RaftMessage>,
        metrics: &StoreMetrics,
    ) {
        let region = self.region();
        // An uninitialized peer is in no peer list yet: it names itself.
        let from = region
            .peers
            .iter()
            .find(|p| p.id == self.peer_id)
            .cloned()
            .or_else(|| {
                Some(PeerMeta {
                    id: self.peer_id,
                    store_id: self.store_id,
                    ..Default::default()
                })
            });
        for m in msgs {
            let known = region.peers.iter().find(|p| p.id == m.to);
            let Some(to) = known.or_else(|| self.senders.get(&m.to)).cloned() else {
                crate::warn_limited!(
                    region = self.region_id,
                    to = m.to,
                    "no store known for peer"
                );
                continue;
            };
            metrics.raft_messages_sent.inc(m.get_msg_type());
            out.push(RaftMessage {
                region_id: self.region_id,
                from_peer: from,
                to_peer: Some(to),
                region_epoch: region.region_epoch,
                message: encode_pb(&m),
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
                is_tombstone: false,
                snapshot_transfer: 0,
                extra: None,
            });
        }
    }

    /// The log writer persisted this peer's readies up to `number`.
    pub(crate) fn on_persisted(&mut self, number: u64, ctx: &PollCtx) {
        self.raw.on_persist_ready(number);
        self.raw.mut_store().on_persisted(number);
        if self.unpersisted_ready.is_some_and(|n| n <= number) {
            self.unpersisted_ready = None;
        }
        self.maybe_finish_snapshot(number, ctx);
    }

    /// One apply batch's result: first the admin results in log order (a peer takes
    /// its new range before serving reads at the new applied index), then the
    /// applied index.
    pub(crate) fn on_apply_res(&mut self, res: ApplyRes, ctx: &mut PollCtx) {
        for result in res.results {
            match result {
                AdminResult::Split {
                    parent,
                    new_regions,
                } => self.on_split_applied(parent, new_regions, ctx),
                AdminResult::PrepareMerge { region, state } => {
                    self.on_prepare_merge_applied(region, state, ctx)
                }
                AdminResult::RollbackMerge { region } => self.on_rollback_merge_applied(region),
                AdminResult::CommitMerge { region } => self.on_commit_merge_applied(region),
                AdminResult::MergedAway { target } => self.destroy(target, ctx),
                AdminResult::CompactLog { index, term } => {
                    self.on_compact_log_applied(index, term, ctx)
                }
                AdminResult::SnapshotApplied { index } => self.on_snapshot_applied(index, ctx),
                AdminResult::ChangePeer {
                    region,
                    changes,
                    removed,
                } => self.on_change_peer_applied(region, changes, removed, ctx),
                AdminResult::Removed { conf_ver } => self.destroy_removed(conf_ver, ctx),
            }
            if self.destroyed {
                return;
            }
        }
        if res.applied_index > self.applied_index {
            self.applied_index = res.applied_index;
            self.raw.advance_apply_to(res.applied_index);
        }
        self.serve_applied_reads(ctx);
        self.maybe_leave_joint(ctx);
    }
}
