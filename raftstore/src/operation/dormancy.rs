//! Dormant regions: an idle region stops ticking and heartbeating, on every
//! replica, until something happens to it.
//!
//! - **Going dormant.** A leader counts the raft ticks in a row on which it had
//!   nothing to do ([`Peer::is_quiet`]: no proposal, read, merge, membership
//!   change, transfer, snapshot or unpersisted ready; everything committed,
//!   applied and held by every replica) and on which no request came. After an
//!   election timeout of them it asks each other peer (`DORMANT_REQUEST`, with its
//!   term and last index), and again every election timeout while it stays quiet.
//!   A follower holding exactly that log, committed, under that leader and term,
//!   answers `DORMANT_ACK` and goes dormant; once every peer has answered, so does
//!   the leader. A region with no other peer goes dormant at once.
//! - **Dormant** means: its ticks are cancelled (the ticker holds nothing for it),
//!   so the poller never sees it; its entry cache is emptied. A dormant follower
//!   is watched under its leader's store by store liveness (`store/liveness.rs`).
//! - **Waking.** Any raft message but a dormancy request, any write, read, admin
//!   command, membership change, leader transfer or campaign wakes the peer: its
//!   ticks are registered again. A leader that wakes broadcasts a heartbeat (its
//!   followers wake on it) and restarts its quorum check from nothing: every
//!   follower must answer afresh within an election timeout, as after an
//!   election. A follower woken because its leader's store is down, or by a vote
//!   request from its own leader (which is then no longer leading), lets its
//!   election timer run out, so it grants votes and campaigns at once.
//!
//! Safety does not rest on any of this: reads are confirmed by ReadIndex (a quorum
//! of heartbeat answers in the leader's term), never by a lease, so a dormant
//! leader that lost its leadership while asleep can serve nothing stale; it learns
//! the new term from the first answer to whatever woke it.

use raft::eraftpb::MessageType;
use raft::{ProgressState, StateRole};
use shoal_proto::metapb::PeerRole;
use shoal_proto::raft_serverpb::{ExtraMessage, ExtraMessageType, RaftMessage};
use shoal_proto::RegionExt;

use crate::fsm::PollCtx;
use crate::msg::{PeerMsg, PeerTick};
use crate::raft::peer::Peer;
use crate::store::context::StoreContext;
use crate::store::liveness::WakeReason;

/// A peer's dormancy state.
#[derive(Default)]
pub(crate) struct Dormancy {
    /// Dormant now: no ticks registered.
    pub(crate) asleep: bool,
    /// Raft ticks in a row on which the leader was quiet and got no request.
    quiet_ticks: u32,
    /// The leader's request in flight: its term and last index, and the peers
    /// that acknowledged it.
    request: Option<(u64, u64, Vec<u64>)>,
    /// The store a dormant follower is watched under, and that store's
    /// incarnation when it was.
    watched: Option<(u64, u64)>,
    /// Loaded dormant at the store's start and not woken since (its queued
    /// start-up wake still applies).
    loaded: bool,
}

impl Peer {
    /// Whether `msg` wakes this dormant peer. Ticks left in flight and the store's
    /// own bookkeeping (apply results, persisted notices, info and checksum
    /// requests, unreachable reports, snapshot outcomes) do not: they need no
    /// timer. Nor do the raft messages a quiet group still exchanges, which are
    /// stepped asleep: dormancy requests and acknowledgements, a heartbeat from the
    /// leader it sleeps under (a read index confirmed, say), and, at a leader,
    /// answers to its heartbeats and appends that refuse nothing. A request to a
    /// follower that knows its leader does not either: it is refused (not the
    /// leader) asleep. A queued wake that no longer applies (the peer woke and
    /// slept again meanwhile) does not.
    fn wakes(&self, msg: &PeerMsg, store: &StoreContext) -> bool {
        match msg {
            PeerMsg::Raft(m) => !self.stepped_asleep(m),
            PeerMsg::Command(_) | PeerMsg::Read(_) => self.is_leader || self.leader_id == 0,
            PeerMsg::Wake(w) => match w.reason {
                WakeReason::Start => self.dormancy.loaded,
                WakeReason::LeaderStoreDown => {
                    self.watches(w) && (w.restarted || store.liveness.is_down(w.store))
                }
                WakeReason::Activity => true,
            },
            PeerMsg::Campaign
            | PeerMsg::ProposeCommitMerge { .. }
            | PeerMsg::RollbackMerge { .. }
            | PeerMsg::TransferLeader { .. } => true,
            PeerMsg::Tick(_)
            | PeerMsg::Persisted { .. }
            | PeerMsg::ApplyRes(_)
            | PeerMsg::Info(_)
            | PeerMsg::StoreUnreachable(_)
            | PeerMsg::SplitCheckResult(_)
            | PeerMsg::Checksum(_)
            | PeerMsg::SnapshotGenerated(_)
            | PeerMsg::SnapshotStatus { .. } => false,
        }
    }

