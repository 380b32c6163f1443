//! The write path of a peer: checking a command, proposing it, and matching the
//! committed entries back to the proposals that wait for them. Each admin command's
//! own checks live with its operation (`split.rs`, `merge/*`); this file routes to
//! them.
//!
//! Checks before raft-rs: this peer leads **now** (raft-rs's own state, not the
//! round's cached view: a peer that stepped down earlier in the round would have
//! its proposal forwarded, and maybe applied, while the client hears "dropped"),
//! the epoch and keys fit, fewer than `max_pending_proposals` wait, and the encoded
//! command fits in `raft_entry_max_size`. Proposals are matched to committed entries
//! by (index, term): another term at the index means certainly dropped
//! (`CmdError::Dropped`); an index passed unseen means the outcome is unknown
//! (`CmdError::Undetermined`).
//!
//! **Merged writes** (`raft_merge_writes`, on by default): the data writes a leader
//! receives in one poll round are checked one by one as they arrive, then proposed
//! together as one entry when the round's messages are handled, or before any
//! other message of the round but a read or a persisted notice (so a write is
//! never reordered with an admin command or a Raft message, nor checked against a
//! leadership or region that changed; a read's index is taken at the round's end,
//! after them), or when the next would take the entry past `raft_entry_max_size`.
//! Concurrent writes may take effect in any order, and these take effect in arrival
//! order; each caller gets the responses of its own requests (`msg::Reply`), and all
//! of them the same error if the entry fails.

use raft::eraftpb::Entry;
use raft::StateRole;
use shoal_proto::raft_cmdpb::{admin_request, RaftCmdRequest, RaftRequestHeader};
use shoal_proto::{Message as _, RegionExt};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::error::{
    entry_too_large, not_leader, region_merging, server_busy, CmdError, WriteResult,
};
use crate::fsm::PollCtx;
use crate::metrics::StoreMetrics;
use crate::msg::{Command, Reply};
use crate::operation::command::{check_epoch, check_keys, request_key};
use crate::operation::conf_change::{change_peer_of, conf_change_of};
use crate::raft::apply::ApplyTask;
use crate::raft::peer::Peer;
use crate::store::context::StoreContext;

/// A write waiting for its entry to commit and apply.
pub(crate) struct Proposal {
    pub(crate) index: u64,
    pub(crate) term: u64,
    pub(crate) reply: Reply,
    /// When it was proposed (`shoal_raft_propose_commit_seconds`).
    pub(crate) proposed_at: Instant,
}

/// Writes of this round waiting to be proposed as one entry (see the module docs).
pub(crate) struct PendingWrites {
    /// Their requests, in arrival order, under the first one's header.
    request: RaftCmdRequest,
    /// Each caller, with how many of the requests are its.
    callers: Vec<(oneshot::Sender<WriteResult>, usize)>,
    /// The encoded sizes of the writes added up: never below the entry's.
    size: u64,
}

