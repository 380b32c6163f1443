//! Raft log GC, in one place: the leader picks a compact index, every replica
//! applies the truncation, and the log GC worker (`worker/log_gc.rs`) deletes the
//! entries and gives the space back.
//!
//! The flow:
//! 1. **Pick** ([`Peer::on_log_gc_tick`], every `raft-log-gc-tick-interval`): a
//!    leader that is not merging takes the lowest index every replica has
//!    (the smallest `matched` in raft-rs's progress, its own persisted index
//!    included) capped at its applied index; when that is at least
//!    `raft-log-gc-threshold` entries past the first index, it proposes a
//!    `CompactLog` for it. A slow or stopped replica holds the truncation back
//!    until the log passes `raft-log-gc-count-limit` entries or
//!    `raft-log-gc-size-limit` bytes: then at least half of the applied log goes
//!    whatever that replica needs, and it catches up from a Raft snapshot
//!    (`operation/snapshot`). The disk stays bounded by the limits.
//! 2. **Apply** ([`apply_compact_log`], on every replica): records the truncated
//!    index and term in the region's apply state. Like every admin command the
//!    batch holding it is **synced** before its result is reported: the kv engine
//!    is written without sync, and the log is what recovers unsynced kv writes, so
//!    entries may go only once an apply state at or past them is durable. The
//!    apply state written in that synced batch has `applied_index` at the
//!    `CompactLog` entry itself, past the compact index: that is how the durable
//!    index is known, without syncing any other write.
//! 3. **Applied** ([`Peer::on_compact_log_applied`]): the peer's storage moves its
//!    first index (raft-rs reads no entry below it again) and drops cached entries
//!    up to it; the GC worker deletes them from the log engine, off the poller.
//!
//! A frozen merge source never truncates (its commit carries entries from the
//! merge's minimum index): the leader does not propose while merging, and apply
//! skips a `CompactLog` that reaches a frozen region.

use shoal_proto::raft_cmdpb::{admin_request, CompactLogRequest, Response};

use raft::ProgressState;

use crate::config::Config;
use crate::error::{CmdError, WriteResult};
use crate::fsm::PollCtx;
use crate::msg::Command;
use crate::operation::command::admin_cmd;
use crate::raft::apply::{AdminResult, ApplyCtx, Delegate};
use crate::raft::peer::Peer;
use crate::worker::log_gc::LogGcTask;

impl Peer {
    /// On the GC tick: a leader proposes a truncation when enough entries every
    /// replica has are applied.
    pub(crate) fn on_log_gc_tick(&mut self, ctx: &PollCtx) {
        if !self.is_leader || self.merging.is_some() {
            return;
        }
        let Some(index) = self.compact_index(&ctx.store.cfg) else {
            return;
        };
        let term = match self.raw.raft.raft_log.term(index) {
            Ok(t) if t > 0 => t,
            _ => return,
        };
        let cmd = admin_request::Cmd::CompactLog(CompactLogRequest {
            compact_index: index,
            compact_term: term,
        });
        let region = self.region();
        let request = admin_cmd(region, self.store_id, region.region_epoch, cmd);
        self.on_command(Command::unanswered(request), &ctx.store);
    }

    /// The index to truncate the log to, if it is worth it: the lowest index every
    /// replica holds (or, past the count or size limit, at least half of the
    /// applied log), capped at what this leader applied, at least
    /// `raft-log-gc-threshold` entries past the current first index.
    fn compact_index(&self, cfg: &Config) -> Option<u64> {
        let raft = &self.raw.raft;
        let replicated = raft.prs().iter().map(|(_, p)| p.matched).min()?;
        let store = self.raw.store();
        let first = store.truncated_index() + 1;
        let applied = self.applied_index;
        if applied < first {
            return None;
        }
        let count = applied - first + 1;
        let over_limit =
            count >= cfg.raft_log_gc_count_limit || store.log_bytes() >= cfg.raft_log_gc_size_limit;
        // A follower a snapshot is on its way to needs the entries after it: the
        // forced truncation waits for it, unless the log is twice over the limit.
        let sending = raft
            .prs()
            .iter()
            .filter(|(_, p)| p.state == ProgressState::Snapshot)
            .map(|(_, p)| p.pending_snapshot)
            .min();
        let far_over = count >= 2 * cfg.raft_log_gc_count_limit
            || store.log_bytes() >= 2 * cfg.raft_log_gc_size_limit;
        let compact = match over_limit {
            true => {
                let forced = replicated.max(first + (applied - first) / 2);
                match sending {
                    Some(s) if !far_over => forced.min(s.max(replicated)),
                    _ => forced,
                }
            }
            false => replicated,
        }
        .min(applied);
        let threshold = cfg.raft_log_gc_threshold.max(1);
        (compact >= first && compact - first + 1 >= threshold).then_some(compact)
    }

    /// Apply truncated the log up to `index` (of `term`): entries up to it are no
    /// longer read, and the GC worker deletes them.
    pub(crate) fn on_compact_log_applied(&mut self, index: u64, term: u64, ctx: &PollCtx) {
        if !self.raw.mut_store().compact_to(index, term) {
            return;
        }
        let task = LogGcTask::Truncate {
            region_id: self.region_id,
            to: index + 1,
            span: tracing::Span::current(),
        };
        let _ = ctx.store.log_gc.send(task);
    }
}

/// Records the truncation in the apply state, in the (synced) batch.
pub(crate) fn apply_compact_log(
    d: &mut Delegate,
    req: &CompactLogRequest,
    index: u64,
    ctx: &mut ApplyCtx,
) -> WriteResult {
    let state = &mut d.state;
    if d.merging.is_some() || req.compact_index <= state.truncated_index {
        // A frozen source keeps its entries for the merge; an older truncation
        // than one already applied changes nothing.
        return Ok(vec![Response::default()]);
    }
    if req.compact_index > state.applied_index || req.compact_term == 0 {
        return Err(CmdError::Invalid(format!(
            "region {}: cannot truncate the log to {} (term {}) at applied index {}",
            d.region.id, req.compact_index, req.compact_term, state.applied_index
        )));
    }
    state.truncated_index = req.compact_index;
    state.truncated_term = req.compact_term;
    let result = AdminResult::CompactLog {
        index: req.compact_index,
        term: req.compact_term,
    };
    ctx.report(d.region.id, index, result);
    Ok(vec![Response::default()])
}
