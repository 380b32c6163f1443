//! The store ticker: one timer source for every FSM of a store.
//!
//! Time is counted in **rounds** (the store's base tick, e.g. 100 ms); [`Ticker::advance`]
//! runs one round. FSMs register interest in a *tick kind* (the user's small
//! `#[repr(u8)]` enum) for some round in the future; when that round comes, the ticker
//! calls the `deliver` callback with `(fsm id, kind)`, which normally sends a tick message
//! through the [`Router`](crate::Router). No FSM owns a thread or a timer.
//!
//! ## Registrations
//!
//! - [`Ticker::schedule_once`]: one-shot, fires once `delay` rounds from now.
//! - [`Ticker::schedule_every`]: periodic, fires every `period` rounds until cancelled,
//!   or until a delivery fails (the FSM is gone), which cancels it.
//! - At most one registration per `(id, kind)`: registering again replaces the previous
//!   one (latest wins). [`Ticker::cancel`] and [`Ticker::cancel_all`] remove them.
//!
//! An FSM that registers nothing costs nothing, per round or in memory: a hibernating
//! region cancels its periodic ticks and re-registers when it wakes. Buckets and the
//! map of live registrations give their spare capacity back as they empty, so the
//! wheel's memory follows what is registered now, not the most it ever held.
//!
//! ## The wheel
//!
//! A hashed timing wheel: `slots` buckets (a power of two); a registration due in round
//! `r` sits in bucket `r % slots`. A round visits one bucket, so its cost is proportional
//! to the registrations that bucket holds (those due now, plus any due whole laps later),
//! not to all registrations. With 100,000 FSMs each ticking every 100 rounds, a round
//! visits about 1,000 entries. Replacing or cancelling a registration leaves its old entry
//! in its bucket; a generation number marks it stale and it is dropped when visited.
//!
//! `deliver` runs without the ticker's lock held, so it (or a poller handling the tick)
//! may register again at once.
//!
//! ## Driving it
//!
//! Tests call [`Ticker::advance`] by hand. A store calls [`Ticker::spawn`] for a thread
//! that advances one round per interval; if the thread falls behind, rounds stretch
//! instead of bunching up.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::hash::BuildIdHasher;

/// A tick kind: a small `Copy` enum whose `u8` value identifies it (at most 256 kinds).
/// Implemented for every `Copy + Into<u8> + Send + 'static` type.
pub trait TickKind: Copy + Into<u8> + Send + 'static {}

impl<T: Copy + Into<u8> + Send + 'static> TickKind for T {}

/// Default number of wheel buckets: delays up to this many rounds never wait a lap.
pub const DEFAULT_WHEEL_SLOTS: usize = 512;

#[derive(Clone, Copy)]
struct Entry<T> {
    id: u64,
    /// Matches `Wheel::live[(id, kind)]` while this entry is the live registration.
    generation: u64,
    due: u64,
    /// 0 for one-shot.
    period: u32,
    kind: T,
}

struct Fired<T> {
    id: u64,
    kind: T,
    generation: u64,
    periodic: bool,
}

struct Wheel<T> {
    now: u64,
    mask: u64,
    slots: Vec<Vec<Entry<T>>>,
    /// The live registration of each `(id, kind)`, by generation.
    live: HashMap<(u64, u8), u64, BuildIdHasher>,
    next_generation: u64,
    /// Highest kind ever registered, to bound `cancel_all`.
    max_kind: u8,
    /// Reused buffer of the round's fired registrations.
    fired: Vec<Fired<T>>,
}

impl<T: TickKind> Wheel<T> {
    fn insert(&mut self, id: u64, kind: T, delay: u64, period: u32) {
        let k: u8 = kind.into();
        self.max_kind = self.max_kind.max(k);
        let generation = self.next_generation;
        self.next_generation += 1;
        self.live.insert((id, k), generation);
        let due = self.now + delay.max(1);
        self.slots[(due & self.mask) as usize].push(Entry {
            id,
            generation,
            due,
            period,
            kind,
        });
    }

