//! Dormant regions on a simulated 3-store cluster: idle regions go dormant on
//! every replica and then cost no ticks and no Raft messages; each cause wakes
//! them (a write, a read, a split, a leader transfer, a membership change, a raft
//! message) and they serve at once; a dead leader store is noticed through store
//! liveness and its regions elect new leaders; a partitioned dormant leader serves
//! nothing stale and steps down when it comes back.

mod common;

use std::time::{Duration, Instant};

use common::{key, test_config, ticking, Cluster, Isolate};
use shoal_proto::metapb::ChangeKind;
use shoal_raftstore::{CmdError, ReadKind, ReadOutput, TickMode};

const T: Duration = Duration::from_secs(30);

/// Dormant peers on store `id`.
fn dormant(c: &Cluster, id: u64) -> i64 {
    c.store(id).metrics().dormant_regions.get()
}

/// Ticks until every running store has `n` dormant peers.
fn wait_dormant(c: &Cluster, n: i64) {
    c.tick_until(&format!("{n} dormant peers on every store"), || {
        c.store_ids().into_iter().all(|id| dormant(c, id) == n)
    });
}

/// Writes `value` under key `start ++ [n]` of each initial region, once it has a
/// leader.
fn write_each_region(c: &Cluster, n: u8, value: &[u8]) {
    for r in &c.regions {
        c.wait_leader(r.id, T);
        let mut k = r.start_key.clone();
        k.push(n);
        c.put(&k, value, T).unwrap();
    }
}

/// Ticks every store every 20 ms (the tick interval) for `d`.
fn tick_for(c: &Cluster, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        c.tick_all();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Raft messages all running stores sent.
fn raft_messages(c: &Cluster) -> u64 {
    c.store_ids()
        .into_iter()
        .map(|id| c.store(id).metrics().counters().raft_messages_sent)
        .sum()
}

#[test]
fn idle_regions_go_dormant_on_every_replica_and_cost_no_ticks_nor_messages() {
    let c = Cluster::start(3, 4, TickMode::Manual);
    write_each_region(&c, 1, b"v");
    wait_dormant(&c, 4);
    for id in c.store_ids() {
        // The store's liveness round only.
        assert_eq!(c.store(id).registered_ticks(), 1, "store {id}");
    }
    let before = raft_messages(&c);
    let beats: u64 = c
        .store_ids()
        .into_iter()
        .map(|id| c.store(id).metrics().store_heartbeats_sent.get())
        .sum();
    // Five liveness timeouts: every leader store keeps heartbeating, so no
    // follower wakes.
    tick_for(&c, Duration::from_secs(1));
    assert_eq!(
        raft_messages(&c),
        before,
        "a dormant region sent raft messages"
    );
    for id in c.store_ids() {
        assert_eq!(dormant(&c, id), 4, "store {id} woke a region");
    }
    let beats_after: u64 = c
        .store_ids()
        .into_iter()
        .map(|id| c.store(id).metrics().store_heartbeats_sent.get())
        .sum();
    assert!(beats_after > beats, "no store heartbeats while dormant");
}

#[test]
fn each_cause_wakes_a_dormant_region_which_then_serves_and_sleeps_again() {
    let mut c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    let leader = c.wait_leader(region, T);
    c.put(&key(0), b"v0", T).unwrap();
    wait_dormant(&c, 1);

    // A write: the leader wakes on it, the followers on its append.
    c.put(&key(1), b"v1", T).unwrap();
    for id in c.store_ids() {
        assert_eq!(dormant(&c, id), 0, "store {id} still dormant after a write");
    }
    wait_dormant(&c, 1);

    // A read: the leader wakes and confirms it; the followers answer its
    // heartbeat asleep.
    let store = c.store(leader);
    let header = c.header(&c.region_for(&key(1)));
    let read = c.rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(5),
            store.read(header, ReadKind::Get(key(1))),
        )
        .await
    });
    match read {
        Ok(Ok(ReadOutput::Value(v))) => assert_eq!(v, Some(b"v1".to_vec())),
        other => panic!("a read of a dormant region: {other:?}"),
    }
    assert_eq!(
        dormant(&c, leader),
        0,
        "the leader stayed dormant for a read"
    );
    for id in c.store_ids().into_iter().filter(|&id| id != leader) {
        assert_eq!(dormant(&c, id), 1, "follower {id} woke for a read");
    }
    wait_dormant(&c, 1);

    // A split.
    let halves = c.split(&key(500), T).unwrap();
    assert_eq!(halves.len(), 2);
    wait_dormant(&c, 2);

    // A leader transfer (an admin command).
    let to = c.store_ids().into_iter().find(|&s| s != leader).unwrap();
    let s = c.store(leader);
    let moved = ticking(&c, async move { s.transfer_leader(region, to).await });
    assert_eq!(moved.unwrap().store_id, to);
    wait_dormant(&c, 2);

    // A membership change: a learner on a new store, which goes dormant too.
    c.add_store(4);
    let leader = c.wait_leader(region, T);
    let s = c.store(leader);
    let changed = ticking(&c, async move {
        s.change_peer(region, None, vec![(ChangeKind::AddLearner, 4)])
            .await
    });
    changed.unwrap();
    c.tick_until("store 4's learner to go dormant", || dormant(&c, 4) == 1);

    // A raft message alone: a follower's vote request wakes the leader (which
    // refuses it: its followers heard from it within the election timeout).
    c.tick_until("both regions dormant everywhere", || {
        (1..=3).all(|s| dormant(&c, s) == 2) && dormant(&c, 4) == 1
    });
    let leader = c.wait_leader(region, T);
    let follower = (1..=3).find(|&s| s != leader).unwrap();
    let info = c.rt.block_on(c.store(leader).region_info(region)).unwrap();
    assert!(info.dormant, "the leader's replica reports itself dormant");
    c.store(follower).campaign(region).unwrap();
    c.tick_until("the vote request to wake the leader", || {
        let info = c.rt.block_on(c.store(leader).region_info(region)).unwrap();
        !info.dormant
    });
    c.wait_leader(region, T);
    c.put(&key(2), b"v2", T).unwrap();
    c.check_acked();
}

