//! The batched Kv stream's fallback: a store without `BatchCommands` (an older
//! node) answers `Unimplemented`; the client sends unary calls to it from then on,
//! and the request that found out is served once, not lost and not doubled.

mod common;

use common::MockCluster;

#[tokio::test]
async fn a_store_without_the_batched_stream_is_served_by_unary_calls() {
    let cluster = MockCluster::start(1, &[], &[1]).await;
    cluster.state().no_batch_stream = true;
    let client = cluster.client().await;
    client.put("a", "1").await.unwrap();
    client.put("b", "2").await.unwrap();
    assert_eq!(client.get("a").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(client.get("b").await.unwrap(), Some(b"2".to_vec()));
    // Each request reached the store once (the refused stream served nothing).
    let puts = cluster.requests("put");
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert_eq!(cluster.requests("get").len(), 2);
}
