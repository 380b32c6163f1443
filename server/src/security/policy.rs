//! Who may call what, checked on every request before it reaches a service: the
//! Raft service only for store certificates, Kv and Admin for stores and for
//! client certificates whose common name `cert-allowed-cn` lists (all of them when
//! it is empty). A refusal is a `PermissionDenied` status naming the reason, and is
//! counted (`shoal_tls_refused_requests_total{reason}`).
//!
//! The layer is only installed with TLS on; a request without the connection's
//! [`PeerInfo`] is refused then (fail closed).

use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use shoal_proto::raft_serverpb::raft_server::RaftServer;
use tonic::server::NamedService;

use super::identity::{Identity, PeerInfo};
use super::SecurityMetrics;
use crate::raft_service::RaftService;

/// The rule set of one node.
pub struct Policy {
    /// Client common names allowed on Kv and Admin; empty: any.
    pub allowed_cn: Vec<String>,
    pub metrics: SecurityMetrics,
}

impl Policy {
    /// Whether the caller `info` may call the gRPC method at `path`
    /// (`/package.Service/Method`); the refusal says why.
    pub fn check(&self, path: &str, info: Option<&PeerInfo>) -> Result<(), tonic::Status> {
        let raft = path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(<RaftServer<RaftService> as NamedService>::NAME))
            .is_some_and(|rest| rest.starts_with('/'));
        let refuse = |reason: &str, message: String| {
            self.metrics.refused.with_label_values(&[reason]).inc();
            Err(tonic::Status::permission_denied(message))
        };
        let Some(identity) = info.and_then(|i| i.identity.as_ref()) else {
            return refuse(
                "no_certificate",
                "no client certificate on this connection".into(),
            );
        };
        match identity {
            Identity::Store(_) => Ok(()),
            Identity::Client(_) if raft => refuse(
                "not_a_store",
                format!(
                    "the Raft service takes store certificates only (a URI SAN {}<id>); this is a {}",
                    super::identity::STORE_URI_PREFIX,
                    identity.describe()
                ),
            ),
            Identity::Client(_) if self.allowed_cn.is_empty() => Ok(()),
            Identity::Client(Some(cn)) if self.allowed_cn.iter().any(|a| a == cn) => Ok(()),
            Identity::Client(_) => refuse(
                "cn_not_allowed",
                format!(
                    "{} is not in this node's cert-allowed-cn",
                    identity.describe()
                ),
            ),
        }
    }
}

/// The tower layer applying a [`Policy`] to every request of the node's server.
/// Off (TLS off), it lets every request through.
#[derive(Clone)]
pub struct PolicyLayer {
    policy: Option<Arc<Policy>>,
}

impl PolicyLayer {
    pub fn new(policy: Policy) -> Self {
        PolicyLayer {
            policy: Some(Arc::new(policy)),
        }
    }

    /// The layer of a plaintext node: checks nothing.
    pub fn off() -> Self {
        PolicyLayer { policy: None }
    }
}

impl<S> tower_layer::Layer<S> for PolicyLayer {
    type Service = Checked<S>;

    fn layer(&self, inner: S) -> Checked<S> {
        Checked {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// A service behind a [`Policy`].
#[derive(Clone)]
pub struct Checked<S> {
    inner: S,
    policy: Option<Arc<Policy>>,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Checked<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    // No allocation per request: the service's own future, or a ready refusal.
    type Future = Either<S::Future, Ready<Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let Some(policy) = &self.policy else {
            return Either::Left(self.inner.call(req));
        };
        let info = req.extensions().get::<PeerInfo>();
        match policy.check(req.uri().path(), info) {
            Ok(()) => Either::Left(self.inner.call(req)),
            Err(status) => {
                if let Some(info) = info {
                    tracing::info!(
                        remote = ?info.remote,
                        path = req.uri().path(),
                        "refused: {}",
                        status.message()
                    );
                }
                Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> Policy {
        Policy {
            allowed_cn: allowed.iter().map(|s| s.to_string()).collect(),
            metrics: SecurityMetrics::new(),
        }
    }

    fn peer(identity: Identity) -> PeerInfo {
        PeerInfo {
            remote: None,
            identity: Some(identity),
        }
    }

    #[test]
    fn raft_is_for_stores_only() {
        let p = policy(&[]);
        let raft = "/raft_serverpb.Raft/Send";
        assert!(p.check(raft, Some(&peer(Identity::Store(3)))).is_ok());
        let client = peer(Identity::Client(Some("app".into())));
        let refused = p.check(raft, Some(&client)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(p.check("/kvrpcpb.Kv/Get", Some(&client)).is_ok());
        // A service whose name merely starts like Raft's is not Raft.
        assert!(p.check("/raft_serverpb.RaftX/Send", Some(&client)).is_ok());
        assert_eq!(
            p.metrics.refused.with_label_values(&["not_a_store"]).get(),
            1
        );
    }

    #[test]
    fn allowed_common_names() {
        let p = policy(&["admin", "app"]);
        let get = "/kvrpcpb.Kv/Get";
        assert!(p
            .check(get, Some(&peer(Identity::Client(Some("app".into())))))
            .is_ok());
        assert!(p.check(get, Some(&peer(Identity::Store(1)))).is_ok());
        let other = p.check(get, Some(&peer(Identity::Client(Some("intruder".into())))));
        assert!(other.unwrap_err().message().contains("intruder"));
        assert!(p.check(get, Some(&peer(Identity::Client(None)))).is_err());
        // No connection info at all: refused.
        assert!(p.check(get, None).is_err());
        assert_eq!(
            p.metrics
                .refused
                .with_label_values(&["cn_not_allowed"])
                .get(),
            2
        );
    }
}
