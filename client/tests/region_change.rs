//! Regions changing behind the client's back: splits (`EpochNotMatch`), regions that
//! vanish (`RegionNotFound`), keys that moved (`KeyNotInRegion`).

mod common;

use common::{region_error, MockCluster};
use shoal_proto::errorpb::{region_error::Kind, KeyNotInRegion, RegionNotFound};

#[tokio::test]
async fn epoch_not_match_after_a_split_lands_the_write_in_the_new_region() {
    let cluster = MockCluster::start(2, &[], &[2]).await;
    let client = cluster.client().await;
    assert_eq!(client.regions_cached().len(), 1);

    // Region 1 splits at "m" into 1 [, "m") and 2 ["m", ).
    let parts = cluster.state().split(1, b"m");
    assert_eq!(parts[1].id, 2);

    client.put("x", "after-split").await.unwrap();

    let puts = cluster.requests("put");
    let seen: Vec<_> = puts.iter().map(|l| (l.region_id, l.outcome)).collect();
    assert_eq!(seen, vec![(1, "EpochNotMatch"), (2, "ok")]);
    let cached: Vec<_> = client
        .regions_cached()
        .iter()
        .map(|c| (c.region.id, c.region.region_epoch.unwrap().version))
        .collect();
    assert_eq!(cached, vec![(1, 2), (2, 2)]);
    assert_eq!(
        cluster.state().list_calls,
        1,
        "EpochNotMatch carries the new regions: no reload"
    );

    // Keys left of the split still go to region 1, with its new epoch, at once.
    cluster.clear_log();
    client.put("a", "left").await.unwrap();
    let seen: Vec<_> = cluster
        .requests("put")
        .iter()
        .map(|l| (l.region_id, l.outcome))
        .collect();
    assert_eq!(seen, vec![(1, "ok")]);
}

#[tokio::test]
async fn region_not_found_drops_the_region_and_reloads() {
    let cluster = MockCluster::start(2, &["m"], &[1, 2]).await;
    let client = cluster.client().await;
    cluster.script(
        Some(1),
        Some("get"),
        1,
        region_error(Kind::RegionNotFound(RegionNotFound { region_id: 1 })),
    );

    assert_eq!(client.get("a").await.unwrap(), None);

    assert_eq!(
        cluster.state().list_calls,
        2,
        "one reload after RegionNotFound"
    );
    let gets: Vec<_> = cluster.requests("get").iter().map(|l| l.outcome).collect();
    assert_eq!(gets, vec!["RegionNotFound", "ok"]);
}

#[tokio::test]
async fn a_merged_away_region_is_found_again() {
    let cluster = MockCluster::start(2, &["m"], &[1, 2]).await;
    let client = cluster.client().await;
    // Behind the client's back, region 2 merges into region 1, which then splits at
    // "t" into 1 [, "t") and 3 ["t", ). The client still routes "s" to region 2.
    {
        let mut state = cluster.state();
        state.merge(2, 1);
        state.split(1, b"t");
    }

    client.put("s", "v").await.unwrap();

    let seen: Vec<_> = cluster
        .requests("put")
        .iter()
        .map(|l| (l.region_id, l.outcome))
        .collect();
    assert_eq!(seen, vec![(2, "RegionNotFound"), (1, "ok")]);
    assert_eq!(
        cluster.state().data.get(b"s".as_slice()),
        Some(&b"v".to_vec())
    );
    let ids: Vec<_> = client
        .regions_cached()
        .iter()
        .map(|c| c.region.id)
        .collect();
    assert_eq!(ids, vec![1, 3]);
}

#[tokio::test]
async fn key_not_in_region_reloads_and_retries() {
    let cluster = MockCluster::start(2, &["m"], &[1, 2]).await;
    let client = cluster.client().await;
    cluster.script(
        Some(2),
        Some("delete"),
        1,
        region_error(Kind::KeyNotInRegion(KeyNotInRegion {
            key: b"x".to_vec(),
            region_id: 2,
            start_key: b"m".to_vec(),
            end_key: b"w".to_vec(),
        })),
    );

    client.delete("x").await.unwrap();

    assert_eq!(
        cluster.state().list_calls,
        2,
        "one reload after KeyNotInRegion"
    );
    let seen: Vec<_> = cluster
        .requests("delete")
        .iter()
        .map(|l| l.outcome)
        .collect();
    assert_eq!(seen, vec!["KeyNotInRegion", "ok"]);
}
