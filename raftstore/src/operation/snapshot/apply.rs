//! The follower's side: checking a snapshot before raft-rs sees it, taking it from
//! the ready, applying it on the apply worker, replacing the log, and telling
//! raft-rs once all of it is durable.
//!
//! Order of durability (what makes a crash at any point recoverable,
//! `recover.rs`):
//! 1. kv, synced: region state `APPLYING` with the snapshot's region, apply state
//!    (applied = truncated = the snapshot's index), the range cleared;
//! 2. kv: the files ingested (RocksDB syncs ingested files);
//! 3. kv, synced: region state `NORMAL`;
//! 4. log, synced (the log writer's write): the region's log replaced by the
//!    ready's entries after the snapshot, with the new raft state;
//! 5. raft-rs: `on_persist_ready` for the snapshot's ready, then
//!    `advance_apply_to` the snapshot's index; the received files go.
//!
//! From 1 until 5 the peer handles no ready (a later ready's log write would be
//! reported persisted before the snapshot's) and refuses requests.

use std::path::{Path, PathBuf};
use std::time::Instant;

use raft::eraftpb::Message as RaftPbMessage;
use shoal_engine::keys::{apply_state_key, data_end_key, data_key, region_state_key};
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Cf, KvBatch, KvEngine, LogEntry};
use shoal_proto::metapb::Region;
use shoal_proto::raft_serverpb::{
    PeerState, RaftApplyState, RaftLocalState, RaftMessage, RegionLocalState,
};
use shoal_proto::Message as _;

use crate::error::{not_leader, CmdError};
use crate::fsm::PollCtx;
use crate::metrics::StoreMetrics;
use crate::operation::snapshot::recv::snapshot_of;
use crate::operation::snapshot::{sst_path, SnapKey};
use crate::raft::apply::{AdminResult, ApplyRes, Delegate};
use crate::raft::peer::Peer;

/// A snapshot the peer took from a ready and has not finished with.
pub(crate) struct PendingSnapshot {
    /// The ready that carried it.
    pub(crate) number: u64,
    pub(crate) key: SnapKey,
    /// The transfer whose files it is.
    pub(crate) transfer: u64,
    /// The log write that follows the kv side: the ready's entries after the
    /// snapshot, the raft state, and the messages that wait on it.
    pub(crate) entries: Vec<LogEntry>,
    pub(crate) state: RaftLocalState,
    pub(crate) msgs: Vec<RaftMessage>,
    /// The kv side is done and the log write queued.
    pub(crate) applied: bool,
    pub(crate) started: Instant,
}

/// What the apply worker does with a snapshot.
pub(crate) struct SnapshotTask {
    pub(crate) key: SnapKey,
    /// The region as of the snapshot.
    pub(crate) region: Region,
    /// The received files, and how many the snapshot lists.
    pub(crate) dir: PathBuf,
    pub(crate) files: usize,
    /// Stale regions inside the snapshot's range, tombstoned with it.
    pub(crate) stale: Vec<u64>,
    /// The peer's span, entered while the apply worker applies it.
    pub(crate) span: tracing::Span,
}

impl Peer {
    /// A `MsgSnapshot` may reach raft-rs only if this peer can apply it: not while
    /// it applies another or is a frozen merge source; of this region, with an
    /// epoch no older than the peer's; its files received whole; and a range that
    /// overlaps no other live region of this store. A region in the way that lies
    /// inside the snapshot's range at an older epoch is stale
    /// (`RegionRanges::overlaps` says why; a merge source whose commit this
    /// replica never got, say): the snapshot's apply tombstones it, in the same
    /// synced batch that marks the snapshot applying (before that it stays: if
    /// raft-rs does not take the snapshot, the log may still bring the commit).
    pub(crate) fn check_snapshot(&self, msg: &RaftMessage, ctx: &PollCtx) -> Result<(), String> {
        if self.applying_snapshot.is_some() {
            return Err("a snapshot is being applied".into());
        }
        if self.merging.is_some() {
            return Err("the region is a frozen merge source".into());
        }
        let (key, data) = snapshot_of(msg)?;
        let region = data.region.unwrap_or_default();
        let ours = self.region().region_epoch.unwrap_or_default();
        let theirs = region.region_epoch.unwrap_or_default();
        if theirs.version < ours.version || theirs.conf_ver < ours.conf_ver {
            return Err(format!(
                "stale: epoch {}/{} is older than this replica's {}/{}",
                theirs.version, theirs.conf_ver, ours.version, ours.conf_ver
            ));
        }
        let root = ctx.store.snap_root().ok_or("no snapshot directory")?;
        if !key.recv_dir(root, msg.snapshot_transfer).is_dir() {
            return Err("its files were not received".into());
        }
        let overlaps = self.raw.store().ranges().overlaps(&region);
        if let Some(other) = overlaps.others.first() {
            return Err(format!("its range overlaps region {other} of this store"));
        }
        Ok(())
    }

