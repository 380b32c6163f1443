//! The request loop: route, send, and react to what came back, until success, a
//! non-retryable error, or the deadline.
//!
//! One call ([`Inner::execute`]) runs under one deadline (`request_timeout`):
//!
//! 1. **Route.** Find the key's (or region id's) region in the cache, reloading on a
//!    miss; pick the cached leader, or, when it is unknown or its store recently
//!    failed, the `cursor`-th usable voter.
//! 2. **Send** with `Context{region_id, region_epoch, peer}`, bounded by `rpc_timeout`.
//! 3. **React** as the table says.
//!
//! Whether a failed attempt may be retried depends on two things: whether the
//! failure says the request **certainly was not applied**, or leaves its **outcome
//! unknown**; and whether the request is a **read** or a **write**. A read is retried
//! on every retryable failure. A write (put, delete, batch write, compare-and-swap)
//! is retried only on the "certainly not applied" rows; on an "outcome unknown" row
//! it ends with [`Error::Undetermined`], and the caller reads the key to learn what
//! happened. Not even a put is retried then: if its first attempt was applied and
//! another client wrote the key after it, a second attempt would apply the put again
//! over the newer value, a put that takes effect twice (the chaos suite found that
//! stale read: `RELIABILITY.md`).
//!
//! | answer | applied? | cache update, then | write |
//! |---|---|---|---|
//! | success | yes | remember the peer as leader; return | same |
//! | `NotLeader{leader}` | no | cache the hint, retry at once; without a hint, next peer after a backoff | same |
//! | `EpochNotMatch{current_regions}` | no | replace the stale region by the given ones, retry at once | same |
//! | `RegionNotFound`, `KeyNotInRegion` | no | drop the region, reload, retry | same |
//! | `ServerIsBusy{backoff_ms}` | no | back off (at least `backoff_ms`), retry | same |
//! | `StoreNotMatch` | no | reload (the store map is wrong), back off, retry | same |
//! | `StaleCommand` | no | back off, retry | same |
//! | `EntryTooLarge` | no | return it as [`Error::Region`] (retrying cannot help) | same |
//! | `Undetermined` | unknown | back off, retry | return [`Error::Undetermined`] |
//! | connection refused / connect failed (nothing sent) | no | mark the store down, reload, next peer after a backoff | same |
//! | connection lost, reset or cancelled after sending | unknown | mark the store down, reload, next peer after a backoff | return [`Error::Undetermined`] |
//! | RPC timeout (`rpc_timeout`, or the deadline, cut the attempt short) | unknown | forget that leader guess, next peer after a backoff | return [`Error::Undetermined`] |
//! | `Unavailable`/`Cancelled` sent by a server | no (refused before serving) | as a lost connection | retry |
//! | `DeadlineExceeded`/`Aborted` sent by a server | unknown | back off, retry | return [`Error::Undetermined`] |
//! | any other gRPC status (`InvalidArgument`, ...) | no | return it as [`Error::Rejected`] | same |
//!
//! "At once" retries are limited to [`MAX_IMMEDIATE_RETRIES`] in a row, so two stores
//! that disagree about the leader cannot make the client spin. Backoff is exponential
//! with jitter and never sleeps past the deadline. Every retry is logged at debug level
//! with its reason. A call that runs out of time ends with [`Error::DeadlineExceeded`]
//! (for a write that is only possible when no attempt's outcome was unknown, so it
//! certainly was not applied).

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use shoal_proto::errorpb::{region_error::Kind, RegionError};
use shoal_proto::kvrpcpb::Context;
use shoal_proto::metapb::{Peer, Region};
use shoal_proto::{HasRegionError, RegionExt};
use tonic::transport::Channel;
use tracing::debug;

use crate::client::Inner;
use crate::config::ClientConfig;
use crate::discovery::{is_connect_failure, is_transport_error, Want};
use crate::error::{is_retryable_code, Error, Failure, RequestInfo, Result};

/// Retries without backoff allowed in a row (after a leader hint or a new epoch).
pub(crate) const MAX_IMMEDIATE_RETRIES: u32 = 3;

