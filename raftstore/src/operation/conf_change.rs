//! Membership changes (`ChangePeer`), through raft-rs `ConfChangeV2`.
//!
//! - **The rules** are one pure function, [`changed_region`]: the region a list of
//!   changes makes, or why it may not. The leader checks a proposal with it and
//!   every replica applies with it, so raft-rs's own checker never sees a change
//!   Shoal would refuse (it would turn the entry into a no-op that answers "done").
//!   One change applies at once; two or more enter a **joint configuration**
//!   (raft-rs's explicit transition: `auto_leave` off), which the leader leaves on
//!   its own ([`Peer::maybe_leave_joint`]: an empty change, proposed once the joint
//!   entry is applied, by whichever peer leads then). A voter is never removed
//!   inside a joint change: it is demoted (to `DEMOTING_VOTER`, a learner once the
//!   joint configuration is left), then removed as a learner.
//! - **Proposing** ([`Peer::check_change_peer`]): the leader, the epoch (`conf_ver`
//!   too), no change in progress (in the log or joint), the leader neither removed
//!   nor demoted (transfer first).
//! - **Applying** ([`apply_change_peer`]): the region's new peers and `conf_ver + 1`,
//!   written with the batch (synced: an admin command). A replica removed by the
//!   change writes its tombstone and drops its data range in that same batch, and
//!   applies nothing after it.
//! - **Applied** ([`Peer::on_change_peer_applied`]): raft-rs takes the change
//!   (its configuration must equal the region's); a removed peer is destroyed.
//! - **A removed peer that missed its removal** (partitioned away) keeps sending
//!   (pre-)votes; a member that gets a message from a peer it does not know, at an
//!   older `conf_ver`, answers with a tombstone message ([`Peer::send_tombstone`]).
//!   The removed peer checks it (a member of its region, at a newer `conf_ver`),
//!   stops taking part, and has the apply worker tombstone it and drop its data
//!   (`ApplyMsg::Destroy`, [`destroy_removed`]) before it is destroyed. Its pre-votes
//!   never disturb the group: members drop messages from peers they do not know.

use std::collections::HashSet;

use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
use shoal_engine::keys::{data_end_key, data_key};
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvBatch, KvEngine};
use shoal_proto::metapb::{ChangeKind, PeerChange, PeerRole, Region, RegionEpoch};
use shoal_proto::raft_cmdpb::{admin_request, ChangePeerRequest, RaftRequestHeader, Response};
use shoal_proto::raft_serverpb::{PeerState, RaftMessage};
use shoal_proto::RegionExt;

use crate::error::{fatal, not_leader, region_merging, CmdError, WriteResult};
use crate::fsm::PollCtx;
use crate::metrics::StoreMetrics;
use crate::msg::Command;
use crate::operation::command::{admin_cmd, check_epoch};
use crate::operation::snapshot::apply::put_region_state;
use crate::raft::apply::{AdminResult, ApplyCtx, ApplyRes, Delegate};
use crate::raft::peer::Peer;

/// How many times a leader tells a removed peer it was removed (once an election
/// timeout): a peer cut off longer keeps its replica until the region adds one
/// on its store again (`Peer::on_message_for_successor`).
pub(crate) const TOMBSTONE_RESENDS: u32 = 60;

