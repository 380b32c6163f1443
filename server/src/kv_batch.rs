//! The batched Kv stream (`Kv.BatchCommands`): one long-lived bidirectional stream
//! per client and node, many requests per frame each way.
//!
//! Each request of a frame is served by its unary call's handler
//! (`KvService::serve_*`: same checks, same errors), concurrently with the others
//! and with the reading of later frames. Answers go back as they complete:
//! after one completes, every other answer already done joins it in the same frame
//! (at most [`MAX_ANSWERS_PER_FRAME`]), so a busy stream sends few frames. A
//! request's gRPC error travels as a `RequestFailure` with its code and message.
//!
//! Memory is bounded: a stream has at most [`MAX_IN_FLIGHT`] requests being
//! served. A frame's requests start only as room frees (the rest wait, decoded,
//! in the order sent), and no frame is read while any wait, so HTTP/2 flow control
//! holds the client back. A frame of more than [`MAX_IN_FLIGHT`] requests is
//! refused: what was read before it is answered, then the stream ends with
//! `InvalidArgument` naming the bound (the Rust client sends at most 256 per
//! frame). What one frame costs before it is looked at is its decoded form, about
//! 15 times its bytes, which the node's message limit bounds. A frame of answers
//! stays under the message limit.
//!
//! **The stream's last frame says `last` only after every request read was
//! answered**, so a client may take any request left unanswered then as never read
//! (never served) and send it again (`client/src/batch.rs`); a stream that ends any
//! other way leaves the client unsure. A node shutting down stops
//! reading, answers what it read, and ends the stream that way. When reading breaks
//! (the client went away, or sent a frame that cannot be decoded), what was read is
//! still answered, then the stream ends with the error. Requests already proposed
//! apply even if nobody is left to hear the answer, as with a unary call whose
//! connection drops.
//!
//! The requests of one stream are polled on its one task; each waits on the store
//! (a proposal, a read index) without holding the thread, except a get's point
//! lookup on its kv snapshot, which runs inline (short).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use shoal_proto::kvrpcpb::batch_commands_request::request::Cmd as Ask;
use shoal_proto::kvrpcpb::batch_commands_response::response::Cmd as Answer;
use shoal_proto::kvrpcpb::batch_commands_response::Response as Answered;
use shoal_proto::kvrpcpb::{BatchCommandsRequest, BatchCommandsResponse, RequestFailure};
use shoal_proto::Message as _;
use tokio::sync::watch;
use tonic::{Status, Streaming};

use crate::kv_service::{Caller, KvService};

/// Requests one stream serves at once.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Answers sent in one frame at most.
pub const MAX_ANSWERS_PER_FRAME: usize = 256;

/// The answers of one stream, frame by frame.
pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<BatchCommandsResponse, Status>> + Send>>;

