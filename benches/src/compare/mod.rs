//! `shoal bench-compare`: Shoal and etcd measured side by side in one run.
//!
//! Runs four rounds, etcd, Shoal, Shoal, etcd: each starts a fresh cluster (etcd:
//! `--nodes` members; Shoal: `--nodes` node processes of this executable
//! bootstrapped with `--regions` regions), runs each `--workload` (put, get, and the
//! 90/10 get/put mix by default) once per `--clients` value, and stops it. This
//! machine's CPU and fsync speed drift within minutes, so the ratio is taken over the
//! pairs (both systems' rounds summed): drift cannot favour either side. Each report
//! also counts CPU per request of the servers and of the load generator, which
//! shares the cores with them. Both run on 127.0.0.1 with free ports and their data
//! and logs under `--dir`, with fsync on (both systems' defaults). Prints a
//! side-by-side table and writes every report as JSON.
//!
//! How each system's load generator connects: Shoal's through `shoal-client`, to
//! each region's leader, on one batched stream per store (`--ab-unary` compares
//! with unary calls); etcd's with one gRPC channel per member, client loop `i` on
//! member `i mod N`, unary calls (as etcd's own clients make them), so most requests
//! reach a follower that forwards them to the leader (`--etcd-leader-only` puts
//! every etcd client on the leader instead).
//!
//! Every process started is stopped when the run ends, fails, or is interrupted:
//! SIGTERM, then SIGKILL after 10 s; children also get SIGKILL if this process dies.

mod cluster;
mod table;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::args::{parse_duration, BenchArgs, TargetKind, Workload};
use crate::report::Report;
use crate::runner;
use crate::target::Target;
use crate::workload::Op;
use cluster::{certs_dir, etcd_leader, make_certs, start_etcd, start_shoal, Cluster};
#[cfg(test)]
use table::sizes;
pub use table::table;

/// Options of `shoal bench-compare`.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Nodes of the Shoal cluster and members of the etcd cluster. 1..=9.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Regions the Shoal cluster is bootstrapped with.
    #[arg(long, default_value_t = 64)]
    pub regions: usize,
    /// One pass per value: requests in flight.
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    pub clients: Vec<usize>,
    /// The workloads, each run once per `--clients` value in every round
    /// (`mixed` is 90% gets, 10% puts; `ycsb-a` ..= `ycsb-f` are YCSB's core
    /// workloads, docs/ycsb.md).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "put,get,mixed"
    )]
    pub workload: Vec<Workload>,
    /// Bytes per value. [default: each workload's: 256; 1000 for ycsb-*]
    #[arg(long)]
    pub value_size: Option<usize>,
    /// Key space size (ycsb-*: records loaded). [default: each workload's: 100000;
    /// 1000 for ycsb-*]
    #[arg(long)]
    pub keys: Option<u64>,
    /// Measured phase of each pass.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub duration: Duration,
    /// Warm-up before each pass.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub warmup: Duration,
    /// The etcd server executable (Debian's etcd-server package installs `etcd`).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Where the clusters keep data and logs; emptied first. The data dirs are
    /// removed after each cluster stops; logs and JSON reports stay.
    #[arg(long, default_value = "target/bench-compare")]
    pub dir: PathBuf,
    /// The JSON result [default: DIR/compare.json].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compare Shoal with itself instead of with etcd: side B starts every node
    /// with these extra `shoal node` flags (space-separated, e.g.
    /// "--raft-skip-bcast-commit=false"), side A without them. The A/B of one change
    /// in one run.
    #[arg(long, value_name = "FLAGS")]
    pub ab: Option<String>,
    /// Compare Shoal with itself: side B's load generator sends every request as
    /// its own unary gRPC call (`shoal bench --unary`), side A's uses the batched
    /// stream (the default). With --ab, side B's nodes also get its flags.
    #[arg(long)]
    pub ab_unary: bool,
    /// Compare Shoal with another build of itself: side B's nodes run this `shoal`
    /// executable (e.g. one built without a feature), side A's this one.
    #[arg(long, value_name = "PATH")]
    pub ab_bin: Option<PathBuf>,
    /// Compare Shoal with itself: side B's nodes run with these environment
    /// variables (space-separated `NAME=VALUE`, e.g. "TOKIO_WORKER_THREADS=1").
    #[arg(long, value_name = "VARS")]
    pub ab_env: Option<String>,
    /// Send every etcd request to the etcd leader (found from its members'
    /// `etcd_server_is_leader` metric) instead of spreading clients over all
    /// members, two thirds of whose requests are then forwarded to the leader.
    #[arg(long)]
    pub etcd_leader_only: bool,
    /// Mutual TLS on every connection of both clusters (etcd's client and peer
    /// URLs too) and of the load generator: `shoal cert` makes a CA, a certificate
    /// per node and the load generator's in DIR/certs.
    #[arg(long)]
    pub tls: bool,
    /// Compare Shoal with itself, side B with mutual TLS (nodes and load
    /// generator) and side A without: what TLS costs per operation.
    #[arg(long)]
    pub ab_tls: bool,
}

