//! Merge, step 3 (when the commit can never apply): **rollback**. Proposed on the
//! source's leader ([`Peer::propose_rollback`]) when this store's target peer says
//! its epoch moved on without the source, or the region worker finds the target
//! merged away. Applied on every source replica ([`apply_rollback`]): the source is
//! unfrozen and its version bumped; once applied here
//! ([`Peer::on_rollback_merge_applied`]) it serves again.

use shoal_proto::metapb::{Region, RegionEpoch};
use shoal_proto::raft_cmdpb::{admin_request, Response, RollbackMergeRequest};
use shoal_proto::raft_serverpb::PeerState;

use super::put_state;
use crate::error::{CmdError, WriteResult};
use crate::fsm::PollCtx;
use crate::msg::Command;
use crate::operation::command::admin_cmd;
use crate::raft::apply::{AdminResult, ApplyCtx, Delegate};
use crate::raft::peer::Peer;

impl Peer {
    /// On the source's leader: propose the rollback of the prepare at `commit`.
    pub(crate) fn propose_rollback(&mut self, commit: u64, ctx: &PollCtx) {
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
        self.on_command(Command::unanswered(request), &ctx.store);
    }

    /// Apply unfroze this region: it serves again.
    pub(crate) fn on_rollback_merge_applied(&mut self, region: Region) {
        self.raw.mut_store().set_region(region);
        self.merging = None;
    }
}

/// Unfreezes the source of the prepare at `req.commit`.
pub(crate) fn apply_rollback(
    d: &mut Delegate,
    req: RollbackMergeRequest,
    index: u64,
    ctx: &mut ApplyCtx,
) -> WriteResult {
    if d.merging.as_ref().map(|m| m.commit) != Some(req.commit) {
        return Err(CmdError::Invalid(format!(
            "region {} has no merge prepared at index {}",
            d.region.id, req.commit
        )));
    }
    d.merging = None;
    let epoch = d.region.region_epoch.unwrap_or_default();
    d.region.region_epoch = Some(RegionEpoch {
        conf_ver: epoch.conf_ver,
        version: epoch.version + 1,
    });
    put_state(ctx, &d.region, PeerState::Normal, None);
    let result = AdminResult::RollbackMerge {
        region: d.region.clone(),
    };
    ctx.report(d.region.id, index, result);
    tracing::info!(region = d.region.id, "merge rolled back");
    Ok(vec![Response {
        regions: vec![d.region.clone()],
        ..Default::default()
    }])
}
