//! One mailbox per FSM: a message queue, the FSM itself while it is idle, and the
//! scheduling state.
//!
//! Invariants (all enforced under the mailbox's one lock):
//!
//! - `Idle` ⇔ the FSM's `Box` is in the mailbox and the queue is empty.
//! - `Notified` ⇔ the `Box` is out: in the poll queue or on a poller. Exactly one
//!   scheduled task exists for it.
//! - `Closed` is terminal: pushes fail and hand the message back.
//!
//! A push and the `Idle -> Notified` decision happen in one critical section, and so do
//! the poller's "is the queue empty?" check and `Notified -> Idle`. So the classic lost
//! wake-up (a message arrives just as the poller puts the FSM back) cannot happen: either
//! the push sees `Idle` and schedules, or the release sees the message and reschedules.
//! The lock is per FSM and held for a few instructions; the poller takes a whole round's
//! worth of messages under one acquisition.

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fsm::{AtomicFsmState, Fsm, FsmState};

/// An idle mailbox keeps its queue buffer only while it is at most this big, so that
/// an idle FSM costs little memory but a busy one does not reallocate every round.
const RETAINED_QUEUE_BYTES: usize = 512;

struct Slot<N: Fsm> {
    queue: VecDeque<N::Message>,
    /// `Some` exactly when the state is `Idle`.
    fsm: Option<Box<N>>,
}

struct Inner<N: Fsm> {
    id: u64,
    state: AtomicFsmState,
    slot: Mutex<Slot<N>>,
}

/// A handle to one FSM's mailbox. Cloning it is cheap (an `Arc`).
///
/// Messages go in through the [`Router`](crate::Router), which also schedules the FSM;
/// this handle only lets callers look at the mailbox.
pub struct Mailbox<N: Fsm> {
    inner: Arc<Inner<N>>,
}

