//! [`GrpcTransport`]: the sending side of the Raft transport.
//!
//! One long-lived client stream per remote store. `send` (called from poller and
//! log-writer threads) only queues; a task per store drains the queue, packs what
//! piled up into `RaftMessageBatch`es, and writes them to the stream. A stream is
//! given up when it breaks (an error, an HTTP/2 ping unanswered for 5 s), when a
//! new stream takes no batch within 3 s, or when no batch is taken for 30 s while
//! batches wait. The task then reconnects, with exponential backoff (50 ms .. 2 s)
//! after a failed connect or a stream that did not last: a connect "succeeds"
//! through a TCP proxy or load balancer in front of a store that is down, and
//! without the backoff the task opened hundreds of streams a second there. Messages
//! queued during a backoff are dropped, which Raft tolerates (it retransmits), and
//! the store is reported unreachable so leaders stop pipelining appends to it.
//!
//! Layout: this file holds the queues and [`GrpcTransport`]; `link.rs` the
//! sending side toward one store (connect, backoff, feeding a stream, the stall
//! rules); `pack.rs` packing messages into batches; snapshots go through
//! `crate::snapshot_sender`.
//!
//! Two limits ([`TransportLimits`]) keep the transport from hurting the node:
//!
//! - **Frame size.** No batch is larger than the node's gRPC message limit
//!   (`raft-entry-max-size` + 1 MiB, which the receiving Raft service decodes): the
//!   drain splits what piled up into as many batches as needed. One message alone
//!   always fits, since raft-rs never puts more than one entry past
//!   `raft-max-size-per-msg` (<= `raft-entry-max-size`) in a message and the rest
//!   is headers; a message that does not fit anyway is dropped with an error log
//!   rather than sent to kill the stream (and every other region's messages in it).
//! - **Queue size.** The bytes queued toward one store, in the queue and in the
//!   stream's buffer toward tonic, are bounded by `max_queued_bytes`. A peer that
//!   is connected but not reading (paused, overloaded) stalls the stream; once the
//!   bound is reached `send` drops new messages and reports the store unreachable,
//!   so memory stays bounded however long the stall lasts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts};
use shoal_client::tls::TlsConnector;
use shoal_proto::raft_serverpb::RaftMessage;
use shoal_proto::Message;
use shoal_raftstore::{OutgoingSnapshot, Transport};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::snapshot_sender::SnapshotSender;

mod link;
mod pack;

use link::stream_to;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait for a connection to a store.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on every connection this often, even when idle...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// ... and a connection whose ping is not answered within this is closed: a store
/// that vanished without closing its connections (power loss, a dropped link) is
/// noticed within 10 s.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A stream that takes no batch for this long while batches wait (the receiver
/// stopped reading) is given up and reconnected. Long enough for a slow but live
/// link to take one full batch (9 MiB by default at 0.3 MiB/s).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A new stream that takes no batch this long while batches wait never got going
/// (tonic's channel can sit reconnecting under an open call, invisible to us, for
/// as long as a connect reaches something that closes at once): it is given up.
/// A live store takes the first batch in milliseconds (HTTP/2's initial window
/// holds 64 KiB before the receiver answers at all).
const FIRST_BATCH_TIMEOUT: Duration = CONNECT_TIMEOUT;
/// A stream that breaks before it lasted this long counts as a failed connect:
/// the next one waits out the backoff.
const STREAM_MIN_LIFE: Duration = Duration::from_secs(1);
/// Batches buffered toward one stream before the drain waits.
const STREAM_BUFFER: usize = 256;
/// Default bound on the bytes queued toward one store: 64 MiB, and at least two
/// full batches.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// Called with a store id when that store cannot be reached.
pub type UnreachableHandler = Arc<dyn Fn(u64) + Send + Sync>;

/// The transport's size limits; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct TransportLimits {
    /// Largest encoded `RaftMessageBatch` sent (the gRPC message limit).
    pub max_message_size: usize,
    /// Most bytes of messages queued or buffered toward one store.
    pub max_queued_bytes: usize,
    /// A stream that takes no batch for this long while batches wait is given up
    /// and reconnected (30 s).
    pub stall_timeout: Duration,
    /// A new stream that takes no batch this long while batches wait is given up
    /// (3 s).
    pub first_batch_timeout: Duration,
    /// Snapshots sent at once (`snap-max-concurrent`, 2).
    pub snap_max_concurrent: usize,
    /// Bytes per second of all snapshots together (`snap-max-bytes-per-sec`,
    /// 100 MiB/s).
    pub snap_max_bytes_per_sec: u64,
}

