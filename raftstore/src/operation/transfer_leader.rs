//! Leadership transfer through raft-rs `transfer_leader`: the leader checks the
//! target (a voter of the region, not a learner nor in a joint configuration's
//! halves, and not behind), then raft-rs brings it up to date and tells it to
//! campaign at once (`MsgTimeoutNow`). The admin API waits for the election
//! (`store/membership.rs`).

use shoal_proto::metapb::{Peer as PeerMeta, PeerRole};
use tokio::sync::oneshot;

use crate::error::{not_leader, CmdError};
use crate::raft::peer::Peer;

/// A target further behind the leader's log than this many entries is refused:
/// the transfer would wait for its catch-up (during which raft-rs refuses
/// proposals).
pub(crate) const TRANSFER_MAX_LAG: u64 = 128;

impl Peer {
    /// Starts handing the leadership to this region's peer on `to_store`; answers
    /// with that peer once raft-rs has been asked (the caller waits for the
    /// election).
    pub(crate) fn transfer_leader(
        &mut self,
        to_store: u64,
        reply: oneshot::Sender<Result<PeerMeta, CmdError>>,
    ) {
        let _ = reply.send(self.start_transfer(to_store));
    }

    fn start_transfer(&mut self, to_store: u64) -> Result<PeerMeta, CmdError> {
        if !self.is_leader {
            return Err(not_leader(self.region_id, self.leader_meta()));
        }
        let region_id = self.region_id;
        let Some(target) = self
            .region()
            .peers
            .iter()
            .find(|p| p.store_id == to_store)
            .cloned()
        else {
            return Err(CmdError::Invalid(format!(
                "region {region_id} has no replica on store {to_store}"
            )));
        };
        if target.id == self.peer_id {
            return Ok(target);
        }
        if target.role != PeerRole::Voter as i32 {
            return Err(CmdError::Invalid(format!(
                "region {region_id}: peer {} on store {to_store} is not a voter (a learner, \
                 or in a membership change): it cannot lead",
                target.id
            )));
        }
        let last = self.raw.raft.raft_log.last_index();
        let matched = self
            .raw
            .raft
            .prs()
            .get(target.id)
            .map_or(0, |pr| pr.matched);
        if matched + TRANSFER_MAX_LAG < last {
            return Err(CmdError::Invalid(format!(
                "region {region_id}: peer {} on store {to_store} is behind (has entries to \
                 {matched}, the log ends at {last}); try again once it caught up",
                target.id
            )));
        }
        tracing::info!(
            region = region_id,
            to = target.id,
            to_store,
            "transferring the leadership"
        );
        self.raw.transfer_leader(target.id);
        Ok(target)
    }
}
