//! The system key range: user keys from `FF FF FF FF` on belong to Shoal itself.
//! The Kv service refuses them (and stops scans before them) unless a request's
//! context sets `system`, which only Shoal's nodes and tools do. It holds the
//! **cluster directory**: one record per store (`Store`: id, address, state) and
//! the next store id to hand out. Being ordinary keys of the last region, the
//! directory is replicated, moved and snapshotted like any data, and changed only
//! by compare-and-swap.

/// The first key of the system range (every key from here on is a system key).
pub const SYSTEM_START: &[u8] = &[0xff, 0xff, 0xff, 0xff];

/// Whether `key` is in the system range.
pub fn is_system_key(key: &[u8]) -> bool {
    key >= SYSTEM_START
}

/// The prefix of the directory's store records.
pub fn store_prefix() -> Vec<u8> {
    let mut k = SYSTEM_START.to_vec();
    k.extend_from_slice(b"dir/store/");
    k
}

/// The key of store `id`'s directory record (its id big-endian, so records scan in
/// id order).
pub fn store_key(id: u64) -> Vec<u8> {
    let mut k = store_prefix();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The end (exclusive) of the store records.
pub fn store_prefix_end() -> Vec<u8> {
    let mut k = store_prefix();
    *k.last_mut().expect("non-empty") += 1;
    k
}

/// The key of the next store id to hand out (8 bytes, big-endian).
pub fn next_store_id_key() -> Vec<u8> {
    let mut k = SYSTEM_START.to_vec();
    k.extend_from_slice(b"dir/next-store-id");
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_keys_are_system_keys_and_records_scan_in_id_order() {
        assert!(is_system_key(&store_key(1)));
        assert!(is_system_key(&next_store_id_key()));
        assert!(!is_system_key(b"\xff\xff\xff\xfe\xff"));
        assert!(store_key(2) < store_key(256));
        assert!(store_key(u64::MAX) < store_prefix_end());
        assert!(store_prefix() < store_key(0));
        assert!(!(store_prefix()..store_prefix_end()).contains(&next_store_id_key()));
    }
}
