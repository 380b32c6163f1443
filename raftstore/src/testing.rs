//! Fixtures shared by this crate's unit tests.

use shoal_proto::metapb::{Peer, Region, RegionEpoch};

/// Region `id` over `[start, end)` at epoch (conf_ver 1, `version`), with one
/// voter on each of `stores` (peer id `id * 10 + store`).
pub(crate) fn region(id: u64, start: &[u8], end: &[u8], version: u64, stores: &[u64]) -> Region {
    Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version,
        }),
        peers: stores
            .iter()
            .map(|&store_id| Peer {
                id: id * 10 + store_id,
                store_id,
                role: 0,
            })
            .collect(),
    }
}
