//! A store that stops answering: the client tries the region's other peers.

mod common;

use common::{peer_of, MockCluster};

#[tokio::test]
async fn a_stopped_leader_store_makes_the_client_try_another_peer() {
    let mut cluster = MockCluster::start(2, &[], &[1]).await;
    let client = cluster.client().await;
    client.put("before", "1").await.unwrap();

    // Store 1 dies; store 2's peer takes over. ListRegions (answered by store 2) still
    // reports the old leader, as a store that has not heard of the election would.
    cluster.stop(1).await;
    cluster.set_leader(1, 2);
    cluster.report_leader(1, Some(1));

    client.put("after", "2").await.unwrap();
    assert_eq!(client.get("after").await.unwrap(), Some(b"2".to_vec()));

    let served: Vec<_> = cluster
        .requests("put")
        .iter()
        .filter(|l| l.outcome == "ok")
        .map(|l| l.store_id)
        .collect();
    assert_eq!(served, vec![1, 2]);
    assert_eq!(client.regions_cached()[0].leader, Some(peer_of(1, 2)));
}

#[tokio::test]
async fn connect_skips_a_dead_endpoint() {
    let mut cluster = MockCluster::start(2, &[], &[2]).await;
    cluster.stop(1).await;
    let client = cluster.client().await;
    client.put("k", "v").await.unwrap();
    assert_eq!(cluster.requests("put").len(), 1);
}
