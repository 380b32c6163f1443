//! The receiving store's side of a snapshot transfer: [`SnapReceiver`] turns the
//! chunks into files, checks them against what the message lists (sizes and
//! checksums), syncs them and only then delivers the message to the peer. The
//! transport (the server's Raft service, the test harness) feeds it.
//!
//! Files go to a directory of their own per transfer
//! (`recv_{region}_{term}_{index}_N.tmp`), renamed to `recv_{region}_{term}_{index}_N`
//! once whole, and the message delivered names `N`: a transfer that fails or is
//! dropped half-way removes its directory, and two transfers of one snapshot never
//! share (nor remove) each other's files.
//!
//! Before the message is delivered, every file's keys must lie in the snapshot's
//! region ([`SnapReceiver::check_keys`]): the apply ingests the files as they
//! are, and a file reaching past the region (a buggy sender, or a caller that is
//! no store, without TLS) would overwrite other regions' data, the cluster
//! directory's included. A file that is no SST at all is refused there too
//! (ingesting it would fail on the apply worker, which stops the store).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{Message as RaftPbMessage, MessageType};
use shoal_engine::keys::{data_end_key, data_key};
use shoal_engine::rocks::RocksKvEngine;
use shoal_engine::{Fnv64, KvEngine};
use shoal_proto::metapb::Region;
use shoal_proto::raft_serverpb::{RaftMessage, SnapshotData, SnapshotFile};
use shoal_proto::Message as _;

use crate::metrics::StoreMetrics;
use crate::operation::snapshot::{sst_path, SnapKey};
use crate::worker::snap_gen::remove_dir;

/// Snapshots a store receives at once; more are refused (the sender retries).
pub(crate) const MAX_RECEIVING: usize = 4;

/// Files one snapshot may list: a leader writes one SST per 64 MiB of the
/// region's data, so this is a region of 256 GiB. More is refused before a file
/// is made (each costs a create and an fsync).
pub(crate) const MAX_SNAPSHOT_FILES: usize = 4096;

/// Bytes one snapshot may declare, as a multiple of `region-max-size`: a region
/// splits long before it is this large, and what a sender declares sets how
/// long its receive may take (`server/src/raft_service.rs`), so a bound here
/// bounds how long a slow sender holds a receive slot.
pub(crate) const MAX_SNAPSHOT_REGION_SIZES: u64 = 64;

/// Tells transfers of one snapshot apart.
static TRANSFER: AtomicU64 = AtomicU64::new(0);

/// The snapshot a Raft message carries: its key and what it lists.
pub(crate) fn snapshot_of(msg: &RaftMessage) -> Result<(SnapKey, SnapshotData), String> {
    let m = RaftPbMessage::parse_from_bytes(&msg.message)
        .map_err(|e| format!("undecodable raft message: {e}"))?;
    if m.get_msg_type() != MessageType::MsgSnapshot {
        return Err(format!("a {:?}, not a snapshot", m.get_msg_type()));
    }
    let snap = m.get_snapshot();
    let data = SnapshotData::decode(snap.get_data())
        .map_err(|e| format!("undecodable snapshot data: {e}"))?;
    let region_id = data.region.as_ref().map_or(0, |r| r.id);
    if region_id != msg.region_id {
        return Err(format!(
            "the snapshot is of region {region_id}, the message of region {}",
            msg.region_id
        ));
    }
    Ok((SnapKey::of(msg.region_id, snap), data))
}

/// One snapshot being received; see the module docs.
pub struct SnapReceiver {
    key: SnapKey,
    msg: Option<RaftMessage>,
    /// The region as of the snapshot, and its files.
    region: Region,
    files: Vec<SnapshotFile>,
    /// The transfer's own directory, until renamed.
    tmp: PathBuf,
    /// Where it goes once whole, and the transfer's number.
    dir: PathBuf,
    n: u64,
    /// The file being written: its index, handle, bytes written and digest.
    current: usize,
    file: Option<File>,
    written: u64,
    hash: Fnv64,
    received: u64,
    slots: Arc<AtomicUsize>,
    metrics: Arc<StoreMetrics>,
    done: bool,
    started: std::time::Instant,
}

