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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::args::{parse_duration, BenchArgs, TargetKind, Workload};
use crate::report::Report;
use crate::runner;
use crate::target::Target;
use crate::workload::Op;

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

/// Where `shoal cert` puts the run's certificates: `ca.pem`, `store-ID.pem` and
/// `.key` per node (etcd member i uses store i+1's), `client-bench.pem` and `.key`.
fn certs_dir(args: &CompareArgs) -> PathBuf {
    args.dir.join("certs")
}

/// Makes the run's certificates with `shoal cert`.
fn make_certs(args: &CompareArgs, shoal: &Path) -> Result<(), String> {
    let out = Command::new(shoal)
        .arg("cert")
        .arg("--dir")
        .arg(certs_dir(args))
        .args(["--stores", &args.nodes.to_string(), "--client", "bench"])
        .output()
        .map_err(|e| format!("cannot run {} cert: {e}", shoal.display()))?;
    if !out.status.success() {
        return Err(format!(
            "shoal cert failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A child process that is stopped when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            eprintln!(
                "bench-compare: {} did not stop in 10 s; killing it",
                self.name
            );
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A started cluster: its processes, client endpoints and pids.
struct Cluster {
    procs: Vec<Proc>,
    endpoints: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Signal every process first, so that none waits on a peer still running;
        // each Proc's drop then waits for its own (and kills it after 10 s).
        for p in &mut self.procs {
            if matches!(p.child.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on the pid of our own child, not yet reaped.
                unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
            }
        }
    }
}

impl Cluster {
    fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// Fails if a process has exited (with its log's path).
    fn check_alive(&mut self, dir: &Path) -> Result<(), String> {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}); see {}/{}.log",
                    p.name,
                    dir.display(),
                    p.name
                ));
            }
        }
        Ok(())
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Proc, String> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))
        .map_err(|e| format!("cannot create {name}.log in {}: {e}", dir.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(err);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death
        // signal so that it dies with us even if we are killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
    Ok(Proc {
        name: name.to_string(),
        child,
    })
}

fn start_etcd(args: &CompareArgs, dir: &Path, tls: bool) -> Result<Cluster, String> {
    let scheme = if tls { "https" } else { "http" };
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..args.nodes {
        peers.push(free_port()?);
        clients.push(free_port()?);
    }
    let initial: Vec<String> = (0..args.nodes)
        .map(|i| format!("m{i}={scheme}://127.0.0.1:{}", peers[i]))
        .collect();
    let mut procs = Vec::new();
    for i in 0..args.nodes {
        let (c, p) = (clients[i], peers[i]);
        let mut cmd = Command::new(&args.etcd_bin);
        cmd.arg("--name")
            .arg(format!("m{i}"))
            .arg("--data-dir")
            .arg(dir.join(format!("etcd-{i}")))
            .arg(format!("--listen-client-urls={scheme}://127.0.0.1:{c}"))
            .arg(format!("--advertise-client-urls={scheme}://127.0.0.1:{c}"))
            .arg(format!("--listen-peer-urls={scheme}://127.0.0.1:{p}"))
            .arg(format!(
                "--initial-advertise-peer-urls={scheme}://127.0.0.1:{p}"
            ))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=shoal-bench-compare")
            .arg("--logger=zap")
            .arg("--log-level=warn");
        if tls {
            // Clients and peers alike must present a certificate from the CA.
            let certs = certs_dir(args);
            let ca = certs.join("ca.pem");
            let cert = certs.join(format!("store-{}.pem", i + 1));
            let key = certs.join(format!("store-{}.key", i + 1));
            for (flag, path) in [
                ("--trusted-ca-file", &ca),
                ("--cert-file", &cert),
                ("--key-file", &key),
                ("--peer-trusted-ca-file", &ca),
                ("--peer-cert-file", &cert),
                ("--peer-key-file", &key),
            ] {
                cmd.arg(format!("{flag}={}", path.display()));
            }
            cmd.args(["--client-cert-auth", "--peer-client-cert-auth"]);
        }
        procs.push(spawn(&format!("etcd-{i}"), cmd, dir)?);
    }
    let endpoints = clients.iter().map(|c| format!("127.0.0.1:{c}")).collect();
    Ok(Cluster { procs, endpoints })
}

/// A Shoal cluster whose nodes keep their data in `dir/NAME-i` (removed when the
/// round ends, so every round starts afresh).
fn start_shoal(
    args: &CompareArgs,
    dir: &Path,
    name: &str,
    side: &Side,
    this_bin: &Path,
) -> Result<Cluster, String> {
    let node_bin = side.node_bin.as_deref().unwrap_or(this_bin);
    let mut grpc = Vec::new();
    for _ in 0..args.nodes {
        grpc.push(free_port()?);
    }
    let initial: Vec<String> = (0..args.nodes)
        .map(|i| format!("{}=127.0.0.1:{}", i + 1, grpc[i]))
        .collect();
    let mut procs = Vec::new();
    for (i, port) in grpc.iter().enumerate() {
        let mut cmd = Command::new(node_bin);
        cmd.arg("node")
            .arg(format!("--store-id={}", i + 1))
            .arg("--data-dir")
            .arg(dir.join(format!("{name}-{}", i + 1)))
            .arg(format!("--addr=127.0.0.1:{port}"))
            .arg(format!("--status-addr=127.0.0.1:{}", free_port()?))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg(format!("--initial-regions={}", args.regions))
            .args(&side.node_flags);
        if side.tls {
            let certs = certs_dir(args);
            cmd.arg("--ca-path")
                .arg(certs.join("ca.pem"))
                .arg("--cert-path")
                .arg(certs.join(format!("store-{}.pem", i + 1)))
                .arg("--key-path")
                .arg(certs.join(format!("store-{}.key", i + 1)));
        }
        for var in &side.node_env {
            if let Some((k, v)) = var.split_once('=') {
                cmd.env(k, v);
            }
        }
        procs.push(spawn(&format!("{name}-{}", i + 1), cmd, dir)?);
    }
    let endpoints = grpc.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    Ok(Cluster { procs, endpoints })
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

/// The client endpoint of the etcd member that leads: the one whose `/metrics` say
/// `etcd_server_is_leader 1`.
fn etcd_leader(endpoints: &[String]) -> Result<String, String> {
    use std::io::{Read, Write};
    for endpoint in endpoints {
        let metrics = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(endpoint)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })()
        .map_err(|e| format!("cannot read {endpoint}/metrics: {e}"))?;
        if metrics
            .lines()
            .any(|l| l.trim() == "etcd_server_is_leader 1")
        {
            return Ok(endpoint.clone());
        }
    }
    Err("no etcd member says it leads (etcd_server_is_leader)".into())
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

/// "256-byte values, 100000 keys" when every pass ran with the same, else per
/// workload: "put, get: 256-byte values, 100000 keys; ycsb-a: 1000-byte values,
/// 1000 keys" (the workloads' defaults differ).
fn sizes(cmp: &Comparison) -> String {
    let mut groups: Vec<((usize, u64), Vec<&'static str>)> = Vec::new();
    for p in &cmp.passes {
        let Some(r) = p.a.first().or(p.b.first()) else {
            continue;
        };
        let size = (r.value_size, r.keys);
        let name = p.workload.name();
        match groups.iter_mut().find(|(s, _)| *s == size) {
            Some((_, names)) if names.contains(&name) => {}
            Some((_, names)) => names.push(name),
            None => groups.push((size, vec![name])),
        }
    }
    let text = |(v, k): (usize, u64)| format!("{v}-byte values, {k} keys");
    match groups.as_slice() {
        [] => "no passes".to_string(),
        [(size, _)] => text(*size),
        _ => groups
            .iter()
            .map(|(size, names)| format!("{}: {}", names.join(", "), text(*size)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The side-by-side table, in Markdown.
pub fn table(args: &CompareArgs, cmp: &Comparison) -> String {
    let (a, b) = (&cmp.a.name, &cmp.b.name);
    let flags = match cmp.b.node_flags.is_empty() {
        true => String::new(),
        false => format!("; {b}'s nodes run with {}", cmp.b.node_flags.join(" ")),
    } + if cmp.b.unary {
        "; B's load generator sends unary calls"
    } else {
        ""
    } + &cmp
        .b
        .node_bin
        .as_ref()
        .map(|p| format!("; B's nodes run {}", p.display()))
        .unwrap_or_default()
        + &match cmp.b.node_env.is_empty() {
            true => String::new(),
            false => format!("; B's nodes run with {}", cmp.b.node_env.join(" ")),
        }
        + match (cmp.a.tls, cmp.b.tls) {
            (true, true) => "; mutual TLS on every connection of both",
            (false, true) => "; B with mutual TLS on every connection, A without",
            _ => "",
        };
    let mut s = format!(
        "{}, {} s measured after {} s warm-up; {} nodes each, \
         {} Shoal regions, {} cores; rounds {a}, {b}, {b}, {a}: each figure is the mean of a \
         side's two rounds, the ratio that of their sums{flags}\n\n",
        sizes(cmp),
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        cmp.nodes,
        cmp.regions,
        cmp.cores
    );
    s.push_str(&format!(
        "| workload | clients | {b} ops/s | {a} ops/s | {b}/{a} (pairs) | {b} p50 ms | {a} p50 ms \
         | {b} p99 ms | {a} p99 ms | CPU us/op {b} (servers + client) | CPU us/op {a} \
         (servers + client) | client bytes/op {b} (out/in) | client bytes/op {a} (out/in) \
         | {b} raft msgs/op | {b} entries/fsync | errors ({b}, {a}) |\n"
    ));
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for p in &cmp.passes {
        let (sh, et) = (&p.b[..], &p.a[..]);
        if sh.is_empty() || et.is_empty() {
            continue;
        }
        let mean =
            |rs: &[Report], f: fn(&Report) -> f64| rs.iter().map(f).sum::<f64>() / rs.len() as f64;
        let total = |rs: &[Report]| rs.iter().map(|r| r.ops_per_sec).sum::<f64>();
        let ratio = total(sh) / total(et).max(1e-9);
        let cpu = |rs: &[Report]| {
            let costs: Vec<_> = rs.iter().filter_map(|r| r.cost_per_op.as_ref()).collect();
            match costs.is_empty() {
                true => "n/a".to_string(),
                false => {
                    let n = costs.len() as f64;
                    let t = costs.iter().map(|c| c.total_cpu_us).sum::<f64>() / n;
                    let sv = costs.iter().map(|c| c.server_cpu_us).sum::<f64>() / n;
                    let cl = costs.iter().map(|c| c.client_cpu_us).sum::<f64>() / n;
                    format!("{t:.0} ({sv:.0} + {cl:.0})")
                }
            }
        };
        let wire = |rs: &[Report]| {
            let w: Vec<_> = rs.iter().filter_map(|r| r.client_wire.as_ref()).collect();
            match w.is_empty() {
                true => "n/a".to_string(),
                false => {
                    let n = w.len() as f64;
                    let out = w.iter().map(|w| w.bytes_out).sum::<f64>() / n;
                    let inb = w.iter().map(|w| w.bytes_in).sum::<f64>() / n;
                    format!("{out:.0} / {inb:.0}")
                }
            }
        };
        let epf = mean(sh, |r| {
            r.cluster_work.as_ref().map_or(0.0, |w| w.entries_per_fsync)
        });
        let msgs = mean(sh, |r| {
            r.cluster_work
                .as_ref()
                .map_or(0.0, |w| w.raft_messages_per_op)
        });
        let errors = |rs: &[Report]| rs.iter().map(|r| r.errors).sum::<u64>();
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {ratio:.2}x | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {msgs:.2} | {epf:.1} | {}, {} |\n",
            p.workload.name(),
            p.clients,
            mean(sh, |r| r.ops_per_sec),
            mean(et, |r| r.ops_per_sec),
            mean(sh, |r| r.latency.p50_ms),
            mean(et, |r| r.latency.p50_ms),
            mean(sh, |r| r.latency.p99_ms),
            mean(et, |r| r.latency.p99_ms),
            cpu(sh),
            cpu(et),
            wire(sh),
            wire(et),
            errors(sh),
            errors(et)
        ));
    }
    s
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
