//! The Raft gRPC service: receives other stores' message batches (one long-lived
//! stream per sending store) and hands each message to the local store.

use std::sync::Arc;

use shoal_proto::raft_serverpb::raft_server::Raft;
use shoal_proto::raft_serverpb::{Done, RaftMessageBatch, SnapshotChunk};
use shoal_raftstore::RaftStore;
use tonic::{Request, Response, Status, Streaming};

/// The Raft transport's receiving side.
pub struct RaftService {
    store: Arc<RaftStore>,
}

impl RaftService {
    /// A service delivering to `store`.
    pub fn new(store: Arc<RaftStore>) -> Self {
        RaftService { store }
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(
        &self,
        req: Request<Streaming<RaftMessageBatch>>,
    ) -> Result<Response<Done>, Status> {
        let mut stream = req.into_inner();
        while let Some(batch) = stream.message().await? {
            for msg in batch.msgs {
                self.store.on_raft_message(msg);
            }
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        _: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        Err(Status::unimplemented(
            "raft snapshots are not implemented in this version of Shoal",
        ))
    }
}
