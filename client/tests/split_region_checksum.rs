//! Admin calls for one region and one store: `split_region` (one Split request for
//! one region, retried on region errors, refusals passed through) and `checksum` (one
//! attempt at one store).

mod common;

use common::{region_error, Answer, MockCluster};
use shoal_client::Error;
use shoal_proto::errorpb::{region_error::Kind, RegionNotFound};
use tonic::Code;

fn ranges(regions: &[shoal_client::Region]) -> Vec<(u64, &[u8], &[u8])> {
    regions
        .iter()
        .map(|r| (r.id, r.start_key.as_slice(), r.end_key.as_slice()))
        .collect()
}

#[tokio::test]
async fn split_region_sends_one_request_with_all_keys_and_caches_the_result() {
    let cluster = MockCluster::start(2, &["m"], &[1, 2]).await;
    let client = cluster.client().await;

    // Unsorted, with a duplicate: sorted and deduplicated before sending.
    let regions = client
        .split_region(1, vec![b"g".to_vec(), b"c".to_vec(), b"g".to_vec()])
        .await
        .unwrap();
    assert_eq!(
        ranges(&regions),
        vec![
            (1, b"".as_slice(), b"c".as_slice()),
            (3, b"c".as_slice(), b"g".as_slice()),
            (4, b"g".as_slice(), b"m".as_slice()),
        ]
    );
    let splits = cluster.requests("split");
    assert_eq!(splits.len(), 1, "{splits:?}");
    assert_eq!((splits[0].store_id, splits[0].region_id), (1, 1));
    let cached: Vec<u64> = client
        .regions_cached()
        .iter()
        .map(|c| c.region.id)
        .collect();
    assert_eq!(cached, vec![1, 3, 4, 2]);
    // Writes now route to the new regions without another lookup.
    let lists = cluster.state().list_calls;
    client.put("h", "v").await.unwrap();
    assert_eq!(cluster.requests("put")[0].region_id, 4);
    assert_eq!(cluster.state().list_calls, lists);
}

#[tokio::test]
async fn split_region_retries_after_epoch_change_and_leader_move() {
    let cluster = MockCluster::start(2, &[], &[1]).await;
    let client = cluster.client().await;
    client.list_regions().await.unwrap();
    // Behind the client's back: region 1 splits at "t" and its leader moves.
    cluster.state().split(1, b"t");
    cluster.set_leader(1, 2);

    let regions = client.split_region(1, vec![b"k".to_vec()]).await.unwrap();
    assert_eq!(
        ranges(&regions),
        vec![
            (1, b"".as_slice(), b"k".as_slice()),
            (3, b"k".as_slice(), b"t".as_slice()),
        ]
    );
    let outcomes: Vec<_> = cluster
        .requests("split")
        .iter()
        .map(|l| (l.store_id, l.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![(1, "NotLeader"), (2, "EpochNotMatch"), (2, "ok")],
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn split_region_refusals() {
    let cluster = MockCluster::start(1, &["m"], &[1, 1]).await;
    let client = cluster.client().await;

    // Refused by the client, nothing sent.
    for keys in [vec![], vec![b"".to_vec(), b"c".to_vec()]] {
        let err = client.split_region(1, keys).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }
    assert!(cluster.requests("split").is_empty());

    // Refused by the server: a key outside the region, or at its start.
    for (region_id, key) in [(1, &b"x"[..]), (2, b"m"), (2, b"a")] {
        let err = client
            .split_region(region_id, vec![key.to_vec()])
            .await
            .unwrap_err();
        match &err {
            Error::Rejected { code, message, .. } => {
                assert_eq!(*code, Code::InvalidArgument, "{err}");
                assert!(
                    message.contains(&format!("region {region_id}")),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    // A server that cannot split says so.
    cluster.script(
        None,
        Some("split"),
        1,
        Answer::Status(Code::Unimplemented, "no splits here".into()),
    );
    let err = client
        .split_region(1, vec![b"c".to_vec()])
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Rejected { code: Code::Unimplemented, message, .. } if message == "no splits here"
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    // An unknown region.
    let err = client
        .split_region(42, vec![b"c".to_vec()])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RegionNotFound { region_id: 42, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn checksum_asks_the_given_store_once() {
    let cluster = MockCluster::start(2, &["m"], &[1, 1]).await;
    let client = cluster.client().await;
    for (k, v) in [("a", "1"), ("b", "2"), ("n", "3")] {
        client.put(k, v).await.unwrap();
    }
    cluster.state().applied_index.insert(2, 7);

    let one = client.checksum(&cluster.address(1), 1).await.unwrap();
    let two = client.checksum(&cluster.address(2), 1).await.unwrap();
    assert_eq!(one.region.as_ref().unwrap().id, 1);
    assert_eq!((one.keys, one.applied_index), (2, 1));
    assert_eq!((two.keys, two.applied_index), (2, 7));
    assert_eq!(one.checksum, two.checksum);
    assert_ne!(one.checksum, 0);
    let other = client.checksum(&cluster.address(2), 2).await.unwrap();
    assert_eq!(other.keys, 1);
    assert_ne!(other.checksum, one.checksum);
    // Each call went to the store it named, and only there.
    let asked: Vec<_> = cluster
        .requests("checksum")
        .iter()
        .map(|l| (l.store_id, l.region_id))
        .collect();
    assert_eq!(asked, vec![(1, 1), (2, 1), (2, 2)]);
}

#[tokio::test]
async fn checksum_errors_are_not_retried() {
    let mut cluster = MockCluster::start(2, &[], &[1]).await;
    let client = cluster.client().await;

    // A store that cannot compute checksums.
    cluster.script(
        Some(1),
        Some("checksum"),
        1,
        Answer::Status(
            Code::Unimplemented,
            "region checksum is not implemented".into(),
        ),
    );
    let err = client.checksum(&cluster.address(1), 1).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Rejected { code: Code::Unimplemented, request, .. }
                if request.op == "checksum" && request.region_id == Some(1)
        ),
        "{err:?}"
    );

    // A region the store does not hold: the region error, from that store.
    let err = client.checksum(&cluster.address(2), 9).await.unwrap_err();
    match &err {
        Error::Region {
            store_id, error, ..
        } => {
            assert_eq!(*store_id, 2);
            assert!(
                matches!(error.kind, Some(Kind::RegionNotFound(_))),
                "{err:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A scripted region error is passed through, not retried.
    cluster.script(
        Some(2),
        Some("checksum"),
        1,
        region_error(Kind::RegionNotFound(RegionNotFound { region_id: 1 })),
    );
    assert!(matches!(
        client.checksum(&cluster.address(2), 1).await,
        Err(Error::Region { .. })
    ));
    assert_eq!(cluster.requests("checksum").len(), 3);

    // A stopped store: unreachable after one attempt.
    cluster.stop(2).await;
    let err = client.checksum(&cluster.address(2), 1).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert_eq!(cluster.requests("checksum").len(), 3);
}
