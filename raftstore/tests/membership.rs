//! Membership changes on simulated stores: a replica moves to a new store through
//! a learner and a joint configuration, a dead store's replica is replaced, a
//! removed replica that was away destroys itself without disturbing the group,
//! leadership moves on request, and bad changes are refused before Raft.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{change, key, ticking, Cluster, Isolate};
use shoal_proto::adminpb::RegionInfo;
use shoal_proto::metapb::{ChangeKind, PeerRole, Region};
use shoal_proto::raft_serverpb::RaftMessage;
use shoal_proto::RegionExt;
use shoal_raftstore::{CmdError, TickMode};

const T: Duration = Duration::from_secs(30);

fn role_on(region: &Region, store: u64) -> Option<PeerRole> {
    region
        .peer_on_store(store)
        .map(|p| PeerRole::try_from(p.role).unwrap())
}

/// Whether store `id` still has a peer of `region`.
fn has_region(c: &Cluster, id: u64, region: u64) -> bool {
    c.rt.block_on(c.store(id).region_info(region)).is_ok()
}

/// Moves `region`'s replica from store `from` to store `to`: a learner on `to`,
/// caught up, then one joint change promoting it and demoting `from`, then the
/// learner on `from` removed.
fn move_replica(c: &Cluster, region: u64, from: u64, to: u64) -> Region {
    let r = change(c, region, &[(ChangeKind::AddLearner, to)]).unwrap();
    assert_eq!(role_on(&r, to), Some(PeerRole::Learner));
    // The learner catches up (from a snapshot: the store has nothing).
    c.tick_until("the learner to catch up", || has_region(c, to, region));
    let r = change(
        c,
        region,
        &[(ChangeKind::AddVoter, to), (ChangeKind::AddLearner, from)],
    )
    .unwrap();
    assert!(!r.is_joint(), "the leader left the joint configuration");
    assert_eq!(role_on(&r, to), Some(PeerRole::Voter));
    assert_eq!(role_on(&r, from), Some(PeerRole::Learner));
    let r = change(c, region, &[(ChangeKind::Remove, from)]).unwrap();
    assert_eq!(role_on(&r, from), None);
    r
}

#[test]
fn a_replica_moves_to_a_new_store_with_its_data() {
    let mut c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    for i in 0..200 {
        c.put(&key(i), b"before", T).unwrap();
    }
    c.add_store(4);
    let leader = c.wait_leader(region, T);
    let from = [1, 2, 3].into_iter().find(|&s| s != leader).unwrap();
    let r = move_replica(&c, region, from, 4);
    assert_eq!(r.region_epoch.unwrap().conf_ver, 1 + 4);
    for i in 200..300 {
        c.put(&key(i), b"after", T).unwrap();
    }
    c.wait_local(4, &key(0), b"before", T);
    c.wait_local(4, &key(299), b"after", T);
    // The old replica is gone: peer, data and log.
    c.tick_until("the old replica to go", || !has_region(&c, from, region));
    assert_eq!(c.local_value(from, &key(0)), None, "its data was removed");
    assert_eq!(c.first_index(from, region), 0, "its log was removed");
    // The new configuration survives a restart of every store.
    for id in [1, 2, 3, 4] {
        c.stop_store(id);
    }
    for id in [1, 2, 3, 4] {
        c.start_store(id);
    }
    assert!(!has_region(&c, from, region), "the tombstone keeps it away");
    c.put(&key(300), b"restarted", T).unwrap();
    c.wait_local(4, &key(300), b"restarted", T);
    c.check_acked();
}

#[test]
fn a_dead_stores_replica_is_replaced() {
    let mut c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    c.put(&key(1), b"one", T).unwrap();
    let leader = c.wait_leader(region, T);
    let dead = [1, 2, 3].into_iter().find(|&s| s != leader).unwrap();
    c.stop_store(dead);
    c.add_store(4);
    // The joint configurations keep a quorum without the dead store.
    let r = move_replica(&c, region, dead, 4);
    assert_eq!(r.peers.len(), 3);
    c.put(&key(2), b"two", T).unwrap();
    c.wait_local(4, &key(1), b"one", T);
    c.wait_local(4, &key(2), b"two", T);
    // Any one of the new three may now fail.
    let other = [1, 2, 3]
        .into_iter()
        .find(|&s| s != leader && s != dead)
        .unwrap();
    c.stop_store(other);
    c.put(&key(3), b"three", T).unwrap();
    c.check_acked();
}

