//! Replicas removed from their region, and the tombstone messages that reach the
//! ones that missed their removal (cut off at the time).
//!
//! - **Telling them** ([`Peer::tell_removed_peers`]): every replica counts down
//!   the peers a change removed, once when the change applies and then once an
//!   election timeout, [`TOMBSTONE_RESENDS`] times, and whichever peer leads tells
//!   each that it was removed (a tombstone message, `is_tombstone`): a learner
//!   never campaigns, so nothing else would reach it. A follower asked to go
//!   dormant forgets the rest of its count: the leader that asked has none left.
//! - **Answering them** ([`Peer::send_tombstone`]): a member that gets a message
//!   from a peer it does not list, sent at an older `conf_ver`, answers with a
//!   tombstone message. The removed peer's (pre-)votes never disturb the group:
//!   members drop messages from peers they do not know.
//! - **Hearing it** ([`Peer::on_tombstone_message`],
//!   [`Peer::on_message_for_successor`]): the removed peer checks what it hears
//!   (addressed to it, from a member of its region at a newer `conf_ver`; or a
//!   message for its successor on this store from a newer membership), stops
//!   taking part, and has the apply worker tombstone it and drop its data
//!   (`ApplyMsg::Destroy`, [`destroy_removed`]) before it is destroyed
//!   (`operation/life.rs`).

use shoal_engine::keys::{data_end_key, data_key};
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvBatch, KvEngine};
use shoal_proto::metapb::Region;
use shoal_proto::raft_serverpb::{PeerState, RaftMessage};

use crate::fsm::PollCtx;
use crate::metrics::StoreMetrics;
use crate::operation::snapshot::apply::put_region_state;
use crate::raft::apply::{AdminResult, ApplyRes, Delegate};
use crate::raft::peer::Peer;

/// How many times a leader tells a removed peer it was removed (once an election
/// timeout): a peer cut off longer learns of it when its stale-peer check asks
/// (`stale.rs`), or when the region adds a replica on its store again
/// (`Peer::on_message_for_successor`).
pub(crate) const TOMBSTONE_RESENDS: u32 = 60;

impl Peer {
    /// The peers its region removed are counted down on every replica (once when
    /// the change applies, then once an election timeout, [`TOMBSTONE_RESENDS`]
    /// times), and a leader tells them they were removed: one cut off at the time
    /// hears of it when it is back. Counting on followers too lets a follower that
    /// leads later tell them only for what is left of the count (nothing, long
    /// after the removal) instead of starting it again and staying awake for it.
    pub(crate) fn tell_removed_peers(&mut self, ctx: &mut PollCtx) {
        if self.removed_peers.is_empty() {
            return;
        }
        let leader = self.is_leader;
        let epoch = self.region().region_epoch;
        let me = self
            .region()
            .peers
            .iter()
            .find(|p| p.id == self.peer_id)
            .cloned();
        for (peer, left) in &mut self.removed_peers {
            *left -= 1;
            if !leader {
                continue;
            }
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
    /// away. An uninitialized peer knows no member: any peer of the region at a
    /// `conf_ver` newer than the newest it was listed in will do, and so will a
    /// store where the region was merged away (`conf_ver` `u64::MAX`, which an
    /// initialized peer does not take: `stale.rs`).
    pub(crate) fn on_tombstone_message(&mut self, msg: &RaftMessage, ctx: &PollCtx) {
        let peers = &self.region().peers;
        let initialized = !peers.is_empty();
        let mine = match initialized {
            true => self.region().region_epoch.unwrap_or_default().conf_ver,
            false => self.stale.listed_at,
        };
        let theirs = msg.region_epoch.unwrap_or_default().conf_ver;
        let from = msg.from_peer.unwrap_or_default();
        let to = msg.to_peer.unwrap_or_default();
        let member = !initialized
            || peers
                .iter()
                .any(|p| p.id == from.id && p.store_id == from.store_id);
        let for_me = to.id == self.peer_id && to.store_id == self.store_id;
        let merged_away = theirs == u64::MAX;
        if !member || !for_me || theirs <= mine || (initialized && merged_away) {
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

/// The region's tombstone and the removal of its data, in one batch.
pub(super) fn tombstone(batch: &mut KvBatch, region: &Region) {
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
