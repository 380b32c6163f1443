//! Shoal's raftstore: many Raft groups on one store, sharing one batched event
//! loop, one log engine and one connection per remote store.
//!
//! Layout (by concern):
//! - [`store`]: [`RaftStore`] starts the threads, loads the peers, and takes requests
//!   (`write`, `read`, `regions`, `on_raft_message`).
//! - [`bootstrap`]: the deterministic first boot of a cluster's initial regions.
//! - [`peer`]: one region's replica on raft-rs `RawNode`: proposals, ReadIndex reads,
//!   and the handling of each `Ready`.
//! - [`storage`]: raft-rs `Storage` over the shared log engine plus an entry cache.
//! - [`poll`]: the poll round: the batch system's handler, gathering every peer's
//!   writes, messages and committed entries of a round.
//! - [`log_writer`]: merges the rounds' write tasks into one synced write, then
//!   releases the messages and notifications that waited for it.
//! - [`apply`]: apply workers, writing committed entries and apply state in one batch.
//! - [`transport`]: the [`Transport`] trait the server and the test harness implement.
//! - [`msg`], [`fsm`], [`cmd`], [`config`], [`metrics`], [`logger`]: messages, batch
//!   system glue, request checks, settings, counters and raft-rs logging.
//!
//! The data flow of one write: client -> `RaftStore::write` -> peer mailbox -> poller
//! proposes -> the round's ready -> log writer (one fsync for all peers of the rounds) ->
//! followers ack -> commit -> apply worker writes `kv/` -> the client is answered.

pub mod apply;
pub mod bootstrap;
pub mod checksum;
pub mod cmd;
pub mod config;
pub mod fsm;
pub mod log_writer;
pub mod logger;
pub mod merge;
pub mod metrics;
pub mod msg;
pub mod peer;
pub mod poll;
pub mod read_pool;
pub mod split;
pub mod split_check;
pub mod storage;
pub mod store;
pub mod transport;

pub use config::Config;
pub use msg::{CmdError, ReadKind, ReadOutput, WriteResult};
pub use store::{RaftStore, TickMode};
pub use transport::Transport;
