//! Conformance cases for [`LogEngine`] implementations.

use shoal_proto::raft_serverpb::{HardState, RaftLocalState};

use super::{temp_dir, Harness};
use crate::{Error, LogBatch, LogEngine, LogEntry};

fn entries(lo: u64, hi: u64, term: u64) -> Vec<LogEntry> {
    (lo..hi)
        .map(|index| LogEntry {
            index,
            term,
            data: format!("entry-{index}-term-{term}").into_bytes(),
        })
        .collect()
}

fn state(term: u64, commit: u64, last_index: u64) -> RaftLocalState {
    RaftLocalState {
        hard_state: Some(HardState {
            term,
            vote: 1,
            commit,
        }),
        last_index,
    }
}

fn append<L: LogEngine>(log: &L, region: u64, es: Vec<LogEntry>) {
    let mut b = LogBatch::new();
    b.add(region, es, None);
    log.write(&b).expect("append");
}

fn fetch_all<L: LogEngine>(log: &L, region: u64, lo: u64, hi: u64) -> Vec<LogEntry> {
    let mut out = Vec::new();
    log.fetch(region, lo, hi, None, &mut out).expect("fetch");
    out
}

/// Entries and hard state written before a close are there after reopening.
pub fn entries_and_state_survive_reopen<H: Harness>() {
    let dir = temp_dir();
    {
        let log = H::open_log(dir.path());
        let mut b = LogBatch::new();
        b.add(1, entries(1, 11, 2), Some(state(2, 7, 10)));
        b.add(2, entries(1, 4, 1), Some(state(1, 3, 3)));
        log.write(&b).unwrap();
    }
    let log = H::open_log(dir.path());
    assert_eq!(fetch_all(&log, 1, 1, 11), entries(1, 11, 2));
    assert_eq!(fetch_all(&log, 2, 1, 4), entries(1, 4, 1));
    assert_eq!(log.raft_state(1).unwrap(), Some(state(2, 7, 10)));
    assert_eq!(log.raft_state(2).unwrap(), Some(state(1, 3, 3)));
    assert_eq!(log.first_index(1).unwrap(), Some(1));
    assert_eq!(log.last_index(1).unwrap(), Some(10));
    assert_eq!(log.term(1, 5).unwrap(), 2);
    assert_eq!(log.raft_state(3).unwrap(), None);
}

/// One batch covering 100 regions costs exactly one sync.
pub fn batch_of_many_regions_is_one_sync<H: Harness>() {
    let dir = temp_dir();
    let log = H::open_log(dir.path());
    let before = log.stats();
    let mut b = LogBatch::new();
    for region in 1..=100 {
        b.add(region, entries(1, 4, 1), Some(state(1, 0, 3)));
    }
    assert_eq!(b.region_count(), 100);
    log.write(&b).unwrap();
    let after = log.stats();
    assert_eq!(after.syncs - before.syncs, 1, "one batch, one sync");
    assert_eq!(after.regions_written - before.regions_written, 100);
    assert_eq!(after.entries_written - before.entries_written, 300);
    for region in 1..=100 {
        assert_eq!(fetch_all(&log, region, 1, 4).len(), 3, "region {region}");
    }
}

/// Appending at index i replaces every entry >= i, even past the new tail.
pub fn conflicting_append_replaces_the_tail<H: Harness>() {
    let dir = temp_dir();
    let log = H::open_log(dir.path());
    append(&log, 1, entries(1, 11, 1));
    // A new leader's log diverges at 6 and is shorter.
    append(&log, 1, entries(6, 8, 2));
    assert_eq!(log.last_index(1).unwrap(), Some(7));
    let got = fetch_all(&log, 1, 1, 8);
    let mut want = entries(1, 6, 1);
    want.extend(entries(6, 8, 2));
    assert_eq!(got, want);
    assert!(matches!(
        log.term(1, 8),
        Err(Error::Unavailable { last_index: 7, .. })
    ));
    // A conflict that removes many entries (range delete path) behaves the same.
    append(&log, 1, entries(8, 1000, 2));
    append(&log, 1, entries(3, 4, 3));
    assert_eq!(log.last_index(1).unwrap(), Some(3));
    assert_eq!(log.term(1, 3).unwrap(), 3);
    drop(log);
    let log = H::open_log(dir.path());
    assert_eq!(log.last_index(1).unwrap(), Some(3), "after reopen");
    assert_eq!(fetch_all(&log, 1, 1, 4).len(), 3);
}

