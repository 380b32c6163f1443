//! Finding the cluster: one lazily-connected gRPC channel per store address, and
//! region discovery through Admin `ListRegions`.
//!
//! A reload asks the configured endpoints and every known store (healthy ones first)
//! until one answers, or, when the caller needs a particular key or region, until the
//! answers cover it: a store may only know the regions it hosts. Reloads are
//! coalesced: a task that waited for another task's reload skips its own if the cache
//! now has what it needs.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shoal_proto::adminpb::admin_client::AdminClient;
use shoal_proto::adminpb::{ListRegionsRequest, ListRegionsResponse};
use shoal_proto::kvrpcpb::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::batch::{BatchStream, KvConn};
use crate::client::Inner;
use crate::error::{Error, Failure};

/// What a reload must make the cache know about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want<'a> {
    /// Nothing in particular: one answer is enough.
    Any,
    /// The region containing this key.
    Key(&'a [u8]),
    /// This region.
    Region(u64),
}

/// A Kv client on `channel` with the message size limit `max_message_size`
/// (`ClientConfig::max_message_size`, derived as the module docs of `config` say).
pub(crate) fn kv_client(channel: Channel, max_message_size: usize) -> KvClient<Channel> {
    KvClient::new(channel)
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size)
}

/// An Admin client on `channel` with the message size limit `max_message_size`.
pub(crate) fn admin_client(channel: Channel, max_message_size: usize) -> AdminClient<Channel> {
    AdminClient::new(channel)
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size)
}

/// Whether a status was produced by the client's transport (connection refused or
/// reset, stream cancelled) rather than sent by a server: statuses decoded from a
/// server's response carry no source error.
pub(crate) fn is_transport_error(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Cancelled
    ) || std::error::Error::source(status).is_some()
}

/// A status's message and the errors under it (a transport error's message alone is
/// "transport error"; the cause says a connection was refused, or a TLS handshake
/// failed and why).
pub(crate) fn with_causes(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let cause = err.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
        source = err.source();
    }
    text
}

/// Whether a failure's text (with its causes: [`with_causes`]) is a TLS refusal
/// that trying again will not change: the server sent a fatal alert (it refused
/// this client's certificate, or the lack of one), or the client refused the
/// server's certificate.
pub(crate) fn is_tls_refusal(text: &str) -> bool {
    text.contains("received fatal alert") || text.contains("invalid peer certificate")
}

/// Whether a transport error happened while connecting, so that nothing of the
/// request can have been sent: the TCP connection was refused, timed out, or the
/// HTTP/2 handshake failed. Any other transport error (a reset, a broken pipe, a
/// cancelled stream) may have cut a request the server already received.
pub(crate) fn is_connect_failure(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        // hyper-util's `ConnectError` ("tcp connect error") and tonic's wrapping of
        // a failed connection ("error trying to connect") are not public types.
        let text = err.to_string();
        // A TLS handshake that failed (`tls::TlsConnector`) sent no request either.
        if text.contains("tcp connect error")
            || text.contains("error trying to connect")
            || text.contains("tls handshake with")
        {
            return true;
        }
        source = err.source();
    }
    false
}