    /// After stepping (or refusing) the snapshot of transfer `n`: the transfer
    /// whose snapshot raft-rs holds is recorded, to be applied from; the files of
    /// any other (not taken, refused, a second copy) go now.
    pub(crate) fn after_snapshot_step(&mut self, key: SnapKey, n: u64, ctx: &PollCtx) {
        let Some(root) = ctx.store.snap_root() else {
            return;
        };
        let held = self.raw.raft.raft_log.unstable.snapshot.as_ref();
        let taken = held.is_some_and(|s| SnapKey::of(self.region_id, s) == key);
        match self.stepped_snapshot {
            // An earlier copy of the same snapshot is the one raft-rs holds.
            Some((k, m)) if taken && k == key && m != n => {
                ctx.store.remove_snapshot_dir(key.recv_dir(root, n));
            }
            Some((k, m)) if taken && k == key && m == n => {}
            // raft-rs took this one (in place of an older one, whose files go).
            previous if taken => {
                if let Some((k, m)) = previous {
                    ctx.store.remove_snapshot_dir(k.recv_dir(root, m));
                }
                self.stepped_snapshot = Some((key, n));
            }
            _ => ctx.store.remove_snapshot_dir(key.recv_dir(root, n)),
        }
    }

    /// A ready carrying a snapshot: the storage takes its bounds and region, the
    /// apply worker gets the data (behind the entries already committed), and the
    /// log write waits until the data is applied.
    pub(crate) fn on_ready_snapshot(&mut self, mut rd: raft::Ready, ctx: &mut PollCtx) {
        let key = SnapKey::of(self.region_id, rd.snapshot());
        let (region, files) = match snapshot_of_ready(self.region_id, rd.snapshot()) {
            Ok(r) => r,
            Err(e) => panic!(
                "region {}: raft-rs handed back a snapshot that was checked and no longer \
                 decodes: {e}",
                self.region_id
            ),
        };
        let root = ctx.store.snap_root().expect("checked in check_snapshot");
        let transfer = match self.stepped_snapshot.take() {
            Some((k, n)) if k == key => n,
            other => panic!(
                "region {}: raft-rs handed back snapshot {key:?}, the one stepped was {other:?}",
                self.region_id
            ),
        };
        tracing::info!(
            region = self.region_id,
            index = key.index,
            term = key.term,
            "applying a raft snapshot"
        );
        let (region_id, leader) = (self.region_id, self.leader_meta());
        // A proposal at or below the snapshot's index may be in it (a new leader
        // committed and applied it, then truncated its log past it); one above it
        // may still be committed by that leader. Either way this peer cannot tell:
        // never "certainly not applied", which a client would send again.
        self.fail_proposals(|_| {
            CmdError::Undetermined(format!(
                "region {region_id}: this replica was replaced by a snapshot before it \
                 saw the write's outcome; the write may have been applied"
            ))
        });
        self.fail_reads(|| not_leader(region_id, leader));
        if !rd.messages().is_empty() {
            let msgs = rd.take_messages();
            self.build_messages(msgs, &mut ctx.outgoing, &ctx.store.metrics);
        }
        let number = rd.number();
        let store = self.raw.mut_store();
        store.apply_snapshot_meta(key.index, key.term, region.clone());
        let entries = store.append(rd.entries(), number);
        if let Some(hs) = rd.hs() {
            store.set_hard_state(hs);
        }
        let state = *store.raft_state();
        let mut msgs = Vec::new();
        self.build_messages(rd.take_persisted_messages(), &mut msgs, &ctx.store.metrics);
        self.applying_snapshot = Some(Box::new(PendingSnapshot {
            number,
            key,
            transfer,
            entries,
            state,
            msgs,
            applied: false,
            started: Instant::now(),
        }));
        self.unpersisted_ready = Some(number);
        self.raw.advance_append_async(rd);
        let overlaps = self.raw.store().ranges().overlaps(&region);
        if !overlaps.others.is_empty() {
            // Checked when stepped; a region that appeared since (it cannot be a
            // live one: the snapshot's range is this region's) is left to the
            // apply's range clear.
            tracing::warn!(
                region = self.region_id,
                others = ?overlaps.others,
                "regions appeared in a snapshot's range after it was checked"
            );
        }
        let task = SnapshotTask {
            key,
            region,
            dir: key.recv_dir(root, transfer),
            files,
            stale: overlaps.stale,
            span: tracing::Span::current(),
        };
        ctx.schedule_snapshot(self.region_id, task);
    }

