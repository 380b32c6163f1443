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
//! The system key range (keys from `FF FF FF FF` on: the cluster directory) is
//! refused unless the request's context sets `system`, and with TLS on `system` is
//! honoured only for a **store certificate** ([`Caller`]): a client certificate
//! asking for it gets `PermissionDenied` naming why (counted in
//! `shoal_tls_refused_requests_total{reason="system_range"}`). Without TLS anyone
//! may set it (README: Security, what plaintext exposes). Tools reach the
//! directory through the Admin service instead (`ListStores`, `SetStoreState`),
//! which the node serves with its own identity.
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
use crate::security::identity::{Identity, PeerInfo};
use shoal_proto::system::{is_system_key, SYSTEM_START};

/// Who sent a request, as far as the system key range is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// TLS is off: nobody is authenticated, and `system` is honoured for anyone.
    Plaintext,
    /// A store certificate: `system` is honoured.
    Store(u64),
    /// Anyone else on a TLS connection (a client certificate, or no identity at
    /// all): `system` is refused. Holds how the caller is named in the refusal.
    Other(String),
}

impl Caller {
    /// The caller of a request with these extensions, on a node with TLS `tls`.
    pub fn of(extensions: &http::Extensions, tls: bool) -> Caller {
        if !tls {
            return Caller::Plaintext;
        }
        match extensions
            .get::<PeerInfo>()
            .and_then(|i| i.identity.as_ref())
        {
            Some(Identity::Store(id)) => Caller::Store(*id),
            Some(other) => Caller::Other(other.describe()),
            None => Caller::Other("a connection without a certificate".into()),
        }
    }

    /// Whether the request asks for the system range (`ctx.system`), refused with
    /// `PermissionDenied` when this caller may not have it.
    fn system(&self, ctx: &Option<Context>) -> Result<bool, Status> {
        if !ctx.as_ref().is_some_and(|c| c.system) {
            return Ok(false);
        }
        match self {
            Caller::Plaintext | Caller::Store(_) => Ok(true),
            Caller::Other(who) => Err(Status::permission_denied(format!(
                "the system key range (the cluster directory) is for store certificates only; \
                 this request came with a {who}. Tools read and change the directory through \
                 the Admin service (ListStores, SetStoreState)"
            ))),
        }
    }
}

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
    /// TLS is on: `system` needs a store certificate ([`Caller`]).
    tls: bool,
    /// Counts refused requests by reason (the security metrics').
    refused: prometheus::IntCounterVec,
}

