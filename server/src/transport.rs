//! [`GrpcTransport`]: the sending side of the Raft transport.
//!
//! One long-lived client stream per remote store. `send` (called from poller and
//! log-writer threads) only queues; a task per store drains the queue, merges what
//! piled up into one `RaftMessageBatch`, and writes it to the stream. When the
//! stream breaks the task reconnects with exponential backoff (50 ms .. 2 s);
//! messages queued meanwhile are dropped, which Raft tolerates (it retransmits),
//! and the store is reported unreachable so leaders stop pipelining appends to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shoal_proto::raft_serverpb::raft_client::RaftClient;
use shoal_proto::raft_serverpb::{RaftMessage, RaftMessageBatch};
use shoal_raftstore::Transport;
use tokio::sync::mpsc;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Batches buffered toward one stream before the sender waits.
const STREAM_BUFFER: usize = 256;

/// Called with a store id when that store cannot be reached.
pub type UnreachableHandler = Arc<dyn Fn(u64) + Send + Sync>;

/// Sends raft message batches to other stores over gRPC.
pub struct GrpcTransport {
    addresses: HashMap<u64, String>,
    queues: Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<RaftMessage>>>>,
    runtime: tokio::runtime::Handle,
    unreachable: Arc<OnceLock<UnreachableHandler>>,
}

impl GrpcTransport {
    /// A transport to the stores of `addresses`, running its tasks on `runtime`.
    pub fn new(addresses: HashMap<u64, String>, runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(GrpcTransport {
            addresses,
            queues: Mutex::new(HashMap::new()),
            runtime,
            unreachable: Arc::new(OnceLock::new()),
        })
    }

    /// Sets who hears about unreachable stores (the raftstore, once started).
    pub fn on_unreachable(&self, handler: UnreachableHandler) {
        let _ = self.unreachable.set(handler);
    }

    fn queue(&self, store_id: u64) -> Option<mpsc::UnboundedSender<Vec<RaftMessage>>> {
        let mut queues = self.queues.lock().expect("transport lock");
        if let Some(q) = queues.get(&store_id) {
            if !q.is_closed() {
                return Some(q.clone());
            }
        }
        let addr = self.addresses.get(&store_id)?.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        self.runtime
            .spawn(stream_to(store_id, addr, rx, self.unreachable.clone()));
        queues.insert(store_id, tx.clone());
        Some(tx)
    }
}

impl Transport for GrpcTransport {
    fn send(&self, store_id: u64, msgs: Vec<RaftMessage>) {
        match self.queue(store_id) {
            Some(q) => {
                let _ = q.send(msgs);
            }
            None => tracing::warn!(
                store = store_id,
                "no address known for store; dropping raft messages"
            ),
        }
    }
}

/// Keeps one stream to `addr` alive and feeds it from `rx`; ends when `rx` closes.
async fn stream_to(
    store_id: u64,
    addr: String,
    mut rx: mpsc::UnboundedReceiver<Vec<RaftMessage>>,
    unreachable: Arc<OnceLock<UnreachableHandler>>,
) {
    let report = || {
        if let Some(h) = unreachable.get() {
            h(store_id);
        }
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => e.tcp_nodelay(true),
            Err(e) => {
                tracing::error!(store = store_id, %addr, "invalid store address: {e}");
                report();
                return;
            }
        };
        let mut client = match RaftClient::connect(endpoint).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(store = store_id, %addr, "raft connect failed: {e}");
                report();
                if !drop_for(&mut rx, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let (tx, body_rx) = mpsc::channel::<RaftMessageBatch>(STREAM_BUFFER);
        let body =
            futures::stream::unfold(
                body_rx,
                |mut r| async move { r.recv().await.map(|b| (b, r)) },
            );
        let call = tokio::spawn(async move { client.send(body).await });
        backoff = MIN_BACKOFF;
        loop {
            let Some(mut msgs) = rx.recv().await else {
                return;
            };
            while let Ok(more) = rx.try_recv() {
                msgs.extend(more);
            }
            if tx.send(RaftMessageBatch { msgs }).await.is_err() || call.is_finished() {
                break;
            }
        }
        tracing::debug!(store = store_id, %addr, "raft stream broke; reconnecting");
        report();
        call.abort();
    }
}

/// Waits `backoff` while dropping what arrives. False when the queue closed.
async fn drop_for(rx: &mut mpsc::UnboundedReceiver<Vec<RaftMessage>>, backoff: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + backoff;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(_dropped)) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}
