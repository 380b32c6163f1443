//! The Kv gRPC service: validates input, then hands each request to the store.
//!
//! Bad input (empty key, key over 4 KiB, value over `max-value-size`, batch over
//! `max-batch-keys`) is refused with `InvalidArgument` before it reaches Raft; a
//! request too large for the node's gRPC message limit is refused the same way,
//! naming the limits (`message_limit`). A write whose Raft command would exceed
//! `raft-entry-max-size` (a large BatchWrite) gets the `EntryTooLarge` region error
//! before it is proposed. Region errors come back in the response's `region_error`:
//! a proposal that certainly was not applied is `StaleCommand`, one whose outcome is
//! unknown is `Undetermined`; a storage failure is `Internal` (`cmd_status`, shared
//! with the Admin service).
//!
//! A scan answer holds at most `limit` pairs and at most `raft-entry-max-size` bytes
//! of pairs (always at least one pair), so that it fits in one gRPC message; the
//! client continues after the last key it got. With `exclusive_start` the start key
//! itself is never returned.

use std::sync::Arc;

use shoal_proto::errorpb::{region_error, EntryTooLarge, RegionError};
use shoal_proto::kvrpcpb::kv_server::Kv;
use shoal_proto::kvrpcpb::*;
use shoal_proto::raft_cmdpb::{
    request, CompareAndSwapOp, DeleteOp, PutOp, RaftCmdRequest, RaftRequestHeader,
    Request as CmdRequest, Response as CmdResponse,
};
use shoal_proto::Message;
use shoal_raftstore::{RaftStore, ReadKind, ReadOutput};
use tonic::{Request, Response, Status, Streaming};

use crate::cmd_status::CmdResultExt;
use crate::config::MAX_KEY_SIZE;
use crate::request_metrics::{Method, RequestMetrics};
use shoal_proto::system::{is_system_key, SYSTEM_START};

/// Upper bound on one scan's pairs when the request gives no limit (or a bigger one).
pub const MAX_SCAN_LIMIT: usize = 10_000;

/// The Kv service of one node.
#[derive(Clone)]
pub struct KvService {
    store: Arc<RaftStore>,
    max_value_size: usize,
    max_batch_keys: usize,
    raft_entry_max_size: usize,
    /// Turns true when the node begins shutting down: batched streams stop reading.
    draining: tokio::sync::watch::Receiver<bool>,
    /// Request durations by method and outcome.
    requests: Arc<RequestMetrics>,
}

impl KvService {
    /// A service over `store` with the node's limits (see `NodeConfig`); its
    /// batched streams stop reading once `draining` turns true (or its sender is
    /// gone); its requests are timed in `requests`.
    pub fn new(
        store: Arc<RaftStore>,
        max_value_size: usize,
        max_batch_keys: usize,
        raft_entry_max_size: usize,
        draining: tokio::sync::watch::Receiver<bool>,
        requests: Arc<RequestMetrics>,
    ) -> Self {
        KvService {
            store,
            max_value_size,
            max_batch_keys,
            raft_entry_max_size,
            draining,
            requests,
        }
    }

    /// A key must be non-empty, at most [`MAX_KEY_SIZE`] bytes, and outside the
    /// system range unless the request's context is a system one.
    fn check_key(key: &[u8], ctx: &Option<Context>) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        if is_system_key(key) && !ctx.as_ref().is_some_and(|c| c.system) {
            return Err(Status::invalid_argument(
                "keys from FF FF FF FF on are reserved for Shoal's cluster directory",
            ));
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
        let size = request.encoded_len();
        if size > self.raft_entry_max_size {
            return Ok(Err(RegionError {
                message: format!(
                    "the write is {size} bytes as a Raft command, over raft-entry-max-size \
                     ({} bytes); split it into smaller writes",
                    self.raft_entry_max_size
                ),
                kind: Some(region_error::Kind::EntryTooLarge(EntryTooLarge {
                    region_id,
                    entry_size: size as u64,
                })),
            }));
        }
        self.store.write(request).await.into_answer(region_id)
    }

