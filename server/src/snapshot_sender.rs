//! Sending Raft snapshots: each on a connection of its own (a large snapshot never
//! holds up the Raft message stream to the same store), at most
//! `snap-max-concurrent` at once, all of them together at most
//! `snap-max-bytes-per-sec`. The message goes first, then the files' bytes in
//! chunks of at most [`CHUNK_BYTES`]; the send ends with the receiver's answer,
//! given once it has checked and synced every file. Whatever happens (refused,
//! cut, too slow), the outcome is reported, so raft-rs always hears.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use shoal_client::tls::TlsConnector;
use shoal_proto::raft_serverpb::raft_client::RaftClient;
use shoal_proto::raft_serverpb::SnapshotChunk;
use shoal_raftstore::{OutgoingSnapshot, SnapFiles};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tonic::transport::Endpoint;

/// Bytes of file data per chunk.
pub const CHUNK_BYTES: usize = 1 << 20;
/// The longest a send may take: this much, plus twice the time its bytes need
/// at its share of the rate limit (every permitted send going at once); a
/// stalled transfer is cut.
pub(crate) const BASE_DEADLINE: Duration = Duration::from_secs(60);

/// A bound on bytes per second shared by every send: each chunk reserves its
/// slot in time and waits for it.
pub(crate) struct RateLimiter {
    bytes_per_sec: u64,
    next: parking_lot::Mutex<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(bytes_per_sec: u64) -> RateLimiter {
        RateLimiter {
            bytes_per_sec: bytes_per_sec.max(1),
            next: parking_lot::Mutex::new(Instant::now()),
        }
    }

    /// Waits until `bytes` more may go.
    pub(crate) async fn take(&self, bytes: usize) {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let at = {
            let mut next = self.next.lock();
            let at = (*next).max(Instant::now());
            *next = at + cost;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Sends snapshots to the stores of `addresses`.
pub(crate) struct SnapshotSender {
    addresses: crate::transport::Addresses,
    runtime: tokio::runtime::Handle,
    permits: Arc<Semaphore>,
    rate: Arc<RateLimiter>,
    max_message_size: usize,
    /// Dials with TLS when the node has it on.
    tls: Option<TlsConnector>,
    /// Bytes per second one send gets when every permitted send runs at once.
    share: u64,
}

impl SnapshotSender {
    pub(crate) fn new(
        addresses: crate::transport::Addresses,
        runtime: tokio::runtime::Handle,
        max_concurrent: usize,
        bytes_per_sec: u64,
        max_message_size: usize,
        tls: Option<TlsConnector>,
    ) -> SnapshotSender {
        SnapshotSender {
            addresses,
            runtime,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            rate: Arc::new(RateLimiter::new(bytes_per_sec)),
            max_message_size,
            tls,
            share: (bytes_per_sec / max_concurrent.max(1) as u64).max(1),
        }
    }

    /// Starts sending `snap` to `store_id`; its outcome goes to `snap.done`.
    pub(crate) fn send(&self, store_id: u64, snap: OutgoingSnapshot) {
        let addr = self
            .addresses
            .read()
            .expect("transport lock")
            .get(&store_id)
            .cloned();
        let Some(addr) = addr else {
            tracing::warn!(
                store = store_id,
                "no address known for store; snapshot not sent"
            );
            return snap.done.finish(false);
        };
        let (permits, rate) = (self.permits.clone(), self.rate.clone());
        let (max, share, tls) = (self.max_message_size, self.share, self.tls.clone());
        let OutgoingSnapshot { msg, files, done } = snap;
        self.runtime.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return done.finish(false);
            };
            let deadline = BASE_DEADLINE + Duration::from_secs(2 * files.bytes / share);
            let region = msg.region_id;
            let sent = tokio::time::timeout(
                deadline,
                stream(store_id, &addr, msg, &files, &rate, max, tls.as_ref()),
            )
            .await;
            let ok = match sent {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(store = store_id, region, "sending a snapshot failed: {e}");
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        store = store_id,
                        region,
                        "sending a snapshot took over {deadline:?}; given up"
                    );
                    false
                }
            };
            done.finish(ok);
        });
    }
}

/// Streams one snapshot and waits for the receiver's answer.
async fn stream(
    store_id: u64,
    addr: &str,
    msg: shoal_proto::raft_serverpb::RaftMessage,
    files: &SnapFiles,
    rate: &RateLimiter,
    max_message_size: usize,
    tls: Option<&TlsConnector>,
) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    let channel = crate::transport::dial(&endpoint, tls, store_id)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = RaftClient::new(channel)
        .max_encoding_message_size(max_message_size)
        .max_decoding_message_size(max_message_size);
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
    let call = tokio::spawn(async move { client.snapshot(tokio_stream_of(rx)).await });
    let first = SnapshotChunk {
        message: Some(msg),
        data: Vec::new(),
    };
    let fed = feed(&tx, first, files, rate).await;
    drop(tx);
    let answer = call.await.map_err(|e| e.to_string())?;
    // The receiver's refusal says more than a send that broke because of it.
    answer.map_err(|s| format!("the receiver refused it: {}", s.message()))?;
    fed
}

/// Sends the first chunk, then every file in chunks, at the shared rate.
async fn feed(
    tx: &mpsc::Sender<SnapshotChunk>,
    first: SnapshotChunk,
    files: &SnapFiles,
    rate: &RateLimiter,
) -> Result<(), String> {
    let closed = || "the receiver closed the stream".to_string();
    tx.send(first).await.map_err(|_| closed())?;
    for (path, size) in &files.files {
        let path = path.clone();
        let mut file = std::fs::File::open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut left = *size;
        while left > 0 {
            let n = (left as usize).min(CHUNK_BYTES);
            // Reading a file is disk IO: off the runtime's threads.
            let (f, data) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                file.read_exact(&mut buf).map(|()| (file, buf))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            file = f;
            rate.take(n).await;
            let chunk = SnapshotChunk {
                message: None,
                data,
            };
            tx.send(chunk).await.map_err(|_| closed())?;
            left -= n as u64;
        }
    }
    Ok(())
}

/// A stream of what `rx` receives, for tonic.
fn tokio_stream_of(
    rx: mpsc::Receiver<SnapshotChunk>,
) -> impl futures::Stream<Item = SnapshotChunk> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn the_rate_limiter_spreads_bytes_over_time() {
        let r = RateLimiter::new(1 << 20);
        let start = Instant::now();
        for _ in 0..4 {
            r.take(256 << 10).await;
        }
        // A MiB in four quarters at 1 MiB/s: the last quarter may go after 0.75 s,
        // not before.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(750), "{took:?}");
    }
}
