//! Region merge, in one place: `prepare.rs`, `commit.rs` and `rollback.rs` each
//! hold one step's propose side, apply side and what the peer does once it is
//! applied; this file holds what they share. The admin API's whole merge (prepare,
//! then wait for the outcome) is `RaftStore::merge`, in `store/admin.rs`.
//!
//! The flow (DESIGN.md, "Split and merge"):
//! 1. **Prepare**, proposed on the source's leader: on every source replica the
//!    region is frozen (`PeerState::Merging`, no more writes or reads: retryable
//!    `ServerIsBusy`) and its epoch bumped (version and conf_ver), recording the
//!    target as seen and the prepare index (`MergeState.commit`).
//! 2. **Commit**, driven by the frozen source's leader (at once, then every
//!    [`DRIVE_EVERY_TICKS`] raft ticks, so a restart or a lost message only delays
//!    it): it hands `CommitMerge` to this store's target peer, which proposes it
//!    (as leader) or lets raft forward it to the target's leader. The command
//!    carries the source's entries `(min_index, commit]`. On every target replica,
//!    apply first brings the local source up to the prepare index: from its own log
//!    up to `min_index` (those entries are durable there, since every replica had
//!    matched them), then from the carried entries. Only then does the target take
//!    over the range; the source is tombstoned in the same kv batch and its peer
//!    destroyed (`operation/life.rs`).
//! 3. **Rollback**, proposed on the source when the commit can never apply (the
//!    target's epoch moved on without taking the source, or the target was merged
//!    away): unfreezes the source and bumps its version.
//!
//! Merge needs the source and target on the same apply worker (this store's only
//! one: `apply-workers` = 1), where the commit finds the source's apply state.

use shoal_engine::keys::region_state_key;
use shoal_engine::Cf;
use shoal_proto::metapb::{Region, RegionEpoch};
use shoal_proto::raft_serverpb::{MergeState, PeerState, RegionLocalState};
use shoal_proto::Message as _;
use shoal_proto::RegionExt;

use crate::error::CmdError;
use crate::raft::apply::ApplyCtx;

pub(crate) mod commit;
pub(crate) mod prepare;
pub(crate) mod rollback;

/// How often (in raft ticks) a frozen source's leader re-drives its merge.
pub(crate) const DRIVE_EVERY_TICKS: u64 = 10;

/// Checks that `source` may merge into `target`: different, adjacent regions whose
/// peers sit on the same stores.
pub(crate) fn check_merge(source: &Region, target: &Region) -> Result<(), CmdError> {
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
    if let Some(r) = [source, target].into_iter().find(|r| r.is_joint()) {
        return Err(CmdError::Invalid(format!(
            "region {} is in a joint configuration (a membership change is in progress)",
            r.id
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
pub(crate) fn merged_region(target: &Region, source: &Region) -> Region {
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

/// Writes `region`'s local state in the apply batch.
pub(crate) fn put_state(
    ctx: &mut ApplyCtx,
    region: &Region,
    state: PeerState,
    merge: Option<MergeState>,
) {
    let s = RegionLocalState {
        state: state as i32,
        region: Some(region.clone()),
        merge_state: merge,
    };
    ctx.batch
        .put(Cf::Meta, region_state_key(region.id), s.encode_to_vec());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::region;
    use shoal_proto::RegionExt;

    #[test]
    fn only_adjacent_regions_on_the_same_stores_merge() {
        let a = region(1, b"", b"m", 1, &[1, 2, 3]);
        let b = region(2, b"m", b"t", 2, &[3, 2, 1]);
        let c = region(3, b"t", b"", 3, &[1, 2, 4]);
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
        let low = region(1, b"", b"m", 1, &[1]);
        let high = region(2, b"m", b"", 2, &[1]);
        for (t, s) in [(&low, &high), (&high, &low)] {
            let m = merged_region(t, s);
            assert!(m.start_key.is_empty() && m.end_key.is_empty(), "{m:?}");
        }
    }

    #[test]
    fn the_merged_region_spans_both_with_a_newer_version() {
        let a = region(1, b"", b"m", 1, &[1]);
        let b = region(7, b"m", b"t", 7, &[1]);
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
        assert!(left.covers(&a) && left.covers(&b));
        assert!(!a.covers(&b));
    }
}
