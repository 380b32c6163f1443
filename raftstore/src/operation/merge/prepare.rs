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
        check_carried(self.region_id, &entries, min_index)?;
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

    /// Apply froze this region as a merge source: reads waiting for an index are
    /// refused like new requests, and the leader drives the commit at once.
    pub(crate) fn on_prepare_merge_applied(
        &mut self,
        region: Region,
        state: MergeState,
        ctx: &PollCtx,
    ) {
        self.raw.mut_store().set_region(region);
        self.merging = Some(Box::new(state));
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
    d.merging = Some(Box::new(state.clone()));
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

/// No admin command or membership change may be in the entries a merge carries (the
/// catch-up applies them on the target's replicas without their effects), except a
/// log truncation that keeps every entry after `min_index`: the source's leader reads
/// the carried entries from its log until the commit, and a truncation past
/// `min_index` applied before that read would leave the merge unable to commit or
/// roll back. Such a truncation is still in flight: the prepare waits (retryable).
fn check_carried(region_id: u64, entries: &[Entry], min_index: u64) -> Result<(), CmdError> {
    for e in entries {
        if e.get_entry_type() != EntryType::EntryNormal {
            return Err(CmdError::Invalid(format!(
                "region {region_id} has a membership change in progress"
            )));
        }
        let admin = match e.data.is_empty() {
            true => None,
            false => RaftCmdRequest::decode(&e.data[..])
                .ok()
                .and_then(|c| c.admin)
                .map(|a| a.cmd),
        };
        match admin {
            None => {}
            Some(Some(admin_request::Cmd::CompactLog(c))) if c.compact_index <= min_index => {}
            Some(Some(admin_request::Cmd::CompactLog(_))) => {
                return Err(server_busy(
                    region_id,
                    "a log truncation past the merge's first carried entry is in flight",
                ));
            }
            Some(_) => {
                return Err(CmdError::Invalid(format!(
                    "region {region_id} has a split or merge in progress (log index {})",
                    e.index
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use shoal_proto::raft_cmdpb::{AdminRequest, CompactLogRequest, SplitRequest};

    use super::*;

    fn entry(index: u64, admin: Option<admin_request::Cmd>) -> Entry {
        let cmd = RaftCmdRequest {
            admin: admin.map(|cmd| AdminRequest { cmd: Some(cmd) }),
            ..Default::default()
        };
        Entry {
            index,
            term: 6,
            data: cmd.encode_to_vec().into(),
            ..Default::default()
        }
    }

    fn compact(index: u64) -> Option<admin_request::Cmd> {
        Some(admin_request::Cmd::CompactLog(CompactLogRequest {
            compact_index: index,
            compact_term: 6,
        }))
    }

    #[test]
    fn a_merge_carries_data_and_truncations_that_keep_its_entries_only() {
        let data = entry(11, None);
        check_carried(1, &[data.clone(), entry(12, compact(10))], 10).unwrap();
        // A truncation past the first carried entry: wait until it is applied.
        let err = check_carried(1, &[data.clone(), entry(12, compact(11))], 10).unwrap_err();
        assert!(err.to_string().contains("truncation"), "{err}");
        let split = admin_request::Cmd::Split(shoal_proto::raft_cmdpb::BatchSplitRequest {
            requests: vec![SplitRequest::default()],
        });
        let err = check_carried(1, &[data, entry(12, Some(split))], 10).unwrap_err();
        assert!(err.to_string().contains("split or merge"), "{err}");
    }
}
