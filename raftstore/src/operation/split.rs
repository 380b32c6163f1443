//! Region split, in one place: the request checks, the propose side, the apply
//! side and what the peer does once a split is applied.
//!
//! The flow (DESIGN.md, "Split"):
//! 1. **Propose.** The admin API asks the parent's leader (`RaftStore::split`, in
//!    `store/admin.rs`):
//!    the keys are checked before anything else, ids for the new regions and their
//!    peers come from the store's persistent, store-prefixed allocator (off the
//!    async runtime's threads: it may sync), and one `BatchSplitRequest` is
//!    proposed. Automatic splits (`operation::split_check`) propose the same command
//!    with ids the region worker allocated. The leader re-checks epoch and keys
//!    ([`Peer::check_split`]).
//! 2. **Apply**, on every replica ([`apply_split`]): re-checks the epoch (version and
//!    conf_ver) and the keys, then in the same kv batch as the apply state shrinks
//!    the parent to `[start, key1)` and writes each new region's `RegionLocalState`
//!    and initial apply state. Every resulting region gets the parent's version +
//!    number of keys. The batch is synced before the new peers start.
//! 3. **Applied** ([`Peer::on_split_applied`]): the parent's peer takes its new range
//!    and starts the new regions' peers on this store (`operation::life`); on the
//!    parent's leader they campaign at once.
//!
//! A new region starts like a bootstrapped one, at index/term 5; its raft state is
//! written by its first ready, and a restart before that synthesizes it.
//!
//! Crash safety: the apply batch holding the split is **synced** before the new
//! peers start, so no new peer votes or appends (in the synced log) while the split
//! itself could still be lost. And a peer started by a split whose region already
//! has raft state in the log (the split was applied, then forgotten by a power loss
//! of an older version, or the apply state was rewound) resumes from that state,
//! read by apply (never on a poller): its hard state never goes backwards.

use shoal_engine::keys::{apply_state_key, region_state_key};
use shoal_engine::Cf;
use shoal_proto::metapb::{Peer as PeerMeta, Region, RegionEpoch};
use shoal_proto::raft_cmdpb::{BatchSplitRequest, RaftRequestHeader, Response, SplitRequest};
use shoal_proto::raft_serverpb::{PeerState, RegionLocalState};
use shoal_proto::{Message as _, RegionExt};

use crate::error::{not_leader, region_merging, CmdError, WriteResult};
use crate::fsm::PollCtx;
use crate::operation::command::check_epoch;
use crate::operation::life::{self, PeerStart};
use crate::raft::apply::{AdminResult, ApplyCtx, Delegate, NewPeer};
use crate::raft::peer::Peer;
use crate::store::bootstrap::initial_apply_state;

/// Longest key a request may carry, in bytes (the Kv service's limit too).
pub const MAX_KEY_SIZE: usize = 4096;

/// Most split keys one request may carry: each makes a region, created in one apply.
pub const MAX_SPLIT_KEYS: usize = 1000;

