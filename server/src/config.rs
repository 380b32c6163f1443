//! The node's configuration: one list of settings ([`SETTINGS`]), each read from a
//! TOML file (`--config`), a `shoal node` flag and a default, under one name: the
//! TOML key and the flag are the field's name in kebab-case (`max-value-size`,
//! `--max-value-size`), and `docs/config.md` lists them under that name (a test
//! checks the three agree).
//!
//! ## Where a setting's value comes from
//!
//! Nearest first: the flag, then the config file, then the default. The logging
//! settings (`log-level`, `log-format`, `log-file`) are global flags of every
//! command (`crate::logging`), and `log-level` also honours `RUST_LOG` between
//! the flag and the file. `shoal node --print-config` prints the result ([`NodeArgs`]
//! merges it, [`NodeConfig::to_commented_toml`] prints it) in a form `--config`
//! reads back.
//!
//! The settings are declared once, by the `settings!` macro below: it makes the
//! struct's fields (with their docs and defaults), [`SETTINGS`] (the same docs, for
//! `--print-config` and the flags' help) and the flags, so a new setting gets its
//! flag and its printed comment by being declared.
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

use clap::builder::ValueParser;
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde::{Deserialize, Serialize};

use crate::logging::{self, LogArgs, LogFormat, LogSettings};

/// Longest key accepted, in bytes.
pub const MAX_KEY_SIZE: usize = 4096;

/// Bytes one put adds to its key and value once encoded as a Raft command (request
/// header with region id, epoch and peer; protobuf framing), generously rounded up.
pub const PUT_ENTRY_OVERHEAD: usize = 1024;

/// Store ids must be below this: region and peer ids are allocated as
/// `store_id << 40 | counter`, so a larger store id would lose bits and two stores
/// could hand out the same ids. 2^24.
pub const MAX_STORE_ID_EXCLUSIVE: u64 = 1 << 24;

/// The settings whose flags are global flags of every `shoal` command
/// ([`LogArgs`]) rather than flags of `shoal node`.
pub const GLOBAL_FLAG_SETTINGS: [&str; 3] = ["log-level", "log-format", "log-file"];

/// One setting of [`NodeConfig`].
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The field's name (snake_case).
    pub field: &'static str,
    /// What the setting means and its bounds: the field's doc, one line per line
    /// (each with the leading space of `/// `).
    pub doc: &'static str,
}

impl Setting {
    /// Its TOML key and flag name: the field's name in kebab-case.
    pub fn key(&self) -> String {
        self.field.replace('_', "-")
    }

