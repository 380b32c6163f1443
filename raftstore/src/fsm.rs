//! The batch system glue: the peer and store FSMs, the router type, and the poll
//! round ([`RaftPoller`], the batch system's handler).
//!
//! For every peer of a round the poller hands each message to the peer
//! (`Peer::on_msg`), then ends the peer's round (`Peer::on_round_end`: read index,
//! ready). Everything the peers produce is gathered in one [`PollCtx`]. At the end
//! of the round ([`PollCtx::flush`]):
//! 1. the messages that may go before persistence leave as **one batch per remote
//!    store**;
//! 2. all entries and hard states become **one write task** for the log writer;
//! 3. committed entries go to the apply workers, one message per worker.
//!
//! Pollers never touch the disk: the log writer syncs, then tells each peer its
//! ready is persisted.
//!
//! This module and the peer are a cycle by nature: the router holds the FSMs, the
//! FSMs hold peers, and a peer's handler reaches the router through the context.

use std::sync::Arc;

use shoal_proto::raft_serverpb::RaftMessage;
use shoal_router::{Fsm, PollHandler, RoundFsms, Router};

use crate::msg::{PeerMsg, StoreMsg};
use crate::operation::snapshot::apply::SnapshotTask;
use crate::operation::snapshot::create::on_unknown_region_message;
use crate::operation::snapshot::OutgoingSnapshot;
use crate::raft::apply::{ApplyMsg, ApplyTask};
use crate::raft::peer::Peer;
use crate::store::context::StoreContext;
use crate::worker::log_writer::WriteTask;

/// A peer as the batch system sees it.
pub(crate) struct PeerFsm {
    /// The peer.
    pub(crate) peer: Peer,
    /// `peer{region, peer}`: entered while the poller handles this peer, so every
    /// log line of it names the region and the peer. Made once per peer, at ERROR
    /// level so that it exists whatever the log filter, and without a parent (a
    /// split's new peers are made inside their parent's span).
    pub(crate) span: tracing::Span,
}

impl PeerFsm {
    /// The FSM of `peer`, logging in `span` (made by [`peer_span`]).
    pub(crate) fn new(peer: Peer, span: tracing::Span) -> Self {
        PeerFsm { peer, span }
    }
}

/// The `peer{region, peer}` span of one peer: made once when the peer starts, and
/// shared (cloned, not made again) with whatever works for the peer on another
/// thread: its apply delegate and the worker tasks it schedules, so their lines
/// name the region and the peer too.
pub(crate) fn peer_span(region_id: u64, peer_id: u64) -> tracing::Span {
    tracing::span!(
        parent: None,
        tracing::Level::ERROR,
        "peer",
        region = region_id,
        peer = peer_id
    )
}

impl Fsm for PeerFsm {
    type Message = PeerMsg;
}

/// The store's control FSM: handles what no peer can (messages for unknown
/// regions: a snapshot creates the peer).
pub(crate) struct StoreFsm {
    /// This store's id.
    pub(crate) store_id: u64,
}

impl Fsm for StoreFsm {
    type Message = StoreMsg;
}

/// The router of one store: region id -> peer mailbox, plus the store FSM.
pub(crate) type StoreRouter = Router<PeerFsm, StoreFsm>;

/// What peers produce during one round.
pub(crate) struct PollCtx {
    /// The store's shared parts.
    pub(crate) store: Arc<StoreContext>,
    /// The round's log write.
    pub(crate) write: WriteTask,
    /// Messages to send at the end of the round.
    pub(crate) outgoing: Vec<RaftMessage>,
    /// Snapshots to stream, by destination store.
    pub(crate) snapshots: Vec<(u64, OutgoingSnapshot)>,
    applies: Vec<Vec<ApplyTask>>,
    /// Snapshots to apply, by apply worker, after that worker's tasks.
    snapshot_applies: Vec<(usize, SnapshotTask)>,
}

