//! Issue 10 item 2: large writes on three real `shoal node` processes. Every write
//! is either acknowledged and then readable, with every replica's checksum agreeing,
//! or refused with an error that names the limit, within seconds: no frame the
//! transport sends may exceed what the receiving Raft service decodes.
//!
//! (Before the limits were derived from `raft-entry-max-size`, the 4 MiB BatchWrite
//! was refused by the Kv service's 4 MiB decode limit with a decoder message, and a
//! few pipelined 1 MiB appends merged into one Raft batch over 4 MiB killed the
//! stream: the puts hung until their deadline.)

mod common;

use std::time::{Duration, Instant};

use common::{connect, free_port, start_nodes};
use shoal_client::{Error, Mutation};
use shoal_proto::kvrpcpb::kv_client::KvClient;
use shoal_proto::kvrpcpb::{Context, PutRequest};

const MIB: usize = 1 << 20;

fn value(tag: u8) -> Vec<u8> {
    // 1 MiB, the default max-value-size, with a recognisable pattern.
    (0..MIB).map(|i| tag ^ (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_values_replicate_or_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let _nodes = start_nodes(dir.path(), &addrs, 1);
    let client = connect(addrs.clone()).await;
    // Wait for a leader: a small write goes through.
    client.put(b"warm-up", b"1").await.unwrap();

    // Two concurrent BatchWrites of three 1 MiB values: each request is under 4 MiB,
    // but their appends, sent in one round, are 6 MiB toward each follower.
    let started = Instant::now();
    let pair = (0..2u8).map(|b| {
        let client = client.clone();
        tokio::spawn(async move {
            let batch = (0..3u8)
                .map(|i| Mutation::Put(format!("pair-{b}-{i}").into_bytes(), value(50 + 3 * b + i)))
                .collect();
            client.batch_write(batch).await
        })
    });
    let results = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(pair))
        .await
        .expect("the two batch writes must finish within seconds");
    for (b, r) in results.into_iter().enumerate() {
        r.unwrap()
            .unwrap_or_else(|e| panic!("3 MiB batch write {b} must be acknowledged: {e}"));
    }

    // A BatchWrite of four 1 MiB values: a 4 MiB request and a 4 MiB Raft entry.
    let batch: Vec<Mutation> = (0..4u8)
        .map(|i| Mutation::Put(format!("batch-{i}").into_bytes(), value(i)))
        .collect();
    tokio::time::timeout(Duration::from_secs(30), client.batch_write(batch))
        .await
        .expect("the batch write must finish within seconds")
        .expect("a 4 MiB batch fits in one 8 MiB entry and must be acknowledged");

    // Eight concurrent 1 MiB puts: pipelined appends that the transport must not
    // merge into one oversized frame.
    let puts = (0..8u8).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let key = format!("put-{i}").into_bytes();
            client.put(&key, value(100 + i)).await
        })
    });
    let results = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(puts))
        .await
        .expect("the puts must finish within seconds");
    for (i, r) in results.into_iter().enumerate() {
        r.unwrap()
            .unwrap_or_else(|e| panic!("1 MiB put {i} must be acknowledged: {e}"));
    }
    eprintln!("large writes acknowledged in {:?}", started.elapsed());

    // Every acknowledged write is readable.
    for i in 0..4u8 {
        let got = client.get(format!("batch-{i}")).await.unwrap();
        assert!(got == Some(value(i)), "batch-{i} reads back");
    }
    for i in 0..8u8 {
        let got = client.get(format!("put-{i}")).await.unwrap();
        assert!(got == Some(value(100 + i)), "put-{i} reads back");
    }
    for b in 0..2u8 {
        for i in 0..3u8 {
            let got = client.get(format!("pair-{b}-{i}")).await.unwrap();
            assert!(
                got == Some(value(50 + 3 * b + i)),
                "pair-{b}-{i} reads back"
            );
        }
    }

    // ... on every replica: the three checksums agree at one applied index.
    let (regions, _) = client.list_regions().await.unwrap();
    let region_id = regions[0].region.as_ref().unwrap().id;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut sums = Vec::new();
        for a in &addrs {
            if let Ok(c) = client.checksum(a, region_id).await {
                sums.push((c.applied_index, c.checksum, c.keys));
            }
        }
        if sums.len() == 3 && sums.iter().all(|s| *s == sums[0]) {
            assert_eq!(
                sums[0].2,
                19 + 4,
                "warm-up + 6 pair + 4 batch + 8 put keys, and the cluster directory's 3 \
                 store records and next store id"
            );
            break;
        }
        assert!(Instant::now() < deadline, "replicas never agreed: {sums:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A 64 MiB put, sent by a client without limits of its own, is refused by the
    // node with InvalidArgument naming the value-size limit (not tonic's decoder).
    let cached = client.regions_cached();
    let leader_region = cached
        .iter()
        .find(|r| r.leader.is_some())
        .expect("a leader is cached");
    let leader = leader_region.leader.unwrap();
    let leader_addr = &addrs[leader.store_id as usize - 1];
    let mut raw = KvClient::connect(format!("http://{leader_addr}"))
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    let status = raw
        .put(PutRequest {
            context: Some(Context {
                region_id: leader_region.region.id,
                region_epoch: leader_region.region.region_epoch,
                peer: Some(leader),
                system: false,
            }),
            key: b"huge".to_vec(),
            value: vec![0; 64 * MIB],
        })
        .await
        .expect_err("a 64 MiB put must be refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("max-value-size = 1048576"),
        "{:?} should name the value-size limit",
        status.message()
    );
    // The Rust client refuses it before sending, naming the limits too.
    match client.put(b"huge", vec![0; 64 * MIB]).await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("max-value-size"), "{m}"),
        other => panic!("want InvalidArgument, got {other:?}"),
    }
    // Slightly over max-value-size: the usual value-size error.
    match client.put(b"big", vec![0; MIB + 1]).await {
        Err(Error::Rejected { code, message, .. }) => {
            assert_eq!(code, tonic::Code::InvalidArgument);
            assert!(message.contains("max-value-size"), "{message}");
        }
        other => panic!("want Rejected, got {other:?}"),
    }
    assert_eq!(client.get(b"huge").await.unwrap(), None);
}
