//! The read path of a peer: ReadIndex reads.
//!
//! Reads accepted in a round share one read index, asked at the round's end once
//! the leader has committed in its term (raft-rs silently drops earlier asks). When
//! raft-rs confirms the index and apply has reached it, the epoch is re-checked and
//! the read is answered with a kv snapshot taken then ([`ReadSnapshot`]); the
//! caller reads it ([`execute`]): a get on the caller's thread, a scan on the read
//! pool. The poller never reads the engine. Every
//! read is answered in bounded time: a peer that is not (or no longer) leader refuses
//! with `NotLeader`, and an index raft-rs never confirms is given up after
//! [`READ_INDEX_TIMEOUT_ELECTIONS`] election timeouts with a retryable `ServerIsBusy`.
//! Batches are independent: one waiting for its index holds back no other.

use std::collections::VecDeque;

use raft::{ReadState, StateRole};
use shoal_engine::keys::{data_end_key, data_key, origin_key};
use shoal_engine::{Cf, KvEngine, KvRead};
use shoal_proto::kvrpcpb::KvPair;
use tokio::sync::oneshot;

use crate::error::{not_leader, region_merging, server_busy, CmdError};
use crate::fsm::PollCtx;
use crate::metrics::StoreMetrics;
use crate::msg::{ReadRequest, ReadSnapshot};
use crate::operation::command::{check_epoch, check_keys};
use crate::raft::peer::Peer;
use crate::worker::read_pool::ReadPool;

/// A linearizable read.
pub enum ReadKind {
    /// One key.
    Get(Vec<u8>),
    /// `[start, end)` within the region (an empty end meaning the region's end), at
    /// most `limit` pairs.
    Scan {
        /// The first key.
        start: Vec<u8>,
        /// The end (exclusive).
        end: Vec<u8>,
        /// Most pairs returned.
        limit: usize,
    },
}

impl ReadKind {
    /// The key the read starts at, which must lie in the region.
    pub(crate) fn start_key(&self) -> &[u8] {
        match self {
            ReadKind::Get(key) => key,
            ReadKind::Scan { start, .. } => start,
        }
    }
}

/// What a read returns.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutput {
    /// The value of a get (None when absent).
    Value(Option<Vec<u8>>),
    /// The pairs of a scan.
    Pairs(Vec<KvPair>),
}

/// A read index unanswered for this many election timeouts is given up: raft-rs
/// drops some requests silently (a follower without a leader, a leader that lost
/// its term in the same round), and a batch must never wait for ever.
const READ_INDEX_TIMEOUT_ELECTIONS: u64 = 2;

/// Reads that share one read index.
pub(crate) struct ReadBatch {
    pub(crate) ctx: u64,
    /// Set when the leader confirmed the index.
    pub(crate) index: Option<u64>,
    /// The raft tick count when the read index was asked.
    pub(crate) asked_at: u64,
    pub(crate) reads: Vec<ReadRequest>,
}

impl Peer {
    /// At the round's end: one read index for the reads gathered this round.
    pub(crate) fn ask_read_index(&mut self) {
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

    pub(crate) fn accept_read(&mut self, read: ReadRequest) {
        if self.merging.is_some() {
            let _ = read.reply.send(Err(region_merging(self.region_id)));
            return;
        }
        match self.check_request(&read.header, [read.key.as_slice()]) {
            Ok(()) => self.new_reads.push(read),
            Err(e) => {
                let _ = read.reply.send(Err(e));
            }
        }
    }

    pub(crate) fn on_read_state(&mut self, rs: ReadState) {
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
    pub(crate) fn expire_read_indexes(&mut self, ctx: &PollCtx) {
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
                let why = "the read index was not confirmed in time";
                let _ = r.reply.send(Err(server_busy(self.region_id, why)));
            }
        }
    }

    /// Answers every read whose index is applied with a snapshot to read. Batches
    /// are independent: one whose index is not known yet does not hold back those
    /// behind it.
    pub(crate) fn serve_applied_reads(&mut self, ctx: &mut PollCtx) {
        let applied = self.applied_index;
        let ready = |b: &ReadBatch| b.index.is_some_and(|i| i <= applied);
        for batch in self.take_read_batches(ready) {
            let served = batch.reads.len() as u64;
            for r in batch.reads {
                // A split may have been applied since the read was accepted: its keys
                // may belong to another region now, whose writes this index misses.
                let answer = self.recheck_read(&r).map(|()| ReadSnapshot {
                    snap: ctx.store.kv.snapshot(),
                    region_end: self.region().end_key.clone(),
                });
                let _ = r.reply.send(answer);
            }
            StoreMetrics::add(&ctx.store.metrics.reads_served, served);
        }
    }

    fn recheck_read(&self, read: &ReadRequest) -> Result<(), CmdError> {
        check_epoch(self.region(), read.header.region_epoch.as_ref(), false)?;
        check_keys(self.region(), [read.key.as_slice()])
    }
}

/// Reads `kind` from a confirmed read's snapshot: a get here (one point lookup on
/// the caller's thread), a scan on the read pool (bounded: a full pool refuses with
/// `ServerIsBusy`), clipped to the region.
pub(crate) async fn execute(
    region_id: u64,
    kind: ReadKind,
    read: ReadSnapshot,
    pool: &ReadPool,
) -> Result<ReadOutput, CmdError> {
    let ReadSnapshot { snap, region_end } = read;
    let (start, end, limit) = match kind {
        ReadKind::Get(key) => {
            return Ok(ReadOutput::Value(snap.get(Cf::Default, &data_key(&key))?));
        }
        ReadKind::Scan { start, end, limit } => (start, end, limit),
    };
    // A scan never reads past the range the peer owns.
    let past_region = !region_end.is_empty() && end.as_slice() > region_end.as_slice();
    let end = if end.is_empty() || past_region {
        region_end
    } else {
        end
    };
    let (tx, rx) = oneshot::channel();
    pool.spawn(Box::new(move |run| {
        let out = match run {
            true => snap
                .scan(Cf::Default, &data_key(&start), &data_end_key(&end), limit)
                .map(|pairs| ReadOutput::Pairs(pairs.into_iter().map(to_pair).collect()))
                .map_err(CmdError::from),
            false => Err(server_busy(region_id, "the read pool is full")),
        };
        let _ = tx.send(out);
    }));
    rx.await
        .unwrap_or_else(|_| Err(CmdError::Dropped("the read pool stopped".into())))
}

fn to_pair((k, v): (Vec<u8>, Vec<u8>)) -> KvPair {
    KvPair {
        key: origin_key(&k).to_vec(),
        value: v,
    }
}