    /// Whether a dormant peer steps `m` without waking (see [`Peer::wakes`]).
    fn stepped_asleep(&self, m: &RaftMessage) -> bool {
        // A stale-peer check is answered asleep (`operation/conf_change/stale.rs`).
        if is_dormancy_message(m) || crate::operation::conf_change::is_stale_check(m) {
            return true;
        }
        if m.extra.is_some() || m.is_tombstone {
            return false;
        }
        use protobuf::Message as _;
        let Ok(r) = raft::eraftpb::Message::parse_from_bytes(&m.message) else {
            return false;
        };
        let raft = &self.raw.raft;
        if r.term != raft.term {
            return false;
        }
        match r.get_msg_type() {
            MessageType::MsgHeartbeat => !self.is_leader && r.from == self.leader_id,
            MessageType::MsgHeartbeatResponse => self.is_leader,
            MessageType::MsgAppendResponse => self.is_leader && !r.reject,
            _ => false,
        }
    }

    /// Called before each message is handled: a request resets the quiet count; a
    /// waking message wakes a dormant peer.
    pub(crate) fn before_msg(&mut self, msg: &PeerMsg, ctx: &PollCtx) {
        if matches!(
            msg,
            PeerMsg::Command(_) | PeerMsg::Read(_) | PeerMsg::TransferLeader { .. }
        ) {
            self.dormancy.quiet_ticks = 0;
            self.dormancy.request = None;
        }
        if !self.dormancy.asleep {
            return;
        }
        if !self.wakes(msg, &ctx.store) {
            // A failover wake that came after the leader's store was heard again
            // (the store took back the wakes still queued and watches their
            // followers again; this one was on its way): watched again here.
            if let PeerMsg::Wake(w) = msg {
                if w.reason == WakeReason::LeaderStoreDown && self.watches(w) {
                    let store = &ctx.store;
                    store
                        .liveness
                        .watch(w.store, self.region_id, w.incarnation, w.successor);
                }
            }
            return;
        }
        let reason = match msg {
            PeerMsg::Wake(w) => w.reason,
            // A vote request from the leader it sleeps under: that leader stepped
            // down (it restarted, say); its lease means nothing any more.
            PeerMsg::Raft(m) if self.is_vote_from_leader(m) => WakeReason::LeaderStoreDown,
            _ => WakeReason::Activity,
        };
        self.wake(reason, &ctx.store);
    }

    /// Whether this dormant peer is watched under the store and incarnation a
    /// failover wake is for (else the wake is stale: it woke and slept again
    /// under another leader meanwhile).
    fn watches(&self, w: &crate::store::liveness::Wake) -> bool {
        self.dormancy.watched == Some((w.store, w.incarnation))
    }

    fn is_vote_from_leader(&self, m: &RaftMessage) -> bool {
        let from = m.from_peer.as_ref().map_or(0, |p| p.id);
        if from == 0 || from != self.leader_id || self.is_leader {
            return false;
        }
        use protobuf::Message as _;
        raft::eraftpb::Message::parse_from_bytes(&m.message).is_ok_and(|r| {
            matches!(
                r.get_msg_type(),
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
            )
        })
    }

    /// Whether this peer has nothing going on: every peer holds its whole log,
    /// committed and applied, and nothing waits (see the module docs).
    pub(crate) fn is_quiet(&self) -> bool {
        self.busy_with().is_none()
    }

