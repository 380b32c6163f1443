//! Merge, step 2: **commit**. The frozen source's leader drives it
//! ([`Peer::drive_merge`]: at once, then every `DRIVE_EVERY_TICKS` raft ticks);
//! this store's target peer proposes it or asks for a rollback
//! ([`Peer::on_propose_commit_merge`]). Applied on every target replica
//! ([`apply_commit`]): the local source is caught up to the prepare index, the
//! target takes the range, the source is tombstoned, all in one synced kv batch.
//! Once applied, the target's peer takes its new range
//! ([`Peer::on_commit_merge_applied`]) and the source's peer is destroyed
//! (`operation/life.rs`).
//!
//! A replica that cannot catch its source up (no apply state for it, a hole in its
//! log) cannot apply what the other replicas apply: that is fatal, not an error.

use protobuf::Message as _;
use raft::eraftpb::Entry;
use shoal_engine::keys::apply_state_key;
use shoal_engine::Cf;
use shoal_proto::metapb::Region;
use shoal_proto::raft_cmdpb::{admin_request, CommitMergeRequest, RaftCmdRequest, Response};
use shoal_proto::raft_serverpb::PeerState;
use shoal_proto::{Message as _, RegionExt};

use super::{check_merge, merged_region, put_state};
use crate::error::{fatal, region_merging, WriteResult};
use crate::fsm::PollCtx;
use crate::msg::PeerMsg;
use crate::operation::command::{admin_cmd, apply_entry};
use crate::raft::apply::{AdminResult, ApplyCtx, Delegate};
use crate::raft::encode_pb;
use crate::raft::peer::Peer;
use crate::worker::region::RegionTask;

impl Peer {
    /// On the source's leader: hands the commit to this store's target peer.
    pub(crate) fn drive_merge(&mut self, ctx: &PollCtx) {
        let Some(state) = self.merging.clone() else {
            return;
        };
        if !self.is_leader {
            return;
        }
        // Between prepare and commit, on the source's leader.
        fail::fail_point!("merge_before_commit");
        let target = state.target.clone().unwrap_or_default();
        // Through raft-rs's log: a leader may commit (by its followers' acks) an
        // entry it has not persisted itself yet, still in the unstable part.
        let context = raft::GetEntriesContext::empty(false);
        let raft_log = &self.raw.raft.raft_log;
        let entries = match raft_log.slice(state.min_index + 1, state.commit + 1, None, context) {
            Ok(es) => es.iter().map(encode_pb).collect(),
            Err(e) => {
                tracing::error!(region = self.region_id, "merge: cannot read the log: {e}");
                return;
            }
        };
        let commit = CommitMergeRequest {
            source: Some(self.region().clone()),
            commit: state.commit,
            entries,
        };
        let request = admin_cmd(
            &target,
            self.store_id,
            target.region_epoch,
            admin_request::Cmd::CommitMerge(commit),
        );
        let msg = PeerMsg::ProposeCommitMerge {
            request,
            source_id: self.region_id,
            commit: state.commit,
        };
        // No mailbox for the target: either it was merged away itself (tombstoned:
        // it can never take the source, roll back) or the store is stopping (do
        // nothing; the merge goes on after the restart). The region worker reads
        // which, off the poller, and answers with a rollback when it must.
        if ctx.store.router.send(target.id, msg).is_err() {
            let _ = ctx.store.region_worker.send(RegionTask::MergeTargetGone {
                source_id: self.region_id,
                target_id: target.id,
                commit: state.commit,
            });
        }
    }

    /// On the target: propose the commit, or ask the source to roll back when this
    /// target's epoch moved on without it.
    pub(crate) fn on_propose_commit_merge(
        &mut self,
        request: RaftCmdRequest,
        source_id: u64,
        commit: u64,
        ctx: &PollCtx,
    ) {
        let Some(admin_request::Cmd::CommitMerge(req)) =
            request.admin.as_ref().and_then(|a| a.cmd.as_ref())
        else {
            return;
        };
        let source = req.source.clone().unwrap_or_default();
        if self.region().covers(&source) {
            return; // Already committed here; the source's destroy is on its way.
        }
        let expected = request
            .header
            .and_then(|h| h.region_epoch)
            .unwrap_or_default();
        let mine = self.region().region_epoch.unwrap_or_default();
        if mine.version > expected.version || mine.conf_ver > expected.conf_ver {
            let rollback = PeerMsg::RollbackMerge { commit };
            let _ = ctx.store.router.send(source_id, rollback);
            return;
        }
        if self.merging.is_some() || mine != expected {
            return; // Not yet: the source drives again later.
        }
        // A follower's raft forwards the proposal to its leader.
        if let Err(e) = self.raw.propose(Vec::new(), request.encode_to_vec()) {
            tracing::debug!(region = self.region_id, "commit merge not proposed: {e}");
        }
    }

