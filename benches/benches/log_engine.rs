//! Log engine appends: one synced batch with 1, 64 or 1024 regions, one 256-byte
//! entry per region, as a poll round that touched that many regions would write.
//! Prints entries/s (criterion's throughput) and the entries each fsync carried.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_engine::rocks::RocksLogEngine;
use shoal_engine::{LogBatch, LogEngine, LogEntry};
use shoal_proto::raft_serverpb::{HardState, RaftLocalState};

const ENTRY_BYTES: usize = 256;

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_engine_append");
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(8));
    for regions in [1u64, 64, 1024] {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = RocksLogEngine::open(dir.path()).expect("open");
        let mut next_index = vec![1u64; regions as usize + 1];
        let payload = vec![7u8; ENTRY_BYTES];
        group.throughput(Throughput::Elements(regions));
        group.bench_with_input(
            BenchmarkId::new("regions_per_batch", regions),
            &regions,
            |b, &n| {
                b.iter(|| {
                    let mut batch = LogBatch::new();
                    for region in 1..=n {
                        let index = next_index[region as usize];
                        next_index[region as usize] += 1;
                        let entry = LogEntry {
                            index,
                            term: 1,
                            data: payload.clone(),
                        };
                        let state = RaftLocalState {
                            hard_state: Some(HardState {
                                term: 1,
                                vote: 1,
                                commit: index,
                            }),
                            last_index: index,
                        };
                        batch.add(region, vec![entry], Some(state));
                    }
                    log.write(&batch).expect("write");
                })
            },
        );
        let s = log.stats();
        println!(
            "log_engine_append/{regions}: {} fsyncs, {:.1} entries per fsync, {:.1} regions per fsync",
            s.syncs,
            s.entries_written as f64 / s.syncs.max(1) as f64,
            s.regions_written as f64 / s.syncs.max(1) as f64,
        );
    }
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