/// Whether a request may be sent again after an attempt whose outcome is unknown;
/// see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotence {
    /// Reads (and admin calls that check their own preconditions): retried on every
    /// retryable failure, "outcome unknown" included.
    Idempotent,
    /// Writes: retried only when the failed attempt certainly was not applied;
    /// otherwise the call ends with [`Error::Undetermined`].
    NotIdempotent,
}

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
    /// The request may reach the system key range (`ClientConfig::system`).
    pub(crate) system: bool,
}

impl Attempt {
    /// The `Context` every routed request carries.
    pub(crate) fn context(&self) -> Context {
        Context {
            region_id: self.region.id,
            region_epoch: self.region.region_epoch,
            peer: Some(self.peer),
            system: self.system,
        }
    }
}

/// A successful answer and where it came from.
pub(crate) struct Done<R> {
    pub(crate) resp: R,
    pub(crate) attempt: Attempt,
}

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

/// How an attempt ended, when it did not end the call with an error.
enum Step<R> {
    /// The answer: the call returns it.
    Done(Done<R>),
    /// A retryable failure: record it and retry as [`Next`] says.
    Retry(Failure, Next),
    /// The call's own deadline cut the attempt short. That says nothing about the
    /// store: the failure before it stands, and the loop goes on (to the deadline).
    CutShort,
}

impl Inner {
    /// Runs one idempotent request to completion; see [`Inner::execute_with`].
    pub(crate) async fn execute<R, F, Fut>(
        &self,
        op: &'static str,
        by: RouteBy<'_>,
        call: F,
    ) -> Result<Done<R>>
    where
        R: HasRegionError,
        F: FnMut(Channel, &Attempt) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        self.execute_with(op, by, Idempotence::Idempotent, call)
            .await
    }

    /// Runs one request to completion; see the module docs. `call` builds and sends the
    /// RPC for an attempt; it runs once per attempt. A [`Idempotence::NotIdempotent`]
    /// request ends with [`Error::Undetermined`] at the first failure that leaves its
    /// outcome unknown.
    pub(crate) async fn execute_with<R, F, Fut>(
        &self,
        op: &'static str,
        by: RouteBy<'_>,
        idempotence: Idempotence,
        call: F,
    ) -> Result<Done<R>>
    where
        R: HasRegionError,
        F: FnMut(Channel, &Attempt) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        RequestLoop::new(self, op, by, idempotence).run(call).await
    }
}

/// The least time a write's retry needs left to be worth sending (see
/// `Call::check_deadline`).
const MIN_WRITE_ATTEMPT: Duration = Duration::from_millis(20);

/// One call's state across its attempts: its deadline and backoff, which peer to try
/// next, and what failed last. [`RequestLoop::run`] is the loop of the module docs;
/// each `on_*` method is a group of rows of its table.
struct RequestLoop<'a> {
    inner: &'a Inner,
    op: &'static str,
    by: RouteBy<'a>,
    /// The request is not idempotent: it ends at the first unknown outcome.
    once: bool,
    start: Instant,
    deadline: Instant,
    backoff: Backoff,
    /// Attempts so far, routing failures included.
    attempts: u32,
    /// Which usable peer to try when the leader is unknown; bumped to walk the peers.
    cursor: usize,
    /// Retries without backoff still allowed in a row.
    immediate: u32,
    /// The latest failure, reported if the deadline passes.
    last: Option<Failure>,
    /// The region of the latest routed attempt.
    region_id: Option<u64>,
}

impl<'a> RequestLoop<'a> {
    fn new(inner: &'a Inner, op: &'static str, by: RouteBy<'a>, idempotence: Idempotence) -> Self {
        let start = Instant::now();
        RequestLoop {
            inner,
            op,
            by,
            once: idempotence == Idempotence::NotIdempotent,
            start,
            deadline: start + inner.config.request_timeout,
            backoff: Backoff::new(&inner.config),
            attempts: 0,
            cursor: 0,
            immediate: MAX_IMMEDIATE_RETRIES,
            last: None,
            region_id: None,
        }
    }

