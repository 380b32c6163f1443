//! Key layout of both engines. Big-endian integers keep a region's keys in
//! one contiguous, index-ordered range.
//!
//! Log engine (`raft/`):
//! - `0x01 | region_id | index` -> `term | entry bytes` (one log entry)
//! - `0x02 | region_id`         -> `RaftLocalState`
//!
//! Kv engine (`kv/`), column family `default`: user keys prefixed with `z`,
//! so that any future system key in `default` (which would sort below `z`)
//! never mixes with user data. Column family `meta`:
//! - `0x01 | region_id | 0x01` -> `RegionLocalState`
//! - `0x01 | region_id | 0x02` -> `RaftApplyState`
//! - `0x00 | name`             -> store-level records (store identity, ID allocator)

const ENTRY_PREFIX: u8 = 0x01;
const RAFT_STATE_PREFIX: u8 = 0x02;

/// The key of log entry `index` of `region_id`.
pub fn entry_key(region_id: u64, index: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = ENTRY_PREFIX;
    k[1..9].copy_from_slice(&region_id.to_be_bytes());
    k[9..17].copy_from_slice(&index.to_be_bytes());
    k
}

/// Splits an entry key into `(region_id, index)`.
pub fn decode_entry_key(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 17 || key[0] != ENTRY_PREFIX {
        return None;
    }
    let region = u64::from_be_bytes(key[1..9].try_into().ok()?);
    let index = u64::from_be_bytes(key[9..17].try_into().ok()?);
    Some((region, index))
}

/// The key of the `RaftLocalState` of `region_id`.
pub fn raft_state_key(region_id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = RAFT_STATE_PREFIX;
    k[1..9].copy_from_slice(&region_id.to_be_bytes());
    k
}

/// Splits a raft state key into its region id.
pub fn decode_raft_state_key(key: &[u8]) -> Option<u64> {
    if key.len() != 9 || key[0] != RAFT_STATE_PREFIX {
        return None;
    }
    Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
}

/// The bounds `[start, end)` of every raft state key.
pub fn raft_state_range() -> ([u8; 1], [u8; 1]) {
    ([RAFT_STATE_PREFIX], [RAFT_STATE_PREFIX + 1])
}

/// The bounds `[start, end)` of every entry key.
pub fn entry_range() -> ([u8; 1], [u8; 1]) {
    ([ENTRY_PREFIX], [ENTRY_PREFIX + 1])
}

/// The prefix of user data in the `default` column family.
pub const DATA_PREFIX: u8 = b'z';

/// The stored key of a user key.
pub fn data_key(user_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(user_key.len() + 1);
    k.push(DATA_PREFIX);
    k.extend_from_slice(user_key);
    k
}

/// The stored upper bound of a region whose user end key is `user_end`
/// (empty meaning the end of the key space).
pub fn data_end_key(user_end: &[u8]) -> Vec<u8> {
    if user_end.is_empty() {
        vec![DATA_PREFIX + 1]
    } else {
        data_key(user_end)
    }
}

/// The user key of a stored data key.
pub fn origin_key(data_key: &[u8]) -> &[u8] {
    debug_assert_eq!(data_key.first(), Some(&DATA_PREFIX));
    &data_key[1..]
}

const REGION_META_PREFIX: u8 = 0x01;
const REGION_STATE_SUFFIX: u8 = 0x01;
const APPLY_STATE_SUFFIX: u8 = 0x02;

fn region_meta_key(region_id: u64, suffix: u8) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = REGION_META_PREFIX;
    k[1..9].copy_from_slice(&region_id.to_be_bytes());
    k[9] = suffix;
    k
}

/// `meta` key of a region's `RegionLocalState`.
pub fn region_state_key(region_id: u64) -> [u8; 10] {
    region_meta_key(region_id, REGION_STATE_SUFFIX)
}

/// `meta` key of a region's `RaftApplyState`.
pub fn apply_state_key(region_id: u64) -> [u8; 10] {
    region_meta_key(region_id, APPLY_STATE_SUFFIX)
}

/// Splits a `meta` region key into `(region_id, is_region_state)`.
pub fn decode_region_meta_key(key: &[u8]) -> Option<(u64, bool)> {
    if key.len() != 10 || key[0] != REGION_META_PREFIX {
        return None;
    }
    let region = u64::from_be_bytes(key[1..9].try_into().ok()?);
    Some((region, key[9] == REGION_STATE_SUFFIX))
}

/// The bounds `[start, end)` of every region's meta keys.
pub fn region_meta_range() -> ([u8; 1], [u8; 1]) {
    ([REGION_META_PREFIX], [REGION_META_PREFIX + 1])
}

/// `meta` key of a store-level record called `name`.
pub fn store_key(name: &str) -> Vec<u8> {
    let mut k = vec![0x00];
    k.extend_from_slice(name.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_by_region_then_index() {
        assert!(entry_key(1, u64::MAX) < entry_key(2, 0));
        assert!(entry_key(1, 255) < entry_key(1, 256));
        assert_eq!(decode_entry_key(&entry_key(7, 9)), Some((7, 9)));
        assert_eq!(decode_entry_key(&raft_state_key(7)), None);
    }

    #[test]
    fn data_keys_round_trip_and_bound_regions() {
        assert_eq!(origin_key(&data_key(b"abc")), b"abc");
        assert!(data_key(&[0xff; 8]) < data_end_key(b""));
        assert_eq!(data_end_key(b"m"), data_key(b"m"));
        assert_eq!(
            decode_region_meta_key(&apply_state_key(3)),
            Some((3, false))
        );
        assert_eq!(
            decode_region_meta_key(&region_state_key(3)),
            Some((3, true))
        );
    }
}
