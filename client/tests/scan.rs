//! `scan` walks regions in key order, honouring `limit` and `end`.

mod common;

use common::{test_config, MockCluster};
use shoal_client::{Client, ClientConfig};

async fn cluster_with_data() -> (MockCluster, Client) {
    // Regions [, "d"), ["d", "h"), ["h", "p"), ["p", ) over two stores.
    let cluster = MockCluster::start(2, &["d", "h", "p"], &[1, 2, 1, 2]).await;
    {
        let mut state = cluster.state();
        for k in ["a", "b", "c", "d", "e", "g", "h", "i", "o", "p", "q", "z"] {
            state
                .data
                .insert(k.as_bytes().to_vec(), k.to_uppercase().into_bytes());
        }
    }
    let config = ClientConfig {
        scan_batch_size: 2,
        ..test_config()
    };
    let client = Client::connect(cluster.endpoints(), config).await.unwrap();
    (cluster, client)
}

fn keys(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(k, v)| {
            assert_eq!(v, &k.to_ascii_uppercase());
            String::from_utf8(k.clone()).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn scans_everything_across_regions_in_order() {
    let (cluster, client) = cluster_with_data().await;
    let all = client.scan("", "", 100).await.unwrap();
    assert_eq!(
        keys(&all),
        ["a", "b", "c", "d", "e", "g", "h", "i", "o", "p", "q", "z"]
    );
    let regions: Vec<u64> = cluster
        .requests("scan")
        .iter()
        .map(|l| l.region_id)
        .collect();
    let mut visited = regions.clone();
    visited.dedup();
    assert_eq!(
        visited,
        vec![1, 2, 3, 4],
        "region after region: {regions:?}"
    );
    assert!(cluster.log().iter().all(|l| l.outcome == "ok"));
}

#[tokio::test]
async fn honours_limit_across_a_region_boundary() {
    let (_cluster, client) = cluster_with_data().await;
    let some = client.scan("b", "", 4).await.unwrap();
    assert_eq!(keys(&some), ["b", "c", "d", "e"]);
    assert!(client.scan("", "", 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn honours_end_inside_a_region() {
    let (cluster, client) = cluster_with_data().await;
    let some = client.scan("c", "i", 100).await.unwrap();
    assert_eq!(keys(&some), ["c", "d", "e", "g", "h"]);
    // Region 4 ["p", ) was never asked.
    assert!(cluster.requests("scan").iter().all(|l| l.region_id != 4));
    assert!(client.scan("i", "c", 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn empty_regions_are_walked_through() {
    let (cluster, client) = cluster_with_data().await;
    {
        let mut state = cluster.state();
        state
            .data
            .retain(|k, _| k.as_slice() < b"d".as_slice() || k.as_slice() >= b"p".as_slice());
    }
    let rest = client.scan("c", "", 3).await.unwrap();
    assert_eq!(keys(&rest), ["c", "p", "q"]);
}

#[tokio::test]
async fn continues_after_keys_of_the_maximum_size() {
    // 4096 bytes is the longest key a store accepts; continuing "after" such a key
    // must not make up a longer one.
    let cluster = MockCluster::start(1, &[], &[1]).await;
    let keys: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'a' + i; 4096]).collect();
    {
        let mut state = cluster.state();
        for k in &keys {
            state.data.insert(k.clone(), b"v".to_vec());
        }
    }
    let config = ClientConfig {
        scan_batch_size: 2,
        ..test_config()
    };
    let client = Client::connect(cluster.endpoints(), config).await.unwrap();
    let got: Vec<Vec<u8>> = client
        .scan("", "", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, keys);
}
