//! The two systems the generator measures, behind one `execute(op)`.
//!
//! - Shoal through `shoal-client`: the region cache routes each request to its
//!   region's leader, and the client retries region errors within the deadline.
//! - etcd through its v3 gRPC KV API: `Put`, linearizable `Range`, and `Txn` for CAS,
//!   with one HTTP/2 channel per endpoint (as Shoal's client has one per store).
//!
//! Every answer is checked: a read must return nothing or exactly `value_of(key)`, a
//! scan must return keys in order from the start key with checked values. A failed
//! check is an error of kind `wrong_answer`, never throughput. A YCSB read must find
//! its record (loaded, or inserted by an insert that has finished): nothing is an
//! error of kind `not_found` (YCSB's NOT_FOUND). YCSB's update and insert are puts;
//! its scan is a range with a limit (etcd: `Range` from the key to the end of the
//! key space, `limit` set); its read-modify-write is a read then a put of the same
//! key, not atomic (as in YCSB), run by [`Target::execute_steps`] as two timed steps. A compare-and-swap
//! whose outcome the client could not learn (`Error::Undetermined`: it may or may not
//! have been applied) is an error of its own kind, `cas_undetermined`: not a wrong
//! answer, and not retried.

use std::time::{Duration, Instant};

use shoal_client::tls::TlsConnector;
use shoal_client::{Client, ClientConfig};
use tonic::transport::{Channel, Endpoint};

use crate::args::{BenchArgs, TargetKind};
use crate::etcdpb::{self, kv_client::KvClient};
use crate::workload::{key_of, value_of, Op};

/// A failed request: a short kind for counting, and the message.
#[derive(Debug, Clone)]
pub struct OpError {
    /// e.g. "deadline_exceeded", "unavailable", "wrong_answer".
    pub kind: String,
    /// The full error, for the first few reported.
    pub message: String,
}

impl OpError {
    fn new(kind: impl Into<String>, message: impl Into<String>) -> OpError {
        OpError {
            kind: kind.into(),
            message: message.into(),
        }
    }

    fn not_found(key: &[u8]) -> OpError {
        OpError::new(
            "not_found",
            format!("record {key:02x?} not found (it was loaded or inserted before)"),
        )
    }
}

/// One timed step of an operation made of steps (a read-modify-write's read, then
/// its update).
#[derive(Debug, Clone)]
pub struct Step {
    /// The step's kind, as [`Op::name`] gives it ("read", "update").
    pub op: &'static str,
    /// How long it took.
    pub took: Duration,
    /// Its outcome.
    pub result: Result<(), OpError>,
}

/// A connected target.
#[derive(Clone)]
pub enum Target {
    /// A Shoal cluster.
    Shoal(Client),
    /// An etcd cluster: one client per endpoint.
    Etcd(Vec<KvClient<Channel>>),
}

impl Target {
    /// Connects to the cluster at `args.endpoints`.
    pub async fn connect(args: &BenchArgs) -> Result<Target, String> {
        let endpoints: Vec<String> = args
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        match args.target {
            TargetKind::Shoal => {
                let config = ClientConfig {
                    request_timeout: args.request_timeout,
                    rpc_timeout: args.request_timeout.min(Duration::from_secs(5)),
                    max_message_size: shoal_client::config::max_message_size_for(
                        args.raft_entry_max_size,
                    ),
                    batch_stream: !args.unary,
                    tls: args.tls.paths()?,
                    ..ClientConfig::default()
                };
                let client = Client::connect(endpoints, config)
                    .await
                    .map_err(|e| format!("cannot reach the Shoal cluster: {e}"))?;
                Ok(Target::Shoal(client))
            }
            TargetKind::Etcd => {
                let tls = match args.tls.paths()? {
                    Some(paths) => Some(TlsConnector::new(&paths)?),
                    None => None,
                };
                let mut clients = Vec::new();
                for e in endpoints {
                    let uri = if tls.is_some() {
                        shoal_client::tls::channel_uri(&e)
                    } else if e.contains("://") {
                        e.clone()
                    } else {
                        format!("http://{e}")
                    };
                    let ep = Endpoint::from_shared(uri)
                        .map_err(|err| format!("invalid endpoint {e:?}: {err}"))?
                        .connect_timeout(Duration::from_secs(3))
                        .timeout(args.request_timeout)
                        .tcp_nodelay(true);
                    clients.push(KvClient::new(match &tls {
                        Some(tls) => tls.lazy_channel(ep),
                        None => ep.connect_lazy(),
                    }));
                }
                Ok(Target::Etcd(clients))
            }
        }
    }

    /// Runs one request for client loop `client` and checks its answer.
    pub async fn execute(&self, client: usize, op: Op, value_size: usize) -> Result<(), OpError> {
        match self {
            Target::Shoal(c) => shoal_execute(c, op, value_size).await,
            Target::Etcd(cs) => etcd_execute(cs[client % cs.len()].clone(), op, value_size).await,
        }
    }

