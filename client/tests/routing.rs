//! Requests go to the leader of the key's region, across stores.

mod common;

use common::MockCluster;
use shoal_client::Client;

#[tokio::test]
async fn each_key_goes_to_its_regions_leader() {
    // Region 1 [, "m") led by store 1, region 2 ["m", ) led by store 2.
    let cluster = MockCluster::start(2, &["m"], &[1, 2]).await;
    let client = cluster.client().await;
    assert_eq!(client.regions_cached().len(), 2);

    client.put("apple", "1").await.unwrap();
    client.put("zebra", "2").await.unwrap();
    assert_eq!(client.get("apple").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(client.get("zebra").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(client.get("nothing").await.unwrap(), None);

    let log = cluster.log();
    assert!(
        log.iter().all(|l| l.outcome == "ok"),
        "no misrouted request: {log:?}"
    );
    for l in &log {
        let expected = if l.key.as_slice() < b"m".as_slice() {
            (1, 1)
        } else {
            (2, 2)
        };
        assert_eq!((l.region_id, l.store_id), expected, "{l:?}");
    }
}

#[tokio::test]
async fn delete_and_compare_and_swap() {
    let cluster = MockCluster::start(2, &["m"], &[1, 2]).await;
    let client = cluster.client().await;

    let created = client.compare_and_swap("k", None, "v1").await.unwrap();
    assert!(created.succeeded);
    assert_eq!(created.previous, None);

    let stale = client
        .compare_and_swap("k", Some(b"wrong".to_vec()), "v2")
        .await
        .unwrap();
    assert!(!stale.succeeded);
    assert_eq!(stale.previous, Some(b"v1".to_vec()));

    let swapped = client
        .compare_and_swap("k", Some(b"v1".to_vec()), "v2")
        .await
        .unwrap();
    assert!(swapped.succeeded);
    assert_eq!(client.get("k").await.unwrap(), Some(b"v2".to_vec()));

    let absent = client.compare_and_swap("k", None, "v3").await.unwrap();
    assert!(!absent.succeeded, "key exists, so expected-absent fails");

    client.delete("k").await.unwrap();
    assert_eq!(client.get("k").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_serves_many_tasks() {
    let cluster = MockCluster::start(2, &["m"], &[1, 2]).await;
    let client = cluster.client().await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let client: Client = client.clone();
            tokio::spawn(async move {
                for j in 0..20 {
                    let key = format!("{}{i}-{j}", if i % 2 == 0 { "a" } else { "z" });
                    client.put(&key, &key).await.unwrap();
                    assert_eq!(client.get(&key).await.unwrap(), Some(key.into_bytes()));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(cluster.state().data.len(), 16 * 20);
    // Discovery happened once, at connect.
    assert_eq!(cluster.state().list_calls, 1);
}
