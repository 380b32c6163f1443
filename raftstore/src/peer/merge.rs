//! Region merge, the peer side (the apply side is in [`crate::merge`]).
//!
//! - The source's leader checks a `PrepareMerge` before proposing it: no merge in
//!   progress, adjacent regions on the same stores, no admin command or membership
//!   change in the log after the lowest index a replica may lack.
//! - Once the prepare is applied the source is frozen: it refuses writes and reads
//!   with a retryable `ServerIsBusy` until commit or rollback.
//! - While frozen, the source's leader drives the merge: at once, then every
//!   [`DRIVE_EVERY_TICKS`] raft ticks (so a restart or a lost message only delays
//!   it) it hands `CommitMerge` to this store's target peer, which proposes it (as
//!   leader) or lets raft forward it to the target's leader. If the target's epoch
//!   moved on without the source, the commit can never apply and the target peer
//!   asks the source to roll back.
//! - A source whose merge committed is destroyed: pending requests get
//!   `RegionNotFound` (the client re-routes to the target), its ticks and mailbox
//!   go, and its raft log is removed.

use std::sync::atomic::Ordering;

use protobuf::Message as _;
use raft::eraftpb::EntryType;
use raft::Storage as _;
use shoal_proto::metapb::Region;
use shoal_proto::raft_cmdpb::{
    admin_request, CommitMergeRequest, RaftCmdRequest, RaftRequestHeader, RollbackMergeRequest,
};
use shoal_proto::raft_serverpb::MergeState;
use shoal_proto::Message as _;
use tokio::sync::oneshot;

use super::Peer;
use crate::cmd::{admin_cmd, check_epoch, not_leader, region_merging, region_not_found};
use crate::merge::{check_merge, covers};
use crate::msg::{CmdError, Command, PeerMsg};
use crate::poll::PollCtx;

/// How often (in raft ticks) a frozen source's leader re-drives its merge.
pub const DRIVE_EVERY_TICKS: u64 = 10;

impl Peer {
    /// Checks a `PrepareMerge` and fills in its `min_index`.
    pub(super) fn check_prepare_merge(
        &self,
        header: &RaftRequestHeader,
        request: &mut RaftCmdRequest,
        entry_limit: u64,
    ) -> Result<(), CmdError> {
        if !self.is_leader {
            return Err(not_leader(self.region_id, self.leader_meta()));
        }
        if self.merging.is_some() {
            return Err(region_merging(self.region_id));
        }
        check_epoch(self.region(), header.region_epoch.as_ref(), true)?;
        let Some(admin_request::Cmd::PrepareMerge(req)) =
            request.admin.as_mut().and_then(|a| a.cmd.as_mut())
        else {
            return Err(CmdError::Invalid("not a prepare merge".into()));
        };
        let target = req.target.clone().unwrap_or_default();
        check_merge(self.region(), &target)?;
        // The lowest index any replica may lack: entries after it travel with the
        // commit.
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        let first = self.raw.store().truncated_index() + 1;
        // The leader counts too: its own progress is what it has persisted, and a
        // leader that crashed before syncing must find the entries in the commit.
        let min_matched = raft
            .prs()
            .iter()
            .map(|(_, p)| p.matched)
            .min()
            .unwrap_or(last);
        // Every source replica must have acknowledged an entry of this group: then
        // its peer exists on its store, so each target replica finds a local source
        // to catch up when the commit applies (a region just split off may not have
        // all its peers yet).
        if min_matched < first {
            return Err(crate::cmd::server_busy(
                self.region_id,
                "a replica of the merge source has not caught up yet",
            ));
        }
        let min_index = min_matched.max(first - 1);
        let entries = self
            .raw
            .store()
            .entries(
                min_index + 1,
                last + 1,
                None,
                raft::GetEntriesContext::empty(false),
            )
            .map_err(|e| CmdError::Storage(format!("reading the log: {e}")))?;
        // The commit carries these entries (and the prepare) in one entry of its
        // own: past half the entry limit, wait for the lagging replica instead.
        let carried: u64 = entries.iter().map(|e| u64::from(e.compute_size())).sum();
        if carried > entry_limit / 2 {
            return Err(crate::cmd::server_busy(
                self.region_id,
                &format!(
                    "the merge would carry {carried} bytes of entries to a lagging replica, \
                     over half the raft-entry-max-size of {entry_limit}"
                ),
            ));
        }
        for e in &entries {
            if e.get_entry_type() != EntryType::EntryNormal {
                return Err(CmdError::Invalid(format!(
                    "region {} has a membership change in progress",
                    self.region_id
                )));
            }
            let is_admin = !e.data.is_empty()
                && RaftCmdRequest::decode(&e.data[..]).is_ok_and(|c| c.admin.is_some());
            if is_admin {
                return Err(CmdError::Invalid(format!(
                    "region {} has a split or merge in progress (log index {})",
                    self.region_id, e.index
                )));
            }
        }
        req.min_index = min_index;
        Ok(())
    }

