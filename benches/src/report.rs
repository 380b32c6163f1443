//! The result of one `shoal bench` run: printed for people, written as JSON for
//! scripts (and for `shoal bench-compare`'s table). The `ycsb-*` workloads add
//! YCSB's own summary lines after it ([`crate::ycsb_report`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::args::{BenchArgs, KeyDist, TargetKind, Workload};
use crate::counters::{ClusterWork, ProcessCpu};
use crate::stats::Latency;

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The system measured.
    pub target: TargetKind,
    /// The workload.
    pub workload: Workload,
    /// The endpoints used.
    pub endpoints: Vec<String>,
    /// Requests in flight.
    pub clients: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Key space size.
    pub keys: u64,
    /// Key distribution.
    pub key_dist: KeyDist,
    /// Share of reads (mixed only).
    pub read_ratio: Option<f64>,
    /// Warm-up length in seconds.
    pub warmup_s: f64,
    /// Length of the measured phase in seconds.
    pub elapsed_s: f64,
    /// Successful requests in the measured phase.
    pub ops: u64,
    /// Failed requests in the measured phase.
    pub errors: u64,
    /// Successful requests per second.
    pub ops_per_sec: f64,
    /// Latency of the successful requests.
    pub latency: Latency,
    /// Latency per operation kind.
    pub latency_by_op: BTreeMap<String, Latency>,
    /// Failed requests by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first message of each error kind.
    pub error_samples: BTreeMap<String, String>,
    /// Shoal only: the nodes' work during the measured phase.
    pub cluster_work: Option<ClusterWork>,
    /// CPU of the `--pids` processes.
    pub process_cpu: Vec<ProcessCpu>,
    /// Number of regions when the run started (Shoal only).
    pub regions: Option<usize>,
    /// The server processes on this machine (Shoal's nodes, or the `--pids`) during
    /// the measured phase: CPU, context switches, CPU by thread name.
    pub servers: Vec<crate::proc_cost::ProcCost>,
    /// The load generator itself (it shares the cores with the servers).
    pub client: Option<crate::proc_cost::ProcCost>,
    /// Servers and generator per request (when the servers run here).
    pub cost_per_op: Option<crate::proc_cost::CostPerOp>,
    /// The load generator's TCP traffic per request (to and from the servers).
    pub client_wire: Option<crate::wire::WirePerOp>,
    /// The `ycsb-*` workloads: YCSB's summary (parameters, per-operation figures).
    pub ycsb: Option<crate::ycsb_report::Summary>,
}

impl Report {
    /// The fields that come straight from the options.
    pub fn header(args: &BenchArgs) -> Report {
        Report {
            target: args.target,
            workload: args.workload,
            endpoints: args.endpoints.clone(),
            clients: args.clients,
            value_size: args.value_bytes(),
            keys: args.key_count(),
            key_dist: args.key_dist,
            read_ratio: (args.workload == Workload::Mixed).then_some(args.read_ratio),
            warmup_s: args.warmup.as_secs_f64(),
            elapsed_s: 0.0,
            ops: 0,
            errors: 0,
            ops_per_sec: 0.0,
            latency: Latency {
                count: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            },
            latency_by_op: BTreeMap::new(),
            errors_by_kind: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            cluster_work: None,
            process_cpu: Vec::new(),
            regions: None,
            servers: Vec::new(),
            client: None,
            cost_per_op: None,
            client_wire: None,
            ycsb: None,
        }
    }

    /// How keys were chosen, for the first line: the option, or the YCSB
    /// workload's request distribution.
    fn key_choice(&self) -> String {
        match crate::ycsb::Spec::of(self.workload) {
            Some(spec) => format!("{:?}", spec.request_distribution).to_lowercase(),
            None => format!("{:?}", self.key_dist),
        }
    }

    /// The report as text for a terminal.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let target = format!("{:?}", self.target).to_lowercase();
        let workload = self.workload.name();
        let _ = writeln!(
            s,
            "{target} {workload}: {} clients, {}-byte values, {} keys ({}){}",
            self.clients,
            self.value_size,
            self.keys,
            self.key_choice(),
            self.regions
                .map(|r| format!(", {r} regions"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  throughput  {:.0} ops/s ({} ok, {} errors in {:.1} s)",
            self.ops_per_sec, self.ops, self.errors, self.elapsed_s
        );
        let l = &self.latency;
        let _ = writeln!(
            s,
            "  latency ms  p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
            l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.mean_ms
        );
        if self.latency_by_op.len() > 1 {
            let width = self
                .latency_by_op
                .keys()
                .map(|k| k.len())
                .fold(5, usize::max);
            for (op, l) in &self.latency_by_op {
                let _ = writeln!(
                    s,
                    "    {op:<width$} {} ok, p50 {:.2}  p99 {:.2}",
                    l.count, l.p50_ms, l.p99_ms
                );
            }
        }
        for (kind, n) in &self.errors_by_kind {
            let sample = self.error_samples.get(kind).cloned().unwrap_or_default();
            let _ = writeln!(s, "  errors      {n} x {kind}: {sample}");
        }
        if let Some(w) = &self.cluster_work {
            let _ = writeln!(
                s,
                "  per op      {:.3} fsyncs, {:.2} raft messages ({:.0} bytes), {:.3} transport \
                 RPCs; {:.1} log entries per fsync",
                w.fsyncs_per_op,
                w.raft_messages_per_op,
                w.raft_bytes_per_op,
                w.transport_rpcs_per_op,
                w.entries_per_fsync
            );
            for n in &w.silent {
                let _ = writeln!(
                    s,
                    "    store {} ({}): did not answer, left out ({})",
                    n.store_id, n.address, n.why
                );
            }
            for n in &w.nodes {
                let cpu = n
                    .cpu_s_per_1k_ops
                    .map(|c| format!("{c:.3} CPU s per 1k ops"))
                    .unwrap_or_else(|| "CPU n/a (not on this machine)".into());
                let _ = writeln!(
                    s,
                    "    store {} ({}): {} fsyncs, {:.1} entries/fsync, {} raft msgs, {} RPCs, {cpu}",
                    n.store_id,
                    n.address,
                    n.fsyncs,
                    n.entries_per_fsync,
                    n.raft_messages,
                    n.transport_rpcs
                );
            }
        }
        for p in &self.process_cpu {
            let _ = writeln!(
                s,
                "  process {} ({}): {:.2} CPU s, {:.3} per 1k ops",
                p.pid, p.name, p.cpu_seconds, p.cpu_s_per_1k_ops
            );
        }
        if let Some(c) = &self.cost_per_op {
            let _ = writeln!(
                s,
                "  CPU per op  {:.1} us: servers {:.1} + load generator {:.1}; {:.2} context \
                 switches per op",
                c.total_cpu_us, c.server_cpu_us, c.client_cpu_us, c.ctx_switches
            );
        }
        if let Some(w) = &self.client_wire {
            let _ = writeln!(
                s,
                "  client wire {:.0} bytes out, {:.0} bytes in, {:.2} TCP data segments per op",
                w.bytes_out, w.bytes_in, w.segments
            );
        }
        if let Some(first) = self.servers.first() {
            let top: Vec<String> = first
                .threads
                .iter()
                .take(8)
                .map(|t| format!("{} {:.2}s", t.name, t.cpu_seconds))
                .collect();
            let _ = writeln!(
                s,
                "  threads of pid {} ({}): {}",
                first.pid,
                first.name,
                top.join(", ")
            );
        }
        if let Some(y) = &self.ycsb {
            s.push_str(&y.render());
        }
        s
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &std::path::Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}
