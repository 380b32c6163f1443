//! The region worker: the reads and writes about whole regions that must not run
//! on a poller, on a thread of their own. Its tasks ([`RegionTask`]):
//! - **split checks**: measure a region for its leader and, when it is over a
//!   limit, pick a split key and allocate the split's ids (a synced write);
//! - **merge targets**: check whether a merge's target was tombstoned (merged
//!   away itself), in which case the source must roll back.
//!
//! It also holds the region [`checksum`], run on the read pool. Results go back to
//! the peers through the `report` closure the store wires to the router.
//!
//! Split checks (automatic split by size): every `split-check-interval` (a per-peer
//! tick of the store ticker, never per write), a leader whose applied index moved
//! since its last check sends a [`CheckTask`]. When the region holds more than
//! `region-max-size` bytes or `region-max-keys` keys, the result names a split key
//! near the middle (by bytes, or by keys when only the key limit is exceeded) and
//! the leader proposes the split.
//!
//! Measuring scans the region's data, at most up to the limits, and only when the
//! region may have grown enough to matter since its last scan:
//! - a region that took no writes since its last check is not measured again;
//! - nor one whose applied entries since the last scan are fewer than an eighth of
//!   the keys it then held (at least 8), and whose SST size (RocksDB's estimate)
//!   grew by less than a sixteenth of `region-max-size`.
//!
//! So a region is scanned about once per 12% growth, not at every check. A scan stops
//! as soon as a limit is passed and splits at the key where half of that limit was
//! reached (the middle of a region just over the limit; a much larger region is
//! split again by the following checks).

use std::sync::Arc;

use crossbeam_channel::Receiver;
use shoal_engine::keys::{apply_state_key, data_end_key, data_key, origin_key, region_state_key};
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvEngine, KvRead};
use shoal_proto::adminpb::ChecksumResponse;
use shoal_proto::metapb::Region;
use shoal_proto::raft_serverpb::{PeerState, RaftApplyState, RegionLocalState};
use shoal_proto::Message as _;

use crate::error::{region_not_found, CmdError};
use crate::store::ids::IdAllocator;

/// Work for the region worker.
pub(crate) enum RegionTask {
    /// Measure a region (and allocate ids for its split if it is over a limit).
    SplitCheck(Box<CheckTask>),
    /// The source `source_id` could not reach its merge target `target_id` on this
    /// store: if the target was merged away (tombstoned), the merge prepared at
    /// `commit` can never commit.
    MergeTargetGone {
        /// The merge source.
        source_id: u64,
        /// The target it could not reach.
        target_id: u64,
        /// The prepare index.
        commit: u64,
    },
}

/// What the region worker tells a peer.
pub(crate) enum RegionEvent {
    /// The split check's result.
    Measured(CheckResult),
    /// The merge prepared at `commit` must roll back: its target is gone.
    RollBackMerge {
        /// The prepare index.
        commit: u64,
    },
}

/// A leader asks for its region to be measured.
pub(crate) struct CheckTask {
    /// The region as the leader knows it.
    pub(crate) region: Region,
    /// The leader's applied index when it asked.
    pub(crate) applied_index: u64,
    /// The result of the last scan, if any.
    pub(crate) previous: Option<CheckResult>,
    /// The leader's span, entered while the region is measured.
    pub(crate) span: tracing::Span,
}

/// What the worker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckResult {
    /// The region's epoch version the result belongs to.
    pub(crate) version: u64,
    /// The applied index the figures are from (the last scan's when skipped).
    pub(crate) applied_index: u64,
    /// RocksDB's estimate of the region's SST size at that scan.
    pub(crate) sst_size: u64,
    /// Bytes of keys and values seen (up to just past a limit).
    pub(crate) size: u64,
    /// Keys seen (up to just past a limit).
    pub(crate) keys: u64,
    /// Where to split, when a limit is exceeded.
    pub(crate) split_key: Option<Vec<u8>>,
    /// Ids for the split's new region and its peers (one region id, then one peer
    /// id per peer), allocated here when a split key was found: the allocator's
    /// synced write stays off the poller.
    pub(crate) split_ids: Vec<u64>,
}

/// The limits a region is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `region-max-size`.
    pub(crate) max_size: u64,
    /// `region-max-keys`.
    pub(crate) max_keys: u64,
}