    /// Its doc as one paragraph.
    pub fn meaning(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Whether `shoal node` has a flag of its own for it (the others are the global
    /// logging flags).
    pub fn is_node_flag(&self) -> bool {
        !GLOBAL_FLAG_SETTINGS.contains(&self.key().as_str())
    }
}

/// Declares the settings: `/// doc` lines, then `field: Type = default,`. Makes
/// [`NodeConfig`] and its `Default`, [`SETTINGS`], `NodeConfig::apply_flags` and
/// `setting_flags`.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $field:ident: $ty:ty = $default:expr, )+) => {
        /// How one node runs: every setting of `shoal node`, as read from its config
        /// file and flags (see the module docs and `docs/config.md`).
        #[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
        #[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
        pub struct NodeConfig {
            $(
                $(#[doc = $doc])+
                #[doc = ""]
                #[doc = concat!("Default: `", stringify!($default), "`.")]
                pub $field: $ty,
            )+
        }

        impl Default for NodeConfig {
            fn default() -> Self {
                NodeConfig { $( $field: $default, )+ }
            }
        }

        /// Every setting of [`NodeConfig`], in the order of its fields.
        pub const SETTINGS: &[Setting] = &[
            $( Setting { field: stringify!($field), doc: concat!($($doc, "\n"),+) }, )+
        ];

        impl NodeConfig {
            /// Every setting must be a TOML value, so that `--print-config` can
            /// print it and `--config` read it back: TOML's integers are 64-bit
            /// signed, so a flag's u64 above `i64::MAX` is refused, by name.
            fn check_toml_values(&self) -> Result<(), String> {
                $(
                    if toml::Value::try_from(&self.$field).is_err() {
                        return Err(format!(
                            "{} is out of range: a setting's integer must be at most {} \
                             (TOML's largest)",
                            stringify!($field).replace('_', "-"),
                            i64::MAX
                        ));
                    }
                )+
                Ok(())
            }

            /// Sets each setting `matches` has a flag value for.
            fn apply_flags(&mut self, matches: &ArgMatches) {
                $(
                    let key = stringify!($field).replace('_', "-");
                    if !GLOBAL_FLAG_SETTINGS.contains(&key.as_str()) {
                        if let Some(v) = matches.get_one::<$ty>(&key) {
                            self.$field = v.clone();
                        }
                    }
                )+
            }
        }

        /// The `shoal node` flag of every setting that has one, parsing its type.
        fn setting_flags() -> Vec<Arg> {
            let parsers: Vec<ValueParser> = vec![$( clap::value_parser!($ty).into(), )+];
            let defaults = NodeConfig::default().toml_table();
            SETTINGS
                .iter()
                .zip(parsers)
                .filter(|(s, _)| s.is_node_flag())
                .map(|(s, parser)| {
                    let key = s.key();
                    let default = flag_default(&defaults[&key]);
                    Arg::new(key.clone())
                        .long(key.clone())
                        .help_heading("Settings (each also a key of --config)")
                        .value_name(key.to_uppercase().replace('-', "_"))
                        .value_parser(parser)
                        .help(format!("{} [default: {default}]", s.meaning()))
                })
                .collect()
        }
    };
}

settings! {
    /// This store's id, unique in the cluster; below 2^24. 0: store 1 for a new
    /// single-node cluster, a new id from the cluster directory when joining, the
    /// data directory's id on a restart. Required with `initial-cluster`.
    store_id: u64 = 0,
    /// Where the node keeps its data (`raft/`, `kv/`, and Raft snapshot files in
    /// `snap/`).
    data_dir: PathBuf = PathBuf::from("shoal-data"),
    /// gRPC address serving Kv, Admin and Raft, HOST:PORT.
    addr: String = "127.0.0.1:20160".into(),
    /// HTTP status address (`/metrics`), HOST:PORT.
    status_addr: String = "127.0.0.1:20180".into(),
    /// The initial cluster, `ID=HOST:PORT,...`; empty: a single-node cluster of this
    /// store at `addr`. Used on first boot only.
    initial_cluster: String = String::new(),
    /// A running cluster to join on first boot, `HOST:PORT,...` (any of its nodes):
    /// the node registers in the cluster directory, gets its store id (or has
    /// `store-id` confirmed) and starts with no region; replicas come to it with
    /// `shoal admin add-peer` or `move-replica`. Empty: bootstrap `initial-cluster`
    /// instead. Ignored on restarts.
    join: String = String::new(),
    /// Addresses this node dials for some stores instead of the ones the cluster
    /// directory lists, `ID=HOST:PORT,...` (a network where stores reach each other
    /// at different addresses; the chaos suite routes every link through a proxy
    /// this way). Empty: none.
    peer_addresses: String = String::new(),
    /// Regions bootstrapped on first boot, evenly splitting the key space;
    /// 1..=1048576. Used on first boot only.
    initial_regions: usize = 1,
    /// Largest value accepted, in bytes; 1..=64 MiB, and a put of a value this large
    /// with a 4 KiB key must fit in one Raft entry
    /// (`max-value-size + 4096 + 1024 <= raft-entry-max-size`).
    max_value_size: usize = 1 << 20,
    /// Largest Raft entry (one encoded command), in bytes; 65536..=268435456. Larger
    /// proposals are refused with `EntryTooLarge`; every gRPC message limit of the
    /// node is this plus 1 MiB.
    raft_entry_max_size: usize = shoal_client::config::DEFAULT_RAFT_ENTRY_MAX_SIZE,
    /// Most keys in one BatchWrite; >= 1.
    max_batch_keys: usize = 1024,
    /// Raft tick in milliseconds (elections and heartbeats are counted in ticks);
    /// 1..=10000.
    raft_tick_ms: u64 = 100,
    /// Poller threads (they run the regions' Raft state machines); 0: the machine's
    /// cores, at most 4; 0..=256.
    pollers: usize = 0,
    /// Threads of the node's async runtime (gRPC services, the Raft transport,
    /// batched streams); 0: one per core (tokio's default; one thread instead of
    /// two measured no different on 2 cores: BENCHMARKS.md); 0..=1024.
    grpc_threads: usize = 0,
    /// A region's leader splits it near its middle key once it holds more than this
    /// many bytes; >= 1.
    region_max_size: u64 = 96 << 20,
    /// ... or more than this many keys; >= 1.
    region_max_keys: u64 = 960_000,
    /// How often each leader checks its region's size, in milliseconds;
    /// >= raft-tick-ms.
    split_check_interval_ms: u64 = 10_000,
    /// How often each leader considers truncating its region's Raft log, in
    /// milliseconds; >= raft-tick-ms.
    raft_log_gc_tick_interval_ms: u64 = 10_000,
    /// A leader truncates its region's log only when at least this many entries,
    /// applied and held by every replica, can go; >= 1.
    raft_log_gc_threshold: u64 = 50,
    /// Past this many entries in a region's log, its leader truncates even entries
    /// a slow or stopped replica still needs; that replica then catches up from a
    /// Raft snapshot; >= raft-log-gc-threshold.
    raft_log_gc_count_limit: u64 = 72 << 10,
    /// ... or past this many bytes of entries; >= 1.
    raft_log_gc_size_limit: u64 = 72 << 20,
    /// How long an awake replica hears from no leader before it asks the region's
    /// other replicas whether it still belongs, in milliseconds (one removed while
    /// cut off is told so and drops its data); a dormant replica never asks;
    /// >= two election timeouts (20 raft ticks).
    raft_stale_peer_check_interval_ms: u64 = 300_000,
    /// Raft snapshots this node sends at once (to all stores together); more wait;
    /// 1..=64.
    snap_max_concurrent: usize = 2,
    /// Bytes per second this node sends snapshots at, all of them together;
    /// >= 1048576.
    snap_max_bytes_per_sec: u64 = 100 << 20,
    /// Whether a leader lets a new commit index ride on its next append or heartbeat
    /// instead of sending it to every follower at once (followers apply up to a
    /// heartbeat later; reads are served by leaders).
    raft_skip_bcast_commit: bool = true,
    /// Whether idle regions go dormant: no ticks, no heartbeats until a request or
    /// message wakes them; one heartbeat per store pair tells their followers the
    /// leader's store is alive (`docs/dormancy.md`).
    dormant_regions: bool = true,
    /// Dormant peers a store wakes per second when many must wake at once: its
    /// regions at start-up (they start dormant and elect as they wake) and a
    /// silent store's regions; a request or message wakes one at once.
    dormant_wake_rate: u32 = 3000,
    /// Whether the writes a region's leader receives in one poll round are proposed
    /// as one Raft entry (each caller still gets its own answer) instead of one
    /// entry each.
    raft_merge_writes: bool = true,
    /// Bytes of persisted Raft entries each region's replica keeps in memory; >= 1.
    entry_cache_max_bytes: u64 = 4 << 20,
    /// Bytes of persisted Raft entries all of the store's replicas keep in memory
    /// together; >= 1.
    entry_cache_store_max_bytes: u64 = 256 << 20,
    /// Mutual TLS: the PEM file of the certificate authority that signs every
    /// certificate of the cluster. With `cert-path` and `key-path`, the node serves
    /// TLS only, to dialers with a certificate from this CA, and dials other stores
    /// with its own (README: Security). Empty, with the other two: plaintext.
    ca_path: PathBuf = PathBuf::new(),
    /// The node's certificate (PEM): a store certificate, with the URI SAN
    /// `shoal://store/<store-id>` and the host it serves at (`shoal cert` makes
    /// one). Read again when it changes, at most every 2 s.
    cert_path: PathBuf = PathBuf::new(),
    /// The certificate's private key (PEM).
    key_path: PathBuf = PathBuf::new(),
    /// Client certificates' common names that Kv and Admin take, comma-separated;
    /// empty: any certificate the CA signed. Store certificates are always taken;
    /// only they may speak Raft. Needs TLS on.
    cert_allowed_cn: String = String::new(),
    /// Which events are logged: a tracing filter, `LEVEL` or
    /// `LEVEL,TARGET=LEVEL,...` (e.g. `info,shoal_raftstore=debug`). `RUST_LOG`
    /// overrides it, and the global flag `--log-level` overrides both.
    log_level: String = logging::DEFAULT_LOG_LEVEL.into(),
    /// `text` (one readable line per event) or `json` (one JSON object per line).
    /// The global flag `--log-format` overrides it.
    log_format: LogFormat = LogFormat::Text,
    /// The file log lines are appended to (created if missing); empty: stderr. The
    /// global flag `--log-file` overrides it.
    log_file: PathBuf = PathBuf::new(),
}

/// A default as a flag's help shows it: TOML, without the quotes of a non-empty
/// string.
fn flag_default(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) if !s.is_empty() => s.clone(),
        v => v.to_string(),
    }
}