impl Peer {
    /// Checks that this peer leads and that the request's epoch and keys fit.
    pub(crate) fn check_request<'a>(
        &self,
        header: &RaftRequestHeader,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), CmdError> {
        if !self.is_leader {
            return Err(not_leader(self.region_id, self.leader_meta()));
        }
        check_epoch(self.region(), header.region_epoch.as_ref(), false)?;
        check_keys(self.region(), keys)
    }

    /// A command from the router: a data write joins the round's pending writes
    /// (when `raft_merge_writes` is on and it passes the checks), anything else is
    /// proposed at once, after them.
    pub(crate) fn on_command(&mut self, cmd: Command, store: &StoreContext) {
        if cmd.request.admin.is_some() || !store.cfg.raft_merge_writes {
            self.propose_pending(store);
            return self.propose(cmd.request, Reply::One(cmd.reply), store);
        }
        let Command { request, reply } = cmd;
        let header = request.header.unwrap_or_default();
        let checked = self.check_write(&header, &request);
        if let Err(e) = checked.and_then(|()| self.check_can_propose(store, false)) {
            let _ = reply.send(Err(e));
            return;
        }
        let size = request.encoded_len() as u64;
        if self
            .pending_writes
            .as_ref()
            .is_some_and(|p| p.size + size > store.cfg.raft_entry_max_size)
        {
            self.propose_pending(store);
        }
        let count = request.requests.len();
        match &mut self.pending_writes {
            Some(p) => {
                p.request.requests.extend(request.requests);
                p.callers.push((reply, count));
                p.size += size;
            }
            None => {
                self.pending_writes = Some(Box::new(PendingWrites {
                    request,
                    callers: vec![(reply, count)],
                    size,
                }))
            }
        }
    }

    /// Proposes the round's pending writes as one entry (checked again as one).
    pub(crate) fn propose_pending(&mut self, store: &StoreContext) {
        let Some(pending) = self.pending_writes.take() else {
            return;
        };
        let PendingWrites {
            request,
            mut callers,
            ..
        } = *pending;
        let reply = match callers.len() {
            1 => Reply::One(callers.pop().expect("one caller").0),
            n => {
                StoreMetrics::add(&store.metrics.writes_merged, n as u64 - 1);
                Reply::Merged(callers)
            }
        };
        self.propose(request, reply, store);
    }

    fn propose(&mut self, mut request: RaftCmdRequest, reply: Reply, store: &StoreContext) {
        let metrics = &store.metrics;
        let header = request.header.unwrap_or_default();
        let checked = match request.admin.as_ref().and_then(|a| a.cmd.as_ref()) {
            Some(admin_request::Cmd::PrepareMerge(_)) => {
                self.check_prepare_merge(&header, &mut request, store.cfg.raft_entry_max_size)
            }
            Some(admin_request::Cmd::RollbackMerge(_)) => self.check_admin(&header, false),
            None => self.check_write(&header, &request),
            _ if self.merging.is_some() => Err(region_merging(self.region_id)),
            Some(admin_request::Cmd::ChangePeer(req)) => self.check_change_peer(&header, req),
            // A split or merge copies the region's peers: not in the middle of a
            // membership change.
            Some(admin_request::Cmd::Split(_) | admin_request::Cmd::CommitMerge(_))
                if self.region().is_joint() =>
            {
                Err(CmdError::Invalid(format!(
                    "region {} is in a joint configuration (a membership change is in \
                     progress); try again once it is left",
                    self.region_id
                )))
            }
            Some(admin_request::Cmd::Split(split)) => self.check_split(&header, split),
            Some(admin_request::Cmd::CommitMerge(_)) => self.check_admin(&header, true),
            Some(admin_request::Cmd::CompactLog(_)) => self.check_admin(&header, false),
        };
        // A log truncation frees space: it goes through on a full disk.
        let frees_space = matches!(
            request.admin.as_ref().and_then(|a| a.cmd.as_ref()),
            Some(admin_request::Cmd::CompactLog(_))
        );
        let checked = checked.and_then(|()| self.check_can_propose(store, frees_space));
        if let Err(e) = checked {
            reply.send(Err(e));
            return;
        }
        let data = request.encode_to_vec();
        if data.len() as u64 > store.cfg.raft_entry_max_size {
            reply.send(Err(entry_too_large(
                self.region_id,
                data.len() as u64,
                store.cfg.raft_entry_max_size,
            )));
            return;
        }
        let before = self.raw.raft.raft_log.last_index();
        // A membership change is a raft-rs conf change entry carrying the command
        // as its context (`conf_change/`).
        let proposed = match change_peer_of(&request) {
            Some(req) => self
                .raw
                .propose_conf_change(data, conf_change_of(&req.changes)),
            None => self.raw.propose(Vec::new(), data),
        };
        if let Err(e) = proposed {
            // As leader, raft-rs refuses only while a leader transfer is under way or
            // when too many bytes are uncommitted: nothing entered the log.
            reply.send(Err(server_busy(
                self.region_id,
                &format!("raft refused the proposal ({e})"),
            )));
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        if index == before {
            reply.send(Err(CmdError::Dropped("raft dropped the proposal".into())));
            return;
        }
        StoreMetrics::add(&metrics.proposals, 1);
        // Our own older proposals at this index or after were in a log a newer
        // leader overwrote (we appended here): they can never commit.
        while self.proposals.back().is_some_and(|p| p.index >= index) {
            let p = self.proposals.pop_back().expect("back exists");
            self.set_waiting_writes(self.waiting_writes - p.reply.writes());
            p.reply.send(Err(CmdError::Dropped(format!(
                "region {}: index {} was overwritten by a newer leader's log",
                self.region_id, p.index
            ))));
        }
        self.set_waiting_writes(self.waiting_writes + reply.writes());
        self.proposals.push_back(Proposal {
            index,
            term: self.raw.raft.term,
            reply,
            proposed_at: Instant::now(),
        });
    }

    /// A data write (puts, deletes, CAS): not while the region merges; this peer
    /// leads; the epoch and keys fit.
    fn check_write(
        &self,
        header: &RaftRequestHeader,
        request: &RaftCmdRequest,
    ) -> Result<(), CmdError> {
        if self.merging.is_some() {
            return Err(region_merging(self.region_id));
        }
        self.check_request(header, request.requests.iter().filter_map(request_key))
    }

    /// The last checks before a proposal enters raft-rs: this peer must be the
    /// leader **now** (it may have stepped down earlier in this round; raft-rs would
    /// then forward the proposal, which may still be applied, so it is refused here
    /// instead), and the queue of proposals waiting for apply must have room.
    fn check_can_propose(&self, store: &StoreContext, frees_space: bool) -> Result<(), CmdError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(not_leader(self.region_id, self.leader_meta()));
        }
        let disk_full = store
            .metrics
            .disk_full
            .load(std::sync::atomic::Ordering::Acquire);
        if disk_full && !frees_space {
            return Err(server_busy(
                self.region_id,
                "the store's disk is full: writes are refused until space returns",
            ));
        }
        // Writes, not proposals: merged writes share one proposal. The round's
        // pending writes count too (they passed this check one by one, so their
        // own proposal passes it).
        let pending = self.pending_writes.as_ref().map_or(0, |p| p.callers.len());
        if self.waiting_writes + pending >= store.cfg.max_pending_proposals {
            return Err(server_busy(
                self.region_id,
                "too many writes waiting to be applied",
            ));
        }
        Ok(())
    }

    /// An admin command other than split must reach the leader with the current
    /// epoch (conf_ver too when `conf_ver`).
    fn check_admin(&self, header: &RaftRequestHeader, conf_ver: bool) -> Result<(), CmdError> {
        if !self.is_leader {
            return Err(not_leader(self.region_id, self.leader_meta()));
        }
        check_epoch(self.region(), header.region_epoch.as_ref(), conf_ver)
    }

    /// Sends committed entries to apply with the answers owed for them. Proposals
    /// are matched to entries by (index, term): a proposal whose index committed
    /// with another term's entry can never apply (certainly dropped); one whose
    /// index passed without this peer seeing its entry has an unknown outcome.
    pub(crate) fn schedule_apply(&mut self, committed: Vec<Entry>, ctx: &mut PollCtx) {
        let (Some(first), Some(last)) = (committed.first(), committed.last()) else {
            return;
        };
        let (first, last) = (first.index, last.index);
        self.scheduled_index = self.scheduled_index.max(last);
        let mut replies = Vec::new();
        while self.proposals.front().is_some_and(|p| p.index <= last) {
            let p = self.proposals.pop_front().expect("front exists");
            self.set_waiting_writes(self.waiting_writes - p.reply.writes());
            if p.index < first {
                p.reply.send(Err(CmdError::Undetermined(format!(
                    "region {}: index {} committed before this peer saw it",
                    self.region_id, p.index
                ))));
                continue;
            }
            let entry = &committed[(p.index - first) as usize];
            debug_assert_eq!(entry.index, p.index);
            if entry.term == p.term {
                ctx.store
                    .metrics
                    .propose_commit_seconds
                    .observe(p.proposed_at.elapsed().as_secs_f64());
                replies.push((p.index, p.reply));
            } else {
                p.reply.send(Err(CmdError::Dropped(format!(
                    "region {}: index {} was taken by another leader's entry",
                    self.region_id, p.index
                ))));
            }
        }
        ctx.schedule_apply(ApplyTask {
            region_id: self.region_id,
            entries: committed,
            replies,
            committed_at: Instant::now(),
        });
    }
}
