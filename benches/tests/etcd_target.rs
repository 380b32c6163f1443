//! The generator's etcd path against an in-memory etcd KV service: every workload
//! runs with its answers checked, and wrong answers are counted as errors, never as
//! throughput.

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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(mock))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

fn args(addr: &str, workload: Workload) -> BenchArgs {
    BenchArgs {
        workload,
        target: TargetKind::Etcd,
        endpoints: vec![addr.to_string()],
        clients: 4,
        keys: 300,
        value_size: 64,
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
