//! What a dormant region's peer holds on the Rust heap: a counting allocator
//! measures the live bytes of two 3-store clusters whose regions all went
//! dormant, one with more regions than the other; the difference per peer is
//! the figure (RocksDB's own memory, outside Rust's allocator, is not in it:
//! `scripts/idle_regions.sh` measures whole processes). It must stay under
//! 4 KiB: the bound for a whole process is 8 KiB per region.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use common::Cluster;
use shoal_raftstore::TickMode;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Live heap bytes once a 3-store cluster of `k` regions is all dormant.
fn dormant_heap(k: usize) -> isize {
    let c = Cluster::start(3, k, TickMode::Manual);
    // Stores start their peers dormant and wake them at a pace: each region must
    // have woken, elected a leader and gone dormant again.
    c.tick_until(&format!("{k} led, dormant regions on every store"), || {
        let stores: Vec<_> = c.store_ids().into_iter().map(|id| c.store(id)).collect();
        let leaders: i64 = stores.iter().map(|s| s.metrics().leader_count.get()).sum();
        leaders == k as i64
            && stores.iter().all(|s| {
                let m = s.metrics();
                m.dormant_regions.get() == k as i64 && m.wake_queue.get() == 0
            })
    });
    // Two laps of the ticker's wheel (512 rounds each): a bucket gives back the
    // room of registrations cancelled a lap ago. Then let what the last round
    // freed go (channels, answers in flight).
    for _ in 0..1100 {
        c.tick_all();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    if std::env::var_os("EXIT_AT").is_some_and(|v| v == k.to_string().as_str()) {
        std::process::exit(0);
    }
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn a_dormant_peer_holds_under_4_kib_of_heap() {
    let (small, large) = (100, 1100);
    let a = dormant_heap(small);
    let b = dormant_heap(large);
    let per_peer = (b - a) / (3 * (large - small) as isize);
    eprintln!("heap per dormant peer: {per_peer} bytes");
    assert!(per_peer < 4096, "a dormant peer holds {per_peer} bytes");
}
