//! The client's error type.
//!
//! Failures of single attempts ([`Failure`]) are retried inside the request loop; what
//! reaches the caller is an [`Error`], which says which request failed (op, key,
//! region) and, when the client gave up at its deadline, what the last failure was.
//! [`Error::is_retryable`] separates "try again later" from "this request is wrong",
//! and [`Error::Undetermined`] (see [`Error::is_undetermined`]) says a write may or
//! may not have been applied.

use std::fmt;
use std::time::Duration;

use shoal_proto::errorpb::{region_error::Kind, RegionError};

/// The result type of the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which request failed: the operation, and the key or region it targeted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The client call (`"get"`, `"put"`, `"scan"`, `"split"`, ...).
    pub op: &'static str,
    /// The key the request was routed by, if it was routed by key.
    pub key: Option<Vec<u8>>,
    /// The region the request was last routed to, if any.
    pub region_id: Option<u64>,
}

impl fmt::Display for RequestInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op)?;
        if let Some(key) = &self.key {
            write!(f, " of key {}", escape_key(key))?;
        }
        if let Some(id) = self.region_id {
            write!(f, " in region {id}")?;
        }
        Ok(())
    }
}

/// Why one attempt failed. The request loop retries these; the last one is kept so
/// that [`Error::DeadlineExceeded`] can say what went wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// A store answered with a region error.
    Region {
        /// The store that answered.
        store_id: u64,
        /// The error as the store sent it.
        error: Box<RegionError>,
    },
    /// The RPC failed with a gRPC status: a transport error (store down, connection
    /// reset) or a retryable status the server sent.
    Rpc {
        /// The address the RPC went to.
        address: String,
        /// The gRPC code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The store did not answer within `rpc_timeout` (or the remaining deadline).
    Timeout {
        /// The address the RPC went to.
        address: String,
        /// How long the client waited.
        after: Duration,
    },
    /// The client could not decide where to send the request (no cached region covers
    /// the key, no address known for any peer's store).
    Routing(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Region { store_id, error } => {
                write!(
                    f,
                    "store {store_id} answered {}",
                    describe_region_error(error)
                )
            }
            Failure::Rpc {
                address,
                code,
                message,
            } => write!(f, "RPC to {address} failed: {code:?}: {message}"),
            Failure::Timeout { address, after } => {
                write!(f, "RPC to {address} timed out after {after:?}")
            }
            Failure::Routing(why) => write!(f, "routing failed: {why}"),
        }
    }
}

/// An error returned by the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The [`ClientConfig`](crate::ClientConfig) is out of bounds.
    #[error("invalid client config: {0}")]
    Config(String),
    /// An endpoint could not be turned into a gRPC URI.
    #[error("invalid endpoint {endpoint:?}: {message}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it is invalid.
        message: String,
    },
    /// No endpoint or known store answered (region discovery, `list_regions`, `status`).
    #[error("no endpoint of {endpoints:?} answered {op} within {timeout:?}; last failure: {last}")]
    Unreachable {
        /// The RPC that was tried.
        op: &'static str,
        /// The addresses that were tried.
        endpoints: Vec<String>,
        /// How long the client tried.
        timeout: Duration,
        /// The last failure.
        last: Box<Failure>,
    },
    /// The request is malformed and was not sent (e.g. a split at the empty key).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The keys of a `batch_write` fall in more than one region. Nothing was sent.
    #[error(
        "batch_write keys span regions {first_region} and {other_region} (key {} is in region \
         {first_region}, key {} in region {other_region}); a batch must stay within one region",
        escape_key(.first_key), escape_key(.other_key)
    )]
    CrossRegionBatch {
        /// A key of the batch and its region.
        first_key: Vec<u8>,
        /// The region of `first_key`.
        first_region: u64,
        /// A key of the batch in another region.
        other_key: Vec<u8>,
        /// The region of `other_key` (0 when no cached region covers it).
        other_region: u64,
    },
    /// The server refused the request with a non-retryable gRPC status (e.g.
    /// `InvalidArgument` for an empty or oversized key). Not retried.
    #[error("{request} rejected by {address}: {code:?}: {message}")]
    Rejected {
        /// The request.
        request: RequestInfo,
        /// The store that refused it.
        address: String,
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The server answered with a region error that retrying cannot fix (e.g.
    /// `EntryTooLarge`).
    #[error("{request} failed: store {store_id} answered {}", describe_region_error(.error))]
    Region {
        /// The request.
        request: RequestInfo,
        /// The store that answered.
        store_id: u64,
        /// The region error as sent.
        error: Box<RegionError>,
    },
    /// The region named by an admin request does not exist (no store knows it).
    #[error("region {region_id} not found ({op})")]
    RegionNotFound {
        /// The admin call.
        op: &'static str,
        /// The region asked for.
        region_id: u64,
    },
    /// A write (put, delete, batch write, compare-and-swap) failed in a way that
    /// leaves its outcome unknown: the store answered `Undetermined`, the RPC timed
    /// out, or the connection was lost after the request was sent. It may or may not
    /// have been applied, so the client did not retry it: read the key to learn what
    /// happened. (Reads are retried on these failures instead.)
    #[error(
        "{request}: outcome unknown, it may or may not have been applied (not retried \
         after attempt {attempts}): {cause}"
    )]
    Undetermined {
        /// The request.
        request: RequestInfo,
        /// Which attempt failed this way (earlier ones certainly were not applied).
        attempts: u32,
        /// The failure that left the outcome unknown.
        cause: Box<Failure>,
    },
    /// The request kept failing with retryable errors until its deadline.
    #[error(
        "{request} gave up after {attempts} attempts in {elapsed:?} (request_timeout \
         {timeout:?}); last failure: {last}"
    )]
    DeadlineExceeded {
        /// The request.
        request: RequestInfo,
        /// How many RPCs (or routing attempts) were made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The configured deadline.
        timeout: Duration,
        /// What the last attempt ran into.
        last: Box<Failure>,
    },
}