    /// Moves to the next round and collects its due registrations into `self.fired`.
    fn step(&mut self) {
        self.now += 1;
        let now = self.now;
        let index = (now & self.mask) as usize;
        let mut bucket = mem::take(&mut self.slots[index]);
        let held = bucket.len();
        let mut kept = 0;
        for i in 0..bucket.len() {
            let e = bucket[i];
            if e.due != now {
                // Due a whole lap (or more) later.
                bucket[kept] = e;
                kept += 1;
                continue;
            }
            let key = (e.id, e.kind.into());
            if self.live.get(&key) != Some(&e.generation) {
                continue; // replaced or cancelled
            }
            if e.period == 0 {
                self.live.remove(&key);
            } else {
                let due = now + u64::from(e.period);
                self.slots[(due & self.mask) as usize].push(Entry { due, ..e });
            }
            self.fired.push(Fired {
                id: e.id,
                kind: e.kind,
                generation: e.generation,
                periodic: e.period != 0,
            });
        }
        bucket.truncate(kept);
        // A period that is a multiple of the wheel size re-inserted into this very bucket.
        let reinserted = mem::replace(&mut self.slots[index], bucket);
        self.slots[index].extend(reinserted);
        // Memory follows the registrations: a bucket once filled by many FSMs
        // (every FSM ticking each round passes through every bucket) gives back
        // what it held beyond this lap's entries, and so does the map of live
        // registrations once FSMs stop ticking (dormant regions). Measured at
        // the lap, not after the round: a bucket of FSMs ticking every round is
        // empty after each round and full again a lap later, and keeps its room.
        let slot = &mut self.slots[index];
        if slot.capacity() > 2 * held + 16 {
            slot.shrink_to(held);
        }
        if self.live.capacity() > 4 * self.live.len() + 64 {
            self.live.shrink_to(2 * self.live.len());
        }
    }
}

/// The store ticker. Cheap to clone; every clone is the same ticker.
pub struct Ticker<T> {
    wheel: Arc<Mutex<Wheel<T>>>,
}

impl<T> Clone for Ticker<T> {
    fn clone(&self) -> Self {
        Ticker {
            wheel: Arc::clone(&self.wheel),
        }
    }
}

impl<T: TickKind> Default for Ticker<T> {
    fn default() -> Self {
        Ticker::new(DEFAULT_WHEEL_SLOTS)
    }
}

