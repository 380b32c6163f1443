//! The read path of a peer: ReadIndex reads.
//!
//! Reads accepted in a round share one read index, asked at the round's end once
//! the leader has committed in its term (raft-rs silently drops earlier asks). When
//! raft-rs confirms the index and apply has reached it, the epoch is re-checked and
//! the read served: a get here, a scan on the read pool over a kv snapshot. Every
//! read is answered in bounded time: a peer that is not (or no longer) leader refuses
//! with `NotLeader`, and an index raft-rs never confirms is given up after
//! [`READ_INDEX_TIMEOUT_ELECTIONS`] election timeouts with a retryable `ServerIsBusy`.
//! Batches are independent: one waiting for its index holds back no other.

use std::collections::VecDeque;

use raft::{ReadState, StateRole};
use shoal_engine::keys::{data_end_key, data_key, origin_key};
use shoal_engine::{Cf, KvEngine, KvRead};
use shoal_proto::kvrpcpb::KvPair;

use super::Peer;
use crate::cmd::{check_epoch, key_in_region, key_not_in_region, not_leader, region_merging};
use crate::metrics::StoreMetrics;
use crate::msg::{CmdError, ReadKind, ReadOutput, ReadRequest};
use crate::poll::PollCtx;

/// A read index unanswered for this many election timeouts is given up: raft-rs
/// drops some requests silently (a follower without a leader, a leader that lost
/// its term in the same round), and a batch must never wait for ever.
const READ_INDEX_TIMEOUT_ELECTIONS: u64 = 2;

/// Reads that share one read index.
pub(super) struct ReadBatch {
    pub(super) ctx: u64,
    /// Set when the leader confirmed the index.
    pub(super) index: Option<u64>,
    /// The raft tick count when the read index was asked.
    pub(super) asked_at: u64,
    pub(super) reads: Vec<ReadRequest>,
}

impl Peer {
    /// At the round's end: one read index for the reads gathered this round.
    pub(super) fn ask_read_index(&mut self) {
        if self.new_reads.is_empty() {
            return;
        }
        // A message of this round may have made this peer step down: a read index
        // asked now would be forwarded (or dropped) by raft-rs; refuse the reads.
        if self.raw.raft.state != StateRole::Leader {
            let leader = self.leader_meta();
            for r in self.new_reads.drain(..) {
                let _ = r.reply.send(Err(not_leader(self.region_id, leader)));
            }
            return;
        }
        // raft-rs silently drops a read index asked of a leader that has not yet
        // committed an entry of its term: keep the reads until it has (the commit
        // of its first entry wakes this peer again).
        if self.raw.raft.commit_to_current_term() {
            let id = self.next_read_ctx;
            self.next_read_ctx += 1;
            self.raw.read_index(id.to_be_bytes().to_vec());
            self.read_batches.push_back(ReadBatch {
                ctx: id,
                index: None,
                asked_at: self.ticks,
                reads: std::mem::take(&mut self.new_reads),
            });
        }
    }

    /// Takes the read batches that match `pick` out of the queue, keeping the order
    /// of the others.
    fn take_read_batches(&mut self, pick: impl Fn(&ReadBatch) -> bool) -> VecDeque<ReadBatch> {
        if !self.read_batches.iter().any(&pick) {
            return VecDeque::new();
        }
        let (taken, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.read_batches)
            .into_iter()
            .partition(|b| pick(b));
        self.read_batches = kept;
        taken
    }

    pub(super) fn accept_read(&mut self, read: ReadRequest) {
        if self.merging.is_some() {
            let _ = read.reply.send(Err(region_merging(self.region_id)));
            return;
        }
        let check = match &read.kind {
            ReadKind::Get(key) => {
                self.check_request(&read.header, &mut std::iter::once(key.as_slice()))
            }
            ReadKind::Scan { start, .. } => {
                self.check_request(&read.header, &mut std::iter::once(start.as_slice()))
            }
        };
        match check {
            Ok(()) => self.new_reads.push(read),
            Err(e) => {
                let _ = read.reply.send(Err(e));
            }
        }
    }

