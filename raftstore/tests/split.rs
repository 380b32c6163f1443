//! Region split on a 3-store cluster: under concurrent writes, with a follower down,
//! across restarts, and refused for bad keys. After each: the regions cover the key
//! space on every store, every acknowledged write is readable, and replicas agree.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{test_config, Cluster};
use shoal_raftstore::{CmdError, TickMode};

const T: Duration = Duration::from_secs(20);

fn key(i: u32) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

#[test]
fn split_under_concurrent_writes_loses_nothing_and_misroutes_nothing() {
    let c = Cluster::start(3, 1, TickMode::Manual);
    c.wait_leader(1, T);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            // Bounded: 300 writes spread over the key range being split.
            for i in 0..300u32 {
                let k = key((i * 7) % 300);
                c.put(&k, format!("v{i}").as_bytes(), T).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        c.split(&key(100), T).unwrap();
        c.split(&key(200), T).unwrap();
        writer.join().unwrap();
    });
    assert!(done.load(Ordering::SeqCst));
    let regions = c.wait_cover(3, T);
    assert_eq!(regions[1].start_key, key(100));
    assert_eq!(regions[2].start_key, key(200));
    // Each split bumps the version of the regions it touched: region 1 was split
    // once, the middle region was split off and then split again.
    let versions: Vec<u64> = regions
        .iter()
        .map(|r| r.region_epoch.unwrap().version)
        .collect();
    assert_eq!(versions, vec![2, 3, 3]);
    c.check_acked();
    c.check_replicas_agree(T);
    // Every key lives only in its region's range on every store.
    for id in c.store_ids() {
        for r in c.regions_of(id) {
            let sum = c.rt.block_on(c.store(id).checksum(r.id)).unwrap();
            assert!(sum.keys > 0, "region {} on store {id} is empty", r.id);
        }
    }
}

#[test]
fn bad_split_keys_are_refused_with_a_clear_error() {
    let c = Cluster::start(3, 2, TickMode::Manual);
    let r2 = c.regions[1].clone();
    c.wait_leader(r2.id, T);
    let cases = [(r2.start_key.clone(), "start key"), (vec![], "empty key")];
    for (k, why) in cases {
        let leader = c.wait_leader(r2.id, T);
        let err =
            c.rt.block_on(c.store(leader).split(r2.id, r2.region_epoch, vec![k]))
                .unwrap_err();
        assert!(matches!(err, CmdError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains(why), "{err}");
    }
    // A key of region 1 sent to region 2: outside its range.
    let leader = c.wait_leader(r2.id, T);
    let err =
        c.rt.block_on(
            c.store(leader)
                .split(r2.id, r2.region_epoch, vec![b"\x00\x01".to_vec()]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
    c.wait_cover(2, T);
}

#[test]
fn a_follower_down_during_a_split_learns_it_when_it_returns() {
    let mut c = Cluster::start(3, 1, TickMode::Timer);
    let leader = c.wait_leader(1, T);
    let down = c.store_ids().into_iter().find(|&id| id != leader).unwrap();
    for i in 0..20u32 {
        c.put(&key(i * 10), b"before", T).unwrap();
    }
    c.stop_store(down);
    let regions = c.split(&key(100), T).unwrap();
    assert_eq!(regions.len(), 2);
    // The new region elects a leader with two of three stores and takes writes.
    c.wait_leader(regions[1].id, T);
    for i in 0..20u32 {
        c.put(&key(i * 10 + 5), b"after", T).unwrap();
    }
    c.start_store(down);
    c.wait_cover(2, T);
    c.wait_local(down, &key(195), b"after", T);
    c.check_acked();
    c.check_replicas_agree(T);
}

#[test]
fn split_regions_survive_a_restart_of_every_store() {
    let mut c = Cluster::start(3, 1, TickMode::Manual);
    c.wait_leader(1, T);
    c.put(&key(1), b"left", T).unwrap();
    c.put(&key(150), b"right", T).unwrap();
    let regions = c.split(&key(100), T).unwrap();
    c.wait_cover(2, T);
    for id in c.store_ids() {
        c.stop_store(id);
    }
    for id in 1..=3 {
        c.start_store(id);
    }
    let after = c.wait_cover(2, T);
    assert_eq!(
        after.iter().map(|r| r.id).collect::<Vec<_>>(),
        regions.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    c.wait_leader(regions[1].id, T);
    c.put(&key(160), b"new", T).unwrap();
    c.check_acked();
    c.check_replicas_agree(T);
    // A second split after the restart gets fresh ids from the persisted allocator.
    let again = c.split(&key(180), T).unwrap();
    let new_id = again.last().unwrap().id;
    assert!(regions.iter().all(|r| r.id != new_id));
    c.wait_cover(3, T);
}

#[test]
fn a_region_over_its_key_limit_splits_by_itself() {
    let cfg = shoal_raftstore::Config {
        region_max_keys: 40,
        split_check_interval: Duration::from_millis(100),
        ..test_config()
    };
    let c = Cluster::start_with(3, 1, TickMode::Timer, cfg);
    c.wait_leader(1, T);
    // 100 keys: the check splits the region near its middle key, then again while
    // a half still holds more than 40.
    for i in 0..100u32 {
        c.put(&key(i), b"v", T).unwrap();
    }
    // Splits continue until no region holds more than the limit.
    let deadline = std::time::Instant::now() + T;
    loop {
        let id = c.store_ids()[0];
        let regions = c.regions_of(id);
        let over: Vec<(u64, u64)> = regions
            .iter()
            .map(|r| {
                (
                    r.id,
                    c.rt.block_on(c.store(id).checksum(r.id)).unwrap().keys,
                )
            })
            .filter(|(_, keys)| *keys > 40)
            .collect();
        if regions.len() >= 3 && over.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "regions over the key limit: {over:?} of {regions:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let regions = c.regions_of(c.store_ids()[0]);
    c.wait_cover(regions.len(), T);
    c.check_acked();
    c.check_replicas_agree(T);
}

#[test]
fn split_requests_over_the_key_limits_or_unsorted_are_refused_before_raft() {
    let c = Cluster::start(3, 1, TickMode::Manual);
    let leader = c.wait_leader(1, T);
    let r = c.region_for(b"a");
    let too_many: Vec<Vec<u8>> = (0..1001u32).map(key).collect();
    let too_long = vec![vec![b'k'; 4097]];
    let descending = vec![key(20), key(10)];
    let repeated = vec![key(10), key(10)];
    let cases = [
        (too_many, "over the limit of 1000"),
        (too_long, "4096-byte"),
        (descending, "ascending"),
        (repeated, "ascending"),
    ];
    for (keys, why) in cases {
        let err =
            c.rt.block_on(c.store(leader).split(r.id, r.region_epoch, keys))
                .unwrap_err();
        assert!(matches!(err, CmdError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
    // Nothing was split.
    c.wait_cover(1, T);
    assert_eq!(c.store(leader).counters().proposals, 0);
}
