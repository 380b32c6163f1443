//! The [`Router`]: id -> mailbox, plus the one control FSM.
//!
//! Sending is "push into the mailbox; if that woke the FSM, put the FSM in the poll
//! queue" (see `mailbox.rs`). The poll queue is one MPMC channel shared by all pollers.
//!
//! A send to an id with no mailbox, or to a closed one, hands the message back inside
//! the [`SendError`]. The store relies on that: a Raft message for a region it does not
//! know yet goes to the control FSM, which may create the peer and re-send.
//!
//! Once the batch system shuts down, the router is closed: every send fails with
//! [`SendError::Closed`] and registration fails.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use dashmap::DashMap;

use crate::fsm::Fsm;
use crate::hash::BuildIdHasher;
use crate::mailbox::Mailbox;

/// Which mailbox a failed send was aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The normal FSM with this id.
    Normal(u64),
    /// The control FSM.
    Control,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Normal(id) => write!(f, "fsm {id}"),
            Target::Control => f.write_str("the control fsm"),
        }
    }
}

/// A send that could not be delivered. The message is handed back.
pub enum SendError<M> {
    /// No mailbox is registered under this id.
    NotFound {
        /// The id the message was sent to.
        id: u64,
        /// The undelivered message.
        msg: M,
    },
    /// The mailbox is closed: its FSM stopped, or the whole router shut down.
    Closed {
        /// The mailbox the message was sent to.
        target: Target,
        /// The undelivered message.
        msg: M,
    },
}

impl<M> SendError<M> {
    /// The undelivered message.
    pub fn into_inner(self) -> M {
        match self {
            SendError::NotFound { msg, .. } | SendError::Closed { msg, .. } => msg,
        }
    }

    /// Borrows the undelivered message.
    pub fn msg(&self) -> &M {
        match self {
            SendError::NotFound { msg, .. } | SendError::Closed { msg, .. } => msg,
        }
    }

    /// Whether the id had no mailbox at all.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SendError::NotFound { .. })
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotFound { id, .. } => f
                .debug_struct("NotFound")
                .field("id", id)
                .finish_non_exhaustive(),
            SendError::Closed { target, .. } => f
                .debug_struct("Closed")
                .field("target", target)
                .finish_non_exhaustive(),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotFound { id, .. } => write!(f, "no mailbox registered for fsm {id}"),
            SendError::Closed { target, .. } => write!(f, "mailbox of {target} is closed"),
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

/// A registration that was refused. The FSM is handed back.
pub enum RegisterError<N> {
    /// A live mailbox is already registered under this id.
    Exists {
        /// The id.
        id: u64,
        /// The FSM that was not registered.
        fsm: Box<N>,
    },
    /// The router is closed (the batch system shut down).
    Closed {
        /// The id.
        id: u64,
        /// The FSM that was not registered.
        fsm: Box<N>,
    },
}

impl<N> RegisterError<N> {
    /// The FSM that was not registered.
    pub fn into_inner(self) -> Box<N> {
        match self {
            RegisterError::Exists { fsm, .. } | RegisterError::Closed { fsm, .. } => fsm,
        }
    }
}

impl<N> fmt::Debug for RegisterError<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, id) = match self {
            RegisterError::Exists { id, .. } => ("Exists", id),
            RegisterError::Closed { id, .. } => ("Closed", id),
        };
        f.debug_struct(name).field("id", id).finish_non_exhaustive()
    }
}

impl<N> fmt::Display for RegisterError<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::Exists { id, .. } => write!(f, "fsm {id} is already registered"),
            RegisterError::Closed { id, .. } => {
                write!(f, "cannot register fsm {id}: the router is closed")
            }
        }
    }
}

impl<N> std::error::Error for RegisterError<N> {}

/// Undelivered mail: `(fsm id, message)`.
pub(crate) type Pending<M> = Vec<(u64, M)>;

/// An entry of the poll queue.
pub(crate) enum Task<N: Fsm, C: Fsm> {
    /// A normal FSM with mail, taken out of its mailbox.
    Normal(Mailbox<N>, Box<N>),
    /// The control FSM, taken out of its mailbox.
    Control(Box<C>),
    /// Wakes a blocked poller at shutdown.
    Wake,
}

struct Shared<N: Fsm, C: Fsm> {
    normals: DashMap<u64, Mailbox<N>, BuildIdHasher>,
    control: Mailbox<C>,
    scheduler: Sender<Task<N, C>>,
    closed: AtomicBool,
}

/// Routes messages to FSM mailboxes by id. Cheap to clone; every clone is the same router.
pub struct Router<N: Fsm, C: Fsm> {
    shared: Arc<Shared<N, C>>,
}

