//! Region split: checking split keys, deriving the regions a batch split makes,
//! allocating their ids, and starting their peers.
//!
//! The flow (DESIGN.md, "Split"):
//! 1. The admin API asks the parent's leader ([`RaftStore::split`](crate::RaftStore::split)):
//!    ids for the new regions and their peers come from the store's persistent,
//!    store-prefixed [`IdAllocator`], and one `BatchSplitRequest` is proposed.
//! 2. Apply, on every replica, re-checks the epoch (version and conf_ver) and the keys,
//!    then in the same kv batch as the apply state: shrinks the parent to
//!    `[start, key1)`, writes each new region's `RegionLocalState` and initial apply
//!    state. Every resulting region gets the parent's version + number of keys.
//! 3. After the write the parent's peer learns its new range and starts the new
//!    regions' peers on this store ([`start_peer`]); on the parent's leader they
//!    campaign at once.
//!
//! A new region starts like a bootstrapped one, at index/term 5; its raft state is
//! written by its first ready, and a restart before that synthesizes it
//! ([`initial_raft_state`]).
//!
//! Crash safety: the apply batch holding the split is **synced** before the new
//! peers start, so no new peer votes or appends (in the synced log) while the split
//! itself could still be lost. And a peer started by a split whose region already
//! has raft state in the log (the split was applied, then forgotten by a power loss
//! of an older version, or the apply state was rewound) resumes from that state:
//! its hard state never goes backwards.

use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use raft::RawNode;
use shoal_engine::keys::store_key;
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvBatch, KvEngine, KvRead};
use shoal_proto::metapb::{Peer as PeerMeta, Region, RegionEpoch};
use shoal_proto::raft_cmdpb::{BatchSplitRequest, SplitRequest};
use shoal_proto::raft_serverpb::{HardState, MergeState, RaftApplyState, RaftLocalState};

use crate::apply::{ApplyMsg, Registration};
use crate::cmd::peer_on_store;
use crate::fsm::PeerFsm;
use crate::logger::raft_logger;
use crate::msg::{CmdError, PeerMsg, PeerTick};
use crate::peer::Peer;
use crate::poll::StoreContext;
use crate::storage::{PeerStorage, INIT_INDEX, INIT_TERM};

/// Longest key a request may carry, in bytes (the Kv service's limit too).
pub const MAX_KEY_SIZE: usize = 4096;

/// Most split keys one request may carry: each makes a region, created in one apply.
pub const MAX_SPLIT_KEYS: usize = 1000;

/// Checks a split request before anything else: at least one key and at most
/// [`MAX_SPLIT_KEYS`], each non-empty and at most [`MAX_KEY_SIZE`] bytes, in
/// strictly ascending order (unsorted or repeated keys are refused, not fixed up).
pub fn check_split_request(keys: &[Vec<u8>]) -> Result<(), CmdError> {
    if keys.is_empty() {
        return Err(CmdError::Invalid("no split key given".into()));
    }
    if keys.len() > MAX_SPLIT_KEYS {
        return Err(CmdError::Invalid(format!(
            "{} split keys in one request, over the limit of {MAX_SPLIT_KEYS}",
            keys.len()
        )));
    }
    for k in keys {
        if k.len() > MAX_KEY_SIZE {
            return Err(CmdError::Invalid(format!(
                "a split key is {} bytes, over the {MAX_KEY_SIZE}-byte key limit",
                k.len()
            )));
        }
    }
    if keys.windows(2).any(|w| w[0] >= w[1]) {
        return Err(CmdError::Invalid(
            "split keys must be ascending and distinct".into(),
        ));
    }
    Ok(())
}

/// Checks split keys against the region: the request's own limits
/// ([`check_split_request`]), then each key non-empty and strictly inside the range
/// (not its start key).
pub fn check_split_keys(region: &Region, keys: &[Vec<u8>]) -> Result<(), CmdError> {
    check_split_request(keys)?;
    let shown = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    for k in keys {
        if k.is_empty() {
            return Err(CmdError::Invalid(
                "cannot split at the empty key: it always starts the first region".into(),
            ));
        }
        if k.as_slice() == region.start_key.as_slice() {
            return Err(CmdError::Invalid(format!(
                "split key {:?} is region {}'s start key: nothing to split",
                shown(k),
                region.id
            )));
        }
        if !crate::cmd::key_in_region(k, region) {
            return Err(CmdError::Invalid(format!(
                "split key {:?} is outside region {} [{:?}, {:?})",
                shown(k),
                region.id,
                shown(&region.start_key),
                shown(&region.end_key)
            )));
        }
    }
    Ok(())
}

