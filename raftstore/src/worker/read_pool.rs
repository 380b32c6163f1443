//! The read pool: threads that run the reads too long for a poller (scans, region
//! checksums) on a kv snapshot the peer took once the read was safe to serve.
//!
//! Pollers never scan: a scan may read up to 10,000 pairs of up to 1 MiB, and every
//! other region of the poll round would wait behind it. The peer confirms the read
//! (ReadIndex, applied index reached, epoch re-checked), takes a kv snapshot (no IO,
//! a sequence number), and hands the work here. The queue is bounded: when it is
//! full the read is refused at once with `ServerIsBusy`, so a burst of scans costs
//! bounded memory.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::StartError;

/// One piece of work for the pool. It is called exactly once: with `true` on a
/// pool thread, or with `false` on the caller's thread when the pool cannot take
/// it (full or stopped), so that it answers its requester with a retryable error.
pub(crate) type ReadJob = Box<dyn FnOnce(bool) + Send>;

/// The sending side of the pool.
#[derive(Clone)]
pub(crate) struct ReadPool {
    tx: Sender<ReadJob>,
}

impl ReadPool {
    /// Starts `threads` workers named `name-N` sharing a queue of `capacity` jobs.
    pub(crate) fn start(
        name: &str,
        threads: usize,
        capacity: usize,
    ) -> Result<(ReadPool, Vec<JoinHandle<()>>), StartError> {
        let (tx, rx) = crossbeam_channel::bounded::<ReadJob>(capacity);
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx: Receiver<ReadJob> = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job(true);
                    }
                })
                .map_err(|source| StartError::Thread {
                    name: format!("{name}-{i}"),
                    source,
                })?;
            handles.push(h);
        }
        Ok((ReadPool { tx }, handles))
    }

    /// Queues `job`; when the queue is full or the pool stopped, calls `job(false)`
    /// at once and returns false.
    pub(crate) fn spawn(&self, job: ReadJob) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(j) | TrySendError::Disconnected(j)) => {
                j(false);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_at_once() {
        let (pool, handles) = ReadPool::start("test-read", 1, 1).unwrap();
        let (block_tx, block_rx) = crossbeam_channel::bounded::<()>(0);
        let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
        // The worker takes the first job and blocks in it; the second fills the queue.
        assert!(pool.spawn(Box::new(move |run| {
            assert!(run);
            started_tx.send(()).unwrap();
            block_rx.recv().unwrap();
        })));
        started_rx.recv().unwrap();
        assert!(pool.spawn(Box::new(|run| assert!(run))));
        let (refused_tx, refused_rx) = crossbeam_channel::bounded::<bool>(1);
        assert!(!pool.spawn(Box::new(move |run| refused_tx.send(run).unwrap())));
        assert!(
            !refused_rx.recv().unwrap(),
            "refused on the caller's thread"
        );
        block_tx.send(()).unwrap();
        drop(pool);
        for h in handles {
            h.join().unwrap();
        }
    }
}
