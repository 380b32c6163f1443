//! What a plaintext node's Raft service takes from whoever calls it: a message
//! whose raft-rs bytes hold what the schema does not allow (the nested groups of
//! RUSTSEC-2024-0437) is refused unparsed and counted, and the node serves on;
//! snapshot streams that send a first chunk and then nothing hold the store's
//! receive slots only until their deadline, after which a real snapshot gets
//! through.

mod common;

use std::time::{Duration, Instant};

use common::{connect, free_port, join_node, metric, start_cluster, status_addr, wait_registered};
use protobuf::Message as _;
use raft::eraftpb::{Message as RaftPbMessage, MessageType};
use shoal_client::Directory;
use shoal_proto::metapb::{ChangeKind, Peer, Region};
use shoal_proto::raft_serverpb::raft_client::RaftClient;
use shoal_proto::raft_serverpb::{
    RaftMessage, RaftMessageBatch, SnapshotChunk, SnapshotData, SnapshotFile,
};
use shoal_proto::Message as _;

const T: Duration = Duration::from_secs(60);

/// A message for region `region`'s peer on store `to` from a peer on store 9.
fn envelope(region: u64, to: u64, message: Vec<u8>) -> RaftMessage {
    RaftMessage {
        region_id: region,
        from_peer: Some(Peer {
            id: 9,
            store_id: 9,
            ..Default::default()
        }),
        to_peer: Some(Peer {
            id: to,
            store_id: to,
            ..Default::default()
        }),
        message,
        ..Default::default()
    }
}

/// A heartbeat followed by `depth` nested START_GROUP tags of an unknown field
/// (field 99: tag bytes 0x9b 0x06) and their ends.
fn nested_groups(depth: usize) -> Vec<u8> {
    let mut m = RaftPbMessage::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    let mut b = m.write_to_bytes().unwrap();
    b.extend([0x9b, 0x06].repeat(depth));
    b.extend([0x9c, 0x06].repeat(depth));
    b
}

/// Whether the node's status endpoint answers `/health` with 200.
async fn healthy(status: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(status).await else {
        return false;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /health HTTP/1.1\r\nHost: {status}\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    s.write_all(req.as_bytes()).await.is_ok()
        && s.read_to_string(&mut out).await.is_ok()
        && out.starts_with("HTTP/1.1 200")
}

#[test]
fn a_message_its_schema_does_not_allow_is_refused_unparsed_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = start_cluster(dir.path(), 1, 1);
    let status = status_addr(&nodes[0]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(addrs.clone()).await;
        client.put("before", "v").await.unwrap();
        let name = "shoal_raft_messages_malformed_total";
        assert_eq!(metric(&status, name, &[]).await, 0.0);

        // A million nested groups (2 MB, under the node's message limit), on the
        // Raft stream any caller may open without TLS.
        let crafted = nested_groups(1_000_000);
        let mut raft = RaftClient::connect(format!("http://{}", addrs[0]))
            .await
            .unwrap();
        let batch = RaftMessageBatch {
            msgs: vec![envelope(1, 1, crafted.clone())],
        };
        let sent = tokio::time::timeout(T, raft.send(futures::stream::iter(vec![batch]))).await;
        assert!(
            matches!(sent, Ok(Ok(_))),
            "the stream ended badly: {sent:?}"
        );
        // Alive, and serving: the refusal is counted, nothing else happened.
        let alive = |nodes: &mut Vec<common::NodeProc>| {
            nodes[0]
                .child
                .as_mut()
                .unwrap()
                .try_wait()
                .unwrap()
                .is_none()
        };
        assert!(alive(&mut nodes), "the node died");
        assert!(healthy(&status).await);
        client.put("after", "v").await.unwrap();
        assert_eq!(client.get("before").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(metric(&status, name, &[]).await, 1.0);

        // And as a snapshot's first chunk: refused before anything is written.
        let chunk = SnapshotChunk {
            message: Some(envelope(1, 1, crafted)),
            data: Vec::new(),
        };
        let snap = raft
            .snapshot(futures::stream::iter(vec![chunk]))
            .await
            .unwrap_err();
        assert_eq!(snap.code(), tonic::Code::FailedPrecondition, "{snap:?}");
        assert!(snap.message().contains("a group"), "{snap:?}");

        assert!(alive(&mut nodes), "the node died");
        assert_eq!(metric(&status, name, &[]).await, 2.0);
    });
}

/// The first chunk of a snapshot of a made-up region for store `to`: one file of
/// 1 KiB, of which the chunk carries one byte.
fn stalling_chunk(to: u64) -> SnapshotChunk {
    snapshot_chunk(to, 1024)
}

/// The first chunk of a snapshot to store `to` of a region it does not have,
/// declaring one file of `size` bytes, with its first byte.
fn snapshot_chunk(to: u64, size: u64) -> SnapshotChunk {
    let region = 424_242;
    let data = SnapshotData {
        region: Some(Region {
            id: region,
            ..Default::default()
        }),
        files: vec![SnapshotFile {
            size,
            checksum: 0,
            keys: 1,
        }],
    };
    let mut m = RaftPbMessage::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.mut_snapshot().set_data(data.encode_to_vec().into());
    m.mut_snapshot().mut_metadata().index = 10;
    m.mut_snapshot().mut_metadata().term = 2;
    SnapshotChunk {
        message: Some(envelope(region, to, m.write_to_bytes().unwrap())),
        data: vec![0],
    }
}

