//! The Raft gRPC service: receives other stores' message batches (one long-lived
//! stream per sending store) and hands each message to the local store; and
//! snapshots, whose chunks become files (`SnapReceiver`, file IO off the async
//! runtime's threads) before their message is delivered. The answer to a
//! snapshot comes once its files are checked and synced; an error removes them.
//!
//! A snapshot receive holds one of the store's few receive slots, so it has two
//! deadlines ([`ReceiveDeadlines`]): one for the next chunk and one for the
//! whole. A sender that stalls (or sends nothing while keeping its connection
//! alive) is cut when either passes: its slot is freed, its partial files
//! removed, and the cut counted (`shoal_snapshot_receive_timeouts_total`).

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::raft_serverpb::raft_server::Raft;
use shoal_proto::raft_serverpb::{Done, RaftMessageBatch, SnapshotChunk};
use shoal_raftstore::{RaftStore, SnapReceiver, StoreMetrics};

use prometheus::IntCounter;

use crate::directory::ClusterView;
use crate::security::identity::{Identity, PeerInfo};
use crate::snapshot_sender::{BASE_DEADLINE, CHUNK_BYTES};
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
    deadlines: ReceiveDeadlines,
}

/// How long a snapshot receive may wait for its next chunk, and take in all.
/// Both derive from the bytes per second a sender gives one snapshot
/// (`snap-max-bytes-per-sec` / `snap-max-concurrent`, this node's settings: a
/// cluster's nodes share them), its `share`:
/// - **next chunk**: four chunks' time at the share (a sender waits at most one
///   chunk's time for the rate limiter), at least [`IDLE_FLOOR`]; so 10 s by
///   default, and 256 s at the slowest settings (1 MiB/s over 64 sends);
/// - **whole**: the sender's own deadline (`snapshot_sender`: 60 s + twice the
///   snapshot's bytes at the share) plus [`TOTAL_MARGIN`], so that a receive is
///   never cut while its sender still goes on: 120 s for a small snapshot, 124 s
///   for 100 MiB by default.
#[derive(Clone, Copy, Debug)]
pub struct ReceiveDeadlines {
    /// Bytes per second one snapshot send gets.
    share: u64,
}

/// The least wait for a snapshot's next chunk.
pub const IDLE_FLOOR: Duration = Duration::from_secs(10);
/// The bytes a receive must bring (or the rest of its snapshot) within each
/// next-chunk deadline.
pub const MIN_PROGRESS: u64 = 64 << 10;
/// How much longer a receive may take than its sender gives itself.
pub const TOTAL_MARGIN: Duration = Duration::from_secs(60);

impl ReceiveDeadlines {
    /// The deadlines for snapshots sent at `bytes_per_sec` over at most
    /// `max_concurrent` sends.
    pub fn new(bytes_per_sec: u64, max_concurrent: usize) -> Self {
        ReceiveDeadlines {
            share: (bytes_per_sec / max_concurrent.max(1) as u64).max(1),
        }
    }

    /// The longest wait for the next chunk.
    pub fn next_chunk(&self) -> Duration {
        let four_chunks = Duration::from_secs_f64(4.0 * CHUNK_BYTES as f64 / self.share as f64);
        four_chunks.max(IDLE_FLOOR)
    }

    /// The longest a receive of a snapshot of `bytes` may take (`bytes` as the
    /// sender declares them, which the store bounds: `SnapReceiver::start`).
    pub fn whole(&self, bytes: u64) -> Duration {
        let transfer = Duration::from_secs(bytes.saturating_mul(2) / self.share);
        (BASE_DEADLINE + TOTAL_MARGIN).saturating_add(transfer)
    }
}