impl SnapReceiver {
    /// Starts receiving the snapshot `msg` carries into `root` (a slot of
    /// `slots` is taken until the receiver is dropped).
    pub(crate) fn start(
        msg: RaftMessage,
        root: &std::path::Path,
        slots: Arc<AtomicUsize>,
        metrics: Arc<StoreMetrics>,
        max_bytes: u64,
    ) -> Result<SnapReceiver, String> {
        let (key, data) = snapshot_of(&msg)?;
        if data.files.len() > MAX_SNAPSHOT_FILES {
            return Err(format!(
                "the snapshot of region {} lists {} files, over the {MAX_SNAPSHOT_FILES} a \
                 snapshot may have",
                key.region_id,
                data.files.len()
            ));
        }
        let declared = data
            .files
            .iter()
            .fold(0u64, |sum, f| sum.saturating_add(f.size));
        if declared > max_bytes {
            return Err(format!(
                "the snapshot of region {} declares {declared} bytes, over the {max_bytes} a \
                 snapshot may have ({MAX_SNAPSHOT_REGION_SIZES} x region-max-size)",
                key.region_id
            ));
        }
        if slots.fetch_add(1, Ordering::AcqRel) >= MAX_RECEIVING {
            slots.fetch_sub(1, Ordering::AcqRel);
            return Err(format!(
                "this store is already receiving {MAX_RECEIVING} snapshots; retry later"
            ));
        }
        let n = TRANSFER.fetch_add(1, Ordering::Relaxed);
        let dir = key.recv_dir(root, n);
        let tmp = PathBuf::from(format!("{}.tmp", dir.display()));
        let mut r = SnapReceiver {
            key,
            msg: Some(msg),
            region: data.region.unwrap_or_default(),
            files: data.files,
            tmp,
            dir,
            n,
            current: 0,
            file: None,
            written: 0,
            hash: Fnv64::default(),
            received: 0,
            slots,
            metrics,
            done: false,
            started: std::time::Instant::now(),
        };
        std::fs::create_dir_all(&r.tmp)
            .map_err(|e| format!("cannot create {}: {e}", r.tmp.display()))?;
        r.open_next()?;
        Ok(r)
    }

    /// The snapshot received.
    pub fn key(&self) -> SnapKey {
        self.key
    }

    /// Opens the next file that has bytes to take (empty ones are created whole).
    fn open_next(&mut self) -> Result<(), String> {
        while self.current < self.files.len() {
            let path = sst_path(&self.tmp, self.current);
            let f = File::create(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            self.file = Some(f);
            self.written = 0;
            self.hash = Fnv64::default();
            if self.files[self.current].size > 0 {
                return Ok(());
            }
            self.close_current()?;
        }
        Ok(())
    }

    /// Checks, syncs and closes the file just completed, and moves on.
    fn close_current(&mut self) -> Result<(), String> {
        let want = &self.files[self.current];
        if self.hash.0 != want.checksum {
            return Err(format!(
                "snapshot file {} of region {} is corrupt: checksum {:x}, expected {:x}",
                self.current, self.key.region_id, self.hash.0, want.checksum
            ));
        }
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(|e| format!("cannot sync: {e}"))?;
        }
        self.current += 1;
        Ok(())
    }

