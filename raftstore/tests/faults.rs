//! Fault narratives: partitions, dropped message types, slow networks.

mod common;

use std::time::Duration;

use common::{Cluster, DropRegion, DropType, Partition};
use raft::eraftpb::{Message as RaftPbMessage, MessageType};
use shoal_proto::metapb::Peer;
use shoal_proto::raft_serverpb::RaftMessage;
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
    let c = Cluster::start(3, 2, TickMode::Manual);
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
    let c = Cluster::start(3, 2, TickMode::Manual);
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
    let c = Cluster::start(3, 1, TickMode::Manual);
    c.wait_leader(1, T);
    c.delay_all(Duration::from_millis(30));
    for i in 0..5u8 {
        c.put(&[b'd', i], b"slow", T).unwrap();
    }
    c.clear_filters();
    c.check_acked();
}

/// A heartbeat from a far-future term whose commit index is far beyond the
/// receiver's log reaches raft-rs's fatal path. Messages whose addressing does not
/// hold together are dropped before raft-rs sees them, and the store goes on.
#[test]
fn raft_messages_with_inconsistent_ids_are_dropped_before_raft() {
    let c = Cluster::start(3, 1, TickMode::Manual);
    let leader = c.wait_leader(1, T);
    c.put(b"k", b"1", T).unwrap();
    let region = c.region_for(b"k");
    let peer_on = |s: u64| *region.peers.iter().find(|p| p.store_id == s).unwrap();
    let follower = c.store_ids().into_iter().find(|&s| s != leader).unwrap();
    let (from, to) = (peer_on(leader), peer_on(follower));
    let forged = |env_from: Peer, env_to: Peer, inner_from: u64| {
        let mut m = RaftPbMessage::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = inner_from;
        m.to = env_to.id;
        m.term = 1_000;
        m.commit = 1_000_000;
        RaftMessage {
            region_id: region.id,
            from_peer: Some(env_from),
            to_peer: Some(env_to),
            region_epoch: region.region_epoch,
            message: protobuf::Message::write_to_bytes(&m).unwrap(),
            ..Default::default()
        }
    };
    let store = c.store(follower);
    let refused = || store.metrics().raft_messages_refused.get();
    // To this peer's id, but on another store.
    store.on_raft_message(forged(from, Peer { store_id: 99, ..to }, from.id));
    // From a peer the region does not have.
    store.on_raft_message(forged(Peer { id: 999, ..from }, to, 999));
    // The envelope and the raft message disagree on the sender.
    store.on_raft_message(forged(from, to, 999));
    let deadline = std::time::Instant::now() + T;
    while refused() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "refused only {}",
            refused()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The follower's peer is alive and its term did not jump: it keeps applying.
    c.put(b"k", b"2", T).unwrap();
    c.wait_local(follower, b"k", b"2", T);
    assert_eq!(c.leader_of(region.id), Some(leader));
}
