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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shoal_proto::raft_serverpb::raft_client::RaftClient;
use shoal_proto::raft_serverpb::{RaftMessage, RaftMessageBatch};
use shoal_proto::Message;
use shoal_raftstore::{OutgoingSnapshot, Transport};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::snapshot_sender::SnapshotSender;

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
/// Bytes a message adds to its batch besides its own encoding: the field tag and
/// the length prefix (at most 5 bytes of varint).
const PER_MESSAGE_FRAMING: usize = 6;

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

/// The queue toward one store.
struct StoreQueue {
    tx: mpsc::UnboundedSender<Queued>,
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

/// Sends raft message batches to other stores over gRPC.
pub struct GrpcTransport {
    addresses: HashMap<u64, String>,
    queues: Mutex<HashMap<u64, Arc<StoreQueue>>>,
    runtime: tokio::runtime::Handle,
    unreachable: Arc<OnceLock<UnreachableHandler>>,
    limits: TransportLimits,
    snapshots: SnapshotSender,
}

impl GrpcTransport {
    /// A transport to the stores of `addresses`, running its tasks on `runtime`.
    pub fn new(
        addresses: HashMap<u64, String>,
        runtime: tokio::runtime::Handle,
        limits: TransportLimits,
    ) -> Arc<Self> {
        let snapshots = SnapshotSender::new(
            addresses.clone(),
            runtime.clone(),
            limits.snap_max_concurrent,
            limits.snap_max_bytes_per_sec,
            limits.max_message_size,
        );
        Arc::new(GrpcTransport {
            addresses,
            queues: Mutex::new(HashMap::new()),
            runtime,
            unreachable: Arc::new(OnceLock::new()),
            limits,
            snapshots,
        })
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
        let addr = self.addresses.get(&store_id)?.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(StoreQueue {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            overflowing: AtomicBool::new(false),
        });
        self.runtime.spawn(stream_to(
            store_id,
            addr,
            rx,
            self.unreachable.clone(),
            self.limits,
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
    fn send(&self, store_id: u64, msgs: Vec<RaftMessage>) {
        let Some(q) = self.queue(store_id) else {
            tracing::warn!(
                store = store_id,
                "no address known for store; dropping raft messages"
            );
            return;
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
            if fit == 0 {
                return;
            }
            msgs.truncate(fit);
            bytes = fit_bytes;
            q.queued.fetch_add(bytes, Ordering::AcqRel);
            let item = Queued {
                msgs,
                bytes,
                counter: q.queued.clone(),
            };
            let _ = q.tx.send(item);
            return;
        }
        q.overflowing.store(false, Ordering::Release);
        let item = Queued {
            msgs,
            bytes,
            counter: q.queued.clone(),
        };
        // On a closed queue the item is dropped, releasing its bytes.
        let _ = q.tx.send(item);
    }

    fn send_snapshot(&self, store_id: u64, snap: OutgoingSnapshot) {
        self.snapshots.send(store_id, snap);
    }
}

/// Splits `msgs` into batches whose encoding is at most `max_batch_bytes`, in
/// order, each paired with the bytes it counts in the queue. A message too large
/// for any batch is dropped (logged), its bytes returned as the third value.
fn pack(
    msgs: Vec<RaftMessage>,
    max_batch_bytes: usize,
) -> (Vec<(RaftMessageBatch, usize)>, Vec<RaftMessage>, usize) {
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    let mut dropped_bytes = 0;
    let mut batch = Vec::new();
    let (mut framed, mut counted) = (0usize, 0usize);
    for m in msgs {
        let size = m.encoded_len();
        if size + PER_MESSAGE_FRAMING > max_batch_bytes {
            dropped_bytes += size;
            dropped.push(m);
            continue;
        }
        if framed + size + PER_MESSAGE_FRAMING > max_batch_bytes {
            out.push((
                RaftMessageBatch {
                    msgs: std::mem::take(&mut batch),
                },
                counted,
            ));
            (framed, counted) = (0, 0);
        }
        framed += size + PER_MESSAGE_FRAMING;
        counted += size;
        batch.push(m);
    }
    if !batch.is_empty() {
        out.push((RaftMessageBatch { msgs: batch }, counted));
    }
    (out, dropped, dropped_bytes)
}

/// Keeps one stream to `addr` alive and feeds it from `rx`; ends when `rx` closes.
async fn stream_to(
    store_id: u64,
    addr: String,
    rx: mpsc::UnboundedReceiver<Queued>,
    unreachable: Arc<OnceLock<UnreachableHandler>>,
    limits: TransportLimits,
) {
    let mut link = StoreLink {
        store_id,
        addr,
        rx,
        unreachable,
        max_message_size: limits.max_message_size,
        stall_timeout: limits.stall_timeout,
        first_batch_timeout: limits.first_batch_timeout,
        backoff: MIN_BACKOFF,
    };
    let Some(endpoint) = link.endpoint() else {
        return;
    };
    while let Some(client) = link.connect(&endpoint).await {
        let opened = tokio::time::Instant::now();
        if !link.feed(client).await {
            return;
        }
        if opened.elapsed() >= STREAM_MIN_LIFE {
            link.backoff = MIN_BACKOFF;
        } else if !link.back_off().await {
            return;
        }
    }
}

/// The sending side toward one store: its queue and what a stream to it needs.
struct StoreLink {
    store_id: u64,
    addr: String,
    rx: mpsc::UnboundedReceiver<Queued>,
    unreachable: Arc<OnceLock<UnreachableHandler>>,
    max_message_size: usize,
    stall_timeout: Duration,
    first_batch_timeout: Duration,
    /// The wait before the next connect after a failed one (doubling up to
    /// [`MAX_BACKOFF`], reset by a stream that lasted [`STREAM_MIN_LIFE`]).
    backoff: Duration,
}

impl StoreLink {
    fn report(&self) {
        if let Some(h) = self.unreachable.get() {
            h(self.store_id);
        }
    }

    /// The store's endpoint; `None` (logged, reported) for an invalid address.
    fn endpoint(&self) -> Option<Endpoint> {
        match Endpoint::from_shared(format!("http://{}", self.addr)) {
            Ok(e) => Some(
                e.tcp_nodelay(true)
                    .connect_timeout(CONNECT_TIMEOUT)
                    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true),
            ),
            Err(e) => {
                let addr = &self.addr;
                tracing::error!(store = self.store_id, %addr, "invalid store address: {e}");
                self.report();
                None
            }
        }
    }

    /// Waits out the backoff, dropping what is queued meanwhile, and doubles it.
    /// False when the queue closed.
    async fn back_off(&mut self) -> bool {
        let open = drop_for(&mut self.rx, self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        open
    }

    /// Connects, retrying with exponential backoff; messages queued meanwhile are
    /// dropped. `None` when the queue closed.
    async fn connect(&mut self, endpoint: &Endpoint) -> Option<RaftClient<Channel>> {
        loop {
            match RaftClient::connect(endpoint.clone()).await {
                Ok(c) => {
                    return Some(
                        c.max_decoding_message_size(self.max_message_size)
                            .max_encoding_message_size(self.max_message_size),
                    )
                }
                Err(e) => {
                    let addr = &self.addr;
                    tracing::debug!(store = self.store_id, %addr, "raft connect failed: {e}");
                    self.report();
                    if !self.back_off().await {
                        return None;
                    }
                }
            }
        }
    }

    /// Opens a stream on `client` and feeds it what piles up in the queue, until the
    /// stream breaks (true; reported) or the queue closes (false).
    async fn feed(&mut self, mut client: RaftClient<Channel>) -> bool {
        let (tx, body_rx) = mpsc::channel::<Queued>(STREAM_BUFFER);
        // Progress: batches handed to the stream and not yet taken by tonic, and when
        // tonic last took one (milliseconds since `start`; 0 until the first).
        let start = tokio::time::Instant::now();
        let waiting = Arc::new(AtomicUsize::new(0));
        let last_taken = Arc::new(AtomicU64::new(0));
        let progress = (waiting.clone(), last_taken.clone());
        // Dropping the `Queued` once tonic has taken its batch releases its bytes.
        let body = futures::stream::unfold((body_rx, progress), move |(mut r, p)| async move {
            r.recv().await.map(|mut q| {
                p.0.fetch_sub(1, Ordering::AcqRel);
                p.1.store(start.elapsed().as_millis().max(1) as u64, Ordering::Release);
                let msgs = std::mem::take(&mut q.msgs);
                (RaftMessageBatch { msgs }, (r, p))
            })
        });
        let call = tokio::spawn(async move { client.send(body).await });
        let limits = (self.first_batch_timeout, self.stall_timeout);
        let stalled = || {
            let waiting = waiting.load(Ordering::Acquire);
            is_stalled(
                start.elapsed(),
                last_taken.load(Ordering::Acquire),
                waiting,
                limits,
            )
        };
        let mut check = tokio::time::interval(
            (self.stall_timeout.min(self.first_batch_timeout) / 4).max(Duration::from_millis(10)),
        );
        let stall = 'stream: loop {
            tokio::select! {
                first = self.rx.recv() => {
                    let Some(first) = first else {
                        return false;
                    };
                    // Every batch is counted until tonic takes it: those not sent when
                    // the stream breaks release their bytes as they are dropped here.
                    for item in self.take_batches(first) {
                        waiting.fetch_add(1, Ordering::AcqRel);
                        let limit = if last_taken.load(Ordering::Acquire) == 0 {
                            self.first_batch_timeout
                        } else {
                            self.stall_timeout
                        };
                        match tokio::time::timeout(limit, tx.send(item)).await {
                            Ok(Ok(())) if !call.is_finished() => {}
                            Ok(_) => break 'stream false,
                            // A full buffer for the whole timeout: nothing was taken.
                            Err(_) => break 'stream true,
                        }
                    }
                }
                _ = check.tick() => {
                    if call.is_finished() {
                        break 'stream false;
                    }
                    if stalled() {
                        break 'stream true;
                    }
                }
            }
        };
        let addr = &self.addr;
        if stall && last_taken.load(Ordering::Acquire) == 0 {
            tracing::debug!(
                store = self.store_id,
                %addr,
                "new raft stream took nothing in {:?}; reconnecting",
                self.first_batch_timeout
            );
        } else if stall {
            tracing::warn!(
                store = self.store_id,
                %addr,
                "raft stream took nothing for {:?} while batches waited; reconnecting",
                self.stall_timeout
            );
        } else {
            tracing::debug!(store = self.store_id, %addr, "raft stream broke; reconnecting");
        }
        self.report();
        call.abort();
        true
    }

    /// `first` and everything queued behind it, packed into batches that fit the
    /// message limit, each still counted in the store's queued bytes (released when
    /// it is dropped, sent or not); a message too large for any batch is dropped
    /// here (logged).
    fn take_batches(&mut self, first: Queued) -> Vec<Queued> {
        let counter = first.counter.clone();
        let mut items = vec![first];
        while let Ok(more) = self.rx.try_recv() {
            items.push(more);
        }
        let mut msgs = Vec::new();
        for mut item in items {
            msgs.append(&mut item.msgs);
            // Its bytes move to the batches below.
            item.bytes = 0;
        }
        let (batches, dropped, dropped_bytes) = pack(msgs, self.max_message_size);
        counter.fetch_sub(dropped_bytes, Ordering::AcqRel);
        for m in &dropped {
            tracing::error!(
                store = self.store_id,
                region = m.region_id,
                bytes = m.encoded_len(),
                limit = self.max_message_size,
                "raft message larger than the gRPC message limit; dropped"
            );
        }
        let counted = |(batch, bytes): (RaftMessageBatch, usize)| Queued {
            msgs: batch.msgs,
            bytes,
            counter: counter.clone(),
        };
        batches.into_iter().map(counted).collect()
    }
}

/// Whether a stream `age` old, whose last batch was taken `last_taken_ms` into
/// its life (0: none yet), with `waiting` batches handed to it and not taken,
/// should be given up: nothing taken for `first_batch` (a new stream) or for
/// `stall` (one that took batches before).
fn is_stalled(
    age: Duration,
    last_taken_ms: u64,
    waiting: usize,
    (first_batch, stall): (Duration, Duration),
) -> bool {
    let limit = if last_taken_ms == 0 {
        first_batch
    } else {
        stall
    };
    waiting > 0 && age.saturating_sub(Duration::from_millis(last_taken_ms)) >= limit
}

/// Waits `backoff` while dropping what arrives. False when the queue closed.
async fn drop_for(rx: &mut mpsc::UnboundedReceiver<Queued>, backoff: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + backoff;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(_dropped)) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn msg(region_id: u64, payload: usize) -> RaftMessage {
        RaftMessage {
            region_id,
            message: vec![7; payload],
            ..Default::default()
        }
    }

    #[test]
    fn pack_keeps_every_batch_under_the_limit_and_the_order() {
        let msgs: Vec<RaftMessage> = (1..=50).map(|i| msg(i, 1000 * (i as usize % 7))).collect();
        let total: usize = msgs.iter().map(RaftMessage::encoded_len).sum();
        let (batches, dropped, dropped_bytes) = pack(msgs, 10_000);
        assert!(dropped.is_empty() && dropped_bytes == 0);
        assert!(batches.len() > 1);
        let mut regions = Vec::new();
        let mut counted = 0;
        for (b, bytes) in &batches {
            assert!(b.encoded_len() <= 10_000, "{}", b.encoded_len());
            counted += bytes;
            regions.extend(b.msgs.iter().map(|m| m.region_id));
        }
        assert_eq!(counted, total);
        assert_eq!(regions, (1..=50).collect::<Vec<_>>());
        // A message that fits no batch is dropped, the others still go.
        let (batches, dropped, _) = pack(vec![msg(1, 10), msg(2, 20_000), msg(3, 10)], 10_000);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].region_id, 2);
        let sent: Vec<u64> = batches
            .iter()
            .flat_map(|(b, _)| b.msgs.iter().map(|m| m.region_id))
            .collect();
        assert_eq!(sent, [1, 3]);
    }

