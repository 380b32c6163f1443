//! The sending side toward one store ([`StoreLink`]): connecting with backoff,
//! feeding one stream from the store's queue, and giving a stream up when it
//! breaks, dies young or stalls (the rules are in the transport's module docs).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use shoal_proto::raft_serverpb::raft_client::RaftClient;
use shoal_proto::raft_serverpb::RaftMessageBatch;
use shoal_proto::Message;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use shoal_client::tls::TlsConnector;

use super::pack::pack;
use super::{
    Queued, TransportLimits, UnreachableHandler, CONNECT_TIMEOUT, KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT, MAX_BACKOFF, MIN_BACKOFF, STREAM_BUFFER, STREAM_MIN_LIFE,
};

/// Keeps one stream to `addr` alive and feeds it from `rx`; ends when `rx` closes.
pub(super) async fn stream_to(
    store_id: u64,
    addr: String,
    rx: mpsc::UnboundedReceiver<Queued>,
    unreachable: Arc<OnceLock<UnreachableHandler>>,
    limits: TransportLimits,
    origin: Option<(u64, String)>,
    tls: Option<TlsConnector>,
) {
    let mut link = StoreLink {
        origin,
        tls,
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
    /// This store's id and address, sent with each stream.
    origin: Option<(u64, String)>,
    /// Dials with TLS when the node has it on.
    tls: Option<TlsConnector>,
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
            match super::dial(endpoint, self.tls.as_ref(), self.store_id).await {
                Ok(c) => {
                    return Some(
                        RaftClient::new(c)
                            .max_decoding_message_size(self.max_message_size)
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
        let mut request = tonic::Request::new(body);
        if let Some((id, addr)) = &self.origin {
            let meta = request.metadata_mut();
            if let (Ok(id), Ok(addr)) = (id.to_string().parse(), addr.parse()) {
                meta.insert(super::ORIGIN_STORE, id);
                meta.insert(super::ORIGIN_ADDRESS, addr);
            }
        }
        let call = tokio::spawn(async move { client.send(request).await });
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
    use super::super::{FIRST_BATCH_TIMEOUT, STALL_TIMEOUT};
    use super::*;
    use crate::transport::pack::tests::msg;
    use shoal_proto::raft_serverpb::RaftMessage;

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
            origin: None,
            tls: None,
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
}
