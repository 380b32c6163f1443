//! The node's configuration: command-line flags and an equivalent TOML file
//! (kebab-case keys, every field optional with the default below).
//!
//! ## Message size limits
//!
//! One number bounds every message: `raft-entry-max-size`, the largest Raft entry
//! (an encoded command). [`NodeConfig::max_message_size`] derives the gRPC limit
//! from it (the entry plus 1 MiB of headroom for headers, region keys and framing,
//! `shoal_client::config::max_message_size_for`), and the node's Kv, Admin and Raft
//! servers and its Raft transport all use that limit for decoding and encoding; the
//! client's `max_message_size` defaults to the same value for the default entry size.
//! [`NodeConfig::validate`] refuses a `max-value-size` whose put (plus a 4 KiB key
//! and encoding overhead) could not fit in one entry, so that every value the Kv
//! service accepts can replicate.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Longest key accepted, in bytes.
pub const MAX_KEY_SIZE: usize = 4096;

/// Bytes one put adds to its key and value once encoded as a Raft command (request
/// header with region id, epoch and peer; protobuf framing), generously rounded up.
pub const PUT_ENTRY_OVERHEAD: usize = 1024;

/// Store ids must be below this: region and peer ids are allocated as
/// `store_id << 40 | counter`, so a larger store id would lose bits and two stores
/// could hand out the same ids. 2^24.
pub const MAX_STORE_ID_EXCLUSIVE: u64 = 1 << 24;