impl<N: Fsm, C: Fsm> Clone for Router<N, C> {
    fn clone(&self) -> Self {
        Router {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<N: Fsm, C: Fsm> Router<N, C> {
    pub(crate) fn new(control: Box<C>, scheduler: Sender<Task<N, C>>) -> Self {
        Router {
            shared: Arc::new(Shared {
                normals: DashMap::with_hasher(BuildIdHasher::default()),
                control: Mailbox::new(0, control),
                scheduler,
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Registers `fsm` under `id` with a new, idle mailbox. Refused (FSM handed back) if
    /// `id` is taken or the router is closed.
    pub fn register(&self, id: u64, fsm: Box<N>) -> Result<(), RegisterError<N>> {
        if self.is_closed() {
            return Err(RegisterError::Closed { id, fsm });
        }
        let mailbox = match self.shared.normals.entry(id) {
            dashmap::Entry::Occupied(_) => return Err(RegisterError::Exists { id, fsm }),
            dashmap::Entry::Vacant(v) => v.insert(Mailbox::new(id, fsm)).clone(),
        };
        // Shutdown sets `closed` and then empties the map; re-checking after the insert
        // means that either shutdown sees this mailbox or we take it back ourselves.
        if self.is_closed() {
            if let Some((_, mb)) = self.remove_if_same(&mailbox) {
                let (_, fsm) = mb.close();
                if let Some(fsm) = fsm {
                    return Err(RegisterError::Closed { id, fsm });
                }
            }
        }
        Ok(())
    }

    /// Sends `msg` to the FSM registered under `id`, scheduling it if it was idle.
    pub fn send(&self, id: u64, msg: N::Message) -> Result<(), SendError<N::Message>> {
        if self.is_closed() {
            let target = Target::Normal(id);
            return Err(SendError::Closed { target, msg });
        }
        let Some(mailbox) = self.shared.normals.get(&id) else {
            return Err(SendError::NotFound { id, msg });
        };
        match mailbox.push(msg) {
            Ok(Some(fsm)) => {
                let task = Task::Normal(mailbox.clone(), fsm);
                drop(mailbox);
                self.schedule(task);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(msg) => Err(SendError::Closed {
                target: Target::Normal(id),
                msg,
            }),
        }
    }

    /// Sends `msg` to the control FSM. Fails only once the router is closed.
    pub fn send_control(&self, msg: C::Message) -> Result<(), SendError<C::Message>> {
        match self.shared.control.push(msg) {
            Ok(Some(fsm)) => {
                self.schedule(Task::Control(fsm));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(msg) => Err(SendError::Closed {
                target: Target::Control,
                msg,
            }),
        }
    }

    /// Sends one message, made by `make`, to every registered FSM. Returns how many
    /// were delivered (an FSM closing concurrently may miss it).
    pub fn broadcast(&self, mut make: impl FnMut() -> N::Message) -> usize {
        // Collect first: sending while iterating would hold shard locks while a failed
        // message's `Drop` might call back into the router.
        let ids: Vec<u64> = self.shared.normals.iter().map(|e| *e.key()).collect();
        ids.into_iter()
            .filter(|&id| self.send(id, make()).is_ok())
            .count()
    }

    /// Unregisters `id` and closes its mailbox. Returns the mail that was still queued,
    /// oldest first, or `None` if `id` was not registered. An idle FSM is dropped now; a
    /// scheduled one is dropped by its poller at the end of its round.
    pub fn close(&self, id: u64) -> Option<Vec<N::Message>> {
        let (_, mailbox) = self.shared.normals.remove(&id)?;
        let (pending, fsm) = mailbox.close();
        drop(fsm);
        Some(pending)
    }

    /// Number of registered (live) mailboxes, the control FSM not included.
    pub fn alive(&self) -> usize {
        self.shared.normals.len()
    }

    /// Messages queued in every mailbox and not yet taken by a poller (locks each
    /// mailbox in turn: for metrics, not for the hot path).
    pub fn backlog(&self) -> usize {
        self.shared.normals.iter().map(|m| m.len()).sum()
    }

    /// Whether `id` is registered.
    pub fn contains(&self, id: u64) -> bool {
        self.shared.normals.contains_key(&id)
    }

    /// A handle to `id`'s mailbox, for inspection.
    pub fn mailbox(&self, id: u64) -> Option<Mailbox<N>> {
        self.shared.normals.get(&id).map(|m| m.clone())
    }

    /// Whether the router is closed (the batch system is shutting down or has shut down).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn control_mailbox(&self) -> &Mailbox<C> {
        &self.shared.control
    }

    /// Puts a task in the poll queue. The receiver lives as long as the batch system,
    /// and the batch system closes every mailbox before it goes, so a failed send can
    /// only drop a task whose mailbox is already closed.
    pub(crate) fn schedule(&self, task: Task<N, C>) {
        if self.shared.scheduler.send(task).is_err() {
            tracing::debug!("poll queue is gone; dropping a task");
        }
    }

    /// Marks the router closed: from now on sends and registrations fail.
    pub(crate) fn mark_closed(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }

    /// Removes a stopped FSM's mailbox (only if `id` still maps to this very mailbox)
    /// and closes it. Returns the mail dropped with it.
    pub(crate) fn retire(&self, mailbox: &Mailbox<N>) -> Vec<N::Message> {
        self.remove_if_same(mailbox);
        mailbox.close().0
    }

    fn remove_if_same(&self, mailbox: &Mailbox<N>) -> Option<(u64, Mailbox<N>)> {
        self.shared
            .normals
            .remove_if(&mailbox.id(), |_, m| m.ptr_eq(mailbox))
    }

    /// Unregisters and closes every mailbox. Returns the queued mail, grouped by id in
    /// increasing id order, each FSM's mail oldest first, and the idle FSMs.
    pub(crate) fn close_all(&self) -> (Pending<N::Message>, Vec<Box<N>>) {
        let mut pending = Vec::new();
        let mut fsms = Vec::new();
        loop {
            let ids: Vec<u64> = self.shared.normals.iter().map(|e| *e.key()).collect();
            if ids.is_empty() {
                break;
            }
            for id in ids {
                if let Some((_, mailbox)) = self.shared.normals.remove(&id) {
                    let (msgs, fsm) = mailbox.close();
                    pending.extend(msgs.into_iter().map(|m| (id, m)));
                    fsms.extend(fsm);
                }
            }
        }
        // Stable: each FSM's mail stays in send order.
        pending.sort_by_key(|(id, _)| *id);
        (pending, fsms)
    }
}
