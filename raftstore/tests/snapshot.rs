//! Raft snapshots on a 3-store cluster: a replica that fell behind a truncated log
//! catches up from a snapshot (its data replaced, its log restarted after it), a
//! replica that missed a split gets the new region's peer from that region's
//! snapshot, and the counters show each step.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{gc_config, key, Cluster, Isolate};
use shoal_engine::LogEngine;
use shoal_raftstore::{Config, TickMode};

const T: Duration = Duration::from_secs(30);

/// GC every 5 ticks; past 100 entries the log is truncated whatever a replica
/// still needs.
fn snap_config() -> Config {
    Config {
        raft_log_gc_count_limit: 100,
        ..gc_config()
    }
}

/// Ticks until `region`'s log on store `id` starts past `index`.
fn wait_first_index_past(c: &Cluster, id: u64, region: u64, index: u64) {
    c.tick_until(
        &format!("store {id} to truncate region {region} past {index}"),
        || c.first_index(id, region) > index,
    );
}

/// Ticks until store `id` applied a snapshot.
fn wait_snapshot_applied(c: &Cluster, id: u64) {
    c.tick_until("the snapshot to be applied", || {
        c.store(id).metrics().snapshots_applied.get() >= 1
    });
}

#[test]
fn a_stopped_follower_catches_up_through_a_snapshot() {
    let mut c = Cluster::start_with(3, 1, TickMode::Manual, snap_config());
    let region = c.regions[0].id;
    let leader = c.wait_leader(region, T);
    c.put(&key(0), b"seen", T).unwrap();
    let behind = c.store_ids().into_iter().find(|&id| id != leader).unwrap();
    c.wait_local(behind, &key(0), b"seen", T);
    let last_seen = c.engines[&behind].log.last_index(region).unwrap().unwrap();
    c.stop_store(behind);
    // 20,000 writes while it is down (the log is truncated every 100 or so).
    for i in 1..20_000u32 {
        c.put(&key(i), format!("v{i}").as_bytes(), T).unwrap();
    }
    c.put(&key(7), b"again", T).unwrap();
    // Past the count limit: the leader truncates what the stopped store lacks.
    wait_first_index_past(&c, leader, region, last_seen + 1);
    c.start_store(behind);
    c.wait_local(behind, &key(19_999), b"v19999", T);
    wait_snapshot_applied(&c, behind);
    let m = c.store(leader).metrics().counters();
    assert!(m.snapshots_generated >= 1 && m.snapshots_sent >= 1, "{m:?}");
    let m = c.store(behind).metrics().counters();
    assert!(m.snapshots_received >= 1, "{m:?}");
    assert_eq!(
        c.local_value(behind, &key(7)),
        Some(b"again".to_vec()),
        "the overwrite is in the snapshot"
    );
    // It keeps replicating from the log after it, and its log restarted after
    // the snapshot: nothing it had before came back.
    c.put(&key(1000), b"after", T).unwrap();
    c.wait_local(behind, &key(1000), b"after", T);
    let first = c.first_index(behind, region);
    assert!(
        first > last_seen + 1,
        "store {behind}'s log starts at {first}, the snapshot came past {last_seen}"
    );
    c.check_acked();
    c.check_replicas_agree(T);
}

#[test]
fn a_follower_restarted_after_a_snapshot_keeps_it() {
    let mut c = Cluster::start_with(3, 1, TickMode::Manual, snap_config());
    let region = c.regions[0].id;
    let leader = c.wait_leader(region, T);
    let behind = c.store_ids().into_iter().find(|&id| id != leader).unwrap();
    c.add_filter(Isolate(behind));
    for i in 0..300u32 {
        c.put(&key(i), b"v", T).unwrap();
    }
    wait_first_index_past(&c, leader, region, 200);
    c.clear_filters();
    wait_snapshot_applied(&c, behind);
    c.stop_store(behind);
    c.start_store(behind);
    c.put(&key(1000), b"after", T).unwrap();
    c.wait_local(behind, &key(1000), b"after", T);
    assert_eq!(c.local_value(behind, &key(299)), Some(b"v".to_vec()));
    c.check_acked();
    c.check_replicas_agree(T);
}

