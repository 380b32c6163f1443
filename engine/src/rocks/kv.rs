//! [`RocksKvEngine`]: the kv engine on one RocksDB instance (`kv/`) with the column
//! families `default` and `meta`.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, IngestExternalFileOptions, ReadOptions,
    SnapshotWithThreadMode, SstFileWriter, WriteBatch, DB,
};

use super::options::{kv_block_cache, kv_cf_options, kv_db_options, kv_write_options};
use super::{open_error, storage};
use crate::kv::{file_checksum, SstFile};
use crate::{Cf, Error, KvBatch, KvEngine, KvOp, KvRead, KvSnapshot, Result};

/// The kv engine on RocksDB. Cheap to clone (the database is shared).
#[derive(Clone)]
pub struct RocksKvEngine {
    db: Arc<DB>,
}

fn cf_handle(db: &DB, cf: Cf) -> &ColumnFamily {
    // Both column families are created at open, so a missing one is a bug.
    db.cf_handle(cf.name()).expect("column family opened")
}

/// Iterates `[start, end)` of `cf` in `db`, as of `snapshot` when given.
fn for_each_in(
    db: &DB,
    snapshot: Option<&SnapshotWithThreadMode<'_, DB>>,
    cf: Cf,
    start: &[u8],
    end: &[u8],
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<()> {
    let mut ro = ReadOptions::default();
    if !end.is_empty() {
        ro.set_iterate_upper_bound(end.to_vec());
    }
    if let Some(s) = snapshot {
        ro.set_snapshot(s);
    }
    let mut it = db.raw_iterator_cf_opt(cf_handle(db, cf), ro);
    it.seek(start);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if !f(k, v) {
            return Ok(());
        }
        it.next();
    }
    it.status().map_err(storage)
}

impl RocksKvEngine {
    /// The database, for tests of the properties read from it.
    #[cfg(test)]
    pub(crate) fn db_for_tests(&self) -> &DB {
        &self.db
    }

    /// RocksDB's figures for this engine, per column family (in memory, no IO).
    pub fn rocksdb_stats(&self) -> super::EngineStats {
        let cfs: Vec<_> = Cf::ALL
            .iter()
            .map(|&cf| (cf.name(), Some(cf_handle(&self.db, cf))))
            .collect();
        super::stats::read(&self.db, &cfs)
    }

    /// Opens (creating when missing) the kv engine at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let cache = kv_block_cache();
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), kv_cf_options(&cache)));
        let db = DB::open_cf_descriptors(&kv_db_options(), path, cfs)
            .map_err(|e| open_error(path, e))?;
        Ok(RocksKvEngine { db: Arc::new(db) })
    }
}

impl KvRead for RocksKvEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(cf_handle(&self.db, cf), key)
            .map_err(storage)
    }

    fn for_each(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        for_each_in(&self.db, None, cf, start, end, f)
    }
}

impl KvEngine for RocksKvEngine {
    type Snapshot = RocksSnapshot;

    fn write(&self, batch: &KvBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        fail::fail_point!("kv_engine_write", |arg| Err(crate::rocks::injected(
            "kv_engine_write",
            arg
        )));
        let mut wb = WriteBatch::default();
        for op in batch.ops() {
            match op {
                KvOp::Put { cf, key, value } => wb.put_cf(cf_handle(&self.db, *cf), key, value),
                KvOp::Delete { cf, key } => wb.delete_cf(cf_handle(&self.db, *cf), key),
                KvOp::DeleteRange { cf, start, end } => {
                    wb.delete_range_cf(cf_handle(&self.db, *cf), start, end)
                }
            }
        }
        self.db.write_opt(wb, &kv_write_options()).map_err(storage)
    }

