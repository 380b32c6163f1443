//! Shoal's Rust client.
//!
//! A [`Client`] connects to a cluster's endpoints, learns the regions and store
//! addresses (Admin `ListRegions`), caches them, sends each request to the leader of
//! the key's region with the region's id and epoch, and on region errors refreshes the
//! cache and retries with backoff, all within one deadline per call.
//!
//! Layout:
//! - [`config`]: [`ClientConfig`], the deadlines, backoff and scan batch size.
//! - [`error`]: [`Error`] (what the caller sees, with the request and the last
//!   failure) and [`Failure`] (why one attempt failed).
//! - `region_cache`: regions by start key, leader per region, store addresses, stores
//!   that recently failed; never lets stale information replace newer.
//! - `discovery`: one lazily-connected gRPC channel per store; region reloads
//!   (coalesced across tasks).
//! - `request`: the request loop (route, send, react to region and transport errors,
//!   back off); its module docs give the retry policy.
//! - `client`: [`Client`] and the key-value calls (`get`, `put`, `delete`, `scan`,
//!   `batch_write`, `compare_and_swap`).
//! - `admin`: operator calls (`list_regions`, `status`, `region`, `split`,
//!   `split_region`, `merge`, `checksum`).
//!
//! ```no_run
//! # async fn example() -> shoal_client::Result<()> {
//! use shoal_client::{Client, ClientConfig};
//! let client = Client::connect(vec!["127.0.0.1:20160".into()], ClientConfig::default()).await?;
//! client.put(b"k", b"v").await?;
//! assert_eq!(client.get(b"k").await?, Some(b"v".to_vec()));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod admin;
mod batch;
mod client;
pub mod config;
pub mod directory;
mod discovery;
pub mod error;
mod membership;
mod region_cache;
mod request;
pub mod tls;

pub use client::{CasOutcome, Client, Mutation};
pub use config::ClientConfig;
pub use directory::Directory;
pub use error::{Error, Failure, RequestInfo, Result};
pub use membership::{CATCH_UP_TIMEOUT, JOINT_LEAVE_TIMEOUT};
pub use region_cache::CachedRegion;
pub use shoal_proto::adminpb::{ChecksumResponse, RegionInfo, StatusResponse};
pub use shoal_proto::metapb::{Peer, Region, RegionEpoch, Store};
pub use tls::TlsPaths;
