//! Commands: what every command shares on both sides of Raft.
//! - Building and checking: [`admin_cmd`] builds the store's own admin commands,
//!   [`check_epoch`] and [`request_key`] check a request against a region.
//! - Applying: [`apply_entry`] decodes a committed entry, re-checks its epoch and
//!   keys against the region **as of that log position** (a command that raced
//!   with a split is refused, never misapplied), and applies it: data commands
//!   here, admin commands in their operation's file. Compare-and-swap is evaluated
//!   here, on every replica alike; an overlay of the batch's own writes makes a CAS
//!   see a put earlier in the same batch.

use raft::eraftpb::{Entry, EntryType};
use shoal_engine::keys::data_key;
use shoal_engine::{Cf, KvRead};
use shoal_proto::metapb::{Region, RegionEpoch};
use shoal_proto::raft_cmdpb::{
    admin_request, request::Cmd, AdminRequest, CompareAndSwapOp, RaftCmdRequest, RaftRequestHeader,
    Request, Response,
};
use shoal_proto::{Message as _, RegionExt};

use crate::error::{epoch_not_match, fatal, key_not_in_region, CmdError, WriteResult};
use crate::operation::conf_change::{self, change_peer_of};
use crate::operation::merge::{commit, prepare, rollback};
use crate::operation::{log_gc, split};
use crate::raft::apply::{ApplyCtx, Delegate};

/// The key a data request touches.
pub(crate) fn request_key(r: &Request) -> Option<&[u8]> {
    match &r.cmd {
        Some(Cmd::Put(p)) => Some(&p.key),
        Some(Cmd::Delete(d)) => Some(&d.key),
        Some(Cmd::Cas(c)) => Some(&c.key),
        None => None,
    }
}

/// Checks a request's epoch: `version` must match (a split or merge changed the
/// range); `conf_ver` must match when `check_conf_ver` (membership-sensitive admin
/// commands).
pub(crate) fn check_epoch(
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

/// Checks that every key lies in the region.
pub(crate) fn check_keys<'a>(
    region: &Region,
    keys: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), CmdError> {
    match keys.into_iter().find(|k| !region.contains_key(k)) {
        Some(k) => Err(key_not_in_region(k, region)),
        None => Ok(()),
    }
}

/// An admin command for `region`, proposed through this store's peer (`store_id`),
/// routed with `epoch` (the region's own, or the one a caller saw).
pub(crate) fn admin_cmd(
    region: &Region,
    store_id: u64,
    epoch: Option<RegionEpoch>,
    cmd: admin_request::Cmd,
) -> RaftCmdRequest {
    RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: region.id,
            peer: region.peer_on_store(store_id).cloned(),
            region_epoch: epoch,
        }),
        requests: Vec::new(),
        admin: Some(AdminRequest { cmd: Some(cmd) }),
    }
}

/// Applies one committed entry of `d`'s region into the batch.
pub(crate) fn apply_entry(d: &mut Delegate, entry: &Entry, ctx: &mut ApplyCtx) -> WriteResult {
    if entry.get_entry_type() == EntryType::EntryNormal && entry.data.is_empty() {
        // A new leader's empty entry: nothing to apply. (A conf change leaving a
        // joint configuration has empty data too, and its command as context.)
        return Ok(Vec::new());
    }
    // A membership change carries its command in the entry's context; raft-rs's
    // change in its data says the same (`conf_change/`).
    let (bytes, conf_change) = match entry.get_entry_type() {
        EntryType::EntryNormal => (&entry.data[..], false),
        EntryType::EntryConfChangeV2 => (&entry.context[..], true),
        EntryType::EntryConfChange => fatal(
            d.region.id,
            format_args!(
                "a v1 conf change at index {}: Shoal never proposes one",
                entry.index
            ),
        ),
    };
    // Every replica holds the same bytes: one that cannot decode them cannot apply
    // as the others do.
    let cmd = RaftCmdRequest::decode(bytes).unwrap_or_else(|e| {
        fatal(
            d.region.id,
            format_args!("the entry at index {} does not decode: {e}", entry.index),
        )
    });
    if conf_change != change_peer_of(&cmd).is_some() {
        fatal(
            d.region.id,
            format_args!(
                "the entry at index {} is a membership change in one half only",
                entry.index
            ),
        );
    }
    let header = cmd.header.unwrap_or_default();
    check_epoch(&d.region, header.region_epoch.as_ref(), false)?;
    match cmd.admin.and_then(|a| a.cmd) {
        Some(admin) => apply_admin(d, admin, &header, entry.index, ctx),
        None => apply_data(d, cmd.requests, ctx),
    }
}

