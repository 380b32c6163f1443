//! The [`BatchSystem`]: poller threads that drive FSMs in batches.
//!
//! ## A poll round
//!
//! 1. A poller blocks until the poll queue has a task, then takes more without blocking,
//!    up to `max_batch_size` FSMs (the control FSM counts as one).
//! 2. [`PollHandler::begin`], then for the control FSM (if it is in the batch)
//!    [`PollHandler::handle_control`], then [`PollHandler::handle_normal`] for each
//!    normal FSM in the order taken. Each FSM is given at most `messages_per_tick`
//!    messages, oldest first.
//! 3. [`PollHandler::end`] with exactly the normal FSMs handled in this round, so the
//!    handler can do the work gathered from all of them once (one write, one fsync).
//! 4. Release: a stopped FSM is unregistered and dropped; an FSM with mail left (over
//!    its quota, or new mail) goes to the *back* of the poll queue, so a hot FSM cannot
//!    starve the others; the rest go back to their mailboxes, idle.
//!
//! An FSM stays out of its mailbox from the moment it is scheduled until its release
//! after `end`, so no other poller can run it in between.
//!
//! ## Shutdown
//!
//! [`BatchSystem::shutdown`] closes the router (every later send fails and hands the
//! message back), wakes and joins the pollers (each finishes the round it is in; no
//! further round is started), then closes every mailbox and returns the mail that was
//! still queued in [`Undelivered`]. Nothing is drained by a final round: the caller
//! decides what to do with undelivered mail (reply with an error, log, drop).

use std::io;
use std::ops::Deref;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, TryRecvError};

use crate::config::{Config, ConfigError};
use crate::fsm::Fsm;
use crate::mailbox::{Mailbox, Released};
use crate::router::{Router, Task};

/// What [`PollHandler::begin`] is told about the round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// Index of the poller thread running the round.
    pub poller: usize,
    /// Round number on this poller, from 1.
    pub index: u64,
    /// Number of normal FSMs in the round.
    pub normals: usize,
    /// Whether the control FSM is in the round.
    pub control: bool,
}

/// The user's side of a poll round. One handler per poller thread.
///
/// Messages are handed over in a `Vec` the poller reuses; messages the hook leaves in it
/// are dropped after the hook returns.
pub trait PollHandler<N: Fsm, C: Fsm>: Send + 'static {
    /// Called at the start of every round, before any FSM is handled.
    fn begin(&mut self, _round: &Round) {}

    /// Handles the control FSM's messages.
    fn handle_control(&mut self, control: &mut C, msgs: &mut Vec<C::Message>);

    /// Handles one normal FSM's messages (at most `messages_per_tick`).
    fn handle_normal(&mut self, fsm: &mut N, msgs: &mut Vec<N::Message>);

    /// Called at the end of every round with exactly the normal FSMs handled in it, in
    /// the order they were handled.
    fn end(&mut self, _normals: RoundFsms<'_, N>) {}
}

/// The normal FSMs handled in a round, as given to [`PollHandler::end`].
///
/// Reads as a slice (`len`, `iter`, indexing) and lends each FSM mutably through
/// [`iter_mut`](Self::iter_mut) and [`get_mut`](Self::get_mut), but cannot be reordered:
/// each slot goes back to its own mailbox after `end`.
pub struct RoundFsms<'a, N> {
    fsms: &'a mut [Box<N>],
}

impl<N> RoundFsms<'_, N> {
    /// The FSMs, mutably, in the order they were handled.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut N> {
        self.fsms.iter_mut().map(|b| &mut **b)
    }

    /// The `i`-th FSM handled, mutably.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut N> {
        self.fsms.get_mut(i).map(|b| &mut **b)
    }
}

impl<N> Deref for RoundFsms<'_, N> {
    type Target = [Box<N>];

    fn deref(&self) -> &[Box<N>] {
        self.fsms
    }
}

/// Makes one [`PollHandler`] per poller thread. Any `FnMut(usize) -> H` is a builder.
pub trait HandlerBuilder<N: Fsm, C: Fsm> {
    /// The handler type.
    type Handler: PollHandler<N, C>;

    /// Builds the handler for poller number `poller`.
    fn build(&mut self, poller: usize) -> Self::Handler;
}

impl<N: Fsm, C: Fsm, H: PollHandler<N, C>, F: FnMut(usize) -> H> HandlerBuilder<N, C> for F {
    type Handler = H;

