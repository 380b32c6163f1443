//! YCSB's key choosers, as its `CoreWorkload` builds them: the zipfian generator of
//! Gray et al. ("Quickly generating billion-record synthetic databases", SIGMOD
//! 1994), its scrambled form, and the skewed-latest form.
//!
//! - [`Zipfian`] draws `0..n`, item 0 the most popular, with probability of item
//!   `i` proportional to `1 / (i + 1)^theta`. The normaliser `zeta(n)` is a sum over
//!   every item, so it is computed once and, when `n` grows (records inserted),
//!   extended by the new terms only.
//! - [`ScrambledZipfian`] draws from a zipfian over 10^10 items (whose `zeta` YCSB
//!   precomputes for theta 0.99) and hashes the draw (64-bit FNV-1a) modulo the
//!   record count: the popular records are spread over the key space instead of
//!   being the lowest indexes, and the skew does not depend on the record count.
//! - [`Latest`] draws `last - Zipfian(count)`: the record inserted last is the most
//!   popular, then the one before it, and so on; `count` follows the inserts.

use rand::Rng;

/// YCSB's zipfian constant (`ZipfianGenerator.ZIPFIAN_CONSTANT`).
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// The items of the zipfian behind [`ScrambledZipfian`] (YCSB's `ITEM_COUNT`).
const SCRAMBLED_ITEMS: u64 = 10_000_000_000;

/// `zeta(10^10, 0.99)`, as YCSB's `ScrambledZipfianGenerator.ZETAN` has it.
const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

/// `sum over i in from..to of 1 / (i + 1)^theta`: the terms of items `from..to`.
fn zeta_terms(from: u64, to: u64, theta: f64) -> f64 {
    (from..to).map(|i| 1.0 / ((i + 1) as f64).powf(theta)).sum()
}

/// `zeta(n, theta)`: the normaliser of a zipfian over `n` items.
pub fn zeta(n: u64, theta: f64) -> f64 {
    zeta_terms(0, n, theta)
}

/// A zipfian over `0..items`, item 0 the most popular; `items` may grow.
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta2: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// Over `items` (>= 1) items with exponent `theta` (0 < theta < 1), whose
    /// `zeta(items, theta)` is `zetan` (given, because it costs a pass over every
    /// item: [`zeta`] computes it).
    pub fn with_zeta(items: u64, theta: f64, zetan: f64) -> Zipfian {
        let mut z = Zipfian {
            items: items.max(1),
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta2: zeta(2, theta),
            zetan,
            eta: 0.0,
        };
        z.eta = z.eta_for(z.items);
        z
    }

    fn eta_for(&self, items: u64) -> f64 {
        (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zetan)
    }

    /// Items drawn from.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Extends the items to `items` if that is more (YCSB's zipfian only grows).
    pub fn grow(&mut self, items: u64) {
        if items > self.items {
            self.zetan += zeta_terms(self.items, items, self.theta);
            self.items = items;
            self.eta = self.eta_for(items);
        }
    }

    /// A draw in `0..items`.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let v = self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (v as u64).min(self.items - 1)
    }
}

/// 64-bit FNV-1a of `bytes`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ b as u64).wrapping_mul(PRIME))
}

/// YCSB's `Utils.fnvhash64`: FNV-1a over the 8 bytes of `v`, low byte first, made
/// non-negative as Java's `Math.abs` of a `long` would.
pub fn fnv_hash64(v: u64) -> u64 {
    (fnv1a64(&v.to_le_bytes()) as i64).unsigned_abs()
}

/// YCSB's scrambled zipfian over `0..items`: skewed, the popular items scattered.
#[derive(Debug, Clone)]
pub struct ScrambledZipfian {
    items: u64,
    zipf: Zipfian,
}

impl ScrambledZipfian {
    /// Over `items` (>= 1) items, with YCSB's constant 0.99.
    pub fn new(items: u64) -> ScrambledZipfian {
        ScrambledZipfian {
            items: items.max(1),
            zipf: Zipfian::with_zeta(SCRAMBLED_ITEMS, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN),
        }
    }

    /// A draw in `0..items`.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        fnv_hash64(self.zipf.sample(rng)) % self.items
    }
}

/// YCSB's skewed-latest chooser: the most recent of `0..count` are the most popular.
#[derive(Debug, Clone)]
pub struct Latest {
    zipf: Zipfian,
}

impl Latest {
    /// Over `0..count`, with `zeta(count, 0.99)` given (see [`Zipfian::with_zeta`]).
    pub fn with_zeta(count: u64, zetan: f64) -> Latest {
        Latest {
            zipf: Zipfian::with_zeta(count, ZIPFIAN_CONSTANT, zetan),
        }
    }