impl TransportLimits {
    /// Limits for a node whose gRPC message limit is `max_message_size`: the queue
    /// bound is [`MAX_QUEUED_BYTES`], or two full batches if that is more.
    pub fn new(max_message_size: usize) -> Self {
        TransportLimits {
            max_message_size,
            max_queued_bytes: MAX_QUEUED_BYTES.max(2 * max_message_size),
            stall_timeout: STALL_TIMEOUT,
            first_batch_timeout: FIRST_BATCH_TIMEOUT,
            snap_max_concurrent: 2,
            snap_max_bytes_per_sec: 100 << 20,
        }
    }
}

/// Connects `endpoint`, the address of store `store_id`, through `tls` when given
/// (the node's TLS: its store certificate, the cluster's CA; the other side must
/// present store `store_id`'s certificate); the Raft links and the snapshot sender
/// dial this way.
pub(crate) async fn dial(
    endpoint: &Endpoint,
    tls: Option<&TlsConnector>,
    store_id: u64,
) -> Result<Channel, tonic::transport::Error> {
    match tls {
        Some(tls) => {
            let dialer = crate::security::Security::dialer_for(tls, store_id);
            endpoint.connect_with_connector(dialer).await
        }
        None => endpoint.connect().await,
    }
}

/// The queue toward one store.
struct StoreQueue {
    tx: mpsc::UnboundedSender<Queued>,
    /// This store's `shoal_transport_*_total{to_store}` counters, bound once.
    batches: IntCounter,
    bytes: IntCounter,
    dropped: IntCounter,
    /// Bytes in the queue and in the stream buffer (released when tonic takes a
    /// batch, or when queued messages are dropped).
    queued: Arc<AtomicUsize>,
    /// Set while `send` drops messages for a full queue, so that the store is
    /// reported unreachable once per overflow, not once per message.
    overflowing: AtomicBool,
}

/// Messages (or a batch) counted in a store's queued bytes until dropped.
struct Queued {
    msgs: Vec<RaftMessage>,
    bytes: usize,
    counter: Arc<AtomicUsize>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The transport's metrics, by remote store (registered in the store's registry
/// by the node once the store runs: [`TransportMetrics::register`]).
#[derive(Clone)]
pub struct TransportMetrics {
    batches: IntCounterVec,
    bytes: IntCounterVec,
    dropped: IntCounterVec,
    /// Reports that a store is unreachable, by remote store.
    pub unreachable: IntCounterVec,
}

impl TransportMetrics {
    fn new() -> Self {
        let vec = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["to_store"]).expect("valid metric")
        };
        TransportMetrics {
            batches: vec(
                "shoal_transport_store_batches_total",
                "Batches of Raft messages queued toward each store.",
            ),
            bytes: vec(
                "shoal_transport_store_bytes_total",
                "Encoded bytes of the Raft messages queued toward each store.",
            ),
            dropped: vec(
                "shoal_transport_dropped_messages_total",
                "Raft messages dropped because the queue toward a store was full.",
            ),
            unreachable: vec(
                "shoal_transport_unreachable_total",
                "Reports that a store could not be reached (Raft stops pipelining to it).",
            ),
        }
    }

    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.batches.clone()))?;
        registry.register(Box::new(self.bytes.clone()))?;
        registry.register(Box::new(self.dropped.clone()))?;
        registry.register(Box::new(self.unreachable.clone()))
    }
}

/// Store id -> address, shared by the transport and its snapshot sender, kept
/// current from the cluster directory (`GrpcTransport::set_addresses`).
pub type Addresses = Arc<RwLock<HashMap<u64, String>>>;

/// Sends raft message batches to other stores over gRPC.
pub struct GrpcTransport {
    addresses: Addresses,
    queues: Mutex<HashMap<u64, Arc<StoreQueue>>>,
    runtime: tokio::runtime::Handle,
    unreachable: Arc<OnceLock<UnreachableHandler>>,
    limits: TransportLimits,
    snapshots: SnapshotSender,
    /// Who sends: this store's id and address, told to every receiver with each
    /// stream (`ORIGIN_STORE`, `ORIGIN_ADDRESS`), so that a store restarted on a
    /// new address is answered there before the cluster directory says so.
    origin: Arc<OnceLock<(u64, String)>>,
    /// Dials with TLS (this store's certificate) when the node has TLS on.
    tls: Option<TlsConnector>,
    /// Batches, bytes, drops and unreachable reports by remote store.
    pub metrics: TransportMetrics,
}

