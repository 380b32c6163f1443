//! `batch_write`: one region per batch, checked before anything is sent.

mod common;

use common::MockCluster;
use shoal_client::{Error, Mutation};

#[tokio::test]
async fn a_batch_within_one_region_is_applied() {
    let cluster = MockCluster::start(2, &["m"], &[1, 2]).await;
    let client = cluster.client().await;
    client.put("q", "old").await.unwrap();
    client
        .batch_write(vec![
            Mutation::Put(b"x".to_vec(), b"1".to_vec()),
            Mutation::Put(b"y".to_vec(), b"2".to_vec()),
            Mutation::Delete(b"q".to_vec()),
        ])
        .await
        .unwrap();
    assert_eq!(client.get("x").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(client.get("y").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(client.get("q").await.unwrap(), None);
    let batches = cluster.requests("batch_write");
    assert_eq!(batches.len(), 1);
    assert_eq!((batches[0].region_id, batches[0].store_id), (2, 2));
    client.batch_write(vec![]).await.unwrap();
}

#[tokio::test]
async fn a_batch_across_two_regions_is_refused_locally() {
    let cluster = MockCluster::start(2, &["m"], &[1, 2]).await;
    let client = cluster.client().await;
    let err = client
        .batch_write(vec![
            Mutation::Put(b"a".to_vec(), b"1".to_vec()),
            Mutation::Put(b"z".to_vec(), b"2".to_vec()),
        ])
        .await
        .unwrap_err();
    match &err {
        Error::CrossRegionBatch {
            first_key,
            first_region,
            other_key,
            other_region,
        } => {
            assert_eq!((first_key.as_slice(), *first_region), (b"a".as_slice(), 1));
            assert_eq!((other_key.as_slice(), *other_region), (b"z".as_slice(), 2));
        }
        other => panic!("expected CrossRegionBatch, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("one region"), "{err}");
    assert!(
        cluster.requests("batch_write").is_empty(),
        "nothing was sent"
    );
    assert!(cluster.state().data.is_empty());
}