    /// What keeps this peer from being quiet, if anything (logged at debug when
    /// a leader stays awake).
    pub(crate) fn busy_with(&self) -> Option<&'static str> {
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        let checks: [(bool, &'static str); 20] = [
            (self.proposals.is_empty(), "proposals"),
            (self.pending_writes.is_none(), "pending writes"),
            (self.new_reads.is_empty(), "new reads"),
            (self.read_batches.is_empty(), "reads"),
            (self.unpersisted_ready.is_none(), "an unpersisted ready"),
            (self.merging.is_none(), "a merge"),
            (self.removed_peers.is_empty(), "removed peers to tell"),
            (self.applying_snapshot.is_none(), "a snapshot"),
            (!self.split_check.pending, "a split check"),
            (!self.destroyed && !self.removing, "going away"),
            (raft.lead_transferee.is_none(), "a leader transfer"),
            (!raft.has_pending_conf(), "a membership change"),
            (!self.region().is_joint(), "a joint configuration"),
            (raft.raft_log.committed == last, "uncommitted entries"),
            (self.applied_index == last, "unapplied entries"),
            (self.scheduled_index == last, "entries not sent to apply"),
            (raft.read_only.pending_read_count() == 0, "read indexes"),
            (
                raft.raft_log.unstable.entries.is_empty(),
                "unstable entries",
            ),
            (
                raft.raft_log.unstable.snapshot.is_none(),
                "an unstable snapshot",
            ),
            // A leader also needs every peer to hold its whole log.
            (
                !self.is_leader
                    || raft
                        .prs()
                        .iter()
                        .all(|(_, p)| p.matched == last && p.state == ProgressState::Replicate),
                "a peer behind",
            ),
        ];
        checks.iter().find(|(ok, _)| !ok).map(|(_, why)| *why)
    }

    /// On each raft tick of an awake peer: a quiet leader counts, then asks its
    /// peers to go dormant (again every election timeout).
    pub(crate) fn on_dormancy_tick(&mut self, ctx: &mut PollCtx) {
        let cfg = &ctx.store.cfg;
        if !cfg.dormant_regions || !self.is_leader || self.dormancy.asleep {
            return;
        }
        if let Some(why) = self.busy_with() {
            if self.dormancy.quiet_ticks > 0 || self.dormancy.request.is_some() {
                tracing::debug!(region = self.region_id, "not dormant: {why}");
            }
            self.dormancy.quiet_ticks = 0;
            self.dormancy.request = None;
            return;
        }
        if self.region().peers.is_empty() {
            return;
        }
        self.dormancy.quiet_ticks += 1;
        let every = cfg.raft_election_ticks.max(1) as u32;
        if self.dormancy.quiet_ticks < every || !self.dormancy.quiet_ticks.is_multiple_of(every) {
            return;
        }
        // A dormant region runs no split check nor log GC: both run now, and the
        // region sleeps once they found nothing to do (a split proposed, a
        // CompactLog proposed or a scan pending: not quiet).
        self.on_split_check_tick(ctx);
        self.on_log_gc_tick(ctx);
        if let Some(why) = self.busy_with() {
            tracing::debug!(region = self.region_id, "not dormant yet: {why}");
            self.dormancy.quiet_ticks = 0;
            return;
        }
        let term = self.raw.raft.term;
        let index = self.raw.raft.raft_log.last_index();
        self.dormancy.request = Some((term, index, Vec::new()));
        let others: Vec<_> = self
            .region()
            .peers
            .iter()
            .filter(|p| p.id != self.peer_id)
            .cloned()
            .collect();
        if others.is_empty() {
            return self.sleep(&ctx.store, 0);
        }
        let stores: Vec<u64> = others.iter().map(|p| p.store_id).collect();
        ctx.store.liveness.set_targets(self.region_id, &stores);
        for to in others {
            let incarnation = ctx.store.liveness.incarnation();
            let kind = ExtraMessageType::DormantRequest;
            let msg = self.extra_message(to, kind, (term, index), incarnation);
            ctx.outgoing.push(msg);
        }
    }