impl Error {
    /// Whether the same call may succeed if made again later: true for deadline and
    /// reachability errors (the cluster may recover), false for errors in the request
    /// itself or the configuration, and false for [`Error::Undetermined`]: the call
    /// may already have taken effect, so read before deciding to make it again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::DeadlineExceeded { .. } => true,
            Error::Rejected { code, .. } => is_retryable_code(*code),
            Error::Config(_)
            | Error::InvalidEndpoint { .. }
            | Error::InvalidArgument(_)
            | Error::CrossRegionBatch { .. }
            | Error::Region { .. }
            | Error::RegionNotFound { .. }
            | Error::Undetermined { .. } => false,
        }
    }

    /// Whether the request may or may not have been applied ([`Error::Undetermined`]).
    /// Every other error of a write means it certainly was not applied.
    pub fn is_undetermined(&self) -> bool {
        matches!(self, Error::Undetermined { .. })
    }

    /// The last failure behind a [`Error::DeadlineExceeded`], [`Error::Unreachable`] or
    /// [`Error::Undetermined`].
    pub fn last_failure(&self) -> Option<&Failure> {
        match self {
            Error::DeadlineExceeded { last, .. } | Error::Unreachable { last, .. } => Some(last),
            Error::Undetermined { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

/// gRPC codes the request loop retries (with backoff) instead of returning.
pub(crate) fn is_retryable_code(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
    )
}

/// A one-line description of a region error, for messages and logs.
pub fn describe_region_error(err: &RegionError) -> String {
    let kind = match &err.kind {
        Some(Kind::NotLeader(nl)) => match &nl.leader {
            Some(l) => format!(
                "NotLeader for region {} (leader: peer {} on store {})",
                nl.region_id, l.id, l.store_id
            ),
            None => format!("NotLeader for region {} (leader unknown)", nl.region_id),
        },
        Some(Kind::EpochNotMatch(e)) => {
            let ids: Vec<u64> = e.current_regions.iter().map(|r| r.id).collect();
            format!("EpochNotMatch (current regions {ids:?})")
        }
        Some(Kind::RegionNotFound(r)) => format!("RegionNotFound for region {}", r.region_id),
        Some(Kind::KeyNotInRegion(k)) => format!(
            "KeyNotInRegion: key {} not in region {} [{}, {})",
            escape_key(&k.key),
            k.region_id,
            escape_key(&k.start_key),
            escape_key(&k.end_key)
        ),
        Some(Kind::ServerIsBusy(b)) => {
            format!("ServerIsBusy ({}; backoff {} ms)", b.reason, b.backoff_ms)
        }
        Some(Kind::EntryTooLarge(e)) => format!(
            "EntryTooLarge for region {} ({} bytes)",
            e.region_id, e.entry_size
        ),
        Some(Kind::StoreNotMatch(s)) => format!(
            "StoreNotMatch (request for store {}, this is store {})",
            s.request_store_id, s.actual_store_id
        ),
        Some(Kind::StaleCommand(s)) => format!(
            "StaleCommand for region {}: not applied ({})",
            s.region_id, s.reason
        ),
        Some(Kind::Undetermined(u)) => format!(
            "Undetermined for region {}: outcome unknown ({})",
            u.region_id, u.reason
        ),
        None => "an unknown region error".to_string(),
    };
    if err.message.is_empty() {
        kind
    } else {
        format!("{kind}: {}", err.message)
    }
}

/// Renders a key for humans: printable ASCII as is, other bytes escaped, long keys cut.
pub(crate) fn escape_key(key: &[u8]) -> String {
    const MAX_SHOWN: usize = 64;
    let shown = &key[..key.len().min(MAX_SHOWN)];
    let mut out = String::with_capacity(shown.len() + 2);
    out.push('"');
    for &b in shown {
        out.extend(std::ascii::escape_default(b).map(char::from));
    }
    out.push('"');
    if key.len() > MAX_SHOWN {
        out.push_str(&format!("... ({} bytes)", key.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::errorpb::ServerIsBusy;

    #[test]
    fn deadline_error_names_request_and_last_failure() {
        let err = Error::DeadlineExceeded {
            request: RequestInfo {
                op: "put",
                key: Some(b"k\x01".to_vec()),
                region_id: Some(7),
            },
            attempts: 3,
            elapsed: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            last: Box::new(Failure::Region {
                store_id: 2,
                error: Box::new(RegionError {
                    message: String::new(),
                    kind: Some(Kind::ServerIsBusy(ServerIsBusy {
                        reason: "compaction".into(),
                        backoff_ms: 5,
                    })),
                }),
            }),
        };
        let text = err.to_string();
        assert!(text.contains(r#"put of key "k\x01" in region 7"#), "{text}");
        assert!(text.contains("ServerIsBusy (compaction"), "{text}");
        assert!(err.is_retryable());
    }

    #[test]
    fn long_keys_are_cut() {
        let shown = escape_key(&[b'a'; 100]);
        assert!(shown.ends_with("... (100 bytes)"), "{shown}");
    }
}
