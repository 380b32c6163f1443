//! The Kv gRPC service: validates input, then hands each request to the store.
//!
//! Bad input (empty key, key over 4 KiB, value over `max-value-size`, batch over
//! `max-batch-keys`) is refused with `InvalidArgument` before it reaches Raft.
//! Region errors come back in the response's `region_error`; a dropped proposal is
//! `Unavailable` (retryable); a storage failure is `Internal`.

use std::sync::Arc;

use shoal_proto::errorpb::RegionError;
use shoal_proto::kvrpcpb::kv_server::Kv;
use shoal_proto::kvrpcpb::*;
use shoal_proto::raft_cmdpb::{
    request, CompareAndSwapOp, DeleteOp, PutOp, RaftCmdRequest, RaftRequestHeader,
    Request as CmdRequest, Response as CmdResponse,
};
use shoal_raftstore::{CmdError, RaftStore, ReadKind, ReadOutput};
use tonic::{Request, Response, Status};

use crate::config::MAX_KEY_SIZE;

/// Upper bound on one scan's pairs when the request gives no limit (or a bigger one).
pub const MAX_SCAN_LIMIT: usize = 10_000;

/// The Kv service of one node.
pub struct KvService {
    store: Arc<RaftStore>,
    max_value_size: usize,
    max_batch_keys: usize,
}

impl KvService {
    /// A service over `store`.
    pub fn new(store: Arc<RaftStore>, max_value_size: usize, max_batch_keys: usize) -> Self {
        KvService {
            store,
            max_value_size,
            max_batch_keys,
        }
    }

    fn check_key(key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        if key.len() > MAX_KEY_SIZE {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes, over the {MAX_KEY_SIZE}-byte limit",
                key.len()
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Status> {
        if value.len() > self.max_value_size {
            return Err(Status::invalid_argument(format!(
                "value is {} bytes, over the max-value-size limit of {} bytes",
                value.len(),
                self.max_value_size
            )));
        }
        Ok(())
    }

    async fn write(
        &self,
        ctx: Option<Context>,
        requests: Vec<CmdRequest>,
    ) -> Result<Result<Vec<CmdResponse>, RegionError>, Status> {
        let header = header(ctx)?;
        let region_id = header.region_id;
        let request = RaftCmdRequest {
            header: Some(header),
            requests,
            admin: None,
        };
        split_error(region_id, self.store.write(request).await)
    }

    async fn read(
        &self,
        ctx: Option<Context>,
        kind: ReadKind,
    ) -> Result<Result<ReadOutput, RegionError>, Status> {
        let header = header(ctx)?;
        let region_id = header.region_id;
        split_error(region_id, self.store.read(header, kind).await)
    }
}

/// The Raft header of a request's context.
fn header(ctx: Option<Context>) -> Result<RaftRequestHeader, Status> {
    let ctx = ctx.ok_or_else(|| {
        Status::invalid_argument("request has no context (region id, epoch, peer)")
    })?;
    if ctx.region_id == 0 {
        return Err(Status::invalid_argument(
            "context names no region (region_id 0)",
        ));
    }
    Ok(RaftRequestHeader {
        region_id: ctx.region_id,
        peer: ctx.peer,
        region_epoch: ctx.region_epoch,
    })
}

/// Region errors (`StaleCommand` and `Undetermined` included) go in the response;
/// the rest become gRPC statuses.
fn split_error<T>(
    region_id: u64,
    r: Result<T, CmdError>,
) -> Result<Result<T, RegionError>, Status> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) => match e.to_region_error(region_id) {
            Some(re) => Ok(Err(re)),
            None => match e {
                CmdError::Invalid(m) => Err(Status::invalid_argument(m)),
                other => Err(Status::internal(other.to_string())),
            },
        },
    }
}

fn put_op(key: Vec<u8>, value: Vec<u8>) -> CmdRequest {
    CmdRequest {
        cmd: Some(request::Cmd::Put(PutOp { key, value })),
    }
}

