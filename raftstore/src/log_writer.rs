//! The log writer: one thread that turns the write tasks of every poller into one
//! log-engine write and **one fsync**, then releases what waited on it.
//!
//! It takes every task queued since its last write, merges them (the batch keeps
//! their order, so a peer's later ready overwrites its earlier one), writes with one
//! sync, sends the messages that had to wait for durability (one batch per store),
//! and tells each peer the highest ready number now persisted. While it syncs, the
//! pollers keep going and queue the next tasks: the slower the disk, the bigger the
//! next batch.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use shoal_engine::LogEngine;

use crate::fsm::StoreRouter;
use crate::metrics::StoreMetrics;
use crate::msg::PeerMsg;
use crate::poll::WriteTask;
use crate::transport::{send_counted, Transport};

/// What the log writer needs (not the whole store context, which holds the
/// writer's own queue and would keep it open forever).
pub struct LogWriter {
    /// The shared Raft log.
    pub log: Arc<dyn LogEngine>,
    /// Counters.
    pub metrics: Arc<StoreMetrics>,
    /// Where messages that waited on the write go.
    pub transport: Arc<dyn Transport>,
}

/// The writer's loop; returns when every poller is gone.
pub fn run(rx: Receiver<WriteTask>, store: LogWriter, router: StoreRouter) {
    while let Ok(mut task) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            task.merge(more);
        }
        write_task(task, &store, &router);
    }
}

fn write_task(task: WriteTask, store: &LogWriter, router: &StoreRouter) {
    let WriteTask {
        batch,
        notify,
        msgs,
    } = task;
    if !batch.is_empty() {
        if let Err(e) = store.log.write(&batch) {
            // Raft's promises rest on this write: without it no peer may go on.
            panic!("log writer: the log engine failed a synced write: {e}");
        }
        let m = &store.metrics;
        StoreMetrics::add(&m.fsyncs, 1);
        StoreMetrics::add(&m.regions_per_fsync_sum, batch.region_count() as u64);
        StoreMetrics::add(&m.entries_per_fsync_sum, batch.entry_count() as u64);
    }
    if !msgs.is_empty() {
        send_counted(store.transport.as_ref(), &store.metrics, msgs);
    }
    let mut highest: HashMap<u64, u64> = HashMap::with_capacity(notify.len());
    for (region, number) in notify {
        let n = highest.entry(region).or_default();
        *n = (*n).max(number);
    }
    for (region, number) in highest {
        let _ = router.send(region, PeerMsg::Persisted { number });
    }
}
