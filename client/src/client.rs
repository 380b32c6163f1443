//! [`Client`]: connecting, and the key-value API (`get`, `put`, `delete`, `scan`,
//! `batch_write`, `compare_and_swap`). Each call runs through the request loop in
//! `request.rs`; `scan` walks regions in key order.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use shoal_proto::kvrpcpb::{
    self, BatchWriteRequest, CompareAndSwapRequest, DeleteRequest, GetRequest, PutRequest,
    ScanRequest,
};
use tonic::transport::Channel;

use crate::config::ClientConfig;
use crate::discovery::Want;
use crate::error::{Error, Failure, Result};
use crate::region_cache::{CachedRegion, RegionCache};
use crate::request::{Backoff, Idempotence, RouteBy};

/// A Shoal client. Cheap to clone (clones share the region cache and connections)
/// and safe to use from many tasks at once.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// State shared by all clones of a [`Client`].
pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    /// Dials with TLS when `config.tls` is set.
    pub(crate) connector: Option<crate::tls::TlsConnector>,
    /// The endpoints given to `connect`, asked first for regions.
    pub(crate) endpoints: Vec<String>,
    pub(crate) cache: RwLock<RegionCache>,
    /// One channel per store address; tonic multiplexes requests on it.
    pub(crate) channels: RwLock<HashMap<String, Channel>>,
    /// One batched Kv stream per store address (`batch.rs`), when
    /// `config.batch_stream` is on.
    pub(crate) batch_streams: RwLock<HashMap<String, crate::batch::BatchStream>>,
    /// Serializes region reloads; see `discovery.rs`.
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
    /// Bumped after every reload, so that waiters can tell one happened.
    pub(crate) reload_generation: AtomicU64,
}

/// One write of a [`Client::batch_write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Vec<u8>),
}

impl Mutation {
    /// The key the mutation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put(key, _) | Mutation::Delete(key) => key,
        }
    }

    fn into_proto(self) -> kvrpcpb::Mutation {
        use kvrpcpb::mutation::Op;
        match self {
            Mutation::Put(key, value) => kvrpcpb::Mutation {
                op: Op::Put as i32,
                key,
                value,
            },
            Mutation::Delete(key) => kvrpcpb::Mutation {
                op: Op::Delete as i32,
                key,
                value: Vec::new(),
            },
        }
    }
}

/// The result of a [`Client::compare_and_swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the new value was written.
    pub succeeded: bool,
    /// The value found before the swap (`None`: the key did not exist).
    pub previous: Option<Vec<u8>>,
}