/// The region worker's parts.
pub(crate) struct RegionWorker<R> {
    pub(crate) kv: RocksKvEngine,
    pub(crate) ids: Arc<IdAllocator>,
    pub(crate) limits: Limits,
    /// Delivers an event to a region's peer.
    pub(crate) report: R,
}

impl<R: Fn(u64, RegionEvent)> RegionWorker<R> {
    /// The worker's loop; returns when every sender is gone.
    pub(crate) fn run(self, rx: Receiver<RegionTask>) {
        while let Ok(task) = rx.recv() {
            match task {
                RegionTask::SplitCheck(t) => self.split_check(*t),
                RegionTask::MergeTargetGone {
                    source_id,
                    target_id,
                    commit,
                } => {
                    if local_state(&self.kv, target_id) == Some(PeerState::Tombstone) {
                        (self.report)(source_id, RegionEvent::RollBackMerge { commit });
                    }
                }
            }
        }
    }

    fn split_check(&self, task: CheckTask) {
        let _entered = task.span.enter();
        let id = task.region.id;
        let mut result = match check(&self.kv, &task, self.limits) {
            Ok(r) => r,
            Err(e) => return tracing::warn!(region = id, "split check failed: {e}"),
        };
        if result.split_key.is_some() {
            match self.ids.alloc(1 + task.region.peers.len()) {
                Ok(ids) => result.split_ids = ids,
                Err(e) => {
                    tracing::warn!(region = id, "no ids for an automatic split: {e}");
                    result.split_key = None;
                }
            }
        }
        (self.report)(id, RegionEvent::Measured(result));
    }
}

/// The state this store's kv records for `region_id`, if any.
pub(crate) fn local_state(kv: &impl KvRead, region_id: u64) -> Option<PeerState> {
    kv.get(Cf::Meta, &region_state_key(region_id))
        .ok()
        .flatten()
        .and_then(|v| RegionLocalState::decode(v.as_slice()).ok())
        .and_then(|s| PeerState::try_from(s.state).ok())
}

