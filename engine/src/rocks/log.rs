//! [`RocksLogEngine`]: the log engine on one RocksDB instance (`raft/`).
//!
//! Values of entry keys are `term (8 bytes, big-endian) | entry data`. The first and
//! last index of each region are cached in memory (loaded on first use with two
//! seeks), so an append can find the stale tail it must delete without reading, and
//! bound checks cost no I/O. Writers are serialized by a mutex; the cache is updated
//! after a write lands and *before* a compaction deletes, so a reader may see an index
//! as compacted slightly early but never finds a hole.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use rocksdb::{DBRawIterator, ReadOptions, WriteBatch, DB};
use shoal_proto::raft_serverpb::RaftLocalState;
use shoal_proto::Message;

use super::options::{log_db_options, log_write_options, unsynced_write_options};
use super::{open_error, storage};
use crate::keys::{
    decode_entry_key, decode_raft_state_key, entry_key, entry_range, raft_state_key,
    raft_state_range,
};
use crate::{Error, LogBatch, LogEngine, LogEntry, LogStats, Result};

/// When a conflicting append leaves more stale entries than this, one range
/// tombstone replaces the point deletes.
const RANGE_DELETE_THRESHOLD: u64 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bounds {
    first: u64,
    last: u64,
}

/// The log engine on RocksDB. See [`LogEngine`] for the contract.
pub struct RocksLogEngine {
    db: DB,
    /// Where the engine's files are.
    path: std::path::PathBuf,
    write_lock: Mutex<()>,
    /// Per region: `None` when the region has no entries.
    bounds: RwLock<HashMap<u64, Option<Bounds>>>,
    syncs: AtomicU64,
    regions_written: AtomicU64,
    entries_written: AtomicU64,
    bytes_written: AtomicU64,
}

/// The exclusive upper bound of every entry key of `region_id`.
fn region_entries_end(region_id: u64) -> Vec<u8> {
    match region_id.checked_add(1) {
        Some(next) => entry_key(next, 0).to_vec(),
        None => entry_range().1.to_vec(),
    }
}

fn encode_entry(e: &LogEntry, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(8 + e.data.len());
    out.extend_from_slice(&e.term.to_be_bytes());
    out.extend_from_slice(&e.data);
}

fn decode_entry(region_id: u64, index: u64, value: &[u8]) -> Result<LogEntry> {
    if value.len() < 8 {
        return Err(Error::Corruption(format!(
            "region {region_id}: log entry {index} is {} bytes, shorter than its term",
            value.len()
        )));
    }
    let term = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
    Ok(LogEntry {
        index,
        term,
        data: value[8..].to_vec(),
    })
}

impl RocksLogEngine {
    /// RocksDB's figures for this engine (one column family; in memory, no IO).
    pub fn rocksdb_stats(&self) -> super::EngineStats {
        super::stats::read(&self.db, &[("default", None)])
    }

