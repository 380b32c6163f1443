//! [`Peer`]: one region's replica on this store, driving a raft-rs `RawNode`: its
//! state, the dispatch of its messages, and the checks on Raft messages from
//! other stores. What it does with each message is in `operation/`: proposing
//! (`propose.rs`), reads (`read.rs`), the ready and apply results (`ready.rs`),
//! split, split checks and merge, creation and destruction (`life.rs`).
//!
//! The poller calls [`Peer::on_msg`] for each message of the round, then
//! `Peer::on_round_end` (`operation/ready.rs`). Every client request is answered
//! exactly once: applied, refused with a region error, certainly dropped
//! (`StaleCommand`) or of unknown outcome (`Undetermined`).

use std::collections::VecDeque;

use protobuf::Message as _;
use raft::eraftpb::{Message as RaftPbMessage, MessageType};
use raft::RawNode;
use shoal_proto::adminpb::RegionInfo;
use shoal_proto::metapb::{Peer as PeerMeta, Region};
use shoal_proto::raft_serverpb::{MergeState, RaftMessage};

use crate::error::region_not_found;
use crate::fsm::PollCtx;
use crate::metrics::StoreMetrics;
use crate::msg::{PeerMsg, PeerTick, ReadRequest};
use crate::operation::conf_change::{is_stale_check, StaleCheck};
use crate::operation::dormancy::{is_dormancy_message, Dormancy};
use crate::operation::merge::DRIVE_EVERY_TICKS;
use crate::operation::propose::{PendingWrites, Proposal};
use crate::operation::read::ReadBatch;
use crate::operation::snapshot::apply::{drop_snapshot_files, is_snapshot, PendingSnapshot};
use crate::operation::snapshot::SnapKey;
use crate::operation::split_check::SplitCheckState;
use crate::raft::storage::PeerStorage;

/// One region's replica on this store.
pub(crate) struct Peer {
    pub(crate) region_id: u64,
    pub(crate) peer_id: u64,
    pub(crate) store_id: u64,
    pub(crate) raw: RawNode<PeerStorage>,
    /// Writes proposed and waiting for apply, in index order.
    pub(crate) proposals: VecDeque<Proposal>,
    /// Writes of this round not proposed yet (`operation::propose`, merged writes).
    /// (Boxed: a dormant peer keeps only the pointer.)
    pub(crate) pending_writes: Option<Box<PendingWrites>>,
    /// Writes (callers) waiting in `proposals`: what `max_pending_proposals` bounds
    /// (changed through [`Peer::set_waiting_writes`], which keeps the store's gauge).
    pub(crate) waiting_writes: usize,
    /// The store's `shoal_pending_writes` gauge.
    waiting_gauge: prometheus::IntGauge,
    /// Reads received this round, not yet given a read index.
    pub(crate) new_reads: Vec<ReadRequest>,
    /// Reads waiting for their index to be confirmed, then applied.
    pub(crate) read_batches: VecDeque<ReadBatch>,
    pub(crate) next_read_ctx: u64,
    pub(crate) applied_index: u64,
    /// The last committed entry handed to apply (its result may not be back).
    pub(crate) scheduled_index: u64,
    pub(crate) leader_id: u64,
    pub(crate) is_leader: bool,
    /// The newest ready handed to the log writer and not yet reported persisted.
    pub(crate) unpersisted_ready: Option<u64>,
    pub(crate) split_check: SplitCheckState,
    /// Set while this region is a frozen merge source.
    pub(crate) merging: Option<Box<MergeState>>,
    /// Raft ticks seen (paces re-driving a merge, times out read indexes).
    pub(crate) ticks: u64,
    /// The region merged away: the peer only waits to be dropped.
    pub(crate) destroyed: bool,
    /// Told it was removed from the region: the apply worker is tombstoning it;
    /// it takes part in nothing meanwhile (`operation/conf_change/removed.rs`).
    pub(crate) removing: bool,
    /// Peers membership changes removed, with how many more election timeouts
    /// they are told so (counted on every replica, told by a leader:
    /// `operation/conf_change/removed.rs`).
    pub(crate) removed_peers: Vec<(PeerMeta, u32)>,
    /// A snapshot taken from a ready and not yet durable everywhere.
    pub(crate) applying_snapshot: Option<Box<PendingSnapshot>>,
    /// The snapshot raft-rs took when stepped, and the transfer holding its files.
    pub(crate) stepped_snapshot: Option<(SnapKey, u64)>,
    /// Peers of the region that sent this peer messages: where answers go while
    /// the region lists no peer yet (an uninitialized peer, before its snapshot).
    pub(crate) senders: std::collections::HashMap<u64, PeerMeta>,
    /// Whether the region is dormant, and the leader's way there
    /// (`operation/dormancy.rs`).
    pub(crate) dormancy: Dormancy,
    /// Ticks without a leader, and whether to ask if this peer still belongs
    /// (`operation/conf_change/stale.rs`).
    pub(crate) stale: StaleCheck,
}

