//! What the peers do, one operation per file: each holds the operation's propose
//! side (checks, building the command), its apply side (what every replica writes)
//! and what the peer does once it is applied.
//!
//! - `ready.rs`: the end of a peer's round (read index, `Ready`), persisted reports
//!   and apply results;
//! - `propose.rs`: the write path (checks, proposing, matching entries to proposals);
//! - `command.rs`: what every command shares: epoch and key checks, admin command
//!   building, and applying a committed entry (data commands here);
//! - `read.rs`: ReadIndex reads and executing them on a snapshot;
//! - `life.rs`: creating and destroying peers, failing what is pending;
//! - `split.rs`, `split_check.rs`: split (admin API and automatic by size);
//! - `merge/`: merge's prepare, commit and rollback;
//! - `conf_change/`: membership changes (the rules, proposing and leaving joint
//!   configurations, applying, removed replicas);
//! - `transfer_leader.rs`: leadership transfer;
//! - `dormancy.rs`: idle regions going dormant (no ticks) and waking;
//! - `log_gc.rs`: Raft log truncation (picking the index, applying it);
//! - `snapshot/`: Raft snapshots (generating, sending, receiving, applying,
//!   creating a peer from one, recovering at start-up);
//! - `checksum.rs`: the digest of a replica.

pub(crate) mod checksum;
pub(crate) mod command;
pub(crate) mod conf_change;
pub(crate) mod dormancy;
pub(crate) mod life;
pub(crate) mod log_gc;
pub(crate) mod merge;
pub(crate) mod propose;
pub(crate) mod read;
pub(crate) mod ready;
pub(crate) mod snapshot;
pub(crate) mod split;
pub(crate) mod split_check;
pub(crate) mod transfer_leader;
