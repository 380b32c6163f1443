//! Every request gets a true answer in bounded time: reads whose read index is lost
//! are refused (retryably) instead of blocking the region's reads, proposals are
//! matched to entries by index and term across leader changes, and requests for
//! another store, oversized commands and overload are refused before Raft.
//! Ticks are driven by hand so leader changes happen exactly where the story says.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, DropFrom, DropType, Isolate};
use raft::eraftpb::MessageType;
use shoal_proto::errorpb::region_error::Kind;
use shoal_proto::metapb::{Peer, Region};
use shoal_proto::raft_cmdpb::{request, PutOp, RaftCmdRequest, RaftRequestHeader, Request};
use shoal_raftstore::{CmdError, RaftStore, ReadKind, TickMode, WriteResult};

const T: Duration = Duration::from_secs(20);

fn put_cmd(region: &Region, key: &[u8], value: &[u8]) -> RaftCmdRequest {
    RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: region.id,
            peer: None,
            region_epoch: region.region_epoch,
        }),
        requests: vec![Request {
            cmd: Some(request::Cmd::Put(PutOp {
                key: key.to_vec(),
                value: value.to_vec(),
            })),
        }],
        admin: None,
    }
}

fn header(region: &Region) -> RaftRequestHeader {
    RaftRequestHeader {
        region_id: region.id,
        peer: None,
        region_epoch: region.region_epoch,
    }
}

fn kind(e: &CmdError) -> Option<&Kind> {
    match e {
        CmdError::Region(r) => r.kind.as_ref(),
        _ => None,
    }
}

/// Whether store `id`'s peer of region 1 leads it, as that store sees it.
fn leads(c: &Cluster, id: u64) -> bool {
    let info = c.rt.block_on(c.store(id).region_info(1)).unwrap();
    info.leader.is_some_and(|l| l.store_id == id)
}