impl Inner {
    /// The channel to `address`, created (without connecting) on first use.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel, Error> {
        if let Some(channel) = self.channels.read().get(address) {
            return Ok(channel.clone());
        }
        let channel = self.new_channel(address)?;
        let mut channels = self.channels.write();
        Ok(channels
            .entry(address.to_string())
            .or_insert(channel)
            .clone())
    }

    /// A new channel (its own connection, made lazily) to `address`.
    fn new_channel(&self, address: &str) -> Result<Channel, Error> {
        let uri = match &self.connector {
            Some(_) => crate::tls::channel_uri(address),
            None if address.contains("://") => address.to_string(),
            None => format!("http://{address}"),
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| Error::InvalidEndpoint {
            endpoint: address.to_string(),
            message: e.to_string(),
        })?;
        // HTTP/2 pings find a connection whose peer vanished without closing it
        // (a batched stream would otherwise look open and take requests).
        let endpoint = endpoint
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(std::time::Duration::from_secs(5))
            .keep_alive_timeout(std::time::Duration::from_secs(5))
            .keep_alive_while_idle(true);
        Ok(match &self.connector {
            Some(tls) => tls.lazy_channel(endpoint),
            None => endpoint.connect_lazy(),
        })
    }

    /// How Kv requests reach `address`: on its batched stream (opened on first use,
    /// on a connection of its own, and again after it ended) or, with
    /// `batch_stream` off or a store without it, by unary calls on `channel`.
    pub(crate) fn kv(&self, address: &str, channel: Channel) -> KvConn {
        let max = self.config.max_message_size;
        if !self.config.batch_stream {
            return KvConn::Unary(kv_client(channel, max));
        }
        if let Some(stream) = self.batch_streams.read().get(address) {
            if stream.is_unsupported() {
                return KvConn::Unary(kv_client(channel, max));
            }
            if !stream.is_closed() {
                return KvConn::Batched(stream.clone());
            }
        }
        let open = || {
            BatchStream::open(
                self.new_channel(address)
                    .unwrap_or_else(|_| channel.clone()),
                max,
            )
        };
        let mut streams = self.batch_streams.write();
        let stream = streams.entry(address.to_string()).or_insert_with(&open);
        if stream.is_closed() && !stream.is_unsupported() {
            *stream = open();
        }
        KvConn::Batched(stream.clone())
    }

    /// Whether the cache already knows what `want` asks for.
    fn satisfied(&self, want: Want<'_>) -> bool {
        let cache = self.cache.read();
        match want {
            Want::Any => true,
            Want::Key(key) => cache.lookup_key(key).is_some(),
            Want::Region(id) => cache.get(id).is_some(),
        }
    }

    /// Reloads regions (coalesced with concurrent reloads), bounded by `deadline`.
    /// Succeeds when at least one store answered.
    pub(crate) async fn reload(&self, want: Want<'_>, deadline: Instant) -> Result<(), Failure> {
        let seen = self.reload_generation.load(Ordering::Acquire);
        let Ok(_guard) = tokio::time::timeout_at(deadline.into(), self.reload_lock.lock()).await
        else {
            return Err(Failure::Routing(
                "deadline reached while waiting for a region reload".to_string(),
            ));
        };
        if self.reload_generation.load(Ordering::Acquire) != seen && self.satisfied(want) {
            return Ok(());
        }
        let result = self.list_from_any(want, deadline).await.map(|_| ());
        self.reload_generation.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Asks candidates in turn, merging every answer into the cache, until one answered
    /// and `want` is satisfied. Returns the first answer.
    pub(crate) async fn list_from_any(
        &self,
        want: Want<'_>,
        deadline: Instant,
    ) -> Result<ListRegionsResponse, Failure> {
        let mut first = None;
        let mut last = None;
        for address in self.candidates() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let timeout = self.config.rpc_timeout.min(deadline - now);
            match self.list_regions_at(&address, timeout).await {
                Ok(resp) => {
                    {
                        let mut cache = self.cache.write();
                        if let Some(id) = cache.store_at(&address) {
                            cache.mark_up(id);
                        }
                        cache.apply_list(&resp);
                    }
                    first.get_or_insert(resp);
                    if self.satisfied(want) {
                        break;
                    }
                }
                Err(failure) => {
                    debug!(%address, %failure, "ListRegions failed; trying the next endpoint");
                    last = Some(failure);
                }
            }
        }
        first.ok_or_else(|| {
            last.unwrap_or_else(|| Failure::Routing("no endpoint could be asked".to_string()))
        })
    }

    /// The addresses to ask for regions: configured endpoints and known stores, without
    /// duplicates, stores that recently failed last.
    pub(crate) fn candidates(&self) -> Vec<String> {
        let now = Instant::now();
        let cache = self.cache.read();
        let cooldown = self.config.store_down_cooldown;
        let healthy_stores = cache.store_addresses(now, cooldown);
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for address in self.endpoints.iter().chain(healthy_stores.iter()) {
            if good.contains(address) || bad.contains(address) {
                continue;
            }
            let down = cache
                .store_at(address)
                .is_some_and(|id| cache.is_down(id, now, cooldown));
            if down {
                bad.push(address.clone());
            } else {
                good.push(address.clone());
            }
        }
        good.extend(bad);
        good
    }

    /// One `ListRegions` RPC to `address`.
    async fn list_regions_at(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<ListRegionsResponse, Failure> {
        let channel = self
            .channel(address)
            .map_err(|e| Failure::Routing(e.to_string()))?;
        let mut admin = admin_client(channel, self.config.max_message_size);
        match tokio::time::timeout(timeout, admin.list_regions(ListRegionsRequest {})).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => {
                if is_transport_error(&status) {
                    let mut cache = self.cache.write();
                    if let Some(id) = cache.store_at(address) {
                        cache.mark_down(id, Instant::now());
                    }
                }
                let mut message = with_causes(&status);
                // What a TLS listener's answer looks like to plaintext HTTP/2: its
                // alert read as a frame, or, when it closes first, a broken pipe or
                // a reset on the client's next write (which of the two depends on
                // timing). A node that is down refuses the connection instead.
                let tls_like = ["frame with invalid size", "broken pipe", "connection reset"];
                if self.connector.is_none() && tls_like.iter().any(|t| message.contains(t)) {
                    message.push_str(" (the node may require TLS: set the client's CA, certificate and key, e.g. --ca-path, --cert-path, --key-path)");
                }
                Err(Failure::Rpc {
                    address: address.to_string(),
                    code: status.code(),
                    message,
                })
            }
            Err(_) => Err(Failure::Timeout {
                address: address.to_string(),
                after: timeout,
            }),
        }
    }
}
