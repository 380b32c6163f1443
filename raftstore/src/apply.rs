//! Apply workers: committed entries become writes to the kv engine.
//!
//! Each worker owns the apply state of the regions hashed to it. Everything it
//! receives in one go (the tasks of several poll rounds) becomes **one** kv write
//! batch holding the data and every touched region's `RaftApplyState`, so after a
//! crash the two agree and apply resumes from the applied index found. Only after
//! that write are the proposers answered and the peers told their applied index.
//!
//! Apply re-checks each command's epoch and keys against the region as of that
//! log position: a command that raced with a split is refused, never misapplied.
//! Compare-and-swap is evaluated here, on every replica alike; an overlay of the
//! batch's own writes makes a CAS see a put earlier in the same batch.

use std::collections::HashMap;

use crossbeam_channel::Receiver;
use raft::eraftpb::{Entry, EntryType};
use shoal_engine::keys::{apply_state_key, data_key, region_state_key};
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvBatch, KvEngine, KvRead, LogEngine};
use shoal_proto::metapb::Region;
use shoal_proto::raft_cmdpb::{
    admin_request, request::Cmd, BatchSplitRequest, RaftCmdRequest, Response,
};
use shoal_proto::raft_serverpb::{MergeState, PeerState, RaftApplyState, RegionLocalState};
use shoal_proto::Message as _;
use tokio::sync::oneshot;

use crate::cmd::{check_epoch, key_in_region, key_not_in_region, request_key};
use crate::fsm::StoreRouter;
use crate::metrics::StoreMetrics;
use crate::msg::{CmdError, PeerMsg, WriteResult};

/// Committed entries of one region, with the answers owed for some of them.
pub struct ApplyTask {
    /// The region.
    pub region_id: u64,
    /// The local peer.
    pub peer_id: u64,
    /// Committed entries in index order.
    pub entries: Vec<Entry>,
    /// `(index, reply)` for entries proposed through this peer.
    pub replies: Vec<(u64, oneshot::Sender<WriteResult>)>,
}

/// A region an apply worker starts applying for.
pub struct Registration {
    /// The region as of `state.applied_index`.
    pub region: Region,
    /// Where apply resumes.
    pub state: RaftApplyState,
    /// The region's merge in progress, when it is a frozen merge source.
    pub merging: Option<MergeState>,
}

/// Messages to an apply worker.
pub enum ApplyMsg {
    /// Starts applying for a region (boxed: rare, and large next to `Tasks`).
    Register(Box<Registration>),
    /// Committed entries from one poll round.
    Tasks(Vec<ApplyTask>),
}

/// What apply knows of one region on this store.
pub(crate) struct Delegate {
    pub(crate) region: Region,
    pub(crate) state: RaftApplyState,
    /// Set by an applied `PrepareMerge` until commit or rollback.
    pub(crate) merging: Option<MergeState>,
}

/// Everything one drained batch of tasks writes and reports.
pub(crate) struct ApplyCtx<'a> {
    pub(crate) kv: &'a RocksKvEngine,
    pub(crate) log: &'a dyn LogEngine,
    pub(crate) batch: KvBatch,
    /// The batch's own writes, for CAS.
    pub(crate) overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Messages to peers once the batch is written (before their `Applied`).
    pub(crate) events: Vec<(u64, PeerMsg)>,
    /// The other regions of this worker (a merge catches its source up here).
    pub(crate) delegates: &'a mut HashMap<u64, Delegate>,
    /// An admin command (split, merge step) is in the batch: the write is synced
    /// before its effects (peers created or destroyed) happen. Otherwise a power
    /// loss could forget the command while its effects' own writes (a new peer's
    /// votes and entries in the synced log) survive.
    pub(crate) sync: bool,
}

