//! The batched stream to one store (`Kv.BatchCommands`): requests from every task
//! of the client share one long-lived bidirectional gRPC stream per store address
//! (on an HTTP/2 connection of its own, so that a stream held back by flow control
//! never stalls the client's other calls), many requests per frame, answers
//! matched back by id.
//!
//! Two tasks run a stream. The **sender** takes the first queued request, adds
//! every other one already queued, up to [`MAX_REQUESTS_PER_FRAME`] and to the
//! message size limit, and sends them as one frame: under load a frame carries
//! many requests, alone it carries one and adds no delay. A request whose caller
//! stopped waiting (timed out) is dropped unsent. The **receiver** hands each
//! answer to its caller. They are apart so that a sender held back by flow control
//! never stops answers being read (which would deadlock against a server that stops
//! reading while it has too much in flight).
//!
//! The stream opens on the first request and ends when it fails or the server ends
//! it; the next request opens a new one. Failures reach callers as
//! `tonic::Status`es that the request loop classifies as it does a unary call's
//! (`discovery::is_transport_error`, `is_connect_failure`), by whether the request
//! may have reached the server:
//! - **not sent** (a `ConnectionRefused` source: the loop may retry even a write):
//!   still queued when the stream ended; in a frame that was never handed to gRPC;
//!   or unanswered when the server's last frame said `last`, which it sends only
//!   after answering every request it read (`server/src/kv_batch.rs`: a node
//!   shutting down stops reading and finishes what it read);
//! - **maybe sent** (`ConnectionReset`: a write's outcome is unknown): unanswered
//!   when the stream broke;
//! - a stream that could not be opened passes its open's status on (a refused
//!   connection is "not sent"); a server without `BatchCommands` (`Unimplemented`)
//!   served nothing: its requests are "not sent", and the client sends unary calls
//!   to that address from then on.
//!
//! A request's own gRPC error comes back as the server's status (no source error:
//! sent by a server).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::SinkExt;
use parking_lot::Mutex;
use shoal_proto::kvrpcpb::batch_commands_request::request::Cmd as Ask;
use shoal_proto::kvrpcpb::batch_commands_request::Request as Asked;
use shoal_proto::kvrpcpb::batch_commands_response::response::Cmd as Answer;
use shoal_proto::kvrpcpb::kv_client::KvClient;
use shoal_proto::kvrpcpb::{
    BatchCommandsRequest, BatchWriteRequest, BatchWriteResponse, CompareAndSwapRequest,
    CompareAndSwapResponse, DeleteRequest, DeleteResponse, GetRequest, GetResponse, PutRequest,
    PutResponse, ScanRequest, ScanResponse,
};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::discovery::kv_client;

/// Requests sent in one frame at most.
pub const MAX_REQUESTS_PER_FRAME: usize = 256;

/// Requests waiting for the sender at most; callers wait for room past that.
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<Answer, Status>>;

/// A queued request and where its answer goes.
struct Queued {
    cmd: Ask,
    reply: Reply,
}

/// The handle of one store's stream. Cheap to clone.
#[derive(Clone)]
pub(crate) struct BatchStream {
    queue: mpsc::Sender<Queued>,
    /// Set when the server answered `Unimplemented`: unary calls from then on.
    unsupported: Arc<AtomicBool>,
}

impl BatchStream {
    /// A stream over `channel`, opened when the first request is queued.
    pub(crate) fn open(channel: Channel, max_message_size: usize) -> BatchStream {
        let (queue, queued) = mpsc::channel(QUEUE);
        let unsupported = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(channel, max_message_size, queued, unsupported.clone()));
        BatchStream { queue, unsupported }
    }

    /// Whether the stream ended (failed, or never opened); a new one is needed.
    pub(crate) fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Whether the store has no `BatchCommands` (an older node).
    pub(crate) fn is_unsupported(&self) -> bool {
        self.unsupported.load(Ordering::Relaxed)
    }

    async fn call(&self, cmd: Ask) -> Result<Answer, Status> {
        let (reply, answer) = oneshot::channel();
        // A stream that ended before taking the request never sent it.
        if self.queue.send(Queued { cmd, reply }).await.is_err() {
            return Err(not_sent());
        }
        answer.await.unwrap_or_else(|_| Err(maybe_sent()))
    }
}