impl<T: TickKind> Ticker<T> {
    /// A ticker at round 0 whose wheel has `slots` buckets (rounded up to a power of two).
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1).next_power_of_two();
        Ticker {
            wheel: Arc::new(Mutex::new(Wheel {
                now: 0,
                mask: slots as u64 - 1,
                slots: (0..slots).map(|_| Vec::new()).collect(),
                live: HashMap::default(),
                next_generation: 0,
                max_kind: 0,
                fired: Vec::new(),
            })),
        }
    }

    /// The current round (0 before the first [`advance`](Self::advance)).
    pub fn now(&self) -> u64 {
        self.wheel.lock().now
    }

    /// Number of live registrations.
    pub fn len(&self) -> usize {
        self.wheel.lock().live.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fires `kind` for `id` once, in round `now + delay` (a delay of 0 counts as 1).
    /// Replaces any registration of the same `(id, kind)`.
    pub fn schedule_once(&self, id: u64, kind: T, delay: u64) {
        self.wheel.lock().insert(id, kind, delay, 0);
    }

    /// Fires `kind` for `id` every `period` rounds (0 counts as 1), first in round
    /// `now + period`. Replaces any registration of the same `(id, kind)`.
    pub fn schedule_every(&self, id: u64, kind: T, period: u32) {
        self.schedule_every_after(id, kind, u64::from(period), period);
    }

    /// Like [`schedule_every`](Self::schedule_every) but fires first in round
    /// `now + delay` (0 counts as 1). Spreading `delay` over `0..period` spreads the
    /// FSMs over the rounds instead of ticking them all in the same one.
    pub fn schedule_every_after(&self, id: u64, kind: T, delay: u64, period: u32) {
        self.wheel.lock().insert(id, kind, delay, period.max(1));
    }

    /// Whether `(id, kind)` has a live registration.
    pub fn is_scheduled(&self, id: u64, kind: T) -> bool {
        self.wheel.lock().live.contains_key(&(id, kind.into()))
    }

    /// Cancels `(id, kind)`. Returns whether it was registered.
    pub fn cancel(&self, id: u64, kind: T) -> bool {
        self.wheel.lock().live.remove(&(id, kind.into())).is_some()
    }

    /// Cancels every registration of `id` (an FSM being destroyed). Returns how many.
    pub fn cancel_all(&self, id: u64) -> usize {
        let mut wheel = self.wheel.lock();
        (0..=wheel.max_kind)
            .filter(|&k| wheel.live.remove(&(id, k)).is_some())
            .count()
    }

    /// Runs one round: fires every registration due in it through `deliver`, which
    /// returns whether the tick was delivered. A periodic registration whose delivery
    /// fails is cancelled. Returns the number of ticks delivered.
    pub fn advance(&self, mut deliver: impl FnMut(u64, T) -> bool) -> usize {
        let mut fired = {
            let mut wheel = self.wheel.lock();
            wheel.step();
            mem::take(&mut wheel.fired)
        };
        let mut delivered = 0;
        fired.retain(|f| {
            let ok = deliver(f.id, f.kind);
            delivered += usize::from(ok);
            !ok && f.periodic
        });
        let mut wheel = self.wheel.lock();
        for f in fired.drain(..) {
            let key = (f.id, f.kind.into());
            if wheel.live.get(&key) == Some(&f.generation) {
                wheel.live.remove(&key);
            }
        }
        wheel.fired = fired;
        delivered
    }

    /// Runs rounds until [`now`](Self::now) is `round`. Returns the ticks delivered.
    pub fn advance_to(&self, round: u64, mut deliver: impl FnMut(u64, T) -> bool) -> usize {
        let mut delivered = 0;
        while self.now() < round {
            delivered += self.advance(&mut deliver);
        }
        delivered
    }

    /// Starts a thread named `name` that runs one round every `interval`. Stopping (or
    /// dropping) the returned handle stops the thread.
    pub fn spawn<F>(
        &self,
        name: &str,
        interval: Duration,
        mut deliver: F,
    ) -> io::Result<TickerThread>
    where
        F: FnMut(u64, T) -> bool + Send + 'static,
    {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let ticker = self.clone();
        let handle = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    match stop_rx.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    ticker.advance(&mut deliver);
                    // Late (a stall, an overloaded machine): stretch, don't bunch up.
                    next = (next + interval).max(Instant::now());
                }
            })?;
        Ok(TickerThread {
            stop: Some(stop_tx),
            handle: Some(handle),
        })
    }
}

/// The thread started by [`Ticker::spawn`]. Dropping it stops the thread too.
pub struct TickerThread {
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TickerThread {
    /// Stops the thread and waits for it (at most one round's delivery).
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        // Dropping the sender disconnects the channel, which wakes the thread.
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for TickerThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(u8)]
    enum Tick {
        A = 0,
        B = 1,
    }

    impl From<Tick> for u8 {
        fn from(t: Tick) -> u8 {
            t as u8
        }
    }

    /// Advances one round and returns what fired, sorted.
    fn step(t: &Ticker<Tick>) -> Vec<(u64, Tick)> {
        let mut out = Vec::new();
        t.advance(|id, k| {
            out.push((id, k));
            true
        });
        out.sort_by_key(|&(id, k)| (id, k as u8));
        out
    }

    #[test]
    fn the_wheel_gives_memory_back_once_its_registrations_are_cancelled() {
        let t = Ticker::new(64);
        for id in 0..10_000 {
            t.schedule_every(id, Tick::A, 1);
        }
        // Every registration passes through every bucket.
        for _ in 0..128 {
            t.advance(|_, _| true);
        }
        let held = |t: &Ticker<Tick>| {
            let w = t.wheel.lock();
            let slots: usize = w.slots.iter().map(Vec::capacity).sum();
            slots + w.live.capacity()
        };
        assert!(held(&t) >= 10_000, "{}", held(&t));
        for id in 0..10_000 {
            t.cancel(id, Tick::A);
        }
        for _ in 0..128 {
            t.advance(|_, _| true);
        }
        assert!(
            held(&t) < 64 * 16 + 200,
            "the wheel still holds {}",
            held(&t)
        );
    }