    /// Apply froze (or, with `None`, unfroze) this region as a merge source.
    pub(super) fn on_merge_state(
        &mut self,
        region: Region,
        merging: Option<MergeState>,
        ctx: &PollCtx,
    ) {
        self.raw.mut_store().set_region(region);
        self.merging = merging;
        if self.merging.is_some() {
            // Frozen: reads waiting for an index are refused like new requests.
            for batch in self.read_batches.drain(..) {
                for r in batch.reads {
                    let _ = r.reply.send(Err(region_merging(self.region_id)));
                }
            }
            self.drive_merge(ctx);
        }
    }

    /// On the source's leader: hands the commit to this store's target peer.
    pub(super) fn drive_merge(&mut self, ctx: &PollCtx) {
        let Some(state) = self.merging.clone() else {
            return;
        };
        if !self.is_leader {
            return;
        }
        let target = state.target.clone().unwrap_or_default();
        let entries = match self.raw.store().entries(
            state.min_index + 1,
            state.commit + 1,
            None,
            raft::GetEntriesContext::empty(false),
        ) {
            Ok(es) => es.iter().map(crate::cmd::encode_pb).collect(),
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
        // nothing; the merge goes on after the restart).
        if ctx.store.router.send(target.id, msg).is_err()
            && crate::merge::is_tombstone(&ctx.store.kv, target.id)
        {
            self.propose_rollback(state.commit, ctx);
        }
    }

    /// On the target: propose the commit, or ask the source to roll back when this
    /// target's epoch moved on without it.
    pub(super) fn on_propose_commit_merge(
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
        if covers(self.region(), &source) {
            return; // Already committed here; the source's destroy is on its way.
        }
        let expected = request
            .header
            .and_then(|h| h.region_epoch)
            .unwrap_or_default();
        let mine = self.region().region_epoch.unwrap_or_default();
        if mine.version > expected.version || mine.conf_ver > expected.conf_ver {
            let _ = ctx
                .store
                .router
                .send(source_id, PeerMsg::RollbackMerge { commit });
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

    /// On the source's leader: propose the rollback of the prepare at `commit`.
    pub(super) fn propose_rollback(&mut self, commit: u64, ctx: &PollCtx) {
        if !self.is_leader || self.merging.as_ref().map(|m| m.commit) != Some(commit) {
            return;
        }
        tracing::info!(
            region = self.region_id,
            commit,
            "merge cannot commit; rolling back"
        );
        let request = admin_cmd(
            self.region(),
            self.store_id,
            self.region().region_epoch,
            admin_request::Cmd::RollbackMerge(RollbackMergeRequest { commit }),
        );
        let (reply, _) = oneshot::channel();
        self.propose(Command { request, reply }, &ctx.store);
    }

    /// The merge into `merged_into` committed here: answer what is pending, drop the
    /// ticks, the mailbox and the raft log.
    pub(super) fn destroy(&mut self, merged_into: u64, ctx: &PollCtx) {
        tracing::info!(
            region = self.region_id,
            merged_into,
            "destroying the merged source"
        );
        let gone = || region_not_found(self.region_id);
        // A pending write may have been applied by the merge's catch-up: its outcome
        // is unknown to this peer, not "never executed".
        for p in self.proposals.drain(..) {
            let _ = p.reply.send(Err(CmdError::Dropped(format!(
                "region {} was merged into {merged_into}; the write may have been applied",
                self.region_id
            ))));
        }
        for b in self.read_batches.drain(..) {
            for r in b.reads {
                let _ = r.reply.send(Err(gone()));
            }
        }
        for r in self.new_reads.drain(..) {
            let _ = r.reply.send(Err(gone()));
        }
        let store = &ctx.store;
        if self.is_leader {
            store.metrics.leader_count.fetch_sub(1, Ordering::Relaxed);
            self.is_leader = false;
        }
        store.metrics.region_count.fetch_sub(1, Ordering::Relaxed);
        store.ticker.cancel_all(self.region_id);
        store.router.close(self.region_id);
        // The tombstone and the merged target are durable before the source's log
        // goes: apply synced the batch holding the commit before sending Destroy.
        if let Err(e) = store.log.remove_region(self.region_id) {
            tracing::warn!(region = self.region_id, "cannot remove the merged log: {e}");
        }
        self.destroyed = true;
    }
}