impl Peer {
    /// Wraps a `RawNode` built over `storage`.
    pub(crate) fn new(
        store_id: u64,
        peer_id: u64,
        raw: RawNode<PeerStorage>,
        applied_index: u64,
        merging: Option<MergeState>,
        waiting_gauge: prometheus::IntGauge,
    ) -> Self {
        Peer {
            region_id: raw.store().region().id,
            peer_id,
            store_id,
            raw,
            proposals: VecDeque::new(),
            pending_writes: None,
            waiting_writes: 0,
            waiting_gauge,
            new_reads: Vec::new(),
            read_batches: VecDeque::new(),
            next_read_ctx: 1,
            applied_index,
            scheduled_index: applied_index,
            leader_id: 0,
            is_leader: false,
            unpersisted_ready: None,
            split_check: SplitCheckState::default(),
            merging: merging.map(Box::new),
            ticks: 0,
            destroyed: false,
            removing: false,
            removed_peers: Vec::new(),
            applying_snapshot: None,
            stepped_snapshot: None,
            senders: std::collections::HashMap::new(),
            dormancy: Dormancy::default(),
            stale: StaleCheck::default(),
        }
    }

    /// The region this peer replicates.
    pub(crate) fn region(&self) -> &Region {
        self.raw.store().region()
    }

    /// The region's leader, when known.
    pub(crate) fn leader_meta(&self) -> Option<PeerMeta> {
        let leader = self.leader_id;
        self.region().peers.iter().find(|p| p.id == leader).cloned()
    }

    /// Handles one message of the round.
    pub(crate) fn on_msg(&mut self, msg: PeerMsg, ctx: &mut PollCtx) {
        if self.destroyed {
            return self.refuse(msg, ctx);
        }
        if self.removing {
            // Only the apply worker's answer (`Removed`) matters now.
            return match msg {
                PeerMsg::ApplyRes(res) => self.on_apply_res(res, ctx),
                other => self.refuse(other, ctx),
            };
        }
        if self.dormancy.asleep && matches!(msg, PeerMsg::Tick(_)) {
            return; // in flight when the ticks were cancelled
        }
        self.before_msg(&msg, ctx);
        // The round's pending writes are proposed before anything that could change
        // what they are checked against (leadership, the region) or be ordered
        // after them in the log. Not before a read (its read index is taken at the
        // round's end, after them) or a persisted notice (it changes neither).
        let keeps_pending = match &msg {
            PeerMsg::Command(c) => c.request.admin.is_none(),
            PeerMsg::Read(_) | PeerMsg::Persisted { .. } => true,
            _ => false,
        };
        if !keeps_pending {
            self.propose_pending(&ctx.store);
        }
        match msg {
            PeerMsg::Raft(m) => self.step(*m, ctx),
            PeerMsg::Command(cmd) => self.on_command(cmd, &ctx.store),
            PeerMsg::Read(r) => self.accept_read(r),
            PeerMsg::Tick(PeerTick::Raft) => self.on_raft_tick(ctx),
            PeerMsg::Tick(PeerTick::SplitCheck) => self.on_split_check_tick(ctx),
            PeerMsg::Tick(PeerTick::LogGc) => self.on_log_gc_tick(ctx),
            PeerMsg::Tick(PeerTick::Liveness) => {} // the store's, never a peer's
            PeerMsg::SplitCheckResult(r) => self.on_split_check_result(r, ctx),
            PeerMsg::Persisted { number } => self.on_persisted(number, ctx),
            PeerMsg::ApplyRes(res) => self.on_apply_res(res, ctx),
            PeerMsg::Info(reply) => {
                let _ = reply.send(self.info());
            }
            PeerMsg::StoreUnreachable(store_id) => self.on_store_unreachable(store_id),
            PeerMsg::Wake(..) => {} // woken above (or stale)
            PeerMsg::Campaign => {
                if let Err(e) = self.raw.campaign() {
                    tracing::warn!(region = self.region_id, "campaign failed: {e}");
                }
            }
            PeerMsg::ProposeCommitMerge {
                request,
                source_id,
                commit,
            } => self.on_propose_commit_merge(request, source_id, commit, ctx),
            PeerMsg::RollbackMerge { commit } => self.propose_rollback(commit, ctx),
            PeerMsg::Checksum(reply) => self.checksum(reply, ctx),
            PeerMsg::SnapshotGenerated(res) => {
                // A peer that lost its leadership meanwhile lets the files go.
                let res = match self.is_leader {
                    true => *res,
                    false => Err("no longer leader".into()),
                };
                self.raw.store().snap.on_generated(res);
            }
            PeerMsg::SnapshotStatus { to, ok } => self.on_snapshot_status(to, ok),
            PeerMsg::TransferLeader { to_store, reply } => self.transfer_leader(to_store, reply),
        }
    }