/// The gRPC metadata of a Raft stream naming the sending store's id.
pub const ORIGIN_STORE: &str = "shoal-origin-store";
/// ... and the address it serves at.
pub const ORIGIN_ADDRESS: &str = "shoal-origin-address";

impl GrpcTransport {
    /// A transport to the stores of `addresses`, running its tasks on `runtime`,
    /// dialing through `tls` when given.
    pub fn new(
        addresses: HashMap<u64, String>,
        runtime: tokio::runtime::Handle,
        limits: TransportLimits,
        tls: Option<TlsConnector>,
    ) -> Arc<Self> {
        let addresses: Addresses = Arc::new(RwLock::new(addresses));
        let snapshots = SnapshotSender::new(
            addresses.clone(),
            runtime.clone(),
            limits.snap_max_concurrent,
            limits.snap_max_bytes_per_sec,
            limits.max_message_size,
            tls.clone(),
        );
        Arc::new(GrpcTransport {
            tls,
            addresses,
            queues: Mutex::new(HashMap::new()),
            runtime,
            unreachable: Arc::new(OnceLock::new()),
            limits,
            snapshots,
            origin: Arc::new(OnceLock::new()),
            metrics: TransportMetrics::new(),
        })
    }

    /// Names this store (`id`, serving at `address`) on every stream it opens.
    pub fn set_origin(&self, id: u64, address: String) {
        let _ = self.origin.set((id, address));
    }

    /// Replaces the stores' addresses (from the cluster directory). The stream to a
    /// store whose address changed or went is closed, messages queued on it
    /// dropped (Raft sends them again); the next send connects to the new address.
    pub fn set_addresses(&self, addresses: HashMap<u64, String>) {
        // Lock order: `queues`, then `addresses` (as `queue` takes them).
        let mut queues = self.queues.lock().expect("transport lock");
        let mut current = self.addresses.write().expect("transport lock");
        if *current == addresses {
            return;
        }
        for (id, addr) in current.iter() {
            if addresses.get(id) != Some(addr) {
                tracing::info!(store = id, old = %addr, new = ?addresses.get(id), "store address changed");
                queues.remove(id);
            }
        }
        *current = addresses;
    }

    /// Sets who hears about unreachable stores (the raftstore, once started).
    pub fn on_unreachable(&self, handler: UnreachableHandler) {
        let _ = self.unreachable.set(handler);
    }

    /// Bytes queued or buffered toward `store_id`.
    pub fn queued_bytes(&self, store_id: u64) -> usize {
        let queues = self.queues.lock().expect("transport lock");
        queues
            .get(&store_id)
            .map_or(0, |q| q.queued.load(Ordering::Acquire))
    }

    fn queue(&self, store_id: u64) -> Option<Arc<StoreQueue>> {
        let mut queues = self.queues.lock().expect("transport lock");
        if let Some(q) = queues.get(&store_id) {
            if !q.tx.is_closed() {
                return Some(q.clone());
            }
        }
        let addr = self
            .addresses
            .read()
            .expect("transport lock")
            .get(&store_id)?
            .clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let label = store_id.to_string();
        // Every per-store series exists from the first send on, at 0 until counted
        // (a dashboard's query finds it).
        self.metrics.unreachable.with_label_values(&[&label]);
        let queue = Arc::new(StoreQueue {
            tx,
            batches: self.metrics.batches.with_label_values(&[&label]),
            bytes: self.metrics.bytes.with_label_values(&[&label]),
            dropped: self.metrics.dropped.with_label_values(&[&label]),
            queued: Arc::new(AtomicUsize::new(0)),
            overflowing: AtomicBool::new(false),
        });
        self.runtime.spawn(stream_to(
            store_id,
            addr,
            rx,
            self.unreachable.clone(),
            self.limits,
            self.origin.get().cloned(),
            self.tls.clone(),
        ));
        queues.insert(store_id, queue.clone());
        Some(queue)
    }

    fn report(&self, store_id: u64) {
        if let Some(h) = self.unreachable.get() {
            h(store_id);
        }
    }
}