/// The parent (shrunk) and the new regions of `req` applied to `parent`. Fails if the
/// keys do not fit or the ids do not match the parent's peers.
pub fn derive_regions(
    parent: &Region,
    req: &BatchSplitRequest,
) -> Result<(Region, Vec<Region>), CmdError> {
    let keys: Vec<Vec<u8>> = req.requests.iter().map(|r| r.split_key.clone()).collect();
    check_split_keys(parent, &keys)?;
    let epoch = parent.region_epoch.unwrap_or_default();
    let epoch = RegionEpoch {
        conf_ver: epoch.conf_ver,
        version: epoch.version + keys.len() as u64,
    };
    let mut regions = Vec::with_capacity(keys.len());
    for (i, r) in req.requests.iter().enumerate() {
        if r.new_peer_ids.len() != parent.peers.len() || r.new_region_id == 0 {
            return Err(CmdError::Invalid(format!(
                "split request {i} has {} peer ids for {} peers",
                r.new_peer_ids.len(),
                parent.peers.len()
            )));
        }
        let end = keys.get(i + 1).cloned().unwrap_or(parent.end_key.clone());
        regions.push(Region {
            id: r.new_region_id,
            start_key: r.split_key.clone(),
            end_key: end,
            region_epoch: Some(epoch),
            peers: parent
                .peers
                .iter()
                .zip(&r.new_peer_ids)
                .map(|(p, id)| PeerMeta {
                    id: *id,
                    store_id: p.store_id,
                    role: p.role,
                })
                .collect(),
        });
    }
    let mut shrunk = parent.clone();
    shrunk.end_key = keys[0].clone();
    shrunk.region_epoch = Some(epoch);
    Ok((shrunk, regions))
}

/// Builds the batch split of `region` at `keys` with ids from `ids` (one region id,
/// then one peer id per parent peer, per key).
pub fn build_batch_split(region: &Region, keys: &[Vec<u8>], ids: &[u64]) -> BatchSplitRequest {
    let per = 1 + region.peers.len();
    BatchSplitRequest {
        requests: keys
            .iter()
            .enumerate()
            .map(|(i, k)| SplitRequest {
                split_key: k.clone(),
                new_region_id: ids[i * per],
                new_peer_ids: ids[i * per + 1..(i + 1) * per].to_vec(),
            })
            .collect(),
    }
}

/// A region a split made, and the raft state its peer on this store left in the
/// log in an earlier life (`None` for a peer never started here).
pub struct NewPeer {
    /// The new region.
    pub region: Region,
    /// The peer's persisted raft state, if any.
    pub raft_state: Option<RaftLocalState>,
}

/// The apply state of a region created by a split (or bootstrap).
pub fn initial_apply_state() -> RaftApplyState {
    RaftApplyState {
        applied_index: INIT_INDEX,
        truncated_index: INIT_INDEX,
        truncated_term: INIT_TERM,
        commit_index: INIT_INDEX,
        commit_term: INIT_TERM,
    }
}

/// The raft state of a region created by a split (or bootstrap).
pub fn initial_raft_state() -> RaftLocalState {
    RaftLocalState {
        hard_state: Some(HardState {
            term: INIT_TERM,
            vote: 0,
            commit: INIT_INDEX,
        }),
        last_index: INIT_INDEX,
    }
}

/// Ids for new regions and peers: `store_id << 40 | n`, unique across the cluster
/// because each store only hands out its own prefix (bootstrap ids are far below
/// 2^40). The high-water mark is persisted (synced) a block ahead, so a restart
/// never reuses an id.
pub struct IdAllocator {
    kv: RocksKvEngine,
    prefix: u64,
    /// (next, end of the persisted block)
    state: Mutex<(u64, u64)>,
}

/// Store ids must be below this (2^24): a store's ids are `store_id << 40 | n`.
pub const MAX_STORE_ID: u64 = 1 << 24;

/// Ids reserved per synced write of the allocator's high-water mark.
const ID_BLOCK: u64 = 1024;

impl IdAllocator {
    /// The allocator of `store_id`, resuming after its persisted high-water mark.
    pub fn open(kv: RocksKvEngine, store_id: u64) -> Result<IdAllocator, String> {
        if store_id == 0 || store_id >= MAX_STORE_ID {
            return Err(format!(
                "store id {store_id} is out of range: ids are store_id << 40 | n, so store \
                 ids must be 1..{MAX_STORE_ID}"
            ));
        }
        let mark = kv
            .get(Cf::Meta, &store_key("next-id"))
            .map_err(|e| e.to_string())?
            .map(|v| <[u8; 8]>::try_from(v.as_slice()).map(u64::from_be_bytes))
            .transpose()
            .map_err(|_| "corrupt id allocator record".to_string())?
            .unwrap_or(1);
        Ok(IdAllocator {
            kv,
            prefix: store_id << 40,
            state: Mutex::new((mark, mark)),
        })
    }

    /// `n` fresh ids.
    pub fn alloc(&self, n: usize) -> Result<Vec<u64>, CmdError> {
        let mut st = self.state.lock();
        let (next, end) = *st;
        let want = next + n as u64;
        if want > end {
            let new_end = want + ID_BLOCK;
            let mut b = KvBatch::new();
            b.put(
                Cf::Meta,
                store_key("next-id"),
                new_end.to_be_bytes().to_vec(),
            );
            let persisted = self.kv.write(&b).and_then(|_| self.kv.sync());
            persisted.map_err(|e| CmdError::Storage(format!("id allocator: {e}")))?;
            st.1 = new_end;
        }
        st.0 = want;
        Ok((next..want).map(|i| self.prefix | i).collect())
    }
}

