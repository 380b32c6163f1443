//! The node's configuration: command-line flags and an equivalent TOML file
//! (kebab-case keys, every field optional with the default below).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Longest key accepted, in bytes.
pub const MAX_KEY_SIZE: usize = 4096;

/// How one node runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeConfig {
    /// This store's id, unique in the cluster. Default 1; >= 1.
    pub store_id: u64,
    /// Where the node keeps its data (`raft/` and `kv/`). Default `./shoal-data`.
    pub data_dir: PathBuf,
    /// gRPC address serving Kv, Admin and Raft. Default `127.0.0.1:20160`.
    pub addr: String,
    /// HTTP status address (for metrics). Default `127.0.0.1:20180`.
    pub status_addr: String,
    /// The initial cluster, `ID=HOST:PORT,...`. Default: empty, meaning a
    /// single-node cluster of this store at `addr`. Used on first boot only.
    pub initial_cluster: String,
    /// Regions bootstrapped on first boot, evenly splitting the key space.
    /// Default 1; 1..=65536. Used on first boot only.
    pub initial_regions: usize,
    /// Largest value accepted, in bytes. Default 1 MiB; 1..=64 MiB.
    pub max_value_size: usize,
    /// Most keys in one BatchWrite. Default 1024; >= 1.
    pub max_batch_keys: usize,
    /// Raft tick in milliseconds. Default 100; 1..=10000.
    pub raft_tick_ms: u64,
    /// Poller threads. Default: the machine's cores, at most 4.
    pub pollers: usize,
    /// A region's leader splits it near its middle key once it holds more than this
    /// many bytes. Default 100663296 (96 MiB); >= 1.
    pub region_max_size: u64,
    /// ... or more than this many keys. Default 960000; >= 1.
    pub region_max_keys: u64,
    /// How often each leader checks its region's size, in milliseconds.
    /// Default 10000; >= raft-tick-ms.
    pub split_check_interval_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            store_id: 1,
            data_dir: PathBuf::from("shoal-data"),
            addr: "127.0.0.1:20160".into(),
            status_addr: "127.0.0.1:20180".into(),
            initial_cluster: String::new(),
            initial_regions: 1,
            max_value_size: 1 << 20,
            max_batch_keys: 1024,
            raft_tick_ms: 100,
            pollers: shoal_raftstore::Config::default().pollers,
            region_max_size: 96 << 20,
            region_max_keys: 960_000,
            split_check_interval_ms: 10_000,
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

    /// The initial stores: `(id, address)`, this store included.
    pub fn initial_stores(&self) -> Result<Vec<(u64, String)>, String> {
        if self.initial_cluster.trim().is_empty() {
            return Ok(vec![(self.store_id, self.addr.clone())]);
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
        if self.store_id == 0 {
            return Err("store-id must be at least 1".into());
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
        if self.max_batch_keys == 0 {
            return Err("max-batch-keys must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.raft_tick_ms) {
            return Err(format!(
                "raft-tick-ms must be 1..=10000, got {}",
                self.raft_tick_ms
            ));
        }
        if self.pollers == 0 {
            return Err("pollers must be at least 1".into());
        }
        self.raftstore().validate()?;
        self.initial_stores().map(|_| ())
    }

    /// The raftstore settings this node uses.
    pub fn raftstore(&self) -> shoal_raftstore::Config {
        shoal_raftstore::Config {
            raft_tick_interval: std::time::Duration::from_millis(self.raft_tick_ms),
            pollers: self.pollers,
            region_max_size: self.region_max_size,
            region_max_keys: self.region_max_keys,
            split_check_interval: std::time::Duration::from_millis(self.split_check_interval_ms),
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
            initial_cluster: "1=a,1=b".into(),
            ..NodeConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("twice"));
        let bad = NodeConfig {
            initial_cluster: "2=127.0.0.1:1".into(),
            ..NodeConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("does not include"));
    }
}
