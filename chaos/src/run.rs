//! One chaos run: start the cluster, run the workloads while the nemesis injects
//! faults, heal, let the cluster settle, check, and write everything under the run
//! directory: `history.jsonl`, `nemesis.log`, `node-<id>.log`, `summary.txt`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_client::{Client, ClientConfig, TlsPaths};

use crate::checks::{self, Outcome};
use crate::cluster::{Cluster, ClusterSpec};
use crate::history::{self, from_hex, Event};
use crate::nemesis::{FaultCounts, Kind, Nemesis};
use crate::workload::{self, Counts, Recorder, Worker};

/// What a run does.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The cluster.
    pub cluster: ClusterSpec,
    /// How long the workload and the nemesis run.
    pub duration: Duration,
    /// The schedule's seed.
    pub seed: u64,
    /// The nemeses drawn from.
    pub nemeses: Vec<Kind>,
    /// Run the register workload.
    pub register: bool,
    /// Run the set workload.
    pub set: bool,
    /// Client processes (split between the workloads).
    pub clients: u64,
    /// Register keys per initial region.
    pub keys_per_region: usize,
}

/// What a run found.
pub struct RunReport {
    /// Every check, passed or not.
    pub outcomes: Vec<Outcome>,
    /// Register operations.
    pub register: Counts,
    /// Set operations (one per key).
    pub set: Counts,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// Where the run's files are.
    pub dir: PathBuf,
}

impl RunReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.passed)
    }
}

fn client_config(tls: Option<&TlsPaths>) -> ClientConfig {
    ClientConfig {
        tls: tls.cloned(),
        request_timeout: Duration::from_secs(5),
        rpc_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    }
}

/// Connects to the cluster, retrying while the nodes come up.
async fn connect(
    addrs: &[String],
    tls: Option<&TlsPaths>,
    timeout: Duration,
) -> Result<Client, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match Client::connect(addrs.to_vec(), client_config(tls)).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("the cluster did not come up: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Runs `spec`; `progress` hears one line per phase.
pub async fn run(spec: RunSpec, progress: &dyn Fn(&str)) -> Result<RunReport, String> {
    let dir = spec.cluster.dir.clone();
    let cluster = Cluster::start(spec.cluster.clone())
        .await
        .map_err(|e| format!("cannot start the cluster in {}: {e}", dir.display()))?;
    let addrs = cluster.addrs();
    let stores: BTreeMap<u64, String> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.addr(id)))
        .collect();
    let tls = cluster.client_tls();
    let cluster = Arc::new(Mutex::new(cluster));
    progress(&format!("{} nodes up in {}", stores.len(), dir.display()));
    let admin = connect(&addrs, tls.as_ref(), Duration::from_secs(30)).await?;
    let recorder = Recorder::new();
    let start = Instant::now();
    let until = start + spec.duration;
    let (register, set) = start_workers(&spec, &addrs, tls.as_ref(), &recorder, until).await?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let nemesis = Nemesis {
        kinds: spec.nemeses.clone(),
        cluster: cluster.clone(),
        admin: admin.clone(),
        rng: Nemesis::rng(spec.seed),
        election: Duration::from_millis(spec.cluster.raft_tick_ms * 10),
        start,
        log: log.clone(),
    };
    progress(&format!(
        "running for {:?}: nemesis {:?}",
        spec.duration,
        spec.nemeses.iter().map(|k| k.name()).collect::<Vec<_>>()
    ));
    let faults = nemesis.run(until).await;
    let (register, register_panics) = sum(register).await;
    let (set, set_panics) = sum(set).await;
    progress("healing and letting the cluster settle");
    cluster
        .lock()
        .expect("cluster")
        .heal()
        .map_err(|e| format!("cannot restart a node: {e}"))?;
    let events = recorder.events();
    write_files(&dir, &events, &log.lock().expect("log"))?;
    progress("checking");
    let mut outcomes = history_checks(&events, &admin, spec.set, &dir).await;
    outcomes.push(checks::regions_cover(&stores, tls.as_ref(), Duration::from_secs(60)).await);
    outcomes.push(checks::replicas_agree(&stores, tls.as_ref(), Duration::from_secs(60)).await);
    let exits = cluster.lock().expect("cluster").check_exits();
    let detail = match exits.is_empty() {
        true => "every node the nemesis did not kill kept running".to_string(),
        false => format!("{exits:?}"),
    };
    outcomes.push(Outcome::new("no node exited", exits.is_empty(), detail));
    outcomes.push(progress_check(
        &spec,
        register,
        set,
        register_panics + set_panics,
    ));
    cluster.lock().expect("cluster").stop();
    let report = RunReport {
        outcomes,
        register,
        set,
        faults,
        dir: dir.clone(),
    };
    std::fs::write(dir.join("summary.txt"), summary(&spec, &report))
        .map_err(|e| format!("cannot write the summary: {e}"))?;
    Ok(report)
}

