//! The options of `shoal bench`, with their defaults and bounds.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
pub use shoal_client::config::parse_duration;

/// What each request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Writes a value to a key.
    Put,
    /// Reads a key (linearizable).
    Get,
    /// Reads with probability --read-ratio, writes otherwise.
    Mixed,
    /// Reads up to --scan-limit pairs from a key onwards.
    Scan,
    /// Compare-and-swap on a key: expects the value the generator writes, writes it again.
    Cas,
    /// YCSB workload A, update heavy: 50% reads, 50% updates, zipfian (docs/ycsb.md).
    #[serde(rename = "ycsb-a")]
    YcsbA,
    /// YCSB workload B, read mostly: 95% reads, 5% updates, zipfian.
    #[serde(rename = "ycsb-b")]
    YcsbB,
    /// YCSB workload C, read only: 100% reads, zipfian.
    #[serde(rename = "ycsb-c")]
    YcsbC,
    /// YCSB workload D, read latest: 95% reads, 5% inserts of new records; reads
    /// favour the records inserted last.
    #[serde(rename = "ycsb-d")]
    YcsbD,
    /// YCSB workload E, short ranges: 95% scans of 1..=100 records, 5% inserts,
    /// zipfian scan starts.
    #[serde(rename = "ycsb-e")]
    YcsbE,
    /// YCSB workload F, read-modify-write: 50% reads, 50% read-modify-writes (a read
    /// then an update of the same record), zipfian.
    #[serde(rename = "ycsb-f")]
    YcsbF,
}

impl Workload {
    /// The name on the command line and in reports, e.g. `mixed`, `ycsb-a`.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::Scan => "scan",
            Workload::Cas => "cas",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
            Workload::YcsbD => "ycsb-d",
            Workload::YcsbE => "ycsb-e",
            Workload::YcsbF => "ycsb-f",
        }
    }

    /// Whether this is one of YCSB's core workloads (`ycsb-a` ..= `ycsb-f`).
    pub fn is_ycsb(&self) -> bool {
        crate::ycsb::Spec::of(*self).is_some()
    }
}

/// `--value-size` when not given: for put, get, mixed, scan and cas.
pub const DEFAULT_VALUE_SIZE: usize = 256;
/// `--keys` when not given: for put, get, mixed, scan and cas.
pub const DEFAULT_KEYS: u64 = 100_000;
/// `--read-ratio`'s default.
pub const DEFAULT_READ_RATIO: f64 = 0.9;
/// `--scan-limit`'s default.
pub const DEFAULT_SCAN_LIMIT: u32 = 10;
/// `--zipf-exponent`'s default.
pub const DEFAULT_ZIPF_EXPONENT: f64 = 0.99;

/// Which system the requests go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A Shoal cluster, through shoal-client (region cache, leader routing, retries).
    Shoal,
    /// An etcd cluster, through etcd's v3 gRPC KV API (Put, Range, Txn).
    Etcd,
}

/// How keys are picked from the key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Zipfian with exponent --zipf-exponent: a few keys get most requests.
    Zipf,
}