/// One side of a comparison: a system and, for Shoal, extra node flags.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// How the table names it.
    pub name: String,
    /// The system.
    pub target: TargetKind,
    /// Extra `shoal node` flags.
    pub node_flags: Vec<String>,
    /// Whether its load generator uses unary calls (`shoal bench --unary`).
    pub unary: bool,
    /// The `shoal` executable its nodes run, when not this one.
    pub node_bin: Option<PathBuf>,
    /// Environment variables of its nodes, `NAME=VALUE`.
    pub node_env: Vec<String>,
    /// Mutual TLS on its cluster's connections and its load generator's.
    pub tls: bool,
}

/// Side A (etcd, or Shoal as it is) and side B (Shoal, or Shoal with `--ab`'s flags).
fn sides(args: &CompareArgs) -> (Side, Side) {
    let shoal = |name: &str, flags: Vec<String>, unary: bool, bin: Option<PathBuf>| Side {
        name: name.into(),
        target: TargetKind::Shoal,
        node_flags: flags,
        unary,
        node_bin: bin,
        node_env: Vec::new(),
        tls: args.tls,
    };
    if !is_ab(args) {
        let etcd = Side {
            name: "etcd".into(),
            target: TargetKind::Etcd,
            node_flags: Vec::new(),
            unary: false,
            node_bin: None,
            node_env: Vec::new(),
            tls: args.tls,
        };
        return (etcd, shoal("Shoal", Vec::new(), false, None));
    }
    let flags = args
        .ab
        .iter()
        .flat_map(|f| f.split_whitespace())
        .map(String::from)
        .collect();
    let mut b = shoal("Shoal B", flags, args.ab_unary, args.ab_bin.clone());
    b.node_env = args
        .ab_env
        .iter()
        .flat_map(|e| e.split_whitespace())
        .map(String::from)
        .collect();
    b.tls |= args.ab_tls;
    (shoal("Shoal A", Vec::new(), false, None), b)
}

/// Whether Shoal is compared with itself (`--ab`, `--ab-unary`, `--ab-bin`,
/// `--ab-env`).
fn is_ab(args: &CompareArgs) -> bool {
    args.ab.is_some()
        || args.ab_unary
        || args.ab_bin.is_some()
        || args.ab_env.is_some()
        || args.ab_tls
}

/// Waits (at most 60 s) until a write succeeds and, for Shoal, every region has a
/// leader.
async fn wait_ready(cluster: &mut Cluster, bench: &BenchArgs, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        cluster.check_alive(dir)?;
        match probe(bench).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!(
        "the {:?} cluster was not ready in 60 s: {last}",
        bench.target
    ))
}

/// The key the readiness probe writes: the lowest 8-byte key, below every key
/// the workloads use (no generated index maps to it in practice), so that no scan,
/// which reads from a generated key upwards, meets its 8-byte value where it
/// expects a value of the run's size.
const PROBE_KEY: [u8; 8] = [0; 8];

async fn probe(bench: &BenchArgs) -> Result<(), String> {
    let quick = BenchArgs {
        request_timeout: Duration::from_secs(2),
        ..bench.clone()
    };
    let target = Target::connect(&quick).await?;
    target
        .execute(0, Op::Put(PROBE_KEY), 8)
        .await
        .map_err(|e| e.message)?;
    if let Target::Shoal(c) = &target {
        let (regions, _) = c.list_regions().await.map_err(|e| e.to_string())?;
        let leaderless = regions.iter().filter(|r| r.leader.is_none()).count();
        if leaderless > 0 {
            return Err(format!(
                "{leaderless} of {} regions have no leader yet",
                regions.len()
            ));
        }
    }
    Ok(())
}

/// One pass: the same workload against both systems.
#[derive(Debug, Clone, Serialize)]
pub struct Pass {
    /// What each request does.
    pub workload: Workload,
    /// Requests in flight.
    pub clients: usize,
    /// Side A's runs (first and last round).
    pub a: Vec<Report>,
    /// Side B's runs (second and third round).
    pub b: Vec<Report>,
}

/// The rounds, in order: A, B, B, A (false: side A), so that drift cancels.
const ROUNDS: [bool; 4] = [false, true, true, false];

