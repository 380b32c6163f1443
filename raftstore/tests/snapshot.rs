//! Raft snapshots on a 3-store cluster: a replica that fell behind a truncated log
//! catches up from a snapshot (its data replaced, its log restarted after it), a
//! replica that missed a split gets the new region's peer from that region's
//! snapshot, a snapshot whose files reach past its region is refused, and the
//! counters show each step.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{gc_config, key, Cluster, Isolate, Tamper};
use protobuf::Message as _;
use shoal_engine::keys::data_key;
use shoal_engine::{Cf, Fnv64, KvEngine, LogEngine};
use shoal_proto::raft_serverpb::{SnapshotData, SnapshotFile};
use shoal_proto::Message as _;
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

/// The value of store `id`'s counter `name` (0 when it has none).
fn counter(c: &Cluster, id: u64, name: &str) -> f64 {
    let families = c.store(id).metrics().registry().gather();
    families
        .iter()
        .find(|f| f.name() == name)
        .and_then(|f| f.get_metric().first())
        .map_or(0.0, |m| m.get_counter().get_value())
}

#[test]
fn a_snapshot_whose_file_reaches_past_its_region_is_refused_and_changes_nothing_outside() {
    let c = Cluster::start_with(3, 2, TickMode::Manual, snap_config());
    let (low, high) = (c.regions[0].clone(), c.regions[1].clone());
    // A key of the other region (the one holding the cluster directory's
    // records in a node), on every store.
    let mut victim = high.start_key.clone();
    victim.extend_from_slice(b"victim");
    c.put(&victim, b"original", T).unwrap();
    let leader = c.wait_leader(low.id, T);
    let behind = c.store_ids().into_iter().find(|&id| id != leader).unwrap();
    c.wait_local(behind, &victim, b"original", T);
    c.add_filter(Isolate(behind));
    for i in 0..300u32 {
        c.put(&key(i), b"v", T).unwrap();
    }
    wait_first_index_past(&c, leader, low.id, 200);

    // The leader's snapshot of `low` reaches `behind` with one more file: an SST
    // (sizes and checksums right) overwriting the victim key.
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil.sst");
    let mut pairs = std::iter::once((data_key(&victim), b"overwritten".to_vec()));
    c.engines[&leader]
        .kv
        .write_sst(Cf::Default, &evil, &mut pairs)
        .unwrap();
    let evil = std::fs::read(&evil).unwrap();
    let low_id = low.id;
    let tamper: Tamper = Arc::new(move |msg, files| {
        if msg.region_id != low_id {
            return;
        }
        let mut m = raft::eraftpb::Message::parse_from_bytes(&msg.message).unwrap();
        let mut data = SnapshotData::decode(m.get_snapshot().get_data()).unwrap();
        let mut h = Fnv64::default();
        h.write(&evil);
        data.files.push(SnapshotFile {
            size: evil.len() as u64,
            checksum: h.0,
            keys: 1,
        });
        m.mut_snapshot().set_data(data.encode_to_vec().into());
        msg.message = m.write_to_bytes().unwrap();
        files.push(evil.clone());
    });
    *c.net.snapshot_tamper.write().unwrap() = Some(tamper);
    c.clear_filters();
    c.tick_until("a tampered snapshot to be delivered", || {
        !c.net.snapshot_outcomes.lock().unwrap().is_empty()
    });
    let first = c.net.snapshot_outcomes.lock().unwrap()[0].clone();
    if first.is_ok() {
        // Taken: once applied, it shows what it overwrote.
        wait_snapshot_applied(&c, behind);
    }
    assert_eq!(
        c.local_value(behind, &victim),
        Some(b"original".to_vec()),
        "a key outside the snapshot's region changed (delivery: {first:?})"
    );
    let refused = first.unwrap_err();
    assert!(refused.contains("outside its range"), "{refused}");
    assert!(
        counter(&c, behind, "shoal_snapshots_out_of_region_total") >= 1.0,
        "the refusal is counted"
    );
    assert_eq!(c.store(behind).metrics().snapshots_applied.get(), 0);
    // Its files went with it (received snapshots are kept only once whole and
    // checked).
    let snap_dir = c.dirs[&behind].path().join("snap");
    let received = || -> Vec<String> {
        std::fs::read_dir(&snap_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("recv_"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // A resend the leader started before the ticks stopped may still be coming
    // in (a `.tmp` folder): it is tampered too, so it ends refused and removed.
    let deadline = std::time::Instant::now() + T;
    while received().iter().any(|n| n.ends_with(".tmp")) {
        assert!(
            std::time::Instant::now() < deadline,
            "a receive never ended: {:?}",
            received()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = received();
    assert!(
        left.iter().all(|n| !n.starts_with("recv_")),
        "refused snapshot files left: {left:?}"
    );

    // An honest sender again: the snapshot goes through and every replica
    // agrees, the victim included.
    *c.net.snapshot_tamper.write().unwrap() = None;
    wait_snapshot_applied(&c, behind);
    c.wait_local(behind, &key(299), b"v", T);
    assert_eq!(c.local_value(behind, &victim), Some(b"original".to_vec()));
    c.check_acked();
    c.check_replicas_agree(T);
}
