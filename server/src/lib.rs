//! Shoal's node: the gRPC services, the node's configuration and start-up, and
//! the `shoal` command-line binary (`src/bin/shoal.rs`).
//!
//! Layout:
//! - [`config`]: [`NodeConfig`](config::NodeConfig), flags and TOML, with defaults.
//! - [`node`]: [`node::run`] opens the data dir, bootstraps on first boot, starts the
//!   raftstore and serves until a shutdown future completes (tests pass their own).
//! - [`kv_service`], [`admin_service`], [`raft_service`]: the tonic services.
//! - `cmd_status`: the one conversion of a store's `CmdError` into a gRPC answer
//!   (region error in the response, or status), used by the Kv and Admin services.
//! - `message_limit`: a tower layer that names the limit an oversized request hit.
//! - [`transport`]: the Raft transport's sending side, one stream per remote store;
//!   `snapshot_sender`: its snapshots, each on a connection of its own, limited.
//! - [`status`]: the status HTTP endpoint (`/metrics`, `/health`, `/ready`);
//!   [`request_metrics`]: Kv request durations by method and outcome.
//! - [`logging`]: `--log-level`, `--log-format`, `--log-file`.
//! - [`cli`]: the `shoal kv` / `shoal admin` commands, on `shoal-client`.
//! - [`playground`]: `shoal playground`, a local cluster of node processes.

pub mod admin_service;
pub mod cli;
mod cmd_status;
pub mod config;
pub mod directory;
pub mod kv_batch;
pub mod kv_service;
pub mod logging;
mod message_limit;
pub mod node;
pub mod playground;
pub mod raft_service;
pub mod request_metrics;
pub mod security;
mod snapshot_sender;
pub mod status;
pub mod transport;