    /// As [`Target::execute`], and an operation made of steps (read-modify-write)
    /// runs its steps one by one, each timed and pushed to `steps`; the operation
    /// fails with its first failed step (the update is not sent if the read failed).
    pub async fn execute_steps(
        &self,
        client: usize,
        op: Op,
        value_size: usize,
        steps: &mut Vec<Step>,
    ) -> Result<(), OpError> {
        let Op::ReadModifyWrite(k) = op else {
            return self.execute(client, op, value_size).await;
        };
        for step in [Op::Read(k), Op::Update(k)] {
            let t0 = Instant::now();
            let result = self.execute(client, step, value_size).await;
            steps.push(Step {
                op: step.name(),
                took: t0.elapsed(),
                result: result.clone(),
            });
            result?;
        }
        Ok(())
    }
}

fn check_value(key: &[u8], got: &[u8], value_size: usize) -> Result<(), OpError> {
    if got == value_of(key, value_size).as_slice() {
        Ok(())
    } else {
        Err(OpError::new(
            "wrong_answer",
            format!(
                "key {key:02x?} holds {} bytes that are not what the generator wrote",
                got.len()
            ),
        ))
    }
}

fn check_scan<'a>(
    start: &[u8],
    limit: u32,
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    value_size: usize,
) -> Result<(), OpError> {
    let mut prev: Option<&[u8]> = None;
    let mut n = 0u32;
    for (k, v) in pairs {
        n += 1;
        let ordered = k >= start && prev.is_none_or(|p| k > p);
        if !ordered || n > limit {
            return Err(OpError::new(
                "wrong_answer",
                format!("scan from {start:02x?} returned keys out of order or over the limit"),
            ));
        }
        check_value(k, v, value_size)?;
        prev = Some(k);
    }
    Ok(())
}

fn shoal_error(e: shoal_client::Error) -> OpError {
    use shoal_client::Error as E;
    let kind = match &e {
        E::DeadlineExceeded { .. } => "deadline_exceeded".to_string(),
        E::Unreachable { .. } => "unreachable".to_string(),
        E::Rejected { code, .. } => format!("rejected_{code:?}").to_lowercase(),
        E::Region { .. } => "region_error".to_string(),
        // Only compare-and-swap ends this way (the client retries idempotent ops).
        E::Undetermined { .. } => "cas_undetermined".to_string(),
        _ => "client_error".to_string(),
    };
    OpError::new(kind, e.to_string())
}

async fn shoal_put(c: &Client, k: [u8; 8], value_size: usize) -> Result<(), OpError> {
    c.put(k, value_of(&k, value_size))
        .await
        .map_err(shoal_error)
}

/// Reads `k` and checks its value; whether it was found.
async fn shoal_get(c: &Client, k: [u8; 8], value_size: usize) -> Result<bool, OpError> {
    match c.get(k).await.map_err(shoal_error)? {
        Some(v) => check_value(&k, &v, value_size).map(|()| true),
        None => Ok(false),
    }
}

/// A YCSB read: the record must be there.
async fn shoal_read(c: &Client, k: [u8; 8], value_size: usize) -> Result<(), OpError> {
    match shoal_get(c, k, value_size).await? {
        true => Ok(()),
        false => Err(OpError::not_found(&k)),
    }
}

async fn shoal_execute(c: &Client, op: Op, value_size: usize) -> Result<(), OpError> {
    match op {
        Op::Put(k) | Op::Update(k) => shoal_put(c, k, value_size).await,
        Op::Insert(i) => shoal_put(c, key_of(i), value_size).await,
        Op::Get(k) => shoal_get(c, k, value_size).await.map(|_| ()),
        Op::Read(k) => shoal_read(c, k, value_size).await,
        Op::ReadModifyWrite(k) => {
            shoal_read(c, k, value_size).await?;
            shoal_put(c, k, value_size).await
        }
        Op::Scan(k, limit) => {
            let pairs = c.scan(k, b"", limit as usize).await.map_err(shoal_error)?;
            let it = pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
            check_scan(&k, limit, it, value_size)
        }
        Op::Cas(k) => {
            let v = value_of(&k, value_size);
            let out = c
                .compare_and_swap(k, Some(v.clone()), &v)
                .await
                .map_err(shoal_error)?;
            match out.previous {
                // Swapped, or found the key absent (not preloaded), or found the value
                // it swaps in: all correct answers.
                Some(prev) if !out.succeeded && prev != v => check_value(&k, &prev, value_size),
                _ => Ok(()),
            }
        }
    }
}

fn etcd_error(s: tonic::Status) -> OpError {
    let kind = format!("etcd_{:?}", s.code()).to_lowercase();
    OpError::new(kind, format!("{}: {}", s.code(), s.message()))
}

