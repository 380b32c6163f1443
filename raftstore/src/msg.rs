//! The messages peers and the store receive through the router, and how callers
//! get their answers (a oneshot channel per request, never a callback).
//!
//! Workers (log writer, apply, region worker) do not know these types: each reports
//! through a closure the store wires to the router (`RaftStore::start`), so no
//! worker depends on the router or the peers' messages.

use shoal_engine::rocks::RocksSnapshot;
use shoal_proto::adminpb::{ChecksumResponse, RegionInfo};
use shoal_proto::raft_cmdpb::{RaftCmdRequest, RaftRequestHeader};
use shoal_proto::raft_serverpb::RaftMessage;
use tokio::sync::oneshot;

use crate::error::{CmdError, WriteResult};
use crate::raft::apply::ApplyRes;
use crate::worker::region::CheckResult;
use crate::worker::snap_gen::Generated;

/// The kinds of tick a peer can register with the store ticker.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PeerTick {
    /// Drives Raft's election and heartbeat timers.
    Raft = 0,
    /// Checks the region's size against the split limits (leaders only).
    SplitCheck = 1,
    /// Truncates the region's log when enough of it is applied everywhere
    /// (leaders only).
    LogGc = 2,
    /// The store's liveness round (heartbeats out, silent stores found): not a
    /// peer's, registered once under id 0.
    Liveness = 3,
}

impl From<PeerTick> for u8 {
    fn from(t: PeerTick) -> u8 {
        t as u8
    }
}

/// A command to replicate and apply.
pub(crate) struct Command {
    /// The command; its header names the region, epoch and peer.
    pub(crate) request: RaftCmdRequest,
    /// Answered once the command is applied (or refused).
    pub(crate) reply: oneshot::Sender<WriteResult>,
}

impl Command {
    /// A command nobody waits for (the store's own: automatic splits, merge steps);
    /// the next check sees its outcome.
    pub(crate) fn unanswered(request: RaftCmdRequest) -> Command {
        let (reply, _) = oneshot::channel();
        Command { request, reply }
    }
}

/// Where a proposal's answer goes: one caller, or the callers of several writes
/// proposed as one entry (`operation::propose`), in order, each with its number
/// of requests: each gets its own slice of the responses, or the shared error.
pub(crate) enum Reply {
    One(oneshot::Sender<WriteResult>),
    Merged(Vec<(oneshot::Sender<WriteResult>, usize)>),
}

impl Reply {
    /// How many writes (callers) wait on it.
    pub(crate) fn writes(&self) -> usize {
        match self {
            Reply::One(_) => 1,
            Reply::Merged(callers) => callers.len(),
        }
    }

    /// Answers every caller (one that stopped waiting is skipped).
    pub(crate) fn send(self, result: WriteResult) {
        match (self, result) {
            (Reply::One(tx), result) => {
                let _ = tx.send(result);
            }
            (Reply::Merged(callers), Ok(responses)) => {
                let mut responses = responses.into_iter();
                for (tx, n) in callers {
                    let _ = tx.send(Ok(responses.by_ref().take(n).collect()));
                }
            }
            (Reply::Merged(callers), Err(e)) => {
                for (tx, _) in callers {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }
}

/// What a confirmed read reads from: a kv snapshot taken once everything up to the
/// read index was applied, and the region's end as of then (a scan never reads
/// past the range the peer owns).
pub(crate) struct ReadSnapshot {
    /// The snapshot.
    pub(crate) snap: RocksSnapshot,
    /// The region's end key (empty: the end of the key space).
    pub(crate) region_end: Vec<u8>,
}

/// A linearizable read to confirm through ReadIndex.
pub(crate) struct ReadRequest {
    /// Where the client routed the read (region id, epoch, peer).
    pub(crate) header: RaftRequestHeader,
    /// The key the read starts at, checked against the region (a get's key, a
    /// scan's start).
    pub(crate) key: Vec<u8>,
    /// Answered with a snapshot to read once the read index is applied.
    pub(crate) reply: oneshot::Sender<Result<ReadSnapshot, CmdError>>,
}

/// Messages to one peer.
pub(crate) enum PeerMsg {
    /// A Raft message from another store.
    Raft(Box<RaftMessage>),
    /// A write to propose.
    Command(Command),
    /// A read to confirm through ReadIndex.
    Read(ReadRequest),
    /// A tick from the store ticker.
    Tick(PeerTick),
    /// The log writer persisted this peer's readies up to `number`.
    Persisted {
        /// The highest persisted ready number.
        number: u64,
    },
    /// What one apply batch did to this region: the applied index and the admin
    /// results in log order.
    ApplyRes(ApplyRes),
    /// Reports the region, its leader and what the last split check measured (no
    /// engine reads on the poller: the caller adds RocksDB's size estimate).
    Info(oneshot::Sender<RegionInfo>),
    /// Starts an election at once (tests and bootstrapping use it).
    Campaign,
    /// Wake a dormant peer (paced by the store's liveness round: its start-up, or
    /// its leader's store found down).
    Wake(crate::store::liveness::Wake),
    /// The transport cannot reach this store: its peers should get no more appends
    /// until they answer (raft-rs `report_unreachable`).
    StoreUnreachable(u64),
    /// From this store's peer of a merge source: propose (or forward to the leader)
    /// the commit, unless this target's epoch moved on, in which case the source is
    /// told to roll back.
    ProposeCommitMerge {
        /// The `CommitMerge` command, its header carrying the target epoch expected.
        request: RaftCmdRequest,
        /// The source region.
        source_id: u64,
        /// The prepare index.
        commit: u64,
    },
    /// The commit of the merge prepared at `commit` can never apply (the target's
    /// epoch moved on, or the target was merged away): roll it back (if this peer
    /// leads).
    RollbackMerge {
        /// The prepare index.
        commit: u64,
    },
    /// The region worker measured the region (see `worker::region`).
    SplitCheckResult(CheckResult),
    /// A digest of this replica's data (see the Admin `Checksum` RPC).
    Checksum(oneshot::Sender<Result<ChecksumResponse, CmdError>>),
    /// The snapshot worker's outcome for this (leading) peer.
    SnapshotGenerated(Box<Result<Generated, String>>),
    /// How sending a snapshot to peer `to` ended.
    /// Hand the leadership to the region's peer on `to_store` (the admin API);
    /// answered with that peer once raft-rs was asked.
    TransferLeader {
        to_store: u64,
        reply: oneshot::Sender<Result<shoal_proto::metapb::Peer, CmdError>>,
    },
    SnapshotStatus {
        /// The follower's peer id.
        to: u64,
        /// Whether it took the snapshot whole.
        ok: bool,
    },
}

/// Messages to the store (the control FSM).
pub(crate) enum StoreMsg {
    /// A Raft message for a region this store has no peer for.
    Raft(Box<RaftMessage>),
}
