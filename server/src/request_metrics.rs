//! How long the Kv service's requests take, by method and outcome:
//! `shoal_grpc_request_duration_seconds{method, outcome}`, a histogram.
//!
//! The outcome is `ok`, the region error's kind (`not_leader`, `epoch_not_match`,
//! `stale_command`, `undetermined`, ...: the client retries most of them), or the
//! failure (`invalid_argument` for refused input, `failed` for any other gRPC
//! status), or `cancelled` when the caller went away before the answer (a deadline,
//! a disconnect). Unary calls and the batched stream are counted alike (one request
//! each).
//! Every (method, outcome) histogram is bound when the node starts, so recording
//! one is a few atomic adds.

use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, Registry};
use shoal_proto::errorpb::{region_error::Kind, RegionError};
use shoal_proto::HasRegionError;
use tonic::{Code, Status};

/// The Kv methods.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    Get,
    Scan,
    Put,
    Delete,
    BatchWrite,
    CompareAndSwap,
}

const METHODS: [&str; 6] = [
    "get",
    "scan",
    "put",
    "delete",
    "batch_write",
    "compare_and_swap",
];

/// Outcome labels; index 0 is success.
const OUTCOMES: [&str; 13] = [
    "ok",
    "not_leader",
    "epoch_not_match",
    "region_not_found",
    "key_not_in_region",
    "server_is_busy",
    "entry_too_large",
    "store_not_match",
    "stale_command",
    "undetermined",
    "invalid_argument",
    "failed",
    "cancelled",
];

/// The outcome of a request whose caller went away before its answer.
const CANCELLED: usize = 12;

/// The outcome label index of a region error.
fn region_error_outcome(e: &RegionError) -> usize {
    match &e.kind {
        Some(Kind::NotLeader(_)) => 1,
        Some(Kind::EpochNotMatch(_)) => 2,
        Some(Kind::RegionNotFound(_)) => 3,
        Some(Kind::KeyNotInRegion(_)) => 4,
        Some(Kind::ServerIsBusy(_)) => 5,
        Some(Kind::EntryTooLarge(_)) => 6,
        Some(Kind::StoreNotMatch(_)) => 7,
        Some(Kind::StaleCommand(_)) => 8,
        Some(Kind::Undetermined(_)) | None => 9,
    }
}

/// The outcome label index of a finished request.
fn outcome<T: HasRegionError>(r: &Result<T, Status>) -> usize {
    match r {
        Ok(resp) => resp.region_error().map_or(0, region_error_outcome),
        Err(s) if s.code() == Code::InvalidArgument => 10,
        Err(_) => 11,
    }
}

/// The request histograms of one node.
pub struct RequestMetrics {
    vec: HistogramVec,
    /// `[method][outcome]`, bound up front.
    bound: Vec<Vec<prometheus::Histogram>>,
}

impl RequestMetrics {
    /// The histograms, registered in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let opts = HistogramOpts::new(
            "shoal_grpc_request_duration_seconds",
            "Duration of Kv requests (unary or on a batched stream), by method and outcome.",
        )
        .buckets(shoal_raftstore::metrics::duration_buckets());
        let vec = HistogramVec::new(opts, &["method", "outcome"])?;
        registry.register(Box::new(vec.clone()))?;
        let bound = METHODS
            .iter()
            .map(|m| {
                OUTCOMES
                    .iter()
                    .map(|o| vec.with_label_values(&[m, o]))
                    .collect()
            })
            .collect();
        Ok(RequestMetrics { vec, bound })
    }

    /// Records a request of `method` begun at `started` that ended with `result`.
    pub fn observe<T: HasRegionError>(
        &self,
        method: Method,
        started: Instant,
        result: &Result<T, Status>,
    ) {
        self.bound[method as usize][outcome(result)].observe(started.elapsed().as_secs_f64());
    }

    /// Times `request` as `method`: when it ends, by its outcome; when it is
    /// dropped unfinished (its caller went away: a deadline, a disconnect), as
    /// `cancelled`, so the slowest requests do not vanish from the histogram.
    pub async fn time<T: HasRegionError>(
        &self,
        method: Method,
        request: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        struct Unfinished<'a> {
            hist: Option<&'a prometheus::Histogram>,
            started: Instant,
        }
        impl Drop for Unfinished<'_> {
            fn drop(&mut self) {
                if let Some(h) = self.hist {
                    h.observe(self.started.elapsed().as_secs_f64());
                }
            }
        }
        let started = Instant::now();
        let mut guard = Unfinished {
            hist: Some(&self.bound[method as usize][CANCELLED]),
            started,
        };
        let result = request.await;
        guard.hist = None;
        self.observe(method, started, &result);
        result
    }

    /// The histogram family (for tests).
    pub fn family(&self) -> &HistogramVec {
        &self.vec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::errorpb::NotLeader;
    use shoal_proto::kvrpcpb::{GetResponse, PutResponse};

    #[test]
    fn outcomes_are_told_apart() {
        let r = Registry::new();
        let m = RequestMetrics::new(&r).unwrap();
        let t = Instant::now();
        m.observe(Method::Put, t, &Ok(PutResponse::default()));
        let not_leader = PutResponse {
            region_error: Some(RegionError {
                message: String::new(),
                kind: Some(Kind::NotLeader(NotLeader::default())),
            }),
        };
        m.observe(Method::Put, t, &Ok(not_leader));
        m.observe::<GetResponse>(Method::Get, t, &Err(Status::invalid_argument("empty key")));
        m.observe::<GetResponse>(Method::Get, t, &Err(Status::internal("disk")));
        let count = |method: &str, outcome: &str| {
            m.family()
                .with_label_values(&[method, outcome])
                .get_sample_count()
        };
        assert_eq!(count("put", "ok"), 1);
        assert_eq!(count("put", "not_leader"), 1);
        assert_eq!(count("get", "invalid_argument"), 1);
        assert_eq!(count("get", "failed"), 1);
        assert_eq!(count("get", "ok"), 0);
    }

    #[tokio::test]
    async fn a_request_dropped_unfinished_counts_as_cancelled() {
        let r = Registry::new();
        let m = RequestMetrics::new(&r).unwrap();
        let count = |outcome: &str| {
            m.family()
                .with_label_values(&["get", outcome])
                .get_sample_count()
        };
        let done = m.time(Method::Get, async { Ok(GetResponse::default()) });
        assert!(done.await.is_ok());
        let never = m.time(
            Method::Get,
            std::future::pending::<Result<GetResponse, Status>>(),
        );
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(10), never).await;
        assert!(timed_out.is_err());
        assert_eq!((count("ok"), count("cancelled")), (1, 1));
    }
}
