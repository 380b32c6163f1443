//! The request loop: route, send, and react to what came back, until success, a
//! non-retryable error, or the deadline.
//!
//! One call ([`Inner::execute`]) runs under one deadline (`request_timeout`):
//!
//! 1. **Route.** Find the key's (or region id's) region in the cache, reloading on a
//!    miss; pick the cached leader, or, when it is unknown or its store recently
//!    failed, the `cursor`-th usable voter.
//! 2. **Send** with `Context{region_id, region_epoch, peer}`, bounded by `rpc_timeout`.
//! 3. **React.**
//!    - success: remember the peer as leader, return;
//!    - `NotLeader{leader}`: cache the hint and retry at once; without a hint, try the
//!      next peer after a backoff;
//!    - `EpochNotMatch{current_regions}`: replace the stale region by the given ones,
//!      retry at once;
//!    - `RegionNotFound` / `KeyNotInRegion`: drop the region, reload, retry;
//!    - `ServerIsBusy{backoff_ms}`: back off (at least `backoff_ms`), retry;
//!    - `StoreNotMatch`: reload (the store map is wrong), back off, retry;
//!    - `EntryTooLarge`: return it (retrying cannot help);
//!    - transport error (`Unavailable`, connection reset, refused): mark the store
//!      down (its leader guesses are dropped), reload, try another peer after a backoff;
//!    - RPC timeout: forget that leader guess, try another peer after a backoff;
//!    - any other gRPC status (`InvalidArgument`, ...): return it at once.
//!
//! "At once" retries are limited to [`MAX_IMMEDIATE_RETRIES`] in a row, so two stores
//! that disagree about the leader cannot make the client spin. Backoff is exponential
//! with jitter and never sleeps past the deadline. Every retry is logged at debug level
//! with its reason.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use shoal_proto::adminpb::{GetRegionResponse, MergeResponse, SplitResponse};
use shoal_proto::errorpb::{region_error::Kind, RegionError};
use shoal_proto::kvrpcpb::{
    BatchWriteResponse, CompareAndSwapResponse, Context, DeleteResponse, GetResponse, PutResponse,
    ScanResponse,
};
use shoal_proto::metapb::{Peer, Region};
use tonic::transport::Channel;
use tracing::debug;

use crate::client::Inner;
use crate::config::ClientConfig;
use crate::discovery::{is_transport_error, Want};
use crate::error::{is_retryable_code, Error, Failure, RequestInfo, Result};
use crate::region_cache::contains;

/// Retries without backoff allowed in a row (after a leader hint or a new epoch).
pub(crate) const MAX_IMMEDIATE_RETRIES: u32 = 3;

/// How a request finds its region.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RouteBy<'a> {
    /// The region containing this key.
    Key(&'a [u8]),
    /// The region containing all of these keys (the first one routes); if they span
    /// regions, the request fails with [`Error::CrossRegionBatch`] before being sent.
    Batch(&'a [&'a [u8]]),
    /// The region with this id.
    Region(u64),
}

impl RouteBy<'_> {
    fn want(&self) -> Want<'_> {
        match *self {
            RouteBy::Key(key) => Want::Key(key),
            RouteBy::Batch(keys) => Want::Key(keys.first().copied().unwrap_or_default()),
            RouteBy::Region(id) => Want::Region(id),
        }
    }

    fn key(&self) -> Option<&[u8]> {
        match *self {
            RouteBy::Key(key) => Some(key),
            RouteBy::Batch(keys) => keys.first().copied(),
            RouteBy::Region(_) => None,
        }
    }
}

/// Where one attempt goes.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    /// The cached region the request was routed to.
    pub(crate) region: Region,
    /// The peer it is sent to (believed leader, or a guess).
    pub(crate) peer: Peer,
    /// The address of the peer's store.
    pub(crate) address: String,
}

impl Attempt {
    /// The `Context` every routed request carries.
    pub(crate) fn context(&self) -> Context {
        Context {
            region_id: self.region.id,
            region_epoch: self.region.region_epoch,
            peer: Some(self.peer),
        }
    }
}

/// A successful answer and where it came from.
pub(crate) struct Done<R> {
    pub(crate) resp: R,
    pub(crate) attempt: Attempt,
}

