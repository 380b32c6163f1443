//! Apply workers: committed entries become writes to the kv engine.
//!
//! Each worker owns the apply state of the regions hashed to it. Everything it
//! receives in one go (the tasks of several poll rounds) becomes **one** kv write
//! batch holding the data and every touched region's `RaftApplyState`, so after a
//! crash the two agree and apply resumes from the applied index found. Only after
//! that write are the proposers answered and each touched region's peer sent **one**
//! [`ApplyRes`]: its applied index and its admin results in log order.
//!
//! What each command does is the operation's business (`operation::command` for
//! data commands and the dispatch, `operation::split`, `operation::merge::*` for
//! admin commands); this file runs batches.

use std::collections::HashMap;
use std::sync::Arc;

use crate::msg::Reply;
use crossbeam_channel::Receiver;
use shoal_engine::keys::apply_state_key;
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvBatch, KvEngine, LogEngine};
use shoal_proto::Message as _;

use crate::error::{CmdError, WriteResult};
use crate::metrics::StoreMetrics;
use crate::operation::command::apply_entry;
use crate::operation::conf_change::destroy_removed;
use crate::operation::snapshot::apply::apply_snapshot;
use crate::raft::apply::{ApplyCtx, ApplyMsg, ApplyRes, ApplyTask, Delegate};

/// Where an apply worker reads and writes, and how it reports.
pub(crate) struct ApplyWorker<R> {
    pub(crate) kv: RocksKvEngine,
    pub(crate) log: Arc<dyn LogEngine>,
    pub(crate) metrics: Arc<StoreMetrics>,
    /// Delivers a batch's result to a region's peer.
    pub(crate) report: R,
}

/// The answers owed to proposers once the batch is written.
type Answers = Vec<(Reply, WriteResult)>;

impl<R: Fn(u64, ApplyRes)> ApplyWorker<R> {
    /// The worker's loop; returns when every sender is gone.
    pub(crate) fn run(self, rx: Receiver<ApplyMsg>) {
        let mut delegates: HashMap<u64, Delegate> = HashMap::new();
        // When each task of a batch was committed, kept across batches.
        let mut scratch = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut tasks = Vec::new();
            for m in std::iter::once(first).chain(rx.try_iter()) {
                match m {
                    ApplyMsg::Register(r) => {
                        delegates.insert(r.region.id, Delegate::from(*r));
                    }
                    ApplyMsg::Tasks(t) => {
                        self.metrics.apply_queue.dec();
                        tasks.extend(t)
                    }
                    ApplyMsg::Snapshot(s) => {
                        // Every entry committed before the snapshot applies first.
                        if !tasks.is_empty() {
                            self.apply_batch(
                                std::mem::take(&mut tasks),
                                &mut delegates,
                                &mut scratch,
                            );
                        }
                        let results = apply_snapshot(&self.kv, &self.metrics, *s, &mut delegates);
                        for (region_id, res) in results {
                            (self.report)(region_id, res);
                        }
                    }
                    ApplyMsg::Destroy { region_id } => {
                        if !tasks.is_empty() {
                            self.apply_batch(
                                std::mem::take(&mut tasks),
                                &mut delegates,
                                &mut scratch,
                            );
                        }
                        let gone =
                            destroy_removed(&self.kv, &self.metrics, region_id, &mut delegates);
                        if let Some(res) = gone {
                            (self.report)(region_id, res);
                        }
                    }
                }
            }
            if !tasks.is_empty() {
                self.apply_batch(tasks, &mut delegates, &mut scratch);
            }
        }
    }

    /// Applies `tasks` in one kv write, then answers and reports.
    fn apply_batch(
        &self,
        tasks: Vec<ApplyTask>,
        delegates: &mut HashMap<u64, Delegate>,
        committed_at: &mut Vec<std::time::Instant>,
    ) {
        let mut ctx = ApplyCtx {
            kv: &self.kv,
            log: self.log.as_ref(),
            batch: KvBatch::new(),
            overlay: HashMap::new(),
            results: HashMap::new(),
            delegates,
            sync: false,
        };
        let started = std::time::Instant::now();
        let mut answers = Vec::new();
        let mut count = 0u64;
        committed_at.clear();
        for task in tasks {
            committed_at.push(task.committed_at);
            count += apply_task(task, &mut ctx, &mut answers);
        }
        self.write(&ctx);
        fail::fail_point!("apply_after_kv_write");
        let m = &self.metrics;
        StoreMetrics::add(&m.applied_entries, count);
        for at in committed_at.iter() {
            m.commit_apply_seconds.observe(at.elapsed().as_secs_f64());
        }
        for (reply, result) in answers {
            reply.send(result);
        }
        for (region_id, res) in ctx.results {
            (self.report)(region_id, res);
        }
        m.apply_batch_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Writes the batch (synced when it holds an admin command). A kv engine that
    /// refuses a write leaves apply unable to go on consistently: the store stops.
    fn write(&self, ctx: &ApplyCtx) {
        fail::fail_point!("apply_before_kv_write");
        if ctx.sync {
            fail::fail_point!("apply_admin_before_kv_write");
        }
        let m = &self.metrics;
        let written = m
            .retry_while_disk_full("apply", || self.kv.write(&ctx.batch))
            .and_then(|()| match ctx.sync {
                true => {
                    StoreMetrics::add(&m.admin_kv_syncs, 1);
                    m.retry_while_disk_full("apply", || self.kv.sync())
                }
                false => Ok(()),
            });
        if let Err(e) = written {
            panic!("apply: the kv engine failed a write: {e}");
        }
    }
}