    /// The apply worker applied the data of the snapshot at `index`: the log is
    /// replaced next.
    pub(crate) fn on_snapshot_applied(&mut self, index: u64, ctx: &mut PollCtx) {
        let Some(p) = self.applying_snapshot.as_mut() else {
            return;
        };
        assert_eq!(
            p.key.index, index,
            "region {}: the apply worker applied another snapshot than the peer's",
            self.region_id
        );
        p.applied = true;
        let entries = std::mem::take(&mut p.entries);
        let msgs = std::mem::take(&mut p.msgs);
        ctx.write
            .replace(self.region_id, p.number, entries, p.state, msgs);
    }

    /// Readies up to `number` are durable: when that covers an applied
    /// snapshot's log write, raft-rs takes the snapshot as applied.
    pub(crate) fn maybe_finish_snapshot(&mut self, number: u64, ctx: &PollCtx) {
        let done = self
            .applying_snapshot
            .as_ref()
            .is_some_and(|p| p.applied && number >= p.number);
        if !done {
            return;
        }
        let p = self.applying_snapshot.take().expect("checked above");
        self.applied_index = p.key.index;
        self.raw.advance_apply_to(p.key.index);
        let m = &ctx.store.metrics;
        StoreMetrics::add(&m.snapshots_applied, 1);
        let ms = StoreMetrics::add_elapsed(&m.snapshot_apply_seconds, p.started);
        tracing::info!(
            region = self.region_id,
            index = p.key.index,
            ms,
            "applied a raft snapshot"
        );
        if let Some(root) = ctx.store.snap_root() {
            ctx.store
                .remove_snapshot_dir(p.key.recv_dir(root, p.transfer));
        }
    }
}

/// The region a ready's snapshot carries, and how many files it lists.
fn snapshot_of_ready(
    region_id: u64,
    snap: &raft::eraftpb::Snapshot,
) -> Result<(Region, usize), String> {
    let data = shoal_proto::raft_serverpb::SnapshotData::decode(snap.get_data())
        .map_err(|e| e.to_string())?;
    let region = data.region.ok_or("no region")?;
    if region.id != region_id {
        return Err(format!("of region {}", region.id));
    }
    Ok((region, data.files.len()))
}

/// A Raft message refused before any check of its snapshot (by a destroyed peer,
/// or as addressed wrongly): if it carries a snapshot, the received files go.
pub(crate) fn drop_snapshot_files(msg: &RaftMessage, ctx: &PollCtx) {
    if let (Ok((key, _)), Some(root)) = (snapshot_of(msg), ctx.store.snap_root()) {
        ctx.store
            .remove_snapshot_dir(key.recv_dir(root, msg.snapshot_transfer));
    }
}

/// Whether a raft-rs message is a snapshot.
pub(crate) fn is_snapshot(m: &RaftPbMessage) -> bool {
    m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot
}

