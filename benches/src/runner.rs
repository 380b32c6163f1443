//! One `shoal bench` run: optional pre-split and preload, a warm-up, the measured
//! phase, and the report.
//!
//! `--clients` loops each keep one request in flight. A request counts in the
//! measured phase when it started after the warm-up and finished before the phase's
//! end; a failed one counts as an error, never as throughput. Counters and CPU time
//! are read right before and right after the measured phase. Every phase is bounded:
//! preload by the key count, warm-up and measurement by their durations, and the
//! final drain by the request deadline.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::args::BenchArgs;
use crate::counters;
use crate::proc_cost;
use crate::report::Report;
use crate::stats::{Latency, LoopStats};
use crate::target::{Step, Target};
use crate::wire;
use crate::workload::{key_of, Op, OpStream};
use crate::ycsb::Records;

/// State the client loops share with the driver.
struct Shared {
    /// Set after the warm-up: requests started from now on are measured.
    measuring: AtomicBool,
    /// End of the measured phase (set with `measuring`).
    end: OnceLock<Instant>,
    /// Set when the loops must stop.
    stop: AtomicBool,
    /// Measured requests still allowed (`--ops`); `i64::MAX` without a budget.
    tickets: AtomicI64,
    /// Requests finished in the current phase, ok or not (for the progress line).
    done: AtomicU64,
    /// Requests failed in the current phase.
    failed: AtomicU64,
}