impl KvService {
    /// A service over `store` with the node's limits (see `NodeConfig`); its
    /// batched streams stop reading once `draining` turns true (or its sender is
    /// gone); its requests are timed in `requests`. With `tls`, the system range
    /// is for store certificates only, and refusals are counted in `refused`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<RaftStore>,
        max_value_size: usize,
        max_batch_keys: usize,
        raft_entry_max_size: usize,
        draining: tokio::sync::watch::Receiver<bool>,
        requests: Arc<RequestMetrics>,
        tls: bool,
        refused: prometheus::IntCounterVec,
    ) -> Self {
        KvService {
            store,
            max_value_size,
            max_batch_keys,
            raft_entry_max_size,
            draining,
            requests,
            tls,
            refused,
        }
    }

    /// The caller of a request with these extensions.
    pub fn caller(&self, extensions: &http::Extensions) -> Caller {
        Caller::of(extensions, self.tls)
    }

    /// Whether `ctx` asks for the system range and `caller` may have it; a refusal
    /// is counted.
    fn system(&self, ctx: &Option<Context>, caller: &Caller) -> Result<bool, Status> {
        caller.system(ctx).inspect_err(|_| {
            self.refused.with_label_values(&["system_range"]).inc();
        })
    }

    /// A key must be non-empty, at most [`MAX_KEY_SIZE`] bytes, and outside the
    /// system range unless the request's context is a system one its caller may
    /// have.
    fn check_key(&self, key: &[u8], ctx: &Option<Context>, caller: &Caller) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        if is_system_key(key) && !self.system(ctx, caller)? {
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
    async fn do_get(&self, req: GetRequest, caller: &Caller) -> Result<GetResponse, Status> {
        self.check_key(&req.key, &req.context, caller)?;
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
    async fn do_scan(&self, req: ScanRequest, caller: &Caller) -> Result<ScanResponse, Status> {
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
        if !self.system(&req.context, caller)? && (end.is_empty() || end.as_slice() > SYSTEM_START)
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
    async fn do_put(&self, req: PutRequest, caller: &Caller) -> Result<PutResponse, Status> {
        self.check_key(&req.key, &req.context, caller)?;
        self.check_value(&req.value)?;
        let region_error = self
            .write(req.context, vec![put_op(req.key, req.value)])
            .await?
            .err();
        Ok(PutResponse { region_error })
    }

    /// Serves one Delete request.
    async fn do_delete(
        &self,
        req: DeleteRequest,
        caller: &Caller,
    ) -> Result<DeleteResponse, Status> {
        self.check_key(&req.key, &req.context, caller)?;
        let region_error = self
            .write(req.context, vec![delete_op(req.key)])
            .await?
            .err();
        Ok(DeleteResponse { region_error })
    }

    /// Serves one BatchWrite request.
    async fn do_batch_write(
        &self,
        req: BatchWriteRequest,
        caller: &Caller,
    ) -> Result<BatchWriteResponse, Status> {
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
            self.check_key(&m.key, &req.context, caller)?;
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
        caller: &Caller,
    ) -> Result<CompareAndSwapResponse, Status> {
        self.check_key(&req.key, &req.context, caller)?;
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
/// each is timed (`request_metrics`). `caller` is who sent it ([`Caller::of`]).
impl KvService {
    /// Serves one Get request.
    pub async fn serve_get(&self, req: GetRequest, caller: &Caller) -> Result<GetResponse, Status> {
        self.requests
            .time(Method::Get, self.do_get(req, caller))
            .await
    }

    /// Serves one Scan request.
    pub async fn serve_scan(
        &self,
        req: ScanRequest,
        caller: &Caller,
    ) -> Result<ScanResponse, Status> {
        self.requests
            .time(Method::Scan, self.do_scan(req, caller))
            .await
    }

    /// Serves one Put request.
    pub async fn serve_put(&self, req: PutRequest, caller: &Caller) -> Result<PutResponse, Status> {
        self.requests
            .time(Method::Put, self.do_put(req, caller))
            .await
    }

    /// Serves one Delete request.
    pub async fn serve_delete(
        &self,
        req: DeleteRequest,
        caller: &Caller,
    ) -> Result<DeleteResponse, Status> {
        self.requests
            .time(Method::Delete, self.do_delete(req, caller))
            .await
    }

    /// Serves one BatchWrite request.
    pub async fn serve_batch_write(
        &self,
        req: BatchWriteRequest,
        caller: &Caller,
    ) -> Result<BatchWriteResponse, Status> {
        self.requests
            .time(Method::BatchWrite, self.do_batch_write(req, caller))
            .await
    }

    /// Serves one CompareAndSwap request.
    pub async fn serve_compare_and_swap(
        &self,
        req: CompareAndSwapRequest,
        caller: &Caller,
    ) -> Result<CompareAndSwapResponse, Status> {
        self.requests
            .time(
                Method::CompareAndSwap,
                self.do_compare_and_swap(req, caller),
            )
            .await
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let caller = self.caller(req.extensions());
        self.serve_get(req.into_inner(), &caller)
            .await
            .map(Response::new)
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let caller = self.caller(req.extensions());
        self.serve_scan(req.into_inner(), &caller)
            .await
            .map(Response::new)
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let caller = self.caller(req.extensions());
        self.serve_put(req.into_inner(), &caller)
            .await
            .map(Response::new)
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let caller = self.caller(req.extensions());
        self.serve_delete(req.into_inner(), &caller)
            .await
            .map(Response::new)
    }

    async fn batch_write(
        &self,
        req: Request<BatchWriteRequest>,
    ) -> Result<Response<BatchWriteResponse>, Status> {
        let caller = self.caller(req.extensions());
        self.serve_batch_write(req.into_inner(), &caller)
            .await
            .map(Response::new)
    }

    async fn compare_and_swap(
        &self,
        req: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let caller = self.caller(req.extensions());
        self.serve_compare_and_swap(req.into_inner(), &caller)
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
        let caller = self.caller(req.extensions());
        Ok(Response::new(crate::kv_batch::serve(
            Arc::new(self.clone()),
            caller,
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
