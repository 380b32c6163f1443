//! The batched stream to one store (`Kv.BatchCommands`): requests from every task
//! of the client share one long-lived bidirectional gRPC stream per store address,
//! many requests per frame, answers matched back by id.
//!
//! Two tasks run a stream. The **sender** takes the first queued request, adds
//! every other one already queued (up to [`MAX_REQUESTS_PER_FRAME`]) and sends them
//! as one frame: under load a frame carries many requests, alone it carries one and
//! adds no delay. The **receiver** hands each answer to its caller. They are apart
//! so that a sender held back by flow control never stops answers being read (which
//! would deadlock against a server that stops reading while it has too much in
//! flight).
//!
//! The stream opens on the first request and ends when it fails; the next request
//! opens a new one. Failures reach callers as `tonic::Status`es that the request
//! loop classifies exactly as a unary call's (`discovery::is_transport_error`,
//! `is_connect_failure`): a stream that could not be opened failed to connect (the
//! requests were not sent); a stream lost after opening leaves the outcome of every
//! request on it unknown. A request's own gRPC error comes back as the server's
//! status (no source error: sent by a server).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

impl BatchStream {
    /// A stream over `channel`, opened when the first request is queued.
    pub(crate) fn open(channel: Channel, max_message_size: usize) -> BatchStream {
        let (queue, queued) = mpsc::channel(QUEUE);
        tokio::spawn(run(channel, max_message_size, queued));
        BatchStream { queue }
    }

    /// Whether the stream ended (failed, or never opened); a new one is needed.
    pub(crate) fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    async fn call(&self, cmd: Ask) -> Result<Answer, Status> {
        let (reply, answer) = oneshot::channel();
        // A stream that ended before taking the request never sent it.
        if self.queue.send(Queued { cmd, reply }).await.is_err() {
            return Err(transport_status(
                "the batched stream closed before the request was sent",
                std::io::ErrorKind::ConnectionRefused,
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(transport_status(
                "the batched stream ended with the request in flight",
                std::io::ErrorKind::ConnectionReset,
            ))
        })
    }
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

/// Opens the stream on the first request, then runs the receiver here and the
/// sender on a task of its own until the stream fails or the client is dropped.
async fn run(channel: Channel, max_message_size: usize, mut queued: mpsc::Receiver<Queued>) {
    let Some(first) = queued.recv().await else {
        return;
    };
    let (mut frames, outbound) = futures::channel::mpsc::channel::<BatchCommandsRequest>(4);
    let waiting: Waiting = Arc::default();
    let next_id = AtomicU64::new(0);
    let next_id = Arc::new(next_id);
    let frame = take_frame(first, &mut queued, &waiting, &next_id);
    // Buffered in the channel: sent as soon as the stream is open.
    let _ = frames.try_send(frame);
    let opened = kv_client(channel, max_message_size)
        .batch_commands(outbound)
        .await;
    let mut answers = match opened {
        Ok(resp) => resp.into_inner(),
        Err(status) => {
            // Not open: the error (a refused connection, say) is every caller's.
            queued.close();
            fail_all(&waiting, || status.clone());
            while let Ok(q) = queued.try_recv() {
                let _ = q.reply.send(Err(status.clone()));
            }
            return;
        }
    };
    // The sender stops when the client is dropped (no more requests: the stream
    // then ends gracefully), when the stream breaks, or when told to; it hands the
    // queue back, so that requests never sent can be failed as such.
    let (stop, mut stopped) = oneshot::channel::<()>();
    let sender = tokio::spawn({
        let waiting = waiting.clone();
        async move {
            loop {
                let step = async {
                    let first = queued.recv().await?;
                    let frame = take_frame(first, &mut queued, &waiting, &next_id);
                    frames.send(frame).await.ok()
                };
                tokio::select! {
                    sent = step => if sent.is_none() { break },
                    _ = &mut stopped => break,
                }
            }
            queued
        }
    });
    loop {
        match answers.message().await {
            Ok(Some(frame)) => {
                let mut waiting = waiting.lock();
                for answer in frame.responses {
                    // A caller that timed out has dropped its receiver.
                    if let (Some(reply), Some(cmd)) = (waiting.remove(&answer.id), answer.cmd) {
                        let _ = reply.send(Ok(cmd));
                    }
                }
            }
            // The server ended the stream (shutting down, or after the client's
            // last request) or it broke.
            Ok(None) | Err(_) => break,
        }
    }
    let _ = stop.send(());
    if let Ok(mut queued) = sender.await {
        queued.close();
        while let Ok(q) = queued.try_recv() {
            let _ = q.reply.send(Err(transport_status(
                "the batched stream ended before the request was sent",
                std::io::ErrorKind::ConnectionRefused,
            )));
        }
    }
    // Sent, or handed to gRPC to send: the outcome is unknown.
    fail_all(&waiting, || {
        transport_status(
            "the batched stream ended with the request in flight",
            std::io::ErrorKind::ConnectionReset,
        )
    });
}

/// `first` and every request queued behind it, up to a frame's worth, registered
/// under fresh ids.
fn take_frame(
    first: Queued,
    queued: &mut mpsc::Receiver<Queued>,
    waiting: &Waiting,
    next_id: &AtomicU64,
) -> BatchCommandsRequest {
    let mut requests = Vec::with_capacity(8);
    let mut waiting = waiting.lock();
    let mut next = Some(first);
    while let Some(q) = next.take() {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        waiting.insert(id, q.reply);
        requests.push(Asked {
            id,
            cmd: Some(q.cmd),
        });
        if requests.len() < MAX_REQUESTS_PER_FRAME {
            next = queued.try_recv().ok();
        }
    }
    // Callers that gave up (timed out) leave their entries behind until answered;
    // a server that never answers them must not make the map grow without bound.
    if waiting.len() > 4 * QUEUE {
        waiting.retain(|_, reply| !reply.is_closed());
    }
    BatchCommandsRequest { requests }
}

fn fail_all(waiting: &Waiting, status: impl Fn() -> Status) {
    for (_, reply) in waiting.lock().drain() {
        let _ = reply.send(Err(status()));
    }
}