    #[test]
    fn one_shot_fires_once_at_its_round() {
        let t = Ticker::new(8);
        t.schedule_once(1, Tick::A, 3);
        assert!(step(&t).is_empty());
        assert!(step(&t).is_empty());
        assert_eq!(step(&t), vec![(1, Tick::A)]);
        assert!(!t.is_scheduled(1, Tick::A));
        for _ in 0..20 {
            assert!(step(&t).is_empty());
        }
    }

    #[test]
    fn delay_zero_means_next_round() {
        let t = Ticker::new(8);
        t.schedule_once(1, Tick::A, 0);
        assert_eq!(step(&t), vec![(1, Tick::A)]);
    }

    #[test]
    fn delays_longer_than_the_wheel_wait_whole_laps() {
        let t = Ticker::new(4);
        t.schedule_once(9, Tick::A, 11);
        for round in 1..=30 {
            let fired = step(&t);
            assert_eq!(fired.len(), usize::from(round == 11), "round {round}");
        }
    }

    #[test]
    fn periodic_fires_every_period_even_a_multiple_of_the_wheel() {
        for period in [1u32, 3, 4, 8] {
            let t = Ticker::new(4);
            t.schedule_every(5, Tick::B, period);
            for round in 1..=40u64 {
                let want = usize::from(round % u64::from(period) == 0);
                assert_eq!(step(&t).len(), want, "period {period} round {round}");
            }
        }
    }

    #[test]
    fn periodic_with_a_first_delay() {
        let t = Ticker::new(8);
        t.schedule_every_after(1, Tick::A, 2, 5);
        let fired: Vec<usize> = (1..=13).map(|_| step(&t).len()).collect();
        // Rounds 2, 7, 12.
        assert_eq!(fired, vec![0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn registering_again_replaces() {
        let t = Ticker::new(8);
        t.schedule_every(1, Tick::A, 2);
        t.schedule_once(1, Tick::A, 5);
        assert_eq!(t.len(), 1);
        let fired: Vec<usize> = (0..10).map(|_| step(&t).len()).collect();
        assert_eq!(fired, vec![0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn cancel_and_cancel_all() {
        let t = Ticker::new(8);
        t.schedule_every(1, Tick::A, 1);
        t.schedule_every(1, Tick::B, 1);
        t.schedule_every(2, Tick::A, 1);
        assert!(t.cancel(2, Tick::A));
        assert!(!t.cancel(2, Tick::A));
        assert_eq!(step(&t), vec![(1, Tick::A), (1, Tick::B)]);
        assert_eq!(t.cancel_all(1), 2);
        assert!(t.is_empty());
        assert!(step(&t).is_empty());
    }

    #[test]
    fn failed_delivery_cancels_a_periodic_registration() {
        let t = Ticker::new(8);
        t.schedule_every(1, Tick::A, 1);
        t.schedule_every(2, Tick::A, 1);
        assert_eq!(t.advance(|id, _| id == 1), 1);
        assert!(t.is_scheduled(1, Tick::A));
        assert!(!t.is_scheduled(2, Tick::A));
        assert_eq!(step(&t), vec![(1, Tick::A)]);
    }

    #[test]
    fn deliver_may_register_again() {
        let t = Ticker::new(8);
        t.schedule_once(1, Tick::A, 1);
        let t2 = t.clone();
        for _ in 0..5 {
            let n = t.advance(|id, k| {
                t2.schedule_once(id, k, 1);
                true
            });
            assert_eq!(n, 1);
        }
    }

    #[test]
    fn advance_to_runs_every_round() {
        let t = Ticker::new(8);
        t.schedule_every(1, Tick::A, 2);
        assert_eq!(t.advance_to(10, |_, _| true), 5);
        assert_eq!(t.now(), 10);
    }
}
