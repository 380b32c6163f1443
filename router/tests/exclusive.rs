//! An FSM never runs on two pollers at once, and `end` sees exactly its round.
//!
//! The recording handler (tests/common) marks an FSM busy from `handle_normal` until
//! the `end` of its round and records a violation if it finds it busy already, or if
//! `end` is given anything other than the FSMs handled in that round.

mod common;

use std::thread;

use common::{config, Event, Harness, Msg};

#[test]
fn fsm_is_on_one_poller_at_a_time_under_load() {
    const FSMS: u64 = 16;
    const SENDERS: u64 = 4;
    const PER_SENDER: u64 = 5_000;
    // More pollers than cores and tiny quotas: FSMs hop between pollers constantly.
    let h = Harness::started(config(4, 8, 2));
    h.register(1..=FSMS);
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let router = h.router.clone();
            thread::spawn(move || {
                for i in 0..PER_SENDER {
                    let id = 1 + (i * 7 + s) % FSMS;
                    router.send(id, Msg::Data(i)).unwrap();
                }
            })
        })
        .collect();
    let events = h.wait_data((SENDERS * PER_SENDER) as usize);
    for s in senders {
        s.join().unwrap();
    }
    h.assert_no_violations();
    for e in &events {
        if let Event::Normal { thread, poller, .. } = e {
            assert_eq!(thread, &format!("shoal-poll-{poller}"));
        }
    }
    let (undelivered, _) = h.shutdown();
    assert!(undelivered.is_empty());
}

#[test]
fn end_sees_exactly_the_fsms_of_its_round() {
    // Mail for 10 FSMs queued before any poller runs; one poller, batches of 4:
    // the rounds are exactly [1..=4], [5..=8], [9, 10], in scheduling order.
    let mut h = Harness::new(config(1, 4, 100));
    h.register(1..=10);
    for id in 1..=10 {
        h.router.send(id, Msg::Data(id)).unwrap();
    }
    h.spawn();
    let mut rounds = Vec::new();
    let mut begins = Vec::new();
    while rounds.len() < 3 {
        match h.next_event() {
            Event::End { ids, round, .. } => rounds.push((round, ids)),
            Event::Begin(r) => begins.push((r.index, r.normals, r.control)),
            _ => {}
        }
    }
    assert_eq!(
        rounds,
        vec![
            (1, vec![1, 2, 3, 4]),
            (2, vec![5, 6, 7, 8]),
            (3, vec![9, 10]),
        ]
    );
    assert_eq!(begins, vec![(1, 4, false), (2, 4, false), (3, 2, false)]);
    h.assert_no_violations();
    let (undelivered, _) = h.shutdown();
    assert!(undelivered.is_empty());
}