    /// Apply committed a merge into this region: it now spans `region`.
    pub(crate) fn on_commit_merge_applied(&mut self, region: Region) {
        tracing::info!(region = self.region_id, "merge applied: {region:?}");
        self.raw.mut_store().set_region(region);
        // The range grew: the next split check measures it afresh.
        self.split_check.last = None;
        self.split_check.asked_at = None;
    }
}

/// The target `d` takes over the source of `req`, after bringing the local source
/// up to the prepare index.
pub(crate) fn apply_commit(
    d: &mut Delegate,
    req: CommitMergeRequest,
    index: u64,
    ctx: &mut ApplyCtx,
) -> WriteResult {
    if d.merging.is_some() {
        return Err(region_merging(d.region.id));
    }
    let source = req.source.clone().unwrap_or_default();
    check_merge(&source, &d.region)?;
    // The prepare was only proposed once every source replica existed: each
    // target replica has its source here (see `prepare.rs`).
    let Some(mut src) = ctx.delegates.remove(&source.id) else {
        fatal(
            d.region.id,
            format_args!("merge commit: source {} has no apply state here", source.id),
        )
    };
    fail::fail_point!("merge_commit_before_catch_up");
    catch_up(&mut src, &req, ctx);
    let merged = merged_region(&d.region, &src.region);
    d.region = merged.clone();
    put_state(ctx, &merged, PeerState::Normal, None);
    put_state(ctx, &src.region, PeerState::Tombstone, None);
    ctx.batch.put(
        Cf::Meta,
        apply_state_key(src.region.id),
        src.state.encode_to_vec(),
    );
    let region = merged.clone();
    ctx.report(merged.id, index, AdminResult::CommitMerge { region });
    let gone = AdminResult::MergedAway { target: merged.id };
    ctx.report(src.region.id, src.state.applied_index, gone);
    tracing::info!(
        target = merged.id,
        source = src.region.id,
        "merge committed"
    );
    // `src` is not put back: the source is gone from this worker.
    Ok(vec![Response {
        regions: vec![merged],
        ..Default::default()
    }])
}

/// Applies the source's entries up to the prepare index `req.commit`: from the
/// local log below the carried entries, then the carried ones.
fn catch_up(src: &mut Delegate, req: &CommitMergeRequest, ctx: &mut ApplyCtx) {
    let (id, commit) = (src.region.id, req.commit);
    let broken =
        |what: std::fmt::Arguments<'_>| -> ! { fatal(id, format_args!("merge catch-up: {what}")) };
    let decode = |bytes: &[u8]| {
        Entry::parse_from_bytes(bytes)
            .unwrap_or_else(|e| broken(format_args!("an entry does not decode: {e}")))
    };
    let carried: Vec<Entry> = req.entries.iter().map(|b| decode(b)).collect();
    let first_carried = carried.first().map_or(commit + 1, |e| e.index);
    let applied = src.state.applied_index;
    let mut entries = Vec::new();
    if applied + 1 < first_carried {
        let mut local = Vec::new();
        if let Err(e) = ctx
            .log
            .fetch(id, applied + 1, first_carried, None, &mut local)
        {
            broken(format_args!("the source's log: {e}"));
        }
        entries.extend(local.iter().map(|le| decode(&le.data)));
    }
    entries.extend(carried.into_iter().filter(|e| e.index > applied));
    for e in entries.iter().filter(|e| e.index <= commit) {
        if e.index != src.state.applied_index + 1 {
            let at = src.state.applied_index;
            broken(format_args!("entries skip from {at} to {}", e.index));
        }
        // The outcome of each is what the source replicas computed; nobody waits.
        let _ = apply_entry(src, e, ctx);
        src.state.applied_index = e.index;
    }
    if src.state.applied_index < commit || src.merging.as_ref().map(|m| m.commit) != Some(commit) {
        let at = src.state.applied_index;
        broken(format_args!(
            "reached index {at} without the prepare at {commit}"
        ));
    }
}