    /// A destroyed peer only answers requests (`RegionNotFound`: the client
    /// re-routes to the region that took the range).
    fn refuse(&self, msg: PeerMsg, ctx: &PollCtx) {
        match msg {
            PeerMsg::Raft(m) => drop_snapshot_files(&m, ctx),
            PeerMsg::Command(c) => {
                let _ = c.reply.send(Err(region_not_found(self.region_id)));
            }
            PeerMsg::Read(r) => {
                let _ = r.reply.send(Err(region_not_found(self.region_id)));
            }
            PeerMsg::TransferLeader { reply, .. } => {
                let _ = reply.send(Err(region_not_found(self.region_id)));
            }
            _ => {}
        }
    }

    fn on_raft_tick(&mut self, ctx: &mut PollCtx) {
        self.raw.tick();
        self.ticks += 1;
        self.expire_read_indexes(ctx);
        if self.merging.is_some() && self.ticks.is_multiple_of(DRIVE_EVERY_TICKS) {
            self.drive_merge(ctx);
        }
        self.maybe_leave_joint(ctx);
        if self
            .ticks
            .is_multiple_of(ctx.store.cfg.raft_election_ticks as u64)
        {
            self.tell_removed_peers(ctx);
        }
        self.on_stale_check_tick(ctx);
        self.on_dormancy_tick(ctx);
    }

    /// raft-rs stops pipelining appends to this region's peers on `store_id` until
    /// they answer again.
    fn on_store_unreachable(&mut self, store_id: u64) {
        let ids: Vec<u64> = self
            .region()
            .peers
            .iter()
            .filter(|p| p.store_id == store_id)
            .map(|p| p.id)
            .collect();
        for id in ids {
            self.raw.report_unreachable(id);
        }
    }

    /// The region, its leader and the last split check's figures. RocksDB's size
    /// estimate is added by the caller, off the poller.
    fn info(&self) -> RegionInfo {
        let (size, keys) = self
            .split_check
            .last
            .as_ref()
            .map_or((0, 0), |r| (r.size, r.keys));
        RegionInfo {
            leader: self.leader_meta(),
            region: Some(self.region().clone()),
            approximate_size: size,
            approximate_keys: keys,
            first_log_index: self.raw.store().truncated_index() + 1,
            last_log_index: self.raw.raft.raft_log.last_index(),
            applied_index: self.applied_index,
            dormant: self.dormancy.asleep,
        }
    }

