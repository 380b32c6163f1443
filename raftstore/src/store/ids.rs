//! [`IdAllocator`]: ids for the regions and peers a split creates.
//!
//! Its synced write of the high-water mark is disk IO: it runs on the region worker
//! (automatic splits) or a blocking thread of the async runtime (admin splits),
//! never on a poller.

use parking_lot::Mutex;
use shoal_engine::keys::store_key;
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvBatch, KvEngine, KvRead};

use crate::error::{CmdError, StartError};

/// The kv meta record holding the allocator's high-water mark.
const NEXT_ID_KEY: &str = "next-id";

/// Ids for new regions and peers: `store_id << 40 | n`, unique across the cluster
/// because each store only hands out its own prefix (bootstrap ids are far below
/// 2^40). The high-water mark is persisted (synced) a block ahead, so a restart
/// never reuses an id.
pub(crate) struct IdAllocator {
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
    pub(crate) fn open(kv: RocksKvEngine, store_id: u64) -> Result<IdAllocator, StartError> {
        if store_id == 0 || store_id >= MAX_STORE_ID {
            return Err(StartError::Identity(format!(
                "store id {store_id} is out of range: ids are store_id << 40 | n, so store \
                 ids must be 1..{MAX_STORE_ID}"
            )));
        }
        let mark = kv
            .get(Cf::Meta, &store_key(NEXT_ID_KEY))?
            .map(|v| <[u8; 8]>::try_from(v.as_slice()).map(u64::from_be_bytes))
            .transpose()
            .map_err(|_| StartError::Corrupt("the id allocator record is not 8 bytes".into()))?
            .unwrap_or(1);
        Ok(IdAllocator {
            kv,
            prefix: store_id << 40,
            state: Mutex::new((mark, mark)),
        })
    }

    /// `n` fresh ids.
    pub(crate) fn alloc(&self, n: usize) -> Result<Vec<u64>, CmdError> {
        let mut st = self.state.lock();
        let (next, end) = *st;
        let want = next + n as u64;
        if want > end {
            let new_end = want + ID_BLOCK;
            let mut b = KvBatch::new();
            b.put(
                Cf::Meta,
                store_key(NEXT_ID_KEY),
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

#[cfg(test)]
mod tests {
    use super::*;

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