async fn etcd_put(
    kv: &mut KvClient<Channel>,
    k: [u8; 8],
    value_size: usize,
) -> Result<(), OpError> {
    let req = etcdpb::PutRequest {
        key: k.to_vec(),
        value: value_of(&k, value_size),
        ..Default::default()
    };
    kv.put(req).await.map_err(etcd_error)?;
    Ok(())
}

/// Reads `k` (a linearizable `Range` of one key) and checks its value; whether it
/// was found.
async fn etcd_get(
    kv: &mut KvClient<Channel>,
    k: [u8; 8],
    value_size: usize,
) -> Result<bool, OpError> {
    let req = etcdpb::RangeRequest {
        key: k.to_vec(),
        ..Default::default()
    };
    let resp = kv.range(req).await.map_err(etcd_error)?.into_inner();
    match resp.kvs.as_slice() {
        [] => Ok(false),
        [kv] if kv.key == k => check_value(&k, &kv.value, value_size).map(|()| true),
        _ => Err(OpError::new(
            "wrong_answer",
            "range of one key returned others",
        )),
    }
}

/// A YCSB read: the record must be there.
async fn etcd_read(
    kv: &mut KvClient<Channel>,
    k: [u8; 8],
    value_size: usize,
) -> Result<(), OpError> {
    match etcd_get(kv, k, value_size).await? {
        true => Ok(()),
        false => Err(OpError::not_found(&k)),
    }
}

async fn etcd_execute(mut kv: KvClient<Channel>, op: Op, value_size: usize) -> Result<(), OpError> {
    match op {
        Op::Put(k) | Op::Update(k) => etcd_put(&mut kv, k, value_size).await,
        Op::Insert(i) => etcd_put(&mut kv, key_of(i), value_size).await,
        Op::Get(k) => etcd_get(&mut kv, k, value_size).await.map(|_| ()),
        Op::Read(k) => etcd_read(&mut kv, k, value_size).await,
        Op::ReadModifyWrite(k) => {
            etcd_read(&mut kv, k, value_size).await?;
            etcd_put(&mut kv, k, value_size).await
        }
        Op::Scan(k, limit) => {
            let req = etcdpb::RangeRequest {
                key: k.to_vec(),
                range_end: vec![0], // every key >= k
                limit: limit as i64,
                ..Default::default()
            };
            let resp = kv.range(req).await.map_err(etcd_error)?.into_inner();
            let it = resp
                .kvs
                .iter()
                .map(|p| (p.key.as_slice(), p.value.as_slice()));
            check_scan(&k, limit, it, value_size)
        }
        Op::Cas(k) => {
            use etcdpb::compare::{CompareResult, CompareTarget, TargetUnion};
            let v = value_of(&k, value_size);
            let req = etcdpb::TxnRequest {
                compare: vec![etcdpb::Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: k.to_vec(),
                    target_union: Some(TargetUnion::Value(v.clone())),
                }],
                success: vec![etcdpb::RequestOp {
                    request: Some(etcdpb::request_op::Request::RequestPut(
                        etcdpb::PutRequest {
                            key: k.to_vec(),
                            value: v,
                            ..Default::default()
                        },
                    )),
                }],
                failure: vec![],
            };
            kv.txn(req).await.map_err(etcd_error)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::key_of;

    #[test]
    fn an_undetermined_cas_is_its_own_error_kind() {
        let err = shoal_client::Error::Undetermined {
            request: shoal_client::RequestInfo {
                op: "compare_and_swap",
                key: Some(b"k".to_vec()),
                region_id: Some(1),
            },
            attempts: 1,
            cause: Box::new(shoal_client::Failure::Timeout {
                address: "127.0.0.1:1".into(),
                after: Duration::from_secs(1),
            }),
        };
        let e = shoal_error(err);
        assert_eq!(e.kind, "cas_undetermined");
        assert!(e.message.contains("outcome unknown"), "{}", e.message);
    }

    #[test]
    fn scans_are_checked_for_order_limit_and_values() {
        let (a, b) = (key_of(1), key_of(2));
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let (vlo, vhi) = (value_of(&lo, 16), value_of(&hi, 16));
        let good = [(&lo[..], &vlo[..]), (&hi[..], &vhi[..])];
        assert!(check_scan(&lo, 2, good.into_iter(), 16).is_ok());
        assert!(check_scan(&lo, 1, good.into_iter(), 16).is_err());
        let reversed = [(&hi[..], &vhi[..]), (&lo[..], &vlo[..])];
        assert!(check_scan(&lo, 2, reversed.into_iter(), 16).is_err());
        let wrong = [(&lo[..], &vhi[..])];
        let err = check_scan(&lo, 2, wrong.into_iter(), 16).unwrap_err();
        assert_eq!(err.kind, "wrong_answer");
    }
}
