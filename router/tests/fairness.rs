//! One hot FSM cannot starve the others: past its per-round quota it goes to the back
//! of the poll queue.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::{config, Event, Harness, Msg};

#[test]
fn cold_fsms_are_served_before_a_hot_one_drains() {
    const QUOTA: usize = 10;
    const HOT: u64 = 1;
    // The hot FSM's 1,000 messages are queued first, then one each for 10 cold FSMs.
    let mut h = Harness::new(config(1, 4, QUOTA));
    h.register(1..=11);
    for i in 0..1_000 {
        h.router.send(HOT, Msg::Data(i)).unwrap();
    }
    for id in 2..=11 {
        h.router.send(id, Msg::Data(id)).unwrap();
    }
    h.spawn();
    let events = h.wait_data(1_010);
    let mut hot_handled = 0;
    let mut hot_handled_when_cold_done = None;
    let mut cold_left = 10;
    for e in &events {
        if let Event::Normal { id, data, .. } = e {
            if *id == HOT {
                assert!(data.len() <= QUOTA, "hot fsm got {} > quota", data.len());
                hot_handled += data.len();
            } else {
                cold_left -= 1;
                if cold_left == 0 {
                    hot_handled_when_cold_done = Some(hot_handled);
                }
            }
        }
    }
    assert_eq!(hot_handled, 1_000);
    // Rounds: [hot, 2, 3, 4], [5..=8], [9, 10, 11, hot]: the cold FSMs are all done
    // after the hot one had at most two quotas.
    assert_eq!(hot_handled_when_cold_done, Some(QUOTA));
    let (undelivered, _) = h.shutdown();
    assert!(undelivered.is_empty());
}

#[test]
fn cold_fsm_gets_through_while_a_hot_one_is_flooded() {
    // One poller, so a hot FSM that kept the poller would starve FSM 2 for good and
    // `wait_for` below would time out.
    const HOT: u64 = 1;
    const COLD: u64 = 2;
    let h = Harness::started(config(1, 4, 8));
    h.register([HOT, COLD]);
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let router = h.router.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mailbox = router.mailbox(HOT).unwrap();
            let mut sent = 0u64;
            // Bounded even if the test fails: at most 20M messages.
            while !stop.load(Ordering::Relaxed) && sent < 20_000_000 {
                if mailbox.len() > 10_000 {
                    thread::yield_now();
                    continue;
                }
                router.send(HOT, Msg::Data(u64::MAX)).unwrap();
                sent += 1;
            }
        })
    };
    for i in 0..50 {
        h.router.send(COLD, Msg::Data(i)).unwrap();
        h.wait_for(|e| matches!(e, Event::Normal { id: COLD, data, .. } if data == &[i]));
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    h.assert_no_violations();
    let (_undelivered, _) = h.shutdown();
}
