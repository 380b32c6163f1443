//! What Shoal's metrics cost on the hot path (issue 16 asks it per operation).
//!
//! - `metrics/counter_inc`, `metrics/histogram_observe`, `metrics/message_type_inc`:
//!   one update of a store metric, as the poll round, the log writer and apply make.
//! - `metrics/instant_now`: the clock read each timed stage takes.
//! - `metrics/request_timed`: a Kv request timed by `RequestMetrics::time` around a
//!   future that is ready at once (two clock reads, a guard, one observe).
//! - `metrics/span_enter_exit`: entering and leaving a peer's span under the node's
//!   log subscriber (`info` filter, as `shoal node` runs by default), as the poller
//!   does for each peer it handles in a round.
//!
//! BENCHMARKS.md ("What the metrics cost") multiplies these by the updates one
//! replicated put makes. Run: `cargo bench -p shoal-bench --bench metrics`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use raft::eraftpb::MessageType;
use shoal_proto::kvrpcpb::GetResponse;
use shoal_raftstore::StoreMetrics;
use shoal_server::request_metrics::{Method, RequestMetrics};

fn bench(c: &mut Criterion) {
    let m = StoreMetrics::new(1);
    let mut g = c.benchmark_group("metrics");
    g.bench_function("counter_inc", |b| b.iter(|| m.proposals.inc()));
    g.bench_function("histogram_observe", |b| {
        let mut x = 0.0001f64;
        b.iter(|| {
            x = if x > 1.0 { 0.0001 } else { x * 1.7 };
            m.log_write_seconds.observe(black_box(x))
        })
    });
    g.bench_function("message_type_inc", |b| {
        b.iter(|| m.raft_messages_sent.inc(black_box(MessageType::MsgAppend)))
    });
    g.bench_function("instant_now", |b| b.iter(Instant::now));
    let requests = RequestMetrics::new(m.registry()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    g.bench_function("request_timed", |b| {
        b.iter(|| rt.block_on(requests.time(Method::Get, async { Ok(GetResponse::default()) })))
    });
    g.bench_function("request_untimed", |b| {
        b.iter(|| rt.block_on(async { Ok::<_, tonic::Status>(GetResponse::default()) }))
    });
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,raft=warn"))
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::span!(
            parent: None,
            tracing::Level::ERROR,
            "peer",
            region = 1u64,
            peer = 2u64
        );
        g.bench_function("span_enter_exit", |b| {
            b.iter(|| {
                let _e = span.enter();
                black_box(());
            })
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
