//! The `shoal` command: runs a storage node and talks to a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use shoal_server::cli::{self, AdminCommand, KvCommand};
use shoal_server::config::NodeConfig;

/// mimalloc: less CPU per request than the system's malloc (BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Shoal: a multi-raft sharded key-value storage engine.
#[derive(Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a storage node (defaults: a single-node cluster in ./shoal-data on 127.0.0.1:20160).
    Node(NodeArgs),
    /// Reads and writes keys.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Inspects the cluster.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Starts a local cluster of node processes on free ports; Ctrl-C stops them all.
    Playground(shoal_server::playground::PlaygroundArgs),
    /// Load generator: measures throughput and latency of a Shoal (or etcd) cluster.
    Bench(shoal_bench::BenchArgs),
    /// Starts an etcd cluster and a Shoal cluster on 127.0.0.1 and runs the same
    /// workload against each, side by side (what `make bench-compare` runs).
    BenchCompare(shoal_bench::compare::CompareArgs),
    /// Jepsen-style safety run: real node processes under kills, pauses, network
    /// partitions and splits/merges; checks linearizability, no lost write, replicas
    /// agree. `shoal chaos check HISTORY` checks a saved history.
    Chaos(shoal_chaos::cli::ChaosArgs),
}

/// Flags of `shoal node`; each overrides the config file, which overrides the defaults.
#[derive(Args, Clone)]
struct NodeArgs {
    /// A TOML config file (kebab-case keys, as the flags).
    #[arg(long)]
    config: Option<PathBuf>,
    /// This store's id, unique in the cluster: required with --initial-cluster;
    /// with --join, a new id is handed out unless given; a restart reads it from the
    /// data directory [default: 1 for a new single-node cluster].
    #[arg(long)]
    store_id: Option<u64>,
    /// The data directory [default: shoal-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC address (Kv, Admin, Raft) [default: 127.0.0.1:20160].
    #[arg(long)]
    addr: Option<String>,
    /// HTTP status address [default: 127.0.0.1:20180].
    #[arg(long)]
    status_addr: Option<String>,
    /// Initial cluster, ID=HOST:PORT,... (first boot only) [default: this store alone].
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Join a running cluster on first boot, HOST:PORT,... (any of its nodes): the
    /// store registers in the cluster directory and starts with no region
    /// (restarts need no --join) [default: none: bootstrap --initial-cluster].
    #[arg(long)]
    join: Option<String>,
    /// Addresses to dial for some stores instead of the cluster directory's,
    /// ID=HOST:PORT,... (stores reaching each other at different addresses)
    /// [default: none].
    #[arg(long)]
    peer_addresses: Option<String>,
    /// Regions to bootstrap on first boot [default: 1].
    #[arg(long)]
    initial_regions: Option<usize>,
    /// Largest value accepted, in bytes; a put of it must fit in one Raft entry
    /// [default: 1048576].
    #[arg(long)]
    max_value_size: Option<usize>,
    /// Largest Raft entry, in bytes; every gRPC message limit is this plus 1 MiB
    /// [default: 8388608].
    #[arg(long)]
    raft_entry_max_size: Option<usize>,
    /// Most keys in one batch write [default: 1024].
    #[arg(long)]
    max_batch_keys: Option<usize>,
    /// How often each leader considers truncating its region's Raft log, in
    /// milliseconds [default: 10000].
    #[arg(long)]
    raft_log_gc_tick_interval_ms: Option<u64>,
    /// Truncate a region's log only when at least this many entries, applied and
    /// held by every replica, can go [default: 50].
    #[arg(long)]
    raft_log_gc_threshold: Option<u64>,
    /// Past this many entries in a region's log, truncate even entries a slow or
    /// stopped replica needs (it catches up from a snapshot) [default: 73728].
    #[arg(long)]
    raft_log_gc_count_limit: Option<u64>,
    /// ... or past this many bytes of entries [default: 75497472].
    #[arg(long)]
    raft_log_gc_size_limit: Option<u64>,
    /// Raft snapshots sent at once, to all stores together [default: 2].
    #[arg(long)]
    snap_max_concurrent: Option<usize>,
    /// Bytes per second all snapshots together are sent at [default: 104857600].
    #[arg(long)]
    snap_max_bytes_per_sec: Option<u64>,
    /// Let a new commit index ride on the next append or heartbeat instead of
    /// sending it to every follower at once [default: true].
    #[arg(long, value_name = "BOOL")]
    raft_skip_bcast_commit: Option<bool>,
    /// Propose the writes a region's leader receives in one poll round as one Raft
    /// entry [default: true].
    #[arg(long, value_name = "BOOL")]
    raft_merge_writes: Option<bool>,
    /// Bytes of persisted Raft entries each region's replica keeps in memory
    /// [default: 4194304].
    #[arg(long)]
    entry_cache_max_bytes: Option<u64>,
    /// Bytes of persisted Raft entries the store's replicas keep in memory together
    /// [default: 268435456].
    #[arg(long)]
    entry_cache_store_max_bytes: Option<u64>,
    /// Threads of the node's async runtime (gRPC, the Raft transport); 0 means one
    /// per core [default: 0].
    #[arg(long)]
    grpc_threads: Option<usize>,
}