    /// A draw in `0..count`, `count - 1` (the latest) the most likely; `count` is
    /// the records there are now (at least the count given at creation).
    pub fn sample(&mut self, count: u64, rng: &mut impl Rng) -> u64 {
        self.zipf.grow(count);
        let items = self.zipf.items();
        (items - 1) - self.zipf.sample(rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    /// How often each of `0..n` is drawn in `draws` draws.
    fn histogram(n: u64, draws: usize, mut draw: impl FnMut(&mut SmallRng) -> u64) -> Vec<u64> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut seen = vec![0u64; n as usize];
        for _ in 0..draws {
            let i = draw(&mut rng);
            assert!(i < n, "draw {i} out of 0..{n}");
            seen[i as usize] += 1;
        }
        seen
    }

    /// Indexes by how often they were drawn, most often first.
    fn hottest(seen: &[u64]) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..seen.len()).collect();
        idx.sort_by_key(|&i| std::cmp::Reverse(seen[i]));
        idx
    }

    #[test]
    fn the_scrambled_zeta_is_the_sum_it_stands_for() {
        // A partial sum plus the integral of the tail (Euler-Maclaurin, first order):
        // the constant copied from YCSB must agree with it.
        let (m, n, t) = (1_000_000u64, SCRAMBLED_ITEMS as f64, ZIPFIAN_CONSTANT);
        let head = zeta(m, t);
        let tail = (n.powf(1.0 - t) - (m as f64).powf(1.0 - t)) / (1.0 - t);
        let approx = head + tail - 0.5 / (m as f64).powf(t) + 0.5 / n.powf(t);
        assert!((approx - SCRAMBLED_ZETAN).abs() < 1e-3, "{approx}");
    }

    #[test]
    fn zipfian_favours_low_items_in_proportion() {
        let n = 1000;
        let z = Zipfian::with_zeta(n, ZIPFIAN_CONSTANT, zeta(n, ZIPFIAN_CONSTANT));
        let draws = 200_000;
        let seen = histogram(n, draws, |r| z.sample(r));
        // Item i's share is 1 / ((i + 1)^0.99 * zeta(1000)) (zeta ~ 7.4): item 0 ~13%.
        let zn = zeta(n, ZIPFIAN_CONSTANT);
        for i in [0usize, 1, 9] {
            let want = 1.0 / (((i + 1) as f64).powf(ZIPFIAN_CONSTANT) * zn);
            let got = seen[i] as f64 / draws as f64;
            assert!(
                (got - want).abs() < want * 0.1 + 0.002,
                "item {i}: {got} vs {want}"
            );
        }
        assert_eq!(hottest(&seen)[0], 0);
    }

    #[test]
    fn growing_a_zipfian_equals_making_it_that_size() {
        let t = ZIPFIAN_CONSTANT;
        let mut grown = Zipfian::with_zeta(100, t, zeta(100, t));
        grown.grow(5000);
        let direct = Zipfian::with_zeta(5000, t, zeta(5000, t));
        assert_eq!(grown.items(), 5000);
        assert!((grown.zetan - direct.zetan).abs() < 1e-9);
        assert!((grown.eta - direct.eta).abs() < 1e-9);
        grown.grow(10); // never shrinks
        assert_eq!(grown.items(), 5000);
    }

    #[test]
    fn scrambled_zipfian_is_skewed_but_not_towards_the_lowest_indexes() {
        let n = 1000u64;
        let s = ScrambledZipfian::new(n);
        let draws = 200_000;
        let seen = histogram(n, draws, |r| s.sample(r));
        let top = hottest(&seen);
        // The 10 hottest of 1000 records get over 8% of the requests (uniform: 1%;
        // YCSB's zipfian over 10^10 items gives its 10 first ~11%).
        let top10: u64 = top[..10].iter().map(|&i| seen[i]).sum();
        assert!(top10 as f64 > 0.08 * draws as f64, "top 10: {top10}");
        assert!(
            seen[top[0]] as f64 > 0.03 * draws as f64,
            "hottest: {}",
            seen[top[0]]
        );
        // ... and they are scattered over the indexes, not 0..10.
        let low = top[..10].iter().filter(|&&i| i < 10).count();
        assert!(low <= 1, "hottest {:?}", &top[..10]);
        assert!(
            top[..10].iter().any(|&i| i > 500),
            "hottest {:?}",
            &top[..10]
        );
    }

    #[test]
    fn fnv_hash_is_fnv1a_over_the_low_byte_first() {
        // The reference vectors of FNV-1a 64.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        let v = u64::from_le_bytes(*b"foobar\0\0");
        let h = fnv1a64(b"foobar\0\0") as i64;
        assert_eq!(fnv_hash64(v), h.unsigned_abs());
        assert!(fnv_hash64(v) <= i64::MAX as u64 + 1);
    }

    #[test]
    fn latest_favours_the_newest_and_follows_inserts() {
        let n = 1000u64;
        let t = ZIPFIAN_CONSTANT;
        let mut l = Latest::with_zeta(n, zeta(n, t));
        let draws = 100_000;
        let seen = histogram(n, draws, |r| l.sample(n, r));
        // The 10 newest of 1000 get over a quarter (zipfian: ~39%), the newest most.
        let newest10: u64 = seen[990..].iter().sum();
        assert!(newest10 as f64 > 0.25 * draws as f64, "{newest10}");
        assert_eq!(hottest(&seen)[0], 999);
        let oldest_half: u64 = seen[..500].iter().sum();
        assert!(oldest_half < newest10, "{oldest_half} vs {newest10}");
        // After 50 inserts, the newest record (1049) is the most read.
        let seen = histogram(n + 50, draws, |r| l.sample(n + 50, r));
        assert_eq!(hottest(&seen)[0], 1049);
        assert!(
            seen[1049] > seen[999] * 5,
            "{} vs {}",
            seen[1049],
            seen[999]
        );
    }
}
