//! Loading a store's regions at start-up: every region whose kv meta says it is
//! live (normal, or a frozen merge source), with its apply state and its raft state
//! from the log.

use shoal_engine::keys::{apply_state_key, decode_region_meta_key, region_meta_range};
use shoal_engine::{Cf, KvRead, LogEngine};
use shoal_proto::raft_serverpb::{PeerState, RaftApplyState, RegionLocalState};
use shoal_proto::Message as _;

use crate::error::StartError;
use crate::operation::life::PeerStart;
use crate::store::bootstrap::INIT_INDEX;
use crate::store::ranges::Tombstone;
use shoal_proto::RegionExt;

/// Every live region of this store, ready to start.
pub(crate) fn load_regions(
    kv: &impl KvRead,
    log: &dyn LogEngine,
) -> Result<Vec<PeerStart>, StartError> {
    let mut out = Vec::new();
    for state in region_states(kv)? {
        // Tombstones (merged away) stay down; a frozen merge source comes back
        // frozen and its leader drives the merge on.
        let merging = state.state == PeerState::Merging as i32;
        if state.state != PeerState::Normal as i32 && !merging {
            continue;
        }
        let region = state.region.unwrap_or_default();
        let id = region.id;
        let apply = kv
            .get(Cf::Meta, &apply_state_key(id))?
            .ok_or_else(|| StartError::Corrupt(format!("region {id} has no apply state")))?;
        let apply_state = RaftApplyState::decode(apply.as_slice())
            .map_err(|e| StartError::Corrupt(format!("region {id} apply state: {e}")))?;
        let raft_state = log.raft_state(id)?;
        // Only a region split off just before a crash (its first ready never ran)
        // may lack a raft state; it starts from the initial one.
        if raft_state.is_none() && apply_state.applied_index != INIT_INDEX {
            return Err(StartError::Corrupt(format!(
                "region {id} has no raft state in the log engine"
            )));
        }
        out.push(PeerStart {
            region,
            raft_state,
            apply_state,
            merging: state.merge_state.filter(|_| merging),
        });
    }
    Ok(out)
}

/// The regions whose kv meta says merged away (tombstone) but whose raft log is
/// still in the log engine: a crash came between the synced tombstone and the
/// log's removal. (A log without any region state is kept: it may belong to a
/// split peer whose split a power loss took back, `operation/split.rs`.)
pub(crate) fn orphaned_logs(kv: &impl KvRead, log: &dyn LogEngine) -> Result<Vec<u64>, StartError> {
    let tombstones: std::collections::HashSet<u64> = tombstones(&region_states(kv)?, 0)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let logs = log.regions()?;
    Ok(logs
        .into_iter()
        .filter(|id| tombstones.contains(id))
        .collect())
}

/// The regions merged away or removed on store `store_id`, with their
/// tombstones: the recorded region's `conf_ver`, and this store's peer in it (a
/// replica that learned of its removal records the region as it knew it; one
/// that applied its removal, the region without it).
pub(crate) fn tombstones(states: &[RegionLocalState], store_id: u64) -> Vec<(u64, Tombstone)> {
    states
        .iter()
        .filter(|s| s.state == PeerState::Tombstone as i32)
        .filter_map(|s| s.region.as_ref())
        .map(|r| {
            let t = Tombstone {
                conf_ver: r.region_epoch.unwrap_or_default().conf_ver,
                peer_id: r.peer_on_store(store_id).map_or(0, |p| p.id),
            };
            (r.id, t)
        })
        .collect()
}

/// Every region state record in `kv/` meta.
pub(crate) fn region_states(kv: &impl KvRead) -> Result<Vec<RegionLocalState>, StartError> {
    let (start, end) = region_meta_range();
    let mut states = Vec::new();
    let mut err = None;
    kv.for_each(Cf::Meta, &start, &end, &mut |k, v| {
        if let Some((_, true)) = decode_region_meta_key(k) {
            match RegionLocalState::decode(v) {
                Ok(s) => states.push(s),
                Err(e) => {
                    err = Some(StartError::Corrupt(format!("region state record: {e}")));
                    return false;
                }
            }
        }
        true
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(states),
    }
}
