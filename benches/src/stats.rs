//! What each client loop records: latencies per operation kind (an HDR histogram in
//! microseconds, 3 significant digits) and errors by kind.
//!
//! An operation made of steps (YCSB's read-modify-write: a read, then an update)
//! counts once, under its own name; its steps are recorded apart
//! ([`LoopStats::steps`]), so that YCSB's summary can count them with the reads and
//! updates as YCSB does, while throughput counts each operation once.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies from 1 µs to 10 minutes, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// The record of one or more client loops.
#[derive(Clone, Default)]
pub struct LoopStats {
    /// Successful requests per operation kind.
    pub latency: BTreeMap<&'static str, Histogram<u64>>,
    /// Successful steps of operations made of steps, per step kind (not requests
    /// of their own: `ok_count` leaves them out).
    pub steps: BTreeMap<&'static str, Histogram<u64>>,
    /// Failed requests by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Failed requests and steps by operation (or step) kind, then error kind.
    pub errors_by_op: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// The first message seen of each error kind.
    pub error_samples: BTreeMap<String, String>,
}

impl LoopStats {
    /// Records a successful request.
    pub fn ok(&mut self, op: &'static str, took: Duration) {
        record(&mut self.latency, op, took);
    }

    /// Records a failed request of kind `op`.
    pub fn error(&mut self, op: &'static str, kind: &str, message: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
        self.step_error(op, kind);
        self.error_samples
            .entry(kind.to_string())
            .or_insert_with(|| message.to_string());
    }

    /// Records a step of an operation made of steps (the operation itself is
    /// recorded by [`LoopStats::ok`] or [`LoopStats::error`]).
    pub fn step(&mut self, op: &'static str, took: Duration, failed: Option<&str>) {
        match failed {
            None => record(&mut self.steps, op, took),
            Some(kind) => self.step_error(op, kind),
        }
    }

    fn step_error(&mut self, op: &'static str, kind: &str) {
        *self
            .errors_by_op
            .entry(op)
            .or_default()
            .entry(kind.to_string())
            .or_default() += 1;
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: LoopStats) {
        add_histograms(&mut self.latency, other.latency);
        add_histograms(&mut self.steps, other.steps);
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for (op, kinds) in other.errors_by_op {
            let mine = self.errors_by_op.entry(op).or_default();
            for (k, n) in kinds {
                *mine.entry(k).or_default() += n;
            }
        }
        for (k, m) in other.error_samples {
            self.error_samples.entry(k).or_insert(m);
        }
    }

    /// Successful requests.
    pub fn ok_count(&self) -> u64 {
        self.latency.values().map(|h| h.len()).sum()
    }

    /// Failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Latency summary over every operation kind.
    pub fn overall(&self) -> Latency {
        let mut all = histogram();
        for h in self.latency.values() {
            all.add(h).expect("same bounds");
        }
        Latency::of(&all)
    }
}

fn record(into: &mut BTreeMap<&'static str, Histogram<u64>>, op: &'static str, took: Duration) {
    let us = (took.as_micros() as u64).clamp(1, 600_000_000);
    into.entry(op)
        .or_insert_with(histogram)
        .saturating_record(us);
}

fn add_histograms(
    into: &mut BTreeMap<&'static str, Histogram<u64>>,
    from: BTreeMap<&'static str, Histogram<u64>>,
) {
    for (op, h) in from {
        into.entry(op)
            .or_insert_with(histogram)
            .add(&h)
            .expect("histograms with the same bounds add");
    }
}

/// A histogram of microseconds holding `a` and `b` (either may be absent).
pub fn sum_of(a: Option<&Histogram<u64>>, b: Option<&Histogram<u64>>) -> Histogram<u64> {
    let mut all = histogram();
    for h in [a, b].into_iter().flatten() {
        all.add(h).expect("same bounds");
    }
    all
}

/// A latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    /// Requests summarized.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// Summarizes a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_loops_give_percentiles_over_all_requests() {
        let mut a = LoopStats::default();
        let mut b = LoopStats::default();
        for ms in 1..=90 {
            a.ok("put", Duration::from_millis(ms));
        }
        for ms in 91..=100 {
            b.ok("get", Duration::from_millis(ms));
        }
        b.error("get", "deadline_exceeded", "first");
        b.error("put", "deadline_exceeded", "second");
        a.merge(b);
        assert_eq!(a.ok_count(), 100);
        assert_eq!(a.error_count(), 2);
        assert_eq!(a.error_samples["deadline_exceeded"], "first");
        assert_eq!(a.errors_by_op["get"]["deadline_exceeded"], 1);
        assert_eq!(a.errors_by_op["put"]["deadline_exceeded"], 1);
        let l = a.overall();
        assert!((49.9..=50.1).contains(&l.p50_ms), "{l:?}");
        assert!((98.9..=99.1).contains(&l.p99_ms), "{l:?}");
        assert!((99.9..=100.1).contains(&l.max_ms), "{l:?}");
    }

    #[test]
    fn steps_are_recorded_apart_from_operations() {
        let mut s = LoopStats::default();
        // One read-modify-write that worked, one whose update failed.
        s.step("read", Duration::from_millis(1), None);
        s.step("update", Duration::from_millis(2), None);
        s.ok("read-modify-write", Duration::from_millis(3));
        s.step("read", Duration::from_millis(1), None);
        s.step("update", Duration::from_millis(2), Some("unavailable"));
        s.error("read-modify-write", "unavailable", "node down");
        let mut merged = LoopStats::default();
        merged.merge(s);
        assert_eq!(merged.ok_count(), 1);
        assert_eq!(merged.error_count(), 1);
        assert_eq!(merged.steps["read"].len(), 2);
        assert_eq!(merged.steps["update"].len(), 1);
        assert_eq!(merged.errors_by_op["update"]["unavailable"], 1);
        assert_eq!(merged.errors_by_op["read-modify-write"]["unavailable"], 1);
        assert_eq!(
            sum_of(merged.latency.get("read"), merged.steps.get("read")).len(),
            2
        );
    }
}