impl<N: Fsm> Clone for Mailbox<N> {
    fn clone(&self) -> Self {
        Mailbox {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<N: Fsm> fmt::Debug for Mailbox<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("id", &self.inner.id)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// What the poller must do with an FSM after a round.
pub(crate) enum Released<N> {
    /// Back in its mailbox, idle.
    Idle,
    /// Mail is waiting: the FSM stays `Notified` and must go back in the poll queue.
    Reschedule(Box<N>),
    /// The mailbox was closed meanwhile: drop the FSM (outside any lock).
    Closed(Box<N>),
}

impl<N: Fsm> Mailbox<N> {
    /// A new, idle mailbox owning `fsm`.
    pub(crate) fn new(id: u64, fsm: Box<N>) -> Self {
        Mailbox {
            inner: Arc::new(Inner {
                id,
                state: AtomicFsmState::new(FsmState::Idle),
                slot: Mutex::new(Slot {
                    queue: VecDeque::new(),
                    fsm: Some(fsm),
                }),
            }),
        }
    }

    /// The id this mailbox is registered under.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The current scheduling state.
    pub fn state(&self) -> FsmState {
        self.inner.state.get()
    }

    /// Whether the mailbox is closed.
    pub fn is_closed(&self) -> bool {
        self.state() == FsmState::Closed
    }

    /// Number of queued messages not yet taken by a poller.
    pub fn len(&self) -> usize {
        self.inner.slot.lock().queue.len()
    }

    /// Whether no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether both handles point at the same mailbox.
    pub(crate) fn ptr_eq(&self, other: &Mailbox<N>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Queues `msg`. Returns the FSM if this push moved the mailbox from `Idle` to
    /// `Notified`: the caller must then schedule it. A closed mailbox hands `msg` back.
    pub(crate) fn push(&self, msg: N::Message) -> Result<Option<Box<N>>, N::Message> {
        if self.inner.state.get() == FsmState::Closed {
            return Err(msg);
        }
        let mut slot = self.inner.slot.lock();
        match self.inner.state.get() {
            FsmState::Closed => Err(msg),
            FsmState::Notified => {
                slot.queue.push_back(msg);
                Ok(None)
            }
            FsmState::Idle => {
                slot.queue.push_back(msg);
                self.inner.state.set(FsmState::Notified);
                Ok(slot.fsm.take())
            }
        }
    }

    /// Moves up to `max` queued messages, oldest first, to the end of `out`.
    pub(crate) fn take_messages(&self, max: usize, out: &mut Vec<N::Message>) {
        let mut slot = self.inner.slot.lock();
        let n = max.min(slot.queue.len());
        out.extend(slot.queue.drain(..n));
    }

    /// Gives the FSM back after a poll round.
    pub(crate) fn release(&self, fsm: Box<N>) -> Released<N> {
        let mut slot = self.inner.slot.lock();
        match self.inner.state.get() {
            FsmState::Closed => Released::Closed(fsm),
            _ if !slot.queue.is_empty() => Released::Reschedule(fsm),
            _ => {
                if slot.queue.capacity() * mem::size_of::<N::Message>().max(1)
                    > RETAINED_QUEUE_BYTES
                {
                    slot.queue = VecDeque::new();
                }
                slot.fsm = Some(fsm);
                self.inner.state.set(FsmState::Idle);
                Released::Idle
            }
        }
    }

    /// Closes the mailbox for good. Returns the mail still queued, oldest first, and the
    /// FSM if it was idle (if it was scheduled, whoever holds it drops it later). The
    /// caller drops both outside any lock, since an FSM's or message's `Drop` may send.
    pub(crate) fn close(&self) -> (Vec<N::Message>, Option<Box<N>>) {
        let mut slot = self.inner.slot.lock();
        self.inner.state.set(FsmState::Closed);
        let queue = mem::take(&mut slot.queue);
        (queue.into(), slot.fsm.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Toy;
    impl Fsm for Toy {
        type Message = u32;
    }

    fn drain(mb: &Mailbox<Toy>) -> Vec<u32> {
        let mut out = Vec::new();
        mb.take_messages(usize::MAX, &mut out);
        out
    }

    #[test]
    fn first_push_to_idle_schedules_once() {
        let mb = Mailbox::new(7, Box::new(Toy));
        assert_eq!(mb.state(), FsmState::Idle);
        let fsm = mb.push(1).ok().unwrap();
        assert!(
            fsm.is_some(),
            "the push that wakes an idle FSM must hand it out"
        );
        assert_eq!(mb.state(), FsmState::Notified);
        for i in 2..10 {
            assert!(mb.push(i).ok().unwrap().is_none(), "already scheduled");
        }
        assert_eq!(mb.len(), 9);
        assert_eq!(drain(&mb), (1..10).collect::<Vec<_>>());
    }

    #[test]
    fn release_with_mail_reschedules_and_without_goes_idle() {
        let mb = Mailbox::new(1, Box::new(Toy));
        let fsm = mb.push(1).unwrap().unwrap();
        // Mail arrives while the FSM is on a poller: no second schedule...
        assert!(mb.push(2).unwrap().is_none());
        // ...but the release sees it and keeps the FSM scheduled.
        let fsm = match mb.release(fsm) {
            Released::Reschedule(f) => f,
            _ => panic!("mail was waiting, the FSM must be rescheduled"),
        };
        assert_eq!(mb.state(), FsmState::Notified);
        assert_eq!(drain(&mb), vec![1, 2]);
        assert!(matches!(mb.release(fsm), Released::Idle));
        assert_eq!(mb.state(), FsmState::Idle);
        // Idle again, so the next push schedules again.
        assert!(mb.push(3).unwrap().is_some());
    }

    #[test]
    fn take_messages_respects_the_quota() {
        let mb = Mailbox::new(1, Box::new(Toy));
        let _fsm = mb.push(0).unwrap().unwrap();
        for i in 1..10 {
            mb.push(i).unwrap();
        }
        let mut out = Vec::new();
        mb.take_messages(4, &mut out);
        assert_eq!(out, vec![0, 1, 2, 3]);
        assert_eq!(mb.len(), 6);
    }

    #[test]
    fn closed_mailbox_hands_messages_back() {
        let mb = Mailbox::new(1, Box::new(Toy));
        let fsm = mb.push(1).unwrap().unwrap();
        mb.push(2).unwrap();
        let (pending, idle_fsm) = mb.close();
        assert_eq!(pending, vec![1, 2]);
        assert!(idle_fsm.is_none(), "the FSM was out on a poller");
        assert_eq!(mb.push(3).err(), Some(3));
        assert!(matches!(mb.release(fsm), Released::Closed(_)));
        assert_eq!(mb.state(), FsmState::Closed);
    }

    #[test]
    fn closing_an_idle_mailbox_returns_the_fsm() {
        let mb = Mailbox::new(1, Box::new(Toy));
        let (pending, fsm) = mb.close();
        assert!(pending.is_empty());
        assert!(fsm.is_some());
    }

    #[test]
    fn idle_mailbox_drops_a_big_queue_buffer() {
        let mb = Mailbox::new(1, Box::new(Toy));
        let fsm = mb.push(0).unwrap().unwrap();
        for i in 0..1000 {
            mb.push(i).unwrap();
        }
        drain(&mb);
        assert!(matches!(mb.release(fsm), Released::Idle));
        let cap = mb.inner.slot.lock().queue.capacity();
        assert!(cap * 4 <= RETAINED_QUEUE_BYTES, "kept {cap} slots");
    }
}
