//! The Admin gRPC service: regions, store status and counters. Split, merge,
//! leader transfer and membership changes are refused as not implemented yet.

use std::sync::Arc;

use shoal_proto::adminpb::admin_server::Admin;
use shoal_proto::adminpb::*;
use shoal_proto::metapb::Store;
use shoal_raftstore::{CmdError, RaftStore};
use tonic::{Request, Response, Status};

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
        let resp = match self.store.region_info(id).await {
            Ok(info) => GetRegionResponse {
                region_error: None,
                region: Some(info),
            },
            Err(CmdError::Region(e)) => GetRegionResponse {
                region_error: Some(e),
                region: None,
            },
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        Ok(Response::new(resp))
    }

    async fn split(&self, _: Request<SplitRequest>) -> Result<Response<SplitResponse>, Status> {
        Err(not_yet("region split"))
    }

    async fn merge(&self, _: Request<MergeRequest>) -> Result<Response<MergeResponse>, Status> {
        Err(not_yet("region merge"))
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
        _: Request<ChecksumRequest>,
    ) -> Result<Response<ChecksumResponse>, Status> {
        Err(not_yet("region checksum"))
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
