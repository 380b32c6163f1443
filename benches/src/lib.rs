//! Shoal's load generator and benchmarks.
//!
//! - `shoal bench` ([`runner::run`]): a closed-loop load generator with `--clients`
//!   requests in flight, against Shoal (through `shoal-client`) or etcd (through
//!   etcd's v3 gRPC KV API), so that both are measured by the same code.
//! - `shoal bench-compare` ([`compare`]): starts a 3-member etcd cluster and a 3-node
//!   Shoal cluster on 127.0.0.1, runs the same workload against each and prints them
//!   side by side (what `make bench-compare` runs).
//! - `benches/log_engine.rs` and `benches/router.rs` (criterion): the log engine's
//!   batched appends and the batch system's message throughput.
//!
//! Modules: [`args`] (options), [`workload`] (keys, values, operation streams),
//! [`ycsb`] (YCSB's core workloads A-F: parameters, inserts, operation choice),
//! [`zipfian`] (YCSB's zipfian, scrambled zipfian and latest key choosers),
//! [`ycsb_report`] (YCSB's per-operation summary lines),
//! [`target`] (the two systems), [`stats`] (latency histograms, errors),
//! [`counters`] (node counters and /proc CPU time), [`proc_cost`] (CPU per thread
//! and context switches of the servers and of the generator itself, per request),
//! [`wire`] (the generator's TCP bytes and segments per request), [`report`] (output).

pub mod args;
pub mod compare;
pub mod counters;
pub mod proc_cost;
pub mod report;
pub mod runner;
pub mod stats;
pub mod target;
pub mod wire;
pub mod workload;
pub mod ycsb;
pub mod ycsb_report;
pub mod zipfian;

/// The etcd v3 KV client generated from `proto/etcd_kv.proto`.
#[allow(missing_docs, clippy::all)]
pub mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}

pub use args::BenchArgs;
pub use report::Report;
