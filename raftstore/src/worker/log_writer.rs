//! The log writer: one thread that turns the write tasks of every poller into one
//! log-engine write and **one fsync**, then releases what waited on it.
//!
//! It takes every task queued since its last write, merges them (the batch keeps
//! their order, so a peer's later ready overwrites its earlier one), writes with one
//! sync, sends the messages that had to wait for durability (one batch per store),
//! tells each peer the highest ready number now persisted, and then removes the
//! logs of regions destroyed (after any write of theirs queued before). While it
//! syncs, the pollers keep going and queue the next tasks: the slower the disk, the
//! bigger the next batch.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use shoal_engine::{LogBatch, LogEngine, LogEntry};
use shoal_proto::raft_serverpb::{RaftLocalState, RaftMessage};

use crate::metrics::StoreMetrics;
use crate::transport::{send_counted, Transport};

/// The log writes of one or more poll rounds.
#[derive(Default)]
pub(crate) struct WriteTask {
    /// Entries and states of every peer.
    batch: LogBatch,
    /// `(region, ready number)` to report persisted.
    notify: Vec<(u64, u64)>,
    /// Messages that may leave only once the batch is durable.
    msgs: Vec<RaftMessage>,
    /// Regions whose log goes once everything before is written (merged away).
    removed: Vec<u64>,
}

impl WriteTask {
    /// Adds one peer's ready.
    pub(crate) fn add(
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

    /// Replaces one peer's whole log (a snapshot was applied) with `entries` and
    /// `state`, as its ready `ready`.
    pub(crate) fn replace(
        &mut self,
        region_id: u64,
        ready: u64,
        entries: Vec<LogEntry>,
        state: RaftLocalState,
        msgs: Vec<RaftMessage>,
    ) {
        self.batch.replace(region_id, entries, Some(state));
        self.notify.push((region_id, ready));
        self.msgs.extend(msgs);
    }

    /// Removes `region_id`'s log after this task's writes.
    pub(crate) fn remove_region(&mut self, region_id: u64) {
        self.removed.push(region_id);
    }

    /// Moves `other` behind this task's writes.
    fn merge(&mut self, other: WriteTask) {
        self.batch.extend(other.batch);
        self.notify.extend(other.notify);
        self.msgs.extend(other.msgs);
        self.removed.extend(other.removed);
    }

    /// Whether there is nothing to write, report or remove.
    pub(crate) fn is_empty(&self) -> bool {
        self.notify.is_empty() && self.removed.is_empty()
    }
}

/// What the log writer needs (not the whole store context, which holds the
/// writer's own queue and would keep it open forever).
pub(crate) struct LogWriter<N> {
    /// The shared Raft log.
    pub(crate) log: Arc<dyn LogEngine>,
    /// Counters.
    pub(crate) metrics: Arc<StoreMetrics>,
    /// Where messages that waited on the write go.
    pub(crate) transport: Arc<dyn Transport>,
    /// Tells a region's peer its readies up to a number are persisted.
    pub(crate) notify: N,
}

impl<N: Fn(u64, u64)> LogWriter<N> {
    /// The writer's loop; returns when every poller is gone.
    pub(crate) fn run(self, rx: Receiver<WriteTask>) {
        while let Ok(mut task) = rx.recv() {
            let mut taken = 1;
            for more in rx.try_iter() {
                task.merge(more);
                taken += 1;
            }
            self.metrics.log_writer_queue.sub(taken);
            self.write(task);
        }
    }

    fn write(&self, task: WriteTask) {
        let WriteTask {
            batch,
            notify,
            msgs,
            removed,
        } = task;
        if !batch.is_empty() {
            let started = std::time::Instant::now();
            let written = self
                .metrics
                .retry_while_disk_full("log writer", || self.log.write(&batch));
            if let Err(e) = written {
                // Raft's promises rest on this write: without it no peer may go on.
                panic!("log writer: the log engine failed a synced write: {e}");
            }
            let m = &self.metrics;
            m.log_write_seconds.observe(started.elapsed().as_secs_f64());
            StoreMetrics::add(&m.fsyncs, 1);
            m.regions_per_fsync.observe(batch.region_count() as f64);
            m.entries_per_fsync.observe(batch.entry_count() as f64);
        }
        fail::fail_point!("log_writer_after_write");
        if !msgs.is_empty() {
            send_counted(self.transport.as_ref(), &self.metrics, msgs);
        }
        let mut highest: HashMap<u64, u64> = HashMap::with_capacity(notify.len());
        for (region, number) in notify {
            let n = highest.entry(region).or_default();
            *n = (*n).max(number);
        }
        for (region, number) in highest {
            (self.notify)(region, number);
        }
        for region in removed {
            if let Err(e) = self.log.remove_region(region) {
                tracing::warn!(region, "cannot remove the merged region's log: {e}");
            }
        }
    }
}