    async fn read(
        &self,
        ctx: Option<Context>,
        kind: ReadKind,
    ) -> Result<Result<ReadOutput, RegionError>, Status> {
        let header = header(ctx)?;
        let region_id = header.region_id;
        self.store.read(header, kind).await.into_answer(region_id)
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

/// What one scan answers: `pairs` without the start key when `exclusive`, at most
/// `limit` of them, and no more pairs than fit in `max_bytes` (encoded), but at
/// least one.
fn scan_page(
    pairs: Vec<KvPair>,
    start: &[u8],
    exclusive: bool,
    limit: usize,
    max_bytes: usize,
) -> Vec<KvPair> {
    let mut bytes = 0usize;
    let mut page = Vec::new();
    for pair in pairs {
        if exclusive && pair.key.as_slice() <= start {
            continue;
        }
        // Field tag and length prefix of the repeated `pairs` entry.
        let size = pair.encoded_len() + 8;
        if page.len() == limit || (!page.is_empty() && bytes + size > max_bytes) {
            break;
        }
        bytes += size;
        page.push(pair);
    }
    page
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

/// The handlers behind [`KvService::serve_get`] and the others.
impl KvService {
    /// Serves one Get request.
    async fn do_get(&self, req: GetRequest) -> Result<GetResponse, Status> {
        Self::check_key(&req.key, &req.context)?;
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
        Ok(resp)
    }

    /// Serves one Scan request.
    async fn do_scan(&self, req: ScanRequest) -> Result<ScanResponse, Status> {
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
        // A user's scan stops before the system range.
        let mut end = req.end_key;
        if !req.context.as_ref().is_some_and(|c| c.system)
            && (end.is_empty() || end.as_slice() > SYSTEM_START)
        {
            end = SYSTEM_START.to_vec();
            if req.start_key.as_slice() >= SYSTEM_START {
                return Ok(ScanResponse::default());
            }
        }
        let exclusive = req.exclusive_start;
        let start = req.start_key;
        let kind = ReadKind::Scan {
            start: start.clone(),
            end,
            // One more, in case the first pair is the excluded start key.
            limit: limit + usize::from(exclusive),
        };
        let resp = match self.read(req.context, kind).await? {
            Ok(ReadOutput::Pairs(pairs)) => ScanResponse {
                region_error: None,
                pairs: scan_page(pairs, &start, exclusive, limit, self.raft_entry_max_size),
            },
            Ok(ReadOutput::Value(_)) => return Err(Status::internal("a scan returned a value")),
            Err(e) => ScanResponse {
                region_error: Some(e),
                pairs: Vec::new(),
            },
        };
        Ok(resp)
    }

    /// Serves one Put request.
    async fn do_put(&self, req: PutRequest) -> Result<PutResponse, Status> {
        Self::check_key(&req.key, &req.context)?;
        self.check_value(&req.value)?;
        let region_error = self
            .write(req.context, vec![put_op(req.key, req.value)])
            .await?
            .err();
        Ok(PutResponse { region_error })
    }

    /// Serves one Delete request.
    async fn do_delete(&self, req: DeleteRequest) -> Result<DeleteResponse, Status> {
        Self::check_key(&req.key, &req.context)?;
        let region_error = self
            .write(req.context, vec![delete_op(req.key)])
            .await?
            .err();
        Ok(DeleteResponse { region_error })
    }

    /// Serves one BatchWrite request.
    async fn do_batch_write(&self, req: BatchWriteRequest) -> Result<BatchWriteResponse, Status> {
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
            Self::check_key(&m.key, &req.context)?;
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
        Ok(BatchWriteResponse { region_error })
    }

    /// Serves one CompareAndSwap request.
    async fn do_compare_and_swap(
        &self,
        req: CompareAndSwapRequest,
    ) -> Result<CompareAndSwapResponse, Status> {
        Self::check_key(&req.key, &req.context)?;
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
        Ok(resp)
    }
}

/// One handler per request kind, shared by the unary calls and the batched stream;
/// each is timed (`request_metrics`).
impl KvService {
    /// Serves one Get request.
    pub async fn serve_get(&self, req: GetRequest) -> Result<GetResponse, Status> {
        self.requests.time(Method::Get, self.do_get(req)).await
    }

    /// Serves one Scan request.
    pub async fn serve_scan(&self, req: ScanRequest) -> Result<ScanResponse, Status> {
        self.requests.time(Method::Scan, self.do_scan(req)).await
    }

    /// Serves one Put request.
    pub async fn serve_put(&self, req: PutRequest) -> Result<PutResponse, Status> {
        self.requests.time(Method::Put, self.do_put(req)).await
    }

    /// Serves one Delete request.
    pub async fn serve_delete(&self, req: DeleteRequest) -> Result<DeleteResponse, Status> {
        self.requests
            .time(Method::Delete, self.do_delete(req))
            .await
    }

    /// Serves one BatchWrite request.
    pub async fn serve_batch_write(
        &self,
        req: BatchWriteRequest,
    ) -> Result<BatchWriteResponse, Status> {
        self.requests
            .time(Method::BatchWrite, self.do_batch_write(req))
            .await
    }

    /// Serves one CompareAndSwap request.
    pub async fn serve_compare_and_swap(
        &self,
        req: CompareAndSwapRequest,
    ) -> Result<CompareAndSwapResponse, Status> {
        self.requests
            .time(Method::CompareAndSwap, self.do_compare_and_swap(req))
            .await
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.serve_get(req.into_inner()).await.map(Response::new)
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.serve_scan(req.into_inner()).await.map(Response::new)
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.serve_put(req.into_inner()).await.map(Response::new)
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.serve_delete(req.into_inner()).await.map(Response::new)
    }

    async fn batch_write(
        &self,
        req: Request<BatchWriteRequest>,
    ) -> Result<Response<BatchWriteResponse>, Status> {
        self.serve_batch_write(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn compare_and_swap(
        &self,
        req: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        self.serve_compare_and_swap(req.into_inner())
            .await
            .map(Response::new)
    }

    type BatchCommandsStream = crate::kv_batch::ResponseStream;

    async fn batch_commands(
        &self,
        req: Request<Streaming<BatchCommandsRequest>>,
    ) -> Result<Response<Self::BatchCommandsStream>, Status> {
        // A frame of answers stays under any client's message limit: at most 1 MiB
        // of answers (a larger answer alone), far more than 256 small ones.
        let max_frame_bytes = self.raft_entry_max_size.min(1 << 20);
        Ok(Response::new(crate::kv_batch::serve(
            Arc::new(self.clone()),
            req.into_inner(),
            self.draining.clone(),
            max_frame_bytes,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &[u8], value_len: usize) -> KvPair {
        KvPair {
            key: key.to_vec(),
            value: vec![0; value_len],
        }
    }

    #[test]
    fn a_scan_page_drops_the_excluded_start_and_keeps_to_its_limits() {
        let pairs = vec![pair(b"a", 1), pair(b"b", 1), pair(b"c", 1)];
        let keys = |p: Vec<KvPair>| p.into_iter().map(|p| p.key).collect::<Vec<_>>();
        assert_eq!(
            keys(scan_page(pairs.clone(), b"a", true, 2, 1 << 20)),
            [b"b", b"c"]
        );
        assert_eq!(
            keys(scan_page(pairs.clone(), b"a", false, 2, 1 << 20)),
            [b"a", b"b"]
        );
        // The start key absent: the extra pair read is cut by the limit.
        assert_eq!(
            keys(scan_page(pairs.clone(), b"0", true, 2, 1 << 20)),
            [b"a", b"b"]
        );
        // Byte budget: at least one pair, then only what fits.
        let big = vec![pair(b"a", 600), pair(b"b", 600), pair(b"c", 600)];
        assert_eq!(keys(scan_page(big.clone(), b"", false, 10, 100)), [b"a"]);
        assert_eq!(keys(scan_page(big, b"", false, 10, 1300)), [b"a", b"b"]);
    }
}
