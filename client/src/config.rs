//! The client's knobs: deadlines, backoff and batch sizes.
//!
//! Every request runs under one deadline (`request_timeout`). Inside it, each RPC
//! attempt is bounded by `rpc_timeout`, and failed attempts are separated by an
//! exponential backoff (`initial_backoff`, doubling up to `max_backoff`, with jitter).
//!
//! ## Message size limits
//!
//! Every gRPC message limit in Shoal derives from one number, the node's
//! `raft-entry-max-size` (the largest Raft entry, default 8 MiB): a node's Kv, Admin
//! and Raft servers, its Raft transport, this client and the load generator all use
//! [`max_message_size_for`]`(raft-entry-max-size)` = the entry limit plus
//! [`MESSAGE_HEADROOM`] (1 MiB for headers, region keys and framing). Anything the API
//! accepts therefore fits in one entry, and one entry (with its headers) in one
//! message. `ClientConfig::max_message_size` defaults to the value for the node's
//! default (9 MiB); set it from the cluster's `raft-entry-max-size` when that differs.

use std::time::Duration;

/// Room a gRPC message has beyond one Raft entry: request and Raft headers, region
/// keys (up to 4 KiB each), and protobuf framing. 1 MiB.
pub const MESSAGE_HEADROOM: usize = 1 << 20;

/// The node's default `raft-entry-max-size`: 8 MiB.
pub const DEFAULT_RAFT_ENTRY_MAX_SIZE: usize = 8 << 20;

/// The gRPC message limit (decoding and encoding) that goes with a cluster whose
/// `raft-entry-max-size` is `raft_entry_max_size`: that plus [`MESSAGE_HEADROOM`].
pub const fn max_message_size_for(raft_entry_max_size: usize) -> usize {
    raft_entry_max_size + MESSAGE_HEADROOM
}

/// Parses a duration as Shoal's command-line tools take it: "30s", "500ms", "2m",
/// "1h", "1.5" (a bare number is seconds), from 0 to 7 days.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=86_400.0 * 7.0).contains(&secs) {
        return Err(format!("{s:?} is out of range (0 to 7 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Configuration of a [`Client`](crate::Client). Build it with [`Default`] and
/// override fields; [`ClientConfig::validate`] (called by `Client::connect`) says
/// what is wrong with a bad one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Deadline of one client call (`get`, `put`, ... including all its retries, and
    /// of `Client::connect`'s region discovery). Default 10 s. Must be > 0.
    pub request_timeout: Duration,
    /// Upper bound of one RPC attempt; a slower attempt counts as failed and is
    /// retried (on another peer) within `request_timeout`. Default 5 s. Must be > 0.
    pub rpc_timeout: Duration,
    /// First backoff delay after a retryable failure. Default 10 ms. Must be > 0.
    pub initial_backoff: Duration,
    /// The backoff doubles after each failure up to this. Default 1 s.
    /// Must be >= `initial_backoff`.
    pub max_backoff: Duration,
    /// Timeout of establishing a TCP/HTTP2 connection to a store. Default 3 s. Must be > 0.
    pub connect_timeout: Duration,
    /// After a transport failure, a store is avoided (when another peer can be tried)
    /// for this long, or until it answers again. Default 2 s.
    pub store_down_cooldown: Duration,
    /// Pairs asked for per `Scan` RPC when walking regions. Default 256. Must be > 0.
    pub scan_batch_size: u32,
    /// Largest gRPC message the client sends or accepts, in bytes. Default
    /// `max_message_size_for(DEFAULT_RAFT_ENTRY_MAX_SIZE)` = 9 MiB, the limit of a
    /// node with the default `raft-entry-max-size` (see the module docs). A request
    /// that would be larger is refused
    /// before it is sent (see [`Error::InvalidArgument`](crate::Error::InvalidArgument)).
    /// Must be >= 64 KiB.
    pub max_message_size: usize,
    /// Reach the system key range (keys from `FF FF FF FF` on, the cluster
    /// directory: `shoal_proto::system`). For Shoal's own nodes and tools; a user's
    /// client leaves it off and such keys are refused. Default false.
    pub system: bool,
    /// Send gets, puts, deletes, compare-and-swaps, batch writes and scans on one
    /// batched stream per store (`Kv.BatchCommands`: many requests per frame, far
    /// less gRPC work per request) instead of one unary call each. The retry policy
    /// is the same either way; which failures leave a write's outcome unknown
    /// differs in detail (the `batch` module docs: e.g. every request in flight on
    /// a stream that breaks). Falls back to unary calls for a store without the
    /// stream. Default true.
    pub batch_stream: bool,
    /// Mutual TLS: the CA that signs the cluster's certificates and this client's
    /// certificate and key (`crate::tls`). Required by a cluster whose nodes have
    /// TLS on; `None` dials in plaintext. The files are read again when they change.
    /// Default `None`.
    pub tls: Option<crate::tls::TlsPaths>,
    /// A TLS connector already built, dialed through instead of one made from
    /// `tls`: a node's own (it checks the node's certificate on every reload as
    /// the node does), so that a node's client presents exactly the identity the
    /// node serves with. Tools leave it `None`. Default `None`.
    pub tls_connector: Option<crate::tls::TlsConnector>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            store_down_cooldown: Duration::from_secs(2),
            scan_batch_size: 256,
            max_message_size: max_message_size_for(DEFAULT_RAFT_ENTRY_MAX_SIZE),
            system: false,
            batch_stream: true,
            tls: None,
            tls_connector: None,
        }
    }
}

impl ClientConfig {
    /// Checks the bounds documented on each field; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("request_timeout", self.request_timeout),
            ("rpc_timeout", self.rpc_timeout),
            ("initial_backoff", self.initial_backoff),
            ("connect_timeout", self.connect_timeout),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(format!("{name} must be > 0"));
            }
        }
        if self.max_backoff < self.initial_backoff {
            return Err(format!(
                "max_backoff ({:?}) must be >= initial_backoff ({:?})",
                self.max_backoff, self.initial_backoff
            ));
        }
        if self.scan_batch_size == 0 {
            return Err("scan_batch_size must be > 0".to_string());
        }
        if self.max_message_size < 64 << 10 {
            return Err(format!(
                "max_message_size must be >= 65536 bytes, got {}",
                self.max_message_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("10d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("8000h")
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn default_is_valid() {
        assert_eq!(ClientConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_bad_field() {
        let cfg = ClientConfig {
            max_backoff: Duration::from_millis(1),
            ..ClientConfig::default()
        };
        assert!(cfg.validate().unwrap_err().contains("max_backoff"));
        let cfg = ClientConfig {
            scan_batch_size: 0,
            ..ClientConfig::default()
        };
        assert!(cfg.validate().unwrap_err().contains("scan_batch_size"));
        let cfg = ClientConfig {
            request_timeout: Duration::ZERO,
            ..ClientConfig::default()
        };
        assert!(cfg.validate().unwrap_err().contains("request_timeout"));
    }
}
