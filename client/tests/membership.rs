//! The membership procedures against mock stores: which changes `move_replica`
//! asks the region's leader for, step by step, from each state a region can be
//! found in (a learner to move, a move interrupted inside its joint change).

mod common;

use std::time::{Duration, Instant};

use common::{MockCluster, State};
use shoal_proto::metapb::{ChangeKind, PeerRole, Region};

/// The region's replicas as `(store, role)`, by store.
fn roles(r: &Region) -> Vec<(u64, PeerRole)> {
    let mut v: Vec<_> = r
        .peers
        .iter()
        .map(|p| (p.store_id, PeerRole::try_from(p.role).unwrap()))
        .collect();
    v.sort_unstable();
    v
}

/// Sets the role of region 1's replica on `store` (present) in the mock.
fn set_role(cluster: &MockCluster, store: u64, role: PeerRole) {
    let mut state = cluster.state();
    let r = state.regions.get_mut(&1).unwrap();
    r.peers
        .iter_mut()
        .find(|p| p.store_id == store)
        .unwrap()
        .role = role as i32;
}

#[tokio::test]
async fn a_voter_moves_through_one_joint_change() {
    let cluster = MockCluster::start(4, &[], &[1]).await;
    cluster
        .state()
        .regions
        .get_mut(&1)
        .unwrap()
        .peers
        .retain(|p| p.store_id != 4);
    let client = cluster.client().await;
    let r = client.move_replica(1, 3, 4, &|_| {}).await.unwrap();
    use PeerRole::Voter;
    assert_eq!(roles(&r), vec![(1, Voter), (2, Voter), (4, Voter)]);
    assert_eq!(
        cluster.state().changes,
        vec![
            vec![(ChangeKind::AddLearner, 4)],
            vec![(ChangeKind::AddVoter, 4), (ChangeKind::AddLearner, 3)],
            vec![(ChangeKind::Remove, 3)],
        ]
    );
}

#[tokio::test]
async fn a_learner_moves_as_a_learner() {
    // Voters on 1, 2, 3 and a learner on 4; store 5 has nothing.
    let cluster = MockCluster::start(5, &[], &[1]).await;
    cluster
        .state()
        .regions
        .get_mut(&1)
        .unwrap()
        .peers
        .retain(|p| p.store_id != 5);
    set_role(&cluster, 4, PeerRole::Learner);
    let client = cluster.client().await;
    let r = client.move_replica(1, 4, 5, &|_| {}).await.unwrap();
    use PeerRole::{Learner, Voter};
    // The voters, and so the quorum, are as they were.
    assert_eq!(
        roles(&r),
        vec![(1, Voter), (2, Voter), (3, Voter), (5, Learner)]
    );
    assert_eq!(
        cluster.state().changes,
        vec![
            vec![(ChangeKind::AddLearner, 5)],
            vec![(ChangeKind::Remove, 4)]
        ]
    );
    // Run again, it finds the move done.
    let again = client.move_replica(1, 4, 5, &|_| {}).await.unwrap();
    assert_eq!(again, r);
    assert_eq!(cluster.state().changes.len(), 2);
}

#[tokio::test]
async fn a_move_resumed_inside_its_joint_change_waits_for_the_leave() {
    // A move of store 3's voter to store 4 was interrupted after entering its
    // joint change (the store answered `Undetermined`, say): 3 is demoting, 4
    // incoming, and the leader has not left the joint configuration yet.
    let cluster = MockCluster::start(4, &[], &[1]).await;
    set_role(&cluster, 3, PeerRole::DemotingVoter);
    set_role(&cluster, 4, PeerRole::IncomingVoter);
    let client = cluster.client().await;
    let looked = cluster.state().get_region_calls;
    let moving = tokio::spawn(async move { client.move_replica(1, 3, 4, &|_| {}).await });
    // It looks at the region, again and again while it is joint...
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.state().get_region_calls < looked + 3 && !moving.is_finished() {
        assert!(Instant::now() < deadline, "the client stopped looking");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !moving.is_finished(),
        "gave up on a joint region: {:?}",
        moving.await.unwrap()
    );
    assert!(cluster.state().changes.is_empty(), "no change while joint");
    // ...and goes on once the leader has left it.
    State::leave_joint(cluster.state().regions.get_mut(&1).unwrap());
    let r = tokio::time::timeout(Duration::from_secs(10), moving)
        .await
        .expect("the move finishes")
        .unwrap()
        .unwrap();
    use PeerRole::Voter;
    assert_eq!(roles(&r), vec![(1, Voter), (2, Voter), (4, Voter)]);
    assert_eq!(cluster.state().changes, vec![vec![(ChangeKind::Remove, 3)]]);
}
