//! YCSB's core workloads A to F (`workloads/workloada` .. `workloadf` and
//! `CoreWorkload` in YCSB's repository), as operation streams over Shoal's keys.
//!
//! | workload | read | update | insert | scan | read-modify-write | request distribution |
//! |---|---:|---:|---:|---:|---:|---|
//! | `ycsb-a` | 0.50 | 0.50 | | | | zipfian |
//! | `ycsb-b` | 0.95 | 0.05 | | | | zipfian |
//! | `ycsb-c` | 1.00 | | | | | zipfian |
//! | `ycsb-d` | 0.95 | | 0.05 | | | latest |
//! | `ycsb-e` | | | 0.05 | 0.95 | | zipfian (scan start) |
//! | `ycsb-f` | 0.50 | | | | 0.50 | zipfian |
//!
//! Every workload: [`RECORD_COUNT`] records loaded before the run (`--keys`
//! overrides), each one value of [`FIELD_COUNT`] x [`FIELD_LENGTH`] bytes
//! (`--value-size` overrides); zipfian is YCSB's scrambled zipfian with constant
//! 0.99 ([`crate::zipfian`]); scan lengths are uniform in `1..=`[`MAX_SCAN_LENGTH`].
//!
//! Records are the generator's key indexes: `0..loaded` are loaded, and inserts take
//! the next indexes from a counter all client loops share ([`Records`]). A read
//! only picks records whose insert has finished (YCSB's acknowledged counter): the
//! readable count is the longest run of finished inserts from `loaded` on, so a read
//! never races its record's insert. As in YCSB, a finished insert counts whether it
//! succeeded or not; a read of a record whose insert failed finds nothing
//! (NOT_FOUND).
//!
//! The zipfian choice is over the loaded records. YCSB sizes it over the loaded
//! records plus twice the inserts it expects (`operationcount x insertproportion x
//! 2`) and draws again when it picks a record not inserted yet; a run bounded by
//! time does not know its operation count, so here inserted records are reached by
//! the scans of E (they fall between loaded keys) and the latest distribution of D.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rand::rngs::SmallRng;
use rand::Rng;
use serde::Serialize;

use crate::args::Workload;
use crate::workload::{key_of, Op};
use crate::zipfian::{self, Latest, ScrambledZipfian, ZIPFIAN_CONSTANT};

/// Records loaded by default (YCSB's `recordcount` in every core workload file).
pub const RECORD_COUNT: u64 = 1000;
/// Fields per record (YCSB's `fieldcount` default).
pub const FIELD_COUNT: usize = 10;
/// Bytes per field (YCSB's `fieldlength` default, constant length).
pub const FIELD_LENGTH: usize = 100;
/// Bytes per record: Shoal stores a record's fields as one value.
pub const RECORD_SIZE: usize = FIELD_COUNT * FIELD_LENGTH;
/// Longest scan (YCSB's `maxscanlength` default); the shortest is 1.
pub const MAX_SCAN_LENGTH: u32 = 100;

/// How a workload picks the record of a read, update, scan or read-modify-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestDist {
    /// YCSB's scrambled zipfian (constant 0.99) over the loaded records.
    Zipfian,
    /// YCSB's skewed latest: the records inserted last are the most popular.
    Latest,
}

/// One core workload's parameters (its proportions sum to 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spec {
    /// Share of reads (`readproportion`).
    pub read: f64,
    /// Share of updates, a whole record rewritten (`updateproportion`).
    pub update: f64,
    /// Share of inserts of new records (`insertproportion`).
    pub insert: f64,
    /// Share of scans (`scanproportion`).
    pub scan: f64,
    /// Share of read-modify-writes (`readmodifywriteproportion`).
    pub read_modify_write: f64,
    /// `requestdistribution`.
    pub request_distribution: RequestDist,
    /// `zipfianconstant`.
    pub zipfian_constant: f64,
    /// Scan lengths are uniform in `1..=max_scan_length` (`maxscanlength`).
    pub max_scan_length: u32,
}

impl Spec {
    /// The parameters of `w`, or `None` if it is not a YCSB workload.
    pub fn of(w: Workload) -> Option<Spec> {
        let base = Spec {
            read: 0.0,
            update: 0.0,
            insert: 0.0,
            scan: 0.0,
            read_modify_write: 0.0,
            request_distribution: RequestDist::Zipfian,
            zipfian_constant: ZIPFIAN_CONSTANT,
            max_scan_length: MAX_SCAN_LENGTH,
        };
        let spec = match w {
            Workload::YcsbA => Spec {
                read: 0.5,
                update: 0.5,
                ..base
            },
            Workload::YcsbB => Spec {
                read: 0.95,
                update: 0.05,
                ..base
            },
            Workload::YcsbC => Spec { read: 1.0, ..base },
            Workload::YcsbD => Spec {
                read: 0.95,
                insert: 0.05,
                request_distribution: RequestDist::Latest,
                ..base
            },
            Workload::YcsbE => Spec {
                scan: 0.95,
                insert: 0.05,
                ..base
            },
            Workload::YcsbF => Spec {
                read: 0.5,
                read_modify_write: 0.5,
                ..base
            },
            Workload::Put | Workload::Get | Workload::Mixed | Workload::Scan | Workload::Cas => {
                return None
            }
        };
        Some(spec)
    }
}