/// The region `changes` make of `region`, with `conf_ver + 1`; no changes leave
/// the joint configuration. The error says why the changes may not be made.
pub(crate) fn changed_region(region: &Region, changes: &[PeerChange]) -> Result<Region, String> {
    let mut out = region.clone();
    let epoch = out.region_epoch.get_or_insert_with(RegionEpoch::default);
    epoch.conf_ver += 1;
    if changes.is_empty() {
        if !region.is_joint() {
            return Err("the region is not in a joint configuration: nothing to leave".into());
        }
        for p in &mut out.peers {
            p.role = match role(p.role) {
                PeerRole::IncomingVoter => PeerRole::Voter,
                PeerRole::DemotingVoter => PeerRole::Learner,
                r => r,
            } as i32;
        }
        return Ok(out);
    }
    if region.is_joint() {
        return Err(
            "the region is in a joint configuration (a change is in progress); \
             it must be left first"
                .into(),
        );
    }
    let joint = changes.len() > 1;
    // What a voter added or promoted, and a voter demoted, become: in a joint
    // configuration, voters of one half only.
    let (promoted, demoted) = match joint {
        true => (PeerRole::IncomingVoter, PeerRole::DemotingVoter),
        false => (PeerRole::Voter, PeerRole::Learner),
    };
    let mut seen_peers = HashSet::new();
    let mut seen_stores = HashSet::new();
    let mut voters_changed = false;
    for c in changes {
        let peer = c.peer.unwrap_or_default();
        if peer.id == 0 || peer.store_id == 0 {
            return Err("a change names peer 0 or store 0".into());
        }
        if !seen_peers.insert(peer.id) || !seen_stores.insert(peer.store_id) {
            return Err(format!(
                "store {} (peer {}) is named twice in one request",
                peer.store_id, peer.id
            ));
        }
        let kind =
            ChangeKind::try_from(c.kind).map_err(|_| format!("unknown change kind {}", c.kind))?;
        let existing = out.peers.iter().position(|p| p.id == peer.id);
        if let Some(i) = existing {
            if out.peers[i].store_id != peer.store_id {
                return Err(format!(
                    "peer {} is on store {}, not store {}",
                    peer.id, out.peers[i].store_id, peer.store_id
                ));
            }
        } else if let Some(other) = out.peers.iter().find(|p| p.store_id == peer.store_id) {
            return Err(format!(
                "store {} already holds a replica of region {} (peer {}): a store holds \
                 at most one",
                peer.store_id, region.id, other.id
            ));
        }
        let already = |what: &str| {
            format!(
                "peer {} on store {} is already a {what}",
                peer.id, peer.store_id
            )
        };
        match (kind, existing) {
            (ChangeKind::AddVoter, None) => {
                voters_changed = true;
                out.peers.push(shoal_proto::metapb::Peer {
                    role: promoted as i32,
                    ..peer
                });
            }
            (ChangeKind::AddVoter, Some(i)) => {
                if role(out.peers[i].role) != PeerRole::Learner {
                    return Err(already("voter"));
                }
                voters_changed = true;
                out.peers[i].role = promoted as i32;
            }
            (ChangeKind::AddLearner, None) => out.peers.push(shoal_proto::metapb::Peer {
                role: PeerRole::Learner as i32,
                ..peer
            }),
            (ChangeKind::AddLearner, Some(i)) => {
                if role(out.peers[i].role) != PeerRole::Voter {
                    return Err(already("learner"));
                }
                voters_changed = true;
                out.peers[i].role = demoted as i32;
            }
            (ChangeKind::Remove, None) => {
                return Err(format!(
                    "peer {} on store {} is not a replica of region {}",
                    peer.id, peer.store_id, region.id
                ))
            }
            (ChangeKind::Remove, Some(i)) => {
                let voter = role(out.peers[i].role) == PeerRole::Voter;
                if voter && joint {
                    return Err(format!(
                        "peer {} on store {} is a voter: in a change of several peers a voter \
                         is demoted (add it as a learner), then removed on its own",
                        peer.id, peer.store_id
                    ));
                }
                voters_changed |= voter;
                out.peers.remove(i);
            }
        }
    }
    if joint && !voters_changed {
        return Err(
            "several changes of learners only: make them one at a time (a joint \
             configuration needs a change of voters)"
                .into(),
        );
    }
    let voters = out
        .peers
        .iter()
        .filter(|p| matches!(role(p.role), PeerRole::Voter | PeerRole::IncomingVoter))
        .count();
    if voters == 0 {
        return Err("the change would leave the region without a voter".into());
    }
    Ok(out)
}

fn role(r: i32) -> PeerRole {
    PeerRole::try_from(r).unwrap_or(PeerRole::Voter)
}

