//! The Kv service of one in-process node, through the client: every operation, and
//! bad input refused with `InvalidArgument` and a precise message before Raft, both
//! on the batched stream (`Kv.BatchCommands`, the client's default) and by unary
//! calls; and many concurrent requests sharing one stream.

use std::time::Duration;

use shoal_client::{Client, ClientConfig, Error, Mutation};
use shoal_server::config::NodeConfig;
use tokio::sync::oneshot;

struct TestNode {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
    _dir: tempfile::TempDir,
}

async fn start(regions: usize, max_value_size: usize) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let status = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = NodeConfig {
        data_dir: dir.path().join("data"),
        addr: addr.clone(),
        status_addr: status.to_string(),
        initial_regions: regions,
        max_value_size,
        max_batch_keys: 4,
        raft_tick_ms: 20,
        ..NodeConfig::default()
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(shoal_server::node::run(cfg, listener, async {
        let _ = rx.await;
    }));
    TestNode {
        addr,
        stop: Some(tx),
        task: Some(task),
        _dir: dir,
    }
}

impl TestNode {
    /// A client on the batched stream, or (`batch_stream` false) unary calls.
    async fn client(&self, batch_stream: bool) -> Client {
        let cfg = ClientConfig {
            request_timeout: Duration::from_secs(10),
            batch_stream,
            ..ClientConfig::default()
        };
        Client::connect(vec![self.addr.clone()], cfg).await.unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

fn rejected_with(e: Error, words: &str) {
    match e {
        Error::Rejected { code, message, .. } => {
            assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
            assert!(
                message.contains(words),
                "{message:?} should mention {words:?}"
            );
        }
        other => panic!("want InvalidArgument mentioning {words:?}, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_across_regions() {
    for batch_stream in [true, false] {
        let node = start(4, 1 << 20).await;
        let c = node.client(batch_stream).await;
        every_operation(&c).await;
        node.stop().await;
    }
}

async fn every_operation(c: &Client) {
    // Keys in different regions (split at 0x40, 0x80, 0xc0).
    for (k, v) in [
        (&b"\x10a"[..], &b"1"[..]),
        (b"\x50b", b"2"),
        (b"\x90c", b"3"),
        (b"\xd0d", b"4"),
    ] {
        c.put(k, v).await.unwrap();
    }
    assert_eq!(c.get(b"\x50b").await.unwrap(), Some(b"2".to_vec()));
    let all = c.scan(b"", b"", 100).await.unwrap();
    assert_eq!(all.len(), 4, "scan walks every region");
    c.delete(b"\x50b").await.unwrap();
    assert_eq!(c.get(b"\x50b").await.unwrap(), None);
    // Compare-and-swap: expected-absent, then expected value, then a mismatch.
    assert!(
        c.compare_and_swap(b"\x11cas", None, b"one")
            .await
            .unwrap()
            .succeeded
    );
    let o = c
        .compare_and_swap(b"\x11cas", Some(b"one".to_vec()), b"two")
        .await
        .unwrap();
    assert!(o.succeeded);
    assert_eq!(o.previous, Some(b"one".to_vec()));
    let o = c
        .compare_and_swap(b"\x11cas", Some(b"one".to_vec()), b"three")
        .await
        .unwrap();
    assert!(!o.succeeded);
    assert_eq!(o.previous, Some(b"two".to_vec()));
    assert_eq!(c.get(b"\x11cas").await.unwrap(), Some(b"two".to_vec()));
    // An atomic batch in one region.
    c.batch_write(vec![
        Mutation::Put(b"\x12x".to_vec(), b"x".to_vec()),
        Mutation::Put(b"\x12y".to_vec(), b"y".to_vec()),
        Mutation::Delete(b"\x10a".to_vec()),
    ])
    .await
    .unwrap();
    assert_eq!(c.get(b"\x12y").await.unwrap(), Some(b"y".to_vec()));
    assert_eq!(c.get(b"\x10a").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_raft() {
    for batch_stream in [true, false] {
        let node = start(1, 1024).await;
        bad_input_is_refused(&node.client(batch_stream).await).await;
        node.stop().await;
    }
}

async fn bad_input_is_refused(c: &Client) {
    c.put(b"ok", b"fine").await.unwrap();
    rejected_with(c.put(b"", b"v").await.unwrap_err(), "empty");
    rejected_with(c.put(vec![b'k'; 4097], b"v").await.unwrap_err(), "4096");
    rejected_with(
        c.put(b"k", vec![0u8; 1025]).await.unwrap_err(),
        "max-value-size",
    );
    let too_many = (0..5u8)
        .map(|i| Mutation::Put(vec![b'b', i], b"v".to_vec()))
        .collect();
    rejected_with(c.batch_write(too_many).await.unwrap_err(), "max-batch-keys");
    // Nothing refused reached the store.
    assert_eq!(c.get(b"k").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_ends_is_answered_in_full_then_marked_last() {
    use shoal_proto::kvrpcpb::batch_commands_request::{request::Cmd, Request};
    use shoal_proto::kvrpcpb::kv_client::KvClient;
    use shoal_proto::kvrpcpb::{BatchCommandsRequest, Context, GetRequest};
    let node = start(1, 1 << 20).await;
    let c = node.client(true).await;
    c.put(b"k", b"v").await.unwrap();
    let region = c.regions_cached()[0].region.clone();
    let context = Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: c.regions_cached()[0].leader,
        system: false,
    };
    let get = |id| Request {
        id,
        cmd: Some(Cmd::Get(GetRequest {
            context: Some(context),
            key: b"k".to_vec(),
        })),
    };
    // Two frames of requests, then the client's side ends.
    let frames = futures::stream::iter([
        BatchCommandsRequest {
            requests: vec![get(1), get(2)],
        },
        BatchCommandsRequest {
            requests: vec![get(3)],
        },
    ]);
    let mut kv = KvClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let mut answers = kv.batch_commands(frames).await.unwrap().into_inner();
    let (mut ids, mut last) = (Vec::new(), Vec::new());
    while let Some(frame) = answers.message().await.unwrap() {
        ids.extend(frame.responses.iter().map(|r| r.id));
        last.push(frame.last);
    }
    ids.sort();
    assert_eq!(ids, [1, 2, 3], "every request answered");
    assert_eq!(last.last(), Some(&true), "the last frame says so: {last:?}");
    assert_eq!(last.iter().filter(|l| **l).count(), 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_in_flight_together_are_split_over_frames_under_the_message_limit() {
    // 12 puts and then 12 gets of ~1 MiB values in flight at once: one frame of
    // them (12 MB) would pass the 9 MiB message limit and break the stream.
    let node = start(1, 1 << 20).await;
    let c = node.client(true).await;
    let value = |i: u8| vec![i; 1_000_000];
    let puts: Vec<_> = (0..12u8)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.put([b'k', i], value(i)).await })
        })
        .collect();
    for p in puts {
        p.await.unwrap().unwrap();
    }
    let gets: Vec<_> = (0..12u8)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { (i, c.get([b'k', i]).await) })
        })
        .collect();
    for g in gets {
        let (i, got) = g.await.unwrap();
        assert!(got.unwrap() == Some(value(i)), "value {i}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_share_one_stream_and_each_gets_its_own_answer() {
    let node = start(4, 1 << 20).await;
    let c = node.client(true).await;
    // 200 tasks, 10 puts each, all in flight together on the one stream: every
    // answer must reach its own caller (ids matched back), and every put be there.
    let tasks: Vec<_> = (0..200u32)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..10u32 {
                    let key = format!("{:08x}", (t * 10 + i).wrapping_mul(0x9E37_79B9));
                    c.put(&key, format!("{t}-{i}")).await.unwrap();
                    // A bad request among good ones is refused alone.
                    if i == 5 {
                        rejected_with(c.put(b"", b"v").await.unwrap_err(), "empty");
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let gets: Vec<_> = (0..2000u32)
        .map(|n| {
            let c = c.clone();
            tokio::spawn(async move {
                let key = format!("{:08x}", n.wrapping_mul(0x9E37_79B9));
                (n, c.get(&key).await.unwrap())
            })
        })
        .collect();
    for g in gets {
        let (n, v) = g.await.unwrap();
        assert_eq!(v, Some(format!("{}-{}", n / 10, n % 10).into_bytes()));
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_continues_after_keys_of_the_maximum_size() {
    // Issue 10 item 9: continuing after a 4096-byte key must not ask for a 4097-byte
    // start key; the client continues with `exclusive_start` instead.
    let node = start(1, 1 << 20).await;
    let cfg = ClientConfig {
        request_timeout: Duration::from_secs(10),
        scan_batch_size: 2,
        ..ClientConfig::default()
    };
    let c = Client::connect(vec![node.addr.clone()], cfg).await.unwrap();
    let keys: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'a' + i; 4096]).collect();
    for k in &keys {
        c.put(k, b"v").await.unwrap();
    }
    let got: Vec<Vec<u8>> = c
        .scan(b"", b"", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, keys, "every key once, in order");
    let from_second: Vec<Vec<u8>> = c
        .scan(&keys[1], b"", 3)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(from_second, keys[1..4].to_vec());
    node.stop().await;
}