/// The status of a request the server certainly did not read.
fn not_sent() -> Status {
    transport_status(
        "the batched stream ended before the request reached the store",
        std::io::ErrorKind::ConnectionRefused,
    )
}

/// The status of a request the server may have read and served.
fn maybe_sent() -> Status {
    transport_status(
        "the batched stream broke with the request in flight",
        std::io::ErrorKind::ConnectionReset,
    )
}

/// A status the request loop reads as its transport's: it has a source error, and
/// `ConnectionRefused` means nothing was sent.
fn transport_status(what: &str, kind: std::io::ErrorKind) -> Status {
    let mut status = Status::unavailable(what.to_string());
    status.set_source(Arc::new(std::io::Error::new(kind, what.to_string())));
    status
}

/// How a Kv request reaches a store: its own unary call, or the store's batched
/// stream (`ClientConfig::batch_stream`). Both answer alike.
pub(crate) enum KvConn {
    Unary(KvClient<Channel>),
    Batched(BatchStream),
}

/// The unary call's answer from a batched one, and the dispatch of `KvConn`.
macro_rules! typed_calls {
    ($($name:ident($req:ty) -> $resp:ty = $variant:ident;)*) => {
        impl KvConn {
            $(
                pub(crate) async fn $name(
                    self,
                    req: $req,
                ) -> Result<tonic::Response<$resp>, Status> {
                    match self {
                        KvConn::Unary(mut c) => c.$name(req).await,
                        KvConn::Batched(b) => b.$name(req).await,
                    }
                }
            )*
        }

        impl BatchStream {
            $(
                pub(crate) async fn $name(
                    &self,
                    req: $req,
                ) -> Result<tonic::Response<$resp>, Status> {
                    match self.call(Ask::$variant(req)).await? {
                        Answer::$variant(resp) => Ok(tonic::Response::new(resp)),
                        Answer::Failure(f) => Err(Status::new(Code::from(f.code), f.message)),
                        other => Err(Status::internal(format!(
                            "the server answered a {} with {other:?}",
                            stringify!($variant)
                        ))),
                    }
                }
            )*
        }
    };
}

typed_calls! {
    get(GetRequest) -> GetResponse = Get;
    put(PutRequest) -> PutResponse = Put;
    delete(DeleteRequest) -> DeleteResponse = Delete;
    compare_and_swap(CompareAndSwapRequest) -> CompareAndSwapResponse = Cas;
    batch_write(BatchWriteRequest) -> BatchWriteResponse = BatchWrite;
    scan(ScanRequest) -> ScanResponse = Scan;
}

/// Callers waiting for answers, by request id.
type Waiting = Arc<Mutex<HashMap<u64, Reply>>>;

/// Room a frame leaves under the message limit for its own framing.
const FRAME_SLACK: usize = 64 << 10;

/// Most bytes of requests in one frame, whatever the limits: under the smallest
/// message limit a node can have (`raft-entry-max-size` >= 64 KiB, plus 1 MiB), and
/// larger than 256 small requests, so that batching loses nothing by it.
const MAX_FRAME_BYTES: usize = 1 << 20;