    /// Opens (creating when missing) the log engine at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = DB::open(&log_db_options(), path).map_err(|e| open_error(path, e))?;
        Ok(RocksLogEngine {
            db,
            path: path.to_path_buf(),
            write_lock: Mutex::new(()),
            bounds: RwLock::new(HashMap::new()),
            syncs: AtomicU64::new(0),
            regions_written: AtomicU64::new(0),
            entries_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        })
    }

    fn iter(&self, start: &[u8], end: &[u8]) -> DBRawIterator<'_> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(start.to_vec());
        ro.set_iterate_upper_bound(end.to_vec());
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek(start);
        it
    }

    fn load_bounds(&self, region_id: u64) -> Result<Option<Bounds>> {
        let start = entry_key(region_id, 0);
        let end = region_entries_end(region_id);
        let mut it = self.iter(&start, &end);
        if !it.valid() {
            it.status().map_err(storage)?;
            return Ok(None);
        }
        let first = it.key().and_then(decode_entry_key).map(|(_, i)| i);
        it.seek_to_last();
        let last = it.key().and_then(decode_entry_key).map(|(_, i)| i);
        it.status().map_err(storage)?;
        match (first, last) {
            (Some(first), Some(last)) => Ok(Some(Bounds { first, last })),
            _ => Err(Error::Corruption(format!(
                "region {region_id}: malformed entry key in the log engine"
            ))),
        }
    }

    fn bounds(&self, region_id: u64) -> Result<Option<Bounds>> {
        if let Some(b) = self.bounds.read().expect("bounds lock").get(&region_id) {
            return Ok(*b);
        }
        let loaded = self.load_bounds(region_id)?;
        #[cfg(test)]
        tests::after_load_hook();
        // Only if still absent: a write (or compaction) that landed after our read
        // has already published newer bounds, and a stale load must not replace them.
        let mut cache = self.bounds.write().expect("bounds lock");
        Ok(*cache.entry(region_id).or_insert(loaded))
    }

    /// Checks that `[lo, hi)` is within the region's log and returns its bounds.
    fn check_range(&self, region_id: u64, lo: u64, hi: u64) -> Result<Bounds> {
        let Some(b) = self.bounds(region_id)? else {
            return Err(Error::Unavailable {
                region_id,
                index: lo,
                last_index: 0,
            });
        };
        if lo < b.first {
            return Err(Error::Compacted {
                region_id,
                index: lo,
                first_index: b.first,
            });
        }
        if hi > b.last + 1 {
            return Err(Error::Unavailable {
                region_id,
                index: hi - 1,
                last_index: b.last,
            });
        }
        Ok(b)
    }

    /// Adds one region's append to `wb`, returning the region's bounds afterwards.
    fn stage_append(
        &self,
        wb: &mut WriteBatch,
        region_id: u64,
        entries: &[LogEntry],
        current: Option<Bounds>,
        buf: &mut Vec<u8>,
    ) -> Result<Bounds> {
        let first_new = entries[0].index;
        if first_new == 0 {
            return Err(Error::InvalidArgument(format!(
                "region {region_id}: log index 0 is reserved"
            )));
        }
        for (i, e) in entries.iter().enumerate() {
            if e.index != first_new + i as u64 {
                return Err(Error::InvalidArgument(format!(
                    "region {region_id}: appended entries are not contiguous at index {}",
                    e.index
                )));
            }
        }
        let last_new = first_new + entries.len() as u64 - 1;
        let mut first = first_new;
        if let Some(b) = current {
            if first_new > b.last + 1 {
                return Err(Error::InvalidArgument(format!(
                    "region {region_id}: append at {first_new} would leave a hole after last index {}",
                    b.last
                )));
            }
            first = b.first.min(first_new);
            // Entries past the new tail came from a log that conflicts: they go.
            if b.last > last_new {
                if b.last - last_new > RANGE_DELETE_THRESHOLD {
                    wb.delete_range(
                        entry_key(region_id, last_new + 1).to_vec(),
                        region_entries_end(region_id),
                    );
                } else {
                    for idx in last_new + 1..=b.last {
                        wb.delete(entry_key(region_id, idx));
                    }
                }
            }
        }
        for e in entries {
            encode_entry(e, buf);
            wb.put(entry_key(region_id, e.index), &buf[..]);
        }
        Ok(Bounds {
            first,
            last: last_new,
        })
    }
}