impl Client {
    /// Connects to a cluster: validates `config`, then learns the regions and store
    /// addresses from the first of `endpoints` ("host:port") that answers `ListRegions`,
    /// retrying with backoff for up to `config.request_timeout`. Channels connect
    /// lazily, so endpoints that are down cost nothing until asked.
    pub async fn connect(endpoints: Vec<String>, config: ClientConfig) -> Result<Client> {
        config.validate().map_err(Error::Config)?;
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Config("no endpoints given".to_string()));
        }
        let connector = match (&config.tls_connector, &config.tls) {
            (Some(connector), _) => Some(connector.clone()),
            (None, Some(paths)) => Some(
                crate::tls::TlsConnector::new(paths)
                    .map_err(|e| Error::Config(format!("TLS: {e}")))?,
            ),
            (None, None) => None,
        };
        let inner = Arc::new(Inner {
            connector,
            config,
            endpoints,
            cache: RwLock::new(RegionCache::default()),
            channels: RwLock::new(HashMap::new()),
            batch_streams: RwLock::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            reload_generation: AtomicU64::new(0),
        });
        for endpoint in &inner.endpoints {
            inner.channel(endpoint)?;
        }
        let client = Client { inner };
        client.discover("ListRegions").await?;
        Ok(client)
    }

    /// Fetches `ListRegions` from any endpoint or known store, with backoff, within the
    /// request deadline; merges it into the cache and returns it.
    pub(crate) async fn discover(
        &self,
        op: &'static str,
    ) -> Result<shoal_proto::adminpb::ListRegionsResponse> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.config.request_timeout;
        let mut backoff = Backoff::new(&inner.config);
        // The failure reported: the last one that says something (an attempt cut
        // short by the deadline asked no one).
        let mut reason: Option<Failure> = None;
        loop {
            match inner.list_from_any(Want::Any, deadline).await {
                Ok(resp) => return Ok(resp),
                Err(last) => {
                    let refused = match &last {
                        Failure::Rpc { code, message, .. } => {
                            matches!(
                                code,
                                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                            ) || crate::discovery::is_tls_refusal(message)
                        }
                        _ => false,
                    };
                    if reason.is_none() || !matches!(last, Failure::Routing(_)) {
                        reason = Some(last);
                    }
                    // A node that refuses this client's certificate (or whose
                    // certificate this client refuses) will do so again: no point
                    // waiting out the deadline.
                    if refused || Instant::now() >= deadline {
                        return Err(Error::Unreachable {
                            op,
                            endpoints: inner.endpoints.clone(),
                            timeout: inner.config.request_timeout,
                            last: Box::new(reason.expect("a failure")),
                        });
                    }
                    tracing::debug!(op, reason = ?reason, "no endpoint answered; backing off");
                    backoff.sleep(std::time::Duration::ZERO, deadline).await;
                }
            }
        }
    }

    /// The configuration the client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The value of `key`, or `None` if it does not exist.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        let done = self
            .inner
            .execute("get", RouteBy::Key(key), |channel, at| {
                let req = GetRequest {
                    context: Some(at.context()),
                    key: key.to_vec(),
                };
                let kv = self.inner.kv(&at.address, channel);
                async move { kv.get(req).await }
            })
            .await?;
        Ok(done.resp.found.then_some(done.resp.value))
    }

    /// Sets `key` to `value`. Retried only after failures that say it certainly was
    /// not applied; an attempt whose outcome is unknown ends the call with
    /// [`Error::Undetermined`] (see the `request` module docs for why even a put is
    /// not sent twice).
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.inner.check_size("put", key.len() + value.len())?;
        self.inner
            .execute_with(
                "put",
                RouteBy::Key(key),
                Idempotence::NotIdempotent,
                |channel, at| {
                    let req = PutRequest {
                        context: Some(at.context()),
                        key: key.to_vec(),
                        value: value.to_vec(),
                    };
                    let kv = self.inner.kv(&at.address, channel);
                    async move { kv.put(req).await }
                },
            )
            .await?;
        Ok(())
    }

    /// Removes `key` (no error if it does not exist).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let key = key.as_ref();
        self.inner
            .execute_with(
                "delete",
                RouteBy::Key(key),
                Idempotence::NotIdempotent,
                |channel, at| {
                    let req = DeleteRequest {
                        context: Some(at.context()),
                        key: key.to_vec(),
                    };
                    let kv = self.inner.kv(&at.address, channel);
                    async move { kv.delete(req).await }
                },
            )
            .await?;
        Ok(())
    }

    /// Up to `limit` pairs with keys in `[start, end)`, in key order; an empty `end`
    /// means the end of the key space, and `limit == 0` returns nothing.
    ///
    /// Walks region after region, each with `Scan` RPCs of at most
    /// `config.scan_batch_size` pairs clipped to the region's range. Each RPC has its
    /// own deadline and retries. The result is not a snapshot: writes made during the
    /// scan may or may not be seen. After a non-empty answer the walk continues in the
    /// same region right after the last key it got (`exclusive_start`, so that a key of
    /// the maximum size still continues: no longer key is made up); a store may answer
    /// with fewer pairs than asked when the pairs would not fit in one gRPC message.
    /// Only an empty answer moves the walk to the next region.
    pub async fn scan(
        &self,
        start: impl AsRef<[u8]>,
        end: impl AsRef<[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = end.as_ref();
        let batch = self.inner.config.scan_batch_size as usize;
        let mut out = Vec::new();
        let mut cursor = start.as_ref().to_vec();
        // Whether `cursor` itself was already returned (the walk continues after it).
        let mut exclusive = false;
        while out.len() < limit && (end.is_empty() || cursor.as_slice() < end) {
            let want = (limit - out.len()).min(batch);
            let done = self
                .inner
                .execute("scan", RouteBy::Key(&cursor), |channel, at| {
                    let req = ScanRequest {
                        context: Some(at.context()),
                        start_key: cursor.clone(),
                        end_key: clip_end(&at.region.end_key, end).to_vec(),
                        limit: want as u32,
                        exclusive_start: exclusive,
                    };
                    let kv = self.inner.kv(&at.address, channel);
                    async move { kv.scan(req).await }
                })
                .await?;
            let mut last_key: Option<Vec<u8>> = None;
            for pair in done.resp.pairs.into_iter().take(want) {
                // Ignore pairs outside what was asked (a misbehaving server must not
                // make the walk go backwards, repeat a key, or pass `end`).
                let after_start = if exclusive {
                    pair.key > cursor
                } else {
                    pair.key >= cursor
                };
                let in_range = after_start && (end.is_empty() || pair.key.as_slice() < end);
                if in_range && last_key.as_ref().is_none_or(|k| &pair.key > k) {
                    last_key = Some(pair.key.clone());
                    out.push((pair.key, pair.value));
                }
            }
            match last_key {
                // The region may hold more after the last key.
                Some(key) => {
                    cursor = key;
                    exclusive = true;
                }
                // The region's part of the range is exhausted: go on with the next one.
                None => {
                    let region_end = done.attempt.region.end_key;
                    if region_end.is_empty() {
                        break;
                    }
                    cursor = region_end;
                    exclusive = false;
                }
            }
        }
        Ok(out)
    }

    /// Applies `mutations` atomically. All keys must fall in one region; otherwise
    /// nothing is sent and [`Error::CrossRegionBatch`] says which keys disagree (the
    /// client first refreshes its regions, in case the cache is stale). An empty batch
    /// is a no-op.
    pub async fn batch_write(&self, mutations: Vec<Mutation>) -> Result<()> {
        if mutations.is_empty() {
            return Ok(());
        }
        let size = mutations
            .iter()
            .map(|m| match m {
                Mutation::Put(k, v) => k.len() + v.len(),
                Mutation::Delete(k) => k.len(),
            })
            .sum();
        self.inner.check_size("batch_write", size)?;
        let mutations: Vec<kvrpcpb::Mutation> =
            mutations.into_iter().map(Mutation::into_proto).collect();
        let keys: Vec<&[u8]> = mutations.iter().map(|m| m.key.as_slice()).collect();
        self.inner
            .execute_with(
                "batch_write",
                RouteBy::Batch(&keys),
                Idempotence::NotIdempotent,
                |channel, at| {
                    let req = BatchWriteRequest {
                        context: Some(at.context()),
                        mutations: mutations.clone(),
                    };
                    let kv = self.inner.kv(&at.address, channel);
                    async move { kv.batch_write(req).await }
                },
            )
            .await?;
        Ok(())
    }

    /// Sets `key` to `new_value` if its current value is `expected` (`None`: only if
    /// the key does not exist). Returns whether it did and the value found before.
    ///
    /// Not idempotent, so retried only after failures that say it certainly was not
    /// applied (region errors answered before proposing, `StaleCommand`, connection
    /// refused). When an attempt fails in a way that leaves its outcome unknown (an
    /// `Undetermined` answer, an RPC timeout, a connection lost after sending), the
    /// call ends with [`Error::Undetermined`]: the swap may or may not have happened;
    /// read the key to find out.
    pub async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<Vec<u8>>,
        new_value: impl AsRef<[u8]>,
    ) -> Result<CasOutcome> {
        let (key, new_value) = (key.as_ref(), new_value.as_ref());
        let size = key.len() + new_value.len() + expected.as_ref().map_or(0, Vec::len);
        self.inner.check_size("compare_and_swap", size)?;
        let expected_absent = expected.is_none();
        let expected_value = expected.unwrap_or_default();
        let done = self
            .inner
            .execute_with(
                "compare_and_swap",
                RouteBy::Key(key),
                Idempotence::NotIdempotent,
                |channel, at| {
                    let req = CompareAndSwapRequest {
                        context: Some(at.context()),
                        key: key.to_vec(),
                        expected_value: expected_value.clone(),
                        expected_absent,
                        new_value: new_value.to_vec(),
                    };
                    let kv = self.inner.kv(&at.address, channel);
                    async move { kv.compare_and_swap(req).await }
                },
            )
            .await?;
        let resp = done.resp;
        Ok(CasOutcome {
            succeeded: resp.succeeded,
            previous: resp.previous_found.then_some(resp.previous_value),
        })
    }

    /// The regions the client has cached, in key order, with the leaders it believes.
    pub fn regions_cached(&self) -> Vec<CachedRegion> {
        self.inner.cache.read().snapshot()
    }
}