/// The records of a run, shared by every client loop: how many were loaded, the
/// next index to insert, and how many are readable.
#[derive(Debug)]
pub struct Records {
    loaded: u64,
    next: AtomicU64,
    readable: AtomicU64,
    /// Inserts finished out of order (above `readable`): at most one per loop.
    finished: Mutex<BTreeSet<u64>>,
    /// `zeta(loaded, 0.99)` for the latest distribution, computed once for all loops.
    zeta_loaded: OnceLock<f64>,
}

impl Records {
    /// `loaded` records, indexes `0..loaded`, none inserted yet.
    pub fn new(loaded: u64) -> Records {
        Records {
            loaded,
            next: AtomicU64::new(loaded),
            readable: AtomicU64::new(loaded),
            finished: Mutex::new(BTreeSet::new()),
            zeta_loaded: OnceLock::new(),
        }
    }

    /// Takes the index of the next record to insert.
    pub fn claim(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Records that insert `index` has finished (succeeded or failed).
    pub fn finish(&self, index: u64) {
        let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        finished.insert(index);
        let mut readable = self.readable.load(Ordering::Acquire);
        while finished.remove(&readable) {
            readable += 1;
        }
        self.readable.store(readable, Ordering::Release);
    }

    /// Records `0..readable()` are loaded or inserted (a read may pick them).
    pub fn readable(&self) -> u64 {
        self.readable.load(Ordering::Acquire)
    }

    fn zeta_loaded(&self) -> f64 {
        *self
            .zeta_loaded
            .get_or_init(|| zipfian::zeta(self.loaded.max(1), ZIPFIAN_CONSTANT))
    }
}

/// The record chooser of one client loop.
enum Chooser {
    Zipfian(ScrambledZipfian),
    Latest(Latest),
}

/// The operations of one client loop running a YCSB workload.
pub struct YcsbStream {
    spec: Spec,
    records: Arc<Records>,
    chooser: Chooser,
}

impl YcsbStream {
    /// A stream of `w` (a YCSB workload) over `records`.
    pub fn new(w: Workload, records: Arc<Records>) -> Option<YcsbStream> {
        let spec = Spec::of(w)?;
        let chooser = match spec.request_distribution {
            RequestDist::Zipfian => Chooser::Zipfian(ScrambledZipfian::new(records.loaded)),
            RequestDist::Latest => Chooser::Latest(Latest::with_zeta(
                records.loaded.max(1),
                records.zeta_loaded(),
            )),
        };
        Some(YcsbStream {
            spec,
            records,
            chooser,
        })
    }

    /// The record of a read, update, scan or read-modify-write.
    fn record(&mut self, rng: &mut SmallRng) -> [u8; 8] {
        let i = match &mut self.chooser {
            Chooser::Zipfian(z) => z.sample(rng),
            Chooser::Latest(l) => l.sample(self.records.readable().max(1), rng),
        };
        key_of(i)
    }

    /// The next operation (an insert claims its record index now: pass the
    /// operation to [`YcsbStream::finished`] when it is done).
    pub fn next_op(&mut self, rng: &mut SmallRng) -> Op {
        let s = &self.spec;
        // YCSB's DiscreteGenerator: the operations in this order, by cumulative share.
        let mut u: f64 = rng.gen::<f64>();
        let kinds = [
            (s.read, Kind::Read),
            (s.update, Kind::Update),
            (s.insert, Kind::Insert),
            (s.scan, Kind::Scan),
            (s.read_modify_write, Kind::ReadModifyWrite),
        ];
        let mut kind = Kind::Read;
        for (share, k) in kinds {
            if share <= 0.0 {
                continue;
            }
            kind = k;
            if u < share {
                break;
            }
            u -= share;
        }
        match kind {
            Kind::Read => Op::Read(self.record(rng)),
            Kind::Update => Op::Update(self.record(rng)),
            Kind::Insert => Op::Insert(self.records.claim()),
            Kind::Scan => {
                let len = rng.gen_range(1..=self.spec.max_scan_length);
                Op::Scan(self.record(rng), len)
            }
            Kind::ReadModifyWrite => Op::ReadModifyWrite(self.record(rng)),
        }
    }