    /// A dormancy request or acknowledgement from another peer of the region.
    pub(crate) fn on_dormancy_message(&mut self, msg: &RaftMessage, ctx: &mut PollCtx) {
        let Some(extra) = msg.extra.as_ref() else {
            return;
        };
        let Some(from) = msg.from_peer else { return };
        let (term, index) = (extra.term, extra.index);
        match ExtraMessageType::try_from(extra.r#type) {
            Ok(ExtraMessageType::DormantRequest) => {
                let raft = &self.raw.raft;
                let agrees = ctx.store.cfg.dormant_regions
                    && raft.state == StateRole::Follower
                    && self.leader_id == from.id
                    && raft.term == term
                    && raft.raft_log.last_index() == index
                    && raft.raft_log.committed == index
                    && self.applying_snapshot.is_none()
                    && self.unpersisted_ready.is_none()
                    && self.merging.is_none()
                    && self.read_batches.is_empty()
                    && !self.removing;
                if !agrees {
                    tracing::debug!(
                        region = self.region_id,
                        term,
                        index,
                        my_term = raft.term,
                        last = raft.raft_log.last_index(),
                        committed = raft.raft_log.committed,
                        leader = self.leader_id,
                        "not going dormant: out of step with the leader's request"
                    );
                    // Asleep and out of step: it must take part again.
                    if self.dormancy.asleep {
                        self.wake(WakeReason::Activity, &ctx.store);
                    }
                    return;
                }
                let ack = self.extra_message(from, ExtraMessageType::DormantAck, (term, index), 0);
                ctx.outgoing.push(ack);
                // Watched under the leader's store as it runs now (a restart of it
                // later is told apart by its heartbeats' incarnation).
                match self.dormancy.asleep {
                    false => self.sleep(&ctx.store, extra.incarnation),
                    true => self.watch_leader_store(&ctx.store, extra.incarnation),
                }
            }
            Ok(ExtraMessageType::DormantAck) => {
                let Some((t, i, acked)) = self.dormancy.request.as_mut() else {
                    return;
                };
                if (*t, *i) != (term, index) || self.dormancy.asleep {
                    return;
                }
                if !acked.contains(&from.id) {
                    acked.push(from.id);
                }
                let acked = acked.clone();
                let me = self.peer_id;
                let all = self
                    .region()
                    .peers
                    .iter()
                    .all(|p| p.id == me || acked.contains(&p.id));
                let still_quiet = self.is_leader
                    && self.raw.raft.term == term
                    && self.raw.raft.raft_log.last_index() == index
                    && self.is_quiet();
                if all && still_quiet {
                    self.sleep(&ctx.store, 0);
                }
            }
            _ => {}
        }
    }

    /// A peer loaded at the store's start begins dormant (no ticks, no leader
    /// known) and is queued to wake.
    pub(crate) fn start_dormant(&mut self, store: &StoreContext) {
        self.dormancy.asleep = true;
        self.dormancy.loaded = true;
        store.metrics.dormant_regions.inc();
    }

    /// Goes dormant: no more ticks; the entry cache is let go; a follower is
    /// watched under its leader's store.
    /// `incarnation`: the leader's store's, from its request (a follower's).
    fn sleep(&mut self, store: &StoreContext, incarnation: u64) {
        for tick in [PeerTick::Raft, PeerTick::SplitCheck, PeerTick::LogGc] {
            store.ticker.cancel(self.region_id, tick);
        }
        self.dormancy.asleep = true;
        self.dormancy.quiet_ticks = 0;
        self.dormancy.request = None;
        if !self.is_leader {
            self.watch_leader_store(store, incarnation);
            // Asked by a leader with no removed peer left to tell: the group is
            // done telling them (`operation/conf_change/removed.rs`).
            self.removed_peers.clear();
        }
        self.raw.mut_store().release_cache();
        self.release_buffers();
        store.metrics.dormant_regions.inc();
        store.awake_leader(self.region_id, false);
    }

    /// A dormant follower is watched under its leader's store (running as
    /// `incarnation`), noting whether it would campaign first should it die.
    fn watch_leader_store(&mut self, store: &StoreContext, incarnation: u64) {
        let Some(leader) = self.leader_meta() else {
            return;
        };
        let watched = (leader.store_id, incarnation);
        if let Some((old, _)) = self.dormancy.watched.replace(watched) {
            if old != leader.store_id {
                store.liveness.unwatch(old, self.region_id);
            }
        }
        let successor = self.successor(Some(leader.store_id)) == Some(self.peer_id);
        store
            .liveness
            .watch(leader.store_id, self.region_id, incarnation, successor);
    }