impl PollCtx {
    /// An empty round context.
    pub(crate) fn new(store: Arc<StoreContext>) -> Self {
        let workers = store.apply.len();
        PollCtx {
            store,
            write: WriteTask::default(),
            outgoing: Vec::new(),
            snapshots: Vec::new(),
            applies: (0..workers).map(|_| Vec::new()).collect(),
            snapshot_applies: Vec::new(),
        }
    }

    /// Queues committed entries for the region's apply worker.
    pub(crate) fn schedule_apply(&mut self, task: ApplyTask) {
        let w = (task.region_id % self.applies.len() as u64) as usize;
        self.applies[w].push(task);
    }

    /// Queues a snapshot for the region's apply worker, behind the round's tasks.
    pub(crate) fn schedule_snapshot(&mut self, region_id: u64, task: SnapshotTask) {
        let w = (region_id % self.applies.len() as u64) as usize;
        self.snapshot_applies.push((w, task));
    }

    /// Hands the round's work on: messages, the write task, apply tasks.
    pub(crate) fn flush(&mut self) {
        if !self.outgoing.is_empty() {
            self.store.send_messages(std::mem::take(&mut self.outgoing));
        }
        if !self.write.is_empty() {
            let task = std::mem::take(&mut self.write);
            self.store.metrics.log_writer_queue.inc();
            if self.store.writer.send(task).is_err() {
                self.store.metrics.log_writer_queue.dec();
                tracing::error!("the log writer has stopped; the round's writes are lost");
            }
        }
        for (w, tasks) in self.applies.iter_mut().enumerate() {
            if !tasks.is_empty() {
                self.store.metrics.apply_queue.inc();
                let tasks = ApplyMsg::Tasks(std::mem::take(tasks));
                if self.store.apply[w].send(tasks).is_err() {
                    self.store.metrics.apply_queue.dec();
                }
            }
        }
        for (w, task) in self.snapshot_applies.drain(..) {
            let _ = self.store.apply[w].send(ApplyMsg::Snapshot(Box::new(task)));
        }
        for (store_id, snap) in self.snapshots.drain(..) {
            self.store.transport.send_snapshot(store_id, snap);
        }
    }
}

/// The batch system's handler for a store.
pub(crate) struct RaftPoller {
    ctx: PollCtx,
    /// When the current round began, and the messages it handled so far.
    round_started: std::time::Instant,
    round_messages: usize,
}

impl RaftPoller {
    /// A poller sharing `store`.
    pub(crate) fn new(store: Arc<StoreContext>) -> Self {
        RaftPoller {
            ctx: PollCtx::new(store),
            round_started: std::time::Instant::now(),
            round_messages: 0,
        }
    }
}

impl PollHandler<PeerFsm, StoreFsm> for RaftPoller {
    fn begin(&mut self, _round: &shoal_router::Round) {
        self.round_started = std::time::Instant::now();
        self.round_messages = 0;
    }

    fn handle_control(&mut self, store: &mut StoreFsm, msgs: &mut Vec<StoreMsg>) {
        debug_assert_eq!(store.store_id, self.ctx.store.store_id);
        for msg in msgs.drain(..) {
            match msg {
                StoreMsg::Raft(m) => on_unknown_region_message(&self.ctx, m),
            }
        }
    }

    fn handle_normal(&mut self, fsm: &mut PeerFsm, msgs: &mut Vec<PeerMsg>) {
        self.round_messages += msgs.len();
        let _entered = fsm.span.enter();
        for msg in msgs.drain(..) {
            fsm.peer.on_msg(msg, &mut self.ctx);
        }
        fsm.peer.on_round_end(&mut self.ctx);
    }

    fn end(&mut self, _fsms: RoundFsms<'_, PeerFsm>) {
        self.ctx.flush();
        let m = &self.ctx.store.metrics;
        m.poll_round_seconds
            .observe(self.round_started.elapsed().as_secs_f64());
        m.poll_round_messages.observe(self.round_messages as f64);
    }
}
