//! Issue 10 item 3: a panic on any thread ends the `shoal node` process. One forged
//! heartbeat (a term far above the current one, a commit index far beyond the
//! receiver's log) makes raft-rs panic on the poller thread that steps it. Before
//! the panic hook, that thread died and the process stayed up with the region's
//! peer stuck: requests to it never got an answer. Now the node must either answer
//! or have exited; never be alive and silent.

mod common;

use std::time::{Duration, Instant};

use common::{connect, free_port, start_nodes};
use protobuf::Message as _;
use raft::eraftpb::{Message as RaftPbMessage, MessageType};
use shoal_proto::kvrpcpb::kv_client::KvClient;
use shoal_proto::kvrpcpb::{Context, GetRequest};
use shoal_proto::raft_serverpb::raft_client::RaftClient;
use shoal_proto::raft_serverpb::{RaftMessage, RaftMessageBatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_heartbeat_never_leaves_a_node_alive_and_silent() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut nodes = start_nodes(dir.path(), &addrs, 1);
    let client = connect(addrs.clone()).await;
    client.put(b"k", b"v").await.unwrap();

    // The region, its leader, and a follower to forge a heartbeat for.
    let (regions, _) = client.list_regions().await.unwrap();
    let info = regions
        .iter()
        .find(|r| r.leader.is_some())
        .expect("the region has a leader");
    let region = info.region.clone().unwrap();
    let leader = info.leader.unwrap();
    let follower = *region
        .peers
        .iter()
        .find(|p| p.id != leader.id)
        .expect("a follower");
    let victim = follower.store_id as usize - 1;

    let mut forged = RaftPbMessage::default();
    forged.set_msg_type(MessageType::MsgHeartbeat);
    forged.from = leader.id;
    forged.to = follower.id;
    forged.term = 1_000_000;
    forged.commit = 1_000_000;
    let msg = RaftMessage {
        region_id: region.id,
        from_peer: Some(leader),
        to_peer: Some(follower),
        region_epoch: region.region_epoch,
        message: forged.write_to_bytes().unwrap(),
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
        is_tombstone: false,
        snapshot_transfer: 0,
        extra: None,
    };
    let mut raft = RaftClient::connect(format!("http://{}", addrs[victim]))
        .await
        .unwrap();
    let batch = RaftMessageBatch { msgs: vec![msg] };
    // The stream ends with the node's answer, or breaks if the node dies.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        raft.send(futures::stream::iter(vec![batch])),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Ask the victim's peer directly: any answer (a value or a region error such
    // as NotLeader) shows its poller is alive.
    let get = GetRequest {
        context: Some(Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer: Some(follower),
            system: false,
        }),
        key: b"k".to_vec(),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = nodes.0[victim].try_wait().unwrap() {
            eprintln!("the node exited ({status}) after the forged heartbeat");
            break;
        }
        let answered = match KvClient::connect(format!("http://{}", addrs[victim])).await {
            Ok(mut kv) => tokio::time::timeout(Duration::from_secs(3), kv.get(get.clone()))
                .await
                .map(|r| r.is_ok()),
            Err(_) => Ok(false),
        };
        if answered == Ok(true) {
            eprintln!("the node answers after the forged heartbeat");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store {} is alive but its region {} never answers (last: {answered:?})",
            follower.store_id,
            region.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The rest of the cluster still serves the key.
    assert_eq!(client.get(b"k").await.unwrap(), Some(b"v".to_vec()));
}