/// Responses that may carry a region error.
pub(crate) trait HasRegionError {
    /// Takes the region error out of the response.
    fn take_region_error(&mut self) -> Option<RegionError>;
}

macro_rules! has_region_error {
    ($($t:ty),*) => {$(
        impl HasRegionError for $t {
            fn take_region_error(&mut self) -> Option<RegionError> {
                self.region_error.take()
            }
        }
    )*};
}

has_region_error!(
    GetResponse,
    ScanResponse,
    PutResponse,
    DeleteResponse,
    BatchWriteResponse,
    CompareAndSwapResponse,
    GetRegionResponse,
    SplitResponse,
    MergeResponse
);

/// Exponential backoff with jitter.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(config: &ClientConfig) -> Self {
        Backoff {
            next: config.initial_backoff,
            max: config.max_backoff,
        }
    }

    /// Sleeps for the next delay (at least `at_least`), never past `deadline`.
    pub(crate) async fn sleep(&mut self, at_least: Duration, deadline: Instant) {
        let base = self.next;
        self.next = (base * 2).min(self.max);
        // "Equal jitter": half fixed, half random, so that clients that failed together
        // do not retry together.
        let delay = rand::thread_rng().gen_range(base / 2..=base).max(at_least);
        let delay = delay.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(delay).await;
    }
}

/// What to do after a failed attempt.
enum Next {
    /// Retry at once (if the immediate-retry budget allows).
    Now,
    /// Back off, at least this long.
    Backoff(Duration),
}

/// Why routing failed.
enum RouteError {
    /// Give up with this error.
    Fatal(Error),
    /// Back off and retry.
    Retry(Failure),
}

