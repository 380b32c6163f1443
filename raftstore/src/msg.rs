//! The messages peers and the store receive through the router, and how callers
//! get their answers (a oneshot channel per request, never a callback).

use shoal_proto::adminpb::{ChecksumResponse, RegionInfo};
use shoal_proto::errorpb::RegionError;
use shoal_proto::kvrpcpb::KvPair;
use shoal_proto::metapb::Region;
use shoal_proto::raft_cmdpb::{RaftCmdRequest, Response};
use shoal_proto::raft_serverpb::RaftMessage;
use tokio::sync::oneshot;

/// The kinds of tick a peer can register with the store ticker.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerTick {
    /// Drives Raft's election and heartbeat timers.
    Raft = 0,
    /// Checks the region's size against the split limits (leaders only).
    SplitCheck = 1,
}

impl From<PeerTick> for u8 {
    fn from(t: PeerTick) -> u8 {
        t as u8
    }
}

/// Why a command or read was not carried out.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CmdError {
    /// The request reached the wrong peer or a stale region: the client refreshes
    /// its region cache and retries.
    #[error("region error: {}", .0.message)]
    Region(RegionError),
    /// The command **certainly was not applied** (refused or dropped before it
    /// entered the log, or its log position went to another leader's entry):
    /// retrying any request is safe. Clients see `StaleCommand`.
    #[error("proposal dropped: {0}")]
    Dropped(String),
    /// The command entered the log but its **outcome is unknown** to this peer
    /// (leadership moved, the region was merged away, the store stopped): it may
    /// or may not be applied. Clients see `Undetermined`; a compare-and-swap must
    /// not be retried blindly.
    #[error("outcome unknown: {0}")]
    Undetermined(String),
    /// The store failed to read or write its engines.
    #[error("storage error: {0}")]
    Storage(String),
    /// The request can never succeed as given (e.g. a split at the region's start
    /// key); not retryable.
    #[error("{0}")]
    Invalid(String),
}

impl CmdError {
    /// The region error a service answers with, for the errors that are about the
    /// region (`Region`, `Dropped` as `StaleCommand`, `Undetermined`); `None` for
    /// storage failures and invalid requests, which become gRPC statuses.
    pub fn to_region_error(&self, region_id: u64) -> Option<RegionError> {
        use shoal_proto::errorpb::{region_error::Kind, StaleCommand, Undetermined};
        match self {
            CmdError::Region(e) => Some(e.clone()),
            CmdError::Dropped(reason) => Some(RegionError {
                message: format!("region {region_id}: not applied, safe to retry: {reason}"),
                kind: Some(Kind::StaleCommand(StaleCommand {
                    region_id,
                    reason: reason.clone(),
                })),
            }),
            CmdError::Undetermined(reason) => Some(RegionError {
                message: format!("region {region_id}: outcome unknown: {reason}"),
                kind: Some(Kind::Undetermined(Undetermined {
                    region_id,
                    reason: reason.clone(),
                })),
            }),
            CmdError::Storage(_) | CmdError::Invalid(_) => None,
        }
    }
}

/// What a write returns: one response per request of the command.
pub type WriteResult = Result<Vec<Response>, CmdError>;

/// A command to replicate and apply.
pub struct Command {
    /// The command; its header names the region, epoch and peer.
    pub request: RaftCmdRequest,
    /// Answered once the command is applied (or refused).
    pub reply: oneshot::Sender<WriteResult>,
}

/// A linearizable read.
pub enum ReadKind {
    /// One key.
    Get(Vec<u8>),
    /// `[start, end)` within the region (an empty end meaning the region's end), at
    /// most `limit` pairs.
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
    },
}

/// What a read returns.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutput {
    /// The value of a get (None when absent).
    Value(Option<Vec<u8>>),
    /// The pairs of a scan.
    Pairs(Vec<KvPair>),
}

/// A read request with its routing header.
pub struct ReadRequest {
    /// Where the client routed the read (region id, epoch, peer).
    pub header: shoal_proto::raft_cmdpb::RaftRequestHeader,
    /// What to read.
    pub kind: ReadKind,
    /// Answered once the read index is applied.
    pub reply: oneshot::Sender<Result<ReadOutput, CmdError>>,
}

/// Messages to one peer.
pub enum PeerMsg {
    /// A Raft message from another store.
    Raft(Box<RaftMessage>),
    /// A write to propose.
    Command(Command),
    /// A read to serve through ReadIndex.
    Read(ReadRequest),
    /// A tick from the store ticker.
    Tick(PeerTick),
    /// The log writer persisted this peer's readies up to `number`.
    Persisted {
        /// The highest persisted ready number.
        number: u64,
    },
    /// Apply finished entries up to `applied_index`.
    Applied {
        /// The peer's new applied index.
        applied_index: u64,
    },
    /// Reports the region, its leader and whether this peer leads.
    Info(oneshot::Sender<RegionInfo>),
    /// Starts an election at once (tests and bootstrapping use it).
    Campaign,
    /// The transport cannot reach this store: its peers should get no more appends
    /// until they answer (raft-rs `report_unreachable`).
    StoreUnreachable(u64),
    /// Apply wrote a split of this region: the region shrank to `parent` and the
    /// store must start peers for `new_regions`.
    Split {
        /// This region after the split.
        parent: Region,
        /// The regions split off, in key order, with what their peers start from.
        new_regions: Vec<crate::split::NewPeer>,
    },
    /// Apply froze (prepare) or unfroze (rollback) this region as a merge source.
    MergeState {
        /// The region with its new epoch.
        region: Region,
        /// The merge in progress, `None` after a rollback.
        merging: Option<shoal_proto::raft_serverpb::MergeState>,
    },
    /// Apply committed a merge into this region: it now spans `region`.
    Merged {
        /// The region after the merge.
        region: Region,
    },
    /// This region was merged into `merged_into`: the peer goes away.
    Destroy {
        /// The target that took the range.
        merged_into: u64,
    },
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
    /// From the target's peer: the commit of the merge prepared at `commit` can never
    /// apply; roll it back (if this peer leads).
    RollbackMerge {
        /// The prepare index.
        commit: u64,
    },
    /// The split checker measured the region (see [`crate::split_check`]).
    SplitCheckResult(crate::split_check::CheckResult),
    /// A digest of this replica's data (see the Admin `Checksum` RPC).
    Checksum(oneshot::Sender<Result<ChecksumResponse, CmdError>>),
}

/// Messages to the store (the control FSM).
pub enum StoreMsg {
    /// A Raft message for a region this store has no peer for.
    Raft(Box<RaftMessage>),
}
