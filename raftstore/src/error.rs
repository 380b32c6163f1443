//! The errors of the raftstore, structured (thiserror), one enum per audience:
//! - [`CmdError`]: why a command or read was not carried out, for the client (most
//!   become a region error it retries or re-routes on; see [`CmdError::to_region_error`]);
//! - [`StartError`]: why a store could not start (bad settings, unreadable engines,
//!   inconsistent persisted state, a thread that could not be spawned);
//! - [`ConfigError`]: which setting is out of bounds.
//!
//! Fatal invariant violations are none of these: apply must be deterministic on
//! every replica, so a replica that cannot apply an entry as the others do stops
//! (see [`fatal`]) instead of answering an error and diverging.
//!
//! The region error constructors (`not_leader`, `epoch_not_match`, ...) live here too,
//! so that every part of the store words them the same way.

use shoal_proto::errorpb::{
    region_error::Kind, EntryTooLarge, EpochNotMatch, KeyNotInRegion, NotLeader, RegionError,
    RegionNotFound, ServerIsBusy, StaleCommand, StoreNotMatch, Undetermined,
};
use shoal_proto::metapb::{Peer, Region, RegionEpoch};
use shoal_proto::raft_cmdpb::Response;

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
    /// The store failed to read its engines while serving this request.
    #[error("storage error: {0}")]
    Storage(String),
    /// The request can never succeed as given (e.g. a split at the region's start
    /// key); not retryable.
    #[error("{0}")]
    Invalid(String),
}

/// What a write returns: one response per request of the command.
pub type WriteResult = Result<Vec<Response>, CmdError>;

impl CmdError {
    /// The region error a service answers with, for the errors that are about the
    /// region (`Region`, `Dropped` as `StaleCommand`, `Undetermined`); `None` for
    /// storage failures and invalid requests, which become gRPC statuses.
    pub fn to_region_error(&self, region_id: u64) -> Option<RegionError> {
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

impl From<shoal_engine::Error> for CmdError {
    fn from(e: shoal_engine::Error) -> Self {
        CmdError::Storage(e.to_string())
    }
}

/// A setting out of its bounds, named with the field as the TOML spells it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Why a store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is out of bounds.
    #[error("invalid setting: {0}")]
    Config(#[from] ConfigError),
    /// The batch system refused its settings.
    #[error("invalid batch system setting: {0}")]
    BatchSystem(#[from] shoal_router::ConfigError),
    /// An engine failed to read or write.
    #[error("engine: {0}")]
    Engine(#[from] shoal_engine::Error),
    /// What the engines hold contradicts itself or does not decode.
    #[error("persisted state: {0}")]
    Corrupt(String),
    /// The store id (or the data directory's identity) is not acceptable.
    #[error("{0}")]
    Identity(String),
    /// raft-rs refused a peer's state.
    #[error("region {region}: raft: {source}")]
    Raft {
        /// The region whose peer could not start.
        region: u64,
        /// What raft-rs said.
        source: raft::Error,
    },
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A peer could not be registered with the router (a duplicate region id).
    #[error("region {region}: {reason}")]
    Register {
        /// The region.
        region: u64,
        /// The router's reason.
        reason: String,
    },
}

/// Stops the process on a broken invariant: a replica that cannot apply what every
/// other replica applies (a missing merge source, a log with holes) must not go on
/// and diverge, nor answer as if the command had failed. `shoal node` turns the
/// panic into an abort; tests see it as a failure.
#[track_caller]
pub(crate) fn fatal(region_id: u64, what: std::fmt::Arguments<'_>) -> ! {
    tracing::error!(region = region_id, "fatal: {what}");
    panic!("region {region_id}: fatal invariant violation: {what}")
}

/// `NotLeader`, with the leader when known.
pub(crate) fn not_leader(region_id: u64, leader: Option<Peer>) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("peer is not the leader of region {region_id}"),
        kind: Some(Kind::NotLeader(NotLeader { region_id, leader })),
    })
}

/// `EpochNotMatch`, carrying the store's current view of the region.
pub(crate) fn epoch_not_match(current: &Region, requested: Option<&RegionEpoch>) -> CmdError {
    CmdError::Region(RegionError {
        message: format!(
            "region {} epoch is {:?}, the request has {:?}",
            current.id, current.region_epoch, requested
        ),
        kind: Some(Kind::EpochNotMatch(EpochNotMatch {
            current_regions: vec![current.clone()],
        })),
    })
}

/// `ServerIsBusy` for `region_id`, with why: retry shortly.
pub(crate) fn server_busy(region_id: u64, reason: &str) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("region {region_id}: {reason}; retry shortly"),
        kind: Some(Kind::ServerIsBusy(ServerIsBusy {
            reason: reason.to_string(),
            backoff_ms: 50,
        })),
    })
}

/// `ServerIsBusy` for a region frozen by a merge in progress: retry shortly.
pub(crate) fn region_merging(region_id: u64) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("region {region_id} is being merged; retry shortly"),
        kind: Some(Kind::ServerIsBusy(ServerIsBusy {
            reason: "merging".into(),
            backoff_ms: 50,
        })),
    })
}

/// `EntryTooLarge`: the command would make a Raft entry of `size` bytes, over `limit`.
pub(crate) fn entry_too_large(region_id: u64, size: u64, limit: u64) -> CmdError {
    CmdError::Region(RegionError {
        message: format!(
            "region {region_id}: the command is {size} bytes, over the raft-entry-max-size \
             limit of {limit} bytes"
        ),
        kind: Some(Kind::EntryTooLarge(EntryTooLarge {
            region_id,
            entry_size: size,
        })),
    })
}

/// `StoreNotMatch`: the request names a peer on `requested`, this is `actual`.
pub(crate) fn store_not_match(requested: u64, actual: u64) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("the request is for store {requested}, this is store {actual}"),
        kind: Some(Kind::StoreNotMatch(StoreNotMatch {
            request_store_id: requested,
            actual_store_id: actual,
        })),
    })
}

/// `KeyNotInRegion`.
pub(crate) fn key_not_in_region(key: &[u8], region: &Region) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("key {key:?} is not in region {}", region.id),
        kind: Some(Kind::KeyNotInRegion(KeyNotInRegion {
            key: key.to_vec(),
            region_id: region.id,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        })),
    })
}

/// `RegionNotFound`.
pub(crate) fn region_not_found(region_id: u64) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("region {region_id} is not on this store"),
        kind: Some(Kind::RegionNotFound(RegionNotFound { region_id })),
    })
}
