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
}

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
    /// The system to measure.
    #[arg(long, value_enum, default_value_t = TargetKind::Shoal)]
    pub target: TargetKind,
    /// Comma-separated gRPC addresses (host:port) of the cluster's nodes. For etcd,
    /// client i talks to endpoint i mod N.
    #[arg(long, default_value = "127.0.0.1:20160", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Concurrent requests in flight (one loop each). 1..=10000.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Bytes per value written. 1..=1048576.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Size of the key space: keys are 8-byte scrambled indexes 0..KEYS, spread evenly
    /// over the whole key space (and so over every region).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value_t = KeyDist::Uniform)]
    pub key_dist: KeyDist,
    /// Exponent of --key-dist zipf (> 0).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_exponent: f64,
    /// Share of reads in the mixed workload, 0.0..=1.0.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Pairs read per scan. 1..=10000.
    #[arg(long, default_value_t = 10)]
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
    /// Write the report as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Skip writing every key once before get, mixed, scan and cas runs (reads then
    /// mostly find nothing).
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

    /// Checks the bounds documented on each option; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        let endpoints = self.endpoints.iter().filter(|e| !e.trim().is_empty());
        if endpoints.count() == 0 {
            return Err("--endpoints: give at least one host:port".into());
        }
        if !(1..=10_000).contains(&self.clients) {
            return Err(format!("--clients {}: must be 1..=10000", self.clients));
        }
        if !(1..=1 << 20).contains(&self.value_size) {
            return Err(format!(
                "--value-size {}: must be 1..=1048576",
                self.value_size
            ));
        }
        if self.keys == 0 {
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
        if self.request_timeout.is_zero() {
            return Err("--request-timeout: must be > 0".into());
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
                keys: 0,
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
}