/// How one node runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeConfig {
    /// This store's id, unique in the cluster. Default 0: store 1 for a new
    /// single-node cluster, a new id from the cluster directory when joining, the
    /// data directory's id on a restart. Required with `initial-cluster`;
    /// below 2^24.
    pub store_id: u64,
    /// Where the node keeps its data (`raft/`, `kv/` and Raft snapshot files in
    /// `snap/`). Default `./shoal-data`.
    pub data_dir: PathBuf,
    /// gRPC address serving Kv, Admin and Raft. Default `127.0.0.1:20160`.
    pub addr: String,
    /// HTTP status address (for metrics). Default `127.0.0.1:20180`.
    pub status_addr: String,
    /// The initial cluster, `ID=HOST:PORT,...`. Default: empty, meaning a
    /// single-node cluster of this store at `addr`. Used on first boot only.
    pub initial_cluster: String,
    /// A running cluster to join on first boot, `HOST:PORT,...` (any of its
    /// nodes): the node registers in the cluster directory, gets its store id
    /// (or has `store-id` confirmed) and starts with no region; replicas come to it
    /// with `shoal admin add-peer` or `move-replica`. Default: empty (bootstrap
    /// `initial-cluster` instead). Ignored on restarts.
    pub join: String,
    /// Addresses this node dials for some stores instead of the ones the cluster
    /// directory lists, `ID=HOST:PORT,...` (a network where stores reach each other
    /// at different addresses; the chaos suite routes every link through a proxy
    /// this way). Default: empty.
    pub peer_addresses: String,
    /// Regions bootstrapped on first boot, evenly splitting the key space.
    /// Default 1; 1..=65536. Used on first boot only.
    pub initial_regions: usize,
    /// Largest value accepted, in bytes. Default 1 MiB; 1..=64 MiB, and a put of a
    /// value this large with a 4 KiB key must fit in one Raft entry
    /// (`max-value-size + 4096 + 1024 <= raft-entry-max-size`).
    pub max_value_size: usize,
    /// Largest Raft entry (one encoded command), in bytes. Larger proposals are
    /// refused with `EntryTooLarge`; every gRPC message limit of the node is this
    /// plus 1 MiB (see the module docs). Default 8388608 (8 MiB);
    /// 65536..=268435456.
    pub raft_entry_max_size: usize,
    /// Most keys in one BatchWrite. Default 1024; >= 1.
    pub max_batch_keys: usize,
    /// Raft tick in milliseconds. Default 100; 1..=10000.
    pub raft_tick_ms: u64,
    /// Poller threads. Default: the machine's cores, at most 4.
    pub pollers: usize,
    /// Threads of the node's async runtime (gRPC services, the Raft transport,
    /// batched streams). Default 0: one per core (tokio's default; one thread
    /// instead of two measured no different on 2 cores: BENCHMARKS.md);
    /// 0..=1024.
    pub grpc_threads: usize,
    /// A region's leader splits it near its middle key once it holds more than this
    /// many bytes. Default 100663296 (96 MiB); >= 1.
    pub region_max_size: u64,
    /// ... or more than this many keys. Default 960000; >= 1.
    pub region_max_keys: u64,
    /// How often each leader checks its region's size, in milliseconds.
    /// Default 10000; >= raft-tick-ms.
    pub split_check_interval_ms: u64,
    /// How often each leader considers truncating its region's Raft log, in
    /// milliseconds. Default 10000; >= raft-tick-ms.
    pub raft_log_gc_tick_interval_ms: u64,
    /// A leader truncates its region's log only when at least this many entries,
    /// applied and held by every replica, can go. Default 50; >= 1.
    pub raft_log_gc_threshold: u64,
    /// Past this many entries in a region's log, its leader truncates even entries
    /// a slow or stopped replica still needs; that replica then catches up from a
    /// Raft snapshot. Default 73728; >= raft-log-gc-threshold.
    pub raft_log_gc_count_limit: u64,
    /// ... or past this many bytes of entries. Default 75497472 (72 MiB); >= 1.
    pub raft_log_gc_size_limit: u64,
    /// Raft snapshots this node sends at once (to all stores together); more wait.
    /// Default 2; 1..=64.
    pub snap_max_concurrent: usize,
    /// Bytes per second this node sends snapshots at, all of them together.
    /// Default 104857600 (100 MiB/s); >= 1048576.
    pub snap_max_bytes_per_sec: u64,
    /// Whether a leader lets a new commit index ride on its next append or
    /// heartbeat instead of sending it to every follower at once (followers apply
    /// up to a heartbeat later; reads are served by leaders). Default true.
    pub raft_skip_bcast_commit: bool,
    /// Whether the writes a region's leader receives in one poll round are
    /// proposed as one Raft entry (each caller still gets its own answer) instead
    /// of one entry each. Default true.
    pub raft_merge_writes: bool,
    /// Bytes of persisted Raft entries each region's replica keeps in memory.
    /// Default 4194304 (4 MiB); >= 1.
    pub entry_cache_max_bytes: u64,
    /// Bytes of persisted Raft entries all of the store's replicas keep in memory
    /// together. Default 268435456 (256 MiB); >= 1.
    pub entry_cache_store_max_bytes: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            store_id: 0,
            data_dir: PathBuf::from("shoal-data"),
            addr: "127.0.0.1:20160".into(),
            status_addr: "127.0.0.1:20180".into(),
            initial_cluster: String::new(),
            join: String::new(),
            peer_addresses: String::new(),
            initial_regions: 1,
            max_value_size: 1 << 20,
            raft_entry_max_size: shoal_client::config::DEFAULT_RAFT_ENTRY_MAX_SIZE,
            max_batch_keys: 1024,
            raft_tick_ms: 100,
            pollers: shoal_raftstore::Config::default().pollers,
            grpc_threads: 0,
            region_max_size: 96 << 20,
            region_max_keys: 960_000,
            split_check_interval_ms: 10_000,
            raft_log_gc_tick_interval_ms: 10_000,
            raft_log_gc_threshold: 50,
            raft_log_gc_count_limit: 72 << 10,
            raft_log_gc_size_limit: 72 << 20,
            snap_max_concurrent: 2,
            snap_max_bytes_per_sec: 100 << 20,
            raft_skip_bcast_commit: true,
            raft_merge_writes: true,
            entry_cache_max_bytes: 4 << 20,
            entry_cache_store_max_bytes: 256 << 20,
        }
    }
}

