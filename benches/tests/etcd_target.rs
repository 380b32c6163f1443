//! The generator's etcd path against an in-memory etcd KV service: every workload
//! (YCSB's A-F too) runs with its answers checked, and wrong answers are counted as
//! errors, never as throughput.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use shoal_bench::args::{BenchArgs, TargetKind, Workload};
use shoal_bench::etcdpb::kv_server::{Kv, KvServer};
use shoal_bench::etcdpb::{
    compare, request_op, KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

/// A single-node etcd KV in memory. `corrupt` flips a byte of every value read.
#[derive(Default)]
struct MockEtcd {
    data: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    corrupt: bool,
}

#[tonic::async_trait]
impl Kv for MockEtcd {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let r = req.into_inner();
        let data = self.data.lock().unwrap();
        let limit = if r.limit > 0 {
            r.limit as usize
        } else {
            usize::MAX
        };
        let kvs: Vec<KeyValue> = data
            .range(r.key.clone()..)
            .take_while(|(k, _)| match r.range_end.as_slice() {
                [] => **k == r.key,
                [0] => true,
                end => k.as_slice() < end,
            })
            .take(limit)
            .map(|(k, v)| {
                let mut value = v.clone();
                if self.corrupt {
                    value[0] ^= 1;
                }
                KeyValue {
                    key: k.clone(),
                    value,
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(RangeResponse {
            count: kvs.len() as i64,
            kvs,
            ..Default::default()
        }))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let r = req.into_inner();
        self.data.lock().unwrap().insert(r.key, r.value);
        Ok(Response::new(PutResponse::default()))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let r = req.into_inner();
        let mut data = self.data.lock().unwrap();
        let succeeded = r.compare.iter().all(|c| match &c.target_union {
            Some(compare::TargetUnion::Value(v)) => data.get(&c.key) == Some(v),
            _ => false,
        });
        let ops = if succeeded { r.success } else { r.failure };
        for op in ops {
            if let Some(request_op::Request::RequestPut(p)) = op.request {
                data.insert(p.key, p.value);
            }
        }
        Ok(Response::new(TxnResponse {
            succeeded,
            ..Default::default()
        }))
    }
}

async fn serve(mock: MockEtcd) -> String {
    serve_shared(std::sync::Arc::new(mock)).await
}

/// Serves `mock`, which the test may still look into.
async fn serve_shared(mock: std::sync::Arc<MockEtcd>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::from_arc(mock))
            // Without TCP_NODELAY, a 1000-byte answer waits ~40 ms on delayed ACKs.
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    addr
}

fn args(addr: &str, workload: Workload) -> BenchArgs {
    BenchArgs {
        workload,
        target: TargetKind::Etcd,
        endpoints: vec![addr.to_string()],
        clients: 4,
        keys: Some(300),
        value_size: Some(64),
        ops: Some(400),
        warmup: Duration::from_millis(50),
        request_timeout: Duration::from_secs(2),
        quiet: true,
        ..BenchArgs::defaults()
    }
}

#[tokio::test]
async fn every_workload_runs_against_etcd_with_checked_answers() {
    let addr = serve(MockEtcd::default()).await;
    for w in [
        Workload::Put,
        Workload::Get,
        Workload::Mixed,
        Workload::Scan,
        Workload::Cas,
    ] {
        let report = shoal_bench::runner::run(&args(&addr, w)).await.unwrap();
        assert_eq!(report.errors, 0, "{w:?}: {:?}", report.error_samples);
        assert_eq!(report.ops, 400, "{w:?}");
        assert!(report.ops_per_sec > 0.0);
        assert!(report.latency.p99_ms >= report.latency.p50_ms);
        assert!(report.cluster_work.is_none());
    }
}

#[tokio::test]
async fn every_ycsb_workload_runs_against_etcd_with_its_summary() {
    let mock = std::sync::Arc::new(MockEtcd::default());
    let addr = serve_shared(mock.clone()).await;
    for w in [
        Workload::YcsbA,
        Workload::YcsbB,
        Workload::YcsbC,
        Workload::YcsbD,
        Workload::YcsbE,
        Workload::YcsbF,
    ] {
        let a = BenchArgs {
            keys: None,
            value_size: None,
            ..args(&addr, w)
        };
        let report = shoal_bench::runner::run(&a).await.unwrap();
        assert_eq!(report.errors, 0, "{w:?}: {:?}", report.error_samples);
        assert_eq!(report.ops, 400, "{w:?}");
        // YCSB's defaults: 1000 records of 1000 bytes, all loaded.
        assert_eq!((report.keys, report.value_size), (1000, 1000));
        let y = report.ycsb.as_ref().expect("a YCSB summary");
        let counted = |n: &str| {
            y.operations
                .iter()
                .find(|o| o.name == n)
                .unwrap()
                .operations
        };
        if w == Workload::YcsbF {
            // A read-modify-write counts once, and its read and update count with the
            // reads and updates too.
            let (reads, rmws) = (
                report.latency_by_op["read"].count,
                report.latency_by_op["read-modify-write"].count,
            );
            assert_eq!(reads + rmws, 400);
            assert_eq!(counted("READ"), reads + rmws);
            assert_eq!(counted("UPDATE"), rmws);
            assert_eq!(counted("READ-MODIFY-WRITE"), rmws);
        } else {
            let ops: u64 = y.operations.iter().map(|o| o.operations).sum();
            assert_eq!(ops, 400, "{w:?}");
        }
        let text = report.render();
        assert!(text.contains("[OVERALL], RunTime(ms), "), "{text}");
        assert!(text.contains("[OVERALL], Throughput(ops/sec), "), "{text}");
        let names: Vec<&str> = y.operations.iter().map(|o| o.name.as_str()).collect();
        let want: &[&str] = match w {
            Workload::YcsbA | Workload::YcsbB => &["READ", "UPDATE"],
            Workload::YcsbC => &["READ"],
            Workload::YcsbD => &["READ", "INSERT"],
            Workload::YcsbE => &["INSERT", "SCAN"],
            _ => &["READ", "UPDATE", "READ-MODIFY-WRITE"],
        };
        assert_eq!(names, want, "{w:?}");
        for o in &y.operations {
            assert_eq!(o.returns.get("OK"), Some(&o.operations), "{w:?} {o:?}");
            assert!(text.contains(&format!("[{}], Return=OK, {}", o.name, o.operations)));
            assert!(o.p99_latency_us >= o.p95_latency_us);
        }
    }
    // D and E inserted new records (beyond the 1000 loaded, 1000 bytes each).
    let data = mock.data.lock().unwrap();
    assert!(data.len() > 1000, "{}", data.len());
    assert!(data.values().all(|v| v.len() == 1000));
}

#[tokio::test]
async fn ycsb_reads_of_records_never_loaded_are_not_found() {
    let addr = serve(MockEtcd::default()).await;
    let a = BenchArgs {
        no_preload: true,
        ..args(&addr, Workload::YcsbC)
    };
    let report = shoal_bench::runner::run(&a).await.unwrap();
    assert_eq!(report.ops, 0);
    assert_eq!(report.errors_by_kind["not_found"], 400);
    let y = report.ycsb.unwrap();
    assert_eq!(y.operations[0].returns["NOT_FOUND"], 400);
    assert!(y.render().contains("[READ], Return=NOT_FOUND, 400"));
}

#[tokio::test]
async fn a_read_modify_write_with_a_wrong_read_fails_without_its_update() {
    let addr = serve(MockEtcd {
        corrupt: true,
        ..MockEtcd::default()
    })
    .await;
    let report = shoal_bench::runner::run(&args(&addr, Workload::YcsbF))
        .await
        .unwrap();
    assert_eq!(report.ops, 0);
    assert_eq!(report.errors_by_kind["wrong_answer"], 400);
    let y = report.ycsb.unwrap();
    let names: Vec<&str> = y.operations.iter().map(|o| o.name.as_str()).collect();
    // No update was sent: every read failed first.
    assert_eq!(names, ["READ", "READ-MODIFY-WRITE"]);
    // Every read failed, whether on its own or as a read-modify-write's first step.
    let (read, rmw) = (&y.operations[0], &y.operations[1]);
    assert_eq!((read.operations, rmw.operations), (0, 0));
    assert_eq!(read.returns["WRONG_ANSWER"], 400);
    assert!(rmw.returns["WRONG_ANSWER"] > 100, "{rmw:?}");
}

#[tokio::test]
async fn wrong_values_are_errors_not_throughput() {
    let addr = serve(MockEtcd {
        corrupt: true,
        ..MockEtcd::default()
    })
    .await;
    let report = shoal_bench::runner::run(&args(&addr, Workload::Get))
        .await
        .unwrap();
    assert_eq!(report.ops, 0);
    assert_eq!(report.errors, 400);
    assert_eq!(report.errors_by_kind["wrong_answer"], 400);
}

#[tokio::test]
async fn an_unreachable_etcd_is_counted_as_errors() {
    // Nothing listens on this port: every request fails with a transport error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut a = args(&format!("127.0.0.1:{port}"), Workload::Put);
    a.ops = Some(20);
    let report = shoal_bench::runner::run(&a).await.unwrap();
    assert_eq!(report.ops, 0);
    assert_eq!(report.errors, 20);
    assert!(report.errors_by_kind.keys().all(|k| k.starts_with("etcd_")));
}