/// The raft-rs change for `changes`: one change is simple, several enter a joint
/// configuration left explicitly, none leaves it.
pub(crate) fn conf_change_of(changes: &[PeerChange]) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    if changes.len() > 1 {
        cc.set_transition(ConfChangeTransition::Explicit);
    }
    for c in changes {
        let mut single = ConfChangeSingle {
            node_id: c.peer.unwrap_or_default().id,
            ..Default::default()
        };
        single.set_change_type(match ChangeKind::try_from(c.kind) {
            Ok(ChangeKind::AddVoter) => ConfChangeType::AddNode,
            Ok(ChangeKind::AddLearner) => ConfChangeType::AddLearnerNode,
            _ => ConfChangeType::RemoveNode,
        });
        cc.changes.push(single);
    }
    cc
}

/// The changes of a command, when it is a membership change.
pub(crate) fn change_peer_of(
    cmd: &shoal_proto::raft_cmdpb::RaftCmdRequest,
) -> Option<&ChangePeerRequest> {
    match cmd.admin.as_ref().and_then(|a| a.cmd.as_ref()) {
        Some(admin_request::Cmd::ChangePeer(c)) => Some(c),
        _ => None,
    }
}

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

    /// A leader tells the peers its region removed that they were (once now, then
    /// once an election timeout, [`TOMBSTONE_RESENDS`] times): one cut off at the
    /// time hears of it when it is back.
    pub(crate) fn tell_removed_peers(&mut self, ctx: &mut PollCtx) {
        if !self.is_leader || self.removed_peers.is_empty() {
            return;
        }
        let epoch = self.region().region_epoch;
        let me = self
            .region()
            .peers
            .iter()
            .find(|p| p.id == self.peer_id)
            .cloned();
        for (peer, left) in &mut self.removed_peers {
            *left -= 1;
            ctx.outgoing.push(RaftMessage {
                region_id: self.region_id,
                from_peer: me,
                to_peer: Some(*peer),
                region_epoch: epoch,
                is_tombstone: true,
                ..Default::default()
            });
        }
        self.removed_peers.retain(|(_, left)| *left > 0);
    }

    /// A message from a peer this region does not list, sent at an older
    /// `conf_ver`: that peer was removed. It is told so (it destroys itself).
    pub(crate) fn send_tombstone(&self, msg: &RaftMessage, ctx: &mut PollCtx) {
        let mine = self.region().region_epoch.unwrap_or_default();
        let theirs = msg.region_epoch.unwrap_or_default();
        let Some(from) = msg.from_peer else { return };
        if self.region().peers.is_empty()
            || theirs.conf_ver >= mine.conf_ver
            || self.region().peers.iter().any(|p| p.id == from.id)
        {
            return;
        }
        let me = self
            .region()
            .peers
            .iter()
            .find(|p| p.id == self.peer_id)
            .cloned();
        ctx.outgoing.push(RaftMessage {
            region_id: self.region_id,
            from_peer: me,
            to_peer: Some(from),
            region_epoch: Some(mine),
            is_tombstone: true,
            ..Default::default()
        });
    }

    /// A tombstone message: when it is addressed to this peer and comes from a
    /// member of its region at a newer `conf_ver`, this peer was removed while
    /// away.
    pub(crate) fn on_tombstone_message(&mut self, msg: &RaftMessage, ctx: &PollCtx) {
        let mine = self.region().region_epoch.unwrap_or_default().conf_ver;
        let theirs = msg.region_epoch.unwrap_or_default().conf_ver;
        let from = msg.from_peer.unwrap_or_default();
        let to = msg.to_peer.unwrap_or_default();
        let peers = &self.region().peers;
        let member = peers.is_empty()
            || peers
                .iter()
                .any(|p| p.id == from.id && p.store_id == from.store_id);
        let for_me = to.id == self.peer_id && to.store_id == self.store_id;
        if !member || !for_me || theirs <= mine {
            return;
        }
        let why = format!("peer {} says it was removed from the region", from.id);
        self.begin_removal(&why, ctx);
    }

    /// A message for another peer of this region on this store, from a newer
    /// membership: the region has a new replica here, so this one was removed (a
    /// store holds one replica of a region). Goes as on a tombstone message, and
    /// the new peer is created by the next message to it.
    pub(crate) fn on_message_for_successor(&mut self, msg: &RaftMessage, ctx: &PollCtx) {
        let mine = self.region().region_epoch.unwrap_or_default().conf_ver;
        let theirs = msg.region_epoch.unwrap_or_default().conf_ver;
        let to = msg.to_peer.unwrap_or_default();
        if to.store_id != self.store_id || to.id == self.peer_id || theirs <= mine {
            return;
        }
        let why = format!("the region has a new replica here (peer {})", to.id);
        self.begin_removal(&why, ctx);
    }

    /// Stops taking part and has the apply worker drop this replica's data and
    /// write its tombstone; `Removed` comes back and the peer is destroyed.
    fn begin_removal(&mut self, why: &str, ctx: &PollCtx) {
        if self.applying_snapshot.is_some() || self.removing {
            return;
        }
        tracing::info!(
            region = self.region_id,
            peer = self.peer_id,
            "this replica was removed from the region ({why}); destroying it"
        );
        self.removing = true;
        let destroy = crate::raft::apply::ApplyMsg::Destroy {
            region_id: self.region_id,
        };
        let _ = ctx.store.apply_worker(self.region_id).send(destroy);
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

/// The region's tombstone and the removal of its data, in one batch.
fn tombstone(batch: &mut KvBatch, region: &Region) {
    put_region_state(batch, region, PeerState::Tombstone);
    batch.delete_range(
        Cf::Default,
        data_key(&region.start_key),
        data_end_key(&region.end_key),
    );
}

/// The apply worker's part of destroying a peer that learned it was removed: its
/// tombstone (the region as this replica knew it: its `conf_ver`, and its own
/// peer, which no message may create again) and its data's removal, synced, then
/// the delegate goes.
pub(crate) fn destroy_removed(
    kv: &RocksKvEngine,
    metrics: &StoreMetrics,
    region_id: u64,
    delegates: &mut std::collections::HashMap<u64, Delegate>,
) -> Option<ApplyRes> {
    let d = delegates.remove(&region_id)?;
    let _entered = d.span.enter();
    let region = d.region;
    let conf_ver = region.region_epoch.unwrap_or_default().conf_ver;
    let mut batch = KvBatch::new();
    tombstone(&mut batch, &region);
    let written = metrics
        .retry_while_disk_full("tombstone", || kv.write(&batch))
        .and_then(|()| kv.sync());
    if let Err(e) = written {
        panic!("region {region_id}: cannot write a removed replica's tombstone: {e}");
    }
    Some(ApplyRes {
        applied_index: d.state.applied_index,
        results: vec![AdminResult::Removed { conf_ver }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::metapb::Peer as PeerMeta;

    fn peer(id: u64, store: u64, role: PeerRole) -> PeerMeta {
        PeerMeta {
            id,
            store_id: store,
            role: role as i32,
        }
    }

    fn region3() -> Region {
        Region {
            id: 1,
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![
                peer(11, 1, PeerRole::Voter),
                peer(12, 2, PeerRole::Voter),
                peer(13, 3, PeerRole::Voter),
            ],
            ..Default::default()
        }
    }

    fn change(kind: ChangeKind, id: u64, store: u64) -> PeerChange {
        PeerChange {
            kind: kind as i32,
            peer: Some(peer(id, store, PeerRole::Voter)),
        }
    }

    fn roles(r: &Region) -> Vec<(u64, PeerRole)> {
        let mut v: Vec<_> = r.peers.iter().map(|p| (p.id, role(p.role))).collect();
        v.sort_unstable_by_key(|p| p.0);
        v
    }

    #[test]
    fn a_move_goes_through_a_joint_configuration_and_out() {
        let r = region3();
        let learner = changed_region(&r, &[change(ChangeKind::AddLearner, 14, 4)]).unwrap();
        assert_eq!(learner.region_epoch.unwrap().conf_ver, 2);
        assert!(!learner.is_joint());
        let joint = changed_region(
            &learner,
            &[
                change(ChangeKind::AddVoter, 14, 4),
                change(ChangeKind::AddLearner, 13, 3),
            ],
        )
        .unwrap();
        assert!(joint.is_joint());
        let cs = crate::raft::storage::conf_state_of(&joint);
        let mut v = cs.voters.clone();
        v.sort_unstable();
        assert_eq!(v, vec![11, 12, 14]);
        let mut o = cs.voters_outgoing.clone();
        o.sort_unstable();
        assert_eq!(o, vec![11, 12, 13]);
        assert_eq!(cs.learners_next, vec![13]);
        // No other change until the joint configuration is left.
        assert!(changed_region(&joint, &[change(ChangeKind::Remove, 13, 3)]).is_err());
        let left = changed_region(&joint, &[]).unwrap();
        assert_eq!(
            roles(&left),
            vec![
                (11, PeerRole::Voter),
                (12, PeerRole::Voter),
                (13, PeerRole::Learner),
                (14, PeerRole::Voter)
            ]
        );
        let done = changed_region(&left, &[change(ChangeKind::Remove, 13, 3)]).unwrap();
        assert_eq!(done.peers.len(), 3);
        assert_eq!(done.region_epoch.unwrap().conf_ver, 5);
    }

    #[test]
    fn bad_changes_are_refused_with_the_reason() {
        let r = region3();
        let refused = |changes: &[PeerChange]| changed_region(&r, changes).unwrap_err();
        assert!(refused(&[change(ChangeKind::AddVoter, 21, 2)]).contains("already holds"));
        assert!(refused(&[change(ChangeKind::AddVoter, 12, 2)]).contains("already a voter"));
        assert!(refused(&[change(ChangeKind::Remove, 19, 9)]).contains("not a replica"));
        assert!(refused(&[change(ChangeKind::Remove, 12, 3)]).contains("is on store 2"));
        assert!(refused(&[]).contains("not in a joint"));
        assert!(refused(&[
            change(ChangeKind::AddVoter, 14, 4),
            change(ChangeKind::Remove, 13, 3)
        ])
        .contains("demoted"));
        assert!(refused(&[
            change(ChangeKind::AddLearner, 14, 4),
            change(ChangeKind::AddLearner, 15, 5)
        ])
        .contains("learners only"));
        assert!(refused(&[
            change(ChangeKind::AddLearner, 14, 4),
            change(ChangeKind::AddVoter, 15, 4)
        ])
        .contains("twice"));
        let one = Region {
            peers: vec![peer(11, 1, PeerRole::Voter)],
            ..region3()
        };
        assert!(changed_region(&one, &[change(ChangeKind::Remove, 11, 1)])
            .unwrap_err()
            .contains("without a voter"));
    }

    #[test]
    fn raft_rs_agrees_with_the_region_after_each_change() {
        use raft::{storage::MemStorage, Config, RawNode};
        let r = region3();
        let cs = crate::raft::storage::conf_state_of(&r);
        let store = MemStorage::new_with_conf_state(cs);
        let cfg = Config {
            id: 11,
            ..Default::default()
        };
        let logger = crate::raft::logger::raft_logger(1, 11);
        let mut raw = RawNode::new(&cfg, store, &logger).unwrap();
        let steps: Vec<Vec<PeerChange>> = vec![
            vec![change(ChangeKind::AddLearner, 14, 4)],
            vec![
                change(ChangeKind::AddVoter, 14, 4),
                change(ChangeKind::AddLearner, 13, 3),
            ],
            vec![],
            vec![change(ChangeKind::Remove, 13, 3)],
            vec![change(ChangeKind::AddVoter, 15, 5)],
        ];
        let mut region = r;
        for changes in steps {
            region = changed_region(&region, &changes).unwrap();
            let mut cs = raw.apply_conf_change(&conf_change_of(&changes)).unwrap();
            let mut ours = crate::raft::storage::conf_state_of(&region);
            for v in [
                &mut cs.voters,
                &mut cs.learners,
                &mut cs.voters_outgoing,
                &mut cs.learners_next,
            ] {
                v.sort_unstable();
            }
            for v in [
                &mut ours.voters,
                &mut ours.learners,
                &mut ours.voters_outgoing,
                &mut ours.learners_next,
            ] {
                v.sort_unstable();
            }
            assert_eq!(cs, ours, "after {changes:?}");
        }
    }
}
