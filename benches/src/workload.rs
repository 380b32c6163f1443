//! Keys, values and the stream of operations each client loop issues.
//!
//! Key `i` of the key space is the 8-byte big-endian form of a bijective 64-bit mix
//! of `i`, so consecutive indexes land far apart and any key space spreads evenly
//! over regions split on leading bytes. A value is a pattern derived from its key,
//! so every read can be checked: the generator only ever writes `value_of(key)`.
//! That holds for the YCSB workloads too ([`crate::ycsb`]): an update, an insert and
//! a read-modify-write's write all put `value_of(key)`, so a record's bytes never
//! change once loaded (the store still does every write's whole work).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use std::sync::Arc;

use crate::args::{BenchArgs, KeyDist, Workload};
use crate::ycsb::{Records, YcsbStream};

/// The key with index `i`.
pub fn key_of(i: u64) -> [u8; 8] {
    // The splitmix64 finalizer: every step is invertible, so distinct indexes give
    // distinct keys.
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).to_be_bytes()
}

/// The first keys of the `h` regions an even split makes (`0000` and the split
/// points `j * 65536 / h`, as Shoal's bootstrap and `--regions` place them).
pub fn hot_prefixes(h: usize) -> Vec<[u8; 2]> {
    (0..h)
        .map(|j| (((j as u64) * 65536 / h as u64) as u16).to_be_bytes())
        .collect()
}

/// The only value the generator writes under `key`, `size` bytes long.
pub fn value_of(key: &[u8], size: usize) -> Vec<u8> {
    (0..size)
        .map(|j| key[j % key.len()] ^ (j as u8).wrapping_mul(31))
        .collect()
}

/// One request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Write `value_of(key)`.
    Put([u8; 8]),
    /// Read the key.
    Get([u8; 8]),
    /// Read up to `limit` pairs from the key on.
    Scan([u8; 8], u32),
    /// Swap `value_of(key)` for itself.
    Cas([u8; 8]),
    /// YCSB read: read a record, which must exist (else NOT_FOUND).
    Read([u8; 8]),
    /// YCSB update: write a record's value anew.
    Update([u8; 8]),
    /// YCSB insert: write the record with this index (beyond the loaded ones).
    Insert(u64),
    /// YCSB read-modify-write: a [`Op::Read`] then an [`Op::Update`] of one
    /// record, counted as one operation (its steps are timed too).
    ReadModifyWrite([u8; 8]),
}

impl Op {
    /// The name used in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Put(_) => "put",
            Op::Get(_) => "get",
            Op::Scan(..) => "scan",
            Op::Cas(_) => "cas",
            Op::Read(_) => "read",
            Op::Update(_) => "update",
            Op::Insert(_) => "insert",
            Op::ReadModifyWrite(_) => "read-modify-write",
        }
    }
}

/// Draws the operations of one client loop.
pub struct OpStream {
    rng: SmallRng,
    workload: Workload,
    keys: u64,
    zipf: Option<Zipf<f64>>,
    read_ratio: f64,
    scan_limit: u32,
    /// The YCSB workloads' own chooser.
    ycsb: Option<YcsbStream>,
    /// `--hot-regions`: the 2-byte prefixes keys are confined to.
    hot: Vec<[u8; 2]>,
}

impl OpStream {
    /// The stream of client loop `client` (each loop has its own seed); `records`
    /// is shared by every loop of the run (YCSB's inserts and reads use it).
    pub fn new(args: &BenchArgs, client: usize, records: Arc<Records>) -> OpStream {
        let seed = args
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(client as u64);
        let zipf = match args.key_dist {
            KeyDist::Uniform => None,
            // Validated: keys >= 1 and exponent > 0.
            KeyDist::Zipf => Zipf::new(args.key_count(), args.zipf_exponent).ok(),
        };
        OpStream {
            rng: SmallRng::seed_from_u64(seed),
            workload: args.workload,
            keys: args.key_count(),
            zipf,
            read_ratio: args.read_ratio,
            scan_limit: args.scan_limit,
            ycsb: YcsbStream::new(args.workload, records),
            hot: args.hot_regions.map_or_else(Vec::new, hot_prefixes),
        }
    }