/// Opens the stream on the first request, then runs the receiver here and the
/// sender on a task of its own until the stream ends or the client is dropped.
async fn run(
    channel: Channel,
    max_message_size: usize,
    mut queued: mpsc::Receiver<Queued>,
    unsupported: Arc<AtomicBool>,
) {
    let Some(first) = queued.recv().await else {
        return;
    };
    let mut framer = Framer {
        waiting: Arc::default(),
        next_id: 0,
        carry: Some(first),
        budget: max_message_size
            .saturating_sub(FRAME_SLACK)
            .min(MAX_FRAME_BYTES),
    };
    let (mut frames, outbound) = futures::channel::mpsc::channel::<BatchCommandsRequest>(4);
    let waiting = framer.waiting.clone();
    if let Some((frame, _)) = framer.take(&mut queued) {
        // Buffered in the channel: sent as soon as the stream is open.
        let _ = frames.try_send(frame);
    }
    let opened = kv_client(channel, max_message_size)
        .batch_commands(outbound)
        .await;
    let mut answers = match opened {
        Ok(resp) => resp.into_inner(),
        Err(status) => {
            queued.close();
            if status.code() == Code::Unimplemented {
                // Served nothing: the requests go again, as unary calls.
                unsupported.store(true, Ordering::Relaxed);
                fail_all(&waiting, not_sent);
            } else {
                // The first frame may have gone out before the open failed: the
                // open's own status says (a refused connection sent nothing).
                fail_all(&waiting, || status.clone());
            }
            fail_unsent(&mut queued, framer.carry.take());
            return;
        }
    };
    // The sender stops when the client is dropped (no more requests: the stream
    // then ends gracefully), when the stream breaks, or when told to; it hands the
    // queue back, so that requests never sent can be failed as such.
    let (stop, mut stopped) = oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                frame = framer.next(&mut queued) => frame,
                _ = &mut stopped => break,
            };
            let Some((frame, ids)) = frame else { break };
            // `feed`, not `send`: done once the frame is in gRPC's queue (from
            // there it may go out at any time), without waiting for it to drain.
            tokio::select! {
                fed = frames.feed(frame) => if fed.is_err() {
                    framer.unsend(&ids);
                    break;
                },
                // Not in gRPC's queue: not sent.
                _ = &mut stopped => {
                    framer.unsend(&ids);
                    break;
                }
            }
        }
        (queued, framer.carry.take())
    });
    let mut saw_last = false;
    let clean_end = loop {
        match answers.message().await {
            Ok(Some(frame)) => {
                saw_last |= frame.last;
                let mut waiting = waiting.lock();
                for answer in frame.responses {
                    // A caller that timed out has dropped its receiver.
                    if let (Some(reply), Some(cmd)) = (waiting.remove(&answer.id), answer.cmd) {
                        let _ = reply.send(Ok(cmd));
                    }
                }
            }
            // Clean only with the server's word that it answered all it read.
            Ok(None) => break saw_last,
            Err(_) => break false,
        }
    };
    let _ = stop.send(());
    if let Ok((mut queued, carry)) = sender.await {
        fail_unsent(&mut queued, carry);
    }
    match clean_end {
        true => fail_all(&waiting, not_sent),
        false => fail_all(&waiting, maybe_sent),
    }
}

/// Packs queued requests into frames and registers their callers.
struct Framer {
    waiting: Waiting,
    next_id: u64,
    /// A request taken from the queue that did not fit the last frame.
    carry: Option<Queued>,
    /// Most encoded bytes of requests in one frame (one request alone may pass it:
    /// the client refused larger ones before queueing them).
    budget: usize,
}

impl Framer {
    /// The next frame, waiting for a request if none is queued; `None` once the
    /// queue is closed and empty.
    async fn next(
        &mut self,
        queued: &mut mpsc::Receiver<Queued>,
    ) -> Option<(BatchCommandsRequest, Vec<u64>)> {
        loop {
            if self.carry.is_none() {
                self.carry = Some(queued.recv().await?);
            }
            if let Some(frame) = self.take(queued) {
                return Some(frame);
            }
        }
    }

    /// The carried request and every request queued behind it, up to a frame's
    /// worth, registered under fresh ids; `None` when every caller of them gave up.
    fn take(
        &mut self,
        queued: &mut mpsc::Receiver<Queued>,
    ) -> Option<(BatchCommandsRequest, Vec<u64>)> {
        let mut requests = Vec::with_capacity(8);
        let mut ids = Vec::with_capacity(8);
        let mut bytes = 0;
        let mut waiting = self.waiting.lock();
        while let Some(q) = self.carry.take().or_else(|| queued.try_recv().ok()) {
            // Its caller timed out while it waited: never sent, never served.
            if q.reply.is_closed() {
                continue;
            }
            let size = q.cmd.encoded_len() + 16;
            if !requests.is_empty() && bytes + size > self.budget {
                self.carry = Some(q);
                break;
            }
            bytes += size;
            let id = self.next_id;
            self.next_id += 1;
            waiting.insert(id, q.reply);
            ids.push(id);
            requests.push(Asked {
                id,
                cmd: Some(q.cmd),
            });
            if requests.len() == MAX_REQUESTS_PER_FRAME {
                break;
            }
        }
        // Callers that gave up after their request was sent leave their entries
        // behind until answered; a server that never answers them must not make
        // the map grow without bound.
        if waiting.len() > 4 * QUEUE {
            waiting.retain(|_, reply| !reply.is_closed());
        }
        (!requests.is_empty()).then_some((BatchCommandsRequest { requests }, ids))
    }

