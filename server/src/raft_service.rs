//! The Raft gRPC service: receives other stores' message batches (one long-lived
//! stream per sending store) and hands each message to the local store; and
//! snapshots, whose chunks become files (`SnapReceiver`, file IO off the async
//! runtime's threads) before their message is delivered. The answer to a
//! snapshot comes once its files are checked and synced; an error removes them.

use std::sync::Arc;

use shoal_proto::raft_serverpb::raft_server::Raft;
use shoal_proto::raft_serverpb::{Done, RaftMessageBatch, SnapshotChunk};
use shoal_raftstore::RaftStore;

use prometheus::IntCounter;

use crate::directory::ClusterView;
use crate::security::identity::{Identity, PeerInfo};
use crate::transport::{ORIGIN_ADDRESS, ORIGIN_STORE};
use tonic::{Request, Response, Status, Streaming};

/// The Raft transport's receiving side.
pub struct RaftService {
    store: Arc<RaftStore>,
    view: Arc<ClusterView>,
    /// TLS is on: every stream must come from a store certificate.
    tls: bool,
    /// Messages dropped for claiming a store other than the certificate's.
    forged: IntCounter,
}

impl RaftService {
    /// A service delivering to `store`, noting in `view` when each store was last
    /// heard from. With `tls`, only streams from store certificates are taken, and
    /// the messages naming another sender than the certificate's store are dropped
    /// and counted in `forged`.
    pub fn new(
        store: Arc<RaftStore>,
        view: Arc<ClusterView>,
        tls: bool,
        forged: IntCounter,
    ) -> Self {
        RaftService {
            store,
            view,
            tls,
            forged,
        }
    }

    /// The store the connection's certificate names; `None` with TLS off. With TLS
    /// on, a stream without a store certificate is refused here too (the policy
    /// layer refuses it first; this does not rely on it).
    fn authenticated_store<T>(&self, req: &Request<T>) -> Result<Option<u64>, Status> {
        if !self.tls {
            return Ok(None);
        }
        match req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|i| i.identity.as_ref())
        {
            Some(Identity::Store(id)) => Ok(Some(*id)),
            _ => Err(Status::permission_denied(
                "the Raft service takes store certificates only",
            )),
        }
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(
        &self,
        req: Request<Streaming<RaftMessageBatch>>,
    ) -> Result<Response<Done>, Status> {
        // The sender names itself (`transport::ORIGIN_STORE`): where to answer it.
        let authenticated = self.authenticated_store(&req)?;
        let meta = req.metadata();
        let origin = meta
            .get(ORIGIN_STORE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let (Some(cert), Some(claimed)) = (authenticated, origin) {
            if cert != claimed {
                return Err(Status::permission_denied(format!(
                    "the stream claims store {claimed} but its certificate is store {cert}'s"
                )));
            }
        }
        let address = meta.get(ORIGIN_ADDRESS).and_then(|v| v.to_str().ok());
        if let (Some(id), Some(address)) = (origin, address) {
            self.view.learn_address(id, address);
        }
        let mut stream = req.into_inner();
        while let Some(batch) = stream.message().await? {
            if let Some(from) = batch.msgs.first().and_then(|m| m.from_peer) {
                if authenticated.is_none_or(|cert| cert == from.store_id) {
                    self.view.heard_from(from.store_id);
                }
            }
            for msg in batch.msgs {
                if let Some(cert) = authenticated {
                    let claimed = msg.from_peer.map_or(0, |p| p.store_id);
                    if claimed != cert {
                        self.forged.inc();
                        tracing::warn!(
                            certificate_store = cert,
                            claimed_store = claimed,
                            region = msg.region_id,
                            "dropped a Raft message claiming another store than its certificate's"
                        );
                        continue;
                    }
                }
                self.store.on_raft_message(msg);
            }
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Done>, Status> {
        let authenticated = self.authenticated_store(&req)?;
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))?;
        let msg = first
            .message
            .ok_or_else(|| Status::invalid_argument("the first snapshot chunk has no message"))?;
        let claimed = msg.from_peer.map_or(0, |p| p.store_id);
        if authenticated.is_some_and(|cert| cert != claimed) {
            self.forged.inc();
            return Err(Status::permission_denied(format!(
                "the snapshot claims store {claimed} but its certificate is store {}'s",
                authenticated.unwrap_or_default()
            )));
        }
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