    fn key(&mut self) -> [u8; 8] {
        let i = match &self.zipf {
            // Zipf draws 1..=n, most often 1.
            Some(z) => (z.sample(&mut self.rng) as u64).clamp(1, self.keys) - 1,
            None => self.rng.gen_range(0..self.keys),
        };
        let mut key = key_of(i);
        if !self.hot.is_empty() {
            let p = self.hot[(i % self.hot.len() as u64) as usize];
            key[..2].copy_from_slice(&p);
        }
        key
    }

    /// The next operation. Pass it to [`OpStream::finished`] when done.
    pub fn next_op(&mut self) -> Op {
        if let Some(y) = &mut self.ycsb {
            return y.next_op(&mut self.rng);
        }
        let key = self.key();
        match self.workload {
            Workload::Put => Op::Put(key),
            Workload::Get => Op::Get(key),
            Workload::Scan => Op::Scan(key, self.scan_limit),
            Workload::Cas => Op::Cas(key),
            Workload::Mixed if self.rng.gen_bool(self.read_ratio) => Op::Get(key),
            Workload::Mixed => Op::Put(key),
            // `ycsb` is set for exactly these (both come from `ycsb::Spec::of`).
            Workload::YcsbA
            | Workload::YcsbB
            | Workload::YcsbC
            | Workload::YcsbD
            | Workload::YcsbE
            | Workload::YcsbF => unreachable!("YCSB workloads draw from their YcsbStream"),
        }
    }

    /// Tells the stream `op` is done (ok or not): a YCSB insert's record becomes
    /// readable.
    pub fn finished(&self, op: &Op) {
        if let Some(y) = &self.ycsb {
            y.finished(op);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_are_distinct_and_spread_over_leading_bytes() {
        let keys: HashSet<[u8; 8]> = (0..10_000).map(key_of).collect();
        assert_eq!(keys.len(), 10_000);
        // 64 regions split on the first two bytes: every one gets keys.
        let mut per_region = [0u32; 64];
        for k in &keys {
            per_region[(u16::from_be_bytes([k[0], k[1]]) as usize * 64) >> 16] += 1;
        }
        assert!(per_region.iter().all(|&n| n > 100), "{per_region:?}");
    }

    #[test]
    fn values_depend_on_key_and_size() {
        let (a, b) = (key_of(1), key_of(2));
        assert_eq!(value_of(&a, 256).len(), 256);
        assert_ne!(value_of(&a, 256), value_of(&b, 256));
        assert_eq!(value_of(&a, 10), value_of(&a, 10));
    }

    #[test]
    fn mixed_follows_the_read_ratio_and_zipf_skews() {
        let mut args = crate::args::BenchArgs::defaults();
        args.workload = Workload::Mixed;
        args.read_ratio = 0.75;
        args.keys = Some(1000);
        args.key_dist = KeyDist::Zipf;
        let mut s = OpStream::new(&args, 0, Arc::new(Records::new(1000)));
        let ops: Vec<Op> = (0..20_000).map(|_| s.next_op()).collect();
        let reads = ops.iter().filter(|o| matches!(o, Op::Get(_))).count();
        assert!((14_000..16_000).contains(&reads), "{reads}");
        let hottest = ops
            .iter()
            .filter(|o| matches!(o, Op::Get(k) | Op::Put(k) if *k == key_of(0)))
            .count();
        // Key 0 is the most popular under zipf(0.99) over 1000 keys: about 13%.
        assert!(hottest > 1000, "{hottest}");
    }

    #[test]
    fn hot_regions_confine_the_keys_to_their_prefixes() {
        assert_eq!(
            hot_prefixes(4),
            vec![[0, 0], [0x40, 0], [0x80, 0], [0xc0, 0]]
        );
        let mut args = crate::args::BenchArgs::defaults();
        args.workload = Workload::Put;
        args.keys = Some(10_000);
        args.hot_regions = Some(4);
        let mut s = OpStream::new(&args, 0, Arc::new(Records::new(1000)));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let Op::Put(k) = s.next_op() else {
                panic!("puts only")
            };
            assert!(hot_prefixes(4).contains(&[k[0], k[1]]), "{k:?}");
            seen.insert([k[0], k[1]]);
        }
        assert_eq!(seen.len(), 4);
    }
}
