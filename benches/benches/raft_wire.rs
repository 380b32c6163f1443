//! What the Raft wire check (`raftstore/src/raft/wire.rs`) costs per message, next
//! to what parsing the same message with rust-protobuf costs (the parse it runs
//! before; the peer parses every message at least once).
//!
//! - `raft_wire/check/heartbeat`, `.../append_64x256B`, `.../snapshot`: the check
//!   of a heartbeat, an append of 64 entries of 256 bytes, a snapshot message
//!   (conf state, metadata, 1 KiB of data);
//! - `raft_wire/parse/...`: `eraftpb::Message::parse_from_bytes` of the same.
//!
//! BENCHMARKS.md ("The Raft wire check") has the figures. Run:
//! `cargo bench -p shoal-bench --bench raft_wire`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};

fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let mut hb = Message::default();
    hb.set_msg_type(MessageType::MsgHeartbeat);
    (hb.to, hb.from, hb.term, hb.commit) = (2, 1, 7, 1000);
    let mut append = Message::default();
    append.set_msg_type(MessageType::MsgAppend);
    (append.to, append.from, append.term) = (2, 1, 7);
    (append.log_term, append.index, append.commit) = (7, 1000, 1000);
    for i in 0..64u64 {
        let mut e = Entry::default();
        (e.term, e.index) = (7, 1001 + i);
        e.set_data(vec![0x5a; 256].into());
        append.mut_entries().push(e);
    }
    let mut snap = Message::default();
    snap.set_msg_type(MessageType::MsgSnapshot);
    (snap.to, snap.from, snap.term) = (2, 1, 7);
    let s = snap.mut_snapshot();
    s.set_data(vec![0x5a; 1024].into());
    (s.mut_metadata().index, s.mut_metadata().term) = (1000, 7);
    s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    [
        ("heartbeat", hb),
        ("append_64x256B", append),
        ("snapshot", snap),
    ]
    .into_iter()
    .map(|(name, m)| (name, m.write_to_bytes().unwrap()))
    .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("raft_wire");
    for (name, bytes) in messages() {
        assert!(shoal_raftstore::wire::check_message(&bytes).is_ok());
        g.bench_function(format!("check/{name}"), |b| {
            b.iter(|| shoal_raftstore::wire::check_message(black_box(&bytes)))
        });
        g.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| Message::parse_from_bytes(black_box(&bytes)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