fn delete_op(key: Vec<u8>) -> CmdRequest {
    CmdRequest {
        cmd: Some(request::Cmd::Delete(DeleteOp { key })),
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = req.into_inner();
        Self::check_key(&req.key)?;
        let resp = match self.read(req.context, ReadKind::Get(req.key)).await? {
            Ok(ReadOutput::Value(v)) => GetResponse {
                region_error: None,
                found: v.is_some(),
                value: v.unwrap_or_default(),
            },
            Ok(ReadOutput::Pairs(_)) => return Err(Status::internal("a get returned pairs")),
            Err(e) => GetResponse {
                region_error: Some(e),
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let req = req.into_inner();
        if req.start_key.len() > MAX_KEY_SIZE || req.end_key.len() > MAX_KEY_SIZE {
            return Err(Status::invalid_argument(format!(
                "scan bounds must be at most {MAX_KEY_SIZE} bytes"
            )));
        }
        if !req.end_key.is_empty() && req.end_key <= req.start_key {
            return Err(Status::invalid_argument(
                "scan end key must be greater than its start key",
            ));
        }
        let limit = match req.limit as usize {
            0 => MAX_SCAN_LIMIT,
            n => n.min(MAX_SCAN_LIMIT),
        };
        let kind = ReadKind::Scan {
            start: req.start_key,
            end: req.end_key,
            limit,
        };
        let resp = match self.read(req.context, kind).await? {
            Ok(ReadOutput::Pairs(pairs)) => ScanResponse {
                region_error: None,
                pairs,
            },
            Ok(ReadOutput::Value(_)) => return Err(Status::internal("a scan returned a value")),
            Err(e) => ScanResponse {
                region_error: Some(e),
                pairs: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        Self::check_key(&req.key)?;
        self.check_value(&req.value)?;
        let region_error = self
            .write(req.context, vec![put_op(req.key, req.value)])
            .await?
            .err();
        Ok(Response::new(PutResponse { region_error }))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = req.into_inner();
        Self::check_key(&req.key)?;
        let region_error = self
            .write(req.context, vec![delete_op(req.key)])
            .await?
            .err();
        Ok(Response::new(DeleteResponse { region_error }))
    }

    async fn batch_write(
        &self,
        req: Request<BatchWriteRequest>,
    ) -> Result<Response<BatchWriteResponse>, Status> {
        let req = req.into_inner();
        if req.mutations.is_empty() {
            return Err(Status::invalid_argument("batch has no mutations"));
        }
        if req.mutations.len() > self.max_batch_keys {
            return Err(Status::invalid_argument(format!(
                "batch has {} mutations, over the max-batch-keys limit of {}",
                req.mutations.len(),
                self.max_batch_keys
            )));
        }
        let mut ops = Vec::with_capacity(req.mutations.len());
        for m in req.mutations {
            Self::check_key(&m.key)?;
            match mutation::Op::try_from(m.op) {
                Ok(mutation::Op::Put) => {
                    self.check_value(&m.value)?;
                    ops.push(put_op(m.key, m.value));
                }
                Ok(mutation::Op::Delete) => ops.push(delete_op(m.key)),
                Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "unknown mutation op {}",
                        m.op
                    )))
                }
            }
        }
        let region_error = self.write(req.context, ops).await?.err();
        Ok(Response::new(BatchWriteResponse { region_error }))
    }

    async fn compare_and_swap(
        &self,
        req: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let req = req.into_inner();
        Self::check_key(&req.key)?;
        self.check_value(&req.new_value)?;
        if req.expected_absent && !req.expected_value.is_empty() {
            return Err(Status::invalid_argument(
                "expected_absent and expected_value are exclusive",
            ));
        }
        let op = CmdRequest {
            cmd: Some(request::Cmd::Cas(CompareAndSwapOp {
                key: req.key,
                expected_value: req.expected_value,
                expected_absent: req.expected_absent,
                new_value: req.new_value,
            })),
        };
        let resp = match self.write(req.context, vec![op]).await? {
            Ok(mut rs) => {
                let r = rs.pop().unwrap_or_default();
                CompareAndSwapResponse {
                    region_error: None,
                    succeeded: r.succeeded,
                    previous_found: r.previous_found,
                    previous_value: r.previous_value,
                }
            }
            Err(e) => CompareAndSwapResponse {
                region_error: Some(e),
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }
}
