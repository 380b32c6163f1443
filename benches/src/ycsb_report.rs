//! YCSB's summary of a run, printed after Shoal's own report for the `ycsb-*`
//! workloads and kept in the JSON report (`ycsb`), in the format of YCSB's text
//! exporter so that YCSB's tooling and habits carry over:
//!
//! ```text
//! [OVERALL], RunTime(ms), 30000
//! [OVERALL], Throughput(ops/sec), 10234.5
//! [READ], Operations, 153518
//! [READ], AverageLatency(us), 812.3
//! [READ], MinLatency(us), 201
//! [READ], MaxLatency(us), 48127
//! [READ], 95thPercentileLatency(us), 1735
//! [READ], 99thPercentileLatency(us), 3119
//! [READ], Return=OK, 153518
//! ```
//!
//! As in YCSB: `Operations` and the latencies count the successful operations of
//! that kind; `Return=OK` counts them too, and each failure kind has its own
//! `Return=` line (`NOT_FOUND`, `DEADLINE_EXCEEDED`, `WRONG_ANSWER`, ...: Shoal's
//! error kinds in capitals). A read-modify-write's read and update count under
//! `[READ]` and `[UPDATE]` as well as the whole under `[READ-MODIFY-WRITE]`, as
//! YCSB counts them. `[OVERALL]` counts each operation once (a read-modify-write
//! once) over the measured phase, and its throughput counts successful operations
//! (YCSB's counts failed ones too: the same in a run without errors).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::stats::{sum_of, LoopStats};
use crate::ycsb::Spec;

/// The operation kinds, in the order they are printed ([`crate::workload::Op::name`]).
const KINDS: [&str; 5] = ["read", "update", "insert", "scan", "read-modify-write"];

/// One run's YCSB summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The workload's parameters.
    pub parameters: Spec,
    /// `[OVERALL], RunTime(ms)`: the measured phase.
    pub run_time_ms: u64,
    /// `[OVERALL], Throughput(ops/sec)`: successful operations per second.
    pub throughput_ops_sec: f64,
    /// One entry per operation kind the run issued.
    pub operations: Vec<OpSummary>,
}

/// The lines of one operation kind.
#[derive(Debug, Clone, Serialize)]
pub struct OpSummary {
    /// `READ`, `UPDATE`, `INSERT`, `SCAN` or `READ-MODIFY-WRITE`.
    pub name: String,
    /// Successful operations.
    pub operations: u64,
    /// Mean latency of the successful operations, in microseconds (0 if none).
    pub average_latency_us: f64,
    /// Fastest.
    pub min_latency_us: u64,
    /// Slowest.
    pub max_latency_us: u64,
    /// 95th percentile.
    pub p95_latency_us: u64,
    /// 99th percentile.
    pub p99_latency_us: u64,
    /// Outcomes: `OK` and each failure kind, with their counts.
    pub returns: BTreeMap<String, u64>,
}

/// The summary of a measured phase of `elapsed` that recorded `stats`.
pub fn summarize(parameters: Spec, stats: &LoopStats, elapsed: Duration) -> Summary {
    let mut operations = Vec::new();
    for kind in KINDS {
        let h = sum_of(stats.latency.get(kind), stats.steps.get(kind));
        let failed = stats.errors_by_op.get(kind);
        if h.is_empty() && failed.is_none_or(|f| f.is_empty()) {
            continue;
        }
        let mut returns = BTreeMap::new();
        returns.insert("OK".to_string(), h.len());
        for (err, n) in failed.into_iter().flatten() {
            *returns.entry(err.to_uppercase()).or_default() += n;
        }
        let ok = !h.is_empty();
        operations.push(OpSummary {
            name: kind.to_uppercase(),
            operations: h.len(),
            average_latency_us: if ok { h.mean() } else { 0.0 },
            min_latency_us: if ok { h.min() } else { 0 },
            max_latency_us: h.max(),
            p95_latency_us: h.value_at_quantile(0.95),
            p99_latency_us: h.value_at_quantile(0.99),
            returns,
        });
    }
    let secs = elapsed.as_secs_f64();
    Summary {
        parameters,
        run_time_ms: elapsed.as_millis() as u64,
        throughput_ops_sec: stats.ok_count() as f64 / secs.max(1e-9),
        operations,
    }
}

