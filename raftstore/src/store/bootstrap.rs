//! First boot of a cluster: every initial store writes the same initial regions.
//!
//! The layout is a pure function of the initial store ids and the region count, so
//! the stores agree without talking: region `i` (ids `1..=K`) covers
//! `[split[i-1], split[i])` where the split keys are `K-1` evenly spaced two-byte
//! prefixes (`i * 65536 / K`, big-endian; three bytes, `i * 2^24 / K`, past 65,536
//! regions); each region has a voter on every initial
//! store, with peer id `K + (i - 1) * N + j + 1` for the `j`-th store (by id) of `N`.
//! Every replica starts at index/term 5 ([`INIT_INDEX`]), as if from one snapshot.
//!
//! A store that finds its identity record already in `kv/` is not bootstrapped
//! again: restarts ignore the bootstrap settings.
//!
//! The initial raft and apply states ([`initial_raft_state`], [`initial_apply_state`])
//! are defined here once: bootstrap writes them, a split's new regions start from
//! them, and loading synthesizes the raft state of a region split off just before
//! a crash from them.

use shoal_engine::keys::{apply_state_key, data_key, region_state_key, store_key};
use shoal_engine::rocks::Engines;
use shoal_engine::{Cf, KvBatch, KvEngine, KvRead, LogBatch, LogEngine};
use shoal_proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
use shoal_proto::raft_serverpb::{
    ClusterMembership, HardState, PeerState, RaftApplyState, RaftLocalState, RegionLocalState,
    StoreIdent,
};
use shoal_proto::Message;

use crate::error::StartError;

/// Index and term every bootstrapped region starts from (as if a snapshot at 5/5
/// was applied), so that all initial peers agree on a non-empty state. Regions made
/// by a split start there too.
pub(crate) const INIT_INDEX: u64 = 5;
/// See [`INIT_INDEX`].
pub(crate) const INIT_TERM: u64 = 5;

/// The raft state of a region created by bootstrap or a split.
pub(crate) fn initial_raft_state() -> RaftLocalState {
    RaftLocalState {
        hard_state: Some(HardState {
            term: INIT_TERM,
            vote: 0,
            commit: INIT_INDEX,
        }),
        last_index: INIT_INDEX,
    }
}

/// The apply state of a region created by bootstrap or a split.
pub(crate) fn initial_apply_state() -> RaftApplyState {
    RaftApplyState {
        applied_index: INIT_INDEX,
        truncated_index: INIT_INDEX,
        truncated_term: INIT_TERM,
        commit_index: INIT_INDEX,
        commit_term: INIT_TERM,
    }
}

/// Most initial regions (the split keys are two bytes up to 65,536 regions,
/// three bytes past that).
pub const MAX_INITIAL_REGIONS: usize = 1 << 20;

const IDENT_KEY: &str = "ident";
const MEMBERSHIP_KEY: &str = "membership";

/// The evenly spaced split keys of `k` initial regions.
pub fn split_keys(k: usize) -> Vec<Vec<u8>> {
    if k > 65536 {
        // Three-byte prefixes: `i * 2^24 / K`, big-endian.
        return (1..k)
            .map(|i| ((i as u64) * (1 << 24) / k as u64).to_be_bytes()[5..].to_vec())
            .collect();
    }
    (1..k)
        .map(|i| {
            (((i as u64) * 65536 / k as u64) as u16)
                .to_be_bytes()
                .to_vec()
        })
        .collect()
}