#[test]
fn a_dead_leader_store_is_noticed_through_store_liveness() {
    let mut c = Cluster::start(3, 3, TickMode::Manual);
    write_each_region(&c, 1, b"before");
    wait_dormant(&c, 3);
    let victim = c.leader_of(c.regions[0].id).unwrap();
    let led: Vec<u64> = c
        .regions
        .iter()
        .map(|r| r.id)
        .filter(|&r| c.leader_of(r) == Some(victim))
        .collect();
    c.stop_store(victim);
    // An election timeout is 10 ticks, the liveness timeout 200 ms of wall time
    // (10 ticks of 20 ms; `tick_until` ticks faster than that). Without store
    // liveness the dormant followers would never notice.
    let started = Instant::now();
    c.tick_until(
        "every region the dead store led to elect a new leader",
        || {
            led.iter()
                .all(|&r| c.leader_of(r).is_some_and(|l| l != victim))
        },
    );
    let took = started.elapsed();
    eprintln!("new leaders for {} regions after {took:?}", led.len());
    for id in c.store_ids() {
        let woken = c.store(id).metrics().liveness_wakes.get();
        assert!(woken >= led.len() as u64, "store {id} woke {woken}");
    }
    write_each_region(&c, 2, b"after");
    c.check_acked();
}

#[test]
fn a_cut_off_dormant_leader_serves_nothing_stale_and_steps_down_when_back() {
    let c = Cluster::start_with(3, 1, TickMode::Manual, test_config());
    let region = c.regions[0].id;
    let old = c.wait_leader(region, T);
    c.put(&key(0), b"v1", T).unwrap();
    wait_dormant(&c, 1);
    c.add_filter(Isolate(old));
    // The others stop hearing the old leader's store, wake and elect.
    let others: Vec<u64> = c.store_ids().into_iter().filter(|&s| s != old).collect();
    c.tick_until("a new leader on the other side", || {
        others.iter().any(|&s| {
            c.rt.block_on(c.store(s).region_info(region))
                .ok()
                .and_then(|i| i.leader)
                .is_some_and(|l| l.store_id == s)
        })
    });
    // A write on the new side.
    let header = c.header(&c.region_for(&key(0)));
    let deadline = Instant::now() + T;
    'written: loop {
        assert!(Instant::now() < deadline, "no write on the majority side");
        for &s in &others {
            let cmd = shoal_proto::raft_cmdpb::RaftCmdRequest {
                header: Some(header),
                requests: vec![shoal_proto::raft_cmdpb::Request {
                    cmd: Some(shoal_proto::raft_cmdpb::request::Cmd::Put(
                        shoal_proto::raft_cmdpb::PutOp {
                            key: key(0),
                            value: b"v2".to_vec(),
                        },
                    )),
                }],
                admin: None,
            };
            let store = c.store(s);
            if ticking(&c, async move { store.write(cmd).await }).is_ok() {
                break 'written;
            }
        }
        c.tick_all();
    }
    // The old leader, still cut off and dormant, believes it leads: a read there
    // must not answer the old value (it cannot confirm its leadership).
    let store = c.store(old);
    let read = ticking(&c, async move {
        tokio::time::timeout(
            Duration::from_secs(3),
            store.read(header, ReadKind::Get(key(0))),
        )
        .await
    });
    match read {
        Ok(Ok(ReadOutput::Value(v))) => panic!("the cut-off old leader answered {v:?}"),
        Ok(Ok(other)) => panic!("unexpected {other:?}"),
        Ok(Err(CmdError::Region(_))) | Err(_) => {}
        Ok(Err(e)) => panic!("unexpected error {e}"),
    }
    c.clear_filters();
    c.tick_until("the old leader to step down", || {
        c.rt.block_on(c.store(old).region_info(region))
            .ok()
            .and_then(|i| i.leader)
            .is_some_and(|l| l.store_id != old)
    });
    assert_eq!(c.get(&key(0), T).unwrap(), Some(b"v2".to_vec()));
    c.wait_local(old, &key(0), b"v2", T);
}