impl Shared {
    /// Nothing measured yet, with `tickets` measured requests allowed.
    fn new(tickets: i64) -> Shared {
        Shared {
            measuring: AtomicBool::new(false),
            end: OnceLock::new(),
            stop: AtomicBool::new(false),
            tickets: AtomicI64::new(tickets),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

/// What the measured phase gave.
struct Measured {
    /// Every loop's measured requests.
    stats: LoopStats,
    /// The phase's length: `--duration`, or with `--ops` spent early, until the last
    /// measured request finished.
    elapsed: Duration,
}

/// Runs the benchmark described by `args` and returns its report.
pub async fn run(args: &BenchArgs) -> Result<Report, String> {
    let args = &args.resolved();
    args.validate()?;
    let target = Target::connect(args).await?;
    let mut report = Report::header(args);
    let progress = Progress::new(args.quiet);
    report.regions = prepare_regions(&target, args, &progress).await?;
    if args.preload() {
        preload(&target, args, &progress).await?;
    }

    let shared = Arc::new(Shared::new(args.ops.map_or(i64::MAX, |n| n as i64)));
    let records = Arc::new(Records::new(args.key_count()));
    let mut loops = Loops(Vec::with_capacity(args.clients));
    for i in 0..args.clients {
        let (target, shared) = (target.clone(), shared.clone());
        let stream = OpStream::new(args, i, records.clone());
        let value_size = args.value_bytes();
        let task = tokio::spawn(client_loop(i, target, stream, value_size, shared));
        loops.0.push(task);
    }

    if !args.warmup.is_zero() {
        let warm = progress.phase("warm-up", args.warmup, shared.clone());
        tokio::time::sleep(args.warmup).await;
        warm.finish();
    }
    let before = snapshot(&target).await?;
    let pids_before = counters::snapshot_pids(&args.pids);
    // The servers on this machine: the `--pids`, or Shoal's node processes.
    let mut server_pids = args.pids.clone();
    if server_pids.is_empty() {
        server_pids = before
            .iter()
            .flat_map(|s| &s.nodes)
            .filter_map(|n| n.pid)
            .collect();
    }
    let me = std::process::id();
    let (servers_before, me_before) = (proc_cost::sample_all(&server_pids), proc_cost::sample(me));
    let wire_before = wire::sample(me);
    let measured = measure(args, &progress, &shared, &mut loops).await?;
    let wire_after = wire::sample(me);
    let (servers_after, me_after) = (proc_cost::sample_all(&server_pids), proc_cost::sample(me));
    let after = snapshot(&target).await?;
    let pids_after = counters::snapshot_pids(&args.pids);

    record(&mut report, measured, args);
    let counted = report.ops + report.errors;
    if let (Some(b), Some(a)) = (before, after) {
        report.cluster_work = Some(counters::cluster_work(&b, &a, counted));
    }
    report.process_cpu = counters::pid_work(&pids_before, &pids_after, counted);
    report.servers = proc_cost::costs(&servers_before, &servers_after);
    if let (Some(b), Some(a)) = (me_before, me_after) {
        let client = proc_cost::cost(me, &b, &a);
        if !report.servers.is_empty() {
            report.cost_per_op = Some(proc_cost::per_op(&report.servers, &client, counted));
        }
        report.client = Some(client);
    }
    if let (Some(b), Some(a)) = (wire_before, wire_after) {
        report.client_wire = Some(wire::per_op(b, a, counted));
    }
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    Ok(report)
}

/// With `--regions`, splits a Shoal cluster that has fewer; returns how many regions
/// a Shoal cluster has (`None` for etcd).
async fn prepare_regions(
    target: &Target,
    args: &BenchArgs,
    progress: &Progress,
) -> Result<Option<usize>, String> {
    match target {
        Target::Shoal(client) => {
            if let Some(k) = args.regions {
                ensure_regions(client, k, progress).await?;
            }
            let (regions, _) = client
                .list_regions()
                .await
                .map_err(|e| format!("cannot list regions: {e}"))?;
            Ok(Some(regions.len()))
        }
        Target::Etcd(_) if args.regions.is_some() => {
            progress.note("--regions applies to Shoal only; ignored for etcd");
            Ok(None)
        }
        Target::Etcd(_) => Ok(None),
    }
}

/// The measured phase: from now until its end (or until the loops spend the `--ops`
/// budget), then the loops are stopped and their stats collected.
async fn measure(
    args: &BenchArgs,
    progress: &Progress,
    shared: &Arc<Shared>,
    loops: &mut Loops<(LoopStats, Instant)>,
) -> Result<Measured, String> {
    shared.done.store(0, Ordering::Relaxed);
    shared.failed.store(0, Ordering::Relaxed);
    let limit = args.measure_limit();
    let start = Instant::now();
    let end = start + limit;
    let _ = shared.end.set(end);
    shared.measuring.store(true, Ordering::SeqCst);
    let measure = progress.phase("measure", limit, shared.clone());

    // Wait for the end of the phase, or for every loop to spend the --ops budget.
    let all_done = futures::future::join_all(loops.0.iter_mut());
    let finished = tokio::select! {
        _ = tokio::time::sleep_until(end.into()) => None,
        results = all_done => Some(results),
    };
    shared.stop.store(true, Ordering::SeqCst);
    let stopped = Instant::now();
    measure.finish();
    let results = match finished {
        Some(r) => r,
        None => drain(loops, args.request_timeout).await?,
    };
    let mut stats = LoopStats::default();
    let mut last = start;
    for r in results {
        let (s, l) = r.map_err(|e| format!("a client loop failed: {e}"))?;
        stats.merge(s);
        last = last.max(l);
    }
    let elapsed = if args.ops.is_some() && stopped < end {
        last.duration_since(start)
    } else {
        limit
    };
    Ok(Measured { stats, elapsed })
}

/// Waits for stopped loops to finish their request in flight: bounded by the request
/// deadline.
async fn drain<T>(
    loops: &mut Loops<T>,
    request_timeout: Duration,
) -> Result<Vec<Result<T, tokio::task::JoinError>>, String> {
    let drain = request_timeout + Duration::from_secs(5);
    let all = futures::future::join_all(loops.0.iter_mut());
    tokio::time::timeout(drain, all)
        .await
        .map_err(|_| format!("requests still running {drain:?} after the end"))
}

/// Fills the report's throughput, errors and latency from the measured phase (and
/// YCSB's summary for the `ycsb-*` workloads).
fn record(report: &mut Report, measured: Measured, args: &BenchArgs) {
    let Measured { stats, elapsed } = measured;
    report.ycsb = crate::ycsb::Spec::of(args.workload)
        .map(|spec| crate::ycsb_report::summarize(spec, &stats, elapsed));
    report.elapsed_s = elapsed.as_secs_f64();
    report.ops = stats.ok_count();
    report.errors = stats.error_count();
    report.ops_per_sec = report.ops as f64 / report.elapsed_s.max(1e-9);
    report.latency = stats.overall();
    report.latency_by_op = stats
        .latency
        .iter()
        .map(|(op, h)| (op.to_string(), Latency::of(h)))
        .collect();
    report.errors_by_kind = stats.errors;
    report.error_samples = stats.error_samples;
}

/// The nodes' counters (Shoal only). A store that does not answer is named on
/// stderr, and the run goes on without its counters.
async fn snapshot(target: &Target) -> Result<Option<counters::Snapshot>, String> {
    match target {
        Target::Shoal(c) => {
            let snap = counters::snapshot_shoal(c).await?;
            for s in &snap.silent {
                eprintln!(
                    "store {} ({}) did not answer: its counters are left out ({})",
                    s.store_id, s.address, s.why
                );
            }
            Ok(Some(snap))
        }
        Target::Etcd(_) => Ok(None),
    }
}

/// Tasks aborted if the run is dropped (Ctrl-C) before they end.
struct Loops<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for Loops<T> {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// One loop: issue, time and check requests until told to stop. Returns its stats and
/// the instant its last measured request finished.
async fn client_loop(
    id: usize,
    target: Target,
    mut stream: OpStream,
    value_size: usize,
    shared: Arc<Shared>,
) -> (LoopStats, Instant) {
    let mut stats = LoopStats::default();
    let mut last = Instant::now();
    let mut steps: Vec<Step> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let measured = shared.measuring.load(Ordering::SeqCst);
        if measured && shared.tickets.fetch_sub(1, Ordering::Relaxed) <= 0 {
            break;
        }
        let op: Op = stream.next_op();
        steps.clear();
        let t0 = Instant::now();
        let result = target.execute_steps(id, op, value_size, &mut steps).await;
        let t1 = Instant::now();
        stream.finished(&op);
        shared.done.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
        if !measured || shared.end.get().is_some_and(|end| t1 > *end) {
            continue;
        }
        last = t1;
        match result {
            Ok(()) => stats.ok(op.name(), t1 - t0),
            Err(e) => stats.error(op.name(), &e.kind, &e.message),
        }
        for step in &steps {
            let failed = step.result.as_ref().err().map(|e| e.kind.as_str());
            stats.step(step.op, step.took, failed);
        }
    }
    (stats, last)
}

/// Writes every key once (`--keys` of `--value-size` bytes: for `ycsb-*`, YCSB's
/// load phase), `--clients` at a time. Any failure aborts the run: the reads that
/// follow would not know what to expect.
async fn preload(target: &Target, args: &BenchArgs, progress: &Progress) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Shared::new(0));
    let (keys, value_size) = (args.key_count(), args.value_bytes());
    let shown = progress.count("preload", keys, shared.clone());
    let mut tasks = Loops(Vec::new());
    for i in 0..(args.clients as u64).min(keys) as usize {
        let (target, next, shared) = (target.clone(), next.clone(), shared.clone());
        tasks.0.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= keys {
                    return Ok::<(), crate::target::OpError>(());
                }
                let key = key_of(k);
                target.execute(i, Op::Put(key), value_size).await?;
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in futures::future::join_all(tasks.0.iter_mut()).await {
        let r = t.map_err(|e| format!("a preload task failed: {e}"))?;
        r.map_err(|e| format!("preload failed ({}): {}", e.kind, e.message))?;
    }
    shown.finish();
    Ok(())
}

/// Splits the key space into `k` regions (even 2-byte prefixes) when there are fewer:
/// each region in one request at all the split keys it holds (at most
/// [`SPLIT_KEYS_PER_REQUEST`] at once), the regions in turn, until every key starts a
/// region. The layout is tracked from the splits' own answers (one store's
/// `ListRegions` may not know the newest regions yet); a split that fails is tried
/// again on a fresh listing, up to 10 times in all.
async fn ensure_regions(
    client: &shoal_client::Client,
    k: usize,
    progress: &Progress,
) -> Result<(), String> {
    use shoal_proto::RegionExt;
    let keys: Vec<Vec<u8>> = (1..k)
        .map(|i| ((i * 65_536 / k) as u16).to_be_bytes().to_vec())
        .collect();
    let mut failures = 0;
    'listing: loop {
        let (listed, _) = client
            .list_regions()
            .await
            .map_err(|e| format!("cannot list regions: {e}"))?;
        if listed.len() >= k {
            return Ok(());
        }
        if failures == 0 {
            progress.note(&format!(
                "the cluster has {} regions; splitting into {k}",
                listed.len()
            ));
        }
        // Regions by start key.
        let mut known: std::collections::BTreeMap<Vec<u8>, shoal_proto::metapb::Region> = listed
            .into_iter()
            .filter_map(|r| r.region)
            .map(|r| (r.start_key.clone(), r))
            .collect();
        loop {
            // The keys that do not start a region yet, by the region holding them;
            // keys in ranges the listing store does not know go one by one, routed
            // by the client's own region cache.
            let mut by_region: std::collections::BTreeMap<u64, Vec<Vec<u8>>> = Default::default();
            let mut unplaced = Vec::new();
            for key in &keys {
                let holder = known.range(..=key.clone()).next_back().map(|(_, r)| r);
                match holder.filter(|r| r.contains_key(key)) {
                    Some(r) if r.start_key == *key => {}
                    Some(r) => by_region.entry(r.id).or_default().push(key.clone()),
                    None => unplaced.push(key.clone()),
                }
            }
            if !unplaced.is_empty() {
                client
                    .split(unplaced)
                    .await
                    .map_err(|e| format!("--regions {k}: the split failed: {e}"))?;
            }
            if by_region.is_empty() {
                return Ok(());
            }
            for (region_id, mut keys) in by_region {
                keys.truncate(SPLIT_KEYS_PER_REQUEST);
                match client.split_region(region_id, keys).await {
                    Ok(regions) => {
                        known.retain(|_, r| r.id != region_id);
                        known.extend(regions.into_iter().map(|r| (r.start_key.clone(), r)));
                    }
                    Err(e) if failures < 10 => {
                        failures += 1;
                        tracing::debug!("split of region {region_id} failed ({e}); listing again");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        continue 'listing;
                    }
                    Err(e) => {
                        return Err(format!(
                            "--regions {k}: splitting region {region_id} failed: {e}"
                        ))
                    }
                }
            }
        }
    }
}

/// Split keys sent in one request (the server takes up to 1,000).
const SPLIT_KEYS_PER_REQUEST: usize = 500;

/// The live progress line on stderr: rewritten in place on a terminal, a line every
/// 5 s otherwise.
struct Progress {
    quiet: bool,
    tty: bool,
}

/// A running progress printer; `finish` stops it.
struct Shown {
    task: Option<tokio::task::JoinHandle<()>>,
    tty: bool,
}

impl Shown {
    fn finish(self) {}
}

impl Drop for Shown {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            if self.tty {
                eprintln!();
            }
        }
    }
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("bench: {text}");
        }
    }

    fn spawn(&self, line: impl Fn(f64) -> String + Send + 'static) -> Shown {
        if self.quiet {
            return Shown {
                task: None,
                tty: false,
            };
        }
        let (tty, started) = (self.tty, Instant::now());
        let every = Duration::from_secs(if tty { 1 } else { 5 });
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let text = line(started.elapsed().as_secs_f64());
                if tty {
                    eprint!("\r\x1b[2K{text}");
                } else {
                    eprintln!("{text}");
                }
            }
        });
        Shown {
            task: Some(task),
            tty,
        }
    }

    /// "measure 12.0 s / 30.0 s: 123456 requests, 10288 ops/s, 0 errors".
    fn phase(&self, name: &'static str, total: Duration, shared: Arc<Shared>) -> Shown {
        let total = total.as_secs_f64();
        self.spawn(move |t| {
            let done = shared.done.load(Ordering::Relaxed);
            let failed = shared.failed.load(Ordering::Relaxed);
            format!(
                "bench: {name} {t:.1} s / {total:.1} s: {done} requests, {:.0} ops/s, {failed} errors",
                (done - failed.min(done)) as f64 / t.max(1e-9)
            )
        })
    }

    /// "preload 50000/100000 keys".
    fn count(&self, name: &'static str, total: u64, shared: Arc<Shared>) -> Shown {
        self.spawn(move |t| {
            let done = shared.done.load(Ordering::Relaxed);
            format!(
                "bench: {name} {done}/{total} keys, {:.0} keys/s",
                done as f64 / t.max(1e-9)
            )
        })
    }
}
