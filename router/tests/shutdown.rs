//! Shutdown: pollers stop after their current round; mail still queued is returned
//! in `Undelivered`, never lost silently and never delivered twice.

mod common;

use std::collections::BTreeMap;
use std::thread;

use common::{config, data_by_fsm, within, Event, Harness, Msg, StoreMsg, TIMEOUT};
use shoal_router::SendError;

#[test]
fn mail_queued_before_any_poller_runs_is_all_returned_in_order() {
    let h = Harness::new(config(2, 8, 8));
    h.register([3, 1, 2]);
    for i in 0..5 {
        for id in [3, 1, 2] {
            h.router.send(id, Msg::Data(i)).unwrap();
        }
    }
    h.router.send_control(StoreMsg::Ping(9)).unwrap();
    let (undelivered, _) = h.shutdown();
    let want: Vec<(u64, Msg)> = [1, 2, 3]
        .into_iter()
        .flat_map(|id| (0..5).map(move |i| (id, Msg::Data(i))))
        .collect();
    assert_eq!(undelivered.normal, want);
    assert!(matches!(undelivered.control[..], [StoreMsg::Ping(9)]));
    assert_eq!(undelivered.len(), 16);
}

#[test]
fn mail_behind_a_busy_poller_is_returned_not_delivered() {
    // One poller, one FSM per round. FSM 1's handler blocks until shutdown has begun,
    // so the mail queued meanwhile for FSMs 1, 2 and 3 is never handled.
    let h = Harness::started(config(1, 1, 8));
    h.register([1, 2, 3]);
    h.router.send(1, Msg::WaitClosed).unwrap();
    h.wait_for(|e| matches!(e, Event::Normal { id: 1, .. }));
    h.router.send(2, Msg::Data(20)).unwrap();
    h.router.send(3, Msg::Data(30)).unwrap();
    h.router.send(1, Msg::Data(10)).unwrap();
    h.router.send(2, Msg::Data(21)).unwrap();
    let (undelivered, rest) = h.shutdown();
    assert_eq!(
        undelivered.normal,
        vec![
            (1, Msg::Data(10)),
            (2, Msg::Data(20)),
            (2, Msg::Data(21)),
            (3, Msg::Data(30))
        ]
    );
    assert!(data_by_fsm(&rest).is_empty());
    assert_eq!(undelivered.panicked_pollers, 0);
}

#[test]
fn every_accepted_message_is_delivered_or_returned_exactly_once() {
    const FSMS: u64 = 8;
    let h = Harness::started(config(2, 4, 4));
    h.register(1..=FSMS);
    let senders: Vec<_> = (0..4u64)
        .map(|s| {
            let router = h.router.clone();
            thread::spawn(move || {
                // Sends until the router closes (bounded anyway); returns what was accepted.
                let mut accepted: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
                for seq in 0..2_000_000u64 {
                    let id = 1 + seq % FSMS;
                    let payload = s << 32 | seq;
                    match router.send(id, Msg::Data(payload)) {
                        Ok(()) => accepted.entry(id).or_default().push(payload),
                        Err(SendError::Closed { .. }) => break,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                accepted
            })
        })
        .collect();
    // Let some mail through, then shut down mid-stream.
    let mut events = h.wait_data(1_000);
    let router = h.router.clone();
    let (undelivered, rest) = h.shutdown();
    assert!(router.is_closed());
    events.extend(rest);
    let mut accepted: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for s in senders {
        for (id, v) in s.join().unwrap() {
            accepted.entry(id).or_default().extend(v);
        }
    }
    let mut got = data_by_fsm(&events);
    for (id, msg) in undelivered.normal {
        match msg {
            Msg::Data(d) => got.entry(id).or_default().push(d),
            other => panic!("unexpected {other:?}"),
        }
    }
    for id in 1..=FSMS {
        let mut a = accepted.remove(&id).unwrap_or_default();
        let g = got.remove(&id).unwrap_or_default();
        // Per sender, delivered-then-undelivered is exactly the accepted sequence.
        for s in 0..4u64 {
            let pick = |v: &[u64]| {
                v.iter()
                    .copied()
                    .filter(|d| d >> 32 == s)
                    .collect::<Vec<_>>()
            };
            assert_eq!(pick(&g), pick(&a), "fsm {id} sender {s}");
        }
        a.sort_unstable();
        let mut g = g;
        g.sort_unstable();
        assert_eq!(g, a, "fsm {id}");
    }
}

#[test]
fn a_panicking_handler_is_reported() {
    let h = Harness::started(config(2, 8, 8));
    h.register([1]);
    h.router.send(1, Msg::Panic).unwrap();
    h.wait_for(|e| matches!(e, Event::Normal { id: 1, .. }));
    let (undelivered, _) = h.shutdown();
    assert_eq!(undelivered.panicked_pollers, 1);
}

#[test]
fn dropping_the_system_without_shutdown_stops_the_pollers() {
    let h = Harness::started(config(2, 8, 8));
    h.register(1..=4);
    for id in 1..=4 {
        h.router.send(id, Msg::Data(id)).unwrap();
    }
    let router = h.router.clone();
    let common::Harness { system, .. } = h;
    within(TIMEOUT, move || drop(system));
    assert!(router.is_closed());
    assert_eq!(router.alive(), 0);
}