impl Inner {
    /// Runs one request to completion; see the module docs. `call` builds and sends the
    /// RPC for an attempt; it runs once per attempt.
    pub(crate) async fn execute<R, F, Fut>(
        &self,
        op: &'static str,
        by: RouteBy<'_>,
        mut call: F,
    ) -> Result<Done<R>>
    where
        R: HasRegionError,
        F: FnMut(Channel, &Attempt) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let start = Instant::now();
        let deadline = start + self.config.request_timeout;
        let mut backoff = Backoff::new(&self.config);
        let mut attempts = 0u32;
        let mut cursor = 0usize;
        let mut immediate = MAX_IMMEDIATE_RETRIES;
        let mut last: Option<Failure> = None;
        let mut region_id = None;
        let request = |region_id| RequestInfo {
            op,
            key: by.key().map(<[u8]>::to_vec),
            region_id,
        };
        loop {
            if Instant::now() >= deadline {
                return Err(Error::DeadlineExceeded {
                    request: request(region_id),
                    attempts,
                    elapsed: start.elapsed(),
                    timeout: self.config.request_timeout,
                    last: Box::new(last.unwrap_or_else(|| {
                        Failure::Routing("no attempt was made before the deadline".to_string())
                    })),
                });
            }
            attempts += 1;
            let attempt = match self.route(op, by, cursor, deadline).await {
                Ok(attempt) => attempt,
                Err(RouteError::Fatal(err)) => return Err(err),
                Err(RouteError::Retry(failure)) => {
                    debug!(op, attempt = attempts, reason = %failure, "routing failed; backing off");
                    last = Some(failure);
                    immediate = MAX_IMMEDIATE_RETRIES;
                    backoff.sleep(Duration::ZERO, deadline).await;
                    continue;
                }
            };
            region_id = Some(attempt.region.id);
            let channel = self.channel(&attempt.address)?;
            let timeout = self
                .config
                .rpc_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            let outcome = tokio::time::timeout(timeout, call(channel, &attempt)).await;
            let (failure, next) = match outcome {
                Ok(Ok(resp)) => {
                    let mut resp = resp.into_inner();
                    match resp.take_region_error() {
                        None => {
                            self.on_success(&attempt);
                            return Ok(Done { resp, attempt });
                        }
                        Some(err) => {
                            self.cache.write().mark_up(attempt.peer.store_id);
                            match self
                                .on_region_error(&attempt, err, &mut cursor, deadline)
                                .await
                            {
                                Ok(handled) => handled,
                                Err(error) => {
                                    return Err(Error::Region {
                                        request: request(region_id),
                                        store_id: attempt.peer.store_id,
                                        error,
                                    })
                                }
                            }
                        }
                    }
                }
                Ok(Err(status)) => {
                    let failure = Failure::Rpc {
                        address: attempt.address.clone(),
                        code: status.code(),
                        message: status.message().to_string(),
                    };
                    if is_transport_error(&status) {
                        self.cache
                            .write()
                            .mark_down(attempt.peer.store_id, Instant::now());
                        cursor += 1;
                        // The store may be gone for good: learn the current layout
                        // (and leaders) from the others.
                        let _ = self.reload(Want::Any, deadline).await;
                    } else if !is_retryable_code(status.code()) {
                        return Err(Error::Rejected {
                            request: request(region_id),
                            address: attempt.address,
                            code: status.code(),
                            message: status.message().to_string(),
                        });
                    }
                    (failure, Next::Backoff(Duration::ZERO))
                }
                Err(_elapsed) => {
                    // An attempt cut short by the request's own deadline says nothing
                    // about the store: report what failed before it.
                    if timeout < self.config.rpc_timeout && last.is_some() {
                        continue;
                    }
                    self.cache
                        .write()
                        .clear_leader_if(attempt.region.id, &attempt.peer);
                    cursor += 1;
                    let failure = Failure::Timeout {
                        address: attempt.address.clone(),
                        after: timeout,
                    };
                    (failure, Next::Backoff(Duration::ZERO))
                }
            };
            match next {
                Next::Now if immediate > 0 => {
                    debug!(op, region_id = attempt.region.id, attempt = attempts, reason = %failure, "retrying at once");
                    immediate -= 1;
                }
                Next::Now | Next::Backoff(_) => {
                    let at_least = match next {
                        Next::Backoff(d) => d,
                        Next::Now => Duration::ZERO,
                    };
                    debug!(op, region_id = attempt.region.id, attempt = attempts, reason = %failure, "retrying after backoff");
                    immediate = MAX_IMMEDIATE_RETRIES;
                    backoff.sleep(at_least, deadline).await;
                }
            }
            last = Some(failure);
        }
    }

    /// The peer answered: it leads the region (as far as the client can tell) and its
    /// store is up. Only takes the write lock when that is news, so that the common
    /// case stays a read-locked cache.
    fn on_success(&self, attempt: &Attempt) {
        let (region_id, peer) = (attempt.region.id, attempt.peer);
        let news = {
            let cache = self.cache.read();
            cache.has_down_mark(peer.store_id)
                || cache.get(region_id).is_some_and(|c| c.leader != Some(peer))
        };
        if news {
            let mut cache = self.cache.write();
            cache.mark_up(peer.store_id);
            cache.set_leader(region_id, peer);
        }
    }

    /// Updates the cache for a region error and says how to retry; returns the error
    /// back when it is not retryable.
    async fn on_region_error(
        &self,
        attempt: &Attempt,
        err: RegionError,
        cursor: &mut usize,
        deadline: Instant,
    ) -> Result<(Failure, Next), Box<RegionError>> {
        let store_id = attempt.peer.store_id;
        let region_id = attempt.region.id;
        let next = match &err.kind {
            Some(Kind::NotLeader(nl)) => match nl.leader {
                Some(leader) if leader != attempt.peer => {
                    let address_known = {
                        let mut cache = self.cache.write();
                        cache.set_leader(region_id, leader);
                        cache.store_address(leader.store_id).is_some()
                    };
                    if !address_known {
                        let _ = self.reload(Want::Any, deadline).await;
                    }
                    Next::Now
                }
                _ => {
                    self.cache.write().clear_leader_if(region_id, &attempt.peer);
                    *cursor += 1;
                    Next::Backoff(Duration::ZERO)
                }
            },
            Some(Kind::EpochNotMatch(e)) => {
                self.cache.write().replace_regions(
                    &attempt.region,
                    e.current_regions.clone(),
                    store_id,
                );
                Next::Now
            }
            Some(Kind::RegionNotFound(_)) | Some(Kind::KeyNotInRegion(_)) => {
                {
                    let mut cache = self.cache.write();
                    cache.clear_leader_if(region_id, &attempt.peer);
                    cache.invalidate(&attempt.region);
                }
                *cursor += 1;
                // The next route misses the cache and reloads.
                Next::Now
            }
            Some(Kind::ServerIsBusy(busy)) => Next::Backoff(Duration::from_millis(busy.backoff_ms)),
            Some(Kind::StoreNotMatch(_)) => {
                let _ = self.reload(Want::Any, deadline).await;
                Next::Backoff(Duration::ZERO)
            }
            Some(Kind::EntryTooLarge(_)) => return Err(Box::new(err)),
            // Certainly not applied: safe to retry after a pause.
            Some(Kind::StaleCommand(_)) => Next::Backoff(Duration::ZERO),
            // The outcome is unknown: the caller decides.
            Some(Kind::Undetermined(_)) => return Err(Box::new(err)),
            None => Next::Backoff(Duration::ZERO),
        };
        Ok((
            Failure::Region {
                store_id,
                error: Box::new(err),
            },
            next,
        ))
    }

    /// Picks the region and peer for the next attempt, reloading the cache once if it
    /// does not know enough.
    async fn route(
        &self,
        op: &'static str,
        by: RouteBy<'_>,
        cursor: usize,
        deadline: Instant,
    ) -> Result<Attempt, RouteError> {
        let mut reloaded = false;
        loop {
            match self.route_cached(by, cursor) {
                Ok(attempt) => return Ok(attempt),
                Err(missing) if !reloaded => {
                    let want = match missing {
                        Missing::CrossRegion => Want::Any,
                        Missing::Address | Missing::Region => by.want(),
                    };
                    reloaded = true;
                    if let Err(failure) = self.reload(want, deadline).await {
                        return Err(RouteError::Retry(failure));
                    }
                }
                Err(missing) => return Err(self.route_error(op, by, missing)),
            }
        }
    }

    /// Routes from the cache alone.
    fn route_cached(&self, by: RouteBy<'_>, cursor: usize) -> Result<Attempt, Missing> {
        let cache = self.cache.read();
        let region = match by {
            RouteBy::Key(key) => cache.lookup_key(key),
            RouteBy::Batch(keys) => cache.lookup_key(keys.first().copied().unwrap_or_default()),
            RouteBy::Region(id) => cache.get(id),
        }
        .ok_or(Missing::Region)?;
        if let RouteBy::Batch(keys) = by {
            if keys.iter().any(|k| !contains(&region.region, k)) {
                return Err(Missing::CrossRegion);
            }
        }
        let target = cache
            .pick_target(
                region.region.id,
                cursor,
                Instant::now(),
                self.config.store_down_cooldown,
            )
            .ok_or(Missing::Address)?;
        Ok(Attempt {
            region: region.region.clone(),
            peer: target.peer,
            address: target.address,
        })
    }

    /// The error for a route that still fails after a reload.
    fn route_error(&self, op: &'static str, by: RouteBy<'_>, missing: Missing) -> RouteError {
        let cache = self.cache.read();
        match (missing, by) {
            (Missing::CrossRegion, RouteBy::Batch(keys)) => {
                let region_of = |k: &[u8]| cache.lookup_key(k).map_or(0, |c| c.region.id);
                let first_key = keys[0];
                let first_region = region_of(first_key);
                let other_key = keys
                    .iter()
                    .find(|k| region_of(k) != first_region)
                    .copied()
                    .unwrap_or(first_key);
                RouteError::Fatal(Error::CrossRegionBatch {
                    first_key: first_key.to_vec(),
                    first_region,
                    other_key: other_key.to_vec(),
                    other_region: region_of(other_key),
                })
            }
            (Missing::Region, RouteBy::Region(id)) => {
                RouteError::Fatal(Error::RegionNotFound { op, region_id: id })
            }
            (Missing::Address, _) => RouteError::Retry(Failure::Routing(
                "no known store address for any peer of the region".to_string(),
            )),
            _ => RouteError::Retry(Failure::Routing(
                "no known region covers the key".to_string(),
            )),
        }
    }
}

/// What the cache lacked to route a request.
#[derive(Debug, Clone, Copy)]
enum Missing {
    /// No cached region for the key / id.
    Region,
    /// The batch's keys are not all in the first key's region.
    CrossRegion,
    /// No address for any peer's store.
    Address,
}
