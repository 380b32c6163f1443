//! Region merge on a 3-store cluster, with faults in the middle: concurrent writes,
//! a follower partitioned during the prepare, a target that changes before the
//! commit (rollback), and every store restarted between prepare and commit. After
//! each: the regions cover the key space on every store, every acknowledged write
//! is readable, and replicas agree.

mod common;

use std::time::Duration;

use common::{Cluster, DropRegion, Isolate};
use shoal_raftstore::{CmdError, TickMode};

const T: Duration = Duration::from_secs(30);

/// A key in the first half of the key space (region 1 of 2) or the second.
fn key(high: bool, i: u32) -> Vec<u8> {
    let mut k = vec![if high { 0xa0 } else { 0x10 }];
    k.extend_from_slice(format!("{i:04}").as_bytes());
    k
}

#[test]
fn merge_under_concurrent_writes_loses_nothing() {
    let c = Cluster::start(3, 2, TickMode::Manual);
    let (r1, r2) = (c.regions[0].id, c.regions[1].id);
    c.wait_leader(r1, T);
    c.wait_leader(r2, T);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..200u32 {
                c.put(&key(i % 2 == 0, i), format!("v{i}").as_bytes(), T)
                    .unwrap();
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let merged = c.merge(r2, r1, T).unwrap();
        assert_eq!(merged.id, r1);
        assert!(merged.start_key.is_empty() && merged.end_key.is_empty());
        writer.join().unwrap();
    });
    let regions = c.wait_cover(1, T);
    assert_eq!(regions[0].id, r1);
    c.check_acked();
    c.check_replicas_agree(T);
}

#[test]
fn split_then_merge_back_repeatedly() {
    let c = Cluster::start(3, 1, TickMode::Manual);
    c.wait_leader(1, T);
    for round in 0..3u32 {
        c.put(&key(false, round), b"left", T).unwrap();
        c.put(&key(true, round), b"right", T).unwrap();
        let regions = c.split(&[0x80], T).unwrap();
        c.wait_cover(2, T);
        let new = regions.iter().find(|r| r.id != 1).unwrap().id;
        c.wait_leader(new, T);
        c.put(&key(true, 100 + round), b"split", T).unwrap();
        c.merge(new, 1, T).unwrap();
        c.wait_cover(1, T);
        c.put(&key(true, 200 + round), b"merged", T).unwrap();
    }
    c.check_acked();
    c.check_replicas_agree(T);
}

#[test]
fn a_follower_partitioned_during_prepare_converges_after_heal() {
    let c = Cluster::start(3, 2, TickMode::Timer);
    let (r1, r2) = (c.regions[0].id, c.regions[1].id);
    let leader = c.wait_leader(r2, T);
    c.wait_leader(r1, T);
    let follower = c.store_ids().into_iter().find(|&id| id != leader).unwrap();
    // The follower has the source's peer up and acknowledging before it is cut
    // off (a prepare waits, retryably, for every replica to have acknowledged).
    c.put(&key(true, 999), b"seen", T).unwrap();
    for id in c.store_ids() {
        c.wait_local(id, &key(true, 999), b"seen", T);
    }
    c.add_filter(Isolate(follower));
    // Writes the isolated follower misses: they reach it only through the commit.
    for i in 0..30u32 {
        c.put(&key(true, i), b"missed", T).unwrap();
    }
    c.merge(r2, r1, T).unwrap();
    c.put(&key(true, 500), b"after", T).unwrap();
    c.clear_filters();
    c.wait_cover(1, T);
    c.wait_local(follower, &key(true, 500), b"after", T);
    c.wait_local(follower, &key(true, 0), b"missed", T);
    c.check_acked();
    c.check_replicas_agree(T);
}