/// Admin commands pair ids with the region's peers: conf_ver must match too. The
/// batch is synced (see [`ApplyCtx::sync`]).
fn apply_admin(
    d: &mut Delegate,
    admin: admin_request::Cmd,
    header: &RaftRequestHeader,
    index: u64,
    ctx: &mut ApplyCtx,
) -> WriteResult {
    check_epoch(&d.region, header.region_epoch.as_ref(), true)?;
    ctx.sync = true;
    match admin {
        admin_request::Cmd::Split(req) => split::apply_split(d, &req, index, ctx),
        admin_request::Cmd::PrepareMerge(req) => prepare::apply_prepare(d, req, index, ctx),
        admin_request::Cmd::CommitMerge(req) => commit::apply_commit(d, req, index, ctx),
        admin_request::Cmd::RollbackMerge(req) => rollback::apply_rollback(d, req, index, ctx),
        admin_request::Cmd::CompactLog(req) => log_gc::apply_compact_log(d, &req, index, ctx),
        admin_request::Cmd::ChangePeer(req) => conf_change::apply_change_peer(d, &req, index, ctx),
    }
}

/// Puts, deletes and compare-and-swaps, all keys checked against the region first.
fn apply_data(d: &Delegate, requests: Vec<Request>, ctx: &mut ApplyCtx) -> WriteResult {
    check_keys(&d.region, requests.iter().filter_map(request_key))?;
    let mut responses = Vec::with_capacity(requests.len());
    for r in requests {
        let resp = match r.cmd {
            Some(Cmd::Put(p)) => {
                ctx.batch
                    .put(Cf::Default, data_key(&p.key), p.value.clone());
                ctx.overlay.insert(p.key, Some(p.value));
                Response::default()
            }
            Some(Cmd::Delete(x)) => {
                ctx.batch.delete(Cf::Default, data_key(&x.key));
                ctx.overlay.insert(x.key, None);
                Response::default()
            }
            Some(Cmd::Cas(c)) => apply_cas(d.region.id, c, ctx),
            None => Response::default(),
        };
        responses.push(resp);
    }
    Ok(responses)
}

/// Compare-and-swap against the batch's own writes, then the engine.
fn apply_cas(region_id: u64, c: CompareAndSwapOp, ctx: &mut ApplyCtx) -> Response {
    let current = match ctx.overlay.get(&c.key) {
        Some(v) => v.clone(),
        // A replica that cannot read the value would decide differently from the
        // others.
        None => ctx
            .kv
            .get(Cf::Default, &data_key(&c.key))
            .unwrap_or_else(|e| fatal(region_id, format_args!("a CAS cannot read its key: {e}"))),
    };
    let matches = match &current {
        None => c.expected_absent,
        Some(v) => !c.expected_absent && *v == c.expected_value,
    };
    if matches {
        ctx.batch
            .put(Cf::Default, data_key(&c.key), c.new_value.clone());
        ctx.overlay.insert(c.key, Some(c.new_value));
    }
    Response {
        previous_found: current.is_some(),
        previous_value: current.unwrap_or_default(),
        succeeded: matches,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::region;
    use shoal_proto::errorpb::region_error;

    #[test]
    fn epoch_check_names_the_current_region() {
        let r = region(1, b"", b"", 3, &[]);
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

    #[test]
    fn the_first_key_outside_the_region_is_named() {
        let r = region(1, b"b", b"d", 1, &[]);
        check_keys(&r, [&b"b"[..], b"c"]).unwrap();
        match check_keys(&r, [&b"c"[..], b"d", b"a"]) {
            Err(CmdError::Region(e)) => match e.kind {
                Some(region_error::Kind::KeyNotInRegion(k)) => assert_eq!(k.key, b"d"),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }
}
