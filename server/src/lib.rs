//! Shoal's node: the gRPC services (Kv, Admin, Raft transport), the node's
//! configuration and start-up, and the `shoal` command-line binary
//! (`src/bin/shoal.rs`).
//!
//! Today the node opens its data directory (both engines) and stops: the services
//! and raftstore land with issue 4.
