//! The mock store's gRPC services: Kv and Admin over the shared [`State`], with the
//! checks a real store makes (scripted answers first, then region, leader, epoch, key
//! range), and a log entry per request.

use std::sync::{Arc, Mutex};

use shoal_proto::adminpb::admin_server::Admin;
use shoal_proto::adminpb::*;
use shoal_proto::errorpb::{self, region_error::Kind};
use shoal_proto::kvrpcpb::kv_server::Kv;
use shoal_proto::kvrpcpb::*;
use shoal_proto::metapb::{ChangeKind, Store};
use shoal_proto::RegionExt;
use tonic::{Request, Response, Status};

use super::{kind_name, region_error, Answer, Logged, State};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64 of `bytes`, continuing from `hash`.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One mock store's services.
#[derive(Clone)]
pub(crate) struct MockNode {
    pub(crate) store_id: u64,
    pub(crate) address: String,
    pub(crate) state: Arc<Mutex<State>>,
}

/// Runs `check` and logs the request. `Ok(region)`: serve it; `Err(reply)`: answer
/// with the region error (via `with_error`) or the status.
macro_rules! checked {
    ($self:ident, $op:literal, $ctx:expr, $keys:expr, $resp:ident) => {{
        let ctx = $ctx.unwrap_or_default();
        let keys: Vec<&[u8]> = $keys;
        let mut state = $self.state.lock().unwrap();
        let result = state.check($self.store_id, $op, ctx.region_id, ctx.region_epoch, &keys);
        state.log.push(Logged {
            store_id: $self.store_id,
            op: $op,
            region_id: ctx.region_id,
            key: keys.first().map(|k| k.to_vec()).unwrap_or_default(),
            outcome: result.as_ref().err().map_or("ok", kind_name),
        });
        match result {
            Ok(region) => (state, region),
            Err(Answer::Region(e)) =>
            {
                #[allow(clippy::needless_update)]
                return Ok(Response::new($resp {
                    region_error: Some(e),
                    ..Default::default()
                }))
            }
            Err(Answer::Status(code, message)) => return Err(Status::new(code, message)),
        }
    }};
}