/// An append that would leave a gap after the last index is refused.
pub fn append_refuses_a_hole<H: Harness>() {
    let dir = temp_dir();
    let log = H::open_log(dir.path());
    append(&log, 1, entries(1, 4, 1));
    let mut b = LogBatch::new();
    b.add(1, entries(6, 7, 1), None);
    assert!(matches!(log.write(&b), Err(Error::InvalidArgument(_))));
    assert_eq!(log.last_index(1).unwrap(), Some(3));
}

/// Two writes to one region in a batch apply in order: the second's overwrite wins.
pub fn writes_in_one_batch_apply_in_order<H: Harness>() {
    let dir = temp_dir();
    let log = H::open_log(dir.path());
    let mut b = LogBatch::new();
    b.add(1, entries(1, 6, 1), Some(state(1, 0, 5)));
    b.add(1, entries(4, 5, 2), Some(state(2, 0, 4)));
    log.write(&b).unwrap();
    assert_eq!(log.last_index(1).unwrap(), Some(4));
    assert_eq!(log.term(1, 4).unwrap(), 2);
    assert_eq!(log.raft_state(1).unwrap(), Some(state(2, 0, 4)));
}

/// The byte limit stops a fetch early, but at least one entry comes back.
pub fn fetch_respects_the_byte_limit<H: Harness>() {
    let dir = temp_dir();
    let log = H::open_log(dir.path());
    let big: Vec<LogEntry> = (1..=10)
        .map(|index| LogEntry {
            index,
            term: 1,
            data: vec![index as u8; 1000],
        })
        .collect();
    append(&log, 1, big.clone());
    let one = big[0].size();
    let mut out = Vec::new();
    log.fetch(1, 1, 11, Some(one * 3), &mut out).unwrap();
    assert_eq!(out, big[..3].to_vec());
    out.clear();
    log.fetch(1, 1, 11, Some(1), &mut out).unwrap();
    assert_eq!(out.len(), 1, "at least one entry");
    out.clear();
    log.fetch(1, 1, 11, Some(usize::MAX), &mut out).unwrap();
    assert_eq!(out, big);
}

/// Compaction removes a prefix; reading below it is a clear `Compacted` error.
pub fn compaction_and_fetch_across_the_boundary<H: Harness>() {
    let dir = temp_dir();
    let log = H::open_log(dir.path());
    append(&log, 1, entries(1, 21, 1));
    append(&log, 2, entries(1, 21, 1));
    assert_eq!(log.compact_to(1, 11).unwrap(), 10);
    assert_eq!(log.first_index(1).unwrap(), Some(11));
    let mut out = Vec::new();
    match log.fetch(1, 5, 15, None, &mut out) {
        Err(Error::Compacted {
            index: 5,
            first_index: 11,
            ..
        }) => {}
        other => panic!("want Compacted, got {other:?}"),
    }
    assert!(matches!(log.term(1, 10), Err(Error::Compacted { .. })));
    assert_eq!(fetch_all(&log, 1, 11, 21), entries(11, 21, 1));
    assert_eq!(log.compact_to(1, 5).unwrap(), 0, "already compacted");
    // The neighbour region is untouched.
    assert_eq!(fetch_all(&log, 2, 1, 21).len(), 20);
    // Appending after compaction continues the log.
    append(&log, 1, entries(21, 23, 1));
    assert_eq!(fetch_all(&log, 1, 11, 23).len(), 12);
    // Compacting everything leaves no entries.
    assert_eq!(log.compact_to(1, 100).unwrap(), 12);
    assert_eq!(log.first_index(1).unwrap(), None);
    drop(log);
    let log = H::open_log(dir.path());
    assert_eq!(log.first_index(1).unwrap(), None, "after reopen");
    assert_eq!(log.first_index(2).unwrap(), Some(1));
}

/// Removing a region drops its entries and state, and nothing of its neighbours.
pub fn remove_region_forgets_everything<H: Harness>() {
    let dir = temp_dir();
    let log = H::open_log(dir.path());
    let mut b = LogBatch::new();
    for region in [4, 5, 6] {
        b.add(region, entries(1, 6, 1), Some(state(1, 5, 5)));
    }
    log.write(&b).unwrap();
    log.remove_region(5).unwrap();
    assert_eq!(log.last_index(5).unwrap(), None);
    assert_eq!(log.raft_state(5).unwrap(), None);
    assert_eq!(log.regions().unwrap(), vec![4, 6]);
    assert_eq!(fetch_all(&log, 4, 1, 6).len(), 5);
    assert_eq!(fetch_all(&log, 6, 1, 6).len(), 5);
    drop(log);
    let log = H::open_log(dir.path());
    assert_eq!(log.regions().unwrap(), vec![4, 6], "after reopen");
}