#[test]
fn a_prepare_against_a_target_that_changed_rolls_back() {
    let c = Cluster::start(3, 2, TickMode::Manual);
    let (r1, r2) = (c.regions[0].id, c.regions[1].id);
    c.wait_leader(r1, T);
    let source_leader = c.wait_leader(r2, T);
    let stale_target = c.regions_of(source_leader)[0].clone();
    let source = c.regions_of(source_leader)[1].clone();
    // The target splits after the proposer looked at it.
    c.split(&[0x40], T).unwrap();
    c.wait_cover(3, T);
    let prepared = c
        .prepare_merge(source_leader, &source, &stale_target, T)
        .unwrap();
    let v = source.region_epoch.unwrap().version;
    assert_eq!(prepared.region_epoch.unwrap().version, v + 1);
    // The commit can never apply: the source rolls back and takes writes again.
    let deadline = std::time::Instant::now() + T;
    loop {
        let now = c
            .regions_of(source_leader)
            .into_iter()
            .find(|r| r.id == r2)
            .unwrap();
        if now.region_epoch.unwrap().version == v + 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no rollback: {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.put(&key(true, 1), b"after rollback", T).unwrap();
    c.wait_cover(3, T);
    c.check_acked();
    c.check_replicas_agree(T);
}

#[test]
fn every_store_restarted_between_prepare_and_commit() {
    let mut c = Cluster::start(3, 2, TickMode::Timer);
    let (r1, r2) = (c.regions[0].id, c.regions[1].id);
    c.wait_leader(r1, T);
    let source_leader = c.wait_leader(r2, T);
    for i in 0..20u32 {
        c.put(&key(i % 2 == 0, i), b"before", T).unwrap();
    }
    let source = c.regions_of(source_leader)[1].clone();
    let target = c.regions_of(source_leader)[0].clone();
    // The target hears nothing: the commit cannot get through.
    c.add_filter(DropRegion(r1));
    c.prepare_merge(source_leader, &source, &target, T).unwrap();
    for id in c.store_ids() {
        c.stop_store(id);
    }
    c.clear_filters();
    for id in 1..=3 {
        c.start_store(id);
    }
    // The frozen source comes back frozen; its new leader drives the commit.
    c.wait_cover(1, T);
    c.check_acked();
    c.check_replicas_agree(T);
}

#[test]
fn bad_merges_are_refused_with_a_clear_error() {
    let c = Cluster::start(3, 3, TickMode::Timer);
    let ids: Vec<u64> = c.regions.iter().map(|r| r.id).collect();
    for &id in &ids {
        c.wait_leader(id, T);
    }
    let err = c.merge(ids[0], ids[2], T).unwrap_err();
    assert!(matches!(err, CmdError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("not adjacent"), "{err}");
    let err = c.merge(ids[1], ids[1], T).unwrap_err();
    assert!(err.to_string().contains("itself"), "{err}");

    // Region 3 frozen by a prepare whose commit cannot reach region 2 yet: a merge
    // into region 3 is refused while it is in progress.
    let leader = c.wait_leader(ids[2], T);
    let regions = c.regions_of(leader);
    let (target, source) = (regions[1].clone(), regions[2].clone());
    c.add_filter(DropRegion(ids[1]));
    c.prepare_merge(leader, &source, &target, T).unwrap();
    let frozen = source.region_epoch.unwrap().version + 1;
    let deadline = std::time::Instant::now() + T;
    while !c.store_ids().iter().all(|&id| {
        c.regions_of(id)
            .iter()
            .any(|r| r.id == ids[2] && r.region_epoch.unwrap().version == frozen)
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "prepare not applied everywhere"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = c.merge(ids[1], ids[2], T).unwrap_err();
    assert!(err.to_string().contains("merge in progress"), "{err}");
    // Once region 2 hears again, the prepared merge completes.
    c.clear_filters();
    c.wait_cover(2, T);
    c.check_replicas_agree(T);
}

/// A prepare that reaches the source's leader in the same round as writes (their
/// entries still in raft-rs's unstable log, not yet in the peer's storage) reads
/// them to carry them. It used to read the storage up to raft-rs's last index and
/// fail with a storage error ("log unavailable"); the chaos suite found it (seed 2,
/// 5 nodes). Writes of 20 KB against a 64 KiB entry limit make every such prepare
/// too big to carry (retryable `ServerIsBusy`), so the race can be tried many
/// times; then a prepare with nothing in flight goes through.
#[test]
fn a_prepare_right_behind_writes_is_not_refused() {
    use shoal_proto::raft_cmdpb::{request, PutOp, RaftCmdRequest, Request};
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let cfg = shoal_raftstore::Config {
        raft_entry_max_size: 64 << 10,
        raft_max_size_per_msg: 16 << 10,
        ..common::test_config()
    };
    let c = Cluster::start_with(3, 2, TickMode::Manual, cfg);
    let (r1, r2) = (c.regions[0].id, c.regions[1].id);
    c.wait_leader(r1, T);
    let leader = c.wait_leader(r2, T);
    let regions = c.regions_of(leader);
    let target = regions.iter().find(|r| r.id == r1).unwrap().clone();
    let source = regions.iter().find(|r| r.id == r2).unwrap().clone();
    let store = c.store(leader);
    let put = |i: u32| RaftCmdRequest {
        header: Some(c.header(&source)),
        requests: vec![Request {
            cmd: Some(request::Cmd::Put(PutOp {
                key: key(true, i),
                value: vec![7; 20_000],
            })),
        }],
        admin: None,
    };
    for attempt in 0..30 {
        // Each future's first poll sends its command to the mailbox; polled back to
        // back with no await between, the writes and the prepare reach the poller
        // in one batch.
        let outcome = c.rt.block_on(async {
            let mut cx = Context::from_waker(Waker::noop());
            let mut writes: Vec<_> = (0..4).map(|i| Box::pin(store.write(put(i)))).collect();
            let mut prepare = Box::pin(store.prepare_merge(&source, target.clone()));
            let mut done = Vec::new();
            for w in &mut writes {
                done.push(matches!(w.as_mut().poll(&mut cx), Poll::Ready(_)));
            }
            let prepared = match prepare.as_mut().poll(&mut cx) {
                Poll::Ready(r) => r,
                Poll::Pending => prepare.await,
            };
            for (w, done) in writes.into_iter().zip(done) {
                if !done {
                    let _ = w.await;
                }
            }
            prepared
        });
        match outcome {
            Err(CmdError::Region(_)) => {} // busy: too much to carry, or a lagging replica
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    let frozen = c.prepare_merge(leader, &source, &target, T).unwrap();
    assert_eq!(frozen.id, r2);
    let merged = c.wait_cover(1, T);
    assert_eq!(merged[0].id, r1);
    c.check_replicas_agree(T);
}

#[test]
fn a_merged_source_log_a_crash_left_behind_is_removed_at_restart() {
    use shoal_engine::{LogBatch, LogEngine, LogEntry};
    use shoal_proto::raft_serverpb::RaftLocalState;

    let mut c = Cluster::start(3, 2, TickMode::Manual);
    let (r1, r2) = (c.regions[0].id, c.regions[1].id);
    c.wait_leader(r1, T);
    c.wait_leader(r2, T);
    c.put(&key(true, 1), b"v", T).unwrap();
    c.merge(r2, r1, T).unwrap();
    c.wait_cover(1, T);
    // Store 1 crashed between the synced tombstone of the source and the removal
    // of its log: the log is back.
    c.stop_store(1);
    {
        let engines = shoal_engine::rocks::Engines::open(c.dirs[&1].path()).unwrap();
        let mut batch = LogBatch::new();
        let entry = LogEntry {
            index: 6,
            term: 6,
            data: Vec::new(),
        };
        let state = RaftLocalState {
            last_index: 6,
            ..Default::default()
        };
        batch.add(r2, vec![entry], Some(state));
        engines.log.write(&batch).unwrap();
    }
    c.start_store(1);
    let deadline = std::time::Instant::now() + T;
    while c.engines[&1].log.raft_state(r2).unwrap().is_some()
        || c.engines[&1].log.last_index(r2).unwrap().is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the merged-away source's log is still there"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c.wait_leader(r1, T);
    c.check_acked();
}
