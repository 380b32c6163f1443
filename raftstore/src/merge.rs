//! Region merge, the apply side: `PrepareMerge`, `CommitMerge`, `RollbackMerge`.
//!
//! The flow (DESIGN.md, "Split and merge"; the peer side is in `peer/merge.rs`):
//! 1. **Prepare**, proposed on the source's leader: on every source replica the
//!    region is frozen (`PeerState::Merging`, no more writes or reads) and its epoch
//!    bumped (version and conf_ver), recording the target as seen and the prepare
//!    index (`MergeState.commit`).
//! 2. **Commit**, proposed on the target by the source's leader (forwarded to the
//!    target's leader by raft when needed), carries the source's entries
//!    `(min_index, commit]`. On every target replica, apply first brings the local
//!    source up to the prepare index: from its own log up to `min_index` (those
//!    entries are durable there, since every replica had matched them), then from
//!    the carried entries. Only then does the target take over the range; the
//!    source is tombstoned in the same kv batch and its peer destroyed.
//! 3. **Rollback**, proposed on the source when the commit can never apply (the
//!    target's epoch moved on without taking the source): unfreezes the source and
//!    bumps its version.
//!
//! Merge needs the source and target on the same apply worker (this store's only
//! one: `apply-workers` = 1), where the commit finds the source's apply state.

use protobuf::Message as _;
use raft::eraftpb::Entry;
use shoal_engine::keys::{apply_state_key, region_state_key};
use shoal_engine::{Cf, KvRead};
use shoal_proto::metapb::{Region, RegionEpoch};
use shoal_proto::raft_cmdpb::{
    CommitMergeRequest, PrepareMergeRequest, Response, RollbackMergeRequest,
};
use shoal_proto::raft_serverpb::{MergeState, PeerState, RegionLocalState};
use shoal_proto::Message as _;

use crate::apply::{apply_entry, ApplyCtx, Delegate};
use crate::cmd::region_merging;
use crate::msg::{CmdError, PeerMsg, WriteResult};

/// Checks that `source` may merge into `target`: different, adjacent regions whose
/// peers sit on the same stores.
pub fn check_merge(source: &Region, target: &Region) -> Result<(), CmdError> {
    if source.id == target.id {
        return Err(CmdError::Invalid(format!(
            "cannot merge region {} into itself",
            source.id
        )));
    }
    let adjacent = (!source.end_key.is_empty() && source.end_key == target.start_key)
        || (!target.end_key.is_empty() && target.end_key == source.start_key);
    if !adjacent {
        return Err(CmdError::Invalid(format!(
            "regions {} and {} are not adjacent",
            source.id, target.id
        )));
    }
    let stores = |r: &Region| {
        let mut s: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
        s.sort_unstable();
        s
    };
    if stores(source) != stores(target) {
        return Err(CmdError::Invalid(format!(
            "regions {} and {} have peers on different stores ({:?} and {:?})",
            source.id,
            target.id,
            stores(source),
            stores(target)
        )));
    }
    Ok(())
}

/// The range `target` covers after taking over `source`.
pub fn merged_region(target: &Region, source: &Region) -> Region {
    let mut r = target.clone();
    // Compare non-empty keys only: an empty start and an empty end are the two
    // ends of the key space, not the same point.
    if !target.end_key.is_empty() && target.end_key == source.start_key {
        r.end_key = source.end_key.clone();
    } else {
        r.start_key = source.start_key.clone();
    }
    let (t, s) = (
        target.region_epoch.unwrap_or_default(),
        source.region_epoch.unwrap_or_default(),
    );
    r.region_epoch = Some(RegionEpoch {
        conf_ver: t.conf_ver,
        version: t.version.max(s.version) + 1,
    });
    r
}

/// The state this store's kv records for `region_id`, if any.
fn local_state(kv: &impl KvRead, region_id: u64) -> Option<PeerState> {
    kv.get(Cf::Meta, &region_state_key(region_id))
        .ok()
        .flatten()
        .and_then(|v| RegionLocalState::decode(v.as_slice()).ok())
        .and_then(|s| PeerState::try_from(s.state).ok())
}

/// Whether this store's kv says `region_id` was merged away (tombstoned).
pub fn is_tombstone(kv: &impl KvRead, region_id: u64) -> bool {
    local_state(kv, region_id) == Some(PeerState::Tombstone)
}