/// Applies one region's committed entries into the batch; returns how many were
/// applied and adds the answers owed.
fn apply_task(task: ApplyTask, ctx: &mut ApplyCtx, answers: &mut Answers) -> u64 {
    let region_id = task.region_id;
    // Out of the map while applying: a merge may need the map for its source.
    let Some(mut d) = ctx.delegates.remove(&region_id) else {
        tracing::debug!(
            region = region_id,
            "apply task for a region that is not (or no longer) here"
        );
        // Merged away (its entries up to the prepare were applied by the target's
        // catch-up) or never here: the outcome is unknown to the proposer.
        for (_, reply) in task.replies {
            let why = format!("region {region_id} is no longer applied here (merged away?)");
            answers.push((reply, Err(CmdError::Undetermined(why))));
        }
        return 0;
    };
    let span = d.span.clone();
    let _entered = span.enter();
    let mut count = 0;
    let mut replies = task.replies.into_iter().peekable();
    for entry in &task.entries {
        if entry.index <= d.state.applied_index {
            continue;
        }
        let result = apply_entry(&mut d, entry, ctx);
        d.state.applied_index = entry.index;
        count += 1;
        while let Some((i, reply)) = replies.next_if(|(i, _)| *i <= entry.index) {
            let outcome = match i == entry.index {
                true => result.clone(),
                false => Err(already_applied(region_id, i)),
            };
            answers.push((reply, outcome));
        }
        if d.removed {
            // Removed from the region: nothing after applies here, and the
            // delegate goes (the tombstone is in the batch).
            for (_, reply) in replies {
                let why = format!("region {region_id}: this replica was removed from the region");
                answers.push((reply, Err(CmdError::Undetermined(why))));
            }
            return count;
        }
    }
    // Entries applied before (a merge's catch-up, say): their outcome was not
    // recorded for the proposer.
    for (i, reply) in replies {
        answers.push((reply, Err(already_applied(region_id, i))));
    }
    ctx.batch.put(
        Cf::Meta,
        apply_state_key(region_id),
        d.state.encode_to_vec(),
    );
    ctx.applied(region_id, d.state.applied_index);
    ctx.delegates.insert(region_id, d);
    count
}

fn already_applied(region_id: u64, index: u64) -> CmdError {
    CmdError::Undetermined(format!(
        "region {region_id}: entry {index} was applied before its answer was owed"
    ))
}