/// The flags of `shoal node`: `--config`, `--print-config`, and one flag per
/// setting, named as its TOML key (the logging settings are global flags, in
/// [`LogArgs`]). A flag overrides the config file, which overrides the defaults.
#[derive(Clone, Debug)]
pub struct NodeArgs {
    /// `--config`: the TOML file.
    pub config: Option<PathBuf>,
    /// `--print-config`: print the effective configuration and exit.
    pub print_config: bool,
    /// The settings given as flags.
    flags: ArgMatches,
}

impl NodeArgs {
    /// The node's configuration: the config file (or the defaults), the flags over
    /// it, and the logging settings from `log` and `rust_log` (`RUST_LOG`) as
    /// [`LogArgs::apply`] orders them; validated.
    pub fn into_config(
        &self,
        log: &LogArgs,
        rust_log: Option<String>,
    ) -> Result<NodeConfig, String> {
        let mut c = match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        c.apply_flags(&self.flags);
        c.set_log_settings(log.apply(c.log_settings(), rust_log));
        c.validate()?;
        Ok(c)
    }
}

impl clap::FromArgMatches for NodeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(NodeArgs {
            config: matches.get_one::<PathBuf>("config").cloned(),
            print_config: matches.get_flag("print-config"),
            flags: matches.clone(),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for NodeArgs {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                    "A TOML config file: the settings below as keys of the same names \
                     (docs/config.md); each flag overrides it",
                ),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help(
                    "Print the effective configuration (config file, flags and defaults \
                     merged) as TOML with a comment per setting, and exit without \
                     starting the node; --config reads it back",
                ),
        )
        .args(setting_flags())
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl NodeConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The settings as a TOML table, by key.
    fn toml_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("every setting is a TOML value")
    }

    /// The whole configuration as TOML, every setting with its meaning and default
    /// as comments, in the order of [`SETTINGS`]: what `shoal node --print-config`
    /// prints, and what `--config` reads back to an equal configuration. Fails only
    /// for a path that is not UTF-8 (TOML cannot hold it).
    pub fn to_commented_toml(&self) -> Result<String, String> {
        for (key, path) in [("data-dir", &self.data_dir), ("log-file", &self.log_file)] {
            if path.to_str().is_none() {
                return Err(format!("{key} {} is not UTF-8", path.display()));
            }
        }
        let values = self.toml_table();
        let defaults = NodeConfig::default().toml_table();
        let mut out = String::from(
            "# shoal node: the effective configuration (config file, flags and defaults\n\
             # merged). `shoal node --config FILE` reads it back; docs/config.md lists\n\
             # every setting.\n",
        );
        for s in SETTINGS {
            let key = s.key();
            out.push('\n');
            for line in s.doc.lines() {
                out.push_str(&format!("#{line}\n"));
            }
            out.push_str(&format!("# Default: {}\n", defaults[&key]));
            out.push_str(&format!("{key} = {}\n", values[&key]));
        }
        Ok(out)
    }

    /// The logging settings (`log-level`, `log-format`, `log-file`).
    pub fn log_settings(&self) -> LogSettings {
        LogSettings {
            level: self.log_level.clone(),
            format: self.log_format,
            file: self.log_file.clone(),
        }
    }

    fn set_log_settings(&mut self, s: LogSettings) {
        self.log_level = s.level;
        self.log_format = s.format;
        self.log_file = s.file;
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

    /// The TLS files when `ca-path`, `cert-path` and `key-path` are all set, `None`
    /// when none is; an error for some but not all.
    pub fn tls_paths(&self) -> Result<Option<shoal_client::TlsPaths>, String> {
        let path = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| p.clone());
        shoal_client::TlsPaths::from_parts(
            path(&self.ca_path),
            path(&self.cert_path),
            path(&self.key_path),
        )
    }

    /// `cert-allowed-cn` as a list.
    pub fn allowed_cn(&self) -> Vec<String> {
        self.cert_allowed_cn
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
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
        self.check_toml_values()?;
        if self.tls_paths()?.is_none() && !self.allowed_cn().is_empty() {
            return Err(
                "cert-allowed-cn is set but TLS is off: set ca-path, cert-path and key-path".into(),
            );
        }
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
        if !(1..=shoal_raftstore::bootstrap::MAX_INITIAL_REGIONS).contains(&self.initial_regions) {
            return Err(format!(
                "initial-regions must be 1..={}, got {}",
                shoal_raftstore::bootstrap::MAX_INITIAL_REGIONS,
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
        // The batch system's bound (`shoal_router::MAX_POLLERS`): more threads only
        // add contention.
        if self.pollers > 256 {
            return Err(format!("pollers must be 0..=256, got {}", self.pollers));
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
        logging::filter(&self.log_level)?;
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
            pollers: match self.pollers {
                0 => shoal_raftstore::Config::default().pollers,
                n => n,
            },
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
            raft_stale_peer_check_interval: std::time::Duration::from_millis(
                self.raft_stale_peer_check_interval_ms,
            ),
            snap_dir: Some(self.data_dir.join("snap")),
            entry_cache_max_bytes: self.entry_cache_max_bytes,
            raft_skip_bcast_commit: self.raft_skip_bcast_commit,
            dormant_regions: self.dormant_regions,
            dormant_wake_rate: self.dormant_wake_rate,
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