/// Starts this store's peer of `region` (created by a split applied here, or loaded
/// at start-up) from the given states; `campaign` makes it stand for election at once.
pub fn start_peer(
    ctx: &StoreContext,
    region: Region,
    raft_state: RaftLocalState,
    apply_state: RaftApplyState,
    merging: Option<MergeState>,
    campaign: bool,
) -> Result<(), String> {
    let Some(me) = peer_on_store(&region, ctx.store_id).cloned() else {
        return Ok(());
    };
    let cfg = &ctx.cfg;
    let raft_cfg = raft::Config {
        id: me.id,
        election_tick: cfg.raft_election_ticks,
        heartbeat_tick: cfg.raft_heartbeat_ticks,
        applied: apply_state.applied_index,
        max_size_per_msg: cfg.raft_max_size_per_msg,
        max_inflight_msgs: cfg.raft_max_inflight_msgs,
        max_uncommitted_size: cfg.raft_max_uncommitted_size,
        pre_vote: true,
        check_quorum: true,
        ..Default::default()
    };
    let _ = ctx
        .apply_worker(region.id)
        .send(ApplyMsg::Register(Box::new(Registration {
            region: region.clone(),
            state: apply_state,
            merging: merging.clone(),
        })));
    let applied = apply_state.applied_index;
    let storage = PeerStorage::new(
        ctx.log.clone(),
        region.clone(),
        raft_state,
        apply_state,
        cfg.entry_cache_limit,
    );
    let raw = RawNode::new(&raft_cfg, storage, &raft_logger())
        .map_err(|e| format!("region {}: {e}", region.id))?;
    let peer = Peer::new(ctx.store_id, me.id, raw, applied, merging);
    ctx.router
        .register(region.id, Box::new(PeerFsm { peer }))
        .map_err(|e| format!("region {}: {e}", region.id))?;
    ctx.ticker.schedule_every(region.id, PeerTick::Raft, 1);
    ctx.ticker
        .schedule_every(region.id, PeerTick::SplitCheck, cfg.split_check_ticks());
    ctx.metrics.region_count.fetch_add(1, Ordering::Relaxed);
    if campaign {
        let _ = ctx.router.send(region.id, PeerMsg::Campaign);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> Region {
        Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 3,
            }),
            peers: (1..=3)
                .map(|i| PeerMeta {
                    id: 10 + i,
                    store_id: i,
                    role: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn bad_split_keys_are_refused_with_the_reason() {
        let r = region(b"b", b"m");
        let cases: [(&[&[u8]], &str); 5] = [
            (&[b""], "empty key"),
            (&[b"b"], "start key"),
            (&[b"a"], "outside"),
            (&[b"z"], "outside"),
            (&[b"d", b"c"], "ascending"),
        ];
        for (keys, why) in cases {
            let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
            let err = check_split_keys(&r, &keys).unwrap_err().to_string();
            assert!(err.contains(why), "{keys:?}: {err}");
        }
        check_split_keys(&r, &[b"c".to_vec(), b"d".to_vec()]).unwrap();
    }

    #[test]
    fn a_batch_split_covers_the_parent_range_with_bumped_versions() {
        let parent = region(b"b", b"");
        let keys = vec![b"f".to_vec(), b"k".to_vec()];
        let ids: Vec<u64> = (100..108).collect();
        let req = build_batch_split(&parent, &keys, &ids);
        let (shrunk, new) = derive_regions(&parent, &req).unwrap();
        assert_eq!(
            (shrunk.start_key.as_slice(), shrunk.end_key.as_slice()),
            (&b"b"[..], &b"f"[..])
        );
        assert_eq!(new[0].id, 100);
        assert_eq!(
            (new[0].start_key.as_slice(), new[0].end_key.as_slice()),
            (&b"f"[..], &b"k"[..])
        );
        assert_eq!(new[1].id, 104);
        assert_eq!(
            (new[1].start_key.as_slice(), new[1].end_key.as_slice()),
            (&b"k"[..], &b""[..])
        );
        for r in std::iter::once(&shrunk).chain(&new) {
            assert_eq!(r.region_epoch.unwrap().version, 5);
            assert_eq!(r.region_epoch.unwrap().conf_ver, 1);
        }
        assert_eq!(
            new[1]
                .peers
                .iter()
                .map(|p| (p.id, p.store_id))
                .collect::<Vec<_>>(),
            vec![(105, 1), (106, 2), (107, 3)]
        );
    }

    #[test]
    fn allocated_ids_are_store_prefixed_and_never_reused_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let engines = shoal_engine::rocks::Engines::open(dir.path()).unwrap();
        let a = IdAllocator::open(engines.kv.clone(), 7).unwrap();
        let first = a.alloc(3).unwrap();
        assert!(first.iter().all(|id| id >> 40 == 7));
        let reopened = IdAllocator::open(engines.kv.clone(), 7).unwrap();
        let later = reopened.alloc(3).unwrap();
        assert!(
            later.iter().all(|id| !first.contains(id)),
            "{first:?} {later:?}"
        );
    }
}