/// `regions` lists every region with entries or state, in order, after a restart.
pub fn regions_are_listed_after_reopen<H: Harness>() {
    let dir = temp_dir();
    {
        let log = H::open_log(dir.path());
        let mut b = LogBatch::new();
        b.add(300, entries(1, 2, 1), None);
        b.add(7, Vec::new(), Some(state(1, 0, 0)));
        b.add(u64::MAX, entries(1, 3, 1), Some(state(1, 0, 2)));
        b.add(12, entries(5, 6, 1), None);
        log.write(&b).unwrap();
    }
    let log = H::open_log(dir.path());
    assert_eq!(log.regions().unwrap(), vec![7, 12, 300, u64::MAX]);
    assert_eq!(log.first_index(12).unwrap(), Some(5));
    assert_eq!(log.last_index(u64::MAX).unwrap(), Some(2));
}

/// Reading past the last index, or from a region with no log, is `Unavailable`.
pub fn out_of_range_fetch_is_unavailable<H: Harness>() {
    let dir = temp_dir();
    let log = H::open_log(dir.path());
    append(&log, 1, entries(1, 6, 1));
    let mut out = Vec::new();
    assert!(matches!(
        log.fetch(1, 3, 8, None, &mut out),
        Err(Error::Unavailable { last_index: 5, .. })
    ));
    assert!(matches!(
        log.fetch(9, 1, 2, None, &mut out),
        Err(Error::Unavailable { .. })
    ));
    assert!(out.is_empty());
    log.fetch(1, 3, 3, None, &mut out).unwrap();
    assert!(out.is_empty(), "an empty range reads nothing");
}

/// Readers asking for bounds while a writer appends (to regions they have not
/// read before) never see the log go backwards, and every append right after the
/// last index is accepted.
pub fn concurrent_readers_see_monotonic_bounds<H: Harness>()
where
    H::Log: Sync,
{
    let dir = temp_dir();
    let log = H::open_log(dir.path());
    let regions: Vec<u64> = (1..=32).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut seen = std::collections::HashMap::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for &r in &regions {
                        let last = log.last_index(r).expect("last index").unwrap_or(0);
                        let prev = seen.insert(r, last).unwrap_or(0);
                        assert!(last >= prev, "region {r}: last index went {prev} -> {last}");
                        if let Some(first) = log.first_index(r).expect("first index") {
                            assert_eq!(first, 1, "region {r}: first index moved");
                        }
                    }
                }
            });
        }
        for round in 0..50u64 {
            let mut b = LogBatch::new();
            for &r in &regions {
                b.add(r, entries(round * 4 + 1, round * 4 + 5, 1), None);
            }
            log.write(&b).expect("append after the last index");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    for &r in &regions {
        assert_eq!(log.last_index(r).unwrap(), Some(200));
        assert_eq!(fetch_all(&log, r, 1, 201).len(), 200);
    }
}

/// A replacing write drops every old entry of its region, and only of its region,
/// in the same write: the new log may start anywhere.
pub fn a_replacing_write_starts_the_log_afresh<H: Harness>() {
    let dir = temp_dir();
    {
        let log = H::open_log(dir.path());
        append(&log, 1, entries(1, 11, 2));
        append(&log, 2, entries(1, 4, 1));
        let mut b = LogBatch::new();
        b.replace(1, entries(50, 53, 3), Some(state(3, 49, 52)));
        b.add(2, entries(4, 6, 1), None);
        log.write(&b).unwrap();
        assert_eq!(log.first_index(1).unwrap(), Some(50));
        assert_eq!(log.last_index(1).unwrap(), Some(52));
        assert!(matches!(
            log.fetch(1, 10, 51, None, &mut Vec::new()),
            Err(Error::Compacted { .. })
        ));
        // Appending after the new log is as usual; nothing else was touched.
        append(&log, 1, entries(53, 54, 3));
        assert_eq!(fetch_all(&log, 2, 1, 6).len(), 5);
        // A replace with no entries leaves the region without any.
        let mut b = LogBatch::new();
        b.replace(2, Vec::new(), None);
        log.write(&b).unwrap();
        assert_eq!(log.last_index(2).unwrap(), None);
    }
    let log = H::open_log(dir.path());
    assert_eq!(
        fetch_all(&log, 1, 50, 54),
        [entries(50, 53, 3), entries(53, 54, 3)].concat()
    );
    assert_eq!(log.first_index(1).unwrap(), Some(50));
    assert_eq!(log.raft_state(1).unwrap(), Some(state(3, 49, 52)));
    assert_eq!(log.last_index(2).unwrap(), None);
}