/// The apply worker's part (steps 1 to 3 of the module docs), then the region's
/// delegate takes the snapshot's state; the stale regions in its range are
/// tombstoned in step 1's batch and told so (they destroy themselves as merged
/// sources do). A kv engine that fails here leaves the region `APPLYING`: the
/// store stops and start-up applies the snapshot again. The results to report,
/// by region.
pub(crate) fn apply_snapshot(
    kv: &RocksKvEngine,
    metrics: &StoreMetrics,
    task: SnapshotTask,
    delegates: &mut std::collections::HashMap<u64, Delegate>,
) -> Vec<(u64, ApplyRes)> {
    let SnapshotTask {
        key,
        region,
        dir,
        files,
        stale,
        span,
    } = task;
    let _entered = span.enter();
    let Some(peer_id) = delegates.get(&region.id).map(|d| d.peer_id) else {
        // Tombstoned meanwhile, as stale under a newer snapshot applied just
        // before: applying this one would bring it back. Its peer is told it went.
        tracing::info!(
            region = region.id,
            index = key.index,
            "not applying a snapshot of a region removed as stale"
        );
        return Vec::new();
    };
    let state = RaftApplyState {
        applied_index: key.index,
        truncated_index: key.index,
        truncated_term: key.term,
        commit_index: key.index,
        commit_term: key.term,
    };
    let mut batch = KvBatch::new();
    let mut results = Vec::new();
    for id in stale {
        let Some(d) = delegates.remove(&id) else {
            continue;
        };
        put_region_state(&mut batch, &d.region, PeerState::Tombstone);
        let _stale = d.span.enter();
        tracing::info!(
            region = id,
            by = region.id,
            "a newer region's snapshot spans this stale replica; removing it"
        );
        let gone = AdminResult::MergedAway { target: region.id };
        results.push((
            id,
            ApplyRes {
                applied_index: d.state.applied_index,
                results: vec![gone],
            },
        ));
    }
    put_region_state(&mut batch, &region, PeerState::Applying);
    batch.put(Cf::Meta, apply_state_key(region.id), state.encode_to_vec());
    batch.delete_range(
        Cf::Default,
        data_key(&region.start_key),
        data_end_key(&region.end_key),
    );
    let written = metrics
        .retry_while_disk_full("snapshot apply", || kv.write(&batch))
        .and_then(|()| kv.sync());
    if let Err(e) = written {
        panic!(
            "region {}: cannot write a snapshot's apply state: {e}",
            region.id
        );
    }
    fail::fail_point!("snapshot_after_applying_state");
    if let Err(e) = ingest_and_finish(kv, metrics, &region, &dir, Some(files)) {
        panic!("region {}: cannot apply a snapshot: {e}", region.id);
    }
    delegates.insert(
        region.id,
        Delegate {
            peer_id,
            region,
            state,
            merging: None,
            removed: false,
            span: span.clone(),
        },
    );
    let applied = AdminResult::SnapshotApplied { index: key.index };
    results.push((
        key.region_id,
        ApplyRes {
            applied_index: 0,
            results: vec![applied],
        },
    ));
    results
}

/// Steps 2 and 3: ingests the files of `dir` into the region's (cleared) range
/// and marks the region `NORMAL`, synced. Also what start-up redoes for a region
/// left `APPLYING`. `expected`: how many files the snapshot lists, when known (a
/// directory missing some is refused, never ingested short).
pub(crate) fn ingest_and_finish(
    kv: &RocksKvEngine,
    metrics: &StoreMetrics,
    region: &Region,
    dir: &Path,
    expected: Option<usize>,
) -> Result<(), String> {
    // Ingesting moves a file into RocksDB: ingest links to the files, so that the
    // received ones stay until the region is NORMAL (a crash before that ingests
    // them again).
    let mut staged = Vec::new();
    for n in 0.. {
        let file = sst_path(dir, n);
        if !file.exists() {
            break;
        }
        let link = dir.join(format!("ingest-{n}.sst"));
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(&file, &link)
            .map_err(|e| format!("cannot link {}: {e}", file.display()))?;
        staged.push(link);
    }
    if expected.is_some_and(|n| n != staged.len()) || !dir.is_dir() {
        return Err(format!(
            "{} holds {} snapshot files, the snapshot lists {expected:?}",
            dir.display(),
            staged.len()
        ));
    }
    if !staged.is_empty() {
        let paths: Vec<&Path> = staged.iter().map(PathBuf::as_path).collect();
        kv.ingest(Cf::Default, &paths)
            .map_err(|e| format!("ingest: {e}"))?;
    }
    fail::fail_point!("snapshot_after_ingest");
    let mut batch = KvBatch::new();
    put_region_state(&mut batch, region, PeerState::Normal);
    metrics
        .retry_while_disk_full("snapshot apply", || kv.write(&batch))
        .and_then(|()| kv.sync())
        .map_err(|e| e.to_string())
}

pub(crate) fn put_region_state(batch: &mut KvBatch, region: &Region, state: PeerState) {
    let s = RegionLocalState {
        state: state as i32,
        region: Some(region.clone()),
        merge_state: None,
    };
    batch.put(Cf::Meta, region_state_key(region.id), s.encode_to_vec());
}
