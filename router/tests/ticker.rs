//! The store ticker delivering ticks through the router, driven by hand and by its thread.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{config, Event, Harness, Msg, ToyRouter, ToyTick};
use shoal_router::Ticker;

fn deliver(router: &ToyRouter) -> impl FnMut(u64, ToyTick) -> bool + '_ {
    move |id, kind| router.send(id, Msg::Tick(kind)).is_ok()
}

/// Ticks received per FSM, in order.
fn ticks(events: &[Event]) -> BTreeMap<u64, Vec<ToyTick>> {
    let mut out = BTreeMap::<u64, Vec<ToyTick>>::new();
    for e in events {
        if let Event::Normal { id, ticks, .. } = e {
            if !ticks.is_empty() {
                out.entry(*id).or_default().extend(ticks);
            }
        }
    }
    out
}

fn wait_ticks(h: &Harness, n: usize) -> Vec<Event> {
    let mut seen = 0;
    let mut out = Vec::new();
    while seen < n {
        let e = h.next_event();
        if let Event::Normal { ticks, .. } = &e {
            seen += ticks.len();
        }
        out.push(e);
    }
    out
}

#[test]
fn manual_rounds_deliver_due_ticks_and_nothing_else() {
    let h = Harness::started(config(2, 8, 8));
    h.register(1..=3);
    let ticker: Ticker<ToyTick> = Ticker::new(8);
    ticker.schedule_every(1, ToyTick::Raft, 2);
    ticker.schedule_once(2, ToyTick::Gc, 3);
    // FSM 3 registers nothing.
    let mut delivered = 0;
    for _ in 0..6 {
        delivered += ticker.advance(deliver(&h.router));
    }
    assert_eq!(delivered, 4);
    let mut events = wait_ticks(&h, 4);
    let (undelivered, rest) = h.shutdown();
    assert!(undelivered.is_empty());
    events.extend(rest);
    let got = ticks(&events);
    assert_eq!(got.get(&1), Some(&vec![ToyTick::Raft; 3]));
    assert_eq!(got.get(&2), Some(&vec![ToyTick::Gc]));
    assert_eq!(got.get(&3), None);
}

#[test]
fn periodic_ticks_for_a_closed_fsm_are_cancelled() {
    let h = Harness::new(config(1, 8, 8));
    h.register([1, 2]);
    let ticker: Ticker<ToyTick> = Ticker::default();
    ticker.schedule_every(1, ToyTick::Raft, 1);
    ticker.schedule_every(2, ToyTick::Raft, 1);
    assert_eq!(ticker.advance(deliver(&h.router)), 2);
    h.router.close(1);
    assert_eq!(ticker.advance(deliver(&h.router)), 1);
    assert!(!ticker.is_scheduled(1, ToyTick::Raft));
    assert!(ticker.is_scheduled(2, ToyTick::Raft));
    assert_eq!(ticker.len(), 1);
    h.shutdown();
}

#[test]
fn one_percent_due_fires_exactly_the_due_ones() {
    // 10,000 FSMs ticking every 100 rounds, phases spread: exactly 100 due per round.
    const N: u64 = 10_000;
    let ticker: Ticker<ToyTick> = Ticker::default();
    for id in 0..N {
        ticker.schedule_every_after(id, ToyTick::Raft, 1 + id % 100, 100);
    }
    let mut fired = vec![0u32; N as usize];
    for round in 1..=300u64 {
        let mut this_round = 0;
        ticker.advance(|id, _| {
            assert_eq!(
                1 + id % 100,
                (round - 1) % 100 + 1,
                "fsm {id} fired in round {round}"
            );
            fired[id as usize] += 1;
            this_round += 1;
            true
        });
        assert_eq!(this_round, 100, "round {round}");
    }
    assert!(fired.iter().all(|&n| n == 3));
}

#[test]
fn ticker_thread_delivers_through_the_router() {
    let h = Harness::started(config(1, 8, 8));
    h.register([1]);
    let ticker: Ticker<ToyTick> = Ticker::default();
    ticker.schedule_once(1, ToyTick::Gc, 2);
    let router = h.router.clone();
    let thread = ticker
        .spawn("shoal-ticker", Duration::from_millis(1), move |id, kind| {
            router.send(id, Msg::Tick(kind)).is_ok()
        })
        .unwrap();
    let events = wait_ticks(&h, 1);
    assert_eq!(ticks(&events).get(&1), Some(&vec![ToyTick::Gc]));
    thread.stop();
    assert!(ticker.now() >= 2);
    h.shutdown();
}