    pub(super) fn on_read_state(&mut self, rs: ReadState) {
        let Ok(bytes) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
            return;
        };
        let id = u64::from_be_bytes(bytes);
        if let Some(b) = self.read_batches.iter_mut().find(|b| b.ctx == id) {
            b.index = Some(rs.index);
        }
    }

    /// Gives up the read batches whose index raft-rs has not confirmed within
    /// [`READ_INDEX_TIMEOUT_ELECTIONS`] election timeouts: their reads get a
    /// retryable error (nothing was read, so a retry is always safe).
    pub(super) fn expire_read_indexes(&mut self, ctx: &PollCtx) {
        let limit = READ_INDEX_TIMEOUT_ELECTIONS * ctx.store.cfg.raft_election_ticks as u64;
        let now = self.ticks;
        let expired = |b: &ReadBatch| b.index.is_none() && now.saturating_sub(b.asked_at) >= limit;
        for b in self.take_read_batches(expired) {
            tracing::debug!(
                region = self.region_id,
                ctx = b.ctx,
                "read index lost; refusing its reads"
            );
            for r in b.reads {
                let _ = r.reply.send(Err(crate::cmd::server_busy(
                    self.region_id,
                    "the read index was not confirmed in time",
                )));
            }
        }
    }

    /// Serves every read whose index is applied. Batches are independent: one whose
    /// index is not known yet does not hold back those behind it.
    pub(super) fn serve_applied_reads(&mut self, ctx: &mut PollCtx) {
        let applied = self.applied_index;
        let ready = |b: &ReadBatch| b.index.is_some_and(|i| i <= applied);
        for batch in self.take_read_batches(ready) {
            let served = batch.reads.len() as u64;
            for r in batch.reads {
                // A split may have been applied since the read was accepted: its keys
                // may belong to another region now, whose writes this index misses.
                match self.recheck_read(&r) {
                    Ok(()) => self.execute_read(r, ctx),
                    Err(e) => {
                        let _ = r.reply.send(Err(e));
                    }
                }
            }
            StoreMetrics::add(&ctx.store.metrics.reads_served, served);
        }
    }

    fn recheck_read(&self, read: &ReadRequest) -> Result<(), CmdError> {
        check_epoch(self.region(), read.header.region_epoch.as_ref(), false)?;
        let key = match &read.kind {
            ReadKind::Get(key) => key,
            ReadKind::Scan { start, .. } => start,
        };
        if !key_in_region(key, self.region()) {
            return Err(key_not_in_region(key, self.region()));
        }
        Ok(())
    }

    /// Answers a confirmed read: a get here (one point lookup), a scan on the read
    /// pool over a kv snapshot taken now, once everything up to the read index is
    /// applied, so the scan sees exactly what the index promises.
    fn execute_read(&self, read: ReadRequest, ctx: &PollCtx) {
        let storage = |e: shoal_engine::Error| CmdError::Storage(e.to_string());
        let ReadRequest { kind, reply, .. } = read;
        match kind {
            ReadKind::Get(key) => {
                let out = ctx
                    .store
                    .kv
                    .get(Cf::Default, &data_key(&key))
                    .map(ReadOutput::Value)
                    .map_err(storage);
                let _ = reply.send(out);
            }
            ReadKind::Scan { start, end, limit } => {
                // Clip to the region: a scan never reads past the range this peer owns.
                let region = self.region();
                let end = if end.is_empty()
                    || (!region.end_key.is_empty() && end.as_slice() > region.end_key.as_slice())
                {
                    region.end_key.clone()
                } else {
                    end
                };
                let snap = ctx.store.kv.snapshot();
                let region_id = self.region_id;
                ctx.store.read_pool.spawn(Box::new(move |run| {
                    if !run {
                        let _ = reply.send(Err(crate::cmd::server_busy(
                            region_id,
                            "the read pool is full",
                        )));
                        return;
                    }
                    let out = snap
                        .scan(Cf::Default, &data_key(&start), &data_end_key(&end), limit)
                        .map_err(storage)
                        .map(|pairs| {
                            ReadOutput::Pairs(
                                pairs
                                    .into_iter()
                                    .map(|(k, v)| KvPair {
                                        key: origin_key(&k).to_vec(),
                                        value: v,
                                    })
                                    .collect(),
                            )
                        });
                    let _ = reply.send(out);
                }));
            }
        }
    }
}
