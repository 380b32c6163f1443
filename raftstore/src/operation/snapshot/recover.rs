//! Start-up after a crash in the middle of a snapshot (see `apply.rs` for the
//! order of durability), before any peer is loaded:
//! - a region left `APPLYING` is applied again from its received files (cleared,
//!   ingested, `NORMAL`); those files were synced before the snapshot was
//!   stepped and stay until the region is `NORMAL`, so they must be there;
//! - a region whose log ends before its truncated index never got the snapshot's
//!   log write: its log is replaced now (no entries, the raft state at the
//!   snapshot), as that write would have;
//! - every other snapshot file goes (generated ones are made again on demand,
//!   received ones sent again).

use std::path::Path;

use shoal_engine::keys::{apply_state_key, data_end_key, data_key};
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvBatch, KvEngine, KvRead, LogBatch, LogEngine};
use shoal_proto::raft_serverpb::{
    HardState, PeerState, RaftApplyState, RaftLocalState, RegionLocalState,
};
use shoal_proto::Message as _;

use crate::error::StartError;
use crate::metrics::StoreMetrics;
use crate::operation::snapshot::apply::ingest_and_finish;
use crate::operation::snapshot::SnapKey;
use crate::store::bootstrap::INIT_INDEX;
use crate::worker::snap_gen::remove_dir;

/// Finishes what a crash interrupted; see the module docs.
pub(crate) fn recover(
    kv: &RocksKvEngine,
    log: &dyn LogEngine,
    metrics: &StoreMetrics,
    root: Option<&Path>,
    states: &[RegionLocalState],
) -> Result<(), StartError> {
    for state in states {
        let region = state.region.clone().unwrap_or_default();
        let live =
            state.state == PeerState::Normal as i32 || state.state == PeerState::Merging as i32;
        let applying = state.state == PeerState::Applying as i32;
        if !live && !applying {
            continue;
        }
        let apply = apply_state(kv, region.id)?;
        if applying {
            let key = SnapKey {
                region_id: region.id,
                term: apply.truncated_term,
                index: apply.truncated_index,
            };
            let root = root.ok_or_else(|| {
                StartError::Corrupt(format!(
                    "region {} is applying a snapshot and this store has no snapshot directory",
                    region.id
                ))
            })?;
            // Every received copy is whole (renamed only once checked and synced)
            // and the same: any of them will do.
            let dir = received_copy(root, &key);
            if !dir.is_dir() {
                return Err(StartError::Corrupt(format!(
                    "region {} is applying a snapshot whose files are gone ({})",
                    region.id,
                    dir.display()
                )));
            }
            tracing::info!(
                region = region.id,
                index = key.index,
                "applying again a snapshot a crash interrupted"
            );
            let mut clear = KvBatch::new();
            clear.delete_range(
                Cf::Default,
                data_key(&region.start_key),
                data_end_key(&region.end_key),
            );
            kv.write(&clear)?;
            ingest_and_finish(kv, metrics, &region, &dir, None).map_err(StartError::Corrupt)?;
        }
        if apply.truncated_index > INIT_INDEX {
            let raft = log.raft_state(region.id)?;
            if raft.is_none_or(|r| r.last_index < apply.truncated_index) {
                replace_log(log, region.id, raft, &apply)?;
            }
        }
    }
    if let Some(root) = root {
        remove_leftovers(root);
    }
    Ok(())
}

/// A received copy of snapshot `key` under `root` (a path that is no directory
/// when there is none).
fn received_copy(root: &Path, key: &SnapKey) -> std::path::PathBuf {
    let prefix = key.recv_prefix();
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&prefix) && !n.ends_with(".tmp"))
        .map_or_else(|| root.join(prefix), |n| root.join(n))
}

fn apply_state(kv: &RocksKvEngine, region_id: u64) -> Result<RaftApplyState, StartError> {
    let raw = kv
        .get(Cf::Meta, &apply_state_key(region_id))?
        .ok_or_else(|| StartError::Corrupt(format!("region {region_id} has no apply state")))?;
    RaftApplyState::decode(raw.as_slice())
        .map_err(|e| StartError::Corrupt(format!("region {region_id} apply state: {e}")))
}

/// The log write a snapshot's apply did not get to: no entries, the last index at
/// the snapshot, the hard state kept (its term at least the snapshot's).
fn replace_log(
    log: &dyn LogEngine,
    region_id: u64,
    old: Option<RaftLocalState>,
    apply: &RaftApplyState,
) -> Result<(), StartError> {
    let hs = old.and_then(|r| r.hard_state).unwrap_or_default();
    let state = RaftLocalState {
        hard_state: Some(HardState {
            term: hs.term.max(apply.truncated_term),
            vote: hs.vote,
            commit: hs.commit.max(apply.truncated_index),
        }),
        last_index: apply.truncated_index,
    };
    tracing::info!(
        region = region_id,
        index = apply.truncated_index,
        "replacing a log a crash left behind its snapshot"
    );
    let mut batch = LogBatch::new();
    batch.replace(region_id, Vec::new(), Some(state));
    log.write(&batch)?;
    Ok(())
}

/// Removes every snapshot directory (and transfer left half-way) under `root`.
fn remove_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        remove_dir(&e.path());
    }
}