type Workers = Vec<tokio::task::JoinHandle<Counts>>;

/// Starts the client processes: the first half on the register workload, the
/// rest on the set workload (all on one when only one is asked for).
async fn start_workers(
    spec: &RunSpec,
    addrs: &[String],
    tls: Option<&TlsPaths>,
    recorder: &Recorder,
    until: Instant,
) -> Result<(Workers, Workers), String> {
    let keys = workload::register_keys(spec.cluster.regions, spec.keys_per_region);
    let (mut register, mut set) = (Vec::new(), Vec::new());
    for i in 0..spec.clients {
        let client = connect(addrs, tls, Duration::from_secs(30)).await?;
        let worker = Worker {
            process: i,
            stride: spec.clients,
            client,
            recorder: recorder.clone(),
            rng: workload::worker_rng(spec.seed, i),
            until,
        };
        let on_register = spec.register && (!spec.set || i % 2 == 0);
        if on_register {
            register.push(tokio::spawn(worker.run_register(keys.clone())));
        } else {
            set.push(tokio::spawn(worker.run_set()));
        }
    }
    Ok((register, set))
}

/// The workers' counts, and how many of them panicked.
async fn sum(workers: Workers) -> (Counts, usize) {
    let mut total = Counts::default();
    let mut panicked = 0;
    for w in workers {
        match w.await {
            Ok(c) => total.merge(c),
            Err(_) => panicked += 1,
        }
    }
    (total, panicked)
}

fn write_files(dir: &std::path::Path, events: &[Event], log: &[String]) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("cannot write {what}: {e}");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(dir.join("history.jsonl")).map_err(|e| io("the history", e))?,
    );
    history::write(&mut out, events).map_err(|e| io("the history", e))?;
    std::fs::write(dir.join("nemesis.log"), log.join("\n") + "\n")
        .map_err(|e| io("the nemesis log", e))
}

