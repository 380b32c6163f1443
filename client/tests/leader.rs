//! Following `NotLeader` answers: with a hint, and without one.

mod common;

use common::{peer_of, region_error, MockCluster};
use shoal_proto::errorpb::{region_error::Kind, NotLeader};

#[tokio::test]
async fn follows_the_not_leader_hint_to_another_store() {
    let cluster = MockCluster::start(2, &[], &[1]).await;
    let client = cluster.client().await;
    // Leadership moves to store 2; the client still believes store 1.
    cluster.set_leader(1, 2);

    client.put("k", "v").await.unwrap();

    let puts = cluster.requests("put");
    let route: Vec<_> = puts.iter().map(|l| (l.store_id, l.outcome)).collect();
    assert_eq!(route, vec![(1, "NotLeader"), (2, "ok")]);
    let cached = client.regions_cached();
    assert_eq!(cached[0].leader, Some(peer_of(1, 2)), "the hint is cached");

    // The next request goes straight to the new leader.
    cluster.clear_log();
    assert_eq!(client.get("k").await.unwrap(), Some(b"v".to_vec()));
    let gets: Vec<_> = cluster.requests("get").iter().map(|l| l.store_id).collect();
    assert_eq!(gets, vec![2]);
}

#[tokio::test]
async fn not_leader_without_hint_tries_the_next_peer() {
    let cluster = MockCluster::start(3, &[], &[1]).await;
    // ListRegions knows no leader; store 1 answers NotLeader without a hint, as a
    // follower would during an election. The real leader is on store 2.
    cluster.report_leader(1, None);
    cluster.set_leader(1, 2);
    let client = cluster.client().await;
    cluster.script(
        Some(1),
        Some("put"),
        usize::MAX,
        region_error(Kind::NotLeader(NotLeader {
            region_id: 1,
            leader: None,
        })),
    );

    client.put("k", "v").await.unwrap();

    let puts = cluster.requests("put");
    assert_eq!(
        puts.first().unwrap().store_id,
        1,
        "first guess is the first peer"
    );
    assert_eq!(puts.first().unwrap().outcome, "NotLeader");
    let last = puts.last().unwrap();
    assert_eq!((last.store_id, last.outcome), (2, "ok"));
    assert_eq!(client.regions_cached()[0].leader, Some(peer_of(1, 2)));
}
