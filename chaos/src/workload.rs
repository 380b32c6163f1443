//! The workloads: client processes that run operations and record them in the
//! history.
//!
//! - **register**: a few keys in every initial region; each process loops over
//!   random get / put (unique values) / compare-and-swap on them.
//! - **set**: each process writes unique keys once (single puts and BatchWrites of
//!   three keys of one region); after the run the whole key space is scanned.
//!
//! Outcomes follow the client's contract: a write that failed with `Undetermined`
//! completes as `info`, any other failure as `fail` (the checker then holds the
//! client to that contract); a get that failed is `fail` (no effect); a
//! CAS whose compare did not match is `fail`. A process whose operation ended
//! `info` continues under a new process id, so each id has at most one operation
//! that may still take effect.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_client::{Client, Error, Mutation};

use crate::history::{to_hex, CasValue, Event, EventType, Func, Value};

/// Where set keys live: `[prefix(2)] "set/" process "/" n`.
pub const SET_TAG: &[u8] = b"set/";
/// Where register keys live: `[prefix(2)] "reg/" n`.
pub const REGISTER_TAG: &[u8] = b"reg/";

/// The shared history and the run's clock.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    /// An empty history starting now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Records an event now.
    pub fn record(&self, process: u64, kind: EventType, f: Func, key: &[u8], value: Value) {
        let time_ns = self.start.elapsed().as_nanos() as u64;
        let event = Event {
            process,
            kind,
            f,
            key: to_hex(key),
            value,
            time_ns,
        };
        self.events.lock().expect("history lock").push(event);
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("history lock").clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// The first key of initial region `i` of `k` (bootstrap splits the key space at
/// `i * 65536 / k` as two big-endian bytes).
pub fn region_prefix(i: usize, k: usize) -> [u8; 2] {
    (((i as u64) * 65536 / k as u64) as u16).to_be_bytes()
}

/// The register keys: `per_region` in each of the `k` initial regions.
pub fn register_keys(k: usize, per_region: usize) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for i in 0..k {
        for j in 0..per_region {
            let mut key = region_prefix(i, k).to_vec();
            key.extend_from_slice(REGISTER_TAG);
            key.extend_from_slice(j.to_string().as_bytes());
            keys.push(key);
        }
    }
    keys
}

/// What a client process needs.
pub struct Worker {
    /// Its first process id; later ones add `stride`.
    pub process: u64,
    /// Added to the process id after an unknown outcome.
    pub stride: u64,
    /// The client.
    pub client: Client,
    /// The history.
    pub recorder: Recorder,
    /// Its random source (seeded from the run's seed).
    pub rng: StdRng,
    /// When to stop.
    pub until: Instant,
}

/// Counts of one worker's operations.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Operations invoked.
    pub ops: u64,
    /// Completed ok.
    pub ok: u64,
    /// Completed fail.
    pub fail: u64,
    /// Outcome unknown.
    pub info: u64,
}

impl Counts {
    fn add(&mut self, kind: EventType) {
        self.ops += 1;
        match kind {
            EventType::Ok => self.ok += 1,
            EventType::Fail => self.fail += 1,
            EventType::Info => self.info += 1,
            EventType::Invoke => {}
        }
    }

    /// Sums two counts.
    pub fn merge(&mut self, o: Counts) {
        self.ops += o.ops;
        self.ok += o.ok;
        self.fail += o.fail;
        self.info += o.info;
    }
}

/// How a write's error completes: unknown outcomes are `info`.
fn write_outcome(e: &Error) -> EventType {
    match e.is_undetermined() {
        true => EventType::Info,
        false => EventType::Fail,
    }
}

impl Worker {
    /// Runs the register workload on `keys` until the deadline.
    pub async fn run_register(mut self, keys: Vec<Vec<u8>>) -> Counts {
        let mut counts = Counts::default();
        let mut seq = 0u64;
        while Instant::now() < self.until {
            let key = keys[self.rng.gen_range(0..keys.len())].clone();
            seq += 1;
            let value = format!("{}-{seq}", self.process).into_bytes();
            let kind = match self.rng.gen_range(0..4) {
                0 | 1 => self.get(&key).await,
                2 => self.put(&key, &value).await,
                _ => self.cas(&key, value).await,
            };
            counts.add(kind);
            if kind == EventType::Info {
                self.process += self.stride;
            }
            self.pause().await;
        }
        counts
    }

