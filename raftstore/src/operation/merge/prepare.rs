//! Merge, step 1: **prepare**. Proposed on the source's leader (by
//! `RaftStore::prepare_merge` in `store/admin.rs`, the first step of a merge), checked
//! there ([`Peer::check_prepare_merge`]: no merge in progress, adjacent regions on
//! the same stores, every replica caught up enough, no admin command or membership
//! change in the log after the lowest index a replica may lack). Applied on every
//! source replica ([`apply_prepare`]): the region is frozen and its epoch bumped.
//! Once applied here ([`Peer::on_prepare_merge_applied`]) the source refuses reads
//! and writes, and its leader drives the commit (`commit.rs`).

use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType};
use shoal_proto::metapb::{Region, RegionEpoch};
use shoal_proto::raft_cmdpb::{
    admin_request, PrepareMergeRequest, RaftCmdRequest, RaftRequestHeader, Response,
};
use shoal_proto::raft_serverpb::{MergeState, PeerState};
use shoal_proto::Message as _;

use super::{check_merge, put_state};
use crate::error::{not_leader, region_merging, server_busy, CmdError, WriteResult};
use crate::fsm::PollCtx;
use crate::operation::command::check_epoch;
use crate::raft::apply::{AdminResult, ApplyCtx, Delegate};
use crate::raft::peer::Peer;

impl Peer {
    /// Checks a `PrepareMerge` and fills in its `min_index`.
    pub(crate) fn check_prepare_merge(
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
        let (min_index, entries) = self.entries_to_carry()?;
        // The commit carries these entries (and the prepare) in one entry of its
        // own: past half the entry limit, wait for the lagging replica instead.
        let carried: u64 = entries.iter().map(|e| u64::from(e.compute_size())).sum();
        if carried > entry_limit / 2 {
            return Err(server_busy(
                self.region_id,
                &format!(
                    "the merge would carry {carried} bytes of entries to a lagging replica, \
                     over half the raft-entry-max-size of {entry_limit}"
                ),
            ));
        }
        self.check_no_admin_in(&entries)?;
        req.min_index = min_index;
        Ok(())
    }

    /// The lowest index any replica may lack (`min_index`) and the entries after it,
    /// which travel with the commit.
    fn entries_to_carry(&self) -> Result<(u64, Vec<Entry>), CmdError> {
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
            return Err(server_busy(
                self.region_id,
                "a replica of the merge source has not caught up yet",
            ));
        }
        let min_index = min_matched.max(first - 1);
        // Through raft-rs's log, not the storage: entries proposed earlier in this
        // round are only in its unstable part until the round's ready.
        let context = raft::GetEntriesContext::empty(false);
        let entries = raft
            .raft_log
            .slice(min_index + 1, last + 1, None, context)
            .map_err(|e| CmdError::Storage(format!("reading the log: {e}")))?;
        Ok((min_index, entries))
    }

    /// No admin command (but a log truncation) or membership change may be in the
    /// entries a merge carries: the catch-up applies them on the target's replicas
    /// without their effects.
    fn check_no_admin_in(&self, entries: &[Entry]) -> Result<(), CmdError> {
        for e in entries {
            if e.get_entry_type() != EntryType::EntryNormal {
                return Err(CmdError::Invalid(format!(
                    "region {} has a membership change in progress",
                    self.region_id
                )));
            }
            // A log truncation is the one admin command a catch-up may apply as is:
            // it only moves the source's first index, and the source goes away.
            let is_admin = !e.data.is_empty()
                && RaftCmdRequest::decode(&e.data[..]).is_ok_and(|c| {
                    c.admin
                        .is_some_and(|a| !matches!(a.cmd, Some(admin_request::Cmd::CompactLog(_))))
                });
            if is_admin {
                return Err(CmdError::Invalid(format!(
                    "region {} has a split or merge in progress (log index {})",
                    self.region_id, e.index
                )));
            }
        }
        Ok(())
    }

    /// Apply froze this region as a merge source: reads waiting for an index are
    /// refused like new requests, and the leader drives the commit at once.
    pub(crate) fn on_prepare_merge_applied(
        &mut self,
        region: Region,
        state: MergeState,
        ctx: &PollCtx,
    ) {
        self.raw.mut_store().set_region(region);
        self.merging = Some(state);
        let region_id = self.region_id;
        self.fail_reads(|| region_merging(region_id));
        self.drive_merge(ctx);
    }
}

/// Freezes the source at `index`.
pub(crate) fn apply_prepare(
    d: &mut Delegate,
    req: PrepareMergeRequest,
    index: u64,
    ctx: &mut ApplyCtx,
) -> WriteResult {
    if d.merging.is_some() {
        return Err(region_merging(d.region.id));
    }
    let target = req.target.unwrap_or_default();
    check_merge(&d.region, &target)?;
    let epoch = d.region.region_epoch.unwrap_or_default();
    d.region.region_epoch = Some(RegionEpoch {
        conf_ver: epoch.conf_ver + 1,
        version: epoch.version + 1,
    });
    let state = MergeState {
        min_index: req.min_index,
        target: Some(target),
        commit: index,
    };
    d.merging = Some(state.clone());
    put_state(ctx, &d.region, PeerState::Merging, Some(state.clone()));
    let result = AdminResult::PrepareMerge {
        region: d.region.clone(),
        state,
    };
    ctx.report(d.region.id, index, result);
    Ok(vec![Response {
        regions: vec![d.region.clone()],
        index,
        ..Default::default()
    }])
}
