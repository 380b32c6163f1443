//! The [`Fsm`] trait and the scheduling state every mailbox carries.
//!
//! An FSM is a piece of state that reacts to messages (a Raft peer, the store). It never
//! runs by itself: it sits in its [`Mailbox`](crate::Mailbox) while idle and a poller
//! thread borrows it, by taking the `Box`, while it has mail. Because there is exactly one
//! `Box` per FSM, an FSM can never run on two pollers at once.
//!
//! The scheduling state has three values:
//!
//! ```text
//!            send (queue was idle)             release (queue empty)
//!   Idle ───────────────────────────► Notified ───────────────────────► Idle
//!     │                                  │  release (mail left): stays Notified,
//!     │ close                            │  the FSM goes back in the poll queue
//!     ▼                                  ▼ close
//!   Closed ◄─────────────────────────────┘   (terminal: sends hand the message back)
//! ```
//!
//! `Notified` means "the FSM is in the poll queue or on a poller". Only the sender that
//! moves a mailbox from `Idle` to `Notified` schedules the FSM, so a send to an idle FSM
//! schedules it exactly once and a busy FSM is never scheduled twice.

use std::sync::atomic::{AtomicU8, Ordering};

/// A state machine driven by the batch system.
///
/// Implementors are plain structs: the batch system hands them, with the messages taken
/// from their mailbox, to [`PollHandler`](crate::PollHandler) hooks on poller threads.
pub trait Fsm: Send + 'static {
    /// The messages this FSM's mailbox carries.
    type Message: Send + 'static;

    /// Whether the FSM has finished for good.
    ///
    /// Checked by the poller after the round's `end` hook. A stopped normal FSM is
    /// removed from the router, its mailbox is closed (mail still queued is dropped) and
    /// the FSM is dropped. The control FSM cannot stop: this is ignored for it.
    fn is_stopped(&self) -> bool {
        false
    }
}

/// The scheduling state of a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FsmState {
    /// No mail; the FSM rests in its mailbox.
    Idle = 0,
    /// The FSM is scheduled: in the poll queue or on a poller.
    Notified = 1,
    /// Closed for good: sends fail and hand the message back.
    Closed = 2,
}

/// An [`FsmState`] in an atomic, so it can be read without the mailbox lock.
///
/// Transitions are only made while holding the mailbox lock (see `mailbox.rs`), which
/// is what makes "push the message, then decide who schedules" race-free; the atomic
/// lets [`Mailbox::state`](crate::Mailbox::state) and the closed fast path read it freely.
#[derive(Debug)]
pub(crate) struct AtomicFsmState(AtomicU8);

impl AtomicFsmState {
    pub(crate) fn new(state: FsmState) -> Self {
        AtomicFsmState(AtomicU8::new(state as u8))
    }

    pub(crate) fn get(&self) -> FsmState {
        match self.0.load(Ordering::Acquire) {
            0 => FsmState::Idle,
            1 => FsmState::Notified,
            _ => FsmState::Closed,
        }
    }

    /// Only call with the mailbox lock held.
    pub(crate) fn set(&self, state: FsmState) {
        self.0.store(state as u8, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_state_round_trips_every_value() {
        let s = AtomicFsmState::new(FsmState::Idle);
        for v in [FsmState::Notified, FsmState::Closed, FsmState::Idle] {
            s.set(v);
            assert_eq!(s.get(), v);
        }
    }
}
