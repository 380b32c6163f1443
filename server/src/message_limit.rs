//! Naming the limit an oversized request hit.
//!
//! Every gRPC server of a node decodes at most [`NodeConfig::max_message_size`]
//! bytes per message (`raft-entry-max-size` + 1 MiB, see `config`'s module docs).
//! tonic refuses a larger request before decoding it, with `OutOfRange` and its
//! decoder's words ("decoded message length too large"), which tell a user nothing
//! about Shoal's settings. [`TooLargeLayer`] rewrites that answer into
//! `InvalidArgument` naming the value-size and entry-size limits: any request that
//! large carries more than one put of `max-value-size` can, since the message limit
//! exceeds the largest put that validation allows.
//!
//! [`NodeConfig::max_message_size`]: crate::config::NodeConfig::max_message_size

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Rewrites tonic's decode-limit status (see the module docs).
#[derive(Clone)]
pub(crate) struct TooLargeLayer {
    hint: Arc<str>,
}

impl TooLargeLayer {
    /// `hint` follows the request size in the new message; it names the limits.
    pub(crate) fn new(max_value_size: usize, raft_entry_max_size: usize, limit: usize) -> Self {
        TooLargeLayer {
            hint: format!(
                "over this node's {limit}-byte gRPC message limit (raft-entry-max-size \
                 {raft_entry_max_size} + 1 MiB): a value may be at most max-value-size = \
                 {max_value_size} bytes, and one write at most raft-entry-max-size"
            )
            .into(),
        }
    }
}

impl<S> tower_layer::Layer<S> for TooLargeLayer {
    type Service = TooLarge<S>;

    fn layer(&self, inner: S) -> TooLarge<S> {
        TooLarge {
            inner,
            hint: self.hint.clone(),
        }
    }
}

/// The service [`TooLargeLayer`] wraps around a node's routes.
#[derive(Clone)]
pub(crate) struct TooLarge<S> {
    inner: S,
    hint: Arc<str>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for TooLarge<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let call = self.inner.call(req);
        let hint = self.hint.clone();
        Box::pin(async move {
            let resp = call.await?;
            Ok(rewrite(resp, &hint))
        })
    }
}

/// A unary call refused by the decode limit is a trailers-only response: the
/// status is in the headers.
fn rewrite<B: Default>(resp: http::Response<B>, hint: &str) -> http::Response<B> {
    match tonic::Status::from_header_map(resp.headers()) {
        Some(s)
            if s.code() == tonic::Code::OutOfRange
                && s.message().contains("decoded message length too large") =>
        {
            let found = s
                .message()
                .split("found ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or("?");
            tonic::Status::invalid_argument(format!("request is {found} bytes, {hint}")).into_http()
        }
        _ => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_decode_limit_status_is_rewritten() {
        let hint = "over the limit: max-value-size = 1048576";
        let too_large = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 67108885 bytes, the limit is: \
             9437184 bytes",
        )
        .into_http::<String>();
        let s = tonic::Status::from_header_map(rewrite(too_large, hint).headers()).unwrap();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "request is 67108885 bytes, over the limit: max-value-size = 1048576"
        );
        let other = tonic::Status::out_of_range("something else").into_http::<String>();
        let s = tonic::Status::from_header_map(rewrite(other, hint).headers()).unwrap();
        assert_eq!(s.code(), tonic::Code::OutOfRange);
        let ok = http::Response::new(String::new());
        assert!(tonic::Status::from_header_map(rewrite(ok, hint).headers()).is_none());
    }
}