/// Whether this store's kv says `region_id` is a frozen merge source.
pub fn is_merging(kv: &impl KvRead, region_id: u64) -> bool {
    local_state(kv, region_id) == Some(PeerState::Merging)
}

/// Whether `outer` covers all of `inner`'s range.
pub fn covers(outer: &Region, inner: &Region) -> bool {
    outer.start_key <= inner.start_key
        && (outer.end_key.is_empty()
            || (!inner.end_key.is_empty() && inner.end_key <= outer.end_key))
}

fn put_state(ctx: &mut ApplyCtx, region: &Region, state: PeerState, merge: Option<MergeState>) {
    let s = RegionLocalState {
        state: state as i32,
        region: Some(region.clone()),
        merge_state: merge,
    };
    ctx.batch
        .put(Cf::Meta, region_state_key(region.id), s.encode_to_vec());
}

/// Freezes the source at `index`.
pub(crate) fn apply_prepare(
    d: &mut Delegate,
    req: PrepareMergeRequest,
    index: u64,
    ctx: &mut ApplyCtx,
) -> WriteResult {
    if d.merging.is_some() {
        return Err(region_merging(d.region.id));
    }
    let target = req.target.unwrap_or_default();
    check_merge(&d.region, &target)?;
    let epoch = d.region.region_epoch.unwrap_or_default();
    d.region.region_epoch = Some(RegionEpoch {
        conf_ver: epoch.conf_ver + 1,
        version: epoch.version + 1,
    });
    let state = MergeState {
        min_index: req.min_index,
        target: Some(target),
        commit: index,
    };
    d.merging = Some(state.clone());
    put_state(ctx, &d.region, PeerState::Merging, Some(state.clone()));
    ctx.events.push((
        d.region.id,
        PeerMsg::MergeState {
            region: d.region.clone(),
            merging: Some(state),
        },
    ));
    Ok(vec![Response {
        regions: vec![d.region.clone()],
        index,
        ..Default::default()
    }])
}

/// Unfreezes the source of the prepare at `req.commit`.
pub(crate) fn apply_rollback(
    d: &mut Delegate,
    req: RollbackMergeRequest,
    ctx: &mut ApplyCtx,
) -> WriteResult {
    if d.merging.as_ref().map(|m| m.commit) != Some(req.commit) {
        return Err(CmdError::Invalid(format!(
            "region {} has no merge prepared at index {}",
            d.region.id, req.commit
        )));
    }
    d.merging = None;
    let epoch = d.region.region_epoch.unwrap_or_default();
    d.region.region_epoch = Some(RegionEpoch {
        conf_ver: epoch.conf_ver,
        version: epoch.version + 1,
    });
    put_state(ctx, &d.region, PeerState::Normal, None);
    ctx.events.push((
        d.region.id,
        PeerMsg::MergeState {
            region: d.region.clone(),
            merging: None,
        },
    ));
    tracing::info!(region = d.region.id, "merge rolled back");
    Ok(vec![Response {
        regions: vec![d.region.clone()],
        ..Default::default()
    }])
}

/// The target `d` takes over the source of `req`, after bringing the local source
/// up to the prepare index.
pub(crate) fn apply_commit(
    d: &mut Delegate,
    req: CommitMergeRequest,
    ctx: &mut ApplyCtx,
) -> WriteResult {
    if d.merging.is_some() {
        return Err(region_merging(d.region.id));
    }
    let source = req.source.clone().unwrap_or_default();
    check_merge(&source, &d.region)?;
    let Some(mut src) = ctx.delegates.remove(&source.id) else {
        tracing::error!(
            target = d.region.id,
            source = source.id,
            "merge commit: the source has no apply state on this store"
        );
        return Err(CmdError::Storage(format!(
            "merge source {} is not on this store's apply worker",
            source.id
        )));
    };
    if let Err(e) = catch_up(&mut src, &req, ctx) {
        tracing::error!(
            source = source.id,
            "merge commit cannot catch the source up: {e}"
        );
        ctx.delegates.insert(source.id, src);
        return Err(e);
    }
    let merged = merged_region(&d.region, &src.region);
    d.region = merged.clone();
    put_state(ctx, &merged, PeerState::Normal, None);
    put_state(ctx, &src.region, PeerState::Tombstone, None);
    ctx.batch.put(
        Cf::Meta,
        apply_state_key(src.region.id),
        src.state.encode_to_vec(),
    );
    ctx.events.push((
        merged.id,
        PeerMsg::Merged {
            region: merged.clone(),
        },
    ));
    ctx.events.push((
        src.region.id,
        PeerMsg::Destroy {
            merged_into: merged.id,
        },
    ));
    tracing::info!(
        target = merged.id,
        source = src.region.id,
        "merge committed"
    );
    // `src` is not put back: the source is gone from this worker.
    Ok(vec![Response {
        regions: vec![merged],
        ..Default::default()
    }])
}