    /// Steps a message from another store into raft-rs, after checking that it is
    /// addressed to this peer and comes from a peer of the region as this store knows
    /// it (ids and stores agreeing in the envelope and in the raft message). What
    /// fails the check is dropped and counted: raft-rs trusts its input, and some
    /// inconsistent messages reach its fatal paths. A snapshot is checked further
    /// (`operation/snapshot/apply.rs`).
    fn step(&mut self, msg: RaftMessage, ctx: &mut PollCtx) {
        if msg.is_tombstone {
            return self.on_tombstone_message(&msg, ctx);
        }
        if is_stale_check(&msg) {
            // Another peer asks whether it still belongs: told so if it does not.
            return self.send_tombstone(&msg, ctx);
        }
        if is_dormancy_message(&msg) {
            let to = msg.to_peer.unwrap_or_default();
            let from = msg.from_peer.unwrap_or_default();
            let known = self
                .region()
                .peers
                .iter()
                .any(|p| p.id == from.id && p.store_id == from.store_id);
            if to.id == self.peer_id && to.store_id == self.store_id && known {
                self.on_dormancy_message(&msg, ctx);
            } else {
                StoreMetrics::add(&ctx.store.metrics.raft_messages_refused, 1);
            }
            return;
        }
        let m = match self.check_raft_message(&msg) {
            Ok(m) => m,
            Err(why) => {
                match why {
                    RefusedMessage::UnknownSender(..) => self.send_tombstone(&msg, ctx),
                    RefusedMessage::NotForMe { .. } => self.on_message_for_successor(&msg, ctx),
                    _ => {}
                }
                let metrics = &ctx.store.metrics;
                crate::warn_limited!(region = self.region_id, "dropping a raft message: {why}");
                StoreMetrics::add(&metrics.raft_messages_refused, 1);
                drop_snapshot_files(&msg, ctx);
                return;
            }
        };
        // Answers to a peer the region does not list (this peer is uninitialized,
        // or behind a membership change) go to where it wrote from.
        if let Some(from) = msg.from_peer {
            if !self.region().peers.iter().any(|p| p.id == from.id) {
                self.senders.insert(from.id, from);
            }
        }
        // Uninitialized, the newest membership known to list this peer is its
        // senders' (a peer writes only to the members it knows).
        if self.region().peers.is_empty() {
            let conf_ver = msg.region_epoch.unwrap_or_default().conf_ver;
            self.stale.listed_at = self.stale.listed_at.max(conf_ver);
        }
        let snapshot = is_snapshot(&m).then(|| SnapKey::of(self.region_id, m.get_snapshot()));
        let transfer = msg.snapshot_transfer;
        if let Some(key) = snapshot {
            if let Err(why) = self.check_snapshot(&msg, ctx) {
                tracing::info!(
                    region = self.region_id,
                    index = key.index,
                    "dropping a raft snapshot: {why}"
                );
                StoreMetrics::add(&ctx.store.metrics.raft_messages_refused, 1);
                self.after_snapshot_step(key, transfer, ctx);
                return;
            }
        }
        ctx.store
            .metrics
            .raft_messages_received
            .inc(m.get_msg_type());
        let leaders = matches!(
            m.get_msg_type(),
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
        );
        let sender = m.from;
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(region = self.region_id, "step: {e}");
        }
        if leaders && self.raw.raft.leader_id == sender {
            self.heard_from_leader();
        }
        if let Some(key) = snapshot {
            self.after_snapshot_step(key, transfer, ctx);
        }
    }

    fn check_raft_message(&self, msg: &RaftMessage) -> Result<RaftPbMessage, RefusedMessage> {
        let to = msg.to_peer.unwrap_or_default();
        if to.id != self.peer_id || to.store_id != self.store_id {
            return Err(RefusedMessage::NotForMe {
                to: (to.id, to.store_id),
                me: (self.peer_id, self.store_id),
            });
        }
        let from = msg.from_peer.unwrap_or_default();
        // An uninitialized peer (made for a snapshot) knows no member yet; a peer
        // behind a membership change does not know the new members yet, whose
        // votes and appends it must take (raft does not need a sender in its
        // configuration), so a sender at a newer `conf_ver` is heard too.
        let peers = &self.region().peers;
        let newer = msg.region_epoch.unwrap_or_default().conf_ver
            > self.region().region_epoch.unwrap_or_default().conf_ver;
        let known = peers.is_empty()
            || newer
            || peers
                .iter()
                .any(|p| p.id == from.id && p.store_id == from.store_id);
        if !known || from.id == self.peer_id {
            return Err(RefusedMessage::UnknownSender(from.id, from.store_id));
        }
        let m = RaftPbMessage::parse_from_bytes(&msg.message)
            .map_err(|e| RefusedMessage::Undecodable(e.to_string()))?;
        // An uninitialized peer votes for no one: nothing of it is loaded after a
        // restart until its snapshot applies, so a vote could be forgotten and given
        // twice in one term.
        if peers.is_empty()
            && matches!(
                m.get_msg_type(),
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
            )
        {
            return Err(RefusedMessage::Uninitialized);
        }
        if m.from != from.id || m.to != to.id {
            return Err(RefusedMessage::EnvelopeMismatch {
                inner: (m.from, m.to),
                envelope: (from.id, to.id),
            });
        }
        Ok(m)
    }
}

/// Why a Raft message from another store was dropped before raft-rs.
#[derive(Debug, thiserror::Error)]
enum RefusedMessage {
    #[error("addressed to peer {} on store {}, this is peer {} on store {}", .to.0, .to.1, .me.0, .me.1)]
    NotForMe { to: (u64, u64), me: (u64, u64) },
    #[error("from peer {0} on store {1}, not a peer of the region")]
    UnknownSender(u64, u64),
    #[error("undecodable: {0}")]
    Undecodable(String),
    #[error("a vote request to a peer still waiting for its first snapshot")]
    Uninitialized,
    #[error("raft message from {} to {} in an envelope from {} to {}", .inner.0, .inner.1, .envelope.0, .envelope.1)]
    EnvelopeMismatch {
        inner: (u64, u64),
        envelope: (u64, u64),
    },
}

impl Peer {
    /// Sets how many writes wait in `proposals`, keeping the store's gauge.
    pub(crate) fn set_waiting_writes(&mut self, n: usize) {
        self.waiting_gauge
            .add(n as i64 - self.waiting_writes as i64);
        self.waiting_writes = n;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.set_waiting_writes(0);
    }
}