    fn build(&mut self, poller: usize) -> H {
        self(poller)
    }
}

/// Mail that was still queued when the batch system shut down.
pub struct Undelivered<NM, CM> {
    /// `(fsm id, message)`, grouped by id in increasing order, each FSM's mail in the
    /// order it was sent.
    pub normal: Vec<(u64, NM)>,
    /// The control FSM's mail, in the order it was sent.
    pub control: Vec<CM>,
    /// Poller threads that had panicked (their handler panicked). The FSMs they held
    /// were dropped with them.
    pub panicked_pollers: usize,
}

impl<NM, CM> Undelivered<NM, CM> {
    /// Number of undelivered messages.
    pub fn len(&self) -> usize {
        self.normal.len() + self.control.len()
    }

    /// Whether every message was delivered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Poller threads driving the FSMs of one [`Router`].
pub struct BatchSystem<N: Fsm, C: Fsm> {
    router: Router<N, C>,
    receiver: Receiver<Task<N, C>>,
    cfg: Config,
    workers: Vec<JoinHandle<()>>,
    spawned: bool,
    shut_down: bool,
}

/// Creates a router with `control` as its control FSM and the batch system that will
/// poll it. No thread runs until [`BatchSystem::spawn`]; mail sent before is kept.
// The pair reads better spelled out than behind an alias.
#[allow(clippy::type_complexity)]
pub fn create_system<N: Fsm, C: Fsm>(
    cfg: &Config,
    control: Box<C>,
) -> Result<(Router<N, C>, BatchSystem<N, C>), ConfigError> {
    cfg.validate()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let router = Router::new(control, tx);
    let system = BatchSystem {
        router: router.clone(),
        receiver: rx,
        cfg: cfg.clone(),
        workers: Vec::new(),
        spawned: false,
        shut_down: false,
    };
    Ok((router, system))
}

impl<N: Fsm, C: Fsm> BatchSystem<N, C> {
    /// The router this system polls.
    pub fn router(&self) -> &Router<N, C> {
        &self.router
    }

    /// Starts `cfg.pollers` threads named `{name_prefix}-{i}`, each with a handler from
    /// `builder`. Fails if called twice or after shutdown.
    pub fn spawn<B: HandlerBuilder<N, C>>(
        &mut self,
        name_prefix: &str,
        mut builder: B,
    ) -> io::Result<()> {
        if self.spawned || self.shut_down {
            return Err(io::Error::other(
                "batch system already spawned or shut down",
            ));
        }
        self.spawned = true;
        for index in 0..self.cfg.pollers {
            let poller = Poller {
                index,
                router: self.router.clone(),
                receiver: self.receiver.clone(),
                handler: builder.build(index),
                max_batch_size: self.cfg.max_batch_size,
                quota: self.cfg.messages_per_tick,
                fsms: Vec::with_capacity(self.cfg.max_batch_size),
                mailboxes: Vec::with_capacity(self.cfg.max_batch_size),
                control: None,
                normal_msgs: Vec::new(),
                control_msgs: Vec::new(),
                rounds: 0,
            };
            let handle = thread::Builder::new()
                .name(format!("{name_prefix}-{index}"))
                .spawn(move || poller.run())?;
            self.workers.push(handle);
        }
        Ok(())
    }

    /// Stops the pollers and closes every mailbox; returns the mail still queued.
    /// A second call returns nothing.
    pub fn shutdown(&mut self) -> Undelivered<N::Message, C::Message> {
        let mut out = Undelivered {
            normal: Vec::new(),
            control: Vec::new(),
            panicked_pollers: 0,
        };
        if self.shut_down {
            return out;
        }
        self.shut_down = true;
        self.router.mark_closed();
        // A poller checks `closed` before it blocks; one wake-up each reaches those
        // already blocked. A poller takes at most one: it stops filling its batch there.
        for _ in 0..self.workers.len() {
            self.router.schedule(Task::Wake);
        }
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                out.panicked_pollers += 1;
            }
        }
        let (normal, idle_fsms) = self.router.close_all();
        let (control, control_fsm) = self.router.control_mailbox().close();
        out.normal = normal;
        out.control = control;
        // FSMs still in the poll queue (rescheduled by the last rounds). Their mailboxes
        // are closed, so their mail is already in `out`.
        let in_flight: Vec<Task<N, C>> = self.receiver.try_iter().collect();
        drop((idle_fsms, control_fsm, in_flight));
        if out.panicked_pollers > 0 {
            tracing::error!(panicked = out.panicked_pollers, "poller threads panicked");
        }
        out
    }
}

