//! [`Peer`]: one region's replica on this store, driving a raft-rs `RawNode`.
//!
//! The poller calls [`Peer::on_msg`] for each message of the round, then
//! [`Peer::on_round_end`], which issues a read index for the reads gathered and takes
//! the `Ready`. A ready's entries and hard state go into the round's shared write
//! task; its messages go out with the round (a leader's appends at once, the rest
//! after the write is durable, sent by the log writer); its committed entries go to
//! apply together with the answers owed to their proposers.
//!
//! Every client request is answered exactly once: applied, refused with a region
//! error, certainly dropped (`StaleCommand`) or of unknown outcome (`Undetermined`).
//!
//! Layout: this file holds the peer's state, message dispatch and the ready;
//! `propose.rs` the write path (checks, proposing, matching entries to proposals),
//! `read.rs` the ReadIndex read path, `merge.rs` the merge's peer side.

use std::collections::VecDeque;

use protobuf::Message as _;
use raft::eraftpb::Message as RaftPbMessage;
use raft::{RawNode, StateRole};
use shoal_engine::keys::{data_end_key, data_key};
use shoal_engine::{Cf, KvEngine};
use shoal_proto::adminpb::RegionInfo;
use shoal_proto::metapb::{Peer as PeerMeta, Region};
use shoal_proto::raft_cmdpb::admin_request;
use shoal_proto::raft_serverpb::{MergeState, RaftMessage};
use tokio::sync::oneshot;

use crate::cmd::{admin_cmd, encode_pb, not_leader, region_not_found};
use crate::metrics::StoreMetrics;
use crate::msg::{CmdError, Command, PeerMsg, PeerTick, ReadRequest};
use crate::poll::PollCtx;
use crate::split_check::{CheckResult, CheckTask};
use crate::storage::PeerStorage;

mod merge;
mod propose;
mod read;

use propose::Proposal;
use read::ReadBatch;

/// One region's replica on this store.
pub struct Peer {
    region_id: u64,
    peer_id: u64,
    store_id: u64,
    raw: RawNode<PeerStorage>,
    proposals: VecDeque<Proposal>,
    /// Reads received this round, not yet given a read index.
    new_reads: Vec<ReadRequest>,
    /// Reads waiting for their index to be confirmed, then applied.
    read_batches: VecDeque<ReadBatch>,
    next_read_ctx: u64,
    applied_index: u64,
    leader_id: u64,
    is_leader: bool,
    /// The newest ready handed to the log writer and not yet reported persisted.
    unpersisted_ready: Option<u64>,
    split_check: SplitCheckState,
    /// Set while this region is a frozen merge source.
    merging: Option<MergeState>,
    /// Raft ticks seen (paces re-driving a merge).
    ticks: u64,
    /// The region merged away: the peer only waits to be dropped.
    destroyed: bool,
}

/// Where this peer's automatic split checks stand.
#[derive(Default)]
struct SplitCheckState {
    /// A check is running.
    pending: bool,
    /// The last check's figures.
    last: Option<CheckResult>,
}

impl Peer {
    /// Wraps a `RawNode` built over `storage`.
    pub fn new(
        store_id: u64,
        peer_id: u64,
        raw: RawNode<PeerStorage>,
        applied_index: u64,
        merging: Option<MergeState>,
    ) -> Self {
        Peer {
            region_id: raw.store().region().id,
            peer_id,
            store_id,
            raw,
            proposals: VecDeque::new(),
            new_reads: Vec::new(),
            read_batches: VecDeque::new(),
            next_read_ctx: 1,
            applied_index,
            leader_id: 0,
            is_leader: false,
            unpersisted_ready: None,
            split_check: SplitCheckState::default(),
            merging,
            ticks: 0,
            destroyed: false,
        }
    }

    /// The region this peer replicates.
    pub fn region(&self) -> &Region {
        self.raw.store().region()
    }

    /// The region's id.
    pub fn region_id(&self) -> u64 {
        self.region_id
    }

    fn leader_meta(&self) -> Option<PeerMeta> {
        self.region()
            .peers
            .iter()
            .find(|p| p.id == self.leader_id)
            .cloned()
    }

