//! Helpers around commands: building region errors, checking a request's epoch and
//! keys against a region, encoding entries.

use shoal_proto::errorpb::{
    region_error, EpochNotMatch, KeyNotInRegion, NotLeader, RegionError, ServerIsBusy,
};
use shoal_proto::metapb::{Peer, Region, RegionEpoch};

use crate::msg::CmdError;

/// `NotLeader`, with the leader when known.
pub fn not_leader(region_id: u64, leader: Option<Peer>) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("peer is not the leader of region {region_id}"),
        kind: Some(region_error::Kind::NotLeader(NotLeader {
            region_id,
            leader,
        })),
    })
}

/// `EpochNotMatch`, carrying the store's current view of the region.
pub fn epoch_not_match(current: &Region, requested: Option<&RegionEpoch>) -> CmdError {
    CmdError::Region(RegionError {
        message: format!(
            "region {} epoch is {:?}, the request has {:?}",
            current.id, current.region_epoch, requested
        ),
        kind: Some(region_error::Kind::EpochNotMatch(EpochNotMatch {
            current_regions: vec![current.clone()],
        })),
    })
}

/// `ServerIsBusy` for `region_id`, with why: retry shortly.
pub fn server_busy(region_id: u64, reason: &str) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("region {region_id}: {reason}; retry shortly"),
        kind: Some(region_error::Kind::ServerIsBusy(ServerIsBusy {
            reason: reason.to_string(),
            backoff_ms: 50,
        })),
    })
}

/// `ServerIsBusy` for a region frozen by a merge in progress: retry shortly.
pub fn region_merging(region_id: u64) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("region {region_id} is being merged; retry shortly"),
        kind: Some(region_error::Kind::ServerIsBusy(ServerIsBusy {
            reason: "merging".into(),
            backoff_ms: 50,
        })),
    })
}

/// `EntryTooLarge`: the command would make a Raft entry of `size` bytes, over `limit`.
pub fn entry_too_large(region_id: u64, size: u64, limit: u64) -> CmdError {
    CmdError::Region(RegionError {
        message: format!(
            "region {region_id}: the command is {size} bytes, over the raft-entry-max-size \
             limit of {limit} bytes"
        ),
        kind: Some(region_error::Kind::EntryTooLarge(
            shoal_proto::errorpb::EntryTooLarge {
                region_id,
                entry_size: size,
            },
        )),
    })
}

/// `StoreNotMatch`: the request names a peer on `requested`, this is `actual`.
pub fn store_not_match(requested: u64, actual: u64) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("the request is for store {requested}, this is store {actual}"),
        kind: Some(region_error::Kind::StoreNotMatch(
            shoal_proto::errorpb::StoreNotMatch {
                request_store_id: requested,
                actual_store_id: actual,
            },
        )),
    })
}

/// `KeyNotInRegion`.
pub fn key_not_in_region(key: &[u8], region: &Region) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("key {key:?} is not in region {}", region.id),
        kind: Some(region_error::Kind::KeyNotInRegion(KeyNotInRegion {
            key: key.to_vec(),
            region_id: region.id,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        })),
    })
}

/// `RegionNotFound`.
pub fn region_not_found(region_id: u64) -> CmdError {
    CmdError::Region(RegionError {
        message: format!("region {region_id} is not on this store"),
        kind: Some(region_error::Kind::RegionNotFound(
            shoal_proto::errorpb::RegionNotFound { region_id },
        )),
    })
}

/// The key a data request touches.
pub fn request_key(r: &shoal_proto::raft_cmdpb::Request) -> Option<&[u8]> {
    use shoal_proto::raft_cmdpb::request::Cmd;
    match &r.cmd {
        Some(Cmd::Put(p)) => Some(&p.key),
        Some(Cmd::Delete(d)) => Some(&d.key),
        Some(Cmd::Cas(c)) => Some(&c.key),
        None => None,
    }
}

/// Whether `key` lies in `[region.start_key, region.end_key)`.
pub fn key_in_region(key: &[u8], region: &Region) -> bool {
    key >= region.start_key.as_slice()
        && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// Checks a request's epoch: `version` must match (a split or merge changed the
/// range); `conf_ver` must match when `check_conf_ver` (membership-sensitive admin commands).
pub fn check_epoch(
    region: &Region,
    requested: Option<&RegionEpoch>,
    check_conf_ver: bool,
) -> Result<(), CmdError> {
    let current = region.region_epoch.unwrap_or_default();
    let Some(req) = requested else {
        return Err(epoch_not_match(region, None));
    };
    if req.version != current.version || (check_conf_ver && req.conf_ver != current.conf_ver) {
        return Err(epoch_not_match(region, Some(req)));
    }
    Ok(())
}

/// The peer of `region` on `store_id`.
pub fn peer_on_store(region: &Region, store_id: u64) -> Option<&Peer> {
    region.peers.iter().find(|p| p.store_id == store_id)
}

/// An admin command for `region`, proposed through this store's peer (`store_id`),
/// routed with `epoch` (the region's own, or the one a caller saw).
pub fn admin_cmd(
    region: &Region,
    store_id: u64,
    epoch: Option<RegionEpoch>,
    cmd: shoal_proto::raft_cmdpb::admin_request::Cmd,
) -> shoal_proto::raft_cmdpb::RaftCmdRequest {
    use shoal_proto::raft_cmdpb::{AdminRequest, RaftCmdRequest, RaftRequestHeader};
    RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: region.id,
            peer: peer_on_store(region, store_id).cloned(),
            region_epoch: epoch,
        }),
        requests: Vec::new(),
        admin: Some(AdminRequest { cmd: Some(cmd) }),
    }
}

/// Encodes a raft-rs protobuf message.
pub fn encode_pb<M: protobuf::Message>(m: &M) -> Vec<u8> {
    m.write_to_bytes()
        .expect("protobuf encoding into memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8], version: u64) -> Region {
        Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version,
            }),
            peers: vec![],
        }
    }

    #[test]
    fn key_ranges_are_half_open_and_empty_end_is_unbounded() {
        let r = region(b"b", b"d", 1);
        assert!(!key_in_region(b"a", &r));
        assert!(key_in_region(b"b", &r));
        assert!(key_in_region(b"c\xff", &r));
        assert!(!key_in_region(b"d", &r));
        assert!(key_in_region(b"\xff\xff", &region(b"b", b"", 1)));
    }

    #[test]
    fn epoch_check_names_the_current_region() {
        let r = region(b"", b"", 3);
        let stale = RegionEpoch {
            conf_ver: 1,
            version: 2,
        };
        match check_epoch(&r, Some(&stale), false) {
            Err(CmdError::Region(e)) => match e.kind {
                Some(region_error::Kind::EpochNotMatch(m)) => {
                    assert_eq!(m.current_regions, vec![r.clone()])
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        let ok = RegionEpoch {
            conf_ver: 9,
            version: 3,
        };
        assert!(check_epoch(&r, Some(&ok), false).is_ok());
        assert!(check_epoch(&r, Some(&ok), true).is_err());
    }
}
