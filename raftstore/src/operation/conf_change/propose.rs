//! Proposing a membership change, and leaving a joint configuration.
//!
//! - [`Peer::check_change_peer`]: the leader's checks before raft-rs sees a
//!   change: the leader, the epoch (`conf_ver` too), no merge, no change in
//!   progress (proposed and not applied: raft-rs would make a second one a no-op;
//!   or joint), the rules ([`changed_region`]), and the leader neither removed
//!   nor demoted (transfer first).
//! - [`Peer::maybe_leave_joint`]: whichever peer leads once a joint entry is
//!   applied proposes the empty change that leaves it (on every tick and after
//!   each apply result, so a new leader leaves what its predecessor entered); a
//!   demoting leader first hands the leadership to a voter of the new
//!   configuration that has the whole log.

use shoal_proto::metapb::PeerRole;
use shoal_proto::raft_cmdpb::{admin_request, ChangePeerRequest, RaftRequestHeader};
use shoal_proto::RegionExt;

use super::rules::{changed_region, role};
use crate::error::{not_leader, region_merging, CmdError};
use crate::fsm::PollCtx;
use crate::msg::Command;
use crate::operation::command::{admin_cmd, check_epoch};
use crate::raft::peer::Peer;

impl Peer {
    /// The leader's checks of a membership change before raft-rs sees it.
    pub(crate) fn check_change_peer(
        &self,
        header: &RaftRequestHeader,
        req: &ChangePeerRequest,
    ) -> Result<(), CmdError> {
        if !self.is_leader {
            return Err(not_leader(self.region_id, self.leader_meta()));
        }
        if self.merging.is_some() {
            return Err(region_merging(self.region_id));
        }
        check_epoch(self.region(), header.region_epoch.as_ref(), true)?;
        // raft-rs would turn a second pending change into a no-op entry.
        if self.raw.raft.has_pending_conf() {
            return Err(CmdError::Invalid(format!(
                "region {}: a membership change is in progress (proposed, not yet applied)",
                self.region_id
            )));
        }
        let region = changed_region(self.region(), &req.changes)
            .map_err(|why| CmdError::Invalid(format!("region {}: {why}", self.region_id)))?;
        match region.peers.iter().find(|p| p.id == self.peer_id) {
            Some(me) if matches!(role(me.role), PeerRole::Voter | PeerRole::IncomingVoter) => {
                Ok(())
            }
            _ => Err(CmdError::Invalid(format!(
                "region {}: the change would remove or demote the leader (peer {} on store {}); \
                 transfer the leadership first",
                self.region_id, self.peer_id, self.store_id
            ))),
        }
    }

    /// A leader whose region is in a joint configuration it has applied, with no
    /// change pending, proposes leaving it (on every tick and after each apply
    /// result, so a new leader leaves a joint configuration its predecessor entered).
    pub(crate) fn maybe_leave_joint(&mut self, ctx: &PollCtx) {
        if !self.is_leader
            || !self.region().is_joint()
            || self.raw.raft.has_pending_conf()
            || self.applying_snapshot.is_some()
        {
            return;
        }
        // A demoting leader would lead on as a learner: the leadership goes first
        // to a voter of the new configuration that has the whole log.
        let me = self.region().peers.iter().find(|p| p.id == self.peer_id);
        if me.is_some_and(|p| role(p.role) == PeerRole::DemotingVoter) {
            let last = self.raw.raft.raft_log.last_index();
            let heir = self.region().peers.iter().find(|p| {
                matches!(role(p.role), PeerRole::Voter | PeerRole::IncomingVoter)
                    && self
                        .raw
                        .raft
                        .prs()
                        .get(p.id)
                        .is_some_and(|pr| pr.matched == last)
            });
            if let Some(heir) = heir {
                tracing::info!(
                    region = self.region_id,
                    to = heir.id,
                    "a demoting leader hands over before leaving the joint configuration"
                );
                self.raw.transfer_leader(heir.id);
            }
            return;
        }
        tracing::info!(region = self.region_id, "leaving the joint configuration");
        let leave = admin_cmd(
            self.region(),
            self.store_id,
            self.region().region_epoch,
            admin_request::Cmd::ChangePeer(ChangePeerRequest::default()),
        );
        self.on_command(Command::unanswered(leave), &ctx.store);
    }
}