/// The final scan of the whole key space: the set keys found.
async fn final_set_keys(client: &Client) -> Result<Vec<Vec<u8>>, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.scan(b"", b"", usize::MAX).await {
            Ok(pairs) => {
                return Ok(pairs
                    .into_iter()
                    .map(|(k, _)| k)
                    .filter(|k| workload::is_set_key(k))
                    .collect())
            }
            Err(e) if Instant::now() >= deadline => return Err(format!("final scan: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Splits the history by workload: (register events, set events).
fn split_history(events: &[Event]) -> (Vec<Event>, Vec<Event>) {
    events
        .iter()
        .cloned()
        .partition(|e| !from_hex(&e.key).is_some_and(|k| workload::is_set_key(&k)))
}

/// The workloads ran: no client process panicked, and each workload asked for had
/// operations acknowledged (a cluster down for the whole run would otherwise pass
/// every history check on an empty history).
fn progress_check(spec: &RunSpec, register: Counts, set: Counts, panics: usize) -> Outcome {
    let name = "workloads made progress";
    let mut problems = Vec::new();
    if panics > 0 {
        problems.push(format!("{panics} client processes panicked"));
    }
    if spec.register && register.ok == 0 {
        problems.push("no register operation succeeded".to_string());
    }
    if spec.set && set.ok == 0 {
        problems.push("no set write succeeded".to_string());
    }
    let detail = match problems.is_empty() {
        true => format!(
            "{} register and {} set operations acknowledged",
            register.ok, set.ok
        ),
        false => problems.join("; "),
    };
    Outcome::new(name, problems.is_empty(), detail)
}

/// The summary table.
pub fn summary(spec: &RunSpec, report: &RunReport) -> String {
    let mut s = String::new();
    let line = |s: &mut String, a: &str, b: String| s.push_str(&format!("{a:<34} {b}\n"));
    line(&mut s, "seed", spec.seed.to_string());
    line(&mut s, "duration", format!("{:?}", spec.duration));
    line(
        &mut s,
        "nodes / initial regions",
        format!("{} / {}", spec.cluster.nodes, spec.cluster.regions),
    );
    let tls = match spec.cluster.tls {
        true => "on (mutual, every connection)",
        false => "off",
    };
    line(&mut s, "TLS", tls.to_string());
    for (name, c) in [("register", report.register), ("set", report.set)] {
        line(
            &mut s,
            &format!("{name} ops (ok / fail / unknown)"),
            format!("{} ({} / {} / {})", c.ops, c.ok, c.fail, c.info),
        );
    }
    let faults: Vec<String> = report
        .faults
        .by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    line(
        &mut s,
        "faults",
        if faults.is_empty() {
            "none".into()
        } else {
            faults.join(", ")
        },
    );
    s.push('\n');
    for o in &report.outcomes {
        let verdict = if o.passed { "PASS" } else { "FAIL" };
        s.push_str(&format!("{verdict}  {:<32} {}\n", o.name, o.detail));
    }
    s.push_str(&format!("\nrun directory: {}\n", report.dir.display()));
    s
}

/// The register workload's linearizability check.
pub fn register_check(events: &[Event]) -> Outcome {
    let name = "register linearizable";
    match crate::linearizability::check(events) {
        Err(e) => Outcome::new(name, false, format!("malformed history: {e}")),
        Ok(report) => Outcome::new(name, report.passed(), report.to_string()),
    }
}

/// The file of a run directory holding the final scan's set keys (hex, one a line).
pub const SET_SCAN_FILE: &str = "set_scan.txt";

/// The history's checks: the registers are linearizable, and (set workload) every
/// acknowledged key is in the final scan and no key that was never written is. The
/// scan is written to [`SET_SCAN_FILE`] in `dir`.
async fn history_checks(
    events: &[Event],
    client: &Client,
    set: bool,
    dir: &std::path::Path,
) -> Vec<Outcome> {
    let name = "set: no lost or phantom write";
    let mut out = Vec::new();
    let scan = match set {
        false => None,
        true => match final_set_keys(client).await {
            Ok(keys) => {
                let text: String = keys.iter().map(|k| history::to_hex(k) + "\n").collect();
                if let Err(e) = std::fs::write(dir.join(SET_SCAN_FILE), text) {
                    out.push(Outcome::new(
                        name,
                        false,
                        format!("cannot save the scan: {e}"),
                    ));
                }
                Some(keys)
            }
            Err(e) => {
                out.push(Outcome::new(name, false, e));
                None
            }
        },
    };
    out.extend(check_history(events, scan.as_deref()));
    out
}

/// The checks of a history: the register keys' linearizability, and, given the
/// final scan's set keys, the set check.
pub fn check_history(events: &[Event], scan: Option<&[Vec<u8>]>) -> Vec<Outcome> {
    let (register, set_events) = split_history(events);
    let mut out = vec![register_check(&register)];
    if let Some(keys) = scan {
        let name = "set: no lost or phantom write";
        let scan = keys.iter().cloned().collect();
        out.push(match crate::set_check::check(&set_events, &scan) {
            Ok(report) => Outcome::new(name, report.passed(), report.to_string()),
            Err(e) => Outcome::new(name, false, format!("malformed history: {e}")),
        });
    }
    out
}
