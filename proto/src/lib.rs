//! Shoal's wire protocol and persisted state, generated from `proto/*.proto`.
//!
//! Layout:
//! - [`metapb`]: what a region is (`Region`, `Peer`, `RegionEpoch`, `Store`).
//! - [`errorpb`]: the region errors a store answers with (`NotLeader`, `EpochNotMatch`, ...).
//! - [`kvrpcpb`]: the client-facing `Kv` service. Every request carries a `Context`
//!   (region id, epoch, peer) saying where the client routed it.
//! - [`adminpb`]: the operators' `Admin` service (regions, split, merge, status).
//! - [`raft_serverpb`]: the store-to-store `Raft` transport (`RaftMessage` wraps a raft-rs
//!   `eraftpb::Message` as bytes) and the state each store persists (`RaftLocalState` in
//!   the log engine; `RegionLocalState` and `RaftApplyState` in the kv engine).
//! - [`raft_cmdpb`]: the commands carried in Raft entries (`RaftCmdRequest`).
//! - [`RegionExt`]: range and membership helpers on a `Region`, shared by every crate.
//! - [`HasRegionError`]: the answers that may carry a region error.
//! - [`system`]: the system key range (keys from `FF FF FF FF` on) and the cluster
//!   directory's records in it.

#![allow(clippy::all, missing_docs)]

/// Region metadata.
pub mod metapb {
    tonic::include_proto!("metapb");
}

/// Region errors.
pub mod errorpb {
    tonic::include_proto!("errorpb");
}

/// The key-value service.
pub mod kvrpcpb {
    tonic::include_proto!("kvrpcpb");
}

/// The admin service.
pub mod adminpb {
    tonic::include_proto!("adminpb");
}

/// The Raft transport and persisted region state.
pub mod raft_serverpb {
    tonic::include_proto!("raft_serverpb");
}

/// Commands proposed through Raft.
pub mod raft_cmdpb {
    tonic::include_proto!("raft_cmdpb");
}

pub use prost::Message;

mod region;
mod region_error;
pub use region::RegionExt;
pub use region_error::HasRegionError;
pub mod system;
