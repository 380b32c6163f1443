//! Automatic split by size, the peer side: every split-check tick a leader whose
//! region took writes asks the region worker to measure it (`worker/region.rs`
//! does the scan and, when the region is over a limit, picks the key and allocates
//! the ids); on the result, if the region is unchanged and this peer still leads,
//! it proposes the split (`operation/split.rs` applies it).

use shoal_proto::raft_cmdpb::admin_request;

use crate::fsm::PollCtx;
use crate::msg::Command;
use crate::operation::command::admin_cmd;
use crate::operation::split::build_batch_split;
use crate::raft::peer::Peer;
use crate::worker::region::{CheckResult, CheckTask, RegionTask};

/// Where this peer's automatic split checks stand.
#[derive(Default)]
pub(crate) struct SplitCheckState {
    /// A check is running.
    pub(crate) pending: bool,
    /// The last check's figures.
    pub(crate) last: Option<CheckResult>,
    /// The applied index the last check was asked at. The worker may answer
    /// with older figures (it skips the scan when little was applied since
    /// them): nothing is asked again until something more is applied.
    pub(crate) asked_at: Option<u64>,
}

impl Peer {
    /// Asks the region worker to measure the region, if this peer leads, no check
    /// is running and something was applied since the last one.
    pub(crate) fn on_split_check_tick(&mut self, ctx: &PollCtx) {
        if !self.is_leader || self.split_check.pending {
            return;
        }
        let applied = self.applied_index;
        let last = self.split_check.last.as_ref();
        if last.is_some_and(|r| r.applied_index == applied)
            || self.split_check.asked_at == Some(applied)
        {
            return;
        }
        let task = CheckTask {
            region: self.region().clone(),
            applied_index: applied,
            previous: self.split_check.last.clone(),
            span: tracing::Span::current(),
        };
        self.split_check.pending = ctx
            .store
            .region_worker
            .send(RegionTask::SplitCheck(Box::new(task)))
            .is_ok();
        if self.split_check.pending {
            self.split_check.asked_at = Some(applied);
        }
    }

    /// Proposes the split the worker asked for, if the region is unchanged and this
    /// peer still leads.
    pub(crate) fn on_split_check_result(&mut self, mut r: CheckResult, ctx: &PollCtx) {
        self.split_check.pending = false;
        let m = &ctx.store.metrics;
        m.region_check_bytes.observe(r.size as f64);
        m.region_check_keys.observe(r.keys as f64);
        let key = r.split_key.take();
        let ids = std::mem::take(&mut r.split_ids);
        self.split_check.last = Some(r.clone());
        let region = self.region().clone();
        let version = region.region_epoch.unwrap_or_default().version;
        let Some(key) = key else { return };
        if !self.is_leader || version != r.version || ids.len() != 1 + region.peers.len() {
            return;
        }
        tracing::info!(
            region = self.region_id,
            size = r.size,
            keys = r.keys,
            "region over its size limit; splitting"
        );
        let split = build_batch_split(&region, &[key], &ids);
        let request = admin_cmd(
            &region,
            self.store_id,
            region.region_epoch,
            admin_request::Cmd::Split(split),
        );
        self.on_command(Command::unanswered(request), &ctx.store);
        self.split_check.last = None;
        self.split_check.asked_at = None;
    }
}