impl Transport for GrpcTransport {
    fn send(&self, store_id: u64, msgs: Vec<RaftMessage>) -> usize {
        let Some(q) = self.queue(store_id) else {
            shoal_raftstore::warn_limited!(
                store = store_id,
                "no address known for store; dropping raft messages"
            );
            return 0;
        };
        let mut msgs = msgs;
        let mut bytes: usize = msgs.iter().map(RaftMessage::encoded_len).sum();
        let before = q.queued.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.limits.max_queued_bytes {
            q.queued.fetch_sub(bytes, Ordering::AcqRel);
            // What fits goes, in order; the rest is dropped (Raft retransmits). A
            // round's output larger than the whole bound (many regions catching one
            // store up at once) used to be dropped entirely, every round: the store
            // never caught up.
            let room = self.limits.max_queued_bytes.saturating_sub(before);
            let (mut fit, mut fit_bytes) = (0, 0);
            for m in &msgs {
                let size = m.encoded_len();
                if fit_bytes + size > room {
                    break;
                }
                fit += 1;
                fit_bytes += size;
            }
            if !q.overflowing.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    store = store_id,
                    queued = before,
                    offered = bytes,
                    limit = self.limits.max_queued_bytes,
                    "raft queue toward store is full (stream stalled?); dropping messages"
                );
                self.report(store_id);
            }
            q.dropped.inc_by((msgs.len() - fit) as u64);
            if fit == 0 {
                return 0;
            }
            msgs.truncate(fit);
            bytes = fit_bytes;
            q.queued.fetch_add(bytes, Ordering::AcqRel);
        } else {
            q.overflowing.store(false, Ordering::Release);
        }
        let item = Queued {
            msgs,
            bytes,
            counter: q.queued.clone(),
        };
        q.batches.inc();
        q.bytes.inc_by(bytes as u64);
        // On a closed queue the item is dropped, releasing its bytes.
        let _ = q.tx.send(item);
        bytes
    }

    fn send_snapshot(&self, store_id: u64, snap: OutgoingSnapshot) {
        self.snapshots.send(store_id, snap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pack::tests::msg;
    use shoal_proto::raft_serverpb::RaftMessageBatch;
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    /// A transport (1 MiB queue bound, 256 KiB batches) toward store 2, a peer that
    /// accepts connections and never reads them: what is queued stays queued. Abort
    /// the returned task to stop the peer.
    async fn toward_a_peer_that_never_reads() -> (
        Arc<GrpcTransport>,
        TransportLimits,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                sockets.push(s);
            }
        });
        let limits = TransportLimits {
            max_message_size: 256 << 10,
            max_queued_bytes: 1 << 20,
            ..TransportLimits::new(256 << 10)
        };
        let transport = GrpcTransport::new(
            HashMap::from([(2, addr)]),
            tokio::runtime::Handle::current(),
            limits,
            None,
        );
        (transport, limits, held)
    }

    /// A peer that accepts the connection and never reads: the stream stalls (HTTP/2
    /// flow control), the queue fills to its bound, and then messages are dropped
    /// and the store is reported unreachable; memory does not grow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_peer_bounds_the_queue_and_is_reported_unreachable() {
        let (transport, limits, held) = toward_a_peer_that_never_reads().await;
        let reports = Arc::new(AtomicU64::new(0));
        let r = reports.clone();
        transport.on_unreachable(Arc::new(move |store| {
            assert_eq!(store, 2);
            r.fetch_add(1, Ordering::Relaxed);
        }));
        // 64 MiB offered in 16 KiB messages, far over the 1 MiB bound.
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..4096 {
            transport.send(2, vec![msg(i, 16 << 10)]);
            assert!(transport.queued_bytes(2) <= limits.max_queued_bytes);
            if i % 64 == 0 {
                // Let the drain task run, as it would between poll rounds.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(Instant::now() < deadline, "sending took too long");
        }
        assert!(
            reports.load(Ordering::Relaxed) >= 1,
            "a full queue reports the store unreachable"
        );
        assert!(transport.queued_bytes(2) <= limits.max_queued_bytes);
        held.abort();
    }

    /// One send larger than the whole bound (a round in which many regions catch
    /// one store up) delivers the part that fits instead of nothing: dropped whole,
    /// every round, the store never caught up.
    /// (One thread: the stream's task cannot take anything before the check.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_send_larger_than_the_bound_keeps_what_fits() {
        let (transport, limits, held) = toward_a_peer_that_never_reads().await;
        // 2 MiB in one send, twice the bound.
        transport.send(2, (0..128).map(|i| msg(i, 16 << 10)).collect());
        let queued = transport.queued_bytes(2);
        assert!(
            queued > (1 << 20) / 2 && queued <= limits.max_queued_bytes,
            "{queued} bytes queued"
        );
        held.abort();
    }

    /// A Raft service that counts the messages it receives; with `hang_first`, its
    /// first stream is accepted and then never read (the receiving side hung: the
    /// HTTP/2 stream stays open, nothing errors) and only later streams deliver.
    struct HangsOnce {
        hang_first: bool,
        streams: AtomicU64,
        delivered: Arc<AtomicU64>,
    }

    #[tonic::async_trait]
    impl shoal_proto::raft_serverpb::raft_server::Raft for HangsOnce {
        async fn send(
            &self,
            req: tonic::Request<tonic::Streaming<RaftMessageBatch>>,
        ) -> Result<tonic::Response<shoal_proto::raft_serverpb::Done>, tonic::Status> {
            let mut stream = req.into_inner();
            if self.hang_first && self.streams.fetch_add(1, Ordering::SeqCst) == 0 {
                std::future::pending::<()>().await;
            }
            while let Some(batch) = stream.message().await? {
                self.delivered
                    .fetch_add(batch.msgs.len() as u64, Ordering::SeqCst);
            }
            Ok(tonic::Response::new(shoal_proto::raft_serverpb::Done {}))
        }

        async fn snapshot(
            &self,
            _: tonic::Request<tonic::Streaming<shoal_proto::raft_serverpb::SnapshotChunk>>,
        ) -> Result<tonic::Response<shoal_proto::raft_serverpb::Done>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
    }

    /// A stream the receiver stopped reading never errors by itself: without the
    /// stall timeout, messages to that store waited behind it for ever (the store
    /// looked alive and fell silent). The sender gives the stream up, reconnects,
    /// and delivery resumes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_the_receiver_stopped_reading_is_replaced() {
        use shoal_proto::raft_serverpb::raft_server::RaftServer;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let delivered = Arc::new(AtomicU64::new(0));
        let service = HangsOnce {
            hang_first: true,
            streams: AtomicU64::new(0),
            delivered: delivered.clone(),
        };
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServer::new(service))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let limits = TransportLimits {
            stall_timeout: Duration::from_millis(300),
            ..TransportLimits::new(1 << 20)
        };
        let transport = GrpcTransport::new(
            HashMap::from([(2, addr)]),
            tokio::runtime::Handle::current(),
            limits,
            None,
        );
        // Enough 16 KiB messages to fill HTTP/2's windows and the stream's buffer,
        // then a trickle: some must arrive through a new stream.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0;
        while delivered.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "nothing delivered after the first stream hung"
            );
            transport.send(2, vec![msg(i, 16 << 10)]);
            i += 1;
            if i % 64 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        server.abort();
    }

    /// A store behind a TCP forwarder, as the chaos runner's links are: while the
    /// store is down, the forwarder accepts each connection and closes it at once.
    /// The transport used to reconnect in a tight loop then (every connect
    /// "succeeds", every stream breaks at once: hundreds of connections a second),
    /// and a stream opened in that window could wait for ever without taking a batch
    /// (in the chaos runs, 30 s, until the stall timeout), while the store was back.
    /// Now streams that break young wait out a backoff, and a stream must take its
    /// first batch within the connect timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_that_comes_back_behind_a_forwarder_is_reached_at_once() {
        use shoal_proto::raft_serverpb::raft_server::RaftServer;
        use std::sync::atomic::AtomicBool;
        use tokio::net::{TcpListener, TcpStream};
        let store = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store_addr = store.local_addr().unwrap().to_string();
        let door = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let door_addr = door.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (u, a) = (up.clone(), accepted.clone());
        let forwarder = tokio::spawn(async move {
            while let Ok((inbound, _)) = door.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let target = store_addr.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut ri, &mut wo) => {}
                        _ = tokio::io::copy(&mut ro, &mut wi) => {}
                    }
                });
            }
        });
        let transport = GrpcTransport::new(
            HashMap::from([(2, door_addr)]),
            tokio::runtime::Handle::current(),
            TransportLimits::new(1 << 20),
            None,
        );
        // Two seconds of a round's worth of messages every 5 ms, the store down.
        let down_until = Instant::now() + Duration::from_secs(2);
        let mut i = 0;
        while Instant::now() < down_until {
            transport.send(2, vec![msg(i, 100)]);
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let tried = accepted.load(Ordering::SeqCst);
        assert!(
            tried <= 20,
            "{tried} connections in 2 s toward a store that is down: no backoff"
        );
        // The store is back.
        let delivered = Arc::new(AtomicU64::new(0));
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServer::new(HangsOnce {
                    hang_first: false,
                    streams: AtomicU64::new(0),
                    delivered: delivered.clone(),
                }))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(store)),
        );
        up.store(true, Ordering::SeqCst);
        let back = Instant::now();
        while delivered.load(Ordering::SeqCst) == 0 {
            assert!(
                back.elapsed() < Duration::from_secs(10),
                "nothing delivered 10 s after the store came back"
            );
            transport.send(2, vec![msg(i, 100)]);
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.abort();
        forwarder.abort();
    }
}
