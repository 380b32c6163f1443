//! Batch-system micro-benchmarks with a toy FSM.
//!
//! - `router_throughput/pollers_{P}/fsms/{1,1000,100000}`: messages per second from one
//!   sending thread through the router and P pollers (the default, one per core, and 1),
//!   the messages spread round-robin over that many FSMs. One iteration sends 100,000
//!   messages and waits until the handlers have seen all of them.
//! - `ticker/round_100k_registered_1pct_due`: one ticker round with 100,000 periodic
//!   registrations of which 1,000 are due (deliver just counts: the ticker's own cost).
//! - Memory per idle FSM (mailbox + router entry, and a ticker registration), measured
//!   with a counting global allocator and printed once before the criterion runs.
//!
//! Run: `cargo bench -p shoal-bench --bench router`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use shoal_router::{
    create_system, BatchSystem, Config, Fsm, PollHandler, RoundFsms, Router, Ticker,
};

/// Counts live heap bytes and allocations, to measure memory per FSM.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> (isize, isize) {
    (
        LIVE_BYTES.load(Ordering::SeqCst),
        LIVE_ALLOCS.load(Ordering::SeqCst),
    )
}

/// The toy FSM: a counter. Its message is a `u64`.
struct Toy {
    handled: u64,
}

impl Fsm for Toy {
    type Message = u64;
}

struct Control;

impl Fsm for Control {
    type Message = ();
}

#[derive(Clone, Copy)]
#[repr(u8)]
enum BenchTick {
    Raft = 0,
}

impl From<BenchTick> for u8 {
    fn from(t: BenchTick) -> u8 {
        t as u8
    }
}

/// Messages handled so far, and a signal when they reach `target`.
struct Progress {
    handled: AtomicU64,
    target: AtomicU64,
    done: Sender<()>,
}

struct Handler {
    progress: Arc<Progress>,
    round: u64,
}

impl PollHandler<Toy, Control> for Handler {
    fn handle_control(&mut self, _: &mut Control, _: &mut Vec<()>) {}

    fn handle_normal(&mut self, fsm: &mut Toy, msgs: &mut Vec<u64>) {
        fsm.handled += msgs.len() as u64;
        self.round += msgs.len() as u64;
    }

    fn end(&mut self, _: RoundFsms<'_, Toy>) {
        // Publish once per round, as a real handler does its work once per round.
        let n = std::mem::take(&mut self.round);
        let prev = self.progress.handled.fetch_add(n, Ordering::AcqRel);
        let target = self.progress.target.load(Ordering::Acquire);
        if prev < target && prev + n >= target {
            let _ = self.progress.done.send(());
        }
    }
}

struct Setup {
    router: Router<Toy, Control>,
    system: BatchSystem<Toy, Control>,
    progress: Arc<Progress>,
    done: Receiver<()>,
    sent: u64,
}

impl Setup {
    fn new(pollers: usize, fsms: u64) -> Setup {
        let cfg = Config {
            pollers,
            ..Config::default()
        };
        let (router, mut system) = create_system(&cfg, Box::new(Control)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let progress = Arc::new(Progress {
            handled: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            done: tx,
        });
        let p = progress.clone();
        system
            .spawn("shoal-poll", move |_| Handler {
                progress: p.clone(),
                round: 0,
            })
            .unwrap();
        for id in 0..fsms {
            router.register(id, Box::new(Toy { handled: 0 })).unwrap();
        }
        Setup {
            router,
            system,
            progress,
            done: rx,
            sent: 0,
        }
    }

    /// Sends `n` messages round-robin over ids `0..fsms` and waits until all are handled.
    fn send_and_wait(&mut self, fsms: u64, n: u64) {
        let target = self.sent + n;
        self.progress.target.store(target, Ordering::Release);
        for i in 0..n {
            self.router.send((self.sent + i) % fsms, i).unwrap();
        }
        self.sent = target;
        self.done
            .recv_timeout(Duration::from_secs(120))
            .expect("pollers did not handle every message");
    }
}

const MSGS_PER_ITER: u64 = 100_000;

fn router_throughput(c: &mut Criterion) {
    // The default (one poller per core) and one poller: on a 2-core machine the sending
    // thread competes with two pollers for the cores, which makes the default noisy.
    let default_pollers = Config::default().pollers;
    let mut pollers = vec![default_pollers];
    if default_pollers != 1 {
        pollers.push(1);
    }
    for pollers in pollers {
        let mut group = c.benchmark_group(format!("router_throughput/pollers_{pollers}"));
        group.throughput(Throughput::Elements(MSGS_PER_ITER));
        for fsms in [1u64, 1_000, 100_000] {
            let mut setup = Setup::new(pollers, fsms);
            group.bench_function(BenchmarkId::new("fsms", fsms), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        setup.send_and_wait(fsms, MSGS_PER_ITER);
                    }
                    start.elapsed()
                })
            });
            assert!(setup.system.shutdown().is_empty());
        }
        group.finish();
    }
}

const TICKER_FSMS: u64 = 100_000;
const TICK_PERIOD: u32 = 100;

/// 100,000 FSMs ticking every 100 rounds with phases spread: 1% due each round.
fn spread_ticker() -> Ticker<BenchTick> {
    let ticker = Ticker::default();
    for id in 0..TICKER_FSMS {
        let phase = 1 + id % u64::from(TICK_PERIOD);
        ticker.schedule_every_after(id, BenchTick::Raft, phase, TICK_PERIOD);
    }
    ticker
}

fn ticker_round(c: &mut Criterion) {
    let ticker = spread_ticker();
    let mut group = c.benchmark_group("ticker");
    group.bench_function("round_100k_registered_1pct_due", |b| {
        b.iter(|| {
            let mut fired = 0u32;
            ticker.advance(|_, _| {
                fired += 1;
                true
            });
            assert_eq!(fired, TICKER_FSMS as u32 / TICK_PERIOD);
        })
    });
    group.finish();
}

/// Prints bytes (as requested from the allocator) per idle FSM.
fn memory_report() {
    const N: u64 = 100_000;
    let mut setup = Setup::new(Config::default().pollers, 0);
    let (b0, a0) = live();
    for id in 0..N {
        setup
            .router
            .register(id, Box::new(Toy { handled: 0 }))
            .unwrap();
    }
    let (b1, a1) = live();
    let ticker = Ticker::<BenchTick>::default();
    for id in 0..N {
        ticker.schedule_every_after(id, BenchTick::Raft, 1 + id % 100, 100);
    }
    let (b2, a2) = live();
    // Every FSM handles one message and goes idle again.
    setup.send_and_wait(N, N);
    let (b3, a3) = live();
    let per = |d: isize| d as f64 / N as f64;
    println!(
        "memory per idle FSM ({N} FSMs, toy FSM of {} bytes):",
        std::mem::size_of::<Toy>()
    );
    println!(
        "  registered (FSM box + mailbox + router entry): {:.1} bytes, {:.2} allocations",
        per(b1 - b0),
        per(a1 - a0)
    );
    println!(
        "  ticker registration (periodic):                {:.1} bytes, {:.2} allocations",
        per(b2 - b1),
        per(a2 - a1)
    );
    println!(
        "  after one message each, idle again (+):        {:.1} bytes, {:.2} allocations",
        per(b3 - b2),
        per(a3 - a2)
    );
    println!(
        "  total:                                         {:.1} bytes",
        per(b3 - b0)
    );
    drop(ticker);
    assert!(setup.system.shutdown().is_empty());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = router_throughput, ticker_round
}

fn main() {
    memory_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
