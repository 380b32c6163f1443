//! The Admin gRPC service: regions, split, merge, replica checksums, store status
//! and counters. Leader transfer and membership changes are refused as not
//! implemented yet.
//!
//! Store errors are answered as the Kv service answers them (`cmd_status`): region
//! errors in the response, where the client retries or re-routes; the rest as gRPC
//! statuses.

use std::sync::Arc;

use shoal_proto::adminpb::admin_server::Admin;
use shoal_proto::adminpb::*;
use shoal_proto::metapb::Store;
use shoal_raftstore::RaftStore;
use tonic::{Request, Response, Status};

use crate::cmd_status::CmdResultExt;

/// The Admin service of one node.
pub struct AdminService {
    store: Arc<RaftStore>,
    me: Store,
    membership: Vec<Store>,
}

impl AdminService {
    /// A service over `store`; `membership` lists every store of the cluster.
    pub fn new(store: Arc<RaftStore>, me: Store, membership: Vec<Store>) -> Self {
        AdminService {
            store,
            me,
            membership,
        }
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not implemented in this version of Shoal"
    ))
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_regions(
        &self,
        _: Request<ListRegionsRequest>,
    ) -> Result<Response<ListRegionsResponse>, Status> {
        Ok(Response::new(ListRegionsResponse {
            regions: self.store.regions().await,
            stores: self.membership.clone(),
        }))
    }

    async fn get_region(
        &self,
        req: Request<GetRegionRequest>,
    ) -> Result<Response<GetRegionResponse>, Status> {
        let id = req.into_inner().region_id;
        let resp = match self.store.region_info(id).await.into_query_answer()? {
            Ok(info) => GetRegionResponse {
                region_error: None,
                region: Some(info),
            },
            Err(e) => GetRegionResponse {
                region_error: Some(e),
                region: None,
            },
        };
        Ok(Response::new(resp))
    }

    async fn split(&self, req: Request<SplitRequest>) -> Result<Response<SplitResponse>, Status> {
        let req = req.into_inner();
        let done = self
            .store
            .split(req.region_id, req.region_epoch, req.split_keys)
            .await;
        match done.into_answer(req.region_id)? {
            Ok(regions) => Ok(Response::new(SplitResponse {
                region_error: None,
                regions,
            })),
            Err(e) => Ok(Response::new(SplitResponse {
                region_error: Some(e),
                regions: Vec::new(),
            })),
        }
    }

    async fn merge(&self, req: Request<MergeRequest>) -> Result<Response<MergeResponse>, Status> {
        let req = req.into_inner();
        let done = self
            .store
            .merge(req.source_region_id, req.target_region_id)
            .await;
        match done.into_answer(req.source_region_id)? {
            Ok(target) => Ok(Response::new(MergeResponse {
                region_error: None,
                target: Some(target),
            })),
            Err(e) => Ok(Response::new(MergeResponse {
                region_error: Some(e),
                target: None,
            })),
        }
    }

    async fn transfer_leader(
        &self,
        _: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        Err(not_yet("leader transfer"))
    }

    async fn change_peer(
        &self,
        _: Request<ChangePeerRequest>,
    ) -> Result<Response<ChangePeerResponse>, Status> {
        Err(not_yet("membership change"))
    }

    async fn checksum(
        &self,
        req: Request<ChecksumRequest>,
    ) -> Result<Response<ChecksumResponse>, Status> {
        let region_id = req.into_inner().region_id;
        let done = self.store.checksum(region_id).await;
        match done.into_answer(region_id)? {
            Ok(resp) => Ok(Response::new(resp)),
            Err(e) => Ok(Response::new(ChecksumResponse {
                region_error: Some(e),
                ..Default::default()
            })),
        }
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            store: Some(self.me.clone()),
            counters: Some(self.store.counters()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
        }))
    }
}