    /// Takes the next bytes of the files, in order.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            let Some(want) = self.files.get(self.current).map(|f| f.size) else {
                return Err(format!(
                    "more bytes than the snapshot of region {} lists",
                    self.key.region_id
                ));
            };
            let n = ((want - self.written) as usize).min(data.len());
            let file = self
                .file
                .as_mut()
                .expect("a file is open while bytes are due");
            file.write_all(&data[..n])
                .map_err(|e| format!("cannot write a snapshot file: {e}"))?;
            self.hash.write(&data[..n]);
            self.written += n as u64;
            self.received += n as u64;
            data = &data[n..];
            if self.written == want {
                self.close_current()?;
                self.open_next()?;
            }
        }
        Ok(())
    }

    /// The bytes of every file the snapshot lists (bounded by `start`).
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The bytes taken so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    fn whole(&self) -> Result<(), String> {
        if self.current < self.files.len() {
            return Err(format!(
                "the snapshot of region {} ended early: file {} of {} incomplete",
                self.key.region_id,
                self.current,
                self.files.len()
            ));
        }
        Ok(())
    }

    /// Every file whole: each must be an SST whose keys (deletions included) lie
    /// in the snapshot's region, data-key encoded; see the module docs. A file
    /// reaching outside is counted (`snapshots_out_of_region`). Reads each file's
    /// bounds: disk IO, off the pollers and the async runtime's threads.
    pub(crate) fn check_keys(&self, kv: &RocksKvEngine) -> Result<(), String> {
        self.whole()?;
        if self.files.is_empty() {
            return Ok(());
        }
        let paths: Vec<PathBuf> = (0..self.files.len())
            .map(|i| sst_path(&self.tmp, i))
            .collect();
        let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let region_id = self.key.region_id;
        let bounds = kv
            .sst_key_bounds(&paths, &self.tmp.join("check"))
            .map_err(|e| format!("the snapshot of region {region_id} holds no valid SST: {e}"))?;
        let (start, end) = (
            data_key(&self.region.start_key),
            data_end_key(&self.region.end_key),
        );
        match bounds.iter().find(|(lo, hi)| *lo < start || *hi >= end) {
            None => Ok(()),
            Some((lo, hi)) => {
                StoreMetrics::add(&self.metrics.snapshots_out_of_region, 1);
                Err(format!(
                    "the snapshot of region {region_id} holds keys from {} to {}, outside \
                     its range [{}, {})",
                    lo.escape_ascii(),
                    hi.escape_ascii(),
                    start.escape_ascii(),
                    end.escape_ascii()
                ))
            }
        }
    }

    /// Every file whole and checked: syncs the directory, renames it into place
    /// and hands back the message to deliver, naming the transfer.
    pub(crate) fn finish(mut self) -> Result<RaftMessage, String> {
        self.whole()?;
        sync_dir(&self.tmp)?;
        std::fs::rename(&self.tmp, &self.dir)
            .map_err(|e| format!("cannot rename {}: {e}", self.tmp.display()))?;
        if let Some(root) = self.dir.parent() {
            sync_dir(root)?;
        }
        self.done = true;
        StoreMetrics::add(&self.metrics.snapshots_received, 1);
        StoreMetrics::add(&self.metrics.snapshot_received_bytes, self.received);
        StoreMetrics::add_elapsed(&self.metrics.snapshot_receive_seconds, self.started);
        let mut msg = self.msg.take().expect("taken once");
        msg.snapshot_transfer = self.n;
        Ok(msg)
    }
}

impl Drop for SnapReceiver {
    fn drop(&mut self) {
        self.slots.fetch_sub(1, Ordering::AcqRel);
        if !self.done {
            self.file = None;
            remove_dir(&self.tmp);
            StoreMetrics::add(&self.metrics.snapshot_failures, 1);
        }
    }
}

