//! The `shoal` command: runs a storage node and talks to a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use shoal_server::cli::{self, AdminArgs, KvArgs, ENDPOINTS_ENV};
use shoal_server::config::{NodeArgs, NodeConfig};
use shoal_server::logging::{self, LogArgs, LogSettings};

/// mimalloc: less CPU per request than the system's malloc (BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Shoal: a multi-raft sharded key-value storage engine.
#[derive(Parser)]
#[command(name = "shoal", version)]
struct Cli {
    /// The cluster `kv` and `admin` talk to: comma-separated gRPC addresses of one
    /// or more nodes (HOST:PORT,...). The same flag after kv/admin or after their
    /// subcommand wins over this one; this one wins over SHOAL_ENDPOINTS, which wins
    /// over the default [default: 127.0.0.1:20160]
    #[arg(
        id = "top_endpoints",
        long = "endpoints",
        env = ENDPOINTS_ENV,
        value_delimiter = ',',
        value_name = "ENDPOINTS"
    )]
    endpoints: Option<Vec<String>>,
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a storage node (defaults: a single-node cluster in ./shoal-data on
    /// 127.0.0.1:20160). Every setting is a flag and a key of the --config file under
    /// one name (docs/config.md); --print-config shows the result.
    Node(NodeArgs),
    /// Reads and writes keys.
    Kv(KvArgs),
    /// Inspects the cluster.
    Admin(AdminArgs),
    /// Starts a local cluster of node processes on free ports; Ctrl-C stops them all.
    Playground(shoal_server::playground::PlaygroundArgs),
    /// Makes certificates for a test cluster: a CA, store certificates and client
    /// certificates (README: Security).
    Cert(shoal_server::security::cert::CertArgs),
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

impl Cli {
    /// Parses the command line (exiting with clap's message on a usage error) and
    /// refuses `--endpoints` before a command other than `kv` and `admin`, which
    /// would otherwise be ignored (`bench` takes its own after the command).
    fn parse_checked() -> Cli {
        let matches = Cli::command().get_matches();
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let given = matches.value_source("top_endpoints") == Some(ValueSource::CommandLine);
        if given && !matches!(cli.command, Command::Kv(_) | Command::Admin(_)) {
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "--endpoints before the command is for `kv` and `admin`; give this \
                     command its own flags after its name",
                )
                .exit();
        }
        cli
    }

    /// The addresses `kv` and `admin` dial: the flag nearest the command, else the
    /// one before it or SHOAL_ENDPOINTS, else the default.
    fn endpoints(&self) -> Vec<String> {
        let outer = self.endpoints.as_deref();
        match &self.command {
            Command::Kv(args) => args.endpoints.resolve(outer),
            Command::Admin(args) => args.endpoints.resolve(outer),
            _ => Vec::new(),
        }
    }

    /// The cluster `kv` and `admin` talk to: [`Cli::endpoints`] and the TLS flags.
    fn cluster(&self) -> Result<cli::Cluster, String> {
        let tls = match &self.command {
            Command::Kv(args) => args.tls.paths()?,
            Command::Admin(args) => args.tls.paths()?,
            _ => None,
        };
        Ok(cli::Cluster {
            endpoints: self.endpoints(),
            tls,
        })
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

async fn run_node(cfg: NodeConfig) -> Result<i32, String> {
    abort_on_panic();
    let _failpoints = failpoints()?;
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

/// The node's configuration (for `shoal node`: its logging settings, runtime
/// threads and `--print-config` come from it) and the logging settings, read before
/// logging and the async runtime start; errors go to stderr.
fn prepare(cli: &Cli) -> Result<(Option<NodeConfig>, LogSettings), String> {
    match &cli.command {
        Command::Node(args) => {
            let cfg = args.into_config(&cli.log, logging::rust_log())?;
            let log = cfg.log_settings();
            Ok((Some(cfg), log))
        }
        _ => Ok((
            None,
            cli.log.apply(LogSettings::default(), logging::rust_log()),
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_checked();
    let (node_config, log) = match prepare(&cli) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shoal: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let (Command::Node(args), Some(cfg)) = (&cli.command, &node_config) {
        if args.print_config {
            return match cfg.to_commented_toml() {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shoal: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    if let Err(e) = logging::init(&log) {
        eprintln!("shoal: {e}");
        return ExitCode::FAILURE;
    }
    // A node's runtime has `grpc-threads` threads; the other commands take tokio's
    // default, one per core.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(cfg) = &node_config {
        builder.worker_threads(cfg.runtime_threads());
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cluster = cli.cluster();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node(_) => match node_config {
                Some(cfg) => run_node(cfg).await,
                None => unreachable!("prepare reads a node's configuration"),
            },
            Command::Kv(args) => cli::run_kv(&cluster?, args.command).await,
            Command::Admin(args) => cli::run_admin(&cluster?, args.command).await,
            Command::Playground(args) => {
                shoal_server::playground::run(args, shutdown_signal()).await
            }
            Command::Bench(args) => run_bench(args).await,
            Command::Cert(args) => shoal_server::security::cert::run(&args),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shoal").chain(args.iter().copied()))
    }

    fn endpoints(args: &[&str]) -> Vec<String> {
        parse(args).unwrap().endpoints()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        // clap's own checks: no two arguments with one name (the global logging
        // flags against every subcommand's), required values, defaults.
        Cli::command().debug_assert();
    }

    #[test]
    fn the_endpoints_flag_nearest_the_command_wins() {
        for args in [
            &["--endpoints", "a:1", "kv", "get", "k"][..],
            &["kv", "--endpoints", "a:1", "get", "k"],
            &["kv", "get", "k", "--endpoints", "a:1"],
            &["--endpoints", "x:1", "kv", "--endpoints", "a:1", "get", "k"],
            &["--endpoints", "x:1", "kv", "get", "k", "--endpoints", "a:1"],
            &["kv", "--endpoints", "x:1", "get", "k", "--endpoints", "a:1"],
            &[
                "--endpoints",
                "x:1",
                "admin",
                "status",
                "--endpoints",
                "a:1",
            ],
            &[
                "admin",
                "--endpoints",
                "a:1",
                "split",
                "--region",
                "1",
                "--keys",
                "m",
            ],
            &["admin", "remove-store", "3", "--endpoints", "a:1"],
        ] {
            assert_eq!(endpoints(args), ["a:1"], "{args:?}");
        }
        assert_eq!(
            endpoints(&[
                "kv",
                "get",
                "k",
                "--endpoints",
                "a:1,b:2",
                "--endpoints",
                "c:3"
            ]),
            ["a:1", "b:2", "c:3"]
        );
        // Without any flag: SHOAL_ENDPOINTS (the binary's tests set it), else the
        // default.
        if std::env::var_os(ENDPOINTS_ENV).is_none() {
            assert_eq!(endpoints(&["kv", "get", "k"]), ["127.0.0.1:20160"]);
        }
    }

    #[test]
    fn logging_flags_go_anywhere_and_bad_formats_are_refused() {
        let cli = parse(&[
            "kv",
            "get",
            "k",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(cli.log.log_format, Some(logging::LogFormat::Json));
        assert_eq!(cli.log.log_level.as_deref(), Some("debug"));
        let cli = parse(&["--log-file", "/tmp/x.log", "node", "--print-config"]).unwrap();
        assert_eq!(cli.log.log_file, Some(PathBuf::from("/tmp/x.log")));
        let Err(err) = parse(&["--log-format", "xml", "kv", "get", "k"]) else {
            panic!("--log-format xml was taken");
        };
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(
            err.to_string().contains("[possible values: text, json]"),
            "{err}"
        );
    }
}