#[test]
fn a_removed_replica_that_was_away_destroys_itself_quietly() {
    let c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    c.put(&key(1), b"one", T).unwrap();
    let leader = c.wait_leader(region, T);
    let away = [1, 2, 3].into_iter().find(|&s| s != leader).unwrap();
    c.add_filter(Isolate(away));
    change(&c, region, &[(ChangeKind::Remove, away)]).unwrap();
    let term = |id: u64| c.rt.block_on(c.store(id).region_info(region)).unwrap();
    let before = term(leader).leader.unwrap();
    // It never heard of its removal: it stands for election in vain, then hears
    // of it once the partition heals.
    for _ in 0..200 {
        c.tick_all();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(has_region(&c, away, region));
    c.clear_filters();
    c.tick_until("the removed replica to destroy itself", || {
        !has_region(&c, away, region)
    });
    assert_eq!(c.local_value(away, &key(1)), None, "its data was removed");
    assert_eq!(
        c.wait_leader(region, T),
        leader,
        "the group's leader kept its place"
    );
    assert_eq!(term(leader).leader.unwrap(), before);
    c.put(&key(2), b"two", T).unwrap();
    c.check_acked();
}

#[test]
fn a_store_gets_a_replica_back_after_it_was_removed() {
    let c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    c.put(&key(1), b"one", T).unwrap();
    let leader = c.wait_leader(region, T);
    let other = [1, 2, 3].into_iter().find(|&s| s != leader).unwrap();
    change(&c, region, &[(ChangeKind::Remove, other)]).unwrap();
    c.tick_until("the replica to go", || !has_region(&c, other, region));
    c.put(&key(2), b"two", T).unwrap();
    let r = change(&c, region, &[(ChangeKind::AddVoter, other)]).unwrap();
    assert_eq!(role_on(&r, other), Some(PeerRole::Voter));
    c.wait_local(other, &key(2), b"two", T);
    c.check_acked();
}

#[test]
fn leadership_moves_to_each_store_and_back() {
    let c = Cluster::start(3, 2, TickMode::Manual);
    for region in c.regions.iter().map(|r| r.id) {
        let first = c.wait_leader(region, T);
        for to in [1, 2, 3, first] {
            let from = c.wait_leader(region, T);
            let store = c.store(from);
            let leader =
                ticking(&c, async move { store.transfer_leader(region, to).await }).unwrap();
            assert_eq!(leader.store_id, to);
            assert_eq!(c.wait_leader(region, T), to);
            c.put(&key(to as u32), b"led", T).unwrap();
        }
    }
    c.check_acked();
}

#[test]
fn bad_changes_and_transfers_are_refused_before_raft() {
    let mut c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    let leader = c.wait_leader(region, T);
    let invalid = |r: Result<Region, CmdError>, what: &str| match r {
        Err(CmdError::Invalid(m)) => assert!(m.contains(what), "{m}"),
        other => panic!("expected a refusal naming {what:?}, got {other:?}"),
    };
    invalid(
        change(&c, region, &[(ChangeKind::Remove, leader)]),
        "transfer the leadership first",
    );
    invalid(
        change(&c, region, &[(ChangeKind::AddLearner, leader)]),
        "transfer the leadership first",
    );
    invalid(
        change(&c, region, &[(ChangeKind::Remove, 9)]),
        "no replica on store 9",
    );
    let other = [1, 2, 3].into_iter().find(|&s| s != leader).unwrap();
    invalid(
        change(&c, region, &[(ChangeKind::AddVoter, other)]),
        "already a voter",
    );
    c.add_store(4);
    invalid(
        change(
            &c,
            region,
            &[(ChangeKind::AddVoter, 4), (ChangeKind::Remove, other)],
        ),
        "demoted",
    );
    // A stale epoch is refused as such.
    let r = change(&c, region, &[(ChangeKind::AddLearner, 4)]).unwrap();
    let store = c.store(leader);
    let old = c.regions[0].region_epoch;
    let stale = ticking(&c, async move {
        store
            .change_peer(region, old, vec![(ChangeKind::AddVoter, 4)])
            .await
    });
    match stale {
        Err(CmdError::Region(e)) => assert!(e.message.contains("epoch"), "{}", e.message),
        other => panic!("{other:?}"),
    }
    // Leadership goes to voters only.
    let store = c.store(leader);
    match ticking(&c, async move { store.transfer_leader(region, 4).await }) {
        Err(CmdError::Invalid(m)) => assert!(m.contains("not a voter"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(role_on(&r, 4), Some(PeerRole::Learner));
    // Nothing refused changed the region.
    let now = c.rt.block_on(c.store(leader).region_info(region)).unwrap();
    assert_eq!(now.region, Some(r));
}

#[test]
fn a_change_while_another_is_in_progress_is_refused() {
    let mut c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    c.add_store(4);
    c.add_store(5);
    let leader = c.wait_leader(region, T);
    // The first change cannot commit while the leader is cut off (and no tick
    // runs: it stays leader); a second one meanwhile is refused before Raft.
    c.add_filter(Isolate(leader));
    let store = c.store(leader);
    let first = c.rt.spawn(async move {
        store
            .change_peer(region, None, vec![(ChangeKind::AddLearner, 4)])
            .await
    });
    std::thread::sleep(Duration::from_millis(500));
    let store = c.store(leader);
    let second =
        c.rt.block_on(store.change_peer(region, None, vec![(ChangeKind::AddLearner, 5)]));
    c.clear_filters();
    let first = ticking(&c, async move { first.await.unwrap() });
    let r = first.unwrap();
    assert_eq!(role_on(&r, 4), Some(PeerRole::Learner));
    assert_eq!(role_on(&r, 5), None);
    match second {
        Err(CmdError::Invalid(m)) => assert!(m.contains("in progress"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn each_new_replica_gets_a_snapshot_that_names_it() {
    // The leader keeps the snapshot it generated for one new replica; a second
    // new replica (no write in between, so the kept one is recent enough) must
    // not be sent it: raft-rs refuses a snapshot whose membership lacks it.
    let mut c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    c.put(&key(1), b"one", T).unwrap();
    c.add_store(4);
    c.add_store(5);
    let leader = c.wait_leader(region, T);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&s| s != leader).collect();
    move_replica(&c, region, others[0], 4);
    move_replica(&c, region, others[1], 5);
    c.wait_local(5, &key(1), b"one", T);
    c.put(&key(2), b"two", T).unwrap();
    c.wait_local(5, &key(2), b"two", T);
    c.check_acked();
}

#[test]
fn a_removed_learner_that_was_cut_off_hears_of_it() {
    // A learner never campaigns: nothing it sends would draw a member's answer.
    // The leader tells it, again for a while, so it goes once it is back.
    let mut c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    c.put(&key(1), b"one", T).unwrap();
    c.add_store(4);
    change(&c, region, &[(ChangeKind::AddLearner, 4)]).unwrap();
    c.wait_local(4, &key(1), b"one", T);
    c.add_filter(Isolate(4));
    change(&c, region, &[(ChangeKind::Remove, 4)]).unwrap();
    for _ in 0..30 {
        c.tick_all();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(has_region(&c, 4, region), "cut off: it cannot know yet");
    c.clear_filters();
    c.tick_until("the removed learner to go", || !has_region(&c, 4, region));
    assert_eq!(c.local_value(4, &key(1)), None, "its data was removed");
}

#[test]
fn a_store_whose_removed_replica_was_cut_off_gets_a_new_one() {
    // Store S's replica is removed, then S is given a new replica, all while S
    // is cut off. Back, the old peer meets messages for its successor: it goes,
    // and the next message creates the new one (its tombstone names the old peer
    // and its old membership, so it keeps nothing out that is newer).
    let c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    c.put(&key(1), b"one", T).unwrap();
    let leader = c.wait_leader(region, T);
    let s = [1, 2, 3].into_iter().find(|&x| x != leader).unwrap();
    let old =
        c.rt.block_on(c.store(s).region_info(region))
            .unwrap()
            .region
            .unwrap()
            .peer_on_store(s)
            .unwrap()
            .id;
    c.add_filter(Isolate(s));
    change(&c, region, &[(ChangeKind::Remove, s)]).unwrap();
    let r = change(&c, region, &[(ChangeKind::AddVoter, s)]).unwrap();
    let new = r.peer_on_store(s).unwrap().id;
    assert_ne!(new, old);
    c.put(&key(2), b"two", T).unwrap();
    c.clear_filters();
    c.wait_local(s, &key(2), b"two", T);
    let info = c.rt.block_on(c.store(s).region_info(region)).unwrap();
    assert_eq!(info.region.unwrap().peer_on_store(s).unwrap().id, new);
    c.check_acked();
}

/// Counts the tombstone messages sent to one store (and lets everything through).
struct CountTombstones {
    to_store: u64,
    seen: Arc<AtomicU64>,
}

impl common::Filter for CountTombstones {
    fn filter(&self, msgs: &mut Vec<RaftMessage>) {
        let n = msgs
            .iter()
            .filter(|m| m.is_tombstone && m.to_peer.is_some_and(|p| p.store_id == self.to_store))
            .count();
        self.seen.fetch_add(n as u64, Ordering::SeqCst);
    }
}

fn info(c: &Cluster, store: u64, region: u64) -> RegionInfo {
    c.rt.block_on(c.store(store).region_info(region)).unwrap()
}

#[test]
fn a_follower_that_leads_long_after_a_removal_tells_no_one() {
    // Every replica records the peers a change removes, and whichever leads
    // tells them for a while. A follower that leads much later must not start
    // telling them all over again, and stay awake doing so.
    let mut c = Cluster::start(3, 1, TickMode::Manual);
    let region = c.regions[0].id;
    c.put(&key(1), b"one", T).unwrap();
    c.add_store(4);
    change(&c, region, &[(ChangeKind::AddLearner, 4)]).unwrap();
    c.wait_local(4, &key(1), b"one", T);
    c.stop_store(4);
    change(&c, region, &[(ChangeKind::Remove, 4)]).unwrap();
    let leader = c.wait_leader(region, T);
    // The leader is done telling store 4 (it stays awake until then) and sleeps.
    c.tick_until("the leader to be done telling, and dormant", || {
        info(&c, leader, region).dormant
    });
    let seen = Arc::new(AtomicU64::new(0));
    c.add_filter(CountTombstones {
        to_store: 4,
        seen: seen.clone(),
    });
    let next = [1, 2, 3].into_iter().find(|&s| s != leader).unwrap();
    let store = c.store(leader);
    ticking(&c, async move { store.transfer_leader(region, next).await }).unwrap();
    c.tick_until("the new leader to sleep", || {
        let i = info(&c, next, region);
        i.dormant && i.leader.is_some_and(|l| l.store_id == next)
    });
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "tombstones sent to a peer removed long ago"
    );
}
