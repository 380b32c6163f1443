//! The batched Kv stream (`Kv.BatchCommands`): one long-lived bidirectional stream
//! per client and node, many requests per frame each way.
//!
//! Each request of a frame is served exactly as its unary call would be (the same
//! `KvService::serve_*` handler: same checks, same errors), concurrently with the
//! others and with the reading of later frames. Answers go back as they complete:
//! after one completes, every other answer already done joins it in the same frame
//! (at most [`MAX_ANSWERS_PER_FRAME`]), so a busy stream sends few frames. A
//! request's gRPC error travels as a `RequestFailure` with its code and message.
//!
//! Memory is bounded: a stream has at most [`MAX_IN_FLIGHT`] requests being
//! served; past that it stops reading frames until some complete, and HTTP/2 flow
//! control holds the client back. When the client's side fails, the stream ends;
//! requests already proposed still apply (as when a unary call's connection drops),
//! and their answers are dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use shoal_proto::kvrpcpb::batch_commands_request::request::Cmd as Ask;
use shoal_proto::kvrpcpb::batch_commands_response::response::Cmd as Answer;
use shoal_proto::kvrpcpb::batch_commands_response::Response as Answered;
use shoal_proto::kvrpcpb::{BatchCommandsRequest, BatchCommandsResponse, RequestFailure};
use tonic::{Status, Streaming};

use crate::kv_service::KvService;

/// Requests one stream serves at once.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Answers sent in one frame at most.
pub const MAX_ANSWERS_PER_FRAME: usize = 256;

/// The answers of one stream, frame by frame.
pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<BatchCommandsResponse, Status>> + Send>>;

type Serving = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// Serves `inbound` on a task of its own; the frames of answers.
pub fn serve(
    service: Arc<KvService>,
    mut inbound: Streaming<BatchCommandsRequest>,
) -> ResponseStream {
    // A few frames of slack: the task goes on serving while gRPC sends.
    let (mut out, answers) = futures::channel::mpsc::channel(4);
    tokio::spawn(async move {
        let mut serving = FuturesUnordered::<Serving>::new();
        let mut reading = true;
        loop {
            tokio::select! {
                frame = inbound.message(), if reading && serving.len() < MAX_IN_FLIGHT => match frame {
                    Ok(Some(frame)) => {
                        for request in frame.requests {
                            serving.push(Box::pin(serve_one(service.clone(), request)));
                        }
                    }
                    // The client sent its last request: answer what is left.
                    Ok(None) => reading = false,
                    // The client is gone: there is no one to answer.
                    Err(_) => return,
                },
                Some(first) = serving.next(), if !serving.is_empty() => {
                    let mut responses = vec![first];
                    while responses.len() < MAX_ANSWERS_PER_FRAME {
                        match serving.next().now_or_never() {
                            Some(Some(done)) => responses.push(done),
                            _ => break,
                        }
                    }
                    if out.send(Ok(BatchCommandsResponse { responses })).await.is_err() {
                        return;
                    }
                }
                else => return,
            }
        }
    });
    Box::pin(answers)
}

/// One request, served by its kind's handler.
async fn serve_one(
    service: Arc<KvService>,
    request: shoal_proto::kvrpcpb::batch_commands_request::Request,
) -> Answered {
    let answer = match request.cmd {
        Some(Ask::Get(r)) => service.serve_get(r).await.map(Answer::Get),
        Some(Ask::Put(r)) => service.serve_put(r).await.map(Answer::Put),
        Some(Ask::Delete(r)) => service.serve_delete(r).await.map(Answer::Delete),
        Some(Ask::Cas(r)) => service.serve_compare_and_swap(r).await.map(Answer::Cas),
        Some(Ask::BatchWrite(r)) => service.serve_batch_write(r).await.map(Answer::BatchWrite),
        Some(Ask::Scan(r)) => service.serve_scan(r).await.map(Answer::Scan),
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
