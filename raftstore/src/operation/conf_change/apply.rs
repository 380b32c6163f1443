//! Applying a membership change, on every replica, and what the peer does once it
//! is applied.
//!
//! - [`apply_change_peer`] (the apply worker): the region's new peers and
//!   `conf_ver + 1` ([`changed_region`]), written with the batch (synced: an admin
//!   command). A replica removed by the change writes its tombstone and drops its
//!   data range in that same batch, and applies nothing after it.
//! - [`Peer::on_change_peer_applied`] (the poller): raft-rs takes the change (its
//!   configuration must equal the region's, or the replica stops); the peers the
//!   change removed are remembered, to be told so (`removed.rs`); a removed peer
//!   is destroyed.

use shoal_proto::metapb::{PeerChange, Region};
use shoal_proto::raft_cmdpb::{ChangePeerRequest, Response};
use shoal_proto::raft_serverpb::PeerState;

use super::removed::{tombstone, TOMBSTONE_RESENDS};
use super::rules::{changed_region, conf_change_of};
use crate::error::{fatal, region_merging, CmdError, WriteResult};
use crate::fsm::PollCtx;
use crate::operation::snapshot::apply::put_region_state;
use crate::raft::apply::{AdminResult, ApplyCtx, Delegate};
use crate::raft::peer::Peer;

impl Peer {
    /// raft-rs takes the applied change; the region is now `region`; a removed
    /// peer goes (its tombstone is durable: apply synced it).
    pub(crate) fn on_change_peer_applied(
        &mut self,
        region: Region,
        changes: Vec<PeerChange>,
        removed: bool,
        ctx: &mut PollCtx,
    ) {
        let cc = conf_change_of(&changes);
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(e) => fatal(
                self.region_id,
                format_args!("raft refused the membership change every replica applies: {e}"),
            ),
        };
        let ours = crate::raft::storage::conf_state_of(&region);
        let same = |a: &[u64], b: &[u64]| {
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort_unstable();
            b.sort_unstable();
            a == b
        };
        if !same(&cs.voters, &ours.voters)
            || !same(&cs.learners, &ours.learners)
            || !same(&cs.voters_outgoing, &ours.voters_outgoing)
            || !same(&cs.learners_next, &ours.learners_next)
        {
            fatal(
                self.region_id,
                format_args!("raft's configuration {cs:?} is not the region's {ours:?}"),
            );
        }
        tracing::info!(
            region = self.region_id,
            conf_ver = region.region_epoch.unwrap_or_default().conf_ver,
            peers = ?region.peers.iter().map(|p| (p.id, p.store_id, p.role)).collect::<Vec<_>>(),
            "membership changed"
        );
        let conf_ver = region.region_epoch.unwrap_or_default().conf_ver;
        // The peers this change removed are told so (below, and again for a while
        // by whichever peer leads): a learner never campaigns, so it would not
        // hear of it from a member's answer.
        let before = self.region().peers.clone();
        for p in before
            .iter()
            .filter(|p| !region.peers.iter().any(|q| q.id == p.id))
        {
            if p.id != self.peer_id {
                self.removed_peers.push((*p, TOMBSTONE_RESENDS));
            }
        }
        self.raw.mut_store().set_region(region);
        // A snapshot generated before names the old members.
        self.raw.store().snap.clear();
        if removed {
            return self.destroy_removed(conf_ver, ctx);
        }
        self.tell_removed_peers(ctx);
    }
}

/// Applies a membership change: the region's new peers, written in the batch. A
/// replica the change removes writes its tombstone and drops its data here.
pub(crate) fn apply_change_peer(
    d: &mut Delegate,
    req: &ChangePeerRequest,
    index: u64,
    ctx: &mut ApplyCtx,
) -> WriteResult {
    if d.merging.is_some() {
        return Err(region_merging(d.region.id));
    }
    let region = changed_region(&d.region, &req.changes)
        .map_err(|why| CmdError::Invalid(format!("region {}: {why}", d.region.id)))?;
    let removed = !region.peers.iter().any(|p| p.id == d.peer_id);
    if removed {
        tombstone(&mut ctx.batch, &region);
        d.removed = true;
    } else {
        put_region_state(&mut ctx.batch, &region, PeerState::Normal);
    }
    d.region = region.clone();
    let result = AdminResult::ChangePeer {
        region: region.clone(),
        changes: req.changes.clone(),
        removed,
    };
    ctx.report(region.id, index, result);
    Ok(vec![Response {
        regions: vec![region],
        ..Default::default()
    }])
}
