//! Raft snapshots, in one place: a leader whose log no longer holds what a
//! follower needs sends it the region's data instead, and the follower replaces
//! its replica with it.
//!
//! The flow:
//! 1. **Generate** (`gen.rs`, leader): raft-rs asks `PeerStorage::snapshot`; the
//!    first ask sends a task to the snapshot worker (`worker/snap_gen.rs`) and
//!    answers `SnapshotTemporarilyUnavailable`. The worker takes a kv snapshot,
//!    reads the region and apply state from it (the snapshot's index is the
//!    applied index), writes the region's data as SST files under
//!    `snap/gen_{region}_{term}_{index}/` and reports back. raft-rs asks again on
//!    the next heartbeat response and gets the snapshot this time.
//! 2. **Send**: the `MsgSnapshot` in the ready goes to the transport with its
//!    files ([`OutgoingSnapshot`]), which streams them over the `Snapshot` RPC
//!    (limited in concurrency and bytes per second) and reports the outcome;
//!    raft-rs is always told (`report_snapshot`), or the follower stays paused.
//! 3. **Receive** (`recv.rs`, follower store): the chunks become files under
//!    `snap/recv_{region}_{term}_{index}_N.tmp/`, checked against the sizes and
//!    checksums the message lists, synced and renamed to `recv_..._N` (N: the
//!    transfer, which the delivered message names); only then is the message
//!    delivered. A transfer that fails leaves no files.
//! 4. **Apply** (`apply.rs`, follower): the peer checks the message (region, epoch,
//!    overlap, files) before raft-rs; a region the store lacks gets a new,
//!    uninitialized peer first (`create.rs`). The ready's snapshot goes to the
//!    region's apply worker, behind every committed entry before it: it writes the
//!    region state `APPLYING` with the new apply state and clears the range
//!    (synced), ingests the files, writes `NORMAL` (synced). Then the log is
//!    replaced (the snapshot's index becomes the truncated index; old entries go)
//!    and, once that is durable, raft-rs hears the snapshot is persisted and
//!    applied. Meanwhile the peer handles no ready and takes no request.
//! 5. **Recover** (`recover.rs`, start-up): a region left `APPLYING` is applied
//!    again from its `recv_` files; a region whose log lags its truncated index
//!    (the log write never happened) gets its log replaced; leftover files go.

use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;
use shoal_proto::raft_serverpb::RaftMessage;

pub(crate) mod apply;
pub(crate) mod create;
pub(crate) mod gen;
pub(crate) mod recover;
pub(crate) mod recv;

/// A snapshot's name: its region, and the term and index it was taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapKey {
    /// The region.
    pub region_id: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// The applied index the data is as of.
    pub index: u64,
}

impl SnapKey {
    /// Where a leader generates this snapshot under `root`, the `n`th time (a
    /// generation never reuses a directory an older send may still hold).
    pub(crate) fn gen_dir(&self, root: &Path, n: u64) -> PathBuf {
        root.join(format!(
            "gen_{}_{}_{}_{n}",
            self.region_id, self.term, self.index
        ))
    }

    /// Where a follower keeps this snapshot, received whole by transfer `n`,
    /// under `root` (each transfer has its own: a copy that arrives late never
    /// shares, nor removes, the files of the one being applied).
    pub(crate) fn recv_dir(&self, root: &Path, n: u64) -> PathBuf {
        root.join(format!("{}{n}", self.recv_prefix()))
    }

    /// The start of the name of every received copy's directory.
    pub(crate) fn recv_prefix(&self) -> String {
        format!("recv_{}_{}_{}_", self.region_id, self.term, self.index)
    }

    /// The key of the snapshot a raft-rs message carries.
    pub(crate) fn of(region_id: u64, snap: &raft::eraftpb::Snapshot) -> SnapKey {
        let meta = snap.get_metadata();
        SnapKey {
            region_id,
            term: meta.term,
            index: meta.index,
        }
    }
}

/// The file of a snapshot's `n`th SST in its directory.
pub(crate) fn sst_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{n}.sst"))
}

/// A snapshot's directory and files, kept while someone holds them: when the
/// last holder (the peer that generated it, a send in progress) lets go, the
/// directory is removed by the snapshot worker, never on the thread that drops it.
pub struct SnapFiles {
    /// The directory.
    pub dir: PathBuf,
    /// The files in order, with their sizes.
    pub files: Vec<(PathBuf, u64)>,
    /// Their total size.
    pub bytes: u64,
    cleaner: Option<Sender<PathBuf>>,
}

impl SnapFiles {
    /// Files under `dir`, removed with it once dropped (through `cleaner`).
    pub(crate) fn new(
        dir: PathBuf,
        files: Vec<(PathBuf, u64)>,
        cleaner: Sender<PathBuf>,
    ) -> SnapFiles {
        let bytes = files.iter().map(|(_, n)| n).sum();
        SnapFiles {
            dir,
            files,
            bytes,
            cleaner: Some(cleaner),
        }
    }

    /// Files nobody removes (tests hand these to a transport).
    pub fn kept(dir: PathBuf, files: Vec<(PathBuf, u64)>) -> SnapFiles {
        let bytes = files.iter().map(|(_, n)| n).sum();
        SnapFiles {
            dir,
            files,
            bytes,
            cleaner: None,
        }
    }
}

impl Drop for SnapFiles {
    fn drop(&mut self) {
        if let Some(c) = self.cleaner.take() {
            let _ = c.send(std::mem::take(&mut self.dir));
        }
    }
}

/// Told once how a snapshot's send ended; dropping it untold reports a failure
/// (so raft-rs always hears, whatever path the send took).
pub struct SnapshotDone(Option<Box<dyn FnOnce(bool) + Send>>);

impl SnapshotDone {
    /// Calls `f` with the outcome, once.
    pub fn new(f: impl FnOnce(bool) + Send + 'static) -> SnapshotDone {
        SnapshotDone(Some(Box::new(f)))
    }

    /// Reports the outcome: `true` when the receiver took the snapshot whole.
    pub fn finish(mut self, ok: bool) {
        if let Some(f) = self.0.take() {
            f(ok);
        }
    }
}

impl Drop for SnapshotDone {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(false);
        }
    }
}

/// A snapshot for the transport to stream to another store: first the message,
/// then the files' bytes in order.
pub struct OutgoingSnapshot {
    /// The `MsgSnapshot`, addressed like any Raft message.
    pub msg: RaftMessage,
    /// Its files, kept on disk until this is dropped.
    pub files: std::sync::Arc<SnapFiles>,
    /// The outcome goes here.
    pub done: SnapshotDone,
}
