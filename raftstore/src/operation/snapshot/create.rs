//! A leader's heartbeat or snapshot for a region this store does not have creates
//! its peer: a replica that missed a split (its parent's snapshot skipped it), or
//! a new replica.
//!
//! The peer is created **uninitialized**: empty log, no membership, the range the
//! message names reserved in the store's region ranges (refused when it overlaps
//! a region this store has, e.g. the parent that has not applied the split yet,
//! or when the region was merged away here). Only a heartbeat from a leader that
//! has never heard from this peer (commit 0) or a snapshot creates one; the peer
//! answers, the leader finds its log empty and sends a snapshot. Nothing is
//! written until that snapshot applies, so a crash before leaves no trace and the
//! leader sends it again.

use protobuf::Message as _;
use raft::eraftpb::{Message as RaftPbMessage, MessageType};
use shoal_proto::metapb::Region;
use shoal_proto::raft_serverpb::{RaftApplyState, RaftLocalState, RaftMessage};

use crate::fsm::PollCtx;
use crate::msg::PeerMsg;
use crate::operation::life::{start_peer_as, PeerStart};
use crate::operation::snapshot::apply::is_snapshot;
use crate::operation::snapshot::recv::snapshot_of;

/// A Raft message for a region this store has no peer of: a first heartbeat or a
/// snapshot creates the peer and is delivered to it; anything else is dropped (its
/// sender retries).
pub(crate) fn on_unknown_region_message(ctx: &PollCtx, msg: Box<RaftMessage>) {
    let region_id = msg.region_id;
    if crate::operation::conf_change::is_stale_check(&msg) {
        return crate::operation::conf_change::answer_for_absent_region(ctx, &msg);
    }
    let creates = RaftPbMessage::parse_from_bytes(&msg.message).is_ok_and(|m| {
        is_snapshot(&m) || (m.get_msg_type() == MessageType::MsgHeartbeat && m.commit == 0)
    });
    if !creates {
        tracing::debug!(
            store = ctx.store.store_id,
            region = region_id,
            "raft message for a region this store does not have"
        );
        return;
    }
    match create_peer(ctx, &msg) {
        Ok(()) => {
            let _ = ctx.store.router.send(region_id, PeerMsg::Raft(msg));
        }
        Err(e) => {
            tracing::info!(
                store = ctx.store.store_id,
                region = region_id,
                "not creating a peer for a region this store lacks: {e}"
            );
            // A snapshot that creates nothing leaves no files behind.
            if let (Ok((key, _)), Some(root)) = (snapshot_of(&msg), ctx.store.snap_root()) {
                ctx.store
                    .remove_snapshot_dir(key.recv_dir(root, msg.snapshot_transfer));
            }
        }
    }
}

fn create_peer(ctx: &PollCtx, msg: &RaftMessage) -> Result<(), String> {
    let store = &ctx.store;
    let to = msg.to_peer.unwrap_or_default();
    if to.store_id != store.store_id {
        return Err(format!("addressed to store {}", to.store_id));
    }
    if let Ok((_, data)) = snapshot_of(msg) {
        let region = data.region.unwrap_or_default();
        if !region
            .peers
            .iter()
            .any(|p| p.id == to.id && p.store_id == to.store_id)
        {
            return Err(format!(
                "peer {} is not a member of the snapshot's region",
                to.id
            ));
        }
    }
    let region_id = msg.region_id;
    let conf_ver = msg.region_epoch.unwrap_or_default().conf_ver;
    store
        .ranges
        .reserve(region_id, to.id, conf_ver, &msg.start_key, &msg.end_key)?;
    let uninitialized = Region {
        id: region_id,
        start_key: msg.start_key.clone(),
        end_key: msg.end_key.clone(),
        region_epoch: None,
        peers: Vec::new(),
    };
    let start = PeerStart {
        region: uninitialized,
        raft_state: Some(RaftLocalState::default()),
        apply_state: RaftApplyState::default(),
        merging: None,
    };
    if let Err(e) = start_peer_as(store, start, to, crate::operation::life::Start::Awake) {
        store.ranges.remove(region_id, None);
        return Err(e.to_string());
    }
    tracing::info!(
        store = store.store_id,
        region = region_id,
        peer = to.id,
        "created an uninitialized peer for a region this store did not have"
    );
    Ok(())
}