type Serving = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// Serves `inbound` on a task of its own; the frames of answers. Answer frames
/// stay under `max_frame_bytes` (one answer alone may come close to it: the
/// handlers bound each answer under the message limit). When `draining` turns true
/// (the node is shutting down), no more frames are read.
pub fn serve(
    service: Arc<KvService>,
    caller: Caller,
    mut inbound: Streaming<BatchCommandsRequest>,
    mut draining: watch::Receiver<bool>,
    max_frame_bytes: usize,
) -> ResponseStream {
    // A few frames of slack: the task goes on serving while gRPC sends.
    let (mut out, answers) = futures::channel::mpsc::channel(4);
    tokio::spawn(async move {
        let mut serving = FuturesUnordered::<Serving>::new();
        // Requests read and not started yet: a frame's rest, started as room frees.
        let mut waiting = VecDeque::new();
        // Why reading stopped with an error: sent after the last answer.
        let mut broken: Option<Status> = None;
        let mut reading = true;
        let mut carry: Option<Answered> = None;
        loop {
            if *draining.borrow() {
                reading = false;
            }
            while serving.len() < MAX_IN_FLIGHT {
                let Some(request) = waiting.pop_front() else {
                    break;
                };
                serving.push(Box::pin(serve_one(
                    service.clone(),
                    caller.clone(),
                    request,
                )));
            }
            let first = match carry.take() {
                Some(first) => first,
                None => {
                    let room = waiting.is_empty() && serving.len() < MAX_IN_FLIGHT;
                    let next = tokio::select! {
                        frame = inbound.message(), if reading && room => {
                            match frame {
                                Ok(Some(frame)) if frame.requests.len() > MAX_IN_FLIGHT => {
                                    // Refused whole: none of it starts. The client
                                    // learns why when the stream ends.
                                    reading = false;
                                    broken = Some(Status::invalid_argument(format!(
                                        "a frame of {} requests is over this stream's bound of \
                                         {MAX_IN_FLIGHT} requests in flight: none of them was \
                                         served; send at most {MAX_IN_FLIGHT} per frame",
                                        frame.requests.len()
                                    )));
                                }
                                Ok(Some(frame)) => waiting.extend(frame.requests),
                                // The client sent its last request: answer what is left.
                                Ok(None) => reading = false,
                                // Reading broke (the client went away, or sent what
                                // cannot be decoded): answer what was read, then end
                                // with the error.
                                Err(status) => {
                                    reading = false;
                                    broken = Some(status);
                                }
                            }
                            None
                        }
                        // Shutting down (or the node's signal gone): read no more.
                        changed = draining.changed(), if reading => {
                            if changed.is_err() {
                                reading = false;
                            }
                            None
                        }
                        Some(done) = serving.next(), if !serving.is_empty() => Some(done),
                        else => None,
                    };
                    match next {
                        Some(done) => done,
                        None if reading || !serving.is_empty() || !waiting.is_empty() => continue,
                        // Every request read was answered: a clean end says so.
                        None => break,
                    }
                }
            };
            let mut bytes = first.encoded_len();
            let mut responses = vec![first];
            while responses.len() < MAX_ANSWERS_PER_FRAME {
                let Some(Some(done)) = serving.next().now_or_never() else {
                    break;
                };
                let size = done.encoded_len() + 16;
                if bytes + size > max_frame_bytes {
                    carry = Some(done);
                    break;
                }
                bytes += size;
                responses.push(done);
            }
            let frame = BatchCommandsResponse {
                responses,
                last: false,
            };
            if out.send(Ok(frame)).await.is_err() {
                return;
            }
        }
        match broken {
            Some(status) => {
                let _ = out.send(Err(status)).await;
            }
            // The word that every request read was answered. A stream that ends
            // without it (a task dropped, say) leaves the client unsure.
            None => {
                let last = BatchCommandsResponse {
                    responses: Vec::new(),
                    last: true,
                };
                let _ = out.send(Ok(last)).await;
            }
        }
    });
    Box::pin(answers)
}

/// One request, served by its kind's handler.
async fn serve_one(
    service: Arc<KvService>,
    caller: Caller,
    request: shoal_proto::kvrpcpb::batch_commands_request::Request,
) -> Answered {
    let c = &caller;
    let answer = match request.cmd {
        Some(Ask::Get(r)) => service.serve_get(r, c).await.map(Answer::Get),
        Some(Ask::Put(r)) => service.serve_put(r, c).await.map(Answer::Put),
        Some(Ask::Delete(r)) => service.serve_delete(r, c).await.map(Answer::Delete),
        Some(Ask::Cas(r)) => service.serve_compare_and_swap(r, c).await.map(Answer::Cas),
        Some(Ask::BatchWrite(r)) => service
            .serve_batch_write(r, c)
            .await
            .map(Answer::BatchWrite),
        Some(Ask::Scan(r)) => service.serve_scan(r, c).await.map(Answer::Scan),
        None => Err(Status::invalid_argument(
            "a batched request names no command",
        )),
    };
    Answered {
        id: request.id,
        cmd: Some(answer.unwrap_or_else(|status| {
            Answer::Failure(RequestFailure {
                code: status.code() as i32,
                message: status.message().to_string(),
            })
        })),
    }
}