impl Inner {
    /// Refuses a write whose keys and values (`size` bytes) could not fit in one gRPC
    /// message of `max_message_size`, before sending it: tonic would refuse to encode
    /// it with a message about its codec.
    fn check_size(&self, op: &str, size: usize) -> Result<()> {
        // Room for the context and the protobuf framing of up to 1024 mutations.
        const FRAMING: usize = 64 << 10;
        let limit = self.config.max_message_size;
        if size + FRAMING > limit {
            return Err(Error::InvalidArgument(format!(
                "{op} carries {size} bytes of keys and values, more than one request may \
                 (max_message_size {limit} bytes, the limit that goes with the cluster's \
                 raft-entry-max-size); a store refuses any value over its max-value-size \
                 (1048576 bytes by default)"
            )));
        }
        Ok(())
    }
}

/// The end of a scan within one region: the smaller of the region's end and the
/// scan's end, an empty key meaning unbounded.
fn clip_end<'a>(region_end: &'a [u8], end: &'a [u8]) -> &'a [u8] {
    match (region_end.is_empty(), end.is_empty()) {
        (true, _) => end,
        (false, true) => region_end,
        (false, false) => region_end.min(end),
    }
}

#[cfg(test)]
mod tests {
    use super::clip_end;

    #[test]
    fn clip_end_takes_the_smaller_bound() {
        assert_eq!(clip_end(b"", b""), b"");
        assert_eq!(clip_end(b"m", b""), b"m");
        assert_eq!(clip_end(b"", b"k"), b"k");
        assert_eq!(clip_end(b"m", b"k"), b"k");
        assert_eq!(clip_end(b"m", b"z"), b"m");
    }
}
