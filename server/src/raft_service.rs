//! The Raft gRPC service: receives other stores' message batches (one long-lived
//! stream per sending store) and hands each message to the local store; and
//! snapshots, whose chunks become files (`SnapReceiver`, file IO off the async
//! runtime's threads) before their message is delivered. The answer to a
//! snapshot comes once its files are checked and synced; an error removes them.

use std::sync::Arc;

use shoal_proto::raft_serverpb::raft_server::Raft;
use shoal_proto::raft_serverpb::{Done, RaftMessageBatch, SnapshotChunk};
use shoal_raftstore::RaftStore;

use crate::directory::ClusterView;
use crate::transport::{ORIGIN_ADDRESS, ORIGIN_STORE};
use tonic::{Request, Response, Status, Streaming};

/// The Raft transport's receiving side.
pub struct RaftService {
    store: Arc<RaftStore>,
    view: Arc<ClusterView>,
}

impl RaftService {
    /// A service delivering to `store`, noting in `view` when each store was last
    /// heard from.
    pub fn new(store: Arc<RaftStore>, view: Arc<ClusterView>) -> Self {
        RaftService { store, view }
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(
        &self,
        req: Request<Streaming<RaftMessageBatch>>,
    ) -> Result<Response<Done>, Status> {
        // The sender names itself (`transport::ORIGIN_STORE`): where to answer it.
        let meta = req.metadata();
        let origin = meta
            .get(ORIGIN_STORE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let address = meta.get(ORIGIN_ADDRESS).and_then(|v| v.to_str().ok());
        if let (Some(id), Some(address)) = (origin, address) {
            self.view.learn_address(id, address);
        }
        let mut stream = req.into_inner();
        while let Some(batch) = stream.message().await? {
            if let Some(from) = batch.msgs.first().and_then(|m| m.from_peer) {
                self.view.heard_from(from.store_id);
            }
            for msg in batch.msgs {
                self.store.on_raft_message(msg);
            }
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))?;
        let msg = first
            .message
            .ok_or_else(|| Status::invalid_argument("the first snapshot chunk has no message"))?;
        let store = self.store.clone();
        let mut recv = blocking(move || store.receive_snapshot(msg)).await?;
        let mut data = first.data;
        loop {
            if !data.is_empty() {
                recv = blocking(move || recv.write(&data).map(|()| recv)).await?;
            }
            match stream.message().await? {
                Some(chunk) => data = chunk.data,
                None => break,
            }
        }
        let store = self.store.clone();
        blocking(move || store.snapshot_received(recv)).await?;
        Ok(Response::new(Done {}))
    }
}

/// Runs file IO on a blocking thread; its error becomes the RPC's answer.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::failed_precondition)
}