#[test]
fn a_restarted_store_deposes_no_healthy_leader_and_its_regions_sleep_again() {
    let mut c = Cluster::start(3, 6, TickMode::Manual);
    write_each_region(&c, 1, b"v");
    wait_dormant(&c, 6);
    c.stop_store(3);
    c.start_store(3);
    // Store 3's regions elect again (its leaders are gone); the others keep theirs.
    c.tick_until("every region led and dormant again", || {
        c.regions.iter().all(|r| c.leader_of(r.id).is_some())
            && c.store_ids().into_iter().all(|id| dormant(&c, id) == 6)
    });
    let leaders: Vec<Option<u64>> = c.regions.iter().map(|r| c.leader_of(r.id)).collect();
    let applied = |c: &Cluster| -> Vec<u64> {
        c.regions
            .iter()
            .map(|r| {
                c.rt.block_on(c.store(1).region_info(r.id))
                    .unwrap()
                    .applied_index
            })
            .collect()
    };
    let before = applied(&c);
    // A second's worth of liveness rounds and heartbeats under the new
    // incarnation: nothing wakes, nothing is elected again.
    tick_for(&c, Duration::from_secs(1));
    let after: Vec<Option<u64>> = c.regions.iter().map(|r| c.leader_of(r.id)).collect();
    assert_eq!(after, leaders, "a leader changed after the restart settled");
    assert_eq!(
        applied(&c),
        before,
        "a region did something after it settled"
    );
    for id in c.store_ids() {
        assert_eq!(dormant(&c, id), 6, "store {id} woke a region");
    }
    c.check_acked();
}

#[test]
fn a_region_whose_split_check_is_skipped_still_goes_dormant() {
    // The region worker skips the scan when few entries were applied since the
    // last one (fewer than an eighth of the keys) and answers with the old
    // figures: a leader asking again at each quiet spell never slept.
    let c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    c.wait_leader(region, T);
    for i in 0..40u32 {
        c.put(&key(i), b"v", T).unwrap();
    }
    wait_dormant(&c, 1);
    c.put(&key(1000), b"one more", T).unwrap();
    wait_dormant(&c, 1);
    c.check_acked();
}

/// Drops the store heartbeats one store sends (its regions being dormant,
/// nothing else of its flows): to the others it looks silent, though it runs.
struct DropHeartbeatsFrom(u64);

impl common::Filter for DropHeartbeatsFrom {
    fn filter(&self, msgs: &mut Vec<shoal_proto::raft_serverpb::RaftMessage>) {
        msgs.retain(|m| {
            !(m.region_id == 0 && m.from_peer.as_ref().map(|p| p.store_id) == Some(self.0))
        });
    }
}

/// The regions store `id` leads, as it sees them.
fn led_by(c: &Cluster, id: u64) -> Vec<u64> {
    c.regions
        .iter()
        .map(|r| r.id)
        .filter(|&r| c.leader_of(r) == Some(id))
        .collect()
}

