//! Automatic split by size: a worker thread that measures regions for their leaders.
//!
//! Every `split-check-interval` (a per-peer tick of the store ticker, never per
//! write), a leader whose applied index moved since its last check sends a
//! [`CheckTask`]. The worker measures the region and answers with a
//! [`CheckResult`]; when the region holds more than `region-max-size` bytes or
//! `region-max-keys` keys, the result names a split key near the middle (by bytes,
//! or by keys when only the key limit is exceeded) and the leader proposes the split.
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

use crossbeam_channel::Receiver;
use shoal_engine::keys::{data_end_key, data_key, origin_key};
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvEngine, KvRead};
use shoal_proto::metapb::Region;

use crate::fsm::StoreRouter;
use crate::msg::PeerMsg;

/// A leader asks for its region to be measured.
pub struct CheckTask {
    /// The region as the leader knows it.
    pub region: Region,
    /// The leader's applied index when it asked.
    pub applied_index: u64,
    /// The result of the last scan, if any.
    pub previous: Option<CheckResult>,
}

/// What the worker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The region's epoch version the result belongs to.
    pub version: u64,
    /// The applied index the figures are from (the last scan's when skipped).
    pub applied_index: u64,
    /// RocksDB's estimate of the region's SST size at that scan.
    pub sst_size: u64,
    /// Bytes of keys and values seen (up to just past a limit).
    pub size: u64,
    /// Keys seen (up to just past a limit).
    pub keys: u64,
    /// Where to split, when a limit is exceeded.
    pub split_key: Option<Vec<u8>>,
}

/// The limits a region is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `region-max-size`.
    pub max_size: u64,
    /// `region-max-keys`.
    pub max_keys: u64,
}

/// The worker's loop; returns when every sender is gone.
pub fn run(rx: Receiver<CheckTask>, kv: RocksKvEngine, router: StoreRouter, limits: Limits) {
    while let Ok(task) = rx.recv() {
        let id = task.region.id;
        match check(&kv, &task, limits) {
            Ok(result) => {
                let _ = router.send(id, PeerMsg::SplitCheckResult(result));
            }
            Err(e) => tracing::warn!(region = id, "split check failed: {e}"),
        }
    }
}

/// Measures `task.region` and picks a split key if it is over a limit.
pub fn check(
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

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_engine::KvBatch;
    use shoal_proto::metapb::RegionEpoch;

    fn region() -> Region {
        Region {
            id: 1,
            start_key: b"a".to_vec(),
            end_key: b"z".to_vec(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 4,
            }),
            peers: vec![],
        }
    }

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
            region: region(),
            applied_index: 9,
            previous: None,
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
            region: region(),
            applied_index: 9 + 12,
            previous: Some(full.clone()),
        };
        assert_eq!(check(&engines.kv, &soon, by_keys).unwrap(), full);
        // An eighth more entries than keys: scanned, and now over the key limit.
        let later = CheckTask {
            applied_index: 9 + 13,
            ..soon
        };
        let r = check(&engines.kv, &later, by_keys).unwrap();
        assert_eq!(
            (r.applied_index, r.split_key.as_deref()),
            (22, Some(&b"k025"[..]))
        );
    }
}
