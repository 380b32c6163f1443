//! A dormant region serves a write or a read at once, again and again: 20 times
//! the region goes dormant on every replica, then takes a request through its
//! leader (waking) and a second one (awake). Every request must succeed and the
//! region must go dormant again each time (a region with more keys than a split
//! check rescans for a couple of writes once never slept again). The latencies
//! are printed (`-- --nocapture`), the first request's against the second's:
//! what waking costs, quoted in BENCHMARKS.md; no speed is asserted.

mod common;

use std::time::{Duration, Instant};

use common::{key, Cluster};
use shoal_proto::raft_cmdpb::{request, PutOp, RaftCmdRequest, Request};
use shoal_raftstore::{ReadKind, TickMode};

const T: Duration = Duration::from_secs(30);

#[test]
fn a_dormant_region_serves_at_once_and_sleeps_again_each_time() {
    let c = Cluster::start(3, 1, TickMode::Timer);
    let region = c.regions[0].id;
    c.wait_leader(region, T);
    c.put(&key(0), b"v", T).unwrap();
    let dormant = |c: &Cluster| {
        c.store_ids()
            .into_iter()
            .all(|id| c.store(id).metrics().dormant_regions.get() == 1)
    };
    let mut lat: [Vec<Duration>; 4] = Default::default();
    for i in 0..20u32 {
        let deadline = Instant::now() + T;
        while !dormant(&c) {
            assert!(
                Instant::now() < deadline,
                "round {i}: the region never slept"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let store = c.store(c.leader_of(region).unwrap());
        let header = c.header(&c.region_for(&key(i)));
        let put = |k: u32| RaftCmdRequest {
            header: Some(header),
            requests: vec![Request {
                cmd: Some(request::Cmd::Put(PutOp {
                    key: key(k),
                    value: b"x".to_vec(),
                })),
            }],
            admin: None,
        };
        let timed = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            t.elapsed()
        };
        let (first, second) = if i % 2 == 0 {
            let w = |k| {
                c.rt.block_on(store.write(put(k))).unwrap();
            };
            (timed(&mut || w(i)), timed(&mut || w(i + 1000)))
        } else {
            let mut r = || {
                c.rt.block_on(store.read(header, ReadKind::Get(key(0))))
                    .unwrap();
            };
            (timed(&mut r), timed(&mut r))
        };
        let base = if i % 2 == 0 { 0 } else { 2 };
        lat[base].push(first);
        lat[base + 1].push(second);
    }
    let names = ["put, dormant", "put, awake", "get, dormant", "get, awake"];
    for (name, mut v) in names.into_iter().zip(lat) {
        v.sort();
        eprintln!(
            "{name}: median {:?}, max {:?}",
            v[v.len() / 2],
            v[v.len() - 1]
        );
    }
}
