//! Stale peers on simulated stores: a replica that hears from no leader for
//! `raft-stale-peer-check-interval` asks its region whether it still belongs. A
//! learner removed while cut off for longer than the leader tells it, and an
//! uninitialized peer whose snapshot never came (its region changed, or merged
//! away), are collected; a member that is cut off for as long is not, and a
//! dormant region neither asks nor is woken by the asking.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{change, key, Cluster, DropType, Filter, Isolate, Partition};
use raft::eraftpb::MessageType;
use shoal_proto::adminpb::RegionInfo;
use shoal_proto::metapb::ChangeKind;
use shoal_proto::raft_serverpb::{ExtraMessageType, RaftMessage};
use shoal_raftstore::{Config, TickMode};

const T: Duration = Duration::from_secs(30);

/// Raft ticks between two checks of a peer that hears no leader.
const CHECK_TICKS: u32 = 30;

/// The harness's fast timers, with a stale-peer check every [`CHECK_TICKS`].
fn config() -> Config {
    let cfg = common::test_config();
    Config {
        raft_stale_peer_check_interval: cfg.raft_tick_interval * CHECK_TICKS,
        ..cfg
    }
}

fn info(c: &Cluster, store: u64, region: u64) -> Option<RegionInfo> {
    c.rt.block_on(c.store(store).region_info(region)).ok()
}

fn has_region(c: &Cluster, store: u64, region: u64) -> bool {
    info(c, store, region).is_some()
}

fn dormant(c: &Cluster, store: u64, region: u64) -> bool {
    info(c, store, region).is_some_and(|i| i.dormant)
}

/// Counts the stale-peer checks that get this far (add it after the filters that
/// drop messages) and lets everything through.
#[derive(Clone, Default)]
struct CountChecks(Arc<AtomicU64>);

