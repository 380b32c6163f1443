//! A digest of one replica's data in a region, to check that replicas agree.
//!
//! Taken on a kv snapshot, so the digest and the applied index it reports belong
//! together: two replicas at the same applied index must have the same digest.

use shoal_engine::keys::{apply_state_key, data_end_key, data_key, region_state_key};
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvEngine, KvRead};
use shoal_proto::adminpb::ChecksumResponse;
use shoal_proto::raft_serverpb::{RaftApplyState, RegionLocalState};
use shoal_proto::Message as _;

use crate::msg::CmdError;

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

/// The digest of region `region_id` as persisted on this store: its range from the
/// region state, then every pair in it (lengths included, so that pairs cannot run
/// into each other).
pub fn region_checksum(kv: &RocksKvEngine, region_id: u64) -> Result<ChecksumResponse, CmdError> {
    let storage = |e: shoal_engine::Error| CmdError::Storage(e.to_string());
    let snap = kv.snapshot();
    let state = snap
        .get(Cf::Meta, &region_state_key(region_id))
        .map_err(storage)?
        .ok_or_else(|| crate::cmd::region_not_found(region_id))?;
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
    use super::fnv;

    #[test]
    fn fnv_matches_the_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv(super::FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(super::FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(super::FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }
}
