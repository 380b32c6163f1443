//! Admin helpers for operators and the CLI: list regions, read a store's status, look
//! up, split and merge regions, and read a replica's checksum. Region-targeted calls
//! go through the same request loop as key-value calls (routed to the region's leader,
//! retried on region errors), and their answers refresh the cache. Store-targeted
//! calls (`status`, `checksum`) make one attempt at the given store.

use std::collections::BTreeMap;

use std::future::Future;

use shoal_proto::adminpb::admin_client::AdminClient;
use shoal_proto::adminpb::{
    ChecksumRequest, ChecksumResponse, GetRegionRequest, ListStoresRequest, MergeRequest,
    RegionInfo, SetStoreStateRequest, SplitRequest, SplitResponse, StatusRequest, StatusResponse,
};
use shoal_proto::metapb::{Region, Store, StoreState};

use crate::client::Client;
use crate::discovery::{admin_client, is_transport_error};
use crate::error::{Error, Failure, RequestInfo, Result};
use crate::request::RouteBy;

impl Client {
    /// Every region (with its leader as the answering store knows it) and every store,
    /// fresh from the first endpoint or known store that answers. Also refreshes the
    /// cache.
    pub async fn list_regions(&self) -> Result<(Vec<RegionInfo>, Vec<Store>)> {
        let resp = self.discover("ListRegions").await?;
        Ok((resp.regions, resp.stores))
    }

    /// The status and counters of the store at `endpoint` ("host:port"). One attempt,
    /// bounded by `rpc_timeout` (and `request_timeout`): a status probe should not wait
    /// for a dead store to come back.
    pub async fn status(&self, endpoint: &str) -> Result<StatusResponse> {
        self.at_store(endpoint, "status", "Status", None, |mut admin| async move {
            admin.status(StatusRequest {}).await
        })
        .await
    }

    /// The checksum of the replica of region `region_id` held by the store at
    /// `endpoint` ("host:port"): the region as that replica knows it, the applied index
    /// the digest was taken at, the number of keys and the digest. Any replica answers,
    /// not only the leader; replicas are comparable only at the same applied index.
    /// One attempt, bounded like [`status`](Self::status). A store without a replica
    /// of the region answers with a region error ([`Error::Region`], `RegionNotFound`);
    /// a store that cannot compute checksums with [`Error::Rejected`]
    /// (`Unimplemented`).
    pub async fn checksum(&self, endpoint: &str, region_id: u64) -> Result<ChecksumResponse> {
        let mut resp = self
            .at_store(
                endpoint,
                "checksum",
                "Checksum",
                Some(region_id),
                |mut admin| async move { admin.checksum(ChecksumRequest { region_id }).await },
            )
            .await?;
        match resp.region_error.take() {
            None => Ok(resp),
            Some(error) => Err(Error::Region {
                request: RequestInfo {
                    op: "checksum",
                    key: None,
                    region_id: Some(region_id),
                },
                store_id: self.inner.cache.read().store_at(endpoint).unwrap_or(0),
                error: Box::new(error),
            }),
        }
    }

    /// Region `region_id` as the store at `endpoint` holds it: its replica's view
    /// (leader as it knows it, log bounds, applied index). One attempt; a store
    /// without a replica of the region answers with [`Error::Region`].
    pub async fn replica(&self, endpoint: &str, region_id: u64) -> Result<RegionInfo> {
        let resp = self
            .at_store(
                endpoint,
                "replica",
                "GetRegion",
                Some(region_id),
                |mut admin| async move { admin.get_region(GetRegionRequest { region_id }).await },
            )
            .await?;
        match (resp.region_error, resp.region) {
            (None, Some(info)) => Ok(info),
            (error, _) => Err(Error::Region {
                request: RequestInfo {
                    op: "replica",
                    key: None,
                    region_id: Some(region_id),
                },
                store_id: self.inner.cache.read().store_at(endpoint).unwrap_or(0),
                error: Box::new(error.unwrap_or_default()),
            }),
        }
    }

    /// Every store the cluster directory lists, read linearizably by the first
    /// node that can (`ListStores`: the node reads the directory with its own store
    /// identity, so this needs no access to the system key range).
    pub async fn stores(&self) -> Result<Vec<Store>> {
        let resp = self
            .at_any_store("stores", "ListStores", |mut admin| async move {
                admin.list_stores(ListStoresRequest {}).await
            })
            .await?;
        Ok(resp.stores)
    }