/// Options of `shoal bench`. Every run is bounded: by --duration, or by --ops within
/// --max-time.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The workload.
    #[arg(value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// The workload, as an option (as `shoal bench-compare --workload` takes it):
    /// the same as the WORKLOAD argument; give one or the other.
    #[arg(
        long = "workload",
        value_enum,
        value_name = "WORKLOAD",
        conflicts_with = "workload"
    )]
    pub workload_option: Option<Workload>,
    /// The system to measure.
    #[arg(long, value_enum, default_value_t = TargetKind::Shoal)]
    pub target: TargetKind,
    /// Comma-separated gRPC addresses (host:port) of the cluster's nodes. For etcd,
    /// client i talks to endpoint i mod N.
    #[arg(
        long,
        env = "SHOAL_ENDPOINTS",
        default_value = "127.0.0.1:20160",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// TLS toward the cluster (Shoal or etcd): the CA, the client's certificate and
    /// key.
    #[command(flatten)]
    pub tls: shoal_client::tls::TlsArgs,
    /// Concurrent requests in flight (one loop each). 1..=10000.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Bytes per value written (for ycsb-*, the record: YCSB's 10 fields of 100
    /// bytes). 1..=1048576. [default: 256; 1000 for ycsb-*]
    #[arg(long)]
    pub value_size: Option<usize>,
    /// Size of the key space: keys are 8-byte scrambled indexes 0..KEYS, spread evenly
    /// over the whole key space (and so over every region). For ycsb-*, the records
    /// loaded before the run (YCSB's recordcount); ycsb-d and ycsb-e insert more.
    /// [default: 100000; 1000 for ycsb-*]
    #[arg(long)]
    pub keys: Option<u64>,
    /// How keys are chosen (put, get, mixed, scan, cas; ycsb-* have their own).
    #[arg(long, value_enum, default_value_t = KeyDist::Uniform)]
    pub key_dist: KeyDist,
    /// Exponent of --key-dist zipf (> 0).
    #[arg(long, default_value_t = DEFAULT_ZIPF_EXPONENT)]
    pub zipf_exponent: f64,
    /// Share of reads in the mixed workload, 0.0..=1.0.
    #[arg(long, default_value_t = DEFAULT_READ_RATIO)]
    pub read_ratio: f64,
    /// Pairs read per scan of the scan workload. 1..=10000. (ycsb-e draws its
    /// scan lengths from 1..=100.)
    #[arg(long, default_value_t = DEFAULT_SCAN_LIMIT)]
    pub scan_limit: u32,
    /// Length of the measured phase, e.g. 30s, 500ms, 2m [default: 30s, or unbounded
    /// up to --max-time when --ops is given].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many measured requests (successful or not).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Upper bound of the measured phase when --ops is given without --duration.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub max_time: Duration,
    /// Load run before measuring, not counted.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub warmup: Duration,
    /// Shoal only: before the run, split the key space into this many regions through
    /// the admin API if the cluster has fewer (split points are even 2-byte prefixes).
    #[arg(long)]
    pub regions: Option<usize>,
    /// Confine the keys to H evenly spaced 2-byte prefixes (the first keys of the
    /// regions an even split into H makes): on a cluster of more regions only H of
    /// them are busy (measuring idle regions' cost), on a cluster of exactly H
    /// every region is. Default: keys spread over the whole key space.
    #[arg(long)]
    pub hot_regions: Option<usize>,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Skip writing every key once before get, mixed, scan, cas and ycsb-* runs
    /// (YCSB's load phase): reads then mostly find nothing, which ycsb-* count as
    /// NOT_FOUND errors. For a run on records an earlier run loaded.
    #[arg(long)]
    pub no_preload: bool,
    /// Deadline of one request including the client's retries.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
    /// The Shoal cluster's `raft-entry-max-size`, in bytes: the client's gRPC message
    /// limit is this plus 1 MiB, as every node's is.
    #[arg(long, default_value_t = shoal_client::config::DEFAULT_RAFT_ENTRY_MAX_SIZE)]
    pub raft_entry_max_size: usize,
    /// Extra processes (comma-separated pids) whose CPU time, read from /proc, is
    /// reported per 1,000 requests, e.g. the etcd members.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Seed of the key choice, so that runs can be repeated.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Shoal only: send each request as its own unary gRPC call instead of on the
    /// client's batched stream per store (`Kv.BatchCommands`, the default).
    #[arg(long)]
    pub unary: bool,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    /// The defaults, as `shoal bench` with no options has them.
    pub fn defaults() -> BenchArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: BenchArgs,
        }
        Wrap::parse_from(["bench"]).args
    }

    /// These options with `--workload` moved into the WORKLOAD argument, which
    /// every other method reads.
    pub fn resolved(&self) -> BenchArgs {
        BenchArgs {
            workload: self.workload_option.unwrap_or(self.workload),
            workload_option: None,
            ..self.clone()
        }
    }

    /// The length of the measured phase.
    pub fn measure_limit(&self) -> Duration {
        match (self.duration, self.ops) {
            (Some(d), _) => d,
            (None, Some(_)) => self.max_time,
            (None, None) => Duration::from_secs(30),
        }
    }

    /// Whether the keys are written once before the run.
    pub fn preload(&self) -> bool {
        !self.no_preload && self.workload != Workload::Put
    }

    /// Bytes per value: `--value-size`, or the workload's default (a YCSB record is
    /// [`ycsb::FIELD_COUNT`](crate::ycsb::FIELD_COUNT) fields of
    /// [`ycsb::FIELD_LENGTH`](crate::ycsb::FIELD_LENGTH) bytes).
    pub fn value_bytes(&self) -> usize {
        match (self.value_size, self.workload.is_ycsb()) {
            (Some(n), _) => n,
            (None, true) => crate::ycsb::RECORD_SIZE,
            (None, false) => DEFAULT_VALUE_SIZE,
        }
    }

    /// Keys in the key space (ycsb-*: records loaded): `--keys`, or the workload's
    /// default (YCSB's recordcount for ycsb-*).
    pub fn key_count(&self) -> u64 {
        match (self.keys, self.workload.is_ycsb()) {
            (Some(n), _) => n,
            (None, true) => crate::ycsb::RECORD_COUNT,
            (None, false) => DEFAULT_KEYS,
        }
    }

    /// Checks the bounds documented on each option; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        let endpoints = self.endpoints.iter().filter(|e| !e.trim().is_empty());
        if endpoints.count() == 0 {
            return Err("--endpoints: give at least one host:port".into());
        }
        if !(1..=10_000).contains(&self.clients) {
            return Err(format!("--clients {}: must be 1..=10000", self.clients));
        }
        if !(1..=1 << 20).contains(&self.value_bytes()) {
            return Err(format!(
                "--value-size {}: must be 1..=1048576",
                self.value_bytes()
            ));
        }
        if self.key_count() == 0 {
            return Err("--keys: the key space needs at least one key".into());
        }
        if self.key_dist == KeyDist::Zipf
            && self.zipf_exponent.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return Err(format!(
                "--zipf-exponent {}: must be > 0",
                self.zipf_exponent
            ));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(format!(
                "--read-ratio {}: must be 0.0..=1.0",
                self.read_ratio
            ));
        }
        if !(1..=10_000).contains(&self.scan_limit) {
            return Err(format!(
                "--scan-limit {}: must be 1..=10000",
                self.scan_limit
            ));
        }
        if self.measure_limit().is_zero() {
            return Err("--duration: must be > 0".into());
        }
        if self.ops == Some(0) {
            return Err("--ops: must be > 0".into());
        }
        if let Some(k) = self.regions {
            if !(1..=65_536).contains(&k) {
                return Err(format!("--regions {k}: must be 1..=65536"));
            }
        }
        if let Some(h) = self.hot_regions {
            if !(1..=65_536).contains(&h) {
                return Err(format!("--hot-regions {h}: must be 1..=65536"));
            }
        }
        if self.request_timeout.is_zero() {
            return Err("--request-timeout: must be > 0".into());
        }
        self.validate_ycsb()
    }

    /// The options a YCSB workload fixes itself are refused with it rather than
    /// silently ignored (given at their defaults, they pass).
    fn validate_ycsb(&self) -> Result<(), String> {
        let w = self.workload;
        if !w.is_ycsb() {
            return Ok(());
        }
        let name = w.name();
        if self.key_dist != KeyDist::Uniform || self.zipf_exponent != DEFAULT_ZIPF_EXPONENT {
            let opt = match self.key_dist {
                KeyDist::Uniform => "--zipf-exponent",
                KeyDist::Zipf => "--key-dist",
            };
            return Err(format!(
                "{opt}: {name} has YCSB's own request distribution (docs/ycsb.md); \
                 the option applies to put, get, mixed, scan and cas"
            ));
        }
        if self.read_ratio != DEFAULT_READ_RATIO {
            return Err(format!(
                "--read-ratio: {name} has YCSB's own operation mix (docs/ycsb.md); \
                 the option applies to mixed"
            ));
        }
        if self.scan_limit != DEFAULT_SCAN_LIMIT {
            return Err(format!(
                "--scan-limit: {name} draws YCSB's scan lengths (1..=100, uniform); \
                 the option applies to scan"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounded() {
        let a = BenchArgs::defaults();
        a.validate().unwrap();
        assert_eq!(a.workload, Workload::Put);
        assert_eq!(a.clients, 64);
        assert_eq!(a.measure_limit(), Duration::from_secs(30));
        let ops_only = BenchArgs {
            ops: Some(10),
            ..a.clone()
        };
        assert_eq!(ops_only.measure_limit(), Duration::from_secs(600));
    }

    #[test]
    fn bad_options_name_themselves() {
        let a = BenchArgs::defaults();
        let bad = [
            BenchArgs {
                clients: 0,
                ..a.clone()
            },
            BenchArgs {
                read_ratio: 1.5,
                ..a.clone()
            },
            BenchArgs {
                keys: Some(0),
                ..a.clone()
            },
            BenchArgs {
                regions: Some(0),
                ..a.clone()
            },
            BenchArgs {
                endpoints: vec![" ".into()],
                ..a.clone()
            },
        ];
        let names = [
            "--clients",
            "--read-ratio",
            "--keys",
            "--regions",
            "--endpoints",
        ];
        for (args, name) in bad.iter().zip(names) {
            let err = args.validate().unwrap_err();
            assert!(err.starts_with(name), "{err}");
        }
    }

    #[test]
    fn ycsb_workloads_default_to_ycsb_records_and_sizes() {
        let mut a = BenchArgs::defaults();
        assert_eq!((a.key_count(), a.value_bytes()), (100_000, 256));
        a.workload = Workload::YcsbB;
        a.validate().unwrap();
        assert_eq!((a.key_count(), a.value_bytes()), (1000, 1000));
        assert!(a.preload());
        a.keys = Some(50_000);
        a.value_size = Some(100);
        assert_eq!((a.key_count(), a.value_bytes()), (50_000, 100));
    }

    #[test]
    fn ycsb_workloads_refuse_the_options_they_fix() {
        let a = BenchArgs {
            workload: Workload::YcsbE,
            ..BenchArgs::defaults()
        };
        let bad = [
            (
                BenchArgs {
                    key_dist: KeyDist::Zipf,
                    ..a.clone()
                },
                "--key-dist",
            ),
            (
                BenchArgs {
                    zipf_exponent: 0.5,
                    ..a.clone()
                },
                "--zipf-exponent",
            ),
            (
                BenchArgs {
                    read_ratio: 0.5,
                    ..a.clone()
                },
                "--read-ratio",
            ),
            (
                BenchArgs {
                    scan_limit: 100,
                    ..a.clone()
                },
                "--scan-limit",
            ),
        ];
        for (args, name) in bad {
            let err = args.validate().unwrap_err();
            assert!(err.starts_with(name) && err.contains("ycsb-e"), "{err}");
        }
    }

    fn parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: BenchArgs,
        }
        Wrap::try_parse_from(argv).map(|w| w.args)
    }

    #[test]
    fn the_workload_is_an_argument_or_an_option_not_both() {
        let positional = parse(&["bench", "ycsb-a"]).unwrap().resolved();
        let option = parse(&["bench", "--workload", "ycsb-a"])
            .unwrap()
            .resolved();
        assert_eq!(positional.workload, Workload::YcsbA);
        assert_eq!(option.workload, Workload::YcsbA);
        assert_eq!(option.workload_option, None);
        assert_eq!(option.key_count(), 1000);
        assert_eq!(
            parse(&["bench"]).unwrap().resolved().workload,
            Workload::Put
        );
        let both = parse(&["bench", "get", "--workload", "ycsb-a"]);
        assert!(both.is_err());
    }

    #[test]
    fn endpoints_come_from_shoal_endpoints_when_not_given() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: BenchArgs,
        }
        let cmd = Wrap::command();
        let endpoints = cmd
            .get_arguments()
            .find(|a| a.get_id() == "endpoints")
            .unwrap();
        assert_eq!(
            endpoints.get_env(),
            Some(std::ffi::OsStr::new("SHOAL_ENDPOINTS"))
        );
    }

    #[test]
    fn workload_names_parse_and_print_alike() {
        use clap::ValueEnum;
        for w in Workload::value_variants() {
            let parsed = Workload::from_str(w.name(), false).unwrap();
            assert_eq!(parsed, *w);
            let json = serde_json::to_string(w).unwrap();
            assert_eq!(json, format!("\"{}\"", w.name()));
        }
    }
}