/// Checks a split request before anything else: at least one key and at most
/// [`MAX_SPLIT_KEYS`], each non-empty and at most [`MAX_KEY_SIZE`] bytes, in
/// strictly ascending order (unsorted or repeated keys are refused, not fixed up).
pub(crate) fn check_split_request(keys: &[Vec<u8>]) -> Result<(), CmdError> {
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
pub(crate) fn check_split_keys(region: &Region, keys: &[Vec<u8>]) -> Result<(), CmdError> {
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
        if !region.contains_key(k) {
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
pub(crate) fn derive_regions(
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
pub(crate) fn build_batch_split(
    region: &Region,
    keys: &[Vec<u8>],
    ids: &[u64],
) -> BatchSplitRequest {
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

impl Peer {
    /// A split must reach the leader with the current epoch, conf_ver included (its
    /// new peer ids pair with the parent's peers), and keys inside the region.
    pub(crate) fn check_split(
        &self,
        header: &RaftRequestHeader,
        split: &BatchSplitRequest,
    ) -> Result<(), CmdError> {
        if !self.is_leader {
            return Err(not_leader(self.region_id, self.leader_meta()));
        }
        check_epoch(self.region(), header.region_epoch.as_ref(), true)?;
        derive_regions(self.region(), split).map(|_| ())
    }

    /// Apply wrote a split: take the shrunk range, start the new regions' peers here
    /// (campaigning at once if this peer leads, so the new regions get leaders on
    /// the same store).
    pub(crate) fn on_split_applied(
        &mut self,
        parent: Region,
        new_regions: Vec<NewPeer>,
        ctx: &PollCtx,
    ) {
        tracing::info!(
            region = self.region_id,
            new = ?new_regions.iter().map(|r| r.region.id).collect::<Vec<_>>(),
            "split applied"
        );
        // The new ranges are the new regions' before the parent lets go of them: a
        // message for a new region never finds its range free in between.
        for r in &new_regions {
            self.raw.store().ranges().set(&r.region);
        }
        self.raw.mut_store().set_region(parent);
        for NewPeer { region, raft_state } in new_regions {
            if ctx.store.router.contains(region.id) {
                continue;
            }
            let id = region.id;
            // A raft state left in the log by an earlier life of this peer wins over
            // the initial one (see the module docs).
            if let Some(s) = &raft_state {
                tracing::warn!(
                    region = id,
                    "split peer resumes from its raft state in the log: {s:?}"
                );
            }
            let start = PeerStart {
                region,
                raft_state,
                apply_state: initial_apply_state(),
                merging: None,
            };
            if let Err(e) = life::start_peer(
                &ctx.store,
                start,
                match self.is_leader {
                    true => life::Start::Campaign,
                    false => life::Start::Awake,
                },
            ) {
                tracing::error!(region = id, "cannot start the peer of a split region: {e}");
            }
        }
    }
}

/// Shrinks the parent and records the new regions, in the apply batch: every replica
/// derives the same regions from the same entry.
pub(crate) fn apply_split(
    d: &mut Delegate,
    split: &BatchSplitRequest,
    index: u64,
    ctx: &mut ApplyCtx,
) -> WriteResult {
    if d.merging.is_some() {
        return Err(region_merging(d.region.id));
    }
    let (parent, new_regions) = derive_regions(&d.region, split)?;
    let state = |region: &Region| RegionLocalState {
        state: PeerState::Normal as i32,
        region: Some(region.clone()),
        merge_state: None,
    };
    ctx.batch.put(
        Cf::Meta,
        region_state_key(parent.id),
        state(&parent).encode_to_vec(),
    );
    for r in &new_regions {
        ctx.batch
            .put(Cf::Meta, region_state_key(r.id), state(r).encode_to_vec());
        ctx.batch.put(
            Cf::Meta,
            apply_state_key(r.id),
            initial_apply_state().encode_to_vec(),
        );
    }
    // A new region's peer may have lived before: a power loss can take back the
    // (unsynced) kv writes of an earlier apply of this split while the peer's votes
    // and entries, synced in the log, survive. Its peer must resume from that raft
    // state, never from the initial one (it would vote twice in a term, forget
    // entries it acknowledged). Read here, on the apply thread, not on a poller.
    let mut starts = Vec::with_capacity(new_regions.len());
    for r in &new_regions {
        let raft_state = ctx.log.raft_state(r.id).unwrap_or_else(|e| {
            crate::error::fatal(r.id, format_args!("the log cannot be read: {e}"))
        });
        starts.push(NewPeer {
            region: r.clone(),
            raft_state,
        });
    }
    fail::fail_point!("apply_split");
    d.region = parent.clone();
    let mut regions = vec![parent.clone()];
    regions.extend(new_regions.iter().cloned());
    let result = AdminResult::Split {
        parent,
        new_regions: starts,
    };
    ctx.report(d.region.id, index, result);
    Ok(vec![Response {
        regions,
        ..Default::default()
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::region;

    #[test]
    fn bad_split_keys_are_refused_with_the_reason() {
        let r = region(1, b"b", b"m", 3, &[1, 2, 3]);
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
        let parent = region(1, b"b", b"", 3, &[1, 2, 3]);
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
}