/// Measures `task.region` and picks a split key if it is over a limit.
fn check(
    kv: &RocksKvEngine,
    task: &CheckTask,
    limits: Limits,
) -> Result<CheckResult, shoal_engine::Error> {
    let region = &task.region;
    let (start, end) = (data_key(&region.start_key), data_end_key(&region.end_key));
    let sst_size = kv.approximate_size(Cf::Default, &start, &end)?;
    if let Some(p) = &task.previous {
        let entries = task.applied_index.saturating_sub(p.applied_index);
        let grown = sst_size.saturating_sub(p.sst_size);
        if entries.saturating_mul(8) < p.keys.max(8) && grown < limits.max_size / 16 {
            return Ok(CheckResult {
                split_key: None,
                split_ids: Vec::new(),
                ..p.clone()
            });
        }
    }
    let mut result = CheckResult {
        version: region.region_epoch.unwrap_or_default().version,
        applied_index: task.applied_index,
        sst_size,
        size: 0,
        keys: 0,
        split_key: None,
        split_ids: Vec::new(),
    };
    let snap = kv.snapshot();
    let (mut size, mut keys) = (0u64, 0u64);
    let (mut half_size, mut half_keys): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    let mut split = None;
    snap.for_each(Cf::Default, &start, &end, &mut |k, v| {
        let key = origin_key(k);
        // A split key must be past the region's start.
        if key != region.start_key.as_slice() {
            if half_size.is_none() && size >= limits.max_size / 2 {
                half_size = Some(key.to_vec());
            }
            if half_keys.is_none() && keys >= limits.max_keys / 2 {
                half_keys = Some(key.to_vec());
            }
        }
        size += (k.len() + v.len()) as u64;
        keys += 1;
        if size > limits.max_size {
            split = half_size.clone();
        } else if keys > limits.max_keys {
            split = half_keys.clone();
        }
        split.is_none()
    })?;
    result.size = size;
    result.keys = keys;
    result.split_key = split;
    Ok(result)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`, continuing from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The digest of region `region_id` as persisted on this store (taken on a kv
/// snapshot, so the digest and the applied index it reports belong together: two
/// replicas at the same applied index must have the same digest): its range from the
/// region state, then every pair in it (lengths included, so that pairs cannot run
/// into each other).
pub(crate) fn checksum(kv: &RocksKvEngine, region_id: u64) -> Result<ChecksumResponse, CmdError> {
    let storage = |e: shoal_engine::Error| CmdError::Storage(e.to_string());
    let snap = kv.snapshot();
    let state = snap
        .get(Cf::Meta, &region_state_key(region_id))
        .map_err(storage)?
        .ok_or_else(|| region_not_found(region_id))?;
    let region = RegionLocalState::decode(state.as_slice())
        .map_err(|e| CmdError::Storage(format!("region state: {e}")))?
        .region
        .unwrap_or_default();
    let apply = snap
        .get(Cf::Meta, &apply_state_key(region_id))
        .map_err(storage)?
        .map(|v| RaftApplyState::decode(v.as_slice()))
        .transpose()
        .map_err(|e| CmdError::Storage(format!("apply state: {e}")))?
        .unwrap_or_default();
    let (mut h, mut keys) = (FNV_OFFSET, 0u64);
    let (start, end) = (data_key(&region.start_key), data_end_key(&region.end_key));
    snap.for_each(Cf::Default, &start, &end, &mut |k, v| {
        h = fnv(h, &(k.len() as u64).to_be_bytes());
        h = fnv(h, k);
        h = fnv(h, &(v.len() as u64).to_be_bytes());
        h = fnv(h, v);
        keys += 1;
        true
    })
    .map_err(storage)?;
    Ok(ChecksumResponse {
        region_error: None,
        region: Some(region),
        applied_index: apply.applied_index,
        checksum: h,
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::region;
    use shoal_engine::KvBatch;

    #[test]
    fn a_region_over_a_limit_is_split_near_its_middle() {
        let dir = tempfile::tempdir().unwrap();
        let engines = shoal_engine::rocks::Engines::open(dir.path()).unwrap();
        let mut b = KvBatch::new();
        for i in 0..100u32 {
            b.put(
                Cf::Default,
                data_key(format!("k{i:03}").as_bytes()),
                vec![0; 100],
            );
        }
        // Outside the region: must not be counted.
        b.put(Cf::Default, data_key(b"zz"), vec![0; 10_000]);
        engines.kv.write(&b).unwrap();
        let task = CheckTask {
            region: region(1, b"a", b"z", 4, &[]),
            applied_index: 9,
            previous: None,
            span: tracing::Span::none(),
        };
        let roomy = Limits {
            max_size: 1 << 20,
            max_keys: 1000,
        };
        let r = check(&engines.kv, &task, roomy).unwrap();
        assert_eq!((r.keys, r.split_key.clone()), (100, None));
        assert_eq!(r.size, 100 * (5 + 100));
        // Over a limit: the scan stops early and splits where half the limit was.
        assert_eq!(r.version, 4);
        let by_keys = Limits {
            max_size: 1 << 20,
            max_keys: 50,
        };
        let r = check(&engines.kv, &task, by_keys).unwrap();
        assert_eq!(r.split_key.as_deref(), Some(&b"k025"[..]));
        assert_eq!(r.keys, 51);
        let by_size = Limits {
            max_size: 5_000,
            max_keys: 1000,
        };
        let r = check(&engines.kv, &task, by_size).unwrap();
        // 105 bytes a pair: 2,500 bytes are passed at the 24th key (index 23).
        assert_eq!(r.split_key.as_deref(), Some(&b"k024"[..]));
        assert!(r.size > 5_000 && r.size <= 5_000 + 105, "{}", r.size);

        // Few entries since a scan that found 100 keys: not scanned again.
        let full = check(&engines.kv, &task, roomy).unwrap();
        let soon = CheckTask {
            region: region(1, b"a", b"z", 4, &[]),
            applied_index: 9 + 12,
            previous: Some(full.clone()),
            span: tracing::Span::none(),
        };
        assert_eq!(check(&engines.kv, &soon, by_keys).unwrap(), full);
        // An eighth more entries than keys: scanned, and now over the key limit.
        let later = CheckTask {
            applied_index: 9 + 13,
            span: tracing::Span::none(),
            ..soon
        };
        let r = check(&engines.kv, &later, by_keys).unwrap();
        assert_eq!(
            (r.applied_index, r.split_key.as_deref()),
            (22, Some(&b"k025"[..]))
        );
    }

    #[test]
    fn fnv_matches_the_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv(super::FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(super::FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(super::FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }
}