#[test]
fn a_follower_that_missed_a_split_gets_the_new_region_from_its_snapshot() {
    let c = Cluster::start_with(3, 1, TickMode::Manual, snap_config());
    let parent = c.regions[0].id;
    let leader = c.wait_leader(parent, T);
    let behind = c.store_ids().into_iter().find(|&id| id != leader).unwrap();
    c.add_filter(Isolate(behind));
    let regions = c.split(b"k00200", T).unwrap();
    assert_eq!(regions.len(), 2);
    for i in 0..400u32 {
        c.put(&key(i), b"v", T).unwrap();
    }
    // Both regions truncate past the split and past what the store lacks.
    for r in &regions {
        let l = c.wait_leader(r.id, T);
        wait_first_index_past(&c, l, r.id, 50);
    }
    c.clear_filters();
    // The store never applied the split: its parent shrinks with the parent's
    // snapshot and the new region's peer comes with that region's snapshot.
    c.tick_until("the store to hold both regions", || {
        c.regions_of(behind).len() == 2
    });
    c.wait_local(behind, &key(399), b"v", T);
    c.wait_local(behind, &key(0), b"v", T);
    c.check_acked();
    c.check_replicas_agree(T);
}

#[test]
fn a_replica_that_missed_a_merge_drops_its_stale_source_for_the_targets_snapshot() {
    let c = Cluster::start_with(3, 2, TickMode::Manual, snap_config());
    let (low, high) = (c.regions[0].id, c.regions[1].id);
    let leaders = [c.wait_leader(low, T), c.wait_leader(high, T)];
    let in_high = |i: u32| {
        let mut k = c.regions[1].start_key.clone();
        k.extend_from_slice(&key(i));
        k
    };
    c.put(&key(0), b"low", T).unwrap();
    c.put(&in_high(0), b"high", T).unwrap();
    // A store that leads neither region: cutting it off moves no leader.
    let behind = c
        .store_ids()
        .into_iter()
        .find(|id| !leaders.contains(id))
        .unwrap();
    c.wait_local(behind, &in_high(0), b"high", T);
    c.add_filter(Isolate(behind));
    c.merge(high, low, T).unwrap();
    for i in 1..300u32 {
        c.put(&in_high(i), b"merged", T).unwrap();
    }
    let l = c.wait_leader(low, T);
    wait_first_index_past(&c, l, low, 100);
    assert_eq!(
        c.regions_of(behind).len(),
        2,
        "the isolated store missed the merge"
    );
    c.clear_filters();
    // The target's snapshot spans the source the store still has, at a newer
    // epoch: the source goes and the snapshot is taken.
    c.tick_until("the store to hold one region", || {
        c.regions_of(behind).len() == 1
    });
    c.wait_local(behind, &in_high(299), b"merged", T);
    c.put(&in_high(1000), b"after", T).unwrap();
    c.wait_local(behind, &in_high(1000), b"after", T);
    c.check_acked();
    c.check_replicas_agree(T);
}

#[test]
fn a_leader_that_stops_in_the_middle_of_a_send_is_replaced_and_the_follower_still_catches_up() {
    let mut c = Cluster::start_with(3, 1, TickMode::Manual, snap_config());
    let region = c.regions[0].id;
    let leader = c.wait_leader(region, T);
    let behind = c.store_ids().into_iter().find(|&id| id != leader).unwrap();
    c.stop_store(behind);
    for i in 0..300u32 {
        c.put(&key(i), b"v", T).unwrap();
    }
    wait_first_index_past(&c, leader, region, 200);
    // Every snapshot now takes a second to arrive; the leader stops meanwhile.
    *c.net.snapshot_delay.write().unwrap() = Some(Duration::from_secs(1));
    c.start_store(behind);
    c.tick_until("a snapshot send to begin", || {
        c.net.snapshots_sent.load(Ordering::SeqCst) >= 1
    });
    c.stop_store(leader);
    // The third store leads now (the stopped follower's log is too old to win)
    // and sends its own snapshot; the old one, arriving late from a stopped
    // leader's term, changes nothing.
    let new = c.wait_leader(region, T);
    assert_ne!(new, leader);
    c.put(&key(1000), b"after", T).unwrap();
    c.wait_local(behind, &key(1000), b"after", T);
    c.wait_local(behind, &key(299), b"v", T);
    c.start_store(leader);
    c.check_acked();
    c.check_replicas_agree(T);
}