    /// Wakes: ticks registered again; a leader heartbeats and checks its quorum
    /// afresh; a follower whose leader is gone lets its election timer run out.
    pub(crate) fn wake(&mut self, reason: WakeReason, store: &StoreContext) {
        if !self.dormancy.asleep {
            return;
        }
        self.dormancy.asleep = false;
        self.dormancy.loaded = false;
        self.dormancy.quiet_ticks = 0;
        self.dormancy.request = None;
        let leader_store = self.dormancy.watched.take().map(|(s, _)| s);
        if let Some(s) = leader_store {
            store.liveness.unwatch(s, self.region_id);
        }
        // Woken by a message (a successor's vote request, say) before its turn in
        // the wake queue: its leader's store is down all the same.
        let reason = match leader_store {
            Some(s) if reason == WakeReason::Activity && store.liveness.is_down(s) => {
                WakeReason::LeaderStoreDown
            }
            _ => reason,
        };
        store.metrics.dormant_regions.dec();
        crate::operation::life::schedule_ticks(store, self.region_id);
        let chosen = (reason == WakeReason::LeaderStoreDown)
            .then(|| self.successor(leader_store))
            .flatten();
        let chosen_start = (reason == WakeReason::Start)
            .then(|| self.successor(None))
            .flatten();
        let hb = store.cfg.raft_heartbeat_ticks;
        let raft = &mut self.raw.raft;
        if raft.state == StateRole::Leader {
            store.awake_leader(self.region_id, true);
            raft.election_elapsed = 0;
            let me = raft.id;
            for (id, p) in raft.mut_prs().iter_mut() {
                if *id != me {
                    p.recent_active = false;
                }
            }
            raft.ping();
        } else if reason == WakeReason::Start {
            // Woken at the store's start, knowing no leader: the region's starter
            // (the same voter on every store's reckoning) campaigns on its next
            // tick; the others wait out an ordinary election timeout, granting
            // votes meanwhile (they know no leader, so no lease holds them).
            if raft.leader_id == 0 && chosen_start == Some(raft.id) {
                let et = raft.election_timeout();
                raft.set_randomized_election_timeout(et);
                raft.election_elapsed = et - 1;
            }
        } else if reason == WakeReason::LeaderStoreDown {
            // Every replica woken this way grants votes at once (no lease). One of
            // them, the same one on every replica's reckoning, campaigns after a
            // liveness round (the others have heard the news by then); the rest
            // only after most of an election timeout, should it fail.
            let et = raft.election_timeout();
            if chosen == Some(raft.id) {
                raft.set_randomized_election_timeout(et);
                raft.election_elapsed = et.saturating_sub(hb.max(1));
            } else {
                raft.set_randomized_election_timeout(2 * et - 1);
                raft.election_elapsed = et;
            }
        }
    }

    /// The voter that campaigns first when the leader's store (`down`) is gone:
    /// of the voters elsewhere, by id, the one at `region_id` modulo their count
    /// (so the new leaders of a dead store's regions spread over the others).
    fn successor(&self, down: Option<u64>) -> Option<u64> {
        let mut voters: Vec<u64> = self
            .region()
            .peers
            .iter()
            .filter(|p| p.role == PeerRole::Voter as i32 && Some(p.store_id) != down)
            .map(|p| p.id)
            .collect();
        voters.sort_unstable();
        (!voters.is_empty()).then(|| voters[(self.region_id % voters.len() as u64) as usize])
    }

    /// A dormant peer keeps no spare capacity in its queues.
    fn release_buffers(&mut self) {
        self.proposals.shrink_to_fit();
        self.new_reads.shrink_to_fit();
        self.read_batches.shrink_to_fit();
        self.senders.shrink_to_fit();
        self.removed_peers.shrink_to_fit();
        let raft = &mut self.raw.raft;
        raft.msgs.shrink_to_fit();
        raft.maybe_free_inflight_buffers();
        raft.raft_log.unstable.entries.shrink_to_fit();
    }

    /// A peer going away: if dormant, it no longer counts nor waits on a store.
    pub(crate) fn forget_dormancy(&mut self, store: &StoreContext) {
        if std::mem::take(&mut self.dormancy.asleep) {
            store.metrics.dormant_regions.dec();
        }
        store.awake_leader(self.region_id, false);
        store.liveness.clear_targets(self.region_id);
        if let Some((s, _)) = self.dormancy.watched.take() {
            store.liveness.unwatch(s, self.region_id);
        }
    }

    /// A dormancy message from this peer to `to`.
    /// `incarnation`: this store's, in a request (0 in an acknowledgement).
    fn extra_message(
        &self,
        to: shoal_proto::metapb::Peer,
        kind: ExtraMessageType,
        (term, index): (u64, u64),
        incarnation: u64,
    ) -> RaftMessage {
        let region = self.region();
        RaftMessage {
            region_id: self.region_id,
            from_peer: region.peers.iter().find(|p| p.id == self.peer_id).cloned(),
            to_peer: Some(to),
            region_epoch: region.region_epoch,
            extra: Some(ExtraMessage {
                r#type: kind as i32,
                term,
                index,
                incarnation,
            }),
            ..Default::default()
        }
    }
}

/// Whether `msg` is one of dormancy's own messages (request or acknowledgement).
pub(crate) fn is_dormancy_message(msg: &RaftMessage) -> bool {
    msg.extra.as_ref().is_some_and(|e| {
        e.r#type == ExtraMessageType::DormantRequest as i32
            || e.r#type == ExtraMessageType::DormantAck as i32
    })
}