/// One apply worker's loop; returns when every sender is gone.
pub fn run(
    rx: Receiver<ApplyMsg>,
    kv: RocksKvEngine,
    log: std::sync::Arc<dyn LogEngine>,
    router: StoreRouter,
    metrics: std::sync::Arc<StoreMetrics>,
) {
    let mut delegates: HashMap<u64, Delegate> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut tasks = Vec::new();
        let mut take = |m: ApplyMsg, tasks: &mut Vec<ApplyTask>| match m {
            ApplyMsg::Register(r) => {
                let Registration {
                    region,
                    state,
                    merging,
                } = *r;
                delegates.insert(
                    region.id,
                    Delegate {
                        region,
                        state,
                        merging,
                    },
                );
            }
            ApplyMsg::Tasks(t) => tasks.extend(t),
        };
        take(first, &mut tasks);
        while let Ok(m) = rx.try_recv() {
            take(m, &mut tasks);
        }
        if tasks.is_empty() {
            continue;
        }
        let mut ctx = ApplyCtx {
            kv: &kv,
            log: log.as_ref(),
            batch: KvBatch::new(),
            overlay: HashMap::new(),
            events: Vec::new(),
            delegates: &mut delegates,
            sync: false,
        };
        apply_tasks(tasks, &mut ctx, &router, &metrics);
    }
}

fn apply_tasks(
    tasks: Vec<ApplyTask>,
    ctx: &mut ApplyCtx,
    router: &StoreRouter,
    metrics: &StoreMetrics,
) {
    let mut answers: Vec<(oneshot::Sender<WriteResult>, WriteResult)> = Vec::new();
    let mut applied: Vec<(u64, u64)> = Vec::new();
    let mut count = 0u64;
    for task in tasks {
        // Out of the map while applying: a merge may need the map for its source.
        let Some(mut d) = ctx.delegates.remove(&task.region_id) else {
            tracing::debug!(
                region = task.region_id,
                "apply task for a region that is not (or no longer) here"
            );
            // Merged away (its entries up to the prepare were applied by the target's
            // catch-up) or never here: the outcome is unknown to the proposer.
            for (_, reply) in task.replies {
                answers.push((
                    reply,
                    Err(CmdError::Undetermined(format!(
                        "region {} is no longer applied here (merged away?)",
                        task.region_id
                    ))),
                ));
            }
            continue;
        };
        let mut replies = task.replies.into_iter().peekable();
        for entry in &task.entries {
            if entry.index <= d.state.applied_index {
                continue;
            }
            let result = apply_entry(&mut d, entry, ctx);
            d.state.applied_index = entry.index;
            count += 1;
            while replies.peek().is_some_and(|(i, _)| *i <= entry.index) {
                let (i, reply) = replies.next().expect("peeked");
                if i == entry.index {
                    answers.push((reply, result.clone()));
                } else {
                    answers.push((reply, Err(already_applied(task.region_id, i))));
                }
            }
        }
        // Entries applied before (a merge's catch-up, say): their outcome was not
        // recorded for the proposer.
        for (i, reply) in replies {
            answers.push((reply, Err(already_applied(task.region_id, i))));
        }
        ctx.batch.put(
            Cf::Meta,
            apply_state_key(task.region_id),
            d.state.encode_to_vec(),
        );
        applied.push((task.region_id, d.state.applied_index));
        ctx.delegates.insert(task.region_id, d);
    }
    let written = ctx.kv.write(&ctx.batch).and_then(|()| match ctx.sync {
        true => {
            StoreMetrics::add(&metrics.admin_kv_syncs, 1);
            ctx.kv.sync()
        }
        false => Ok(()),
    });
    if let Err(e) = written {
        // The kv engine refusing a write leaves apply unable to go on consistently.
        for (reply, _) in answers {
            let _ = reply.send(Err(CmdError::Storage(e.to_string())));
        }
        panic!("apply: the kv engine failed a write: {e}");
    }
    StoreMetrics::add(&metrics.applied_entries, count);
    for (reply, result) in answers {
        let _ = reply.send(result);
    }
    // Before `Applied`: a peer takes its new range (split, merge) before serving
    // reads at the new applied index.
    for (region_id, msg) in ctx.events.drain(..) {
        let _ = router.send(region_id, msg);
    }
    for (region_id, applied_index) in applied {
        let _ = router.send(region_id, PeerMsg::Applied { applied_index });
    }
}

fn already_applied(region_id: u64, index: u64) -> CmdError {
    CmdError::Undetermined(format!(
        "region {region_id}: entry {index} was applied before its answer was owed"
    ))
}