    /// Sets store `store_id`'s state in the cluster directory, through the first
    /// node that can write it (`SetStoreState`). Setting a state is idempotent, so
    /// a node that did not answer is simply asked of the next. Refused: an unknown
    /// store, any change to a removed store. Returns the store's new record.
    pub async fn set_store_state(&self, store_id: u64, state: StoreState) -> Result<Store> {
        let resp = self
            .at_any_store("set store state", "SetStoreState", |mut admin| async move {
                admin
                    .set_store_state(SetStoreStateRequest {
                        store_id,
                        state: state as i32,
                    })
                    .await
            })
            .await?;
        resp.store.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the node set store {store_id}'s state but sent no record"
            ))
        })
    }

    /// One Admin RPC asked of the configured endpoints and known stores in turn
    /// until one answers: a node that cannot be reached, or that cannot reach the
    /// directory itself (`Unavailable`), passes to the next; any other refusal is
    /// the answer.
    async fn at_any_store<R, F, Fut>(
        &self,
        op: &'static str,
        rpc: &'static str,
        call: F,
    ) -> Result<R>
    where
        F: Fn(AdminClient<tonic::transport::Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut last = None;
        for address in self.inner.candidates() {
            match self.at_store(&address, op, rpc, None, &call).await {
                Ok(r) => return Ok(r),
                Err(e @ Error::Unreachable { .. }) => last = Some(e),
                Err(
                    e @ Error::Rejected {
                        code: tonic::Code::Unavailable,
                        ..
                    },
                ) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("no endpoint to ask".into())))
    }

    /// One Admin RPC to the store at `endpoint`, bounded by `rpc_timeout` (and
    /// `request_timeout`), not retried. A refusal (non-transport status) is
    /// [`Error::Rejected`]; a transport error or timeout is [`Error::Unreachable`].
    async fn at_store<R, F, Fut>(
        &self,
        endpoint: &str,
        op: &'static str,
        rpc: &'static str,
        region_id: Option<u64>,
        call: F,
    ) -> Result<R>
    where
        F: FnOnce(AdminClient<tonic::transport::Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let inner = &self.inner;
        let channel = inner.channel(endpoint)?;
        let timeout = inner.config.rpc_timeout.min(inner.config.request_timeout);
        let failure = match tokio::time::timeout(
            timeout,
            call(admin_client(channel, inner.config.max_message_size)),
        )
        .await
        {
            Ok(Ok(resp)) => return Ok(resp.into_inner()),
            Ok(Err(status)) if !is_transport_error(&status) => {
                return Err(Error::Rejected {
                    request: RequestInfo {
                        op,
                        key: None,
                        region_id,
                    },
                    address: endpoint.to_string(),
                    code: status.code(),
                    message: status.message().to_string(),
                })
            }
            Ok(Err(status)) => Failure::Rpc {
                address: endpoint.to_string(),
                code: status.code(),
                message: status.message().to_string(),
            },
            Err(_) => Failure::Timeout {
                address: endpoint.to_string(),
                after: timeout,
            },
        };
        Err(Error::Unreachable {
            op: rpc,
            endpoints: vec![endpoint.to_string()],
            timeout,
            last: Box::new(failure),
        })
    }

    /// The region with id `region_id` as its leader reports it (range, epoch, peers,
    /// leader, approximate size). Fails with [`Error::RegionNotFound`] if no store
    /// knows the region.
    pub async fn region(&self, region_id: u64) -> Result<RegionInfo> {
        let max_msg = self.inner.config.max_message_size;
        let done = self
            .inner
            .execute("region", RouteBy::Region(region_id), |channel, _at| {
                let req = GetRegionRequest { region_id };
                async move { admin_client(channel, max_msg).get_region(req).await }
            })
            .await?;
        let info = done.resp.region.ok_or(Error::RegionNotFound {
            op: "region",
            region_id,
        })?;
        if let Some(region) = &info.region {
            self.inner.cache.write().insert(region.clone(), info.leader);
        }
        Ok(info)
    }

    /// Splits regions so that each of `keys` starts a region. Keys are handled one at a
    /// time in key order: find the key's region, send `Split` to its leader with the
    /// region's epoch, and retry on region errors (an `EpochNotMatch` refreshes the
    /// region first). A key that already starts a region needs no split. Returns the
    /// regions the splits produced (and those already starting at a key), in key order.
    pub async fn split<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Region>> {
        let max_msg = self.inner.config.max_message_size;
        let mut keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        keys.sort();
        keys.dedup();
        if keys.first().is_some_and(Vec::is_empty) {
            return Err(Error::InvalidArgument(
                "cannot split at the empty key: it always starts the first region".to_string(),
            ));
        }
        let mut result: BTreeMap<u64, Region> = BTreeMap::new();
        for key in keys {
            let done = self
                .inner
                .execute("split", RouteBy::Key(&key), |channel, at| {
                    let already_split = at.region.start_key == key;
                    let region = at.region.clone();
                    let req = SplitRequest {
                        region_id: at.region.id,
                        region_epoch: at.region.region_epoch,
                        split_keys: vec![key.clone()],
                    };
                    async move {
                        if already_split {
                            return Ok(tonic::Response::new(SplitResponse {
                                region_error: None,
                                regions: vec![region],
                            }));
                        }
                        admin_client(channel, max_msg).split(req).await
                    }
                })
                .await?;
            self.inner.cache.write().replace_regions(
                &done.attempt.region,
                done.resp.regions.clone(),
                done.attempt.peer.store_id,
            );
            for region in done.resp.regions {
                result.insert(region.id, region);
            }
        }
        let mut regions: Vec<Region> = result.into_values().collect();
        regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        Ok(regions)
    }

    /// Splits region `region_id` at each of `keys` in one request, so that each key
    /// starts a region. The keys are sorted and deduplicated; an empty key, or no key
    /// at all, is refused with [`Error::InvalidArgument`] before anything is sent. The
    /// request goes to the region's leader with the region's epoch (as cached, loaded
    /// on a miss) and is retried on region errors like every routed call (an
    /// `EpochNotMatch` refreshes the region first). A key outside the region or at its
    /// start is the server's to refuse (`InvalidArgument`, as [`Error::Rejected`]).
    /// Returns the regions that now cover the region's old range, in key order, and
    /// caches them.
    pub async fn split_region(&self, region_id: u64, keys: Vec<Vec<u8>>) -> Result<Vec<Region>> {
        let max_msg = self.inner.config.max_message_size;
        let mut keys = keys;
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "no split key given for region {region_id}"
            )));
        }
        if keys[0].is_empty() {
            return Err(Error::InvalidArgument(
                "cannot split at the empty key: it always starts the first region".to_string(),
            ));
        }
        let done = self
            .inner
            .execute("split_region", RouteBy::Region(region_id), |channel, at| {
                let req = SplitRequest {
                    region_id: at.region.id,
                    region_epoch: at.region.region_epoch,
                    split_keys: keys.clone(),
                };
                async move { admin_client(channel, max_msg).split(req).await }
            })
            .await?;
        let mut regions = done.resp.regions;
        regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        self.inner.cache.write().replace_regions(
            &done.attempt.region,
            regions.clone(),
            done.attempt.peer.store_id,
        );
        Ok(regions)
    }

    /// Merges region `source_region_id` into its neighbour `target_region_id`. The
    /// request goes to the source's leader (a merge starts by freezing the source).
    /// Returns the target region after the merge.
    pub async fn merge(&self, source_region_id: u64, target_region_id: u64) -> Result<Region> {
        let max_msg = self.inner.config.max_message_size;
        let done = self
            .inner
            .execute(
                "merge",
                RouteBy::Region(source_region_id),
                |channel, _at| {
                    let req = MergeRequest {
                        source_region_id,
                        target_region_id,
                    };
                    async move { admin_client(channel, max_msg).merge(req).await }
                },
            )
            .await?;
        let target = done.resp.target.ok_or(Error::RegionNotFound {
            op: "merge",
            region_id: target_region_id,
        })?;
        // The merged target has a higher version than both halves: inserting it
        // replaces them.
        self.inner.cache.write().insert(target.clone(), None);
        Ok(target)
    }
}
