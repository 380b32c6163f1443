//! [`RegionExt`]: the range and membership questions every crate asks of a region,
//! answered in one place (the store, the server and the client agree on what
//! "in the region" means).

use crate::metapb::{Peer, PeerRole, Region};

/// Range and membership helpers on [`Region`].
///
/// A region covers `[start_key, end_key)`; an empty `end_key` means the end of the
/// key space, an empty `start_key` its beginning.
pub trait RegionExt {
    /// Whether `key` lies in the region's range.
    fn contains_key(&self, key: &[u8]) -> bool;
    /// Whether this region's range covers all of `inner`'s.
    fn covers(&self, inner: &Region) -> bool;
    /// The region's peer on `store_id`, if it has one.
    fn peer_on_store(&self, store_id: u64) -> Option<&Peer>;
    /// Whether the region is in a joint configuration (a peer is incoming or
    /// demoting).
    fn is_joint(&self) -> bool;
}

impl RegionExt for Region {
    fn contains_key(&self, key: &[u8]) -> bool {
        key >= self.start_key.as_slice()
            && (self.end_key.is_empty() || key < self.end_key.as_slice())
    }

    fn covers(&self, inner: &Region) -> bool {
        self.start_key <= inner.start_key
            && (self.end_key.is_empty()
                || (!inner.end_key.is_empty() && inner.end_key <= self.end_key))
    }

    fn peer_on_store(&self, store_id: u64) -> Option<&Peer> {
        self.peers.iter().find(|p| p.store_id == store_id)
    }

    fn is_joint(&self) -> bool {
        self.peers.iter().any(|p| {
            p.role == PeerRole::IncomingVoter as i32 || p.role == PeerRole::DemotingVoter as i32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> Region {
        Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: None,
            peers: vec![Peer {
                id: 7,
                store_id: 3,
                role: 0,
            }],
        }
    }

    #[test]
    fn ranges_are_half_open_and_an_empty_end_is_unbounded() {
        let r = region(b"b", b"d");
        assert!(!r.contains_key(b"a"));
        assert!(r.contains_key(b"b"));
        assert!(r.contains_key(b"c\xff"));
        assert!(!r.contains_key(b"d"));
        assert!(region(b"b", b"").contains_key(b"\xff\xff"));
        assert!(region(b"", b"b").contains_key(b""));
    }

    #[test]
    fn covering_needs_both_ends_inside() {
        let all = region(b"", b"");
        let mid = region(b"c", b"m");
        let tail = region(b"m", b"");
        assert!(all.covers(&mid) && all.covers(&tail));
        assert!(
            !mid.covers(&tail),
            "an unbounded end is not inside a bounded one"
        );
        assert!(!tail.covers(&mid));
        assert!(region(b"a", b"n").covers(&mid));
    }

    #[test]
    fn the_peer_on_a_store_is_found_by_store_id() {
        let r = region(b"", b"");
        assert_eq!(r.peer_on_store(3).map(|p| p.id), Some(7));
        assert!(r.peer_on_store(4).is_none());
    }
}