impl<N: Fsm, C: Fsm> Drop for BatchSystem<N, C> {
    fn drop(&mut self) {
        let undelivered = self.shutdown();
        if !undelivered.is_empty() {
            tracing::warn!(
                messages = undelivered.len(),
                "batch system dropped without shutdown; undelivered mail dropped"
            );
        }
    }
}

struct Poller<N: Fsm, C: Fsm, H> {
    index: usize,
    router: Router<N, C>,
    receiver: Receiver<Task<N, C>>,
    handler: H,
    max_batch_size: usize,
    quota: usize,
    /// The round's normal FSMs and, at the same index, their mailboxes.
    fsms: Vec<Box<N>>,
    mailboxes: Vec<Mailbox<N>>,
    control: Option<Box<C>>,
    normal_msgs: Vec<N::Message>,
    control_msgs: Vec<C::Message>,
    rounds: u64,
}

impl<N: Fsm, C: Fsm, H: PollHandler<N, C>> Poller<N, C, H> {
    fn run(mut self) {
        while self.fetch() {
            self.poll_round();
            self.release_all();
        }
    }

    /// Fills the batch. Returns false when the poller must exit.
    fn fetch(&mut self) -> bool {
        loop {
            if self.router.is_closed() {
                return false;
            }
            match self.receiver.recv() {
                Ok(Task::Wake) | Err(_) => return false,
                Ok(task) => self.accept(task),
            }
            // Keep taking until the batch is full or the queue is empty. A task can be
            // skipped (closed mailbox), so the batch may still be empty here.
            while self.batch_len() < self.max_batch_size {
                match self.receiver.try_recv() {
                    Ok(Task::Wake) => break,
                    Ok(task) => self.accept(task),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if self.batch_len() > 0 {
                return true;
            }
        }
    }

    fn batch_len(&self) -> usize {
        self.fsms.len() + usize::from(self.control.is_some())
    }

    fn accept(&mut self, task: Task<N, C>) {
        match task {
            // Closed while queued: its mail went to whoever closed it; drop the FSM.
            Task::Normal(mailbox, _fsm) if mailbox.is_closed() => {}
            Task::Normal(mailbox, fsm) => {
                self.fsms.push(fsm);
                self.mailboxes.push(mailbox);
            }
            Task::Control(fsm) => self.control = Some(fsm),
            Task::Wake => {}
        }
    }

    fn poll_round(&mut self) {
        self.rounds += 1;
        self.handler.begin(&Round {
            poller: self.index,
            index: self.rounds,
            normals: self.fsms.len(),
            control: self.control.is_some(),
        });
        if let Some(control) = self.control.as_mut() {
            let mailbox = self.router.control_mailbox();
            mailbox.take_messages(self.quota, &mut self.control_msgs);
            self.handler.handle_control(control, &mut self.control_msgs);
            self.control_msgs.clear();
        }
        for (fsm, mailbox) in self.fsms.iter_mut().zip(&self.mailboxes) {
            mailbox.take_messages(self.quota, &mut self.normal_msgs);
            self.handler.handle_normal(fsm, &mut self.normal_msgs);
            self.normal_msgs.clear();
        }
        self.handler.end(RoundFsms {
            fsms: &mut self.fsms,
        });
    }

    fn release_all(&mut self) {
        for (fsm, mailbox) in self.fsms.drain(..).zip(self.mailboxes.drain(..)) {
            if fsm.is_stopped() {
                let dropped = self.router.retire(&mailbox);
                if !dropped.is_empty() {
                    tracing::debug!(
                        id = mailbox.id(),
                        dropped = dropped.len(),
                        "fsm stopped with mail queued"
                    );
                }
                continue;
            }
            match mailbox.release(fsm) {
                Released::Idle => {}
                // Closed during the round (`Router::close`): nobody else will drop it.
                Released::Closed(fsm) => drop(fsm),
                Released::Reschedule(fsm) => self.router.schedule(Task::Normal(mailbox, fsm)),
            }
        }
        if let Some(control) = self.control.take() {
            match self.router.control_mailbox().release(control) {
                Released::Idle => {}
                Released::Closed(fsm) => drop(fsm),
                Released::Reschedule(fsm) => self.router.schedule(Task::Control(fsm)),
            }
        }
    }
}