    fn delete_range(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<()> {
        let mut batch = KvBatch::new();
        batch.delete_range(cf, start, end);
        self.write(&batch)
    }

    fn snapshot(&self) -> RocksSnapshot {
        RocksSnapshot::new(self.db.clone())
    }

    fn sync(&self) -> Result<()> {
        fail::fail_point!("kv_engine_sync", |arg| Err(crate::rocks::injected(
            "kv_engine_sync",
            arg
        )));
        self.db.flush_wal(true).map_err(storage)
    }

    fn write_sst(
        &self,
        cf: Cf,
        path: &Path,
        pairs: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<u64> {
        let opts = kv_cf_options(&kv_block_cache());
        let mut writer = SstFileWriter::create(&opts);
        writer.open(path).map_err(storage)?;
        let mut last: Option<Vec<u8>> = None;
        let mut count = 0u64;
        for (k, v) in pairs {
            if last.as_deref().is_some_and(|l| l >= k.as_slice()) {
                return Err(Error::InvalidArgument(format!(
                    "SST keys for {} must be strictly ascending",
                    cf.name()
                )));
            }
            writer.put(&k, &v).map_err(storage)?;
            last = Some(k);
            count += 1;
        }
        if count == 0 {
            return Err(Error::InvalidArgument(
                "an SST file needs at least one key".into(),
            ));
        }
        writer.finish().map_err(storage)?;
        Ok(count)
    }

    fn export_ssts(
        &self,
        snapshot: &RocksSnapshot,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        dir: &Path,
        max_file_bytes: u64,
    ) -> Result<Vec<SstFile>> {
        let opts = kv_cf_options(&kv_block_cache());
        let mut files = Vec::new();
        let mut open: Option<(SstFileWriter<'_>, std::path::PathBuf, u64, u64)> = None;
        let mut failed = None;
        let finish = |w: &mut SstFileWriter<'_>, path: std::path::PathBuf, keys: u64| {
            w.finish().map_err(storage)?;
            let size = std::fs::metadata(&path)
                .map_err(|e| Error::Storage(format!("cannot stat {}: {e}", path.display())))?
                .len();
            let checksum = file_checksum(&path)?;
            Ok::<_, Error>(SstFile {
                path,
                size,
                keys,
                checksum,
            })
        };
        for_each_in(
            &self.db,
            Some(&snapshot.snap),
            cf,
            start,
            end,
            &mut |k, v| {
                let step = (|| {
                    if open.is_none() {
                        let path = dir.join(format!("{}.sst", files.len()));
                        let w = SstFileWriter::create(&opts);
                        w.open(&path).map_err(storage)?;
                        open = Some((w, path, 0, 0));
                    }
                    let (w, _, keys, bytes) = open.as_mut().expect("opened above");
                    w.put(k, v).map_err(storage)?;
                    *keys += 1;
                    *bytes += (k.len() + v.len()) as u64;
                    if *bytes >= max_file_bytes {
                        let (mut w, path, keys, _) = open.take().expect("open");
                        files.push(finish(&mut w, path, keys)?);
                    }
                    Ok::<(), Error>(())
                })();
                match step {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            },
        )?;
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some((mut w, path, keys, _)) = open.take() {
            files.push(finish(&mut w, path, keys)?);
        }
        Ok(files)
    }

    fn ingest(&self, cf: Cf, paths: &[&Path]) -> Result<()> {
        let mut opts = IngestExternalFileOptions::default();
        // The files are ours to consume: moving avoids copying snapshot data twice.
        opts.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(cf_handle(&self.db, cf), &opts, paths.to_vec())
            .map_err(storage)
    }

    fn sst_key_bounds(&self, paths: &[&Path], scratch: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        super::sst_bounds::sst_key_bounds(paths, scratch)
    }

    fn approximate_size(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<u64> {
        let end = if end.is_empty() {
            &[0xffu8; 16][..]
        } else {
            end
        };
        let range = rocksdb::Range::new(start, end);
        Ok(self
            .db
            .get_approximate_sizes_cf(cf_handle(&self.db, cf), &[range])
            .first()
            .copied()
            .unwrap_or(0))
    }
}

/// A point-in-time view of a [`RocksKvEngine`] that owns a handle to the database.
pub struct RocksSnapshot {
    // Field order matters: `snap` borrows `*db` and must be dropped first.
    snap: SnapshotWithThreadMode<'static, DB>,
    db: Arc<DB>,
}

impl RocksSnapshot {
    fn new(db: Arc<DB>) -> Self {
        // SAFETY: the snapshot borrows the `DB` behind the `Arc`, whose address is
        // stable. `db` is stored beside the snapshot and declared after it, so it is
        // dropped after it; the `'static` lifetime never escapes this struct.
        let snap = unsafe {
            std::mem::transmute::<SnapshotWithThreadMode<'_, DB>, SnapshotWithThreadMode<'static, DB>>(
                db.snapshot(),
            )
        };
        RocksSnapshot { snap, db }
    }
}

impl KvRead for RocksSnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap
            .get_cf(cf_handle(&self.db, cf), key)
            .map_err(storage)
    }

    fn for_each(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        for_each_in(&self.db, Some(&self.snap), cf, start, end, f)
    }
}

impl KvSnapshot for RocksSnapshot {}
