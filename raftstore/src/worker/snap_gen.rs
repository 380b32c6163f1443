//! The snapshot worker: generates Raft snapshots for leaders and removes
//! snapshot files nobody holds any more, on a thread of its own (a region's data
//! can take seconds to write; no poller and no other worker waits on it).
//!
//! Generating (`operation/snapshot/mod.rs` has the whole flow): a kv snapshot of
//! the region, its region and apply state read from that same snapshot (so the
//! data is exactly as of the applied index, which becomes the snapshot's index),
//! the term of that index, and the region's data as SST files with their sizes
//! and checksums. A region that is not in the `NORMAL` state (a frozen merge
//! source, a snapshot being applied) is refused: its leader asks again later.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use raft::eraftpb::Snapshot;
use shoal_engine::keys::{apply_state_key, data_end_key, data_key, region_state_key};
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvEngine, KvRead, LogEngine};
use shoal_proto::raft_serverpb::{
    PeerState, RaftApplyState, RegionLocalState, SnapshotData, SnapshotFile,
};
use shoal_proto::Message as _;

use crate::metrics::StoreMetrics;
use crate::operation::snapshot::{SnapFiles, SnapKey};
use crate::raft::storage::conf_state_of;

/// Largest SST file of a snapshot, in bytes of keys and values.
const SST_FILE_BYTES: u64 = 64 << 20;

/// Work for the snapshot worker: generate a snapshot of a region this store
/// leads. (Directories to remove come on a queue of their own, which the files
/// handed out hold: see [`SnapFiles`].)
pub(crate) struct SnapTask {
    /// The region.
    pub(crate) region_id: u64,
    /// The asking peer's span, entered while its snapshot is generated.
    pub(crate) span: tracing::Span,
}

/// A snapshot generated for a leader: raft-rs's snapshot (metadata and the
/// encoded [`SnapshotData`]) and its files.
pub(crate) struct Generated {
    /// Its name.
    pub(crate) key: SnapKey,
    /// What raft-rs sends.
    pub(crate) snapshot: Snapshot,
    /// The files, removed once nobody holds them.
    pub(crate) files: Arc<SnapFiles>,
}

/// The worker's parts.
pub(crate) struct SnapWorker<R> {
    pub(crate) kv: RocksKvEngine,
    pub(crate) log: Arc<dyn LogEngine>,
    pub(crate) metrics: Arc<StoreMetrics>,
    /// Where snapshots live (`<data-dir>/snap`).
    pub(crate) root: std::path::PathBuf,
    /// Where the files it hands out send their directory once dropped.
    pub(crate) removals: Sender<std::path::PathBuf>,
    /// Delivers a generation's outcome to the region's peer.
    pub(crate) report: R,
}

impl<R: Fn(u64, Result<Generated, String>)> SnapWorker<R> {
    /// The worker's loop; returns when the store lets go of the task queue
    /// (directories still held then are removed at the next start).
    pub(crate) fn run(self, tasks: Receiver<SnapTask>, removals: Receiver<std::path::PathBuf>) {
        loop {
            crossbeam_channel::select! {
                recv(tasks) -> task => match task {
                    Ok(SnapTask { region_id, span }) => {
                        let _entered = span.enter();
                        self.on_generate(region_id)
                    }
                    Err(_) => break,
                },
                recv(removals) -> dir => {
                    if let Ok(dir) = dir {
                        remove_dir(&dir);
                    }
                }
            }
        }
        for dir in removals.try_iter() {
            remove_dir(&dir);
        }
    }

    fn on_generate(&self, region_id: u64) {
        {
            {
                let started = Instant::now();
                let out = self.generate(region_id);
                let m = &self.metrics;
                match &out {
                    Ok(g) => {
                        StoreMetrics::add(&m.snapshots_generated, 1);
                        StoreMetrics::add(&m.snapshot_generated_bytes, g.files.bytes);
                        let ms = StoreMetrics::add_elapsed(&m.snapshot_generate_seconds, started);
                        tracing::info!(
                            region = region_id,
                            index = g.key.index,
                            bytes = g.files.bytes,
                            files = g.files.files.len(),
                            ms,
                            "generated a raft snapshot"
                        );
                    }
                    Err(e) => {
                        StoreMetrics::add(&m.snapshot_failures, 1);
                        tracing::warn!(region = region_id, "cannot generate a snapshot: {e}");
                    }
                }
                (self.report)(region_id, out);
            }
        }
    }

    fn generate(&self, region_id: u64) -> Result<Generated, String> {
        let snap = self.kv.snapshot();
        let state = snap
            .get(Cf::Meta, &region_state_key(region_id))
            .map_err(|e| e.to_string())?
            .ok_or("no region state")?;
        let state = RegionLocalState::decode(state.as_slice()).map_err(|e| e.to_string())?;
        if state.state != PeerState::Normal as i32 {
            return Err(format!(
                "the region is {:?}, not normal",
                PeerState::try_from(state.state).unwrap_or(PeerState::Normal)
            ));
        }
        let region = state.region.ok_or("the region state has no region")?;
        let apply = snap
            .get(Cf::Meta, &apply_state_key(region_id))
            .map_err(|e| e.to_string())?
            .ok_or("no apply state")?;
        let apply = RaftApplyState::decode(apply.as_slice()).map_err(|e| e.to_string())?;
        let index = apply.applied_index;
        let term = if index == apply.truncated_index {
            apply.truncated_term
        } else {
            self.log
                .term(region_id, index)
                .map_err(|e| format!("term of the applied index {index}: {e}"))?
        };
        let key = SnapKey {
            region_id,
            term,
            index,
        };
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = key.gen_dir(&self.root, n);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let written = self.kv.export_ssts(
            &snap,
            Cf::Default,
            &data_key(&region.start_key),
            &data_end_key(&region.end_key),
            &dir,
            SST_FILE_BYTES,
        );
        let ssts = match written {
            Ok(f) => f,
            Err(e) => {
                remove_dir(&dir);
                return Err(format!("writing the region's data: {e}"));
            }
        };
        let data = SnapshotData {
            files: ssts
                .iter()
                .map(|f| SnapshotFile {
                    size: f.size,
                    checksum: f.checksum,
                    keys: f.keys,
                })
                .collect(),
            region: Some(region.clone()),
        };
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.encode_to_vec().into());
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state_of(&region));
        let files = ssts.into_iter().map(|f| (f.path, f.size)).collect();
        Ok(Generated {
            key,
            snapshot,
            files: Arc::new(SnapFiles::new(dir, files, self.removals.clone())),
        })
    }
}

/// Removes a snapshot directory (logged, not fatal: start-up removes leftovers).
pub(crate) fn remove_dir(dir: &std::path::Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", dir.display()),
    }
}
