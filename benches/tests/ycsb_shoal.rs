//! YCSB's core workloads A-F against a real Shoal node (in-process, one store, four
//! regions), through `shoal-client`: YCSB's load phase writes the records, each
//! workload runs a few hundred operations with every read checked, and the report
//! carries YCSB's per-operation summary. No timing is asserted.

use std::time::{Duration, Instant};

use shoal_bench::args::{BenchArgs, TargetKind, Workload};
use shoal_bench::workload::{key_of, value_of};
use shoal_server::config::NodeConfig;
use tokio::sync::oneshot;

/// A one-store node on 127.0.0.1, stopped by [`Node::stop`].
struct Node {
    addr: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
    _dir: tempfile::TempDir,
}

async fn start_node(regions: usize) -> Node {
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
        raft_tick_ms: 20,
        ..NodeConfig::default()
    };
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(shoal_server::node::run(cfg, listener, async {
        let _ = rx.await;
    }));
    Node {
        addr,
        stop,
        task,
        _dir: dir,
    }
}

impl Node {
    /// A client once every region has a leader (at most 30 s).
    async fn ready_client(&self) -> shoal_client::Client {
        let config = shoal_client::ClientConfig {
            request_timeout: Duration::from_secs(10),
            ..shoal_client::ClientConfig::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(c) =
                shoal_client::Client::connect(vec![self.addr.clone()], config.clone()).await
            {
                if let Ok((regions, _)) = c.list_regions().await {
                    if !regions.is_empty() && regions.iter().all(|r| r.leader.is_some()) {
                        return c;
                    }
                }
            }
            assert!(Instant::now() < deadline, "the node never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn args(addr: &str, workload: Workload) -> BenchArgs {
    BenchArgs {
        workload,
        target: TargetKind::Shoal,
        endpoints: vec![addr.to_string()],
        clients: 4,
        ops: Some(300),
        warmup: Duration::from_millis(100),
        request_timeout: Duration::from_secs(10),
        quiet: true,
        ..BenchArgs::defaults()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ycsb_workload_runs_against_a_shoal_node() {
    let node = start_node(4).await;
    let client = node.ready_client().await;
    for w in [
        Workload::YcsbA,
        Workload::YcsbB,
        Workload::YcsbC,
        Workload::YcsbD,
        Workload::YcsbE,
        Workload::YcsbF,
    ] {
        let report = shoal_bench::runner::run(&args(&node.addr, w))
            .await
            .unwrap();
        assert_eq!(report.errors, 0, "{w:?}: {:?}", report.error_samples);
        assert_eq!(report.ops, 300, "{w:?}");
        assert_eq!(report.regions, Some(4));
        let y = report.ycsb.as_ref().expect("a YCSB summary");
        assert!(!y.operations.is_empty(), "{w:?}");
        for o in &y.operations {
            assert_eq!(o.returns.get("OK"), Some(&o.operations), "{w:?}: {o:?}");
            assert_eq!(o.returns.len(), 1, "{w:?}: only OK: {o:?}");
        }
        let text = report.render();
        assert!(text.contains("[OVERALL], Throughput(ops/sec), "), "{text}");
        let first = &y.operations[0].name;
        assert!(text.contains(&format!("[{first}], 99thPercentileLatency(us), ")));
    }
    // The load phase wrote YCSB's 1000 records of 1000 bytes; D and E inserted
    // more, with the bytes the generator derives from their keys.
    let loaded = client.get(key_of(999)).await.unwrap();
    assert_eq!(loaded, Some(value_of(&key_of(999), 1000)));
    let inserted = client.get(key_of(1000)).await.unwrap();
    assert_eq!(inserted, Some(value_of(&key_of(1000), 1000)));
    node.stop().await;
}
