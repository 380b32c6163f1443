//! The threads that do the store's IO, so that pollers do not write to the disk
//! nor scan it (pollers still read log entries through raft-rs's `Storage`, and a
//! merge reads the entries it carries; both usually hit the entry cache):
//! - `log_writer.rs`: the rounds' log writes, one fsync for all peers per drain;
//! - `apply.rs`: committed entries into the kv engine, one batch per drain;
//! - `region.rs`: split-check scans and split ids, merge-target checks, the region
//!   digest;
//! - `log_gc.rs`: deleting truncated Raft log entries and giving their space back;
//! - `snap_gen.rs`: generating Raft snapshots, removing snapshot files;
//! - `read_pool.rs`: scans and checksums on a bounded pool.
//!
//! No worker knows the router or the peers' messages: each reports through a
//! closure the store wires up at start (`store/mod.rs`).

pub(crate) mod apply;
pub(crate) mod log_gc;
pub(crate) mod log_writer;
pub(crate) mod read_pool;
pub(crate) mod region;
pub(crate) mod snap_gen;