impl NodeArgs {
    fn into_config(self) -> Result<NodeConfig, String> {
        let mut c = match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        set!(
            store_id,
            data_dir,
            addr,
            status_addr,
            initial_cluster,
            join,
            peer_addresses,
            initial_regions,
            max_value_size,
            raft_entry_max_size,
            max_batch_keys,
            raft_log_gc_tick_interval_ms,
            raft_log_gc_threshold,
            raft_log_gc_count_limit,
            raft_log_gc_size_limit,
            snap_max_concurrent,
            snap_max_bytes_per_sec,
            entry_cache_max_bytes,
            entry_cache_store_max_bytes,
            raft_skip_bcast_commit,
            raft_merge_writes,
            grpc_threads
        );
        c.validate()?;
        Ok(c)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

/// A panic on any thread of a node ends the process: a poller, log writer or apply
/// worker that died would leave its regions silent while the process stays up, so
/// nothing would fail over. The default hook reports the panic (message, thread,
/// backtrace when `RUST_BACKTRACE` is set); then the process aborts, supervision
/// restarts it, and it recovers from disk. Installed by `shoal node` only: tests
/// that run a node in-process keep unwinding.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!("panic: {info}; aborting so that the node restarts and recovers from disk");
        std::process::abort();
    }));
}

async fn run_node(args: NodeArgs) -> Result<i32, String> {
    abort_on_panic();
    let _failpoints = failpoints()?;
    let cfg = args.into_config()?;
    let listener = tokio::net::TcpListener::bind(&cfg.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.addr))?;
    eprintln!(
        "shoal: starting store {} on {} with data in {}",
        cfg.store_id,
        cfg.addr,
        cfg.data_dir.display()
    );
    shoal_server::node::run(cfg, listener, shutdown_signal()).await?;
    Ok(0)
}

/// The failpoints named in the `FAILPOINTS` environment variable
/// (`name=action;...`, the `fail` crate's syntax), armed for the node's life. A
/// `shoal` built without the `failpoints` feature refuses to start with them set
/// rather than run without the faults asked for.
#[cfg(feature = "failpoints")]
fn failpoints() -> Result<fail::FailScenario<'static>, String> {
    let set = std::env::var("FAILPOINTS").unwrap_or_default();
    if !set.is_empty() {
        tracing::warn!("failpoints armed: {set}");
    }
    Ok(fail::FailScenario::setup())
}

/// Held for the node's life (nothing to hold without the feature).
#[cfg(not(feature = "failpoints"))]
struct NoFailpoints;

#[cfg(not(feature = "failpoints"))]
fn failpoints() -> Result<NoFailpoints, String> {
    match std::env::var_os("FAILPOINTS") {
        Some(_) => Err(
            "FAILPOINTS is set, but this shoal was built without the failpoints \
                        feature (cargo build --features shoal-server/failpoints)"
                .into(),
        ),
        None => Ok(NoFailpoints),
    }
}

async fn run_bench(args: shoal_bench::BenchArgs) -> Result<i32, String> {
    let report = tokio::select! {
        r = shoal_bench::runner::run(&args) => r?,
        _ = shutdown_signal() => return Err("interrupted".into()),
    };
    print!("{}", report.render());
    Ok(if report.errors > 0 { 1 } else { 0 })
}

fn current_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find the shoal executable: {e}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,raft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    // A node's runtime has `grpc-threads` threads (its config is read here first);
    // the other commands take tokio's default, one per core.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Node(args) = &command {
        match args.clone().into_config() {
            Ok(cfg) => builder.worker_threads(cfg.runtime_threads()),
            Err(e) => {
                eprintln!("shoal: {e}");
                return ExitCode::FAILURE;
            }
        };
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Node(args) => run_node(args).await,
            Command::Kv(cmd) => cli::run_kv(cmd).await,
            Command::Admin(cmd) => cli::run_admin(cmd).await,
            Command::Playground(args) => {
                shoal_server::playground::run(args, shutdown_signal()).await
            }
            Command::Bench(args) => run_bench(args).await,
            Command::BenchCompare(args) => match current_exe() {
                Ok(me) => shoal_bench::compare::run(args, me, shutdown_signal()).await,
                Err(e) => Err(e),
            },
            Command::Chaos(args) => match current_exe() {
                Ok(me) => shoal_chaos::cli::main(args, me).await,
                Err(e) => Err(e),
            },
        }
    });
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("shoal: {e}");
            ExitCode::FAILURE
        }
    }
}
