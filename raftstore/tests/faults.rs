//! Fault narratives: partitions, dropped message types, slow networks.

mod common;

use std::time::Duration;

use common::{Cluster, DropRegion, DropType, Partition};
use raft::eraftpb::MessageType;
use shoal_raftstore::TickMode;

const T: Duration = Duration::from_secs(20);

#[test]
fn a_leader_cut_off_in_the_minority_is_replaced_and_the_majority_keeps_writing() {
    let c = Cluster::start(3, 1, TickMode::Timer);
    let old = c.wait_leader(1, T);
    c.put(b"before", b"1", T).unwrap();
    let others: Vec<u64> = c.store_ids().into_iter().filter(|&id| id != old).collect();
    c.add_filter(Partition(vec![old], others.clone()));
    // The majority elects a new leader and commits without the old one.
    c.put(b"during", b"2", T).unwrap();
    for &id in &others {
        c.wait_local(id, b"during", b"2", T);
    }
    assert_eq!(
        c.local_value(old, b"during"),
        None,
        "the cut-off store applied nothing new"
    );
    c.clear_filters();
    c.wait_local(old, b"during", b"2", T);
    c.check_acked();
}

#[test]
fn a_store_that_loses_appends_gets_them_once_they_flow_again() {
    let c = Cluster::start(3, 2, TickMode::Timer);
    for r in &c.regions {
        c.wait_leader(r.id, T);
    }
    let region = c.region_for(b"k");
    let leader = c.leader_of(region.id).unwrap();
    let victim = c.store_ids().into_iter().find(|&id| id != leader).unwrap();
    c.add_filter(DropType {
        to_store: victim,
        msg_type: MessageType::MsgAppend,
    });
    c.put(b"k", b"v", T).unwrap();
    assert_eq!(c.local_value(victim, b"k"), None);
    c.clear_filters();
    c.wait_local(victim, b"k", b"v", T);
}

#[test]
fn a_region_whose_messages_are_dropped_stalls_alone() {
    let c = Cluster::start(3, 2, TickMode::Timer);
    for r in &c.regions {
        c.wait_leader(r.id, T);
    }
    let (a, b) = (c.regions[0].clone(), c.regions[1].clone());
    c.add_filter(DropRegion(a.id));
    // Region b is unaffected.
    let mut key_b = b.start_key.clone();
    key_b.push(1);
    c.put(&key_b, b"b", T).unwrap();
    // Region a cannot commit while its messages vanish.
    assert!(c.put(b"\x00a", b"a", Duration::from_millis(600)).is_err());
    c.clear_filters();
    c.put(b"\x00a", b"a", T).unwrap();
    c.check_acked();
}

#[test]
fn writes_commit_over_a_slow_network() {
    let c = Cluster::start(3, 1, TickMode::Timer);
    c.wait_leader(1, T);
    c.delay_all(Duration::from_millis(30));
    for i in 0..5u8 {
        c.put(&[b'd', i], b"slow", T).unwrap();
    }
    c.clear_filters();
    c.check_acked();
}