impl Summary {
    /// The summary's lines, YCSB's text format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "[OVERALL], RunTime(ms), {}", self.run_time_ms);
        let _ = writeln!(
            s,
            "[OVERALL], Throughput(ops/sec), {:.1}",
            self.throughput_ops_sec
        );
        for op in &self.operations {
            let n = &op.name;
            let _ = writeln!(s, "[{n}], Operations, {}", op.operations);
            let _ = writeln!(s, "[{n}], AverageLatency(us), {:.1}", op.average_latency_us);
            let _ = writeln!(s, "[{n}], MinLatency(us), {}", op.min_latency_us);
            let _ = writeln!(s, "[{n}], MaxLatency(us), {}", op.max_latency_us);
            let _ = writeln!(s, "[{n}], 95thPercentileLatency(us), {}", op.p95_latency_us);
            let _ = writeln!(s, "[{n}], 99thPercentileLatency(us), {}", op.p99_latency_us);
            // OK first, as YCSB prints it.
            if let Some(ok) = op.returns.get("OK") {
                let _ = writeln!(s, "[{n}], Return=OK, {ok}");
            }
            for (r, count) in op.returns.iter().filter(|(r, _)| *r != "OK") {
                let _ = writeln!(s, "[{n}], Return={r}, {count}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Workload;

    #[test]
    fn the_summary_counts_steps_with_their_kind_and_each_operation_once() {
        let mut stats = LoopStats::default();
        for ms in 1..=100 {
            stats.ok("read", Duration::from_millis(ms));
        }
        // Two read-modify-writes: one whole, one whose read found nothing.
        stats.step("read", Duration::from_micros(500), None);
        stats.step("update", Duration::from_micros(700), None);
        stats.ok("read-modify-write", Duration::from_micros(1200));
        stats.step("read", Duration::from_micros(400), Some("not_found"));
        stats.error("read-modify-write", "not_found", "record not found");
        let spec = Spec::of(Workload::YcsbF).unwrap();
        let s = summarize(spec, &stats, Duration::from_secs(2));
        assert_eq!(s.run_time_ms, 2000);
        // 101 operations ok (100 reads, 1 read-modify-write) in 2 s.
        assert!((s.throughput_ops_sec - 50.5).abs() < 1e-9, "{s:?}");
        let names: Vec<&str> = s.operations.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["READ", "UPDATE", "READ-MODIFY-WRITE"]);
        let read = &s.operations[0];
        assert_eq!(read.operations, 101);
        assert_eq!(read.returns["OK"], 101);
        assert_eq!(read.returns["NOT_FOUND"], 1);
        assert_eq!(read.min_latency_us, 500);
        assert!(
            (99_900..=100_100).contains(&read.max_latency_us),
            "{read:?}"
        );
        assert!((94_900..=95_100).contains(&read.p95_latency_us), "{read:?}");
        let rmw = &s.operations[2];
        assert_eq!((rmw.operations, rmw.returns["NOT_FOUND"]), (1, 1));

        let text = s.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "[OVERALL], RunTime(ms), 2000");
        assert_eq!(lines[1], "[OVERALL], Throughput(ops/sec), 50.5");
        assert_eq!(lines[2], "[READ], Operations, 101");
        assert!(lines.contains(&"[READ], Return=OK, 101"));
        assert!(lines.contains(&"[READ], Return=NOT_FOUND, 1"));
        assert!(lines.contains(&"[UPDATE], Return=OK, 1"));
        assert!(lines.contains(&"[READ-MODIFY-WRITE], Return=NOT_FOUND, 1"));
        // Every line is `[NAME], Metric, value`.
        assert!(lines
            .iter()
            .all(|l| l.starts_with('[') && l.split(", ").count() == 3));
    }

    #[test]
    fn an_operation_that_only_failed_still_gets_its_lines() {
        let mut stats = LoopStats::default();
        stats.error("insert", "deadline_exceeded", "too slow");
        let spec = Spec::of(Workload::YcsbD).unwrap();
        let s = summarize(spec, &stats, Duration::from_secs(1));
        assert_eq!(s.operations.len(), 1);
        let insert = &s.operations[0];
        assert_eq!(insert.operations, 0);
        assert_eq!(insert.average_latency_us, 0.0);
        assert_eq!(insert.returns["OK"], 0);
        assert_eq!(insert.returns["DEADLINE_EXCEEDED"], 1);
        assert!(s.render().contains("[INSERT], Return=DEADLINE_EXCEEDED, 1"));
    }
}