impl RaftService {
    /// A service delivering to `store`, noting in `view` when each store was last
    /// heard from. With `tls`, only streams from store certificates are taken, and
    /// the messages naming another sender than the certificate's store are dropped
    /// and counted in `forged`. Snapshot receives are cut past `deadlines`.
    pub fn new(
        store: Arc<RaftStore>,
        view: Arc<ClusterView>,
        tls: bool,
        forged: IntCounter,
        deadlines: ReceiveDeadlines,
    ) -> Self {
        RaftService {
            store,
            view,
            tls,
            forged,
            deadlines,
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
        let idle = self.deadlines.next_chunk();
        let first = tokio::time::timeout(idle, stream.message())
            .await
            .map_err(|_| Status::deadline_exceeded(format!("no snapshot chunk came in {idle:?}")))??
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
        let recv = blocking(move || store.receive_snapshot(msg)).await?;
        let recv = receive(
            recv,
            stream,
            first.data,
            self.deadlines,
            self.store.metrics(),
        )
        .await?;
        let store = self.store.clone();
        blocking(move || store.snapshot_received(recv)).await?;
        Ok(Response::new(Done {}))
    }
}

/// Feeds a snapshot's chunks to `recv` (file IO on blocking threads) until the
/// stream ends, within `deadlines`. On any error (the stream's, a file's, a
/// deadline passed) the receiver is dropped on a blocking thread: its slot is
/// freed and its files removed there, not on the runtime's threads.
async fn receive(
    mut recv: SnapReceiver,
    mut stream: Streaming<SnapshotChunk>,
    mut data: Vec<u8>,
    deadlines: ReceiveDeadlines,
    metrics: &StoreMetrics,
) -> Result<SnapReceiver, Status> {
    let idle = deadlines.next_chunk();
    let whole = deadlines.whole(recv.bytes());
    let now = tokio::time::Instant::now();
    let ends = now + whole;
    let region = recv.key().region_id;
    // The idle clock restarts only on progress: MIN_PROGRESS bytes (or the rest
    // of the snapshot) since it last did, so a sender trickling a byte at a time
    // cannot keep a receive slot.
    let mut idle_ends = now + idle;
    let mut since_progress = 0u64;
    loop {
        since_progress += data.len() as u64;
        let rest = recv.bytes().saturating_sub(recv.received());
        if since_progress >= MIN_PROGRESS || data.len() as u64 >= rest {
            idle_ends = tokio::time::Instant::now() + idle;
            since_progress = 0;
        }
        if !data.is_empty() {
            let written = tokio::task::spawn_blocking(move || {
                let r = recv.write(&data);
                (recv, r)
            })
            .await;
            match written {
                Ok((r, Ok(()))) => recv = r,
                Ok((r, Err(e))) => return Err(dropped(r, Status::failed_precondition(e))),
                Err(e) => return Err(Status::internal(e.to_string())),
            }
        }
        let now = tokio::time::Instant::now();
        let wait = idle_ends.min(ends).saturating_duration_since(now);
        match tokio::time::timeout(wait, stream.message()).await {
            Ok(Ok(Some(chunk))) => data = chunk.data,
            Ok(Ok(None)) => return Ok(recv),
            Ok(Err(status)) => return Err(dropped(recv, status)),
            Err(_) => {
                StoreMetrics::add(&metrics.snapshot_receive_timeouts, 1);
                let why = if ends <= idle_ends {
                    format!("the snapshot of region {region} took over {whole:?} in all")
                } else {
                    format!(
                        "the snapshot of region {region} brought less than {MIN_PROGRESS} \
                         bytes in {idle:?}"
                    )
                };
                shoal_raftstore::warn_limited!(region, "cutting a snapshot receive: {why}");
                return Err(dropped(recv, Status::deadline_exceeded(why)));
            }
        }
    }
}

/// Drops a receiver on a blocking thread (it removes its files); `status` is
/// the answer.
fn dropped(recv: SnapReceiver, status: Status) -> Status {
    tokio::task::spawn_blocking(move || drop(recv));
    status
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_send_rate_with_floors() {
        // The defaults: 100 MiB/s over 2 sends, 50 MiB/s each.
        let d = ReceiveDeadlines::new(100 << 20, 2);
        assert_eq!(d.next_chunk(), IDLE_FLOOR);
        assert_eq!(d.whole(0), Duration::from_secs(120));
        assert_eq!(d.whole(100 << 20), Duration::from_secs(124));
        // The sender gives up first: its deadline is 60 s + 2 x bytes / share.
        let bytes = 10u64 << 30;
        let sender = BASE_DEADLINE + Duration::from_secs(2 * bytes / (50 << 20));
        assert_eq!(d.whole(bytes), sender + TOTAL_MARGIN);
        // The slowest settings: 1 MiB/s over 64 sends, 16 KiB/s each: a chunk
        // (1 MiB) may take 64 s, four of them 256 s.
        let slow = ReceiveDeadlines::new(1 << 20, 64);
        assert_eq!(slow.next_chunk(), Duration::from_secs(256));
        assert_eq!(slow.whole(1 << 20), Duration::from_secs(120 + 128));
    }
}