/// The initial regions of a cluster of `store_ids` with `k` regions.
pub fn initial_regions(store_ids: &[u64], k: usize) -> Vec<Region> {
    let mut stores = store_ids.to_vec();
    stores.sort_unstable();
    let n = stores.len() as u64;
    let keys = split_keys(k);
    (0..k)
        .map(|i| {
            let id = i as u64 + 1;
            Region {
                id,
                start_key: if i == 0 {
                    Vec::new()
                } else {
                    keys[i - 1].clone()
                },
                end_key: keys.get(i).cloned().unwrap_or_default(),
                region_epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version: 1,
                }),
                peers: stores
                    .iter()
                    .enumerate()
                    .map(|(j, &store_id)| Peer {
                        id: k as u64 + (id - 1) * n + j as u64 + 1,
                        store_id,
                        role: PeerRole::Voter as i32,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The identity and membership a store was bootstrapped with, if it was.
pub fn load_ident(engines: &Engines) -> Result<Option<(StoreIdent, Vec<Store>)>, StartError> {
    let kv = &engines.kv;
    let Some(ident) = kv.get(Cf::Meta, &store_key(IDENT_KEY))? else {
        return Ok(None);
    };
    let ident = StoreIdent::decode(ident.as_slice())
        .map_err(|e| StartError::Corrupt(format!("store identity record: {e}")))?;
    let membership = match kv.get(Cf::Meta, &store_key(MEMBERSHIP_KEY))? {
        Some(m) => {
            ClusterMembership::decode(m.as_slice())
                .map_err(|e| StartError::Corrupt(format!("membership record: {e}")))?
                .stores
        }
        None => Vec::new(),
    };
    Ok(Some((ident, membership)))
}

/// Writes the initial state of store `store_id` of the cluster `stores` with
/// `regions` initial regions, unless the store was bootstrapped before. Returns the
/// membership to use, and whether this call bootstrapped.
pub fn bootstrap(
    engines: &Engines,
    store_id: u64,
    stores: &[Store],
    regions: usize,
) -> Result<(Vec<Store>, bool), StartError> {
    bootstrap_with_data(engines, store_id, stores, regions, &[])
}

/// [`bootstrap`], with `data` (user keys and values) in the initial regions: part
/// of their initial state, written by every initial store alike in the same
/// batch as the rest (the server puts the cluster directory there).
pub fn bootstrap_with_data(
    engines: &Engines,
    store_id: u64,
    stores: &[Store],
    regions: usize,
    data: &[(Vec<u8>, Vec<u8>)],
) -> Result<(Vec<Store>, bool), StartError> {
    if let Some((ident, membership)) = load_ident(engines)? {
        if ident.store_id != store_id {
            return Err(StartError::Identity(format!(
                "this data directory belongs to store {}, not store {store_id}",
                ident.store_id
            )));
        }
        return Ok((membership, false));
    }
    if regions == 0 || regions > MAX_INITIAL_REGIONS {
        return Err(StartError::Config(crate::error::ConfigError(format!(
            "initial regions must be 1..={MAX_INITIAL_REGIONS}, got {regions}"
        ))));
    }
    if !stores.iter().any(|s| s.id == store_id) {
        return Err(StartError::Identity(format!(
            "store {store_id} is not in the initial cluster"
        )));
    }
    let ids: Vec<u64> = stores.iter().map(|s| s.id).collect();
    let layout = initial_regions(&ids, regions);
    // The log first: a crash before the identity record is written leaves a store
    // that bootstraps again, writing the same deterministic state.
    let mut log_batch = LogBatch::new();
    let mut kv_batch = KvBatch::new();
    for region in layout {
        log_batch.add(region.id, Vec::new(), Some(initial_raft_state()));
        let apply = initial_apply_state();
        kv_batch.put(Cf::Meta, apply_state_key(region.id), apply.encode_to_vec());
        let state = RegionLocalState {
            state: PeerState::Normal as i32,
            region: Some(region.clone()),
            merge_state: None,
        };
        kv_batch.put(Cf::Meta, region_state_key(region.id), state.encode_to_vec());
    }
    engines.log.write(&log_batch)?;
    for (k, v) in data {
        kv_batch.put(Cf::Default, data_key(k), v.clone());
    }
    write_ident(engines, kv_batch, store_id, stores)?;
    Ok((stores.to_vec(), true))
}

/// Adds the store list to `batch` (the cache of the cluster directory a store
/// reads at start-up to find the others).
fn put_membership(batch: &mut KvBatch, stores: &[Store]) {
    let membership = ClusterMembership {
        stores: stores.to_vec(),
    };
    batch.put(
        Cf::Meta,
        store_key(MEMBERSHIP_KEY),
        membership.encode_to_vec(),
    );
}

/// Writes `batch` with the store list and, last in the same write, the identity
/// record that makes the store bootstrapped; synced.
fn write_ident(
    engines: &Engines,
    mut batch: KvBatch,
    store_id: u64,
    stores: &[Store],
) -> Result<(), StartError> {
    put_membership(&mut batch, stores);
    let ident = StoreIdent {
        cluster_id: 0,
        store_id,
    };
    batch.put(Cf::Meta, store_key(IDENT_KEY), ident.encode_to_vec());
    engines.kv.write(&batch)?;
    engines.kv.sync()?;
    Ok(())
}

/// Records `stores` as the cluster's stores as this store last knew them (its
/// cache of the cluster directory, read at start-up to find the others), synced.
pub fn save_membership(engines: &Engines, stores: &[Store]) -> Result<(), StartError> {
    let mut batch = KvBatch::new();
    put_membership(&mut batch, stores);
    engines.kv.write(&batch)?;
    engines.kv.sync()?;
    Ok(())
}

/// Writes the identity of store `store_id` joining a running cluster whose
/// stores are `stores` (as the cluster's directory lists them): no region; the
/// store gets its replicas from the regions that add it. A store bootstrapped or
/// joined before is left as it is (a different id is refused). Returns whether
/// this call wrote the identity.
pub fn join(engines: &Engines, store_id: u64, stores: &[Store]) -> Result<bool, StartError> {
    if let Some((ident, _)) = load_ident(engines)? {
        if ident.store_id != store_id {
            return Err(StartError::Identity(format!(
                "this data directory belongs to store {}, not store {store_id}",
                ident.store_id
            )));
        }
        return Ok(false);
    }
    write_ident(engines, KvBatch::new(), store_id, stores)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_65536_regions_the_split_keys_take_three_bytes_and_still_ascend() {
        for k in [65536, 65537, 100_000, MAX_INITIAL_REGIONS] {
            let keys = split_keys(k);
            assert_eq!(keys.len(), k - 1);
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "k = {k}");
            assert_eq!(keys[0].len(), if k > 65536 { 3 } else { 2 });
        }
    }

    #[test]
    fn regions_cover_the_key_space_without_gaps() {
        for k in [1, 2, 3, 16, 1000] {
            let regions = initial_regions(&[3, 1, 2], k);
            assert_eq!(regions.len(), k);
            assert!(regions[0].start_key.is_empty());
            assert!(regions[k - 1].end_key.is_empty());
            for w in regions.windows(2) {
                assert_eq!(w[0].end_key, w[1].start_key);
                assert!(w[0].start_key < w[0].end_key || w[0].start_key.is_empty());
            }
        }
    }

    #[test]
    fn peer_ids_are_unique_and_stores_agree() {
        let a = initial_regions(&[1, 2, 3], 16);
        let b = initial_regions(&[3, 2, 1], 16);
        assert_eq!(
            a, b,
            "the layout does not depend on the order stores are given in"
        );
        let mut ids: Vec<u64> = a
            .iter()
            .flat_map(|r| r.peers.iter().map(|p| p.id))
            .collect();
        ids.extend(a.iter().map(|r| r.id));
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