/// Store 1 looks silent for a moment (its heartbeats dropped) while it leads more
/// dormant regions than the paced wake queue drains meanwhile, then is heard
/// again, then stops for good. Every region it still led must fail over: the
/// followers whose wakes were still queued when it was heard again are watched
/// again, not forgotten (they used to be: nothing woke them, and those regions
/// had no leader until a restart).
#[test]
fn a_store_silent_for_a_moment_then_stopped_still_has_every_region_fail_over() {
    let cfg = shoal_raftstore::Config {
        dormant_wake_rate: 1,
        ..test_config()
    };
    let round = cfg.raft_tick_interval * cfg.raft_heartbeat_ticks as u32;
    let mut c = Cluster::start_with(3, 30, TickMode::Manual, cfg);
    write_each_region(&c, 1, b"before");
    wait_dormant(&c, 30);
    let led = led_by(&c, 1);
    assert!(led.len() >= 6, "store 1 leads only {led:?}");
    // Silent until both others have begun waking its regions (one a round).
    c.add_filter(DropHeartbeatsFrom(1));
    let woken = |c: &Cluster| {
        [2, 3]
            .iter()
            .map(|&id| c.store(id).metrics().liveness_wakes.get())
            .min()
            .unwrap()
    };
    let deadline = Instant::now() + T;
    while woken(&c) == 0 {
        assert!(Instant::now() < deadline, "store 1 was never found silent");
        c.tick_all();
        std::thread::sleep(c.cfg.raft_tick_interval);
    }
    let queued: i64 = [2, 3]
        .iter()
        .map(|&id| c.store(id).metrics().wake_queue.get())
        .sum();
    assert!(
        queued > 0,
        "the wakes drained before store 1 was heard again: not the case under test"
    );
    c.clear_filters();
    // Heard again; the wakes that were queued would have been delivered by now.
    tick_for(&c, round * (led.len() as u32 + 10));
    let still_led = led_by(&c, 1);
    eprintln!(
        "store 1 led {} regions; {queued} wakes were queued when it was heard again; it still leads {}",
        led.len(),
        still_led.len()
    );
    assert!(
        !still_led.is_empty(),
        "store 1 leads nothing any more: not the case under test"
    );
    c.stop_store(1);
    let started = Instant::now();
    let led_again = |c: &Cluster| {
        still_led
            .iter()
            .all(|&r| c.leader_of(r).is_some_and(|l| l != 1))
    };
    // Counted in ticks (each at least a tick interval of wall time, which the
    // liveness timeout is measured in), so a slow machine does not fail it.
    let mut ticks = 0u32;
    while !led_again(&c) && started.elapsed() < Duration::from_secs(10) {
        c.tick_all();
        ticks += 1;
        std::thread::sleep(c.cfg.raft_tick_interval);
    }
    let took = started.elapsed();
    let leaderless: Vec<u64> = still_led
        .iter()
        .copied()
        .filter(|&r| c.leader_of(r).is_none_or(|l| l == 1))
        .collect();
    assert!(
        leaderless.is_empty(),
        "regions {leaderless:?} had no leader {took:?} after store 1 stopped"
    );
    // The documented bound (docs/dormancy.md): three election timeouts, plus
    // the successors' paced wakes (half the regions per surviving store, one a
    // round at this wake rate), in ticks.
    let cfg = &c.cfg;
    let bound = (3 * cfg.raft_election_ticks
        + still_led.len().div_ceil(2) * cfg.raft_heartbeat_ticks) as u32;
    eprintln!(
        "{} regions led again after {took:?}, {ticks} ticks (bound {bound} ticks)",
        still_led.len()
    );
    assert!(
        ticks <= bound,
        "failover took {ticks} ticks, over the bound of {bound}"
    );
    write_each_region(&c, 2, b"after");
    c.check_acked();
}

/// Counts the store heartbeats sent to one store (and lets everything through).
struct CountHeartbeatsTo(u64, std::sync::Arc<std::sync::atomic::AtomicU64>);

impl common::Filter for CountHeartbeatsTo {
    fn filter(&self, msgs: &mut Vec<shoal_proto::raft_serverpb::RaftMessage>) {
        let n = msgs
            .iter()
            .filter(|m| m.region_id == 0 && m.to_peer.as_ref().map(|p| p.store_id) == Some(self.0))
            .count();
        self.1
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A store whose replica of a dormant region was removed, and that holds no other
/// follower of the leader's store, gets no more store heartbeats from it once
/// the region sleeps again (they used to go on for the store's life).
#[test]
fn a_store_no_region_names_gets_no_more_heartbeats() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    write_each_region(&c, 1, b"before");
    wait_dormant(&c, 1);
    let beats = std::sync::Arc::new(AtomicU64::new(0));
    c.add_filter(CountHeartbeatsTo(3, beats.clone()));
    tick_for(&c, Duration::from_millis(500));
    assert!(
        beats.load(Ordering::Relaxed) > 0,
        "store 3 was never heartbeaten"
    );
    // Store 3's replica goes (its leadership first, if it has it).
    if c.leader_of(region) == Some(3) {
        let store = c.store(3);
        ticking(&c, async move { store.transfer_leader(region, 1).await }).unwrap();
    }
    let leader = c.wait_leader(region, T);
    let store = c.store(leader);
    let changes = vec![(ChangeKind::Remove, 3)];
    ticking(
        &c,
        async move { store.change_peer(region, None, changes).await },
    )
    .unwrap();
    c.tick_until("the region to sleep again on stores 1 and 2", || {
        [1, 2].iter().all(|&id| dormant(&c, id) == 1)
    });
    beats.store(0, Ordering::Relaxed);
    tick_for(&c, Duration::from_millis(500));
    assert_eq!(
        beats.load(Ordering::Relaxed),
        0,
        "store 3 holds no replica and is still heartbeaten"
    );
}
