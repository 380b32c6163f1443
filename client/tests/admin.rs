//! Admin helpers: list_regions, status, region, split, merge.

mod common;

use common::{test_config, MockCluster};
use shoal_client::{Client, ClientConfig, Error};
use std::time::Duration;

#[tokio::test]
async fn list_regions_and_status() {
    let cluster = MockCluster::start(2, &["m"], &[1, 2]).await;
    let client = cluster.client().await;
    let (regions, stores) = client.list_regions().await.unwrap();
    assert_eq!(regions.len(), 2);
    assert_eq!(stores.len(), 2);
    assert_eq!(regions[1].leader.unwrap().store_id, 2);

    let status = client.status(&cluster.address(2)).await.unwrap();
    assert_eq!(status.store.unwrap().id, 2);
    assert_eq!(status.counters.unwrap().region_count, 2);
}

#[tokio::test]
async fn split_then_merge() {
    let cluster = MockCluster::start(2, &[], &[2]).await;
    let client = cluster.client().await;

    let regions = client.split(["t", "g", "g"]).await.unwrap();
    let ranges: Vec<_> = regions
        .iter()
        .map(|r| (r.id, r.start_key.clone(), r.end_key.clone()))
        .collect();
    assert_eq!(
        ranges,
        vec![
            (1, b"".to_vec(), b"g".to_vec()),
            (2, b"g".to_vec(), b"t".to_vec()),
            (3, b"t".to_vec(), b"".to_vec()),
        ]
    );
    let cached: Vec<_> = client
        .regions_cached()
        .iter()
        .map(|c| c.region.id)
        .collect();
    assert_eq!(cached, vec![1, 2, 3]);
    assert_eq!(
        cluster.requests("split").len(),
        2,
        "one split per distinct key"
    );

    // Splitting at an existing boundary needs no RPC.
    let again = client.split(["g"]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(cluster.requests("split").len(), 2);
    assert!(matches!(
        client.split([""]).await,
        Err(Error::InvalidArgument(_))
    ));

    let info = client.region(2).await.unwrap();
    assert_eq!(info.region.unwrap().start_key, b"g");

    let target = client.merge(3, 2).await.unwrap();
    assert_eq!(
        (target.start_key.as_slice(), target.end_key.as_slice()),
        (b"g".as_slice(), b"".as_slice())
    );
    let cached: Vec<_> = client
        .regions_cached()
        .iter()
        .map(|c| c.region.id)
        .collect();
    assert_eq!(cached, vec![1, 2]);
    client.put("z", "v").await.unwrap();
    assert_eq!(cluster.requests("put")[0].region_id, 2);
}

#[tokio::test]
async fn unknown_region_is_reported() {
    let cluster = MockCluster::start(1, &[], &[1]).await;
    let client = cluster.client().await;
    let err = client.region(42).await.unwrap_err();
    assert!(
        matches!(err, Error::RegionNotFound { region_id: 42, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn connect_fails_when_nothing_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let config = ClientConfig {
        request_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let err = Client::connect(vec![address], config).await.err().unwrap();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(matches!(
        Client::connect(vec![], test_config()).await,
        Err(Error::Config(_))
    ));
}
