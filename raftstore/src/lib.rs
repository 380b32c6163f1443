//! Shoal's raftstore: many Raft groups on one store, sharing one batched event
//! loop, one log engine and one connection per remote store.
//!
//! The crate is laid out by **operation**, so that a reader finds any behaviour by
//! folder name (`ARCHITECTURE.md` at the project root is the full map):
//! - `store/`: [`RaftStore`]: starting and stopping the threads, loading the
//!   peers, the request door; bootstrap of a new cluster; the id allocator.
//! - `fsm.rs`: the batch system glue and the poll round (one write task, one
//!   message batch per store and one apply message per worker per round).
//! - `raft/`: one region's replica: the `Peer` (state and message dispatch),
//!   `PeerStorage` (raft-rs `Storage` over the shared log), apply-side state;
//!   and the wire check of every raft-rs message from another store.
//! - `operation/`: what the peers do, one operation per file (the ready, propose,
//!   read, life, split, split check, merge prepare/commit/rollback, log GC,
//!   snapshots, checksum), each
//!   with its propose side, apply side and on-applied side together.
//! - `worker/`: the threads that do the IO: log writer (one fsync per drain of the rounds' writes),
//!   apply, region worker (split checks, ids, merge-target checks), log GC,
//!   snapshot generation, read pool.
//! - `msg.rs`, `error.rs`, `config.rs`, `metrics.rs`, `transport.rs`: messages,
//!   errors, settings, counters, the transport trait.
//!
//! The data flow of one write: client -> [`RaftStore::write`] -> the region's
//! mailbox -> a poller proposes -> the round's ready -> the log writer (one fsync
//! for every peer of the rounds) -> followers ack -> commit -> the apply worker
//! writes `kv/` -> the client is answered and the peer gets one apply result.

mod config;
mod error;
mod fsm;
pub mod log_limit;
pub mod metrics;
mod msg;
mod operation;
mod raft;
mod store;
#[cfg(test)]
mod testing;
mod transport;
mod worker;

pub use config::Config;
pub use error::{CmdError, ConfigError, StartError, WriteResult};
pub use metrics::StoreMetrics;
pub use operation::read::{ReadKind, ReadOutput};
pub use operation::snapshot::recv::SnapReceiver;
pub use operation::snapshot::{OutgoingSnapshot, SnapFiles, SnapKey, SnapshotDone};
pub use operation::split::{MAX_KEY_SIZE, MAX_SPLIT_KEYS};
pub use store::{RaftStore, TickMode};
pub use transport::Transport;

/// First boot of a cluster (see `store/bootstrap.rs`).
pub mod bootstrap {
    pub use crate::store::bootstrap::{
        bootstrap, bootstrap_with_data, initial_regions, join, load_ident, save_membership,
        split_keys, MAX_INITIAL_REGIONS,
    };
}

/// The check of a raft-rs message's wire bytes, run before anything parses them
/// (see `raft/wire.rs`; public for the benchmark).
pub mod wire {
    pub use crate::raft::wire::{check_entry, check_message, Problem, WireError};
}

/// Store ids must be below this: a store's region and peer ids are
/// `store_id << 40 | n`.
pub use store::ids::MAX_STORE_ID;