/// The whole comparison, as written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// CPUs this machine has.
    pub cores: usize,
    /// Nodes per cluster.
    pub nodes: usize,
    /// Shoal's regions.
    pub regions: usize,
    /// Side A: etcd, or Shoal as it is.
    pub a: Side,
    /// Side B: Shoal, or Shoal with the `--ab` flags.
    pub b: Side,
    /// One entry per client count.
    pub passes: Vec<Pass>,
}

/// Runs the comparison. `node_bin` is the `shoal` executable; `shutdown` resolves
/// on Ctrl-C or SIGTERM, which stops everything started.
pub async fn run(
    args: CompareArgs,
    node_bin: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<i32, String> {
    validate(&args)?;
    tokio::select! {
        r = compare(&args, &node_bin) => r.map(|_| 0),
        _ = shutdown => Err("interrupted; every process started was stopped".into()),
    }
}

fn validate(args: &CompareArgs) -> Result<(), String> {
    if !(1..=9).contains(&args.nodes) {
        return Err(format!("--nodes {}: must be 1..=9", args.nodes));
    }
    if args.workload.is_empty() {
        return Err("--workload: give one or more workloads".into());
    }
    if args.clients.is_empty() || args.clients.contains(&0) {
        return Err("--clients: give one or more counts > 0".into());
    }
    if let Some(env) = &args.ab_env {
        if let Some(bad) = env.split_whitespace().find(|v| !v.contains('=')) {
            return Err(format!("--ab-env: {bad:?} is not NAME=VALUE"));
        }
    }
    if let Some(bin) = &args.ab_bin {
        if !bin.is_file() {
            return Err(format!("--ab-bin {}: no such file", bin.display()));
        }
    }
    if args.tls && args.etcd_leader_only {
        return Err(
            "--etcd-leader-only finds the leader over plain HTTP; it does not go with --tls".into(),
        );
    }
    if is_ab(args) {
        return Ok(());
    }
    let found = Command::new(&args.etcd_bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !found.is_ok_and(|s| s.success()) {
        return Err(format!(
            "cannot run {:?}: install etcd (Debian: apt-get install etcd-server; \
             `make bench-compare` does) or pass --etcd-bin",
            args.etcd_bin
        ));
    }
    Ok(())
}

fn bench_args(
    args: &CompareArgs,
    side: &Side,
    workload: Workload,
    clients: usize,
    c: &Cluster,
) -> BenchArgs {
    let target = side.target;
    BenchArgs {
        unary: side.unary,
        workload,
        target,
        endpoints: c.endpoints.clone(),
        clients,
        value_size: args.value_size,
        keys: args.keys,
        duration: Some(args.duration),
        warmup: args.warmup,
        pids: if target == TargetKind::Etcd {
            c.pids()
        } else {
            vec![]
        },
        tls: match side.tls {
            true => {
                let certs = certs_dir(args);
                shoal_client::tls::TlsArgs {
                    ca_path: Some(certs.join("ca.pem")),
                    cert_path: Some(certs.join("client-bench.pem")),
                    key_path: Some(certs.join("client-bench.key")),
                }
            }
            false => Default::default(),
        },
        ..BenchArgs::defaults()
    }
}

async fn compare(args: &CompareArgs, node_bin: &Path) -> Result<(), String> {
    let dir = &args.dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot empty {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut passes: Vec<Pass> = args
        .workload
        .iter()
        .flat_map(|&workload| {
            args.clients.iter().map(move |&clients| Pass {
                workload,
                clients,
                a: Vec::new(),
                b: Vec::new(),
            })
        })
        .collect();
    let (side_a, side_b) = sides(args);
    if side_a.tls || side_b.tls {
        make_certs(args, node_bin)?;
    }
    for (round, is_b) in ROUNDS.into_iter().enumerate() {
        let side = if is_b { &side_b } else { &side_a };
        let target = side.target;
        let name = side.name.to_lowercase().replace(' ', "-");
        eprintln!(
            "bench-compare: starting a {}-node {name} cluster",
            args.nodes
        );
        let mut cluster = match target {
            TargetKind::Etcd => start_etcd(args, dir, side.tls)?,
            TargetKind::Shoal => start_shoal(args, dir, &name, side, node_bin)?,
        };
        let probe_args = bench_args(args, side, Workload::Put, 1, &cluster);
        wait_ready(&mut cluster, &probe_args, dir).await?;

        for pass in passes.iter_mut() {
            let mut bench = bench_args(args, side, pass.workload, pass.clients, &cluster);
            if target == TargetKind::Etcd && args.etcd_leader_only {
                // Found again before each pass: the leader may have moved.
                let leader = etcd_leader(&cluster.endpoints)?;
                eprintln!("bench-compare: every etcd client on the leader, {leader}");
                bench.endpoints = vec![leader];
            }
            let workload = pass.workload.name();
            bench.json = Some(dir.join(format!(
                "{name}-{workload}-{}-round{}.json",
                pass.clients,
                round + 1
            )));
            eprintln!(
                "bench-compare: round {} of 4: {name}, {workload}, {} clients",
                round + 1,
                pass.clients
            );
            let report = runner::run(&bench).await?;
            cluster.check_alive(dir)?;
            print!("{}", report.render());
            match is_b {
                true => pass.b.push(report),
                false => pass.a.push(report),
            }
        }
        drop(cluster);
        // Keep the logs and reports, not the data (gigabytes after a full run).
        for i in 0..=args.nodes {
            let _ = std::fs::remove_dir_all(dir.join(format!("{name}-{i}")));
        }
    }
    let cmp = Comparison {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        nodes: args.nodes,
        regions: args.regions,
        a: side_a,
        b: side_b,
        passes,
    };
    println!("\n{}", table(args, &cmp));
    let out = args.out.clone().unwrap_or_else(|| dir.join("compare.json"));
    let text = serde_json::to_string_pretty(&cmp).map_err(|e| e.to_string())?;
    std::fs::write(&out, text + "\n")
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("JSON: {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(workload: Workload) -> Pass {
        let args = BenchArgs {
            workload,
            ..BenchArgs::defaults()
        };
        Pass {
            workload,
            clients: 64,
            a: vec![Report::header(&args)],
            b: vec![Report::header(&args)],
        }
    }

    fn comparison(passes: Vec<Pass>) -> Comparison {
        let args = test_args();
        let (a, b) = sides(&args);
        Comparison {
            cores: 2,
            nodes: 3,
            regions: 64,
            a,
            b,
            passes,
        }
    }

    fn test_args() -> CompareArgs {
        CompareArgs {
            nodes: 3,
            regions: 64,
            clients: vec![64],
            workload: vec![],
            value_size: None,
            keys: None,
            duration: Duration::from_secs(1),
            warmup: Duration::from_secs(1),
            etcd_bin: "etcd".into(),
            dir: "x".into(),
            out: None,
            ab: None,
            ab_unary: false,
            ab_bin: None,
            ab_env: None,
            etcd_leader_only: false,
            tls: false,
            ab_tls: false,
        }
    }

    #[test]
    fn tls_goes_to_both_sides_and_ab_tls_to_side_b_only() {
        let base = CompareArgs {
            tls: true,
            ..test_args()
        };
        let (a, b) = sides(&base);
        assert!(a.tls && b.tls && a.target == TargetKind::Etcd);
        let ab = CompareArgs {
            ab_tls: true,
            ..test_args()
        };
        let (a, b) = sides(&ab);
        assert!(!a.tls && b.tls && a.target == TargetKind::Shoal);
        let both = CompareArgs {
            tls: true,
            etcd_leader_only: true,
            workload: vec![Workload::Put],
            ..test_args()
        };
        assert!(validate(&both).unwrap_err().contains("--tls"));
    }

    #[test]
    fn the_table_names_each_workloads_sizes_when_they_differ() {
        let same = comparison(vec![pass(Workload::Put), pass(Workload::Get)]);
        assert_eq!(sizes(&same), "256-byte values, 100000 keys");
        let mixed = comparison(vec![
            pass(Workload::Put),
            pass(Workload::YcsbA),
            pass(Workload::Get),
            pass(Workload::YcsbF),
        ]);
        assert_eq!(
            sizes(&mixed),
            "put, get: 256-byte values, 100000 keys; ycsb-a, ycsb-f: 1000-byte values, 1000 keys"
        );
    }

    #[test]
    fn the_probe_key_is_below_every_generated_key() {
        use crate::workload::key_of;
        assert!((0..1_000_000).all(|i| key_of(i) > PROBE_KEY));
    }

    #[test]
    fn the_workload_list_takes_the_ycsb_names() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: CompareArgs,
        }
        let w = Wrap::try_parse_from(["bench-compare", "--workload", "ycsb-a,ycsb-e,mixed"])
            .unwrap()
            .args;
        assert_eq!(
            w.workload,
            [Workload::YcsbA, Workload::YcsbE, Workload::Mixed]
        );
        assert_eq!((w.keys, w.value_size), (None, None));
        let row = table(&w, &comparison(vec![pass(Workload::YcsbE)]));
        assert!(row.contains("| ycsb-e | 64 |"), "{row}");
    }
}