#[test]
fn stalled_snapshot_streams_free_their_receive_slots_and_a_real_snapshot_gets_through() {
    let dir = tempfile::tempdir().unwrap();
    let (_nodes, addrs) = start_cluster(dir.path(), 1, 1);
    let addr2 = format!("127.0.0.1:{}", free_port());
    let node2 = join_node(dir.path(), "store2", &addr2, &addrs[0]);
    let status2 = status_addr(&node2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(addrs.clone()).await;
        client.put("k", "v").await.unwrap();
        let directory = Directory::connect(addrs.clone(), Default::default())
            .await
            .unwrap();
        wait_registered(&directory, 2, &addr2).await;

        // Five streams each send a first chunk, then nothing, keeping their
        // connection open (their senders are held). Four take the receive slots;
        // the fifth is refused at once.
        let mut held = Vec::new();
        let mut calls = Vec::new();
        for _ in 0..5 {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(stalling_chunk(2)).await.unwrap();
            held.push(tx);
            let mut raft = RaftClient::connect(format!("http://{addr2}"))
                .await
                .unwrap();
            calls.push(tokio::spawn(async move {
                let started = Instant::now();
                let r = raft
                    .snapshot(tokio_stream_of(rx))
                    .await
                    .map(|_| ())
                    .map_err(|s| (s.code(), s.message().to_string()));
                (r, started.elapsed())
            }));
        }
        let mut refused = None;
        let deadline = Instant::now() + T;
        while refused.is_none() {
            for c in &calls {
                if c.is_finished() {
                    refused = Some(());
                }
            }
            assert!(Instant::now() < deadline, "no stream was refused");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut open = Vec::new();
        for c in calls {
            if c.is_finished() {
                let (r, _) = c.await.unwrap();
                let (code, msg) = r.unwrap_err();
                assert_eq!(code, tonic::Code::FailedPrecondition, "{msg}");
                assert!(msg.contains("already receiving 4"), "{msg}");
            } else {
                open.push(c);
            }
        }
        assert_eq!(open.len(), 4, "four streams hold the four slots");

        // A learner on store 2 needs a real snapshot of the region.
        let region = client.list_regions().await.unwrap().0[0]
            .region
            .clone()
            .unwrap()
            .id;
        client
            .change_peer(region, &[(ChangeKind::AddLearner, 2)])
            .await
            .unwrap();
        let deadline = Instant::now() + T;
        loop {
            if metric(&status2, "shoal_snapshots_applied_total", &[]).await >= 1.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no snapshot reached store 2 in {T:?}: the stalled streams hold its slots"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let replica = client.replica(&addr2, region).await.unwrap();
        assert!(replica.applied_index > 0, "{replica:?}");

        // The stalled streams were cut at their deadline (10 s without a chunk),
        // counted, and left no partial files.
        for c in open {
            let (r, took) = c.await.unwrap();
            let (code, msg) = r.unwrap_err();
            assert_eq!(code, tonic::Code::DeadlineExceeded, "{msg}");
            assert!(took >= Duration::from_secs(9), "cut after {took:?}");
        }
        drop(held);
        assert_eq!(
            metric(&status2, "shoal_snapshot_receive_timeouts_total", &[]).await,
            4.0
        );
        // (Removed on a blocking thread as each stream is cut.)
        let snap_dir = dir.path().join("store2").join("snap");
        let deadline = Instant::now() + T;
        loop {
            let partial: Vec<String> = std::fs::read_dir(&snap_dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("424242"))
                .collect();
            if partial.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "partial files left: {partial:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// A request stream of what `rx` receives, ending when its senders are dropped.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<SnapshotChunk>,
) -> impl futures::Stream<Item = SnapshotChunk> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A sender cannot hold a receive slot by sending a byte now and then (each
/// chunk used to restart the next-chunk deadline, and the whole deadline came
/// from the size it declared), nor declare a snapshot of any size: the receive
/// must bring 64 KiB (or the rest) within each next-chunk deadline, and a
/// declared size past 64 region sizes is refused at once.
#[test]
fn a_trickling_or_boastful_snapshot_sender_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (_nodes, addrs) = start_cluster(dir.path(), 1, 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        connect(addrs.clone()).await.put("k", "v").await.unwrap();
        let mut raft = RaftClient::connect(format!("http://{}", addrs[0]))
            .await
            .unwrap();
        // Declared: far past any region.
        let boast = snapshot_chunk(1, 1 << 50);
        let refused = raft
            .snapshot(futures::stream::iter(vec![boast]))
            .await
            .unwrap_err();
        assert!(refused.message().contains("declares"), "{refused:?}");
        // A byte every two seconds of a 1 MiB snapshot.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(snapshot_chunk(1, 1 << 20)).await.unwrap();
        let trickle = tokio::spawn(async move {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let byte = SnapshotChunk {
                    message: None,
                    data: vec![0],
                };
                if tx.send(byte).await.is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let cut = tokio::time::timeout(T, raft.snapshot(tokio_stream_of(rx)))
            .await
            .expect("the trickling receive was not cut within a minute")
            .unwrap_err();
        let took = started.elapsed();
        trickle.abort();
        assert_eq!(cut.code(), tonic::Code::DeadlineExceeded, "{cut:?}");
        assert!(cut.message().contains("less than"), "{cut:?}");
        assert!(
            took < Duration::from_secs(20),
            "cut only after {took:?} of trickling"
        );
    });
}