    /// Handles one message of the round.
    pub fn on_msg(&mut self, msg: PeerMsg, ctx: &mut PollCtx) {
        if self.destroyed {
            match msg {
                PeerMsg::Command(c) => {
                    let _ = c.reply.send(Err(region_not_found(self.region_id)));
                }
                PeerMsg::Read(r) => {
                    let _ = r.reply.send(Err(region_not_found(self.region_id)));
                }
                _ => {}
            }
            return;
        }
        match msg {
            PeerMsg::Raft(m) => self.step(*m, &ctx.store.metrics),
            PeerMsg::Command(cmd) => self.propose(cmd, &ctx.store),
            PeerMsg::Read(r) => self.accept_read(r),
            PeerMsg::Tick(PeerTick::Raft) => {
                self.raw.tick();
                self.ticks += 1;
                self.expire_read_indexes(ctx);
                if self.merging.is_some() && self.ticks.is_multiple_of(merge::DRIVE_EVERY_TICKS) {
                    self.drive_merge(ctx);
                }
            }
            PeerMsg::MergeState { region, merging } => self.on_merge_state(region, merging, ctx),
            PeerMsg::Merged { region } => {
                tracing::info!(region = self.region_id, "merge applied: {region:?}");
                self.raw.mut_store().set_region(region);
                // The range grew: the next split check measures it afresh.
                self.split_check.last = None;
            }
            PeerMsg::Destroy { merged_into } => self.destroy(merged_into, ctx),
            PeerMsg::ProposeCommitMerge {
                request,
                source_id,
                commit,
            } => self.on_propose_commit_merge(request, source_id, commit, ctx),
            PeerMsg::RollbackMerge { commit } => self.propose_rollback(commit, ctx),
            PeerMsg::Tick(PeerTick::SplitCheck) => self.on_split_check_tick(ctx),
            PeerMsg::SplitCheckResult(r) => self.on_split_check_result(r, ctx),
            PeerMsg::Persisted { number } => {
                self.raw.on_persist_ready(number);
                self.raw.mut_store().on_persisted(number);
                if self.unpersisted_ready.is_some_and(|n| n <= number) {
                    self.unpersisted_ready = None;
                }
            }
            PeerMsg::Applied { applied_index } => {
                if applied_index > self.applied_index {
                    self.applied_index = applied_index;
                    self.raw.advance_apply_to(applied_index);
                }
                self.serve_applied_reads(ctx);
            }
            PeerMsg::Info(reply) => {
                let _ = reply.send(self.info(ctx));
            }
            PeerMsg::StoreUnreachable(store_id) => {
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
            PeerMsg::Campaign => {
                if let Err(e) = self.raw.campaign() {
                    tracing::warn!(region = self.region_id, "campaign failed: {e}");
                }
            }
            PeerMsg::Split {
                parent,
                new_regions,
            } => self.on_split_applied(parent, new_regions, ctx),
            PeerMsg::Checksum(reply) => {
                // Digesting a region reads all of it: on the read pool, never here.
                let kv = ctx.store.kv.clone();
                let region_id = self.region_id;
                ctx.store.read_pool.spawn(Box::new(move |run| {
                    let out = match run {
                        true => crate::checksum::region_checksum(&kv, region_id),
                        false => Err(crate::cmd::server_busy(region_id, "the read pool is full")),
                    };
                    let _ = reply.send(out);
                }));
            }
        }
    }

    /// Asks the split checker to measure the region, if this peer leads, no check is
    /// running and something was applied since the last one.
    fn on_split_check_tick(&mut self, ctx: &PollCtx) {
        if !self.is_leader || self.split_check.pending {
            return;
        }
        if self
            .split_check
            .last
            .as_ref()
            .is_some_and(|r| r.applied_index == self.applied_index)
        {
            return;
        }
        let task = CheckTask {
            region: self.region().clone(),
            applied_index: self.applied_index,
            previous: self.split_check.last.clone(),
        };
        self.split_check.pending = ctx.store.split_check.send(task).is_ok();
    }

    /// Proposes the split the checker asked for, if the region is unchanged and this
    /// peer still leads.
    fn on_split_check_result(&mut self, r: CheckResult, ctx: &PollCtx) {
        self.split_check.pending = false;
        self.split_check.last = Some(r.clone());
        let region = self.region().clone();
        let version = region.region_epoch.unwrap_or_default().version;
        let Some(key) = r.split_key else { return };
        if !self.is_leader || version != r.version {
            return;
        }
        let ids = match ctx.store.ids.alloc(1 + region.peers.len()) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(
                    region = self.region_id,
                    "no ids for an automatic split: {e}"
                );
                return;
            }
        };
        tracing::info!(
            region = self.region_id,
            size = r.size,
            keys = r.keys,
            "region over its size limit; splitting"
        );
        let split = crate::split::build_batch_split(&region, &[key], &ids);
        let request = admin_cmd(
            &region,
            self.store_id,
            region.region_epoch,
            admin_request::Cmd::Split(split),
        );
        // Nobody waits for the answer: the next check sees the outcome.
        let (reply, _) = oneshot::channel();
        self.propose(Command { request, reply }, &ctx.store);
        self.split_check.last = None;
    }

    /// Apply wrote a split: take the shrunk range, start the new regions' peers here
    /// (campaigning at once if this peer leads, so the new regions get leaders on
    /// the same store).
    fn on_split_applied(
        &mut self,
        parent: Region,
        new_regions: Vec<crate::split::NewPeer>,
        ctx: &PollCtx,
    ) {
        tracing::info!(
            region = self.region_id,
            new = ?new_regions.iter().map(|r| r.region.id).collect::<Vec<_>>(),
            "split applied"
        );
        self.raw.mut_store().set_region(parent);
        for crate::split::NewPeer { region, raft_state } in new_regions {
            if ctx.store.router.contains(region.id) {
                continue;
            }
            let id = region.id;
            // A raft state left in the log by an earlier life of this peer wins over
            // the initial one (see `split`'s module docs); the commit index is
            // persisted lazily, what was applied was committed.
            let raft_state = match raft_state {
                Some(mut s) => {
                    tracing::warn!(
                        region = id,
                        "split peer resumes from its raft state in the log: {s:?}"
                    );
                    let hs = s.hard_state.get_or_insert_with(Default::default);
                    hs.commit = hs.commit.max(crate::storage::INIT_INDEX);
                    s
                }
                None => crate::split::initial_raft_state(),
            };
            let started = crate::split::start_peer(
                &ctx.store,
                region,
                raft_state,
                crate::split::initial_apply_state(),
                None,
                self.is_leader,
            );
            if let Err(e) = started {
                tracing::error!(region = id, "cannot start the peer of a split region: {e}");
            }
        }
    }

    fn info(&self, ctx: &PollCtx) -> RegionInfo {
        let region = self.region().clone();
        let size = ctx
            .store
            .kv
            .approximate_size(
                Cf::Default,
                &data_key(&region.start_key),
                &data_end_key(&region.end_key),
            )
            .unwrap_or_default();
        // RocksDB's estimate covers SST files only; the last split check (leaders,
        // every split-check interval) counted memtables too, and the keys.
        let (scanned_size, scanned_keys) = self
            .split_check
            .last
            .as_ref()
            .map_or((0, 0), |r| (r.size, r.keys));
        RegionInfo {
            leader: self.leader_meta(),
            region: Some(region),
            approximate_size: size.max(scanned_size),
            approximate_keys: scanned_keys,
        }
    }

    /// Steps a message from another store into raft-rs, after checking that it is
    /// addressed to this peer and comes from a peer of the region as this store knows
    /// it (ids and stores agreeing in the envelope and in the raft message). What
    /// fails the check is dropped and counted: raft-rs trusts its input, and some
    /// inconsistent messages reach its fatal paths.
    fn step(&mut self, msg: RaftMessage, metrics: &StoreMetrics) {
        let m = match self.check_raft_message(&msg) {
            Ok(m) => m,
            Err(why) => {
                tracing::warn!(region = self.region_id, "dropping a raft message: {why}");
                StoreMetrics::add(&metrics.raft_messages_refused, 1);
                return;
            }
        };
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(region = self.region_id, "step: {e}");
        }
    }

    fn check_raft_message(&self, msg: &RaftMessage) -> Result<RaftPbMessage, String> {
        let to = msg.to_peer.unwrap_or_default();
        if to.id != self.peer_id || to.store_id != self.store_id {
            return Err(format!(
                "addressed to peer {} on store {}, this is peer {} on store {}",
                to.id, to.store_id, self.peer_id, self.store_id
            ));
        }
        let from = msg.from_peer.unwrap_or_default();
        let known = self
            .region()
            .peers
            .iter()
            .any(|p| p.id == from.id && p.store_id == from.store_id);
        if !known || from.id == self.peer_id {
            return Err(format!(
                "from peer {} on store {}, not a peer of the region",
                from.id, from.store_id
            ));
        }
        let m = RaftPbMessage::parse_from_bytes(&msg.message)
            .map_err(|e| format!("undecodable: {e}"))?;
        if m.from != from.id || m.to != to.id {
            return Err(format!(
                "raft message from {} to {} in an envelope from {} to {}",
                m.from, m.to, from.id, to.id
            ));
        }
        Ok(m)
    }

    /// After the round's messages: one read index for the reads gathered, then the ready.
    pub fn on_round_end(&mut self, ctx: &mut PollCtx) {
        if self.destroyed {
            return;
        }
        self.ask_read_index();
        self.handle_ready(ctx);
        // A read index may already be applied: serve without waiting for apply.
        self.serve_applied_reads(ctx);
    }

    fn handle_ready(&mut self, ctx: &mut PollCtx) {
        if !self.raw.has_ready() {
            return;
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state, &ctx.store.metrics);
        }
        if !rd.messages().is_empty() {
            let msgs = rd.take_messages();
            self.build_messages(msgs, &mut ctx.outgoing);
        }
        if !rd.snapshot().is_empty() {
            tracing::error!(
                region = self.region_id,
                "received a raft snapshot, which this version cannot apply"
            );
        }
        let committed = rd.take_committed_entries();
        self.schedule_apply(committed, ctx);
        for rs in rd.take_read_states() {
            self.on_read_state(rs);
        }
        let number = rd.number();
        let entries = self.raw.mut_store().append(rd.entries(), number);
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs);
        }
        let must_persist = !entries.is_empty() || rd.must_sync();
        if must_persist || self.unpersisted_ready.is_some() {
            let mut after_persist = Vec::new();
            self.build_messages(rd.take_persisted_messages(), &mut after_persist);
            let state = must_persist.then(|| *self.raw.store().raft_state());
            ctx.write
                .add(self.region_id, number, entries, state, after_persist);
            self.unpersisted_ready = Some(number);
            self.raw.advance_append_async(rd);
        } else {
            let persisted = rd.take_persisted_messages();
            self.build_messages(persisted, &mut ctx.outgoing);
            let mut light = self.raw.advance_append(rd);
            if let Some(commit) = light.commit_index() {
                let mut hs = self.raw.raft.hard_state();
                hs.commit = commit;
                self.raw.mut_store().set_hard_state(&hs);
            }
            let msgs = light.take_messages();
            self.build_messages(msgs, &mut ctx.outgoing);
            let committed = light.take_committed_entries();
            self.schedule_apply(committed, ctx);
        }
    }

    fn on_soft_state(&mut self, leader_id: u64, role: StateRole, metrics: &StoreMetrics) {
        self.leader_id = leader_id;
        let leading = role == StateRole::Leader;
        if leading == self.is_leader {
            return;
        }
        self.is_leader = leading;
        let delta = if leading { 1 } else { -1 };
        metrics
            .leader_count
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        if !leading {
            // Reads wait on this peer's leadership: without it their index means nothing.
            let leader = self.leader_meta();
            let batches = self.read_batches.drain(..).flat_map(|b| b.reads);
            for r in batches.chain(self.new_reads.drain(..)) {
                let _ = r.reply.send(Err(not_leader(self.region_id, leader)));
            }
        }
    }

    fn build_messages(&self, msgs: Vec<RaftPbMessage>, out: &mut Vec<RaftMessage>) {
        let region = self.region();
        let from = region.peers.iter().find(|p| p.id == self.peer_id).cloned();
        for m in msgs {
            let Some(to) = region.peers.iter().find(|p| p.id == m.to).cloned() else {
                tracing::warn!(
                    region = self.region_id,
                    to = m.to,
                    "no store known for peer"
                );
                continue;
            };
            out.push(RaftMessage {
                region_id: self.region_id,
                from_peer: from,
                to_peer: Some(to),
                region_epoch: region.region_epoch,
                message: encode_pb(&m),
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
                is_tombstone: false,
            });
        }
    }

    /// Whether this peer leads its region.
    pub fn is_leader(&self) -> bool {
        self.is_leader
    }

    /// Answers everything still pending: the store is stopping.
    pub fn abort_pending(&mut self) {
        for p in self.proposals.drain(..) {
            let _ = p.reply.send(Err(CmdError::Undetermined(
                "the store is shutting down; the write may still be applied".into(),
            )));
        }
        for b in self.read_batches.drain(..) {
            for r in b.reads {
                let _ = r
                    .reply
                    .send(Err(CmdError::Dropped("the store is shutting down".into())));
            }
        }
        for r in self.new_reads.drain(..) {
            let _ = r
                .reply
                .send(Err(CmdError::Dropped("the store is shutting down".into())));
        }
    }

    /// This peer's id.
    pub fn peer_id(&self) -> u64 {
        self.peer_id
    }

    /// The store this peer lives on.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }
}