    #[test]
    fn a_new_stream_gets_the_short_timeout_a_stream_that_took_batches_the_long_one() {
        let limits = (Duration::from_secs(3), Duration::from_secs(30));
        let s = Duration::from_secs;
        // Never took a batch: given up after 3 s, not before.
        assert!(!is_stalled(s(2), 0, 1, limits));
        assert!(is_stalled(s(3), 0, 1, limits));
        // Took one 1 s in: 30 s from then.
        assert!(!is_stalled(s(30), 1000, 1, limits));
        assert!(is_stalled(s(31), 1000, 1, limits));
        // Nothing waiting: an idle stream is never stalled.
        assert!(!is_stalled(s(100), 0, 0, limits));
        assert!(!is_stalled(s(100), 1000, 0, limits));
    }

    /// The batches drained from the queue stay counted until dropped: when a stream
    /// breaks before they are all sent, the rest give their bytes back (they used
    /// to be lost to the count, which crept up across reconnects until the queue
    /// looked full for good).
    #[test]
    fn drained_batches_release_their_bytes_when_dropped_unsent() {
        let (tx, rx) = mpsc::unbounded_channel();
        let counter = Arc::new(AtomicUsize::new(0));
        let mut link = StoreLink {
            store_id: 2,
            addr: "127.0.0.1:1".into(),
            rx,
            unreachable: Arc::new(OnceLock::new()),
            max_message_size: 10_000,
            stall_timeout: STALL_TIMEOUT,
            first_batch_timeout: FIRST_BATCH_TIMEOUT,
            backoff: MIN_BACKOFF,
        };
        let queue = |msgs: Vec<RaftMessage>| {
            let bytes: usize = msgs.iter().map(RaftMessage::encoded_len).sum();
            counter.fetch_add(bytes, Ordering::AcqRel);
            Queued {
                msgs,
                bytes,
                counter: counter.clone(),
            }
        };
        let first = queue((0..10).map(|i| msg(i, 3000)).collect());
        tx.send(queue((10..20).map(|i| msg(i, 3000)).collect()))
            .unwrap();
        let total = counter.load(Ordering::Acquire);
        let batches = link.take_batches(first);
        assert!(batches.len() > 2, "packed into several batches");
        assert_eq!(counter.load(Ordering::Acquire), total, "still counted");
        let mut batches = batches.into_iter();
        drop(batches.next()); // sent: tonic took it
        drop(batches); // the stream broke: the rest are dropped unsent
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }

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
