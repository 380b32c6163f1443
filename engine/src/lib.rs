//! Shoal's storage engines.
//!
//! Layout:
//! - [`log`]: the [`LogEngine`] trait, the shared Raft log of every region on a store,
//!   and [`LogBatch`], a write to many regions that becomes durable with one sync.
//! - [`kv`]: the [`KvEngine`] trait, the state machine (`default` for user data,
//!   `meta` for per-region state), with atomic batches and owned snapshots.
//! - [`keys`]: how both engines lay out their keys.
//! - [`rocks`]: the RocksDB implementations and [`rocks::Engines`], a data directory
//!   holding `raft/` and `kv/`. RocksDB types never appear outside this module.
//! - [`conformance`]: the suite every implementation must pass.
//!
//! The traits state their contracts (ordering, durability, no holes); raftstore
//! relies on those, never on RocksDB behaviour.

pub mod error;
pub mod keys;
pub mod kv;
pub mod log;
pub mod rocks;

pub mod conformance;

pub use error::{Error, Result};
pub use kv::{file_checksum, Cf, Fnv64, KvBatch, KvEngine, KvOp, KvRead, KvSnapshot, SstFile};
pub use log::{LogBatch, LogEngine, LogEntry, LogStats, RegionLogWrite};