impl LogEngine for RocksLogEngine {
    fn write(&self, batch: &LogBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        fail::fail_point!("log_engine_write", |arg| Err(crate::rocks::injected(
            "log_engine_write",
            arg
        )));
        let _writer = self.write_lock.lock().expect("write lock");
        let mut wb = WriteBatch::default();
        let mut updated: HashMap<u64, Option<Bounds>> = HashMap::new();
        let mut buf = Vec::new();
        let mut bytes = 0u64;
        for w in batch.writes() {
            if w.replace {
                wb.delete_range(
                    entry_key(w.region_id, 0).to_vec(),
                    region_entries_end(w.region_id),
                );
                updated.insert(w.region_id, None);
            }
            if !w.entries.is_empty() {
                let current = match updated.get(&w.region_id) {
                    Some(b) => *b,
                    None => self.bounds(w.region_id)?,
                };
                let b = self.stage_append(&mut wb, w.region_id, &w.entries, current, &mut buf)?;
                updated.insert(w.region_id, Some(b));
                bytes += w.entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
            }
            if let Some(state) = &w.state {
                wb.put(raft_state_key(w.region_id), state.encode_to_vec());
            }
        }
        self.db
            .write_opt(wb, &log_write_options())
            .map_err(storage)?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.regions_written
            .fetch_add(batch.region_count() as u64, Ordering::Relaxed);
        self.entries_written
            .fetch_add(batch.entry_count() as u64, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.bounds.write().expect("bounds lock").extend(updated);
        Ok(())
    }

    fn fetch(
        &self,
        region_id: u64,
        lo: u64,
        hi: u64,
        max_bytes: Option<usize>,
        out: &mut Vec<LogEntry>,
    ) -> Result<()> {
        if lo >= hi {
            return Ok(());
        }
        self.check_range(region_id, lo, hi)?;
        let mut it = self.iter(&entry_key(region_id, lo), &entry_key(region_id, hi));
        let (mut expect, mut total, mut limited) = (lo, 0usize, false);
        while it.valid() {
            let (key, value) = (it.key().expect("valid"), it.value().expect("valid"));
            let index = decode_entry_key(key).map(|(_, i)| i);
            if index != Some(expect) {
                return Err(Error::Corruption(format!(
                    "region {region_id}: log has a hole at index {expect}"
                )));
            }
            let entry = decode_entry(region_id, expect, value)?;
            total += entry.size();
            if let Some(max) = max_bytes {
                if expect > lo && total > max {
                    limited = true;
                    break;
                }
            }
            out.push(entry);
            expect += 1;
            it.next();
        }
        it.status().map_err(storage)?;
        if !limited && expect != hi {
            return Err(Error::Corruption(format!(
                "region {region_id}: log has a hole at index {expect}"
            )));
        }
        Ok(())
    }

    fn term(&self, region_id: u64, index: u64) -> Result<u64> {
        self.check_range(region_id, index, index + 1)?;
        match self
            .db
            .get_pinned(entry_key(region_id, index))
            .map_err(storage)?
        {
            Some(v) => Ok(decode_entry(region_id, index, &v[..v.len().min(8)])?.term),
            None => Err(Error::Corruption(format!(
                "region {region_id}: log has a hole at index {index}"
            ))),
        }
    }

    fn first_index(&self, region_id: u64) -> Result<Option<u64>> {
        Ok(self.bounds(region_id)?.map(|b| b.first))
    }

    fn last_index(&self, region_id: u64) -> Result<Option<u64>> {
        Ok(self.bounds(region_id)?.map(|b| b.last))
    }

    fn raft_state(&self, region_id: u64) -> Result<Option<RaftLocalState>> {
        let Some(v) = self
            .db
            .get_pinned(raft_state_key(region_id))
            .map_err(storage)?
        else {
            return Ok(None);
        };
        RaftLocalState::decode(&v[..])
            .map(Some)
            .map_err(|e| Error::Corruption(format!("region {region_id}: raft state: {e}")))
    }

    fn compact_to(&self, region_id: u64, to: u64) -> Result<u64> {
        let _writer = self.write_lock.lock().expect("write lock");
        let Some(b) = self.bounds(region_id)? else {
            return Ok(0);
        };
        if to <= b.first {
            return Ok(0);
        }
        let end = to.min(b.last + 1);
        let after = (end <= b.last).then_some(Bounds {
            first: end,
            last: b.last,
        });
        // Publish the new first index before deleting, so readers never see a hole.
        self.bounds
            .write()
            .expect("bounds lock")
            .insert(region_id, after);
        let mut wb = WriteBatch::default();
        wb.delete_range(entry_key(region_id, b.first), entry_key(region_id, end));
        self.db
            .write_opt(wb, &unsynced_write_options())
            .map_err(storage)?;
        Ok(end - b.first)
    }

    fn remove_region(&self, region_id: u64) -> Result<()> {
        let _writer = self.write_lock.lock().expect("write lock");
        self.bounds
            .write()
            .expect("bounds lock")
            .insert(region_id, None);
        let mut wb = WriteBatch::default();
        wb.delete_range(
            entry_key(region_id, 0).to_vec(),
            region_entries_end(region_id),
        );
        wb.delete(raft_state_key(region_id));
        self.db.write_opt(wb, &log_write_options()).map_err(storage)
    }

    fn regions(&self) -> Result<Vec<u64>> {
        let mut ids = BTreeSet::new();
        let (start, end) = raft_state_range();
        let mut it = self.iter(&start, &end);
        while let Some(key) = it.key() {
            ids.extend(decode_raft_state_key(key));
            it.next();
        }
        it.status().map_err(storage)?;
        // Entries: jump from one region's log to the next with one seek each.
        let (start, end) = entry_range();
        let mut it = self.iter(&start, &end);
        while let Some((region_id, _)) = it.key().and_then(decode_entry_key) {
            ids.insert(region_id);
            match region_id.checked_add(1) {
                Some(next) => it.seek(entry_key(next, 0)),
                None => break,
            }
        }
        it.status().map_err(storage)?;
        Ok(ids.into_iter().collect())
    }

    fn stats(&self) -> LogStats {
        LogStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            regions_written: self.regions_written.load(Ordering::Relaxed),
            entries_written: self.entries_written.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }

    fn reclaim(&self) -> Result<()> {
        // Range deletes leave tombstones; compacting the entry range drops the
        // entries they cover and the tombstones themselves.
        let (start, end) = entry_range();
        self.db.compact_range(Some(start), Some(end));
        Ok(())
    }

    fn disk_size(&self) -> Result<u64> {
        let mut total = 0u64;
        let dir = std::fs::read_dir(&self.path)
            .map_err(|e| Error::Storage(format!("cannot list {}: {e}", self.path.display())))?;
        for entry in dir.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".sst") || name.ends_with(".log") {
                total += entry.metadata().map_or(0, |m| m.len());
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::sync::{Arc, Barrier};

    use super::*;

    thread_local! {
        /// Runs on this thread between loading a region's bounds and caching them.
        static AFTER_LOAD: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
    }

    pub(super) fn after_load_hook() {
        AFTER_LOAD.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f();
            }
        });
    }

    fn append(log: &RocksLogEngine, region: u64, lo: u64, hi: u64) -> Result<()> {
        let mut b = LogBatch::new();
        let es = (lo..hi)
            .map(|index| LogEntry {
                index,
                term: 1,
                data: vec![index as u8],
            })
            .collect();
        b.add(region, es, None);
        log.write(&b)
    }

    /// A reader that loaded a region's bounds before a write landed must not cache
    /// them after it: the next append would then be refused as a hole (or the log
    /// would lose its first index).
    #[test]
    fn a_stale_load_never_replaces_bounds_a_write_published() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = RocksLogEngine::open(dir.path()).unwrap();
            append(&log, 7, 1, 11).unwrap();
        }
        // Reopened, region 7 is not cached: the reader loads it (10 entries) and waits.
        let log = Arc::new(RocksLogEngine::open(dir.path()).unwrap());
        let loaded = Arc::new(Barrier::new(2));
        let written = Arc::new(Barrier::new(2));
        let reader = {
            let (log, loaded, written) = (log.clone(), loaded.clone(), written.clone());
            std::thread::spawn(move || {
                AFTER_LOAD.with(|h| {
                    *h.borrow_mut() = Some(Box::new(move || {
                        loaded.wait();
                        written.wait();
                    }))
                });
                log.last_index(7).unwrap()
            })
        };
        loaded.wait();
        // The writer appends 11..=20 while the reader holds bounds ending at 10.
        append(&log, 7, 11, 21).unwrap();
        written.wait();
        let seen = reader.join().unwrap();
        assert_eq!(seen, Some(20), "the reader returned stale bounds");
        assert_eq!(log.last_index(7).unwrap(), Some(20));
        assert_eq!(log.first_index(7).unwrap(), Some(1));
        append(&log, 7, 21, 22).expect("an append right after the last index");
        let mut out = Vec::new();
        log.fetch(7, 1, 22, None, &mut out).unwrap();
        assert_eq!(out.len(), 21);
    }
}