impl NodeConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The `peer-addresses` overrides: store id -> address.
    pub fn peer_address_overrides(&self) -> Result<std::collections::HashMap<u64, String>, String> {
        let mut out = std::collections::HashMap::new();
        for part in self
            .peer_addresses
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| format!("peer-addresses entry {part:?} is not ID=HOST:PORT"))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| format!("peer-addresses entry {part:?}: {id:?} is not a store id"))?;
            out.insert(id, addr.trim().to_string());
        }
        Ok(out)
    }

    /// The seeds of `join`, if any.
    pub fn join_seeds(&self) -> Vec<String> {
        self.join
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    /// The initial stores: `(id, address)`, this store included.
    pub fn initial_stores(&self) -> Result<Vec<(u64, String)>, String> {
        if self.initial_cluster.trim().is_empty() {
            return Ok(vec![(self.store_id.max(1), self.addr.clone())]);
        }
        if self.store_id == 0 {
            return Err("initial-cluster needs store-id: which of its stores this node is".into());
        }
        let mut out = Vec::new();
        for part in self
            .initial_cluster
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| format!("initial-cluster entry {part:?} is not ID=HOST:PORT"))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| format!("initial-cluster entry {part:?}: {id:?} is not a store id"))?;
            if id == 0 {
                return Err(format!(
                    "initial-cluster entry {part:?}: store ids start at 1"
                ));
            }
            if id >= MAX_STORE_ID_EXCLUSIVE {
                return Err(format!(
                    "initial-cluster entry {part:?}: store id {id} is too large; store ids \
                     must be below {MAX_STORE_ID_EXCLUSIVE} (2^24) because region and peer \
                     ids are allocated as store_id << 40"
                ));
            }
            if out.iter().any(|(i, _)| *i == id) {
                return Err(format!("initial-cluster names store {id} twice"));
            }
            out.push((id, addr.trim().to_string()));
        }
        if !out.iter().any(|(i, _)| *i == self.store_id) {
            return Err(format!(
                "initial-cluster does not include this store (id {})",
                self.store_id
            ));
        }
        Ok(out)
    }

    /// Checks every bound, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !self.join_seeds().is_empty() && !self.initial_cluster.trim().is_empty() {
            return Err(
                "join and initial-cluster exclude each other: join a running cluster, or \
                 bootstrap a new one"
                    .into(),
            );
        }
        if self.store_id >= MAX_STORE_ID_EXCLUSIVE {
            return Err(format!(
                "store-id {} is too large: store ids must be below {MAX_STORE_ID_EXCLUSIVE} \
                 (2^24) because region and peer ids are allocated as store_id << 40",
                self.store_id
            ));
        }
        self.addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("addr {:?} is not HOST:PORT: {e}", self.addr))?;
        self.status_addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("status-addr {:?} is not HOST:PORT: {e}", self.status_addr))?;
        if !(1..=65536).contains(&self.initial_regions) {
            return Err(format!(
                "initial-regions must be 1..=65536, got {}",
                self.initial_regions
            ));
        }
        if !(1..=64 << 20).contains(&self.max_value_size) {
            return Err(format!(
                "max-value-size must be 1..=67108864, got {}",
                self.max_value_size
            ));
        }
        if !(64 << 10..=256 << 20).contains(&self.raft_entry_max_size) {
            return Err(format!(
                "raft-entry-max-size must be 65536..=268435456, got {}",
                self.raft_entry_max_size
            ));
        }
        let largest_put = self.max_value_size + MAX_KEY_SIZE + PUT_ENTRY_OVERHEAD;
        if largest_put > self.raft_entry_max_size {
            return Err(format!(
                "max-value-size {} cannot replicate: a put of that size with a {MAX_KEY_SIZE}-byte \
                 key is up to {largest_put} bytes as a Raft entry, over raft-entry-max-size {}; \
                 lower max-value-size to at most {} or raise raft-entry-max-size",
                self.max_value_size,
                self.raft_entry_max_size,
                self.raft_entry_max_size
                    .saturating_sub(MAX_KEY_SIZE + PUT_ENTRY_OVERHEAD)
            ));
        }
        if self.max_batch_keys == 0 {
            return Err("max-batch-keys must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.raft_tick_ms) {
            return Err(format!(
                "raft-tick-ms must be 1..=10000, got {}",
                self.raft_tick_ms
            ));
        }
        if self.grpc_threads > 1024 {
            return Err(format!(
                "grpc-threads must be at most 1024, got {}",
                self.grpc_threads
            ));
        }
        if self.pollers == 0 {
            return Err("pollers must be at least 1".into());
        }
        if !(1..=64).contains(&self.snap_max_concurrent) {
            return Err(format!(
                "snap-max-concurrent must be 1..=64, got {}",
                self.snap_max_concurrent
            ));
        }
        if self.snap_max_bytes_per_sec < 1 << 20 {
            return Err(format!(
                "snap-max-bytes-per-sec must be at least 1048576 (1 MiB/s), got {}",
                self.snap_max_bytes_per_sec
            ));
        }
        self.raftstore().validate().map_err(|e| e.to_string())?;
        self.peer_address_overrides()?;
        for seed in self.join_seeds() {
            seed.parse::<SocketAddr>()
                .map_err(|e| format!("join address {seed:?} is not HOST:PORT: {e}"))?;
        }
        match self.join_seeds().is_empty() {
            true => self.initial_stores().map(|_| ()),
            false => Ok(()),
        }
    }

    /// The gRPC message limit (decoding and encoding) of every server and client of
    /// this node: `raft-entry-max-size` plus 1 MiB (see the module docs).
    pub fn max_message_size(&self) -> usize {
        shoal_client::config::max_message_size_for(self.raft_entry_max_size)
    }

    /// The async runtime's threads: `grpc-threads`, or one per core when it is 0.
    pub fn runtime_threads(&self) -> usize {
        match self.grpc_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The raftstore settings this node uses.
    pub fn raftstore(&self) -> shoal_raftstore::Config {
        shoal_raftstore::Config {
            raft_tick_interval: std::time::Duration::from_millis(self.raft_tick_ms),
            pollers: self.pollers,
            region_max_size: self.region_max_size,
            region_max_keys: self.region_max_keys,
            split_check_interval: std::time::Duration::from_millis(self.split_check_interval_ms),
            raft_entry_max_size: self.raft_entry_max_size as u64,
            raft_log_gc_tick_interval: std::time::Duration::from_millis(
                self.raft_log_gc_tick_interval_ms,
            ),
            raft_log_gc_threshold: self.raft_log_gc_threshold,
            raft_log_gc_count_limit: self.raft_log_gc_count_limit,
            raft_log_gc_size_limit: self.raft_log_gc_size_limit,
            snap_dir: Some(self.data_dir.join("snap")),
            entry_cache_max_bytes: self.entry_cache_max_bytes,
            raft_skip_bcast_commit: self.raft_skip_bcast_commit,
            raft_merge_writes: self.raft_merge_writes,
            entry_cache_store_max_bytes: self.entry_cache_store_max_bytes,
            ..shoal_raftstore::Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_make_a_single_node_cluster() {
        let c = NodeConfig::default();
        c.validate().unwrap();
        assert_eq!(
            c.initial_stores().unwrap(),
            vec![(1, "127.0.0.1:20160".to_string())]
        );
    }

    #[test]
    fn toml_is_kebab_case_and_bad_input_is_named() {
        let c: NodeConfig =
            toml::from_str("store-id = 2\ninitial-cluster = \"1=127.0.0.1:1,2=127.0.0.1:2\"\n")
                .unwrap();
        assert_eq!(c.store_id, 2);
        assert_eq!(c.initial_stores().unwrap().len(), 2);
        assert!(toml::from_str::<NodeConfig>("no-such-field = 1").is_err());
        let bad = NodeConfig {
            store_id: 1,
            initial_cluster: "1=a,1=b".into(),
            ..NodeConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("twice"));
        let bad = NodeConfig {
            store_id: 1,
            initial_cluster: "2=127.0.0.1:1".into(),
            ..NodeConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("does not include"));
    }

    #[test]
    fn log_gc_settings_are_read_and_checked() {
        let c: NodeConfig =
            toml::from_str("raft-log-gc-tick-interval-ms = 2000\nraft-log-gc-threshold = 7\n")
                .unwrap();
        let rs = c.raftstore();
        assert_eq!(
            rs.raft_log_gc_tick_interval,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(rs.raft_log_gc_threshold, 7);
        let bad = NodeConfig {
            raft_log_gc_tick_interval_ms: 10,
            ..NodeConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("raft-log-gc-tick-interval"));
        let bad = NodeConfig {
            raft_log_gc_threshold: 0,
            ..NodeConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("raft-log-gc-threshold"));
        let c: NodeConfig = toml::from_str("entry-cache-store-max-bytes = 1024\n").unwrap();
        assert_eq!(c.raftstore().entry_cache_store_max_bytes, 1024);
        let bad = NodeConfig {
            entry_cache_max_bytes: 0,
            ..NodeConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("entry-cache-max-bytes"));
    }

    #[test]
    fn store_ids_past_2_pow_24_are_refused() {
        let ok = NodeConfig {
            store_id: MAX_STORE_ID_EXCLUSIVE - 1,
            ..NodeConfig::default()
        };
        ok.validate().unwrap();
        let bad = NodeConfig {
            store_id: MAX_STORE_ID_EXCLUSIVE,
            ..NodeConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("store-id 16777216 is too large"), "{err}");
        assert!(err.contains("store_id << 40"), "{err}");
        let bad = NodeConfig {
            store_id: 1,
            initial_cluster: format!("1=127.0.0.1:1,{}=127.0.0.1:2", 1u64 << 30),
            ..NodeConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("store id 1073741824 is too large"), "{err}");
    }

    #[test]
    fn joining_excludes_an_initial_cluster_and_needs_addresses() {
        let join = NodeConfig {
            join: "127.0.0.1:1, 127.0.0.1:2".into(),
            ..NodeConfig::default()
        };
        join.validate().unwrap();
        assert_eq!(join.join_seeds(), vec!["127.0.0.1:1", "127.0.0.1:2"]);
        let both = NodeConfig {
            store_id: 1,
            initial_cluster: "1=127.0.0.1:1".into(),
            ..join.clone()
        };
        assert!(both.validate().unwrap_err().contains("exclude each other"));
        let bad = NodeConfig {
            join: "nowhere".into(),
            ..NodeConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("join address"));
        let unnamed = NodeConfig {
            initial_cluster: "1=127.0.0.1:1,2=127.0.0.1:2".into(),
            ..NodeConfig::default()
        };
        assert!(unnamed.validate().unwrap_err().contains("needs store-id"));
    }

    #[test]
    fn max_value_size_must_fit_in_one_raft_entry() {
        let c = NodeConfig::default();
        assert_eq!(c.max_message_size(), (8 << 20) + (1 << 20));
        assert_eq!(c.raftstore().raft_entry_max_size, 8 << 20);
        // 8 MiB values cannot replicate in 8 MiB entries.
        let bad = NodeConfig {
            max_value_size: 8 << 20,
            ..NodeConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(
            err.contains("max-value-size 8388608 cannot replicate"),
            "{err}"
        );
        assert!(err.contains("raft-entry-max-size"), "{err}");
        // ... but fit in 16 MiB entries.
        let ok = NodeConfig {
            max_value_size: 8 << 20,
            raft_entry_max_size: 16 << 20,
            ..NodeConfig::default()
        };
        ok.validate().unwrap();
        let bad = NodeConfig {
            raft_entry_max_size: 1 << 10,
            ..NodeConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("raft-entry-max-size"));
        let toml: NodeConfig =
            toml::from_str("raft-entry-max-size = 1048576\nmax-value-size = 1000000\n").unwrap();
        assert_eq!(toml.raft_entry_max_size, 1 << 20);
        toml.validate().unwrap();
    }
}
