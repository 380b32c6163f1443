//! The poll round: [`RaftPoller`] is the batch system's handler.
//!
//! For every peer of a round it steps messages, proposes, ticks and takes the ready
//! (see [`Peer`](crate::peer::Peer)); everything the peers produce is gathered in
//! one [`PollCtx`]. At the end of the round:
//! 1. the messages that may go before persistence leave as **one batch per remote store**;
//! 2. all entries and hard states become **one write task** for the log writer;
//! 3. committed entries go to the apply workers, one message per worker.
//!
//! Pollers never touch the disk for writes: the log writer syncs, then tells each
//! peer its ready is persisted.

use std::sync::Arc;

use crossbeam_channel::Sender;
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{LogBatch, LogEngine, LogEntry};
use shoal_proto::raft_serverpb::{RaftLocalState, RaftMessage};
use shoal_router::{PollHandler, Ticker};

use crate::apply::{ApplyMsg, ApplyTask};
use crate::config::Config;
use crate::fsm::{PeerFsm, StoreFsm, StoreRouter};
use crate::metrics::StoreMetrics;
use crate::msg::{PeerMsg, PeerTick, StoreMsg};
use crate::split::IdAllocator;
use crate::split_check::CheckTask;
use crate::transport::{send_counted, Transport};

/// What every thread of a store shares.
pub struct StoreContext {
    /// This store's id.
    pub store_id: u64,
    /// Settings.
    pub cfg: Config,
    /// The shared Raft log.
    pub log: Arc<dyn LogEngine>,
    /// The state machine.
    pub kv: RocksKvEngine,
    /// Counters.
    pub metrics: Arc<StoreMetrics>,
    /// Where messages to other stores go.
    pub transport: Arc<dyn Transport>,
    /// The log writer's queue.
    pub writer: Sender<WriteTask>,
    /// The apply workers' queues; region `r` goes to `apply[r % len]`.
    pub apply: Vec<Sender<ApplyMsg>>,
    /// The store's router, to start peers of regions split off.
    pub router: StoreRouter,
    /// The store's ticker, to register new peers' ticks.
    pub ticker: Ticker<PeerTick>,
    /// Ids for regions and peers created by splits.
    pub ids: Arc<IdAllocator>,
    /// The split checker's queue.
    pub split_check: Sender<CheckTask>,
    /// Threads for scans and checksums (never on a poller).
    pub read_pool: crate::read_pool::ReadPool,
}

impl StoreContext {
    /// The apply worker of a region.
    pub fn apply_worker(&self, region_id: u64) -> &Sender<ApplyMsg> {
        &self.apply[(region_id % self.apply.len() as u64) as usize]
    }

    /// Sends messages, one batch per store, and counts them.
    pub fn send_messages(&self, msgs: Vec<RaftMessage>) {
        send_counted(self.transport.as_ref(), &self.metrics, msgs);
    }
}

/// The log writes of one or more poll rounds.
#[derive(Default)]
pub struct WriteTask {
    /// Entries and states of every peer.
    pub batch: LogBatch,
    /// `(region, ready number)` to report persisted.
    pub notify: Vec<(u64, u64)>,
    /// Messages that may leave only once the batch is durable.
    pub msgs: Vec<RaftMessage>,
}

impl WriteTask {
    /// Adds one peer's ready.
    pub fn add(
        &mut self,
        region_id: u64,
        ready: u64,
        entries: Vec<LogEntry>,
        state: Option<RaftLocalState>,
        msgs: Vec<RaftMessage>,
    ) {
        self.batch.add(region_id, entries, state);
        self.notify.push((region_id, ready));
        self.msgs.extend(msgs);
    }

    /// Moves `other` behind this task's writes.
    pub fn merge(&mut self, other: WriteTask) {
        self.batch.extend(other.batch);
        self.notify.extend(other.notify);
        self.msgs.extend(other.msgs);
    }

    /// Whether there is nothing to write or report.
    pub fn is_empty(&self) -> bool {
        self.notify.is_empty()
    }
}

/// What peers produce during one round.
pub struct PollCtx {
    /// The store's shared parts.
    pub store: Arc<StoreContext>,
    /// The round's log write.
    pub write: WriteTask,
    /// Messages to send at the end of the round.
    pub outgoing: Vec<RaftMessage>,
    applies: Vec<Vec<ApplyTask>>,
}

impl PollCtx {
    /// An empty round context.
    pub fn new(store: Arc<StoreContext>) -> Self {
        let workers = store.apply.len();
        PollCtx {
            store,
            write: WriteTask::default(),
            outgoing: Vec::new(),
            applies: (0..workers).map(|_| Vec::new()).collect(),
        }
    }

    /// Queues committed entries for the region's apply worker.
    pub fn schedule_apply(&mut self, task: ApplyTask) {
        let w = (task.region_id % self.applies.len() as u64) as usize;
        self.applies[w].push(task);
    }

    /// Hands the round's work on: messages, the write task, apply tasks.
    pub fn flush(&mut self) {
        if !self.outgoing.is_empty() {
            self.store.send_messages(std::mem::take(&mut self.outgoing));
        }
        if !self.write.is_empty() {
            let task = std::mem::take(&mut self.write);
            if self.store.writer.send(task).is_err() {
                tracing::error!("the log writer has stopped; the round's writes are lost");
            }
        }
        for (w, tasks) in self.applies.iter_mut().enumerate() {
            if !tasks.is_empty() {
                let _ = self.store.apply[w].send(ApplyMsg::Tasks(std::mem::take(tasks)));
            }
        }
    }
}

/// The batch system's handler for a store.
pub struct RaftPoller {
    ctx: PollCtx,
}

impl RaftPoller {
    /// A poller sharing `store`.
    pub fn new(store: Arc<StoreContext>) -> Self {
        RaftPoller {
            ctx: PollCtx::new(store),
        }
    }
}

impl PollHandler<PeerFsm, StoreFsm> for RaftPoller {
    fn handle_control(&mut self, store: &mut StoreFsm, msgs: &mut Vec<StoreMsg>) {
        for msg in msgs.drain(..) {
            match msg {
                StoreMsg::Raft(m) => tracing::debug!(
                    store = store.store_id,
                    region = m.region_id,
                    "raft message for a region this store does not have"
                ),
            }
        }
    }

    fn handle_normal(&mut self, fsm: &mut PeerFsm, msgs: &mut Vec<PeerMsg>) {
        for msg in msgs.drain(..) {
            fsm.peer.on_msg(msg, &mut self.ctx);
        }
        fsm.peer.on_round_end(&mut self.ctx);
    }

    fn end(&mut self, _fsms: shoal_router::RoundFsms<'_, PeerFsm>) {
        self.ctx.flush();
    }
}
