//! Stale peers: a replica that may have been removed while it heard nothing asks
//! the region whether it still belongs (TiKV's stale-peer check, without a
//! placement driver to ask: the region's members are asked).
//!
//! Tombstone messages from a leader (`removed.rs`) reach a removed peer only for a
//! while, and a member's answer only reaches a peer that sends something (a
//! learner never campaigns; an uninitialized peer, made by a first heartbeat or a
//! snapshot that never came, sends nothing). So:
//!
//! - **Asking.** An awake peer counts the raft ticks since it last heard from a
//!   leader (an append, heartbeat or snapshot from the peer raft-rs then follows;
//!   a leader never counts). After `raft-stale-peer-check-interval` of them it
//!   asks (`CHECK_STALE_PEER`) every peer it knows of the region: its members and
//!   the peers that wrote to it while it did not list them (an uninitialized
//!   peer's creator among them), then counts again. A dormant peer has no ticks,
//!   so it never asks: a dormant follower is watched by store liveness, and
//!   nothing wakes for this. The check names the membership the peer knows
//!   itself in: its region's epoch, or, uninitialized, the newest `conf_ver` at
//!   which a peer that wrote to it listed it ([`StaleCheck::listed_at`]).
//! - **Answering.** A member at a newer `conf_ver` that does not list the asker
//!   answers with the tombstone message (`Peer::send_tombstone`), dormant or not
//!   (a check wakes nothing). A member that lists it, or knows no newer
//!   membership, says nothing. A store with no peer of the region where it was
//!   merged away answers with a tombstone at `conf_ver` `u64::MAX`
//!   ([`answer_for_absent_region`]).
//! - **Acting.** The asker acts as on any tombstone message
//!   (`Peer::on_tombstone_message`): destroyed, tombstoned, its data dropped.
//!
//! Raft safety: a peer is only ever collected on proof that it is no member: a
//! membership newer than any it was listed in, without it (peer ids are never
//! reused, so a replica added back on its store is another peer). Its own region
//! lists it, so only a replica from a later configuration can say so. A
//! merged-away answer collects only an uninitialized peer: an initialized one
//! may be a merge source whose data its store's target replica still needs to
//! apply the merge (it is collected when that target's snapshot or merge comes).

use shoal_proto::metapb::{Peer as PeerMeta, RegionEpoch};
use shoal_proto::raft_serverpb::{ExtraMessage, ExtraMessageType, RaftMessage};

use crate::fsm::PollCtx;
use crate::raft::peer::Peer;

/// A peer's stale-peer check state.
#[derive(Default)]
pub(crate) struct StaleCheck {
    /// Raft ticks since this peer last heard from a leader (or led).
    ticks: u32,
    /// While uninitialized: the newest `conf_ver` of a message from a peer of
    /// the region to this one (its sender's membership listed this peer then).
    pub(crate) listed_at: u64,
}

/// Whether `msg` is a stale-peer check.
pub(crate) fn is_stale_check(msg: &RaftMessage) -> bool {
    msg.extra
        .as_ref()
        .is_some_and(|e| e.r#type == ExtraMessageType::CheckStalePeer as i32)
}

impl Peer {
    /// On each raft tick of an awake peer: counts the ticks without a leader, and
    /// asks the region once there were `raft-stale-peer-check-interval` of them.
    pub(crate) fn on_stale_check_tick(&mut self, ctx: &mut PollCtx) {
        // A peer applying a snapshot hears from its leader once it is applied.
        if self.is_leader || self.applying_snapshot.is_some() {
            self.stale.ticks = 0;
            return;
        }
        self.stale.ticks += 1;
        if self.stale.ticks < ctx.store.cfg.stale_peer_check_ticks() {
            return;
        }
        self.stale.ticks = 0;
        self.ask_whether_member(ctx);
    }

    /// A raft message from the leader raft-rs follows now was stepped.
    pub(crate) fn heard_from_leader(&mut self) {
        self.stale.ticks = 0;
    }

    /// Sends a stale-peer check to every peer this one knows of its region.
    fn ask_whether_member(&self, ctx: &mut PollCtx) {
        let region = self.region();
        let epoch = match region.peers.is_empty() {
            false => region.region_epoch,
            true => Some(RegionEpoch {
                conf_ver: self.stale.listed_at,
                version: 0,
            }),
        };
        let me = region
            .peers
            .iter()
            .find(|p| p.id == self.peer_id)
            .copied()
            .unwrap_or(PeerMeta {
                id: self.peer_id,
                store_id: self.store_id,
                ..Default::default()
            });
        let mut asked: Vec<u64> = Vec::new();
        for to in region.peers.iter().chain(self.senders.values()) {
            if to.id == self.peer_id || asked.contains(&to.id) {
                continue;
            }
            asked.push(to.id);
            ctx.outgoing.push(RaftMessage {
                region_id: self.region_id,
                from_peer: Some(me),
                to_peer: Some(*to),
                region_epoch: epoch,
                extra: Some(ExtraMessage {
                    r#type: ExtraMessageType::CheckStalePeer as i32,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        crate::warn_limited!(
            region = self.region_id,
            peer = self.peer_id,
            ?asked,
            "no leader heard for {:?}: asking the region's peers whether this replica \
             still belongs",
            ctx.store.cfg.raft_stale_peer_check_interval
        );
    }
}

/// A stale-peer check for a region this store has no peer of. Merged away here,
/// the region is gone for good: the asker is told so with a tombstone message at
/// `conf_ver` `u64::MAX` (acted on by an uninitialized asker only, see the module
/// docs). Otherwise this store knows nothing of the asker's membership (never
/// had the region, or its own replica was removed) and says nothing.
pub(crate) fn answer_for_absent_region(ctx: &PollCtx, msg: &RaftMessage) {
    let merged = ctx
        .store
        .ranges
        .tombstone(msg.region_id)
        .is_some_and(|t| t.conf_ver == u64::MAX);
    let Some(asker) = msg.from_peer.filter(|_| merged) else {
        return;
    };
    let answer = RaftMessage {
        region_id: msg.region_id,
        // The peer asked, which was this store's replica of the region.
        from_peer: msg.to_peer,
        to_peer: Some(asker),
        region_epoch: Some(RegionEpoch {
            conf_ver: u64::MAX,
            version: 0,
        }),
        is_tombstone: true,
        ..Default::default()
    };
    ctx.store.send_messages(vec![answer]);
}