/// fsync of a directory, so that the names in it survive a crash.
pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use protobuf::Message as _;
    use raft::eraftpb::{Message as RaftPbMessage, MessageType, Snapshot};
    use shoal_proto::metapb::{Peer, Region};
    use shoal_proto::Message as _;

    use super::*;

    /// A snapshot message of region 1 at (term 6, index 9) listing `files`.
    fn message(files: &[&[u8]]) -> RaftMessage {
        let data = SnapshotData {
            region: Some(Region {
                id: 1,
                ..Default::default()
            }),
            files: files
                .iter()
                .map(|f| {
                    let mut h = Fnv64::default();
                    h.write(f);
                    SnapshotFile {
                        size: f.len() as u64,
                        checksum: h.0,
                        keys: 1,
                    }
                })
                .collect(),
        };
        let mut snap = Snapshot::default();
        snap.set_data(data.encode_to_vec().into());
        snap.mut_metadata().index = 9;
        snap.mut_metadata().term = 6;
        let mut m = RaftPbMessage::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.set_snapshot(snap);
        RaftMessage {
            region_id: 1,
            to_peer: Some(Peer {
                id: 2,
                store_id: 2,
                ..Default::default()
            }),
            message: m.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    fn start(root: &std::path::Path, msg: RaftMessage) -> Result<SnapReceiver, String> {
        SnapReceiver::start(msg, root, Arc::default(), Arc::default(), 1 << 30)
    }

    fn entries(root: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn files_received_whole_are_checked_synced_and_renamed_into_place() {
        let root = tempfile::tempdir().unwrap();
        let (a, b): (&[u8], &[u8]) = (b"first file", b"second");
        let mut r = start(root.path(), message(&[a, b, b""])).unwrap();
        // Chunks need not follow file boundaries.
        r.write(b"first fi").unwrap();
        r.write(b"lesec").unwrap();
        r.write(b"ond").unwrap();
        let msg = r.finish().unwrap();
        assert_eq!(msg.region_id, 1);
        let dir_name = format!("recv_1_6_9_{}", msg.snapshot_transfer);
        assert_eq!(entries(root.path()), std::slice::from_ref(&dir_name));
        let dir = root.path().join(dir_name);
        assert_eq!(std::fs::read(dir.join("0.sst")).unwrap(), a);
        assert_eq!(std::fs::read(dir.join("1.sst")).unwrap(), b);
        assert_eq!(std::fs::read(dir.join("2.sst")).unwrap(), b"");
    }

    #[test]
    fn a_corrupt_short_or_long_transfer_fails_and_leaves_no_files() {
        let root = tempfile::tempdir().unwrap();
        let file: &[u8] = b"0123456789";
        // A flipped byte: the checksum refuses the file.
        let mut r = start(root.path(), message(&[file])).unwrap();
        assert!(r.write(b"0123456788").unwrap_err().contains("corrupt"));
        drop(r);
        assert!(
            entries(root.path()).is_empty(),
            "{:?}",
            entries(root.path())
        );
        // Too few bytes: finishing fails.
        let mut r = start(root.path(), message(&[file])).unwrap();
        r.write(b"01234").unwrap();
        assert!(r.finish().unwrap_err().contains("ended early"));
        assert!(entries(root.path()).is_empty());
        // Too many.
        let mut r = start(root.path(), message(&[file])).unwrap();
        assert!(r.write(b"0123456789x").unwrap_err().contains("more bytes"));
        drop(r);
        assert!(entries(root.path()).is_empty());
    }

    #[test]
    fn two_copies_of_a_snapshot_keep_directories_of_their_own() {
        let root = tempfile::tempdir().unwrap();
        let file: &[u8] = b"data";
        let (mut r1, mut r2) = (
            start(root.path(), message(&[file])).unwrap(),
            start(root.path(), message(&[file])).unwrap(),
        );
        r1.write(file).unwrap();
        r2.write(file).unwrap();
        let (m1, m2) = (r1.finish().unwrap(), r2.finish().unwrap());
        assert_ne!(m1.snapshot_transfer, m2.snapshot_transfer);
        let mut want = vec![
            format!("recv_1_6_9_{}", m1.snapshot_transfer),
            format!("recv_1_6_9_{}", m2.snapshot_transfer),
        ];
        want.sort();
        assert_eq!(entries(root.path()), want);
    }

    #[test]
    fn transfers_beyond_the_limit_are_refused_until_one_ends() {
        let root = tempfile::tempdir().unwrap();
        let slots: Arc<AtomicUsize> = Arc::default();
        let open = |slots: &Arc<AtomicUsize>| {
            SnapReceiver::start(
                message(&[b"x"]),
                root.path(),
                slots.clone(),
                Arc::default(),
                1 << 20,
            )
        };
        let held: Vec<SnapReceiver> = (0..MAX_RECEIVING).map(|_| open(&slots).unwrap()).collect();
        assert!(open(&slots).err().unwrap().contains("already receiving"));
        drop(held);
        assert!(open(&slots).is_ok());
    }

    #[test]
    fn a_snapshot_declaring_too_much_is_refused_before_any_file() {
        let root = tempfile::tempdir().unwrap();
        let start =
            |msg, max| SnapReceiver::start(msg, root.path(), Arc::default(), Arc::default(), max);
        let big = start(message(&[b"0123456789"]), 9).err().unwrap();
        assert!(big.contains("declares 10 bytes"), "{big}");
        let files: Vec<&[u8]> = vec![b""; MAX_SNAPSHOT_FILES + 1];
        let many = start(message(&files), 1 << 20).err().unwrap();
        assert!(many.contains("4097 files"), "{many}");
        assert!(
            entries(root.path()).is_empty(),
            "{:?}",
            entries(root.path())
        );
        assert!(start(message(&[b"0123456789"]), 10).is_ok());
    }
}
