//! Split and merge through the Admin API on 3 real node processes, while the Rust
//! client writes: the client retries transparently across the reshaping, every
//! acknowledged write stays readable, every node reports the same gap-free cover of
//! the key space, and the replicas of each region have equal checksums.

mod common;

use std::time::{Duration, Instant};

use shoal_client::{Client, ClientConfig};
use shoal_proto::adminpb::admin_client::AdminClient;
use shoal_proto::adminpb::{ChecksumRequest, ListRegionsRequest};
use shoal_proto::metapb::Region;

use common::{free_port, start_nodes};

async fn regions_of(addr: &str) -> Vec<Region> {
    let mut admin = AdminClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let resp = admin.list_regions(ListRegionsRequest {}).await.unwrap();
    resp.into_inner()
        .regions
        .into_iter()
        .filter_map(|i| i.region)
        .collect()
}

/// Waits until every node reports the same `n` regions covering the key space.
async fn wait_cover(addrs: &[String], n: usize) -> Vec<Region> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = Vec::new();
        for a in addrs {
            views.push(regions_of(a).await);
        }
        let covers = |v: &Vec<Region>| {
            v.len() == n
                && v[0].start_key.is_empty()
                && v.last().unwrap().end_key.is_empty()
                && v.windows(2).all(|w| w[0].end_key == w[1].start_key)
        };
        if views.iter().all(covers) && views.iter().all(|v| *v == views[0]) {
            return views.swap_remove(0);
        }
        assert!(
            Instant::now() < deadline,
            "no common cover by {n}: {views:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the replicas of `region` reach the same applied index, then checks
/// their checksums are equal.
async fn check_replicas(addrs: &[String], region: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut sums = Vec::new();
        for a in addrs {
            let mut admin = AdminClient::connect(format!("http://{a}")).await.unwrap();
            let c = admin
                .checksum(ChecksumRequest { region_id: region })
                .await
                .unwrap()
                .into_inner();
            assert!(c.region_error.is_none(), "{:?}", c.region_error);
            sums.push((c.applied_index, c.checksum, c.keys));
        }
        if sums.iter().all(|s| s.0 == sums[0].0) {
            assert!(
                sums.iter().all(|s| *s == sums[0]),
                "region {region}: {sums:?}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "region {region}: {sums:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_while_the_client_writes() {
    let base = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let _nodes = start_nodes(base.path(), &addrs, 2);
    let config = ClientConfig {
        request_timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        match Client::connect(addrs.clone(), config.clone()).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "cluster never came up: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // Bounded writer: 300 keys over the whole key space, through the reshaping.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..300u32 {
                let key = vec![(i * 7 % 256) as u8, (i / 256) as u8, (i % 256) as u8];
                let value = format!("v{i}").into_bytes();
                client.put(&key, &value).await.unwrap();
                acked.push((key, value));
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Region 2 starts at 0x8000; split it at 0xc0, then merge the new right part back.
    let split = client.split([[0xc0u8]]).await.unwrap();
    let new_id = split
        .iter()
        .find(|r| r.start_key == [0xc0])
        .expect("a region starting at the split key")
        .id;
    wait_cover(&addrs, 3).await;
    let merged = client.merge(new_id, 2).await.unwrap();
    assert_eq!(merged.start_key, vec![0x80, 0x00]);
    assert!(merged.end_key.is_empty());
    // And the two original halves into one.
    let all = client.merge(2, 1).await.unwrap();
    assert!(all.start_key.is_empty() && all.end_key.is_empty());
    let acked = writer.await.unwrap();

    let regions = wait_cover(&addrs, 1).await;
    for (k, v) in &acked {
        assert_eq!(client.get(k).await.unwrap().as_ref(), Some(v), "key {k:?}");
    }
    check_replicas(&addrs, regions[0].id).await;
}