/// Applies the source's entries up to the prepare index `req.commit`: from the
/// local log below the carried entries, then the carried ones.
fn catch_up(
    src: &mut Delegate,
    req: &CommitMergeRequest,
    ctx: &mut ApplyCtx,
) -> Result<(), CmdError> {
    let commit = req.commit;
    let mut carried = Vec::with_capacity(req.entries.len());
    for bytes in &req.entries {
        let e = Entry::parse_from_bytes(bytes)
            .map_err(|e| CmdError::Storage(format!("carried entry does not decode: {e}")))?;
        carried.push(e);
    }
    let first_carried = carried.first().map_or(commit + 1, |e| e.index);
    let applied = src.state.applied_index;
    let mut entries = Vec::new();
    if applied + 1 < first_carried {
        let mut local = Vec::new();
        ctx.log
            .fetch(src.region.id, applied + 1, first_carried, None, &mut local)
            .map_err(|e| CmdError::Storage(format!("source log: {e}")))?;
        for le in &local {
            let e = Entry::parse_from_bytes(&le.data)
                .map_err(|e| CmdError::Storage(format!("source log entry: {e}")))?;
            entries.push(e);
        }
    }
    entries.extend(carried.into_iter().filter(|e| e.index > applied));
    for e in entries.iter().filter(|e| e.index <= commit) {
        if e.index != src.state.applied_index + 1 {
            return Err(CmdError::Storage(format!(
                "source entries skip from {} to {}",
                src.state.applied_index, e.index
            )));
        }
        // The outcome of each is what the source replicas computed; nobody waits.
        let _ = apply_entry(src, e, ctx);
        src.state.applied_index = e.index;
    }
    if src.state.applied_index < commit || src.merging.as_ref().map(|m| m.commit) != Some(commit) {
        return Err(CmdError::Storage(format!(
            "source {} reached index {} without the prepare at {commit}",
            src.region.id, src.state.applied_index
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::metapb::Peer;

    fn region(id: u64, start: &[u8], end: &[u8], stores: &[u64]) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: id,
            }),
            peers: stores
                .iter()
                .map(|&s| Peer {
                    id: id * 10 + s,
                    store_id: s,
                    role: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn only_adjacent_regions_on_the_same_stores_merge() {
        let a = region(1, b"", b"m", &[1, 2, 3]);
        let b = region(2, b"m", b"t", &[3, 2, 1]);
        let c = region(3, b"t", b"", &[1, 2, 4]);
        check_merge(&a, &b).unwrap();
        check_merge(&b, &a).unwrap();
        assert!(check_merge(&a, &c)
            .unwrap_err()
            .to_string()
            .contains("not adjacent"));
        assert!(check_merge(&b, &c)
            .unwrap_err()
            .to_string()
            .contains("different stores"));
        assert!(check_merge(&a, &a)
            .unwrap_err()
            .to_string()
            .contains("itself"));
    }

    #[test]
    fn merging_the_two_halves_of_the_key_space_gives_all_of_it() {
        let low = region(1, b"", b"m", &[1]);
        let high = region(2, b"m", b"", &[1]);
        for (t, s) in [(&low, &high), (&high, &low)] {
            let m = merged_region(t, s);
            assert!(m.start_key.is_empty() && m.end_key.is_empty(), "{m:?}");
        }
    }

    #[test]
    fn the_merged_region_spans_both_with_a_newer_version() {
        let a = region(1, b"", b"m", &[1]);
        let b = region(7, b"m", b"t", &[1]);
        let left = merged_region(&b, &a);
        assert_eq!(
            (left.start_key.as_slice(), left.end_key.as_slice()),
            (&b""[..], &b"t"[..])
        );
        assert_eq!(left.region_epoch.unwrap().version, 8);
        let right = merged_region(&a, &b);
        assert_eq!(
            (right.start_key.as_slice(), right.end_key.as_slice()),
            (&b""[..], &b"t"[..])
        );
        assert!(covers(&left, &a) && covers(&left, &b));
        assert!(!covers(&a, &b));
    }
}
