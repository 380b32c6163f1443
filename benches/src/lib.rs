//! Shoal's benchmarks.
//!
//! - `benches/log_engine.rs` (criterion): log-engine appends with 1, 64 and 1024
//!   regions per synced batch.
//! - `benches/router.rs` (criterion): the batch system's message throughput and the
//!   store ticker's cost.
//! - The load generator behind `shoal bench` will live in this crate's library.
