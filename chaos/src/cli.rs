//! `shoal chaos` (a run) and `shoal chaos check HISTORY` (check a saved history).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use shoal_client::config::parse_duration;

use crate::cluster::ClusterSpec;
use crate::nemesis::Kind;
use crate::run::{self, RunSpec};

/// `shoal chaos`: real node processes under faults, then the checks. Prints the
/// seed (`--seed` replays a run's schedule), a summary table and the run
/// directory; exits 0 only when every check passes.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ChaosArgs {
    /// `check HISTORY`: check a saved history on its own.
    #[command(subcommand)]
    pub command: Option<ChaosCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands of `shoal chaos`.
#[derive(Subcommand, Debug)]
pub enum ChaosCommand {
    /// Checks a history file (JSON lines, see RELIABILITY.md) for linearizability.
    Check {
        /// The history file.
        history: PathBuf,
    },
}

/// The settings of a run.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Node processes (3 or 5 make sense) [default: 3].
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Initial regions [default: 4].
    #[arg(long, default_value_t = 4)]
    pub regions: usize,
    /// How long the workload and the faults run: `90s`, `2m`, `500ms` [default: 60s].
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The seed of the fault schedule and the workload [default: random, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Nemeses, comma separated: kill, pause, partition, admin, disk (or none).
    /// `disk` needs a `shoal` built with the `failpoints` feature
    /// [default: kill,pause,partition,admin].
    #[arg(long, default_value = "kill,pause,partition,admin")]
    pub nemesis: String,
    /// Workloads, comma separated: register, set [default: register,set].
    #[arg(long, default_value = "register,set")]
    pub workload: String,
    /// Client processes, split between the workloads [default: 8].
    #[arg(long, default_value_t = 8)]
    pub clients: u64,
    /// Register keys per initial region [default: 2].
    #[arg(long, default_value_t = 2)]
    pub keys_per_region: usize,
    /// Raft tick of the nodes in milliseconds (an election takes 10 ticks)
    /// [default: 50].
    #[arg(long, default_value_t = 50)]
    pub raft_tick_ms: u64,
    /// Where the run's files go [default: a new directory under the system's temp
    /// directory, printed].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the cluster with mutual TLS on every connection (certificates made by
    /// `shoal cert` in DIR/certs).
    #[arg(long)]
    pub tls: bool,
}

impl RunArgs {
    /// The run this asks for; `exe` is the `shoal` binary the nodes run.
    pub fn spec(&self, exe: PathBuf) -> Result<RunSpec, String> {
        if !(1..=9).contains(&self.nodes) {
            return Err(format!("--nodes must be 1..=9, got {}", self.nodes));
        }
        if !(1..=1024).contains(&self.regions) {
            return Err(format!("--regions must be 1..=1024, got {}", self.regions));
        }
        if self.clients == 0 || self.keys_per_region == 0 {
            return Err("--clients and --keys-per-region must be at least 1".into());
        }
        if self.clients < 2 && self.workload.contains("register") && self.workload.contains("set") {
            return Err("--clients must be at least 2 to run both workloads".into());
        }
        if !(1..=1000).contains(&self.raft_tick_ms) {
            return Err("--raft-tick-ms must be 1..=1000".into());
        }
        let workloads: Vec<&str> = self.workload.split(',').map(str::trim).collect();
        if let Some(w) = workloads.iter().find(|w| !["register", "set"].contains(w)) {
            return Err(format!("unknown workload {w:?}: expected register, set"));
        }
        let seed = self.seed.unwrap_or_else(rand::random);
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                std::env::temp_dir().join(format!("shoal-chaos/{now}-seed-{seed}"))
            }
        };
        Ok(RunSpec {
            cluster: ClusterSpec {
                exe,
                nodes: self.nodes,
                regions: self.regions,
                raft_tick_ms: self.raft_tick_ms,
                dir,
                tls: self.tls,
            },
            duration: self.duration,
            seed,
            nemeses: Kind::parse_list(&self.nemesis)?,
            register: workloads.contains(&"register"),
            set: workloads.contains(&"set"),
            clients: self.clients,
            keys_per_region: self.keys_per_region,
        })
    }
}

/// Runs `shoal chaos ...`; `exe` is the `shoal` binary. Returns the exit code.
pub async fn main(args: ChaosArgs, exe: PathBuf) -> Result<i32, String> {
    if let Some(ChaosCommand::Check { history }) = args.command {
        return check_file(&history);
    }
    let spec = args.run.spec(exe)?;
    println!(
        "chaos: seed {} (replay with --seed {})",
        spec.seed, spec.seed
    );
    let report = run::run(spec.clone(), &|line| println!("chaos: {line}")).await?;
    print!("\n{}", run::summary(&spec, &report));
    Ok(if report.passed() { 0 } else { 1 })
}

/// `shoal chaos check HISTORY`.
/// The register keys are checked for linearizability; the set keys too when the
/// run's final scan (`set_scan.txt`) sits next to the history.
fn check_file(path: &std::path::Path) -> Result<i32, String> {
    let events = crate::history::read(path).map_err(|e| e.to_string())?;
    let scan_file = path.with_file_name(crate::run::SET_SCAN_FILE);
    let scan = match std::fs::read_to_string(&scan_file) {
        Ok(text) => Some(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    crate::history::from_hex(l)
                        .ok_or_else(|| format!("{}: {l:?} is not hex", scan_file.display()))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Err(_) => {
            println!(
                "(no {} next to the history: the set keys are not checked)",
                crate::run::SET_SCAN_FILE
            );
            None
        }
    };
    let outcomes = crate::run::check_history(&events, scan.as_deref());
    for o in &outcomes {
        let verdict = if o.passed { "PASS" } else { "FAIL" };
        println!("{verdict}  {}: {}", o.name, o.detail);
    }
    Ok(if outcomes.iter().all(|o| o.passed) {
        0
    } else {
        1
    })
}
