//! The leader's side: answering raft-rs's `Storage::snapshot` from a snapshot the
//! snapshot worker generated, handing each `MsgSnapshot` to the transport with
//! its files, and telling raft-rs how each send ended.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use raft::eraftpb::{Message as RaftPbMessage, Snapshot};
use raft::{SnapshotStatus, StorageError};

use crate::fsm::PollCtx;
use crate::metrics::StoreMetrics;
use crate::msg::PeerMsg;
use crate::operation::snapshot::{OutgoingSnapshot, SnapFiles, SnapKey, SnapshotDone};
use crate::raft::peer::Peer;
use crate::worker::snap_gen::{Generated, SnapTask};

/// A generation that has not reported after this long is asked for again.
const GENERATE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a leader's snapshot stands.
pub(crate) enum SnapState {
    /// None asked for.
    Idle,
    /// The snapshot worker is at it.
    Generating {
        /// Since when.
        since: Instant,
    },
    /// Ready to send (and kept for the next follower that needs one).
    Generated(Box<Generated>),
}

/// The snapshot side of a peer's storage: raft-rs asks, the worker generates.
pub(crate) struct SnapSource {
    region_id: u64,
    state: RefCell<SnapState>,
    /// The snapshot worker's queue (`None`: this store has no snapshot
    /// directory and cannot make snapshots).
    tasks: Option<Sender<SnapTask>>,
}

impl SnapSource {
    /// The source of `region_id`'s snapshots.
    pub(crate) fn new(region_id: u64, tasks: Option<Sender<SnapTask>>) -> SnapSource {
        SnapSource {
            region_id,
            state: RefCell::new(SnapState::Idle),
            tasks,
        }
    }

    /// raft-rs's `Storage::snapshot`: the generated snapshot when it is recent
    /// enough (at or past `request_index` and the log's `truncated` index: a
    /// follower must find the entries after it; and its membership has peer `to`,
    /// which raft-rs refuses a snapshot without), else a generation is started (or
    /// still running) and raft-rs is told to ask again. Never does IO.
    pub(crate) fn snapshot(
        &self,
        request_index: u64,
        truncated: u64,
        to: u64,
    ) -> raft::Result<Snapshot> {
        let mut st = self.state.borrow_mut();
        match &*st {
            SnapState::Generated(g)
                if g.key.index >= request_index.max(truncated) && has_peer(&g.snapshot, to) =>
            {
                return Ok(g.snapshot.clone());
            }
            SnapState::Generating { since } if since.elapsed() < GENERATE_TIMEOUT => {}
            _ => match &self.tasks {
                Some(tx) => {
                    let task = SnapTask {
                        region_id: self.region_id,
                        span: tracing::Span::current(),
                    };
                    if tx.send(task).is_ok() {
                        *st = SnapState::Generating {
                            since: Instant::now(),
                        };
                    }
                }
                None => tracing::debug!(
                    region = self.region_id,
                    "raft asked for a snapshot, but this store has no snapshot directory"
                ),
            },
        }
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }

    /// The snapshot worker's outcome.
    pub(crate) fn on_generated(&self, res: Result<Generated, String>) {
        *self.state.borrow_mut() = match res {
            Ok(g) => SnapState::Generated(Box::new(g)),
            Err(_) => SnapState::Idle,
        };
    }

    /// The files of the generated snapshot `key`, if that is the one kept.
    pub(crate) fn files(&self, key: &SnapKey) -> Option<Arc<SnapFiles>> {
        match &*self.state.borrow() {
            SnapState::Generated(g) if g.key == *key => Some(g.files.clone()),
            _ => None,
        }
    }

    /// The log was truncated to `index`: a snapshot older than that is useless
    /// (its follower would need entries that are gone) and its files go.
    pub(crate) fn on_truncated(&self, index: u64) {
        let mut st = self.state.borrow_mut();
        if matches!(&*st, SnapState::Generated(g) if g.key.index < index) {
            *st = SnapState::Idle;
        }
    }

    /// Drops the kept snapshot (the peer is no longer leader, or goes away).
    pub(crate) fn clear(&self) {
        let mut st = self.state.borrow_mut();
        if matches!(&*st, SnapState::Generated(_)) {
            *st = SnapState::Idle;
        }
    }
}

/// Whether `snapshot`'s membership names peer `to` (voter, learner, or in either
/// half of a joint configuration).
fn has_peer(snapshot: &Snapshot, to: u64) -> bool {
    let cs = snapshot.get_metadata().get_conf_state();
    [
        &cs.voters,
        &cs.learners,
        &cs.voters_outgoing,
        &cs.learners_next,
    ]
    .iter()
    .any(|ids| ids.contains(&to))
}

impl Peer {
    /// Hands each `MsgSnapshot` of a ready to the transport with its files, to be
    /// streamed; the outcome comes back as [`PeerMsg::SnapshotStatus`].
    pub(crate) fn send_snapshots(&mut self, msgs: Vec<RaftPbMessage>, ctx: &mut PollCtx) {
        for m in msgs {
            let to = m.to;
            let key = SnapKey::of(self.region_id, m.get_snapshot());
            let files = self.raw.store().snap.files(&key);
            let mut envelope = Vec::new();
            self.build_messages(vec![m], &mut envelope, &ctx.store.metrics);
            let (Some(files), Some(msg)) = (files, envelope.pop()) else {
                tracing::warn!(
                    region = self.region_id,
                    to,
                    index = key.index,
                    "no files or no address for a snapshot raft-rs sent; it will ask again"
                );
                // Told next round: raft-rs takes no step between a ready and its
                // advance.
                let status = PeerMsg::SnapshotStatus { to, ok: false };
                let _ = ctx.store.router.send(self.region_id, status);
                continue;
            };
            let store_id = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
            let (router, metrics) = (ctx.store.router.clone(), ctx.store.metrics.clone());
            let (region_id, bytes, started) = (self.region_id, files.bytes, Instant::now());
            let done = SnapshotDone::new(move |ok| {
                if ok {
                    StoreMetrics::add(&metrics.snapshots_sent, 1);
                    StoreMetrics::add(&metrics.snapshot_sent_bytes, bytes);
                    StoreMetrics::add_elapsed(&metrics.snapshot_send_seconds, started);
                } else {
                    StoreMetrics::add(&metrics.snapshot_failures, 1);
                }
                let _ = router.send(region_id, PeerMsg::SnapshotStatus { to, ok });
            });
            tracing::info!(
                region = self.region_id,
                to,
                store = store_id,
                index = key.index,
                bytes,
                "sending a raft snapshot"
            );
            ctx.snapshots
                .push((store_id, OutgoingSnapshot { msg, files, done }));
        }
    }

    /// How a snapshot's send to peer `to` ended: raft-rs moves that follower out
    /// of its paused snapshot state either way (after a failure it asks for a
    /// snapshot again).
    pub(crate) fn on_snapshot_status(&mut self, to: u64, ok: bool) {
        if !ok {
            tracing::info!(region = self.region_id, to, "a snapshot send failed");
        }
        let status = match ok {
            true => SnapshotStatus::Finish,
            false => SnapshotStatus::Failure,
        };
        self.raw.report_snapshot(to, status);
    }
}