    /// Runs the set workload until the deadline.
    pub async fn run_set(mut self) -> Counts {
        let mut counts = Counts::default();
        let mut seq = 0u64;
        while Instant::now() < self.until {
            let prefix: [u8; 2] = self.rng.gen();
            let batch = if self.rng.gen_range(0..4) == 0 { 3 } else { 1 };
            let keys: Vec<Vec<u8>> = (0..batch)
                .map(|_| {
                    seq += 1;
                    let mut key = prefix.to_vec();
                    key.extend_from_slice(SET_TAG);
                    key.extend_from_slice(format!("{}/{seq}", self.process).as_bytes());
                    key
                })
                .collect();
            let kind = self.add(keys).await;
            for _ in 0..batch {
                counts.add(kind);
            }
            if kind == EventType::Info {
                self.process += self.stride;
            }
            self.pause().await;
        }
        counts
    }

    async fn pause(&mut self) {
        let ms = self.rng.gen_range(0..5);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn get(&self, key: &[u8]) -> EventType {
        let r = &self.recorder;
        r.record(self.process, EventType::Invoke, Func::Get, key, Value::Null);
        let (kind, value) = match self.client.get(key).await {
            Ok(Some(v)) => (EventType::Ok, Value::Hex(to_hex(&v))),
            Ok(None) => (EventType::Ok, Value::Null),
            Err(_) => (EventType::Fail, Value::Null),
        };
        r.record(self.process, kind, Func::Get, key, value);
        kind
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> EventType {
        let r = &self.recorder;
        let v = Value::Hex(to_hex(value));
        r.record(self.process, EventType::Invoke, Func::Put, key, v.clone());
        let kind = match self.client.put(key, value).await {
            Ok(()) => EventType::Ok,
            Err(e) => write_outcome(&e),
        };
        r.record(self.process, kind, Func::Put, key, v);
        kind
    }

    async fn cas(&self, key: &[u8], new: Vec<u8>) -> EventType {
        // Expect what a read finds now (most swaps then have a chance to match).
        let expect = self.client.get(key).await.ok().flatten();
        let r = &self.recorder;
        let v = Value::Cas(CasValue {
            expect: expect.as_deref().map(to_hex),
            new: to_hex(&new),
        });
        r.record(self.process, EventType::Invoke, Func::Cas, key, v.clone());
        let kind = match self.client.compare_and_swap(key, expect, &new).await {
            Ok(o) if o.succeeded => EventType::Ok,
            Ok(_) => EventType::Fail,
            Err(e) => write_outcome(&e),
        };
        r.record(self.process, kind, Func::Cas, key, v);
        kind
    }

    /// Writes `keys` (one put, or one BatchWrite), recording one put per key.
    async fn add(&self, keys: Vec<Vec<u8>>) -> EventType {
        let r = &self.recorder;
        let value = |k: &[u8]| Value::Hex(to_hex(&k[k.len().saturating_sub(4)..]));
        for k in &keys {
            r.record(self.process, EventType::Invoke, Func::Put, k, value(k));
        }
        let result = match keys.len() {
            1 => {
                self.client
                    .put(&keys[0], &keys[0][keys[0].len().saturating_sub(4)..])
                    .await
            }
            _ => {
                let muts = keys
                    .iter()
                    .map(|k| Mutation::Put(k.clone(), k[k.len().saturating_sub(4)..].to_vec()))
                    .collect();
                self.client.batch_write(muts).await
            }
        };
        let kind = match result {
            Ok(()) => EventType::Ok,
            Err(e) => write_outcome(&e),
        };
        for k in &keys {
            r.record(self.process, kind, Func::Put, k, value(k));
        }
        kind
    }
}

/// A fresh seeded random source for worker `i` of a run seeded `seed`.
pub fn worker_rng(seed: u64, i: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1)))
}

/// Whether `key` is a set key.
pub fn is_set_key(key: &[u8]) -> bool {
    key.len() > 2 + SET_TAG.len() && &key[2..2 + SET_TAG.len()] == SET_TAG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_keys_fall_in_their_initial_regions() {
        let k = 16;
        let keys = register_keys(k, 2);
        assert_eq!(keys.len(), 32);
        for (n, key) in keys.iter().enumerate() {
            let i = n / 2;
            assert!(key.as_slice() >= &region_prefix(i, k)[..]);
            if i + 1 < k {
                assert!(key.as_slice() < &region_prefix(i + 1, k)[..]);
            }
        }
        assert!(is_set_key(b"\x01\x02set/3/4"));
        assert!(!is_set_key(b"\x01\x02reg/3"));
    }
}