    /// Marks an insert finished, so that reads may pick its record.
    pub fn finished(&self, op: &Op) {
        if let Op::Insert(i) = op {
            self.records.finish(*i);
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const ALL: [Workload; 6] = [
        Workload::YcsbA,
        Workload::YcsbB,
        Workload::YcsbC,
        Workload::YcsbD,
        Workload::YcsbE,
        Workload::YcsbF,
    ];

    fn draw(w: Workload, n: usize) -> (Vec<Op>, Arc<Records>) {
        let records = Arc::new(Records::new(RECORD_COUNT));
        let mut s = YcsbStream::new(w, records.clone()).unwrap();
        let mut rng = SmallRng::seed_from_u64(42);
        let ops = (0..n)
            .map(|_| {
                let op = s.next_op(&mut rng);
                s.finished(&op);
                op
            })
            .collect();
        (ops, records)
    }

    #[test]
    fn only_the_ycsb_workloads_have_a_spec_and_their_shares_sum_to_one() {
        for w in ALL {
            let s = Spec::of(w).unwrap();
            let sum = s.read + s.update + s.insert + s.scan + s.read_modify_write;
            assert!((sum - 1.0).abs() < 1e-12, "{w:?}: {sum}");
            assert!(w.is_ycsb());
        }
        for w in [Workload::Put, Workload::Get, Workload::Mixed] {
            assert!(Spec::of(w).is_none() && !w.is_ycsb());
        }
    }

    #[test]
    fn each_workload_draws_its_operation_mix() {
        let n = 100_000;
        for w in ALL {
            let spec = Spec::of(w).unwrap();
            let (ops, _) = draw(w, n);
            let share = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count() as f64 / n as f64;
            let got = [
                share(|o| matches!(o, Op::Read(_))),
                share(|o| matches!(o, Op::Update(_))),
                share(|o| matches!(o, Op::Insert(_))),
                share(|o| matches!(o, Op::Scan(..))),
                share(|o| matches!(o, Op::ReadModifyWrite(_))),
            ];
            let want = [
                spec.read,
                spec.update,
                spec.insert,
                spec.scan,
                spec.read_modify_write,
            ];
            for (g, want) in got.iter().zip(want) {
                assert!((g - want).abs() < 0.01, "{w:?}: {got:?} vs {want}");
            }
            // Nothing else is drawn.
            assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{w:?}");
        }
    }

    #[test]
    fn scans_are_one_to_a_hundred_records_uniformly() {
        let (ops, _) = draw(Workload::YcsbE, 50_000);
        let lens: Vec<u32> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Scan(_, len) => Some(*len),
                _ => None,
            })
            .collect();
        assert!(lens.iter().all(|l| (1..=MAX_SCAN_LENGTH).contains(l)));
        assert_eq!(lens.iter().min(), Some(&1));
        assert_eq!(lens.iter().max(), Some(&MAX_SCAN_LENGTH));
        let mean = lens.iter().map(|&l| l as f64).sum::<f64>() / lens.len() as f64;
        assert!((mean - 50.5).abs() < 1.0, "{mean}");
    }

    #[test]
    fn inserts_take_new_indexes_beyond_the_loaded_records() {
        let (ops, records) = draw(Workload::YcsbD, 20_000);
        let inserted: Vec<u64> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Insert(i) => Some(*i),
                _ => None,
            })
            .collect();
        let want: Vec<u64> = (RECORD_COUNT..RECORD_COUNT + inserted.len() as u64).collect();
        assert_eq!(inserted, want);
        assert_eq!(records.readable(), RECORD_COUNT + inserted.len() as u64);
    }

    #[test]
    fn reads_pick_only_finished_inserts_and_favour_the_latest() {
        let records = Arc::new(Records::new(100));
        let mut s = YcsbStream::new(Workload::YcsbD, records.clone()).unwrap();
        let mut rng = SmallRng::seed_from_u64(3);
        // Two inserts claimed, the second finished first: neither is readable
        // until the first finishes too.
        let (a, b) = (records.claim(), records.claim());
        records.finish(b);
        assert_eq!(records.readable(), 100);
        let unfinished = [key_of(a), key_of(b)];
        for _ in 0..5_000 {
            if let Op::Read(k) = s.next_op(&mut rng) {
                assert!(!unfinished.contains(&k));
            }
        }
        records.finish(a);
        assert_eq!(records.readable(), 102);
        let mut newest = 0;
        let mut reads = 0;
        for _ in 0..20_000 {
            if let Op::Read(k) = s.next_op(&mut rng) {
                reads += 1;
                newest += (k == key_of(b)) as u32;
            }
        }
        // The newest of 102 records gets ~19% of reads under latest (uniform: 1%).
        assert!(newest as f64 > 0.12 * reads as f64, "{newest} of {reads}");
    }

    #[test]
    fn zipfian_workloads_skew_reads_to_a_few_scattered_records() {
        let (ops, _) = draw(Workload::YcsbC, 100_000);
        let mut count = std::collections::HashMap::new();
        for o in &ops {
            if let Op::Read(k) = o {
                *count.entry(*k).or_insert(0u32) += 1;
            }
        }
        let mut by_heat: Vec<([u8; 8], u32)> = count.into_iter().collect();
        by_heat.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let top10: u32 = by_heat[..10].iter().map(|(_, n)| n).sum();
        assert!(top10 > 8_000, "{top10}");
        // Not the lowest indexes.
        let low: Vec<[u8; 8]> = (0..10).map(key_of).collect();
        let hot_low = by_heat[..10]
            .iter()
            .filter(|(k, _)| low.contains(k))
            .count();
        assert!(hot_low <= 1, "{hot_low}");
    }
}
