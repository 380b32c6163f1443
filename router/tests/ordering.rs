//! Many senders, many FSMs: no message is lost, duplicated or reordered per FSM.

mod common;

use std::thread;

use common::{config, data_by_fsm, Harness, Msg};

const FSMS: u64 = 32;
const SENDERS: u64 = 8;
const PER_SENDER_PER_FSM: u64 = 200;

fn encode(sender: u64, seq: u64) -> u64 {
    sender << 32 | seq
}

fn run(pollers: usize, max_batch_size: usize, messages_per_tick: usize) {
    let h = Harness::started(config(pollers, max_batch_size, messages_per_tick));
    h.register(1..=FSMS);
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let router = h.router.clone();
            thread::spawn(move || {
                for seq in 0..PER_SENDER_PER_FSM {
                    for id in 1..=FSMS {
                        router.send(id, Msg::Data(encode(s, seq))).unwrap();
                    }
                }
            })
        })
        .collect();
    let total = (FSMS * SENDERS * PER_SENDER_PER_FSM) as usize;
    let events = h.wait_data(total);
    for s in senders {
        s.join().unwrap();
    }
    let (undelivered, rest) = h.shutdown();
    assert!(undelivered.is_empty());
    assert!(data_by_fsm(&rest).is_empty(), "more data than was sent");

    let by_fsm = data_by_fsm(&events);
    assert_eq!(by_fsm.len() as u64, FSMS);
    for (id, data) in by_fsm {
        // Each sender's messages arrive exactly once and in the order sent.
        for s in 0..SENDERS {
            let seqs: Vec<u64> = data
                .iter()
                .filter(|&&d| d >> 32 == s)
                .map(|&d| d & 0xffff_ffff)
                .collect();
            let want: Vec<u64> = (0..PER_SENDER_PER_FSM).collect();
            assert_eq!(seqs, want, "fsm {id}, sender {s}");
        }
    }
}

#[test]
fn no_loss_duplication_or_reordering_with_small_batches_and_quota() {
    // Quota 3 forces constant rescheduling; batch 4 forces many rounds.
    run(2, 4, 3);
}

#[test]
fn no_loss_duplication_or_reordering_with_more_pollers_than_cores() {
    run(4, 1, 1);
}

#[test]
fn no_loss_duplication_or_reordering_with_defaults() {
    let d = shoal_router::Config::default();
    run(d.pollers, d.max_batch_size, d.messages_per_tick);
}