/// Ticks `ids` (only those) until `done`, at most `max` times.
fn tick_until(c: &Cluster, ids: &[u64], max: usize, done: impl Fn() -> bool) -> bool {
    for _ in 0..max {
        if done() {
            return true;
        }
        for &id in ids {
            c.store(id).tick();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

#[test]
fn a_read_whose_index_never_comes_is_refused_in_bounded_time_and_reads_go_on() {
    let c = Cluster::start(3, 1, TickMode::Manual);
    let leader = c.wait_leader(1, T);
    c.put(b"k", b"v", T).unwrap();
    let region = c.region_for(b"k");
    // The leader's heartbeats get no answer, so its read index is never confirmed;
    // appends still flow, so followers stay active and it stays leader.
    c.add_filter(DropType {
        to_store: leader,
        msg_type: MessageType::MsgHeartbeatResponse,
    });
    let store = c.store(leader);
    let read = {
        let (store, h) = (store.clone(), header(&region));
        c.rt.spawn(async move { store.read(h, ReadKind::Get(b"k".to_vec())).await })
    };
    let election = c.cfg.raft_election_ticks;
    let mut answered = None;
    for tick in 0..5 * election {
        c.tick_all();
        // Writes keep committing: appends and their answers are not filtered.
        let cmd = put_cmd(&region, b"w", format!("{tick}").as_bytes());
        let w =
            c.rt.block_on(async { tokio::time::timeout(T, store.write(cmd)).await });
        assert!(matches!(w, Ok(Ok(_))), "write at tick {tick}: {w:?}");
        if read.is_finished() {
            answered = Some(tick);
            break;
        }
    }
    let tick = answered.expect("the read was never answered");
    assert!(
        leads(&c, leader),
        "the leader stepped down: not the case under test"
    );
    let out = c.rt.block_on(read).unwrap();
    match &out {
        Err(e) => assert!(
            matches!(kind(e), Some(Kind::ServerIsBusy(_))),
            "a retryable refusal, got {e:?}"
        ),
        Ok(v) => panic!("a read without a confirmed index was served: {v:?}"),
    }
    assert!(tick <= 3 * election, "answered only after {tick} ticks");
    // Once heartbeats are answered again, reads are served.
    c.clear_filters();
    let h = header(&region);
    let got = c.rt.block_on(async {
        let read = store.read(h, ReadKind::Get(b"k".to_vec()));
        tokio::pin!(read);
        loop {
            tokio::select! {
                r = &mut read => break r,
                _ = tokio::time::sleep(Duration::from_millis(10)) => c.tick_all(),
            }
        }
    });
    assert_eq!(
        got.unwrap(),
        shoal_raftstore::ReadOutput::Value(Some(b"v".to_vec()))
    );
}

#[test]
fn proposals_are_matched_to_entries_by_index_and_term_across_leader_changes() {
    let c = Cluster::start(3, 1, TickMode::Manual);
    let old = c.wait_leader(1, T);
    c.put(b"seed", b"0", T).unwrap();
    let region = c.region_for(b"seed");
    let others: Vec<u64> = c.store_ids().into_iter().filter(|&i| i != old).collect();

    // The leader is cut off and takes five writes it can never commit.
    c.add_filter(Isolate(old));
    let stale: Vec<_> = (0..5)
        .map(|i| {
            let store = c.store(old);
            let cmd = put_cmd(&region, format!("stale{i}").as_bytes(), b"x");
            c.rt.spawn(async move { store.write(cmd).await })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // The others elect a new leader, which commits only its own empty entry.
    assert!(
        tick_until(&c, &others, 200, || others.iter().any(|&i| leads(&c, i))),
        "no new leader among {others:?}"
    );
    let new = *others.iter().find(|&&i| leads(&c, i)).unwrap();
    let third = *others.iter().find(|&&i| i != new).unwrap();
    // The old leader hears of it, steps down and drops its uncommitted tail.
    c.clear_filters();
    assert!(
        tick_until(&c, &[new], 200, || !leads(&c, old)),
        "the old leader did not step down"
    );
    tick_until(&c, &[new], 20, || false);
    // The old leader leads again: the new one is cut off and the third store may
    // not campaign, so only the old one can win once the third's lease ran out.
    c.add_filter(Isolate(new));
    c.add_filter(DropFrom {
        from_store: third,
        msg_type: MessageType::MsgRequestPreVote,
    });
    c.add_filter(DropFrom {
        from_store: third,
        msg_type: MessageType::MsgRequestVote,
    });
    assert!(
        tick_until(&c, &[old, third], 500, || leads(&c, old)),
        "the old leader was not re-elected"
    );
    // Its next write lands at an index its stale proposals once held. It is
    // applied, and must be answered as applied, at once.
    let store = c.store(old);
    let w: WriteResult = c.rt.block_on(async {
        let write = store.write(put_cmd(&region, b"fresh", b"y"));
        tokio::pin!(write);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            tokio::select! {
                r = &mut write => break r,
                _ = tokio::time::sleep(Duration::from_millis(10)) => {
                    assert!(Instant::now() < deadline, "the applied write got no answer");
                    c.store(old).tick();
                    c.store(third).tick();
                }
            }
        }
    });
    assert!(w.is_ok(), "an applied write was reported as {w:?}");
    // The stale writes were certainly not applied, and are told so.
    for h in stale {
        let r = c.rt.block_on(h).unwrap();
        match r {
            Err(CmdError::Dropped(_)) => {}
            other => panic!("a write overwritten by another leader got {other:?}"),
        }
    }
    c.clear_filters();
    for i in 0..5 {
        assert_eq!(c.local_value(old, format!("stale{i}").as_bytes()), None);
    }
    assert_eq!(c.local_value(old, b"fresh").as_deref(), Some(&b"y"[..]));
}

#[test]
fn requests_for_another_store_are_refused_with_store_not_match() {
    let c = Cluster::start(3, 1, TickMode::Manual);
    let leader = c.wait_leader(1, T);
    let region = c.region_for(b"a");
    let me = region
        .peers
        .iter()
        .find(|p| p.store_id == leader)
        .copied()
        .unwrap();
    let wrong = Peer { store_id: 99, ..me };
    let mut cmd = put_cmd(&region, b"a", b"1");
    cmd.header.as_mut().unwrap().peer = Some(wrong);
    let err = c.rt.block_on(c.store(leader).write(cmd)).unwrap_err();
    assert!(
        matches!(kind(&err), Some(Kind::StoreNotMatch(_))),
        "{err:?}"
    );
    let mut h = header(&region);
    h.peer = Some(wrong);
    let err =
        c.rt.block_on(c.store(leader).read(h, ReadKind::Get(b"a".to_vec())))
            .unwrap_err();
    assert!(
        matches!(kind(&err), Some(Kind::StoreNotMatch(_))),
        "{err:?}"
    );
    assert_eq!(c.local_value(leader, b"a"), None);
}

#[test]
fn a_command_over_the_entry_size_limit_is_refused_before_raft() {
    let cfg = shoal_raftstore::Config {
        raft_entry_max_size: 64 << 10,
        raft_max_size_per_msg: 16 << 10,
        ..common::test_config()
    };
    let c = Cluster::start_with(3, 1, TickMode::Manual, cfg);
    let leader = c.wait_leader(1, T);
    let region = c.region_for(b"big");
    let before = c.store(leader).counters().proposals;
    let cmd = put_cmd(&region, b"big", &vec![7u8; 65 << 10]);
    let err = c.rt.block_on(c.store(leader).write(cmd)).unwrap_err();
    assert!(
        matches!(kind(&err), Some(Kind::EntryTooLarge(_))),
        "{err:?}"
    );
    assert_eq!(c.store(leader).counters().proposals, before);
    // Just under the limit replicates to every store.
    c.put(b"big", &vec![7u8; 60 << 10], T).unwrap();
    for id in c.store_ids() {
        c.wait_local(id, b"big", &vec![7u8; 60 << 10], T);
    }
}

#[test]
fn a_leader_with_too_many_unapplied_proposals_refuses_more_as_busy() {
    let cfg = shoal_raftstore::Config {
        max_pending_proposals: 8,
        ..common::test_config()
    };
    let c = Cluster::start_with(3, 1, TickMode::Timer, cfg);
    let leader = c.wait_leader(1, T);
    c.put(b"k", b"v", T).unwrap();
    let region = c.region_for(b"k");
    // The followers are cut off: nothing commits, proposals pile up.
    for id in c.store_ids().into_iter().filter(|&i| i != leader) {
        c.add_filter(Isolate(id));
    }
    let store: std::sync::Arc<RaftStore> = c.store(leader);
    let writes: Vec<_> = (0..40)
        .map(|i| {
            let (store, cmd) = (
                store.clone(),
                put_cmd(&region, format!("p{i}").as_bytes(), b"v"),
            );
            c.rt.spawn(async move { store.write(cmd).await })
        })
        .collect();
    let deadline = Instant::now() + T;
    while writes.iter().filter(|w| w.is_finished()).count() < 32 {
        assert!(
            Instant::now() < deadline,
            "the extra writes were not refused"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut busy = 0;
    c.clear_filters();
    for w in writes {
        match c.rt.block_on(w).unwrap() {
            Ok(_) => {}
            Err(e) if matches!(kind(&e), Some(Kind::ServerIsBusy(_))) => busy += 1,
            // The leader may step down while cut off: the pending writes are then
            // overwritten (certainly not applied) or their outcome is unknown.
            Err(CmdError::Dropped(_) | CmdError::Undetermined(_)) => {}
            Err(e) if matches!(kind(&e), Some(Kind::NotLeader(_))) => {}
            Err(e) => panic!("unexpected answer {e:?}"),
        }
    }
    assert!(busy >= 32, "only {busy} of 40 writes were refused as busy");
}

/// A leader's write reaches its followers but not its commit: the leader is cut
/// off, a follower wins, commits and applies the write, and truncates its log past
/// it. Back, the old leader catches up from a snapshot that covers the write, and
/// the write's caller must hear "outcome unknown" (it was applied, once), never
/// "certainly not applied", which a client would send again.
#[test]
fn a_write_replaced_by_a_snapshot_is_answered_undetermined_not_dropped() {
    let cfg = shoal_raftstore::Config {
        raft_log_gc_count_limit: 20,
        ..common::gc_config()
    };
    let c = Cluster::start_with(3, 1, TickMode::Manual, cfg);
    let old = c.wait_leader(1, T);
    c.put(b"seed", b"0", T).unwrap();
    let region = c.region_for(b"seed");
    let others: Vec<u64> = c.store_ids().into_iter().filter(|&i| i != old).collect();
    for &id in &others {
        c.wait_local(id, b"seed", b"0", T);
    }
    // The followers take the write's entry, but their answers never come back.
    c.add_filter(DropType {
        to_store: old,
        msg_type: MessageType::MsgAppendResponse,
    });
    let log_end = |id: u64| {
        use shoal_engine::LogEngine;
        c.engines[&id].log.last_index(1).unwrap().unwrap_or(0)
    };
    let before: Vec<u64> = others.iter().map(|&id| log_end(id)).collect();
    let store = c.store(old);
    let cmd = put_cmd(&region, b"w", b"once");
    let write = c.rt.spawn(async move { store.write(cmd).await });
    let deadline = Instant::now() + T;
    while others.iter().zip(&before).any(|(&id, &b)| log_end(id) <= b) {
        assert!(
            Instant::now() < deadline,
            "the followers never got the write"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Cut off, the old leader hears nothing more; a follower wins, commits the
    // write with its own first entry, and applies it.
    c.clear_filters();
    c.add_filter(Isolate(old));
    assert!(
        tick_until(&c, &others, 500, || others.iter().any(|&i| leads(&c, i))),
        "no new leader among {others:?}"
    );
    let new = *others.iter().find(|&&i| leads(&c, i)).unwrap();
    for &id in &others {
        c.wait_local(id, b"w", b"once", T);
    }
    let w_index = log_end(new);
    // Enough writes that the new leader truncates past the write (the old leader
    // lags by more than the count limit).
    for i in 0..60u32 {
        let cmd = put_cmd(&region, format!("after{i}").as_bytes(), b"x");
        let store = c.store(new);
        let r =
            c.rt.block_on(async { tokio::time::timeout(T, store.write(cmd)).await });
        assert!(matches!(r, Ok(Ok(_))), "write {i} to the new leader: {r:?}");
    }
    assert!(
        tick_until(&c, &others, 2000, || c.first_index(new, 1) > w_index),
        "the new leader did not truncate past the write (first index {}, write at or before {w_index})",
        c.first_index(new, 1)
    );
    assert!(!write.is_finished(), "the write was answered while cut off");
    // Back: the old leader installs the new leader's snapshot.
    c.clear_filters();
    c.tick_until("the old leader to apply a snapshot", || {
        c.store(old).metrics().snapshots_applied.get() >= 1
    });
    let answer =
        c.rt.block_on(async { tokio::time::timeout(T, write).await });
    match answer {
        Ok(Ok(Err(CmdError::Undetermined(_)))) => {}
        other => panic!("a write the snapshot may cover was answered {other:?}"),
    }
    c.wait_local(old, b"w", b"once", T);
}
