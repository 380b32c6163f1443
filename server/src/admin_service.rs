//! The Admin gRPC service: regions, split, merge, membership changes, leader
//! transfer, replica checksums, store status and counters. A membership change
//! adding a replica is refused here unless the cluster directory has its store up.
//!
//! Store errors are answered as the Kv service answers them (`cmd_status`): region
//! errors in the response, where the client retries or re-routes; the rest as gRPC
//! statuses.

use std::sync::Arc;

use shoal_proto::adminpb::admin_server::Admin;
use shoal_proto::adminpb::*;
use shoal_proto::metapb::{ChangeKind, Store, StoreState};
use shoal_raftstore::RaftStore;
use tonic::{Request, Response, Status};

use crate::cmd_status::CmdResultExt;
use crate::directory::{ClusterView, SetStateError};

/// The Admin service of one node.
pub struct AdminService {
    store: Arc<RaftStore>,
    me: Store,
    view: Arc<ClusterView>,
}

impl AdminService {
    /// A service over `store` (this node is `me`); `view` is its copy of the cluster
    /// directory.
    pub fn new(store: Arc<RaftStore>, me: Store, view: Arc<ClusterView>) -> Self {
        AdminService { store, me, view }
    }

    /// A replica may be added only on a store the directory has up, read afresh:
    /// this node's copy is up to a second old, and a store removed a moment ago
    /// still looks up in it (a test adding a peer right after `remove-store` got
    /// one on the removed store). The copy answers only when the directory cannot
    /// be read.
    async fn check_store_up(&self, store_id: u64) -> Result<(), Status> {
        match self.view.read_store(store_id).await {
            Some(s) if s.state == StoreState::Up as i32 => Ok(()),
            Some(s) => Err(Status::invalid_argument(format!(
                "store {store_id} is {}: replicas are added only on stores that are up",
                StoreState::try_from(s.state).map_or("in an unknown state", |st| st.as_str_name())
            ))),
            None => Err(Status::invalid_argument(format!(
                "the cluster has no store {store_id} (join it with `shoal node --join`)"
            ))),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_regions(
        &self,
        _: Request<ListRegionsRequest>,
    ) -> Result<Response<ListRegionsResponse>, Status> {
        Ok(Response::new(ListRegionsResponse {
            regions: self.store.regions().await,
            stores: self.view.stores(),
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
        req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let req = req.into_inner();
        let done = self
            .store
            .transfer_leader(req.region_id, req.to_store_id)
            .await;
        match done.into_answer(req.region_id)? {
            Ok(leader) => Ok(Response::new(TransferLeaderResponse {
                region_error: None,
                leader: Some(leader),
            })),
            Err(e) => Ok(Response::new(TransferLeaderResponse {
                region_error: Some(e),
                leader: None,
            })),
        }
    }

    async fn change_peer(
        &self,
        req: Request<ChangePeerRequest>,
    ) -> Result<Response<ChangePeerResponse>, Status> {
        let req = req.into_inner();
        // The stores that hold a replica already (a promotion or a demotion, not a
        // new replica); a region this store lacks is refused by the change below.
        let holding: Vec<u64> = match self.store.region_info(req.region_id).await {
            Ok(info) => info
                .region
                .map(|r| r.peers.iter().map(|p| p.store_id).collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut changes = Vec::with_capacity(req.changes.len());
        for c in &req.changes {
            let kind = ChangeKind::try_from(c.kind).map_err(|_| {
                Status::invalid_argument(format!("unknown membership change kind {}", c.kind))
            })?;
            if kind != ChangeKind::Remove && !holding.contains(&c.store_id) {
                self.check_store_up(c.store_id).await?;
            }
            changes.push((kind, c.store_id));
        }
        let done = self
            .store
            .change_peer(req.region_id, req.region_epoch, changes)
            .await;
        match done.into_answer(req.region_id)? {
            Ok(region) => Ok(Response::new(ChangePeerResponse {
                region_error: None,
                region: Some(region),
            })),
            Err(e) => Ok(Response::new(ChangePeerResponse {
                region_error: Some(e),
                region: None,
            })),
        }
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
            store: Some(
                self.view
                    .store(self.me.id)
                    .unwrap_or_else(|| self.me.clone()),
            ),
            counters: Some(self.store.counters()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            contacts: self.view.contacts(),
        }))
    }

    async fn list_stores(
        &self,
        _: Request<ListStoresRequest>,
    ) -> Result<Response<ListStoresResponse>, Status> {
        let stores = self.view.read_stores().await.map_err(Status::unavailable)?;
        Ok(Response::new(ListStoresResponse { stores }))
    }

    async fn set_store_state(
        &self,
        req: Request<SetStoreStateRequest>,
    ) -> Result<Response<SetStoreStateResponse>, Status> {
        let req = req.into_inner();
        let state = StoreState::try_from(req.state)
            .map_err(|_| Status::invalid_argument(format!("unknown store state {}", req.state)))?;
        if req.store_id == 0 {
            return Err(Status::invalid_argument("store id 0 names no store"));
        }
        match self.view.set_store_state(req.store_id, state).await {
            Ok(store) => Ok(Response::new(SetStoreStateResponse { store: Some(store) })),
            Err(SetStateError::Refused(shoal_client::Error::InvalidArgument(m))) => {
                Err(Status::invalid_argument(m))
            }
            // The directory's write may or may not have happened: say so.
            Err(SetStateError::Refused(e)) if e.is_undetermined() => Err(Status::unknown(format!(
                "the directory write's outcome is unknown (read the store's state again): {e}"
            ))),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}