#[tonic::async_trait]
impl Kv for MockNode {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = req.into_inner();
        let (state, _) = checked!(self, "get", req.context, vec![&req.key[..]], GetResponse);
        let value = state.data.get(&req.key).cloned();
        Ok(Response::new(GetResponse {
            region_error: None,
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let req = req.into_inner();
        // As the real store: bounds are keys, at most 4096 bytes.
        if req.start_key.len() > 4096 || req.end_key.len() > 4096 {
            return Err(Status::invalid_argument(
                "scan bounds must be at most 4096 bytes",
            ));
        }
        let (state, region) = checked!(
            self,
            "scan",
            req.context,
            vec![&req.start_key[..]],
            ScanResponse
        );
        let end = match (req.end_key.is_empty(), region.end_key.is_empty()) {
            (true, _) => region.end_key.clone(),
            (false, true) => req.end_key.clone(),
            (false, false) => req.end_key.clone().min(region.end_key.clone()),
        };
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit as usize
        };
        let pairs = state
            .data
            .range(req.start_key.clone()..)
            .filter(|(k, _)| !req.exclusive_start || **k != req.start_key)
            .take_while(|(k, _)| end.is_empty() || **k < end)
            .take(limit)
            .map(|(k, v)| KvPair {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        Ok(Response::new(ScanResponse {
            region_error: None,
            pairs,
        }))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        if req.key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        let (mut state, _) = checked!(self, "put", req.context, vec![&req.key[..]], PutResponse);
        state.data.insert(req.key, req.value);
        Ok(Response::new(PutResponse::default()))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = req.into_inner();
        let (mut state, _) = checked!(
            self,
            "delete",
            req.context,
            vec![&req.key[..]],
            DeleteResponse
        );
        state.data.remove(&req.key);
        Ok(Response::new(DeleteResponse::default()))
    }

    async fn batch_write(
        &self,
        req: Request<BatchWriteRequest>,
    ) -> Result<Response<BatchWriteResponse>, Status> {
        let req = req.into_inner();
        let keys = req.mutations.iter().map(|m| &m.key[..]).collect();
        let (mut state, _) = checked!(self, "batch_write", req.context, keys, BatchWriteResponse);
        for m in req.mutations {
            if m.op == mutation::Op::Delete as i32 {
                state.data.remove(&m.key);
            } else {
                state.data.insert(m.key, m.value);
            }
        }
        Ok(Response::new(BatchWriteResponse::default()))
    }

    async fn compare_and_swap(
        &self,
        req: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let req = req.into_inner();
        let (mut state, _) = checked!(
            self,
            "compare_and_swap",
            req.context,
            vec![&req.key[..]],
            CompareAndSwapResponse
        );
        let previous = state.data.get(&req.key).cloned();
        let succeeded = match &previous {
            None => req.expected_absent,
            Some(v) => !req.expected_absent && *v == req.expected_value,
        };
        if succeeded {
            state.data.insert(req.key, req.new_value);
        }
        Ok(Response::new(CompareAndSwapResponse {
            region_error: None,
            succeeded,
            previous_found: previous.is_some(),
            previous_value: previous.unwrap_or_default(),
        }))
    }

    type BatchCommandsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<BatchCommandsResponse, Status>> + Send>,
    >;

    /// As the real store's: each request served as its unary call (a task each),
    /// answered with its id as it completes.
    async fn batch_commands(
        &self,
        req: Request<tonic::Streaming<BatchCommandsRequest>>,
    ) -> Result<Response<Self::BatchCommandsStream>, Status> {
        use batch_commands_request::request::Cmd as Ask;
        use batch_commands_response::response::Cmd as Ans;
        if self.state.lock().unwrap().no_batch_stream {
            return Err(Status::unimplemented("no BatchCommands here"));
        }
        let mut inbound = req.into_inner();
        let (out, answers) = futures::channel::mpsc::unbounded();
        let node = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(frame)) = inbound.message().await {
                for r in frame.requests {
                    let (node, out) = (node.clone(), out.clone());
                    tokio::spawn(async move {
                        let answer = match r.cmd.expect("a command") {
                            Ask::Get(q) => node
                                .get(Request::new(q))
                                .await
                                .map(|a| Ans::Get(a.into_inner())),
                            Ask::Put(q) => node
                                .put(Request::new(q))
                                .await
                                .map(|a| Ans::Put(a.into_inner())),
                            Ask::Delete(q) => node
                                .delete(Request::new(q))
                                .await
                                .map(|a| Ans::Delete(a.into_inner())),
                            Ask::Cas(q) => node
                                .compare_and_swap(Request::new(q))
                                .await
                                .map(|a| Ans::Cas(a.into_inner())),
                            Ask::BatchWrite(q) => node
                                .batch_write(Request::new(q))
                                .await
                                .map(|a| Ans::BatchWrite(a.into_inner())),
                            Ask::Scan(q) => node
                                .scan(Request::new(q))
                                .await
                                .map(|a| Ans::Scan(a.into_inner())),
                        };
                        let cmd = answer.unwrap_or_else(|s| {
                            Ans::Failure(RequestFailure {
                                code: s.code() as i32,
                                message: s.message().to_string(),
                            })
                        });
                        let responses = vec![batch_commands_response::Response {
                            id: r.id,
                            cmd: Some(cmd),
                        }];
                        let _ = out.unbounded_send(Ok(BatchCommandsResponse {
                            responses,
                            last: false,
                        }));
                    });
                }
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

#[tonic::async_trait]
impl Admin for MockNode {
    async fn list_regions(
        &self,
        _req: Request<ListRegionsRequest>,
    ) -> Result<Response<ListRegionsResponse>, Status> {
        let mut state = self.state.lock().unwrap();
        state.list_calls += 1;
        if let Some(answer) = state.scripted(self.store_id, "list_regions") {
            let Answer::Status(code, message) = answer else {
                panic!("list_regions can only be scripted with a status");
            };
            return Err(Status::new(code, message));
        }
        let regions = state
            .regions
            .values()
            .map(|r| RegionInfo {
                region: Some(r.clone()),
                leader: state
                    .reported_leaders
                    .get(&r.id)
                    .copied()
                    .unwrap_or(state.leaders.get(&r.id).copied()),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(ListRegionsResponse {
            regions,
            stores: state.stores.clone(),
        }))
    }

    async fn get_region(
        &self,
        req: Request<GetRegionRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        let id = req.into_inner().region_id;
        let mut state = self.state.lock().unwrap();
        state.get_region_calls += 1;
        let Some(region) = state.regions.get(&id) else {
            let Answer::Region(e) = region_error(Kind::RegionNotFound(errorpb::RegionNotFound {
                region_id: id,
            })) else {
                unreachable!()
            };
            return Ok(Response::new(GetRegionResponse {
                region_error: Some(e),
                region: None,
            }));
        };
        Ok(Response::new(GetRegionResponse {
            region_error: None,
            region: Some(RegionInfo {
                region: Some(region.clone()),
                leader: state.leaders.get(&id).copied(),
                approximate_size: 0,
                approximate_keys: 0,
                ..Default::default()
            }),
        }))
    }

    async fn split(&self, req: Request<SplitRequest>) -> Result<Response<SplitResponse>, Status> {
        let req = req.into_inner();
        let ctx = Some(Context {
            region_id: req.region_id,
            region_epoch: req.region_epoch,
            peer: None,
            system: false,
        });
        let (mut state, region) = checked!(self, "split", ctx, vec![], SplitResponse);
        // As the real store (after the region, leader and epoch checks): each key
        // strictly inside the region, in order, or the request is invalid.
        if let Some(key) = req
            .split_keys
            .iter()
            .find(|k| k.is_empty() || **k == region.start_key || !region.contains_key(k))
        {
            return Err(Status::invalid_argument(format!(
                "split key {key:?} is not strictly inside region {}",
                region.id
            )));
        }
        if !req.split_keys.is_sorted() {
            return Err(Status::invalid_argument("split keys are not sorted"));
        }
        let mut regions = Vec::new();
        let mut id = req.region_id;
        for key in &req.split_keys {
            let parts = state.split(id, key);
            regions.pop();
            id = parts[1].id;
            regions.extend(parts);
        }
        Ok(Response::new(SplitResponse {
            region_error: None,
            regions,
        }))
    }

    async fn merge(&self, req: Request<MergeRequest>) -> Result<Response<MergeResponse>, Status> {
        let req = req.into_inner();
        let epoch = self
            .state
            .lock()
            .unwrap()
            .regions
            .get(&req.source_region_id)
            .and_then(|r| r.region_epoch);
        let ctx = Some(Context {
            region_id: req.source_region_id,
            region_epoch: epoch,
            peer: None,
            system: false,
        });
        let (mut state, _) = checked!(self, "merge", ctx, vec![], MergeResponse);
        let target = state.merge(req.source_region_id, req.target_region_id);
        Ok(Response::new(MergeResponse {
            region_error: None,
            target: Some(target),
        }))
    }

    async fn transfer_leader(
        &self,
        _req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        Err(Status::unimplemented("mock"))
    }

    /// As the real store: to the leader, at the region's epoch; the rules are
    /// `State::change_peer`'s, a refusal is `InvalidArgument`.
    async fn change_peer(
        &self,
        req: Request<ChangePeerRequest>,
    ) -> Result<Response<ChangePeerResponse>, Status> {
        let req = req.into_inner();
        let ctx = Some(Context {
            region_id: req.region_id,
            region_epoch: req.region_epoch,
            peer: None,
            system: false,
        });
        let (mut state, _) = checked!(self, "change_peer", ctx, vec![], ChangePeerResponse);
        let changes: Vec<_> = req
            .changes
            .iter()
            .map(|c| (ChangeKind::try_from(c.kind).unwrap(), c.store_id))
            .collect();
        let region = state
            .change_peer(req.region_id, &changes)
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(ChangePeerResponse {
            region_error: None,
            region: Some(region),
        }))
    }

    /// Any replica answers (every store holds one of every region): FNV-1a 64 over the
    /// region's pairs, at the store's applied index (see `State::applied_index`).
    /// Scriptable with op "checksum"; an unknown region is `RegionNotFound`.
    async fn checksum(
        &self,
        req: Request<ChecksumRequest>,
    ) -> Result<Response<ChecksumResponse>, Status> {
        let region_id = req.into_inner().region_id;
        let mut state = self.state.lock().unwrap();
        let scripted = state.scripted(self.store_id, "checksum");
        let region = state.regions.get(&region_id).cloned();
        let outcome = match (&scripted, &region) {
            (Some(answer), _) => kind_name(answer),
            (None, None) => "RegionNotFound",
            (None, Some(_)) => "ok",
        };
        state.log.push(Logged {
            store_id: self.store_id,
            op: "checksum",
            region_id,
            key: Vec::new(),
            outcome,
        });
        match scripted {
            Some(Answer::Region(e)) => {
                return Ok(Response::new(ChecksumResponse {
                    region_error: Some(e),
                    ..Default::default()
                }))
            }
            Some(Answer::Status(code, message)) => return Err(Status::new(code, message)),
            None => {}
        }
        let Some(region) = region else {
            let Answer::Region(e) =
                region_error(Kind::RegionNotFound(errorpb::RegionNotFound { region_id }))
            else {
                unreachable!()
            };
            return Ok(Response::new(ChecksumResponse {
                region_error: Some(e),
                ..Default::default()
            }));
        };
        let mut hash = FNV_OFFSET;
        let mut keys = 0;
        for (k, v) in state.data.iter().filter(|(k, _)| region.contains_key(k)) {
            hash = fnv1a(fnv1a(hash, k), v);
            keys += 1;
        }
        let applied_index = state
            .applied_index
            .get(&self.store_id)
            .copied()
            .unwrap_or(1);
        Ok(Response::new(ChecksumResponse {
            region_error: None,
            region: Some(region),
            applied_index,
            checksum: hash,
            keys,
        }))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let state = self.state.lock().unwrap();
        Ok(Response::new(StatusResponse {
            store: Some(Store {
                id: self.store_id,
                address: self.address.clone(),
                ..Default::default()
            }),
            counters: Some(StoreCounters {
                region_count: state.regions.len() as u64,
                ..Default::default()
            }),
            version: "mock".to_string(),
            pid: 0,
            contacts: Vec::new(),
        }))
    }

    async fn list_stores(
        &self,
        _req: Request<ListStoresRequest>,
    ) -> Result<Response<ListStoresResponse>, Status> {
        let stores = self.state.lock().unwrap().stores.clone();
        Ok(Response::new(ListStoresResponse { stores }))
    }

    async fn set_store_state(
        &self,
        _req: Request<SetStoreStateRequest>,
    ) -> Result<Response<SetStoreStateResponse>, Status> {
        Err(Status::unimplemented("the mock has no directory to change"))
    }
}