impl CountChecks {
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Filter for CountChecks {
    fn filter(&self, msgs: &mut Vec<RaftMessage>) {
        let checks = msgs.iter().filter(|m| {
            m.extra
                .as_ref()
                .is_some_and(|e| e.r#type == ExtraMessageType::CheckStalePeer as i32)
        });
        self.0.fetch_add(checks.count() as u64, Ordering::SeqCst);
    }
}

/// Region `region` gets a learner on store 4, which is then cut off and removed;
/// returns once the leader is done telling it (it sleeps then).
fn remove_learner_while_cut_off(c: &Cluster, region: u64) -> u64 {
    c.add_filter(Isolate(4));
    change(c, region, &[(ChangeKind::Remove, 4)]).unwrap();
    let leader = c.wait_leader(region, T);
    c.tick_until("the leader to be done telling store 4, and dormant", || {
        dormant(c, leader, region)
    });
    assert!(has_region(c, 4, region), "cut off, it cannot know yet");
    leader
}

#[test]
fn a_learner_removed_while_cut_off_for_long_asks_and_goes() {
    let mut c = Cluster::start_with(3, 1, TickMode::Manual, config());
    let region = c.regions[0].id;
    c.put(&key(1), b"one", T).unwrap();
    c.add_store(4);
    change(&c, region, &[(ChangeKind::AddLearner, 4)]).unwrap();
    c.wait_local(4, &key(1), b"one", T);
    remove_learner_while_cut_off(&c, region);
    c.clear_filters();
    c.tick_until("the removed learner to ask and go", || {
        !has_region(&c, 4, region)
    });
    assert_eq!(c.local_value(4, &key(1)), None, "its data was removed");
    // The members answered asleep: the check woke no one.
    for s in [1, 2, 3] {
        assert!(dormant(&c, s, region), "store {s}'s replica was woken");
    }
    c.put(&key(2), b"two", T).unwrap();
    c.check_acked();
}

/// Adds a learner on the new store 4 whose snapshot never comes: the store has
/// only an uninitialized peer of `region`.
fn add_learner_without_snapshot(c: &mut Cluster, region: u64) {
    c.add_store(4);
    c.add_filter(DropType {
        to_store: 4,
        msg_type: MessageType::MsgSnapshot,
    });
    change(c, region, &[(ChangeKind::AddLearner, 4)]).unwrap();
    c.tick_until("store 4 to have an uninitialized peer", || {
        info(c, 4, region).is_some_and(|i| i.region.is_some_and(|r| r.peers.is_empty()))
    });
}

#[test]
fn an_uninitialized_peer_whose_snapshot_never_came_is_collected() {
    let mut c = Cluster::start_with(3, 1, TickMode::Manual, config());
    let region = c.regions[0].id;
    c.put(&key(1), b"one", T).unwrap();
    add_learner_without_snapshot(&mut c, region);
    remove_learner_while_cut_off(&c, region);
    c.clear_filters();
    c.tick_until("the uninitialized peer to ask and go", || {
        !has_region(&c, 4, region)
    });
    // The store takes a new replica of the region (another peer) all the same.
    change(&c, region, &[(ChangeKind::AddLearner, 4)]).unwrap();
    c.wait_local(4, &key(1), b"one", T);
}

#[test]
fn an_uninitialized_peer_of_a_region_merged_away_is_collected() {
    let mut c = Cluster::start_with(3, 2, TickMode::Manual, config());
    let (left, right) = (c.regions[0].id, c.regions[1].id);
    c.wait_leader(left, T);
    add_learner_without_snapshot(&mut c, right);
    remove_learner_while_cut_off(&c, right);
    // The region store 4's peer knows of is merged away on every other store.
    c.merge(right, left, T).unwrap();
    c.tick_until("the merge to apply on stores 1 to 3", || {
        [1, 2, 3].into_iter().all(|s| !has_region(&c, s, right))
    });
    assert!(has_region(&c, 4, right));
    c.clear_filters();
    c.tick_until("the uninitialized peer of the merged region to go", || {
        !has_region(&c, 4, right)
    });
}

#[test]
fn members_that_hear_no_leader_for_long_stay() {
    // A learner and a voter, each cut off from the leader only, ask the others
    // again and again; those list them, so nothing happens, and both catch up
    // once the partition heals.
    let mut c = Cluster::start_with(3, 1, TickMode::Manual, config());
    let region = c.regions[0].id;
    c.put(&key(1), b"one", T).unwrap();
    c.add_store(4);
    change(&c, region, &[(ChangeKind::AddLearner, 4)]).unwrap();
    c.wait_local(4, &key(1), b"one", T);
    let leader = c.wait_leader(region, T);
    let voter = [1, 2, 3].into_iter().find(|&s| s != leader).unwrap();
    c.add_filter(Partition(vec![leader], vec![voter, 4]));
    let checks = CountChecks::default();
    c.add_filter(checks.clone());
    c.put(&key(2), b"two", T).unwrap();
    c.tick_until("both to ask several times", || checks.get() >= 6);
    assert!(has_region(&c, 4, region) && has_region(&c, voter, region));
    c.clear_filters();
    c.wait_local(4, &key(2), b"two", T);
    c.wait_local(voter, &key(2), b"two", T);
    c.put(&key(3), b"three", T).unwrap();
    c.wait_local(4, &key(3), b"three", T);
    assert_eq!(c.wait_leader(region, T), leader);
    c.check_acked();
}

#[test]
fn a_dormant_region_never_asks() {
    let c = Cluster::start_with(3, 1, TickMode::Manual, config());
    let region = c.regions[0].id;
    c.put(&key(1), b"one", T).unwrap();
    c.tick_until("the region to sleep", || {
        [1, 2, 3].into_iter().all(|s| dormant(&c, s, region))
    });
    let checks = CountChecks::default();
    c.add_filter(checks.clone());
    // Its followers hear no leader for many check intervals: watched by store
    // liveness, they are not stale.
    for _ in 0..5 * CHECK_TICKS {
        c.tick_all();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(checks.get(), 0);
    for s in [1, 2, 3] {
        assert!(dormant(&c, s, region), "store {s}'s replica woke");
    }
}