    /// Route, send, react; until success, a non-retryable error or the deadline.
    async fn run<R, F, Fut>(mut self, mut call: F) -> Result<Done<R>>
    where
        R: HasRegionError,
        F: FnMut(Channel, &Attempt) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        loop {
            self.check_deadline()?;
            self.attempts += 1;
            let Some(attempt) = self.next_attempt().await? else {
                continue;
            };
            let region_id = attempt.region.id;
            match self.send(attempt, &mut call).await? {
                Step::Done(done) => return Ok(done),
                Step::Retry(failure, next) => self.pause(region_id, failure, next).await,
                Step::CutShort => {}
            }
        }
    }

    /// [`Error::DeadlineExceeded`], with the latest failure, once the time is up.
    /// A write that failed before does not start an attempt with less than
    /// [`MIN_WRITE_ATTEMPT`] left: cut short, that attempt would turn a certain
    /// failure into an unknown outcome for nothing.
    fn check_deadline(&mut self) -> Result<()> {
        let reserve = match self.once && self.last.is_some() {
            true => MIN_WRITE_ATTEMPT,
            false => Duration::ZERO,
        };
        if Instant::now() + reserve < self.deadline {
            return Ok(());
        }
        let last = self.last.take().unwrap_or_else(|| {
            Failure::Routing("no attempt was made before the deadline".to_string())
        });
        Err(Error::DeadlineExceeded {
            request: self.request(),
            attempts: self.attempts,
            elapsed: self.start.elapsed(),
            timeout: self.inner.config.request_timeout,
            last: Box::new(last),
        })
    }

    /// Where the next attempt goes; `None` when routing failed and the loop has
    /// backed off (the caller tries again).
    async fn next_attempt(&mut self) -> Result<Option<Attempt>> {
        let routed = self
            .inner
            .route(self.op, self.by, self.cursor, self.deadline)
            .await;
        match routed {
            Ok(attempt) => Ok(Some(attempt)),
            Err(RouteError::Fatal(err)) => Err(err),
            Err(RouteError::Retry(failure)) => {
                debug!(op = self.op, attempt = self.attempts, reason = %failure, "routing failed; backing off");
                self.last = Some(failure);
                self.immediate = MAX_IMMEDIATE_RETRIES;
                self.backoff.sleep(Duration::ZERO, self.deadline).await;
                Ok(None)
            }
        }
    }

    /// Sends one attempt, bounded by `rpc_timeout` and the deadline, and reacts to
    /// what came back (or did not).
    async fn send<R, F, Fut>(&mut self, attempt: Attempt, call: &mut F) -> Result<Step<R>>
    where
        R: HasRegionError,
        F: FnMut(Channel, &Attempt) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        self.region_id = Some(attempt.region.id);
        let channel = self.inner.channel(&attempt.address)?;
        let timeout = self
            .inner
            .config
            .rpc_timeout
            .min(self.deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(timeout, call(channel, &attempt)).await {
            Ok(Ok(resp)) => self.on_answer(attempt, resp.into_inner()).await,
            Ok(Err(status)) => self.on_status(attempt, status).await,
            Err(_elapsed) => self.on_timeout(attempt, timeout),
        }
    }

    /// The store answered: success, or a region error (its rows of the table).
    async fn on_answer<R: HasRegionError>(
        &mut self,
        attempt: Attempt,
        mut resp: R,
    ) -> Result<Step<R>> {
        let Some(err) = resp.take_region_error() else {
            self.inner.on_success(&attempt);
            return Ok(Step::Done(Done { resp, attempt }));
        };
        let store_id = attempt.peer.store_id;
        self.inner.cache.write().mark_up(store_id);
        if self.once && matches!(err.kind, Some(Kind::Undetermined(_))) {
            let cause = Failure::Region {
                store_id,
                error: Box::new(err),
            };
            return Err(self.undetermined(cause));
        }
        let handled = self
            .inner
            .on_region_error(&attempt, err, &mut self.cursor, self.deadline)
            .await;
        match handled {
            Ok((failure, next)) => Ok(Step::Retry(failure, next)),
            Err(error) => Err(Error::Region {
                request: self.request(),
                store_id,
                error,
            }),
        }
    }

    /// The RPC failed with a gRPC status, local (transport) or sent by the server.
    async fn on_status<R>(&mut self, attempt: Attempt, status: tonic::Status) -> Result<Step<R>> {
        let failure = Failure::Rpc {
            address: attempt.address.clone(),
            code: status.code(),
            message: status.message().to_string(),
        };
        if is_transport_error(&status) {
            return self.on_transport_error(&attempt, &status, failure).await;
        }
        if !is_retryable_code(status.code()) {
            return Err(Error::Rejected {
                request: self.request(),
                address: attempt.address,
                code: status.code(),
                message: status.message().to_string(),
            });
        }
        if self.once {
            // `DeadlineExceeded` / `Aborted` from the server: it may have been working
            // on the request.
            return Err(self.undetermined(failure));
        }
        Ok(Step::Retry(failure, Next::Backoff(Duration::ZERO)))
    }

    /// The connection failed: the store is marked down and the next peer tried.
    async fn on_transport_error<R>(
        &mut self,
        attempt: &Attempt,
        status: &tonic::Status,
        failure: Failure,
    ) -> Result<Step<R>> {
        self.inner
            .cache
            .write()
            .mark_down(attempt.peer.store_id, Instant::now());
        // A status the server sent (no source error) refused the request; a local one
        // may have cut a request already sent, unless the connection was never made.
        let sent = std::error::Error::source(status).is_some() && !is_connect_failure(status);
        if self.once && sent {
            return Err(self.undetermined(failure));
        }
        self.cursor += 1;
        // The store may be gone for good: learn the current layout (and leaders) from
        // the others.
        let _ = self.inner.reload(Want::Any, self.deadline).await;
        Ok(Step::Retry(failure, Next::Backoff(Duration::ZERO)))
    }

    /// No answer within `timeout`.
    fn on_timeout<R>(&mut self, attempt: Attempt, timeout: Duration) -> Result<Step<R>> {
        let failure = Failure::Timeout {
            address: attempt.address.clone(),
            after: timeout,
        };
        if self.once {
            // The request may have reached the store and been applied.
            return Err(self.undetermined(failure));
        }
        // An attempt cut short by the request's own deadline says nothing about the
        // store: report what failed before it.
        if timeout < self.inner.config.rpc_timeout && self.last.is_some() {
            return Ok(Step::CutShort);
        }
        self.inner
            .cache
            .write()
            .clear_leader_if(attempt.region.id, &attempt.peer);
        self.cursor += 1;
        Ok(Step::Retry(failure, Next::Backoff(Duration::ZERO)))
    }

    /// Waits before the next attempt as `next` says (not at all while the
    /// immediate-retry budget lasts), then records `failure` as the latest.
    async fn pause(&mut self, region_id: u64, failure: Failure, next: Next) {
        let (op, attempt) = (self.op, self.attempts);
        match next {
            Next::Now if self.immediate > 0 => {
                debug!(op, region_id, attempt, reason = %failure, "retrying at once");
                self.immediate -= 1;
            }
            Next::Now | Next::Backoff(_) => {
                let at_least = match next {
                    Next::Backoff(d) => d,
                    Next::Now => Duration::ZERO,
                };
                debug!(op, region_id, attempt, reason = %failure, "retrying after backoff");
                self.immediate = MAX_IMMEDIATE_RETRIES;
                self.backoff.sleep(at_least, self.deadline).await;
            }
        }
        self.last = Some(failure);
    }

    /// The request, as errors describe it.
    fn request(&self) -> RequestInfo {
        RequestInfo {
            op: self.op,
            key: self.by.key().map(<[u8]>::to_vec),
            region_id: self.region_id,
        }
    }

    /// The end of a non-idempotent call whose latest attempt has an unknown outcome.
    fn undetermined(&self, cause: Failure) -> Error {
        Error::Undetermined {
            request: self.request(),
            attempts: self.attempts,
            cause: Box::new(cause),
        }
    }
}

impl Inner {
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
            // The outcome is unknown: only reads and admin calls get here (the request
            // loop ends a write first), and sending them again is fine.
            Some(Kind::Undetermined(_)) => Next::Backoff(Duration::ZERO),
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
            if keys.iter().any(|k| !region.region.contains_key(k)) {
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
            system: self.config.system,
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