/// Applies one committed entry of `d`'s region into the batch.
pub(crate) fn apply_entry(d: &mut Delegate, entry: &Entry, ctx: &mut ApplyCtx) -> WriteResult {
    if entry.data.is_empty() {
        // A new leader's empty entry: nothing to apply.
        return Ok(Vec::new());
    }
    if entry.get_entry_type() != EntryType::EntryNormal {
        tracing::warn!(
            region = d.region.id,
            index = entry.index,
            "membership changes are not supported yet"
        );
        return Ok(Vec::new());
    }
    let cmd = match RaftCmdRequest::decode(&entry.data[..]) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                region = d.region.id,
                index = entry.index,
                "undecodable command: {e}"
            );
            return Err(CmdError::Storage(format!(
                "undecodable command at index {}",
                entry.index
            )));
        }
    };
    let header = cmd.header.unwrap_or_default();
    check_epoch(&d.region, header.region_epoch.as_ref(), false)?;
    if let Some(admin) = cmd.admin.and_then(|a| a.cmd) {
        // Admin commands pair ids with the region's peers: conf_ver must match too.
        check_epoch(&d.region, header.region_epoch.as_ref(), true)?;
        ctx.sync = true;
        return match admin {
            admin_request::Cmd::Split(split) => apply_split(d, &split, ctx),
            admin_request::Cmd::PrepareMerge(req) => {
                crate::merge::apply_prepare(d, req, entry.index, ctx)
            }
            admin_request::Cmd::CommitMerge(req) => crate::merge::apply_commit(d, req, ctx),
            admin_request::Cmd::RollbackMerge(req) => crate::merge::apply_rollback(d, req, ctx),
        };
    }
    for k in cmd.requests.iter().filter_map(request_key) {
        if !key_in_region(k, &d.region) {
            return Err(key_not_in_region(k, &d.region));
        }
    }
    let mut responses = Vec::with_capacity(cmd.requests.len());
    for r in cmd.requests {
        let mut resp = Response::default();
        match r.cmd {
            Some(Cmd::Put(p)) => {
                ctx.batch
                    .put(Cf::Default, data_key(&p.key), p.value.clone());
                ctx.overlay.insert(p.key, Some(p.value));
            }
            Some(Cmd::Delete(x)) => {
                ctx.batch.delete(Cf::Default, data_key(&x.key));
                ctx.overlay.insert(x.key, None);
            }
            Some(Cmd::Cas(c)) => {
                let current = match ctx.overlay.get(&c.key) {
                    Some(v) => v.clone(),
                    None => ctx
                        .kv
                        .get(Cf::Default, &data_key(&c.key))
                        .map_err(|e| CmdError::Storage(e.to_string()))?,
                };
                let matches = match &current {
                    None => c.expected_absent,
                    Some(v) => !c.expected_absent && *v == c.expected_value,
                };
                resp.previous_found = current.is_some();
                resp.previous_value = current.unwrap_or_default();
                resp.succeeded = matches;
                if matches {
                    ctx.batch
                        .put(Cf::Default, data_key(&c.key), c.new_value.clone());
                    ctx.overlay.insert(c.key, Some(c.new_value));
                }
            }
            None => {}
        }
        responses.push(resp);
    }
    Ok(responses)
}

/// Shrinks the parent and records the new regions, in the apply batch: every replica
/// derives the same regions from the same entry.
fn apply_split(d: &mut Delegate, split: &BatchSplitRequest, ctx: &mut ApplyCtx) -> WriteResult {
    if d.merging.is_some() {
        return Err(crate::cmd::region_merging(d.region.id));
    }
    let (parent, new_regions) = crate::split::derive_regions(&d.region, split)?;
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
            crate::split::initial_apply_state().encode_to_vec(),
        );
    }
    // A new region's peer may have lived before: a power loss can take back the
    // (unsynced) kv writes of an earlier apply of this split while the peer's votes
    // and entries, synced in the log, survive. Its peer must resume from that raft
    // state, never from the initial one (it would vote twice in a term, forget
    // entries it acknowledged). Read here, on the apply thread, not on a poller.
    let mut starts = Vec::with_capacity(new_regions.len());
    for r in &new_regions {
        let raft_state = ctx
            .log
            .raft_state(r.id)
            .map_err(|e| CmdError::Storage(format!("region {} raft state: {e}", r.id)))?;
        starts.push(crate::split::NewPeer {
            region: r.clone(),
            raft_state,
        });
    }
    d.region = parent.clone();
    let mut regions = vec![parent.clone()];
    regions.extend(new_regions.iter().cloned());
    ctx.events.push((
        parent.id,
        PeerMsg::Split {
            parent,
            new_regions: starts,
        },
    ));
    Ok(vec![Response {
        regions,
        ..Default::default()
    }])
}