    /// Fails the requests of a frame that was never handed to gRPC: not sent.
    fn unsend(&self, ids: &[u64]) {
        let mut waiting = self.waiting.lock();
        for id in ids {
            if let Some(reply) = waiting.remove(id) {
                let _ = reply.send(Err(not_sent()));
            }
        }
    }
}

/// Fails, as not sent, what never left the queue: the request carried over to the
/// next frame, and every one still queued (the queue is closed first).
fn fail_unsent(queued: &mut mpsc::Receiver<Queued>, carry: Option<Queued>) {
    queued.close();
    for q in carry
        .into_iter()
        .chain(std::iter::from_fn(|| queued.try_recv().ok()))
    {
        let _ = q.reply.send(Err(not_sent()));
    }
}

fn fail_all(waiting: &Waiting, status: impl Fn() -> Status) {
    for (_, reply) in waiting.lock().drain() {
        let _ = reply.send(Err(status()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(bytes: usize) -> (Queued, oneshot::Receiver<Result<Answer, Status>>) {
        let (reply, answer) = oneshot::channel();
        let cmd = Ask::Put(PutRequest {
            context: None,
            key: b"k".to_vec(),
            value: vec![0; bytes],
        });
        (Queued { cmd, reply }, answer)
    }

    fn framer(budget: usize) -> Framer {
        Framer {
            waiting: Arc::default(),
            next_id: 0,
            carry: None,
            budget,
        }
    }

    #[tokio::test]
    async fn a_frame_stays_under_its_byte_budget_and_the_rest_waits_for_the_next() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut answers = Vec::new();
        for _ in 0..5 {
            let (q, a) = put(1000);
            tx.send(q).await.unwrap();
            answers.push(a);
        }
        let mut f = framer(2500);
        let (first, ids) = f.next(&mut rx).await.unwrap();
        assert_eq!((first.requests.len(), ids), (2, vec![0, 1]));
        let (second, _) = f.next(&mut rx).await.unwrap();
        assert_eq!(second.requests.len(), 2);
        let (third, ids) = f.next(&mut rx).await.unwrap();
        assert_eq!((third.requests.len(), ids), (1, vec![4]));
        // One request larger than the budget still goes, alone.
        let (q, _a) = put(10_000);
        tx.send(q).await.unwrap();
        assert_eq!(f.next(&mut rx).await.unwrap().0.requests.len(), 1);
        assert_eq!(f.waiting.lock().len(), 6);
    }

    #[tokio::test]
    async fn a_request_whose_caller_gave_up_is_never_sent() {
        let (tx, mut rx) = mpsc::channel(16);
        let (gone, answer) = put(10);
        drop(answer);
        let (kept, _answer) = put(10);
        tx.send(gone).await.unwrap();
        tx.send(kept).await.unwrap();
        let mut f = framer(1 << 20);
        let (frame, ids) = f.next(&mut rx).await.unwrap();
        assert_eq!((frame.requests.len(), ids), (1, vec![0]));
        // A frame never handed to gRPC: its callers hear "not sent".
        let (q, answer) = put(10);
        tx.send(q).await.unwrap();
        let (_, ids) = f.next(&mut rx).await.unwrap();
        f.unsend(&ids);
        let status = answer.await.unwrap().unwrap_err();
        assert!(crate::discovery::is_connect_failure(&status), "{status:?}");
    }
}
